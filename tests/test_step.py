"""One GRPO step on its own (relate_fast.step): stages, the typed batch, mini-batches x epochs, and
the on-policy shortcut (no old log-probs with one update per batch)."""
import copy

import pytest
import torch

from relate_fast.config import load_config
from relate_fast.batching import grpo_micro_loss, micro_batches, sequence_logprobs
from relate_fast.updater import PolicyUpdater
from relate_fast.rewards import RewardFunction
from relate_fast.rollout.hf import HFEngine
from relate_fast.step import GRPOStep, StepBatch

G = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from relate_fast.config import TinyModelConfig
    from relate_fast.models import build_tiny_model, load_policy

    folder = build_tiny_model(TinyModelConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                              num_attention_heads=2, num_key_value_heads=1, head_dim=32),
                              tmp_path_factory.mktemp("tiny"))
    return load_policy(folder)


@pytest.fixture(scope="module")
def tiny2(tmp_path_factory):
    """Two decoder layers: the fewest a memory plan can checkpoint fewer of (with one, the recomputed layer
    costs more than it saves)."""
    from relate_fast.config import TinyModelConfig
    from relate_fast.models import build_tiny_model, load_policy

    folder = build_tiny_model(TinyModelConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                              num_attention_heads=2, num_key_value_heads=1, head_dim=32),
                              tmp_path_factory.mktemp("tiny2"))
    return load_policy(folder)


def make_step(tiny, *over, memory_plan=None):
    from relate_fast.data import sample_ads
    from relate_fast.models import prompt_ids

    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    cfg = load_config(None, ["--deepspeed.enabled", "false", "--rollout.group_size", str(G), "--rollout.prompts_per_step",
                             "4", "--rollout.max_new_tokens", "10", "--reward.preset", "model1", "--grpo.beta", "0",
                             "--grpo.micro_batch_tokens", "60", "--reward.encoder", "hashed",
                             # 10 new tokens all fall short of the Qwen3 token interval alike: count characters
                             "--reward.params", "{length: {unit: chars}}", *over])
    updater = PolicyUpdater(model, cfg, world=1)
    step = GRPOStep(cfg, rollout=HFEngine(updater.model, tok), updater=updater,
                    reward_fn=RewardFunction.from_config(cfg.reward, tokenizer=tok), tokenizer=tok, memory_plan=memory_plan)
    rows = sample_ads("train", langs=["en"])[:4]
    return step, rows, [prompt_ids(tok, r.prompt) for r in rows]


def scored(step, rows, pids, index=0):
    torch.manual_seed(index)
    b = step.sample(index, rows, pids)
    step.score(b)
    step.compute_advantages(b)
    return b


def test_stages_fill_a_typed_batch(tiny):
    step, rows, pids = make_step(tiny)
    b = step.sample(0, rows, pids)
    assert isinstance(b, StepBatch) and len(b) == 4 * G and b.num_groups == 4
    assert [r.id for r in b.prompts] == [r.id for r in rows for _ in range(G)]
    assert b.packed is None and b.advantages is None
    step.score(b)
    step.compute_advantages(b)
    assert b.packed.targets.shape[0] == len(b) and b.rewards.sentence.shape == (len(b),)
    # eq. 8 within each group: zero mean, unit unbiased std (or all zero when the group is tied)
    a = b.advantages.view(-1, G)
    torch.testing.assert_close(a.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    # select keeps every [B, C] tensor aligned with its rows, trimmed to their longest completion
    half = b.select(slice(G, 3 * G))
    assert len(half) == 2 * G and half.prompts == b.prompts[G:3 * G]
    C = half.packed.targets.shape[1]
    assert C == max(max(len(c) for c in half.completion_ids), 1)
    torch.testing.assert_close(half.packed.targets, b.packed.targets[G:3 * G, :C])
    torch.testing.assert_close(half.advantages, b.advantages[G:3 * G])


def test_the_advantage_estimator_is_a_setting(tiny):
    """grpo.advantage group_center: the rewards minus their group mean, not divided by the std."""
    step, rows, pids = make_step(tiny, "--grpo.advantage", "group_center")
    b = scored(step, rows, pids)
    r = torch.as_tensor(b.rewards.sentence, dtype=torch.float32).view(-1, G)
    torch.testing.assert_close(b.advantages.view(-1, G).cpu(), r - r.mean(1, keepdim=True))


def test_one_update_per_batch_computes_no_old_logprobs(tiny, monkeypatch):
    import relate_fast.step as step_mod

    calls = []
    real = step_mod.sequence_logprobs
    monkeypatch.setattr(step_mod, "sequence_logprobs", lambda *a, **k: calls.append(1) or real(*a, **k))
    step, rows, pids = make_step(tiny)
    m = step.run(0, rows, pids, lr=1e-3)
    assert calls == [] and "time/old_logprobs" not in m
    assert m["updates"] == 1 and m["ratio_mean"] == pytest.approx(1.0) and m["clip_ratio"] == 0.0
    assert "per_update" not in m


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_sampler_correction_measures_and_weights_by_the_engines_log_probs(tiny, layout):
    """grpo.sampler_correction: the engine's log-probs reach the loss aligned with the completions. HF
    generate samples from the trained module itself, so the gap is float noise and the weights are 1:
    `measure` logs the gap and trains exactly as `off`; `tis` logs the weights, and its update is the
    same within noise."""
    runs = {}
    for mode in ("off", "measure", "tis"):
        step, rows, pids = make_step(tiny, "--grpo.sampler_correction", mode, "--grpo.layout", layout)
        torch.manual_seed(0)
        runs[mode] = (step.run(0, rows, pids, lr=1e-3), step.updater.model)
    off, measure, tis = (runs[k][0] for k in ("off", "measure", "tis"))
    assert "sampler_gap" not in off and "tis_weight_mean" not in measure
    assert measure["loss"] == off["loss"] and measure["sampler_gap_abs"] < 1e-4
    assert abs(tis["tis_weight_mean"] - 1) < 1e-4 and tis["tis_truncated"] == 0
    assert tis["loss"] == pytest.approx(off["loss"], rel=1e-4, abs=1e-6)
    for p, q in zip(runs["measure"][1].parameters(), runs["off"][1].parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_the_memory_plan_checkpoints_each_micro_batch_for_its_own_tokens(tiny2, layout):
    """model.auto_checkpointing plans for a full micro-batch (grpo.micro_batch_tokens); each micro-batch then
    checkpoints the fewest layers that fit its own tokens: here the smaller half none, the larger both. The
    update is the one without checkpointing (it changes no gradient), and the step logs the most layers any
    micro-batch recomputed."""
    from relate_fast.memory_plan import plan_checkpointing
    from relate_fast.models import checkpoint_layers, checkpointed_share

    a, h = 100.0, 1.0  # activation and kept bytes per token and layer: peak(0) = 2Ta, peak(2) = T(2h + a)
    plain, rows, pids = make_step(tiny2, "--grpo.layout", layout)
    b = scored(plain, rows, pids)
    packed = layout == "packed"
    slices = micro_batches(b.packed, 60, packed=packed)
    lengths = [len(p) + len(c) for p, c in zip(b.prompt_ids, b.completion_ids)]
    tokens = [sum(lengths[s]) if packed else
              (s.stop - s.start) * (max(map(len, b.prompt_ids[s])) + max(max(map(len, b.completion_ids[s])), 1))
              for s in slices]
    assert len(set(tokens)) > 1, tokens
    budget = 2 * a * sorted(tokens)[len(tokens) // 2 - 1]  # the smaller half fits with no layer checkpointed
    # planned for the largest micro-batch (rows longer than the 60-token budget run one per micro-batch)
    plan = plan_checkpointing(layers=2, tokens=max(tokens), activation=a, kept=h, states=0.0, budget=budget,
                              fragmentation=0.0)
    assert plan.checkpointed_layers == 2  # the largest needs both
    expected = [0 if 2 * t * a <= budget else 2 for t in tokens]
    assert 0 in expected and 2 in expected

    planned, _, _ = make_step(tiny2, "--grpo.layout", layout, memory_plan=plan)
    checkpoint_layers(planned.updater.model, plan.checkpointed_layers)  # as assemble does with the plan's choice
    b2 = scored(planned, rows, pids)
    records = planned.update(b2, 1e-3)
    assert [k for _, k in planned._ckpt_seen] == expected and [t for t, _ in planned._ckpt_seen] == tokens
    assert checkpointed_share(planned.updater.model) == expected[-1] / 2  # the last micro-batch's flags
    assert planned._update_utilisation(b2, 1.0)["memory/checkpointed_layers"] == 2
    plain_records = plain.update(b, 1e-3)
    assert not plain._ckpt_seen and "memory/checkpointed_layers" not in plain._update_utilisation(b, 1.0)
    assert records[0]["loss"].item() == pytest.approx(plain_records[0]["loss"].item(), rel=1e-6)
    for p, q in zip(planned.updater.model.parameters(), plain.updater.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_mini_batches_and_epochs_equal_a_manual_loop(tiny):
    """mini_batches=2, epochs=2: four optimizer steps, each on half the groups, against old log-probs
    taken once before the first; the parameters equal a hand-written loop over the same halves."""
    step, rows, pids = make_step(tiny, "--grpo.mini_batches", "2", "--grpo.epochs", "2", "--grpo.lr", "0.01")
    b = scored(step, rows, pids)
    reference = copy.deepcopy(step.updater.model)
    step.compute_logprobs_old(b)
    records = step.update(b, lr=0.01)
    assert len(records) == 4 and all(r["finite"] for r in records)

    # by hand: AdamW with the same settings, halves of whole groups in order, twice
    cfg = step.cfg
    model = reference
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=cfg.grpo.weight_decay, betas=(0.9, 0.99))
    torch.testing.assert_close(sequence_logprobs(model, b.packed, 10**6), b.old_logprobs)
    # the step's own old log-probs (taken in its micro-batches): a rounding-level difference in them
    # moves a near-zero gradient, which Adam's first steps turn into a full-size update
    old = b.old_logprobs
    model.train()
    for _ in range(2):
        for k in range(2):
            rows_k = slice(k * 2 * G, (k + 1) * 2 * G)
            mb = b.select(rows_k)
            for s in micro_batches(mb.packed, cfg.grpo.micro_batch_tokens):
                loss, _, _ = grpo_micro_loss(model, mb.packed, s, mb.advantages, old_logprobs=old[rows_k, :mb.packed.targets.shape[1]],
                                             eps_low=cfg.grpo.eps_low, eps_high=cfg.grpo.eps_high,
                                             total_rows=2 * G, total_tokens=float(mb.packed.num_tokens),
                                             max_completion_length=cfg.rollout.max_new_tokens)
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grpo.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
    for p, q in zip(step.updater.model.parameters(), model.parameters()):
        torch.testing.assert_close(p, q, atol=2e-5, rtol=1e-4)  # Adam amplifies rounding-order noise


def test_several_updates_make_the_clip_bind_and_log_each_update(tiny):
    step, rows, pids = make_step(tiny, "--grpo.mini_batches", "2", "--grpo.epochs", "3", "--grpo.lr", "0.05",
                                 "--grpo.eps_high", "0.2")
    m = step.run(0, rows, pids, lr=0.05)
    assert m["updates"] == 6 and len(m["per_update"]) == 6 and "time/old_logprobs" in m
    first, later = m["per_update"][0], m["per_update"][1:]
    assert first["ratio_mean"] == pytest.approx(1.0, abs=1e-4)  # same policy as the old log-probs
    assert max(u["clip_ratio"] for u in later) > 0  # the policy moved: the clip binds
    assert m["clip_ratio"] == pytest.approx(sum(u["clip_ratio"] for u in m["per_update"]) / 6)
    # a *_max metric is the maximum over micro-batches and updates, never an average of maxima
    assert m["ratio_max"] == max(u["ratio_max"] for u in m["per_update"]) > m["ratio_mean"]
    assert all(u["ratio_max"] >= u["ratio_mean"] for u in m["per_update"])


def test_mini_batches_must_divide_the_groups():
    with pytest.raises(ValueError, match=r"grpo.mini_batches: 3 must divide rollout.prompts_per_step \(8\)"):
        load_config(None, ["--grpo.mini_batches", "3"])
    for args, field in ((["--grpo.epochs", "0"], "grpo.epochs"), (["--rollout.group_size", "1"], "rollout.group_size"),
                        (["--grpo.loss_type", "ppo"], "grpo.loss_type"), (["--rollout.vllm_execution", "fast"],
                                                                           "rollout.vllm_execution")):
        with pytest.raises(ValueError, match=field):
            load_config(None, args)


def test_a_non_finite_batch_is_refused_before_the_update(tiny):
    step, rows, pids = make_step(tiny, "--grpo.mini_batches", "2")
    b = scored(step, rows, pids)
    step.compute_logprobs_old(b)
    GRPOStep.require_finite_inputs(b, 0)  # a healthy batch passes
    b.old_logprobs[4, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"GRPO step 1: old_logprobs has a non-finite value \(response 4\)"):
        GRPOStep.require_finite_inputs(b, 0)


def test_one_field_per_setting():
    """reward.ctcvr_model (RewardFunction.from_config's, outside the trainer) given to the trainer moves to
    its one field, ctcvr.model, with a deprecation warning; two different values are an error."""
    with pytest.warns(DeprecationWarning, match="reward.ctcvr_model is ctcvr.model"):
        cfg = load_config(None, ["--reward.ctcvr_model", "runs/ctcvr"])
    assert cfg.ctcvr.model == "runs/ctcvr" and cfg.reward.ctcvr_model is None
    with pytest.raises(ValueError, match="reward.ctcvr_model: 'a' differs from ctcvr.model 'b'"):
        load_config(None, ["--reward.ctcvr_model", "a", "--ctcvr.model", "b"])

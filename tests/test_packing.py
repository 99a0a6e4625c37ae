"""The packed layout (grpo.layout packed, relate_fast.varlen): the rows' tokens back to back with
varlen attention must give what the padded layout gives — log-probs, losses, gradients and one
optimizer step — in fp32 on the CPU (the GPU comparison is in tests/test_gpu_packing.py)."""
import copy

import pytest
import torch

from relate_fast.batching import (grpo_micro_loss, loss_weights, micro_batches, pack, packed_micro_loss,
                              sequence_logprobs)
from relate_fast.varlen import VARLEN_ATTN, register, varlen_attention

VOCAB = 97


def tiny_model(seed=0, attn=VARLEN_ATTN):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    register()
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False)
    cfg._attn_implementation = attn
    return Qwen3ForCausalLM(cfg).eval()


def random_batch(seed=0, rows=9):
    """Rows of very different lengths, an empty completion among them (EOS-less, zero tokens)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(1, VOCAB, (int(n),), generator=g).tolist() for n in torch.randint(1, 12, (rows,), generator=g)]
    comps = [torch.randint(1, VOCAB, (int(n),), generator=g).tolist() for n in torch.randint(0, 15, (rows,), generator=g)]
    comps[2] = []
    return pack(prompts, comps, pad_id=0)


def test_varlen_attention_reference_equals_sdpa_per_row():
    g = torch.Generator().manual_seed(1)
    lens = [3, 1, 7, 4]
    q = torch.randn(sum(lens), 4, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(sum(lens), 2, 8, generator=g, dtype=torch.float64) for _ in range(2))
    cu = torch.tensor([0, 3, 4, 11, 15])
    out = varlen_attention(q, k, v, cu, 7, backend="reference")
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):  # brute force: causal softmax within the row, GQA 2:1
        kk, vv = k[a:b].repeat_interleave(2, 1), v[a:b].repeat_interleave(2, 1)
        s = torch.einsum("qhd,khd->hqk", q[a:b], kk) / 8 ** 0.5
        s = s.masked_fill(torch.ones(b - a, b - a, dtype=torch.bool).triu(1), float("-inf"))
        torch.testing.assert_close(out[a:b], torch.einsum("hqk,khd->qhd", s.softmax(-1), vv), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="backend"):
        varlen_attention(q, k, v, cu, 7, backend="nope")


def test_layout_indexes_every_real_token_once():
    batch = random_batch()
    lay = batch.layout()
    B, W = batch.input_ids.shape
    assert lay.ids.numel() == int(batch.attention_mask.sum()) == lay.cu_host[-1]
    torch.testing.assert_close(lay.ids, batch.input_ids[batch.attention_mask.bool()])
    torch.testing.assert_close(lay.pos, torch.cat([torch.arange(n) for n in lay.lengths]))
    # the completion tokens, gathered from the packed ids at the predicting position + 1, are the targets
    torch.testing.assert_close(lay.ids[lay.completion_src + 1], batch.targets.reshape(-1)[lay.completion_index])
    assert lay.completion_index.numel() == int(batch.mask.sum())


@pytest.mark.parametrize("budget", [10**6, 30])
def test_packed_logprobs_equal_padded(budget):
    model = tiny_model()
    batch = random_batch()
    padded = sequence_logprobs(model, batch, budget, return_entropy=True)
    packed = sequence_logprobs(model, batch, budget, return_entropy=True, packed=True)
    if budget == 30:
        assert len(micro_batches(batch, budget, packed=True)) > 2
    for a, b in zip(padded, packed):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    assert packed[0][2].abs().sum() == 0  # the empty completion stays zero


def test_packed_micro_batches_fill_a_token_budget():
    batch = random_batch(rows=12)
    lengths = batch.layout().lengths
    ranges = micro_batches(batch, 25, packed=True)
    assert [r for s in ranges for r in range(s.start, s.stop)] == list(range(12))
    for s in ranges:  # within budget, or a single row longer than it
        assert sum(lengths[s]) <= 25 or s.stop - s.start == 1
    # a range could not take its next row (greedy fill)
    for s, nxt in zip(ranges, ranges[1:]):
        assert sum(lengths[s]) + lengths[nxt.start] > 25
    for count in sorted({len(ranges), min(len(ranges) + 1, 12), 12}):  # an exact count (data parallel): non-empty, in order
        got = micro_batches(batch, 25, count=count, packed=True)
        assert len(got) == count and all(s.stop > s.start for s in got)
        assert [r for s in got for r in range(s.start, s.stop)] == list(range(12))
    with pytest.raises(ValueError, match="cannot split"):
        micro_batches(batch, 25, count=13, packed=True)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo", "seq_sum"])
@pytest.mark.parametrize("token_adv", [False, True])
def test_packed_loss_and_grads_equal_padded(loss_type, token_adv):
    batch = random_batch(3)
    B, C = batch.targets.shape
    g = torch.Generator().manual_seed(5)
    adv = torch.randn(B, C, generator=g) if token_adv else torch.randn(B, generator=g)
    tr = torch.randn(B, C, generator=g) * batch.mask
    old = torch.randn(B, C, generator=g) * 0.1 - 4.6
    ref = torch.randn(B, C, generator=g) * 0.1 - 4.6
    tokens = float(batch.mask.sum())
    kw = dict(token_rewards=tr, alpha=0.5, old_logprobs=old, ref_logprobs=ref, beta=0.04, eps_low=0.2, eps_high=0.28)

    def run(packed):
        model = tiny_model()
        model.train()
        total, metrics = 0.0, []
        coef = loss_weights(batch.mask, loss_type, total_tokens=tokens, max_completion_length=16)
        for s in micro_batches(batch, 40, packed=packed):
            if packed:
                loss, m, n = packed_micro_loss(model, batch, s, adv, coef, **kw)
            else:
                loss, m, n = grpo_micro_loss(model, batch, s, adv, loss_type=loss_type, total_rows=B,
                                             total_tokens=tokens, max_completion_length=16, **kw)
            loss.backward()
            total += loss.item()
            metrics.append((n, float(m["kl"]), float(m["clip_ratio"])))
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        kl = sum(n * k for n, k, _ in metrics) / sum(n for n, _, _ in metrics)
        return total, grads, kl

    l0, g0, kl0 = run(False)
    l1, g1, kl1 = run(True)
    assert l1 == pytest.approx(l0, rel=1e-5, abs=1e-6)
    torch.testing.assert_close(g1, g0, atol=1e-5, rtol=1e-4)
    assert kl1 == pytest.approx(kl0, rel=1e-5, abs=1e-7)


def test_one_optimizer_step_packed_equals_padded(tmp_path):
    """The whole update stage (GRPOStep) on one sampled batch, layout packed vs padded: the same
    parameters after the optimizer step (fp32, within 1e-5)."""
    from relate_fast.config import TinyModelConfig, load_config
    from relate_fast.data import sample_ads
    from relate_fast.models import build_tiny_model, load_policy, prompt_ids
    from relate_fast.updater import PolicyUpdater
    from relate_fast.rewards import RewardFunction
    from relate_fast.rollout.hf import HFEngine
    from relate_fast.step import GRPOStep

    folder = build_tiny_model(TinyModelConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                              num_attention_heads=2, num_key_value_heads=1, head_dim=32), tmp_path)
    base, tok = load_policy(folder, packed=True)
    assert base.config._attn_implementation == VARLEN_ATTN
    rows = sample_ads("train", langs=["en"])[:4]
    pids = [prompt_ids(tok, r.prompt) for r in rows]
    params, sampled = {}, None
    for layout in ("padded", "packed"):
        cfg = load_config(None, ["--deepspeed.enabled", "false", "--rollout.group_size", "3", "--rollout.prompts_per_step",
                                 "4", "--rollout.max_new_tokens", "12", "--reward.preset", "model1", "--grpo.beta", "0",
                                 "--grpo.micro_batch_tokens", "90", "--reward.encoder", "hashed", "--grpo.lr", "1e-3",
                                 "--grpo.mini_batches", "2", "--grpo.layout", layout,
                                 "--reward.params", "{length: {unit: chars}}"])
        model = copy.deepcopy(base)
        updater = PolicyUpdater(model, cfg, world=1)
        step = GRPOStep(cfg, rollout=HFEngine(updater.model, tok), updater=updater,
                        reward_fn=RewardFunction.from_config(cfg.reward, tokenizer=tok), tokenizer=tok)
        assert step.packed_layout == (layout == "packed")
        torch.manual_seed(0)
        b = step.sample(0, rows, pids)
        if sampled is None:
            sampled = b.completion_ids
        assert b.completion_ids == sampled  # the same responses on both sides
        step.score(b)
        step.compute_advantages(b)
        step.compute_logprobs_old(b)  # two mini-batches: the clip against old log-probs binds
        records = step.update(b, cfg.grpo.lr)
        assert len(records) == 2 and all(r["finite"] for r in records)
        params[layout] = torch.cat([p.detach().flatten() for p in model.parameters()])
    moved = (params["packed"] - torch.cat([p.flatten() for p in base.parameters()])).abs().max()
    assert moved > 1e-4  # the step did change the parameters
    torch.testing.assert_close(params["packed"], params["padded"], atol=1e-5, rtol=0)


def test_packed_layout_needs_an_attention_that_takes_it():
    from relate_fast.config import load_config

    with pytest.raises(ValueError, match="grpo.layout: packed needs"):
        load_config(None, ["--grpo.layout", "packed", "--model.attn_implementation", "sdpa"])
    with pytest.raises(ValueError, match="grpo.layout: must be one of"):
        load_config(None, ["--grpo.layout", "flat"])
    assert load_config(None, ["--grpo.layout", "packed"]).grpo.layout == "packed"


def test_loss_on_packed_tokens_checks_its_arguments():
    from relate_fast.loss import fused_grpo_loss_tokens

    h, w = torch.randn(5, 8), torch.randn(11, 8)
    t, c, a = torch.randint(0, 11, (5,)), torch.full((5,), 0.2), torch.randn(5)
    loss, m = fused_grpo_loss_tokens(h, w, t, c, a)
    assert loss.dim() == 0 and set(m) >= {"kl", "clip_ratio"}
    with pytest.raises(ValueError, match="coef"):
        fused_grpo_loss_tokens(h, w, t, c[:4], a)
    with pytest.raises(ValueError, match="beta != 0 needs ref_logprobs"):
        fused_grpo_loss_tokens(h, w, t, c, a, beta=0.1)
    with pytest.raises(TypeError, match="dtype"):
        fused_grpo_loss_tokens(h, w.double(), t, c, a)
    empty, _ = fused_grpo_loss_tokens(h[:0], w, t[:0], c[:0], a[:0])
    assert float(empty) == 0.0


def test_auto_attention_takes_flash_attention_2_only_from_flash_attn_2(monkeypatch):
    """flash-attn-4 installs a `flash_attn` package too (only `flash_attn/cute`): "auto" must not read it as
    flash-attn 2, whose functions transformers' flash_attention_2 calls."""
    import importlib.metadata as md
    import importlib.util

    from relate_fast import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else None)
    for dists, expected in ((["flash_attn_4"], "relate_varlen"), (["flash_attn"], "flash_attention_2"),
                            (["flash-attn", "flash-attn-4"], "flash_attention_2")):
        monkeypatch.setattr(md, "packages_distributions", lambda d=dists: {"flash_attn": d})
        assert models.attn_implementation("auto", packed=True) == expected, dists
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert models.attn_implementation("auto", packed=False) == "sdpa"

"""RelateGRPOTrainer (relate_fast.integrations.trl) against TRL's own GRPOTrainer: the same loss and
gradients on the same batch for every loss type both support, token rewards entering as per-token
advantages, and one real training step."""
import pytest
import torch

trl = pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from transformers import Qwen3Config, Qwen3ForCausalLM  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from relate_fast.integrations.trl import RelateGRPOTrainer  # noqa: E402


def _model(tok, seed=0):
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=32, tie_word_embeddings=False,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return Qwen3ForCausalLM(cfg)


def _reward(completions, **kw):
    return [float(len(c)) / 10 for c in completions]


def _trainer(cls, tok, tmp_path, **cfg):
    args = GRPOConfig(output_dir=str(tmp_path / cls.__name__), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, max_steps=1, logging_steps=1, report_to=[], use_cpu=True,
                      save_strategy="no", bf16=False, **cfg)
    ds = Dataset.from_dict({"prompt": ["Title: a", "Title: b", "Description: c", "Book now"]})
    folder = tmp_path / "tiny_policy"  # a folder: TRL builds the reference model (beta != 0) from its path
    if not (folder / "config.json").exists():
        _model(tok).save_pretrained(folder)
    t = cls(model=str(folder), reward_funcs=_reward, args=args, train_dataset=ds, processing_class=tok)
    t.current_gradient_accumulation_steps = 2  # set by the training loop; the loss divides by it
    return t


@pytest.fixture
def tok(small_bpe):
    small_bpe.pad_token = small_bpe.eos_token
    return small_bpe


def _inputs(tok, B=4, P=5, T=7, seed=0, beta=False):
    g = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(5, len(tok), (B, P), generator=g)
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    prompt_mask[0, :2] = 0  # left padding
    completion_ids = torch.randint(5, len(tok), (B, T), generator=g)
    completion_mask = torch.ones(B, T, dtype=torch.long)
    completion_mask[1, 4:] = 0
    completion_mask[2, 1:] = 0
    inp = dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
               completion_mask=completion_mask, advantages=torch.randn(B, generator=g),
               old_per_token_logps=-torch.rand(B, T, generator=g) * 3 - 3,
               num_items_in_batch=completion_mask.sum())
    if beta:
        inp["ref_per_token_logps"] = -torch.rand(B, T, generator=g) * 3 - 3
    return inp


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradients_equal_trl(tok, tmp_path, loss_type, beta):
    kw = dict(loss_type=loss_type, beta=beta, epsilon=0.2, epsilon_high=0.28, temperature=0.9,
              use_bias_correction_kl=False)
    ours, theirs = _trainer(RelateGRPOTrainer, tok, tmp_path, **kw), _trainer(GRPOTrainer, tok, tmp_path, **kw)
    inputs = _inputs(tok, beta=beta != 0)
    losses, grads = [], []
    for t in (ours, theirs):
        t.model.train()
        t.model.zero_grad()
        loss = t._compute_loss(t.model, inputs)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in t.model.parameters() if p.grad is not None]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_token_rewards_are_per_token_advantages(tok, tmp_path):
    ours = _trainer(RelateGRPOTrainer, tok, tmp_path, loss_type="grpo", beta=0.0)
    theirs = _trainer(GRPOTrainer, tok, tmp_path, loss_type="grpo", beta=0.0)
    inputs = _inputs(tok)
    r_tok = -torch.rand(inputs["completion_ids"].shape) * inputs["completion_mask"]
    ours.alpha = 0.5
    a = ours._compute_loss(ours.model, {**inputs, "token_rewards": r_tok})
    # TRL accepts [B, T] advantages: A = A_sent + α·r_tok there must give the same loss
    b = theirs._compute_loss(theirs.model, {**inputs, "advantages": inputs["advantages"][:, None] + 0.5 * r_tok})
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_one_training_step_runs_with_token_rewards(tok, tmp_path):
    seen = []

    def token_reward_fn(seqs, batch):
        seen.append(len(seqs))
        return torch.zeros(len(seqs), max(len(s) for s in seqs)) - 0.1

    t = _trainer(RelateGRPOTrainer, tok, tmp_path, loss_type="dapo", beta=0.0)
    t.token_reward_fn = token_reward_fn
    before = [p.detach().clone() for p in t.model.parameters()]
    t.train()
    assert seen and any(not torch.equal(a, p) for a, p in zip(before, t.model.parameters()))


def test_unsupported_options_are_refused(tok, tmp_path):
    with pytest.raises(ValueError, match="loss_type='cispo'"):
        _trainer(RelateGRPOTrainer, tok, tmp_path, loss_type="cispo")
    with pytest.raises(ValueError, match="importance_sampling_level='sequence'"):
        _trainer(RelateGRPOTrainer, tok, tmp_path, loss_type="grpo", importance_sampling_level="sequence")

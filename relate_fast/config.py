"""The trainer's configuration: one dataclass tree with help text per field, YAML files, dotted
command-line overrides, and the resolved config saved with every run.

    cfg = load_config("configs/tiny_cpu.yaml", ["--rollout.group_size", "5", "--grpo.steps=20"])
    python -m relate_fast.train --help          # every field with its help and default
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from relate_fast.rewards.combine import RewardConfig

__all__ = ["Config", "ModelConfig", "DataConfig", "RolloutConfig", "SFTConfig", "CTCVRConfig", "GRPOConfig",
           "DeepSpeedConfig", "EvalConfig", "RunConfig", "load_config", "config_to_dict", "format_help", "validate",
           "SAFE_CHANGES", "config_diff", "meaning_hash"]


def _f(default, help: str, *, safe: bool = False):
    """A setting with its help text. `safe`: it may change when a run resumes, because it changes how the
    run goes or how long, not what it computes (SAFE_CHANGES is made of these)."""
    meta = {"help": help, "safe_on_resume": safe}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    name: str = _f("tiny_cpu", "Run name: outputs go to <out_dir>/<name>/.", safe=True)
    out_dir: str = _f("runs", "Folder holding one sub-folder per run.", safe=True)
    seed: int = _f(0, "Seed of every random choice (data order, sampling, initialisation).")
    resume: bool = _f(True, "Continue from <run>/checkpoint when it exists (else start fresh).", safe=True)
    checkpoint_every: int = _f(5, "GRPO steps between checkpoints (a crash loses at most this many); 0 = only at "
                                  "the end and on Ctrl-C.", safe=True)
    save_final: bool = _f(True, "At the end of the run, write the last step's checkpoint and the final/ model "
                                "folder. Off only for benchmarks: for a Qwen3-8B policy under ZeRO-2 the checkpoint "
                                "is ~115 GB (bf16 weights plus every rank's fp32 master and Adam shards), minutes "
                                "of disk writes.", safe=True)
    keep_checkpoints: int = _f(2, "Checkpoints kept (the newest); a damaged one falls back to the one before.", safe=True)
    max_nan_steps: int = _f(3, "Stop after this many consecutive steps with a non-finite loss (each is skipped).", safe=True)
    threads: int = _f(0, "torch CPU threads (0 = leave torch's default).", safe=True)
    check_replicas_every: int = _f(0, "Every this many steps, check that all ranks hold identical parameters "
                                      "(a checksum all-reduce); 0 = never.", safe=True)
    progress: bool = _f(True, "Show progress bars.", safe=True)
    peak_tflops: float = _f(0.0, "The GPU's dense bf16 peak (TFLOP/s) for the update's MFU in metrics.jsonl (speed/update_mfu); "
                                 "0 = the datasheet rate of a known GPU (H100/H200: 989), none on the CPU.", safe=True)


@dataclass
class TinyModelConfig:
    vocab_size: int = _f(3000, "Byte-level BPE vocabulary trained on the sample dataset.")
    hidden_size: int = _f(128, "Hidden size.")
    num_hidden_layers: int = _f(2, "Decoder layers.")
    num_attention_heads: int = _f(4, "Attention heads.")
    num_key_value_heads: int = _f(2, "Key/value heads (GQA).")
    head_dim: int = _f(32, "Head dimension (vLLM's CPU attention needs 32 or more).")
    intermediate_size: int = _f(384, "MLP width.")
    max_position_embeddings: int = _f(1024, "Longest sequence.")


@dataclass
class ModelConfig:
    path: Optional[str] = _f(None, "Policy weights: a local folder or a model name. None builds the embedded tiny "
                                   "Qwen3 and its tokenizer (cached under <out_dir>/_tiny_model).")
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig, metadata={"help": "The embedded tiny model."})
    dtype: str = _f("float32", "Training dtype: float32 or bfloat16.")
    attn_implementation: str = _f("auto", "auto (flash_attention_2 when installed on GPU; else relate_varlen, sdpa that "
                                          "also takes packed rows, when grpo.layout resolves to packed; else sdpa), sdpa, "
                                          "eager, flash_attention_2, relate_varlen.")
    gradient_checkpointing: bool = _f(False, "Non-reentrant activation checkpointing of the decoder layers.")
    fused_layers: str = _f("auto", "The decoder body's elementwise work fused: compile (torch.compile of each decoder "
                                   "layer), liger (liger-kernel's RMSNorm, SwiGLU and RoPE; needs liger-kernel, and "
                                   "patches transformers' Qwen3 classes process-wide), none, or auto (compile on a GPU with "
                                   "vLLM rollouts; none on the CPU or when HF generate samples from the policy "
                                   "itself). The lm_head and the loss are always relate_fast's fused loss.")
    init: str = _f("pretrained", "pretrained: the weights at model.path; random: the architecture of model.path's "
                                 "config.json with seeded random weights (a model's shape without its weights, for "
                                 "benchmarks; vLLM then starts from dummy weights and gets the policy's pushed).")


@dataclass
class DataConfig:
    path: Optional[str] = _f(None, "Ad dataset JSONL (None = the shipped sample, relate_fast/data/sample_ads.jsonl).")
    langs: List[str] = _f(["zh", "en"], "Languages used from the dataset.")
    max_prompt_tokens: int = _f(256, "Prompts longer than this many tokens are an error naming the prompt id.")


@dataclass
class RolloutConfig:
    engine: str = _f("auto", "auto (vLLM when installed, else HF generate), vllm, or hf.")
    group_size: int = _f(5, "G: responses sampled per prompt.")
    prompts_per_step: int = _f(8, "Prompts per GRPO step on each rank (responses = prompts x G).")
    max_new_tokens: int = _f(64, "Longest response.")
    temperature: float = _f(1.0, "Sampling temperature (also divides the logits in the loss).")
    top_p: float = _f(1.0, "Nucleus sampling (1 = off: the loss assumes the full distribution).")
    vllm_kv_cache_gb: float = _f(0.5, "vLLM KV-cache size on CPU (GiB); without it vLLM reserves most of the RAM.", safe=True)
    vllm_gpu_memory_utilization: float = _f(0.3, "vLLM's share of GPU memory on CUDA.", safe=True)
    vllm_sleep: bool = _f(True, "On CUDA, put vLLM to sleep during the update (its KV cache and weights freed).", safe=True)
    vllm_sleep_level: int = _f(2, "vLLM sleep level: 2 discards the weights (the policy's are pushed after every "
                                  "update anyway), 1 keeps a CPU copy of them.", safe=True)
    vllm_execution: str = _f("compiled", "On CUDA: compiled (vLLM's default: torch.compile + CUDA graphs), "
                                         "cuda_graphs (full CUDA graphs for decoding, no compilation: starts faster), "
                                         "or eager. The CPU always runs eager.", safe=True)


@dataclass
class SFTConfig:
    steps: int = _f(300, "Supervised cold-start steps on the reference ads (0 = skip).")
    batch_size: int = _f(32, "Prompts per cold-start step.")
    lr: float = _f(2e-3, "Cold-start learning rate (AdamW, cosine decay).")


@dataclass
class CTCVRConfig:
    model: Optional[str] = _f(None, "A trained CTCVR model folder; None trains one on simulator logs.")
    encoder: str = _f("minilm", "Embedding model of the CTCVR model (its inputs): minilm, hashed, or a path. The "
                                "relevance reward uses reward.encoder; when both are the same, one model is loaded.")
    variants: int = _f(8, "Creatives per training prompt in the simulated logs.")
    impressions: int = _f(8, "Impressions per creative.")
    epochs: int = _f(12, "CTCVR training epochs.")


@dataclass
class GRPOConfig:
    steps: int = _f(40, "GRPO steps (one rollout batch each, then mini_batches x epochs optimizer steps).", safe=True)
    mini_batches: int = _f(1, "Optimizer steps per pass over a rollout batch, each on an equal share of its groups "
                              "(groups kept whole; must divide rollout.prompts_per_step). Like verl's PPO "
                              "mini-batches. With one update per batch (mini_batches = epochs = 1) the policy is "
                              "on-policy: no old log-probs are computed and the ratio is 1.")
    epochs: int = _f(1, "Passes over each rollout batch (like TRL's num_iterations).")
    lr: float = _f(5e-4, "Learning rate (AdamW, constant after warm-up).")
    warmup_steps: int = _f(2, "Linear warm-up, in GRPO steps.")
    beta: float = _f(0.02, "KL coefficient (k3 to the cold-start reference); 0 skips the reference entirely.")
    eps_low: float = _f(0.2, "Lower clip range.")
    eps_high: float = _f(0.28, "Upper clip range (clip-higher).")
    loss_type: str = _f("grpo", "grpo, bnpo, dr_grpo, dapo or seq_sum (the paper's eq. 6).")
    micro_batch_tokens: int = _f(4096, "Token budget of one micro-batch: prompt + response tokens, counted with their "
                                       "padding in the padded layout, real tokens only in the packed one.")
    layout: str = _f("auto", "How a micro-batch's rows reach the model: packed (their tokens back to back, varlen "
                             "attention: no pad token computed), padded (rows x the widest row), or auto (packed on "
                             "CUDA, padded on the CPU). Packed needs model.attn_implementation auto, relate_varlen or "
                             "flash_attention_2; both layouts compute the same loss.")
    max_grad_norm: float = _f(1.0, "Gradient clipping.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")


@dataclass
class DeepSpeedConfig:
    enabled: bool = _f(True, "Wrap the policy in a DeepSpeed engine (ZeRO-2); False uses plain torch (DDP when distributed).")
    zero_stage: int = _f(2, "ZeRO stage (2: optimizer states and gradients sharded, weights replicated).")
    overlap_comm: bool = _f(True, "Overlap gradient reduction with backward.", safe=True)
    reduce_bucket_size: int = _f(50_000_000, "Elements per gradient-reduction bucket.", safe=True)
    allgather_bucket_size: int = _f(50_000_000, "Elements per parameter all-gather bucket.", safe=True)


@dataclass
class EvalConfig:
    enabled: bool = _f(True, "Evaluate the cold-start and the final policy (summary.json); off for benchmarks.")
    split: str = _f("validation", "Dataset split evaluated before and after GRPO.")
    prompts: int = _f(48, "Prompts evaluated (0 = the whole split).")
    samples: int = _f(2, "Sampled responses per prompt (at the rollout temperature).")


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "Run bookkeeping."})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The policy."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "The prompts."})
    rollout: RolloutConfig = field(default_factory=RolloutConfig, metadata={"help": "Sampling."})
    sft: SFTConfig = field(default_factory=SFTConfig, metadata={"help": "Supervised cold start."})
    ctcvr: CTCVRConfig = field(default_factory=CTCVRConfig, metadata={"help": "The CTCVR reward model."})
    reward: RewardConfig = field(default_factory=RewardConfig, metadata={"help": "Reward components (Table 2)."})
    grpo: GRPOConfig = field(default_factory=GRPOConfig, metadata={"help": "The policy update."})
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig, metadata={"help": "DeepSpeed engine."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Baseline and final evaluation."})


# --------------------------------------------------------------------------- loading and overrides


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is typing.Union:
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, List):
        return isinstance(value, list) and all(_type_ok(v, typing.get_args(tp)[0]) for v in value)
    if origin in (dict, Dict):
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _hints(cls):
    return typing.get_type_hints(cls)


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp, value, key = hints[f.name], data[f.name], f"{where}.{f.name}".lstrip(".")
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, value, key)
        else:
            if tp is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not _type_ok(value, tp):
                raise ValueError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
            kwargs[f.name] = value
    return cls(**kwargs)


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _set_dotted(tree: dict, dotted: str, raw: str, cls=Config) -> None:
    parts = dotted.split(".")
    node, c = tree, cls
    for i, p in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(c)}
        if p not in fields:
            raise ValueError(f"--{dotted}: unknown option '{'.'.join(parts[:i + 1])}'; known at this level: "
                             f"{sorted(fields)}")
        tp = _hints(c)[p]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                raise ValueError(f"--{dotted} is a section; set one of its fields, e.g. --{dotted}."
                                 f"{dataclasses.fields(tp)[0].name}")
            value = yaml.safe_load(raw) if raw != "" else ""
            wants_str = tp is str or (typing.get_origin(tp) is typing.Union and str in typing.get_args(tp))
            if wants_str and value is not None and not isinstance(value, str):
                value = raw  # --run.name 007 stays the string "007"
            if isinstance(value, str) and _is_number(value) and (tp is float or (
                    typing.get_origin(tp) is typing.Union and float in typing.get_args(tp))):
                value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
            node[p] = value
        else:
            if not dataclasses.is_dataclass(tp):
                raise ValueError(f"--{dotted}: '{p}' is not a section")
            node = node.setdefault(p, {})
            c = tp


def parse_overrides(args: Sequence[str]) -> List[tuple]:
    """["--a.b", "1", "--c=2"] -> [("a.b", "1"), ("c", "2")]."""
    out, i, args = [], 0, list(args)
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ValueError(f"unexpected argument {a!r}: options look like --section.field VALUE")
        if "=" in a:
            k, v = a[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args) or (args[i + 1].startswith("--") and not _is_number(args[i + 1])):
                raise ValueError(f"{a} needs a value")
            k, v = a[2:], args[i + 1]
            i += 2
        out.append((k, v))
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in (
            "weights", "params", "normalize") else v
    return out


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file, then the dotted overrides; every key and type is checked."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"--config {path}: no such file")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"--config {path}: not valid YAML ({e})") from None
        tree = _build_tree_check(loaded, str(path))
    over: dict = {}
    for k, v in parse_overrides(overrides):
        _set_dotted(over, k, v)
    tree = _merge(tree, over)
    return validate(_build(Config, tree, ""))


def _safe_settings(cls, prefix: str = ""):
    for f in dataclasses.fields(cls):
        section = f.default_factory
        if isinstance(section, type) and dataclasses.is_dataclass(section):
            yield from _safe_settings(section, f"{prefix}{f.name}.")
        elif f.metadata.get("safe_on_resume"):
            yield f"{prefix}{f.name}"


#: Settings that may change when a run resumes (the fields made with `safe=True`): they change how it
#: runs or how long, not what it computes. Any other difference makes the resumed run a different run,
#: which is refused.
SAFE_CHANGES = frozenset(_safe_settings(Config))


def _flatten(d: dict, prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("weights", "params", "normalize"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(old: dict, new: dict) -> List[tuple]:
    """[(field, old value, new value)] of the dotted fields that differ between two config dicts."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def meaning_hash(cfg_dict: dict) -> str:
    """A hash of the settings that define what a run computes (everything but SAFE_CHANGES)."""
    import hashlib
    import json

    kept = {k: v for k, v in _flatten(cfg_dict).items() if k not in SAFE_CHANGES}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def validate(cfg: Config) -> Config:
    """Ranges and constraints between fields, checked when the config loads; each error names the field."""
    def need(ok: bool, field: str, msg: str):
        if not ok:
            raise ValueError(f"{field}: {msg}")

    r, g = cfg.rollout, cfg.grpo
    need(r.group_size >= 2, "rollout.group_size", f"must be >= 2 (GRPO compares responses within a group), got {r.group_size}")
    need(r.prompts_per_step >= 1, "rollout.prompts_per_step", f"must be >= 1, got {r.prompts_per_step}")
    need(r.max_new_tokens >= 1, "rollout.max_new_tokens", f"must be >= 1, got {r.max_new_tokens}")
    need(r.engine in ("auto", "vllm", "hf"), "rollout.engine", f"must be auto, vllm or hf, got {r.engine!r}")
    need(r.vllm_sleep_level in (1, 2), "rollout.vllm_sleep_level", f"must be 1 or 2, got {r.vllm_sleep_level}")
    need(r.vllm_execution in ("compiled", "cuda_graphs", "eager"), "rollout.vllm_execution",
         f"must be compiled, cuda_graphs or eager, got {r.vllm_execution!r}")
    need(0 < r.vllm_gpu_memory_utilization < 1, "rollout.vllm_gpu_memory_utilization",
         f"must be in (0, 1), got {r.vllm_gpu_memory_utilization}")
    need(g.steps >= 0, "grpo.steps", f"must be >= 0, got {g.steps}")
    need(cfg.run.checkpoint_every >= 0, "run.checkpoint_every", f"must be >= 0, got {cfg.run.checkpoint_every}")
    need(cfg.run.keep_checkpoints >= 1, "run.keep_checkpoints", f"must be >= 1, got {cfg.run.keep_checkpoints}")
    need(cfg.run.max_nan_steps >= 1, "run.max_nan_steps", f"must be >= 1, got {cfg.run.max_nan_steps}")
    need(cfg.sft.steps >= 0, "sft.steps", f"must be >= 0, got {cfg.sft.steps}")
    need(cfg.eval.prompts >= 0 and cfg.eval.samples >= 1, "eval.prompts",
         f"eval.prompts must be >= 0 and eval.samples >= 1, got {cfg.eval.prompts}, {cfg.eval.samples}")
    need(cfg.rollout.temperature > 0, "rollout.temperature", f"must be > 0, got {cfg.rollout.temperature}")
    need(0 < cfg.rollout.top_p <= 1, "rollout.top_p", f"must be in (0, 1], got {cfg.rollout.top_p}")
    need(g.lr > 0, "grpo.lr", f"must be > 0, got {g.lr}")
    need(0 <= g.eps_low < 1 and g.eps_high >= 0, "grpo.eps_low",
         f"need 0 <= grpo.eps_low < 1 and grpo.eps_high >= 0, got {g.eps_low}, {g.eps_high}")
    need(g.mini_batches >= 1, "grpo.mini_batches", f"must be >= 1, got {g.mini_batches}")
    need(g.epochs >= 1, "grpo.epochs", f"must be >= 1, got {g.epochs}")
    need(r.prompts_per_step % g.mini_batches == 0, "grpo.mini_batches",
         f"{g.mini_batches} must divide rollout.prompts_per_step ({r.prompts_per_step}): a mini-batch holds whole groups")
    need(g.micro_batch_tokens >= 1, "grpo.micro_batch_tokens", f"must be >= 1, got {g.micro_batch_tokens}")
    need(g.beta >= 0, "grpo.beta", f"must be >= 0, got {g.beta}")
    from relate_fast.grpo import LAYOUTS
    from relate_fast.varlen import supports_packing

    need(g.layout in LAYOUTS, "grpo.layout", f"must be one of {LAYOUTS}, got {g.layout!r}")
    need(g.layout != "packed" or cfg.model.attn_implementation == "auto" or supports_packing(cfg.model.attn_implementation),
         "grpo.layout", f"packed needs an attention that takes packed rows (model.attn_implementation auto, "
                        f"relate_varlen or flash_attention_2), got {cfg.model.attn_implementation!r}")
    from relate_fast.loss import LOSS_TYPES
    from relate_fast.rewards.combine import PRESETS

    need(g.loss_type in LOSS_TYPES, "grpo.loss_type", f"must be one of {LOSS_TYPES}, got {g.loss_type!r}")
    need(cfg.reward.preset in PRESETS, "reward.preset", f"must be one of {sorted(PRESETS)}, got {cfg.reward.preset!r}")
    need(cfg.model.init in ("pretrained", "random"), "model.init", f"must be pretrained or random, got {cfg.model.init!r}")
    need(cfg.model.init == "pretrained" or cfg.model.path is not None, "model.init",
         "random needs model.path (a folder with the architecture's config.json and tokenizer)")
    from relate_fast.models import FUSED_LAYERS

    need(cfg.model.fused_layers in FUSED_LAYERS, "model.fused_layers",
         f"must be one of {FUSED_LAYERS}, got {cfg.model.fused_layers!r}")
    need(cfg.model.dtype in ("float32", "bfloat16"), "model.dtype", f"must be float32 or bfloat16, got {cfg.model.dtype!r}")
    rw = cfg.reward
    need(rw.judge_engine in ("hf", "vllm"), "reward.judge_engine", f"must be hf or vllm, got {rw.judge_engine!r}")
    need(not rw.judge_relevance or rw.judge_model is not None, "reward.judge_relevance",
         "needs reward.judge_model (the judge that scores relevance)")
    need(0 < rw.judge_gpu_memory_utilization < 1, "reward.judge_gpu_memory_utilization",
         f"must be in (0, 1), got {rw.judge_gpu_memory_utilization}")
    need(rw.judge_batch_size >= 1, "reward.judge_batch_size", f"must be >= 1, got {rw.judge_batch_size}")
    need(rw.judge_max_new_tokens >= 1, "reward.judge_max_new_tokens", f"must be >= 1, got {rw.judge_max_new_tokens}")
    # one field per setting: the trainer's CTCVR model is ctcvr.model (reward.ctcvr_model serves
    # RewardFunction.from_config outside the trainer)
    need(cfg.reward.ctcvr_model is None, "reward.ctcvr_model",
         "the trainer reads the CTCVR model from ctcvr.model; set that instead")
    return cfg


def _build_tree_check(loaded, where):
    if not isinstance(loaded, dict):
        raise ValueError(f"{where}: the top level must be a mapping of sections")
    _build(Config, loaded, where + ":")  # validate now so the error names the file
    return loaded


def format_help(cls=Config, prefix: str = "") -> str:
    lines = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            lines.append(f"\n[{key}] {f.metadata.get('help', '')}")
            lines.append(format_help(tp, key + "."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            safe = " May change when a run resumes." if f.metadata.get("safe_on_resume") else ""
            lines.append(f"  --{key} (default {default!r})\n      {f.metadata.get('help', '')}{safe}")
    return "\n".join(lines)

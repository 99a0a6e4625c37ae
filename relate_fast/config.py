"""The trainer's configuration: one dataclass tree with help text per field, YAML files, dotted
command-line overrides, and the resolved config saved with every run.

    cfg = load_config("configs/tiny_cpu.yaml", ["--rollout.group_size", "5", "--grpo.steps=20"])
    python -m relate_fast.train --help          # every field with its help and default
"""
from __future__ import annotations

import dataclasses
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from relate_fast.rewards.combine import RewardConfig
from relate_fast.settings import check_fields, describe, setting

__all__ = ["Config", "ModelConfig", "DataConfig", "RolloutConfig", "SFTConfig", "CTCVRConfig", "GRPOConfig",
           "DeepSpeedConfig", "EvalConfig", "RunConfig", "load_config", "load_run_config", "config_to_dict", "format_help", "validate",
           "SAFE_CHANGES", "config_diff", "meaning_hash", "sampler_correction"]


def _choices_of(module: str, name: str, first: tuple = ()):
    """The choices a registry elsewhere holds (its keys), looked up when a config is checked: config.py
    imports no registry at import time, so no import cycle."""
    def lookup():
        import importlib

        return first + tuple(getattr(importlib.import_module(module), name))
    return lookup


_fused_layers = _choices_of("relate_fast.models", "FUSED_LAYERS")
_loss_types = _choices_of("relate_fast.loss.objective", "LOSS_REGISTRY")
_advantage_estimators = _choices_of("relate_fast.loss.advantages", "ADVANTAGE_ESTIMATORS")
_layouts = _choices_of("relate_fast.batching", "LAYOUTS")
_loss_backends = _choices_of("relate_fast.loss.rows", "BACKENDS", first=("auto",))
_logits_paths = _choices_of("relate_fast.loss.rows", "LOGITS_CHOICES")


@dataclass
class RunConfig:
    name: str = setting("tiny_cpu", "Run name: outputs go to <out_dir>/<name>/.", safe=True)
    out_dir: str = setting("runs", "Folder holding one sub-folder per run.", safe=True)
    seed: int = setting(0, "Seed of every random choice (data order, sampling, initialisation).")
    resume: bool = setting(True, "Continue from <run>/checkpoint when it exists (else start fresh).", safe=True)
    checkpoint_every: int = setting(5, "GRPO steps between checkpoints (a crash loses at most this many); 0 = only at "
                                  "the end and on Ctrl-C.", safe=True, ge=0)
    save_final: bool = setting(True, "At the end of the run, write the last step's checkpoint and the final/ model "
                                "folder. Off only for benchmarks: for a Qwen3-8B policy under ZeRO-2 the checkpoint "
                                "is ~115 GB (bf16 weights plus every rank's fp32 master and Adam shards), minutes "
                                "of disk writes.", safe=True)
    keep_checkpoints: int = setting(2, "Checkpoints kept (the newest); a damaged one falls back to the one before.", safe=True, ge=1)
    max_nan_steps: int = setting(3, "Stop after this many consecutive steps with a non-finite loss (each is skipped).", safe=True, ge=1)
    threads: int = setting(0, "torch CPU threads (0 = leave torch's default).", safe=True, ge=0)
    check_replicas_every: int = setting(0, "Every this many steps, check that all ranks hold identical parameters "
                                      "(a checksum all-reduce); 0 = never.", safe=True, ge=0)
    progress: bool = setting(True, "Show progress bars.", safe=True)
    peak_tflops: float = setting(0.0, "The GPU's dense bf16 peak (TFLOP/s) for the update's MFU in metrics.jsonl (speed/update_mfu); "
                                 "0 = the datasheet rate of a known GPU (H100/H200: 989), none on the CPU.", safe=True, ge=0)


@dataclass
class TinyModelConfig:
    vocab_size: int = setting(3000, "Byte-level BPE vocabulary trained on the sample dataset.")
    hidden_size: int = setting(128, "Hidden size.")
    num_hidden_layers: int = setting(2, "Decoder layers.")
    num_attention_heads: int = setting(4, "Attention heads.")
    num_key_value_heads: int = setting(2, "Key/value heads (GQA).")
    head_dim: int = setting(32, "Head dimension (vLLM's CPU attention needs 32 or more).")
    intermediate_size: int = setting(384, "MLP width.")
    max_position_embeddings: int = setting(1024, "Longest sequence.")


@dataclass
class ModelConfig:
    path: Optional[str] = setting(None, "Policy weights: a local folder or a model name. None builds the embedded tiny "
                                   "Qwen3 and its tokenizer (cached under <out_dir>/_tiny_model).")
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig, metadata={"help": "The embedded tiny model."})
    dtype: str = setting("float32", "Training dtype: float32 or bfloat16.", choices=("float32", "bfloat16"))
    attn_implementation: str = setting("auto", "auto (flash_attention_2 when installed on GPU; else relate_varlen, sdpa that "
                                          "also takes packed rows, when grpo.layout resolves to packed; else sdpa), sdpa, "
                                          "eager, flash_attention_2, relate_varlen.")
    gradient_checkpointing: bool = setting(False, "Non-reentrant activation checkpointing of the decoder layers.")
    checkpoint_layers: int = setting(-1, "With model.gradient_checkpointing: how many decoder layers are checkpointed, spread "
                                        "evenly over the depth (-1: all). Fewer: less recomputation in the backward, more "
                                        "activation memory; the same gradients.", ge=-1)
    auto_checkpointing: bool = setting(False, "Choose the checkpointed layers from a memory plan when the update starts "
                                          "(relate_fast.memory_plan): none when the update's predicted peak fits, else the "
                                          "fewest layers that make it fit (asked again per micro-batch for its own tokens: "
                                          "shorter ones checkpoint fewer); overrides model.gradient_checkpointing and "
                                          "model.checkpoint_layers. The plan goes to the log; at the end, beside the peaks the "
                                          "steps measured, to <run>/memory_plan.json and summary.json.")
    memory_budget_gib: float = setting(0.0, "The memory plan's budget per rank in GiB; 0 = the GPU's memory less a 5 % "
                                            "margin (on the CPU, where there is none to read, a budget must be given).", ge=0)
    fused_layers: str = setting("auto", "The decoder body's elementwise work fused: compile (torch.compile of each decoder "
                                   "layer), liger (liger-kernel's RMSNorm, SwiGLU and RoPE; needs liger-kernel, and "
                                   "patches transformers' Qwen3 classes process-wide), none, or auto (compile on a GPU with "
                                   "vLLM rollouts; none on the CPU or when HF generate samples from the policy "
                                   "itself). The lm_head and the loss are always relate_fast's fused loss.", choices=_fused_layers)
    init: str = setting("pretrained", "pretrained: the weights at model.path; random: the architecture of model.path's "
                                 "config.json with seeded random weights (a model's shape without its weights, for "
                                 "benchmarks; vLLM then starts from dummy weights and gets the policy's pushed).", choices=("pretrained", "random"))


@dataclass
class DataConfig:
    path: Optional[str] = setting(None, "Ad dataset JSONL (None = the shipped sample, relate_fast/data/sample_ads.jsonl).")
    langs: List[str] = setting(["zh", "en"], "Languages used from the dataset.")
    max_prompt_tokens: int = setting(256, "Prompts longer than this many tokens are an error naming the prompt id.", ge=1)


@dataclass
class RolloutConfig:
    engine: str = setting("auto", "auto (vLLM when installed, else HF generate), vllm, or hf.", choices=("auto", "vllm", "hf"))
    group_size: int = setting(5, "G: responses sampled per prompt.", ge=2)
    prompts_per_step: int = setting(8, "Prompts per GRPO step on each rank (responses = prompts x G).", ge=1)
    max_new_tokens: int = setting(64, "Longest response.", ge=1)
    temperature: float = setting(1.0, "Sampling temperature (also divides the logits in the loss).", gt=0)
    top_p: float = setting(1.0, "Nucleus sampling (1 = off: the loss assumes the full distribution).", gt=0, le=1)
    mode: str = setting("sync", "sync: each step samples with the current weights, then learns. one_step_off: the "
                                "batch a step learns from was sampled one update earlier (with the weights before "
                                "the previous update), the staleness corrected by grpo.sampler_correction; the "
                                "batch waiting for the next step is part of every checkpoint (so the last step "
                                "samples one batch more); HF generate samples from its own copy of the policy. How "
                                "it overlaps the update: rollout.overlap.",
                        choices=("sync", "one_step_off"))
    overlap: str = setting("thread", "rollout.mode one_step_off: thread samples the next batch in a background thread "
                                     "while the update runs (vLLM queues it on a CUDA stream of that thread's own; the "
                                     "engine stays awake, so rollout.vllm_sleep does not apply); off samples it in the main thread before the update: the same "
                                     "batches and numbers, no overlap.", safe=True, choices=("thread", "off"))
    sampler_ranks: int = setting(0, "Under torchrun with rollout.mode one_step_off: the last this-many ranks only sample "
                                    "(relate_fast.rollout.split) and the others train; the weights go from the first "
                                    "trainer to the samplers after each update, each batch from a sampler to its trainers. "
                                    "0: every rank samples its own prompts. A sampling rank's vLLM engine runs in its own process (the weights "
                                    "reach it through a file in shared memory).", ge=0)
    vllm_own_process: bool = setting(False, "Run vLLM's engine core in a process of its own beside the trainer (vLLM's "
                                            "multiprocessing mode): its Python no longer shares the trainer's GIL, so with "
                                            "rollout.overlap thread the sampler's host work runs beside the update. The "
                                            "weights reach it by CUDA IPC handles on a GPU (no copy through the host), a "
                                            "safetensors file in shared memory on the CPU. Sampling ranks "
                                            "(rollout.sampler_ranks) always run it so. Its process is spawned: "
                                            "a script that builds the engine needs the __main__ guard.", safe=True)
    vllm_kv_cache_gb: float = setting(0.5, "vLLM KV-cache size on CPU (GiB); without it vLLM reserves most of the RAM.", safe=True, gt=0)
    vllm_gpu_memory_utilization: float = setting(0.3, "vLLM's share of GPU memory on CUDA.", safe=True, gt=0, lt=1)
    vllm_sleep: bool = setting(True, "On CUDA, put vLLM to sleep during the update (its KV cache and weights freed); "
                                     "not while it samples during the update (rollout.overlap thread).", safe=True)
    vllm_sleep_level: int = setting(2, "vLLM sleep level: 2 discards the weights (the policy's are pushed after every "
                                  "update anyway), 1 keeps a CPU copy of them.", safe=True, choices=(1, 2))
    vllm_execution: str = setting("compiled", "On CUDA: compiled (vLLM's default: torch.compile + CUDA graphs), "
                                         "cuda_graphs (full CUDA graphs for decoding, no compilation: starts faster), "
                                         "or eager. The CPU always runs eager.", safe=True, choices=("compiled", "cuda_graphs", "eager"))


@dataclass
class SFTConfig:
    steps: int = setting(300, "Supervised cold-start steps on the reference ads (0 = skip).", ge=0)
    batch_size: int = setting(32, "Prompts per cold-start step.", ge=1)
    lr: float = setting(2e-3, "Cold-start learning rate (AdamW, cosine decay).", gt=0)


@dataclass
class CTCVRConfig:
    model: Optional[str] = setting(None, "A trained CTCVR model folder; None trains one on simulator logs.")
    encoder: str = setting("minilm", "Embedding model of the CTCVR model (its inputs): minilm, hashed, or a path. The "
                                "relevance reward uses reward.encoder; when both are the same, one model is loaded.")
    variants: int = setting(8, "Creatives per training prompt in the simulated logs.", ge=1)
    impressions: int = setting(8, "Impressions per creative.", ge=1)
    epochs: int = setting(12, "CTCVR training epochs.", ge=1)


@dataclass
class GRPOConfig:
    steps: int = setting(40, "GRPO steps (one rollout batch each, then mini_batches x epochs optimizer steps).", safe=True, ge=0)
    mini_batches: int = setting(1, "Optimizer steps per pass over a rollout batch, each on an equal share of its groups "
                              "(groups kept whole; must divide rollout.prompts_per_step). Like verl's PPO "
                              "mini-batches. With one update per batch (mini_batches = epochs = 1) the policy is "
                              "on-policy: no old log-probs are computed and the ratio is 1.", ge=1)
    epochs: int = setting(1, "Passes over each rollout batch (like TRL's num_iterations).", ge=1)
    lr: float = setting(5e-4, "Learning rate (AdamW, constant after warm-up).", gt=0)
    warmup_steps: int = setting(2, "Linear warm-up, in GRPO steps.", ge=0)
    beta: float = setting(0.02, "KL coefficient (k3 to the cold-start reference); 0 skips the reference entirely.", ge=0)
    eps_low: float = setting(0.2, "Lower clip range.", ge=0, lt=1)
    eps_high: float = setting(0.28, "Upper clip range (clip-higher).", ge=0)
    advantage: str = setting("group_z", "Sentence-level advantage estimator (relate_fast.loss.ADVANTAGE_ESTIMATORS): "
                                        "group_z (RELATE eq. 8: the group z-score) or group_center (Dr. GRPO: "
                                        "not divided by the group's std).", choices=_advantage_estimators)
    loss_type: str = setting("grpo", "grpo, bnpo, dr_grpo, dapo or seq_sum (the paper's eq. 6).", choices=_loss_types)
    micro_batch_tokens: int = setting(4096, "Token budget of one micro-batch: prompt + response tokens, counted with their "
                                       "padding in the padded layout, real tokens only in the packed one.", ge=1)
    layout: str = setting("auto", "How a micro-batch's rows reach the model: packed (their tokens back to back, varlen "
                             "attention: no pad token computed), padded (rows x the widest row), or auto (packed on "
                             "CUDA, padded on the CPU). Packed needs model.attn_implementation auto, relate_varlen or "
                             "flash_attention_2; both layouts compute the same loss.", choices=_layouts)
    loss_backend: str = setting("auto", "The fused loss's row backend: triton, torch, or auto (triton on CUDA, torch "
                                         "elsewhere). The environment variable RELATE_FAST_BACKEND overrides it.",
                                choices=_loss_backends)
    logits_path: str = setting("auto", "How the triton backend gets a chunk's logits: epilogue (the logits GEMM with its "
                                       "row statistics in the epilogue, Hopper GPUs), fp32 (cuBLAS fp32 products and the "
                                       "row kernels), or auto (epilogue where the GPU and operands allow it). The "
                                       "environment variable RELATE_FAST_LOGITS overrides it.", choices=_logits_paths)
    sampler_correction: str = setting("auto", "The sampler is not the trainer (vLLM's numerics; in off-policy modes a "
                                              "staler policy): tis weights each token's advantage by the truncated "
                                              "importance weight min(p_trainer / p_sampler, grpo.tis_cap), from the "
                                              "engine's own log-probs; measure logs the trainer-sampler gap "
                                              "(sampler_gap) without weighting; off computes neither; auto: tis under "
                                              "rollout.mode one_step_off, off in sync.",
                                      choices=("auto", "off", "measure", "tis"))
    tis_cap: float = setting(2.0, "The cap C of the truncated importance weight (grpo.sampler_correction tis).", gt=0)
    max_grad_norm: float = setting(1.0, "Gradient clipping.", gt=0)
    weight_decay: float = setting(0.0, "AdamW weight decay.", ge=0)


@dataclass
class DeepSpeedConfig:
    enabled: bool = setting(True, "Wrap the policy in a DeepSpeed engine (ZeRO-2); False uses plain torch (DDP when distributed).")
    zero_stage: int = setting(2, "ZeRO stage (2: optimizer states and gradients sharded, weights replicated).", choices=(0, 1, 2))
    overlap_comm: bool = setting(True, "Overlap gradient reduction with backward.", safe=True)
    reduce_bucket_size: int = setting(50_000_000, "Elements per gradient-reduction bucket.", safe=True, ge=1)
    allgather_bucket_size: int = setting(50_000_000, "Elements per parameter all-gather bucket.", safe=True, ge=1)


@dataclass
class EvalConfig:
    enabled: bool = setting(True, "Evaluate the cold-start and the final policy (summary.json); off for benchmarks.")
    split: str = setting("validation", "Dataset split evaluated before and after GRPO.")
    prompts: int = setting(48, "Prompts evaluated (0 = the whole split).", ge=0)
    samples: int = setting(2, "Sampled responses per prompt (at the rollout temperature).", ge=1)


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


def load_run_config(folder) -> Optional[Config]:
    """The resolved config of the run a model folder belongs to (<run>/config.yaml beside <run>/final or
    <run>/cold_start, or in the folder itself), checked like any config; None when there is none."""
    for cand in (Path(folder) / "config.yaml", Path(folder).parent / "config.yaml"):
        if cand.is_file():
            try:
                return load_config(str(cand))
            except ValueError as e:
                raise ValueError(f"{cand}: {e}" if str(cand) not in str(e) else str(e)) from None
    return None


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


#: Fields added after runs of earlier versions existed. A run saved without one ran as its default does,
#: so at its default it changes neither the run's identity (meaning_hash) nor counts as a change when
#: the run resumes: an upgrade mid-run keeps the run resumable. Append every field added from now on.
ADDED_FIELDS = ("grpo.loss_backend", "grpo.logits_path", "grpo.advantage", "grpo.sampler_correction", "grpo.tis_cap",
                "rollout.mode", "rollout.overlap", "rollout.sampler_ranks", "model.checkpoint_layers",
                "model.auto_checkpointing", "model.memory_budget_gib", "rollout.vllm_own_process")


def _default_of(dotted: str):
    node = Config()
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def config_diff(old: dict, new: dict) -> List[tuple]:
    """[(field, old value, new value)] of the dotted fields that differ between two config dicts (an
    ADDED_FIELDS field missing from one counts as its default)."""
    a, b = _flatten(old), _flatten(new)
    for flat in (a, b):
        for k in ADDED_FIELDS:
            flat.setdefault(k, _default_of(k))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def meaning_hash(cfg_dict: dict) -> str:
    """A hash of the settings that define what a run computes (everything but SAFE_CHANGES)."""
    import hashlib
    import json

    kept = {k: v for k, v in _flatten(cfg_dict).items()
            if k not in SAFE_CHANGES and not (k in ADDED_FIELDS and v == _default_of(k))}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def validate(cfg: Config) -> Config:
    """Every field against its choices and bounds (its metadata: relate_fast.settings), then the
    constraints between fields; each error names the field."""
    check_fields(cfg)

    def need(ok: bool, field: str, msg: str):
        if not ok:
            raise ValueError(f"{field}: {msg}")

    r, g = cfg.rollout, cfg.grpo
    need(r.prompts_per_step % g.mini_batches == 0, "grpo.mini_batches",
         f"{g.mini_batches} must divide rollout.prompts_per_step ({r.prompts_per_step}): a mini-batch holds whole groups")
    from relate_fast.varlen import supports_packing

    need(g.layout != "packed" or cfg.model.attn_implementation == "auto" or supports_packing(cfg.model.attn_implementation),
         "grpo.layout", f"packed needs an attention that takes packed rows (model.attn_implementation auto, "
                        f"relate_varlen or flash_attention_2), got {cfg.model.attn_implementation!r}")
    need(r.sampler_ranks == 0 or r.mode == "one_step_off", "rollout.sampler_ranks",
         "ranks that only sample need rollout.mode one_step_off (they sample the next batch while the others learn)")
    need(r.sampler_ranks == 0 or r.engine == "hf" or cfg.model.init == "pretrained", "rollout.sampler_ranks",
         "with vLLM, sampling ranks need a policy folder with weights (model.init pretrained): their engine runs in "
         "its own process and reloads the pushed weights from files, which vLLM's dummy-weights loader cannot")
    need(not r.vllm_own_process or r.engine != "hf", "rollout.vllm_own_process",
         "is a setting of the vLLM engine; rollout.engine is hf")
    need(cfg.model.checkpoint_layers == -1 or cfg.model.gradient_checkpointing, "model.checkpoint_layers",
         f"{cfg.model.checkpoint_layers} layers checkpointed needs model.gradient_checkpointing true")
    need(not cfg.model.auto_checkpointing or cfg.model.checkpoint_layers == -1, "model.checkpoint_layers",
         f"{cfg.model.checkpoint_layers}: model.auto_checkpointing chooses the checkpointed layers itself (leave -1)")
    need(cfg.model.auto_checkpointing or not cfg.model.memory_budget_gib, "model.memory_budget_gib",
         "is the budget of model.auto_checkpointing's plan, which is off")
    need(cfg.model.init == "pretrained" or cfg.model.path is not None, "model.init",
         "random needs model.path (a folder with the architecture's config.json and tokenizer)")
    rw = cfg.reward
    need(not rw.judge_relevance or rw.judge_model is not None, "reward.judge_relevance",
         "needs reward.judge_model (the judge that scores relevance)")
    # one field per setting: the trainer's CTCVR model is ctcvr.model. reward.ctcvr_model serves
    # RewardFunction.from_config outside the trainer; given to the trainer it moves there, with a warning
    if rw.ctcvr_model is not None:
        need(cfg.ctcvr.model in (None, rw.ctcvr_model), "reward.ctcvr_model",
             f"{rw.ctcvr_model!r} differs from ctcvr.model {cfg.ctcvr.model!r}; the trainer reads ctcvr.model: "
             f"set that alone")
        warnings.warn("reward.ctcvr_model is ctcvr.model in the trainer's config; it was moved there (set "
                      "ctcvr.model instead)", DeprecationWarning, stacklevel=2)
        cfg.ctcvr.model, rw.ctcvr_model = rw.ctcvr_model, None
    return cfg


def samples_in_background(rollout) -> bool:
    """Whether the engine samples while the policy learns (a RolloutConfig: rollout.mode one_step_off
    with rollout.overlap thread)."""
    return rollout.mode == "one_step_off" and rollout.overlap == "thread"


def sampler_correction(cfg: Config) -> str:
    """grpo.sampler_correction resolved: auto is tis under rollout.mode one_step_off, off in sync."""
    mode = cfg.grpo.sampler_correction
    return mode if mode != "auto" else ("tis" if cfg.rollout.mode == "one_step_off" else "off")


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
            allowed = f"; {describe(f)}" if describe(f) else ""
            lines.append(f"  --{key} (default {default!r}{allowed})\n      {f.metadata.get('help', '')}{safe}")
    return "\n".join(lines)

"""The policy: the embedded tiny Qwen3 (built locally, no hub) or user weights, and prompt formatting.

The tiny model is a Qwen3ForCausalLM from a Qwen3Config with a byte-level BPE of a few thousand
tokens trained on the sample dataset (a 151k vocabulary would dominate CPU time). It is saved once
as a Hugging Face folder (so vLLM can load it) under ``<out_dir>/_tiny_model/<key>`` and reused.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Tuple

import torch

__all__ = ["build_tiny_model", "load_policy", "prompt_ids", "attn_implementation", "fuse_layers", "FUSED_LAYERS",
           "decoder_trunk", "checkpoint_layers", "EOS", "INITS"]

EOS = "<|endoftext|>"
_SPECIALS = [EOS, "<|im_start|>", "<|im_end|>"]


def _train_tokenizer(vocab_size: int, texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


def attn_implementation(requested: str = "auto", *, packed: bool = False) -> str:
    """flash_attention_2 where it is installed and a GPU is present; else PyTorch SDPA, as
    relate_varlen (`relate_fast.varlen`: sdpa that also takes packed rows) when the trainer packs."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and flash_attn_2_installed():
        return "flash_attention_2"
    return "relate_varlen" if packed else "sdpa"


def flash_attn_2_installed() -> bool:
    """flash-attn 2 itself, not only a `flash_attn` package: flash-attn-4 installs `flash_attn/cute` under the same
    import name, without the FA2 functions that transformers' flash_attention_2 calls."""
    if importlib.util.find_spec("flash_attn") is None:
        return False
    import importlib.metadata as md

    dists = {d.lower().replace("_", "-") for d in md.packages_distributions().get("flash_attn", [])}
    return "flash-attn" in dists


def build_tiny_model(tiny_cfg, cache_root, *, seed: int = 0) -> Path:
    """Builds (once) and returns the folder of the tiny policy: config, random weights, tokenizer."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from relate_fast.data import sample_ads

    key = hashlib.sha256(json.dumps({**asdict(tiny_cfg), "seed": seed, "v": 1}, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cache_root) / key
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    rows = sample_ads()
    texts = [r.prompt for r in rows] + [r.reference for r in rows if r.reference]
    tok = _train_tokenizer(tiny_cfg.vocab_size, texts)
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=tiny_cfg.hidden_size, intermediate_size=tiny_cfg.intermediate_size,
                      num_hidden_layers=tiny_cfg.num_hidden_layers, num_attention_heads=tiny_cfg.num_attention_heads,
                      num_key_value_heads=tiny_cfg.num_key_value_heads, head_dim=tiny_cfg.head_dim,
                      max_position_embeddings=tiny_cfg.max_position_embeddings, tie_word_embeddings=False,
                      bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
                      torch_dtype="float32")
    model = Qwen3ForCausalLM(cfg)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(folder)  # atomic: a half-written folder is never picked up
    except OSError:  # another process finished the same folder first
        if not (folder / "config.json").is_file():
            raise
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def base_model_folder(model_cfg, out_root: Path, *, seed: int, rank: int = 0) -> Path:
    """The policy's starting folder: `model.path`, or the embedded tiny model built once under
    <out_dir>/_tiny_model (rank 0 builds it; the other ranks then find it cached)."""
    if model_cfg.path is not None:
        return Path(model_cfg.path)
    from relate_fast.distributed import barrier

    cache = Path(out_root) / "_tiny_model"
    if rank == 0:
        build_tiny_model(model_cfg.tiny, cache, seed=seed)
    barrier()
    return build_tiny_model(model_cfg.tiny, cache, seed=seed)


INITS = ("pretrained", "random")
FUSED_LAYERS = ("auto", "none", "liger", "compile")


def decoder_trunk(model):
    """The decoder stack of a causal LM (`model.model` for Qwen3/Llama: embedding, layers, final norm),
    or the model itself when it is one."""
    return getattr(model, model.base_model_prefix, model)


def fuse_layers(model, how: str, *, generates: bool = False):
    """The decoder body's elementwise work fused (RMSNorm, SwiGLU, RoPE and what sits between the
    products), in place; the products, the attention and the lm_head + loss stay as they are.

    - liger: liger-kernel's Triton RMSNorm, SwiGLU and RoPE swapped into the model's modules (its
      fused cross-entropy is left off: the loss is ours);
    - compile: each decoder layer compiled by torch.compile (dynamic shapes: micro-batches change
      length), which fuses the same elementwise chains and the residual adds;
    - none: the modules as transformers wrote them;
    - auto: compile on a GPU, none on the CPU (where compiling costs more than it saves) and none when
      the policy module also generates (`generates`: the HF rollout engine, whose one-token decoding
      steps and KV cache would make the compiled layers recompile).

    Measured on an H200 (Qwen3-1.7B shape, benchmarks/bench_update.py): compile took the update from
    0.62 to 0.40 s, liger to 0.46 s. liger also patches transformers' Qwen3 classes for the whole
    process (every Qwen3 model built afterwards gets its modules), compile touches this model only."""
    if how not in FUSED_LAYERS:
        raise ValueError(f"model.fused_layers must be one of {FUSED_LAYERS}, got {how!r}")
    if how == "auto":
        how = "compile" if next(model.parameters()).device.type == "cuda" and not generates else "none"
    if how == "liger":
        try:
            from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance
        except ImportError:
            raise ImportError("model.fused_layers liger needs liger-kernel (pip install liger-kernel)") from None
        if getattr(model.config, "model_type", None) not in ("qwen3", "qwen2", "llama"):
            raise ValueError(f"model.fused_layers liger: model type {model.config.model_type!r} is not one relate_fast "
                             f"has checked (qwen3, qwen2, llama)")
        _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                        fused_linear_cross_entropy=False)
    elif how == "compile":
        for layer in decoder_trunk(model).layers:
            layer.compile(dynamic=True)
    return model


def checkpoint_layers(model, count: int = -1) -> list:
    """Non-reentrant activation checkpointing of `count` of the model's decoder layers (-1: all), spread
    evenly over the depth; the others keep their activations. Returns the checkpointed layers' indices.

    Checkpointing a layer trades its activations (kept from the forward to the backward) for one more
    forward of it in the backward: fewer layers, less recomputation and more memory. The gradients are
    the same either way (tests/test_checkpointing.py)."""
    layers = decoder_trunk(model).layers
    n = len(layers)
    if count < -1 or count > n:
        raise ValueError(f"model.checkpoint_layers must be -1 (all) or 0..{n} (the model has {n} decoder layers), got {count}")
    if count == 0:
        model.gradient_checkpointing_disable()
        return []
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return checkpoint_flags(model, count)


def checkpoint_flags(model, count: int) -> list:
    """Which `count` of the decoder layers checkpoint (-1: all, 0: none), spread evenly over the depth, by their
    flags alone: checkpoint_layers must have enabled checkpointing first. Cheap (no hooks, no recompilation of
    compiled layers: the flag is read outside their compiled forward), so the memory plan sets it per micro-batch."""
    layers = decoder_trunk(model).layers
    n = len(layers)
    if count < -1 or count > n:
        raise ValueError(f"checkpoint_flags: count must be -1 (all) or 0..{n}, got {count}")
    chosen = [] if count == 0 else list(range(n)) if count in (-1, n) else sorted({(i * n) // count for i in range(count)})
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = i in chosen
    return chosen


def checkpointed_share(model) -> float:
    """The share of the decoder layers that checkpoint their activations in training (0 to 1)."""
    layers = decoder_trunk(model).layers
    return sum(bool(getattr(layer, "gradient_checkpointing", False)) for layer in layers) / max(len(layers), 1)


def load_policy(path, *, dtype: str = "float32", attn: str = "auto", device="cpu", init: str = "pretrained",
                seed: int = 0, packed: bool = False) -> Tuple[object, object]:
    """(model, tokenizer) from a local folder or a name; a missing folder is a clear error.

    init="random" builds the architecture of the folder's config.json with freshly initialised
    weights (seeded: every call and every rank gets the same ones) directly on `device`: the shape of a
    model without its weights (benchmarks of Qwen3-8B with only its config and tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    p = str(path)
    if not os.path.isdir(os.path.expanduser(p)):
        looks_like_path = p.startswith((".", "/", "~")) or p.count("/") > 1
        if looks_like_path or os.environ.get("HF_HUB_OFFLINE") == "1":
            raise FileNotFoundError(f"model.path {p}: no such folder")
    p = os.path.expanduser(p)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise ValueError(f"model.dtype must be float32 or bfloat16, got {dtype!r}")
    if init not in INITS:
        raise ValueError(f"model.init must be one of {INITS}, got {init!r}")
    attn = attn_implementation(attn, packed=packed)
    if attn == "relate_varlen":
        from relate_fast.varlen import register

        register()
    try:
        tok = AutoTokenizer.from_pretrained(p)
        if init == "random":
            config = AutoConfig.from_pretrained(p)
            torch.manual_seed(seed)
            with torch.device(device):
                model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, attn_implementation=attn)
        else:
            model = AutoModelForCausalLM.from_pretrained(p, dtype=torch_dtype, attn_implementation=attn)
    except OSError as e:
        raise FileNotFoundError(f"model.path {p}: cannot load a model and tokenizer ({e})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.to(device), tok


def prompt_ids(tokenizer, text: str):
    """Token ids of a prompt: the chat template (no thinking) when the tokenizer has one, else the raw
    text followed by a newline (the tiny model's format)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                            add_generation_prompt=True, enable_thinking=False)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return tokenizer.encode(text + "\n", add_special_tokens=False)

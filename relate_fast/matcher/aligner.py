"""Token ids -> their exact bytes (csrc/: the TokenTable of bindings.cpp), so hits found in text map to
the tokens whose bytes overlap them: byte-level BPE and SentencePiece tokenizers alike, never
`offset_mapping`."""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence

import numpy as np

from relate_fast import _native

__all__ = ["TokenAligner"]


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

"""Random text in several scripts, and reference implementations the tests compare against."""
import importlib.util
import random
import unicodedata
from pathlib import Path

ZH = "最佳好优高级第一国家顶尖唯一首选根治有效保本收益产品品牌服务价格课程旅游健康教育金融方法的是在和了有我们你"
LATIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
FULLWIDTH = "ＡＢＣａｂｃ１２３！％"
OTHER = "αβγδЖжЩщ한국어हिन्दीé" + "e\u0301"  # Greek, Cyrillic, Hangul, Devanagari, combining mark
ASTRAL = "😀🔥👍𝐀𝐁𝔸🀄"
SEPARATORS = " *·.,-_~|/\u200b\u200d\ufeff\u3000、。！"
# what a policy writes around a list with (issue 17): traditional characters (one-to-many ones
# included), compatibility forms, Cyrillic/Greek look-alikes of Latin letters
EVASION = "國級絕對頂證無發髮乾幹干发𝐁𝐄𝐒𝐓ⓑⓔⓢⓣ①²𝟏еоаροﬁﬀ⑩㎏½"
SURROGATES = "\ud800\udfff"
SCRIPTS = {"zh": ZH, "latin": LATIN, "mixed": ZH + LATIN + FULLWIDTH + OTHER + ASTRAL + SEPARATORS + EVASION}


def random_text(rng: random.Random, n: int, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def corpus(n: int, seed: int = 0):
    rng = random.Random(seed)
    words = ["最佳", "产品", "课程", "旅游", "健康", "the best", "course", "price", "保本", "第一", "100%有效",
             "限时优惠", "free shipping", "最 佳", "ＡＢＣ", "😀", "首选"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(n)]


# The normalisation spec is the generator of csrc/unicode_tables.h; the reference reuses it.
_spec = importlib.util.spec_from_file_location(
    "gen_unicode_tables", Path(__file__).resolve().parents[1] / "csrc" / "tools" / "gen_unicode_tables.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


def is_skip(ch: str) -> bool:
    cp = ord(ch)
    return unicodedata.category(ch) in gen.SKIP_CATEGORIES or cp in gen.EXTRA_SKIP


ALL_FOLDS = ("compat", "han", "confusables")
_FOLD_TABLES = {}


def fold_tables():
    """The generator's fold tables as Python dicts, straight from their sources (unicodedata's
    NFKC, OpenCC's dictionary, the TR39 confusables), not from the C++ header."""
    if not _FOLD_TABLES:
        _FOLD_TABLES.update(compat=gen.compat_table(), expand=gen.compat_expand_table(), han=gen.han_table()[0],
                            confusables=gen.confusable_table()[0])
    return _FOLD_TABLES


def ref_fold(ch: str, folds=ALL_FOLDS) -> str:
    """What one character folds to: usually one character, several for an expanding compatibility
    character (ﬁ -> fi), each of them folded in turn."""
    t = fold_tables() if folds else {}
    if "compat" in folds and ord(ch) in t["expand"]:
        return "".join(ref_fold(c, folds) for c in t["expand"][ord(ch)])
    cp = ord(ch)
    if "compat" in folds:
        cp = t["compat"].get(cp, cp)
    cp = gen.fold(cp)
    for name in ("han", "confusables"):
        if name in folds:
            cp = t[name].get(cp, cp)
    return chr(cp)


def brute_find(text: str, patterns, exemptions=(), normalize=False, folds=ALL_FOLDS):
    """Reference: every overlapping occurrence by str.find, ordered by (end, start, pattern). With
    normalize, characters fold first (`folds` as Blacklist's) and what folds to a skipped class
    (separators, punctuation, symbols) is stepped over."""
    if normalize:
        # (original index, folded character) for every character that is not skipped
        kept = [(i, f) for i, ch in enumerate(text) for f in ref_fold(ch, folds) if not is_skip(f)]
        keep = [i for i, _ in kept]
        hay = "".join(f for _, f in kept)

        def norm(p):
            return "".join(f for c in p for f in ref_fold(c, folds) if not is_skip(f))
    else:
        keep = list(range(len(text)))
        hay = text

        def norm(p):
            return p

    def occurrences(pats):
        out = []
        for k, p in enumerate(pats):
            q = norm(p)
            j = hay.find(q)
            while j != -1:
                out.append((keep[j], keep[j + len(q) - 1] + 1, k))
                j = hay.find(q, j + 1)
        return out

    hits = occurrences(patterns)
    ex = occurrences(exemptions)
    hits = [h for h in hits if not any(xs <= h[0] and h[1] <= xe for xs, xe, _ in ex)]
    return sorted(hits, key=lambda h: (h[1], h[0], h[2]))


def reference_token_mask(ids, token_bytes, patterns, exemptions=(), normalize=True):
    """Reference for Blacklist.token_mask: decode with one replacement character per invalid byte,
    find hits in the text, flag tokens whose (non-empty) byte range overlaps a hit's."""
    tok = [token_bytes(i) for i in ids]
    data = b"".join(tok)
    raw = data.decode("utf-8", "surrogateescape")  # one escape per invalid byte
    lengths = [1 if 0xDC80 <= ord(c) <= 0xDCFF else len(c.encode("utf-8")) for c in raw]
    text = "".join("\ufffd" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in raw)
    cp_byte = [0]
    for n in lengths:
        cp_byte.append(cp_byte[-1] + n)
    tok_byte = [0]
    for b in tok:
        tok_byte.append(tok_byte[-1] + len(b))
    mask = [False] * len(ids)
    for s, e, _ in brute_find(text, patterns, exemptions, normalize):
        b0, b1 = cp_byte[s], cp_byte[e]
        for t in range(len(ids)):
            if tok_byte[t + 1] > tok_byte[t] and tok_byte[t] < b1 and b0 < tok_byte[t + 1]:
                mask[t] = True
    return mask


def brute_ngram_counts(batches, n_min, n_max, responses):
    from collections import Counter

    c = Counter()
    for batch in batches:
        for seq in batch:
            seq = list(seq)
            grams = [tuple(seq[i:i + n]) for n in range(n_min, n_max + 1) for i in range(len(seq) - n + 1)]
            c.update(set(grams) if responses else grams)
    return c


def brute_ngram_mask(seq, frequent_set, n_min, n_max):
    seq = list(seq)
    mask = [False] * len(seq)
    for n in range(n_min, n_max + 1):
        for i in range(len(seq) - n + 1):
            if tuple(seq[i:i + n]) in frequent_set:
                for t in range(i, i + n):
                    mask[t] = True
    return mask


def brute_ngram_occurrences(seq, frequent_set, n_min, n_max):
    """Eq. 4's count: every (start, length) window of the sequence whose n-gram is frequent."""
    seq = list(seq)
    return sum(tuple(seq[i:i + n]) in frequent_set
               for n in range(n_min, n_max + 1) for i in range(len(seq) - n + 1))

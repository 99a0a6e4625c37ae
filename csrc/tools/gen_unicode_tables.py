"""Generate csrc/unicode_tables.h from Python's unicodedata.

Run once when the Unicode version should move (python csrc/tools/gen_unicode_tables.py); the
output is committed so the extension builds without ICU or any data file.

Two tables:
- SIMPLE_CASEFOLD: (code point, folded code point) for every character whose str.casefold() is a
  single different character. Multi-character folds (ß -> ss) are left alone on purpose: a 1:1
  fold keeps every matched character at its original offset.
- SKIP_RANGES: inclusive ranges of characters the normalising matcher steps over when they are
  inserted between a pattern's characters to dodge it (最*佳, 最 佳, 最\u200b佳): separators (Z*),
  controls and format characters (Cc, Cf: zero-width space/joiners, BOM, soft hyphen),
  punctuation (P*), math/modifier/other symbols (Sm, Sk, So: * + = ~ ★ ✔ emoji) and variation
  selectors. Letters, digits, marks and currency signs are never skipped.

Three more 1:1 folds, each switchable at run time (Blacklist(folds=...)), applied after the case
fold in this order, so that a policy cannot write around a pattern with another form of the same
letter (issue 17):
- COMPAT_FOLD ("compat"): NFKC where it gives one letter or digit: mathematical alphanumerics
  (𝐁 -> B), enclosed and circled forms (ⓑ -> b, ① -> 1), superscripts and subscripts (² -> 2),
  full-width forms. COMPAT_EXPAND, under the same switch: NFKC results of several characters
  made of letters, digits and skipped characters (ligatures ﬁ -> fi, ⑩ -> 10, ㎏ -> kg,
  ½ -> 1⁄2): the matcher feeds each of them in turn, all at the original character's offset.
- HAN_FOLD ("han"): traditional -> simplified Chinese from OpenCC's TSCharacters.txt (the
  dictionary shipped in the PyPI package opencc-python-reimplemented 0.1.7). A traditional
  character whose candidates include itself (乾 -> 干 乾: 乾 is also a simplified character) is
  left alone, so folding never merges two words that simplified Chinese keeps apart; the others
  fold many-to-one (發, 髮 -> 发), which is what makes a pattern in either script find text in
  either.
- CONFUSABLE_FOLD ("confusables"): Cyrillic and Greek letters that Unicode's confusables data
  (TR39, as shipped in the PyPI package confusable-homoglyphs 3.3.1) gives as confusable with
  exactly one ASCII letter or digit fold to it (Cyrillic е -> e, Greek ο -> o), so a Latin pattern
  catches a mixed-script spelling.
The data packages are needed only to run this script (pip install opencc-python-reimplemented==0.1.7
confusable-homoglyphs==3.3.1); the generated header is committed.
"""
import json
import sys
import unicodedata
from pathlib import Path

SKIP_CATEGORIES = {"Zs", "Zl", "Zp", "Cc", "Cf", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po",
                   "Sm", "Sk", "So"}
EXTRA_SKIP = list(range(0xFE00, 0xFE10)) + list(range(0xE0100, 0xE01F0)) + [0x034F]


def fold(cp):
    if 0xFF01 <= cp <= 0xFF5E:  # full-width ASCII -> ASCII, applied before case folding
        cp -= 0xFEE0
    elif cp == 0x3000:
        cp = 0x20
    f = chr(cp).casefold()
    return ord(f) if len(f) == 1 else cp


def compat_table():
    out = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        n = unicodedata.normalize("NFKC", chr(cp))
        if len(n) == 1 and ord(n) != cp and unicodedata.category(n)[0] in "LN":
            out[cp] = ord(n)
    return out


def compat_expand_table():
    """cp -> its NFKC expansion (several characters: letters, digits and skipped characters, at
    least one letter or digit)."""
    out = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        n = unicodedata.normalize("NFKC", chr(cp))
        if len(n) < 2:
            continue
        cats = [unicodedata.category(c) for c in n]
        if all(c[0] in "LN" or c in SKIP_CATEGORIES for c in cats) and any(c[0] in "LN" for c in cats):
            out[cp] = n
    return out


def han_table():
    import opencc  # opencc-python-reimplemented: only its dictionary files are read

    path = Path(opencc.__file__).parent / "dictionary" / "TSCharacters.txt"
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        trad, cands = line.split("\t")
        cands = cands.split()
        if len(trad) != 1 or trad in cands or any(len(c) != 1 for c in cands):
            continue  # a character that is also simplified stays itself (乾 -> 干 乾)
        out[ord(trad)] = ord(cands[0])
    for k in list(out):  # chains (a -> b -> c) collapse, so the fold is idempotent
        v, seen = out[k], {k}
        while v in out and v not in seen:
            seen.add(v)
            v = out[v]
        out[k] = v
    return out, path


def confusable_table():
    import confusable_homoglyphs

    path = Path(confusable_homoglyphs.__file__).parent / "confusables.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for ch, entries in data.items():
        if len(ch) != 1 or not unicodedata.name(ch, "").startswith(("CYRILLIC", "GREEK")):
            continue
        latin = {e["c"] for e in entries if len(e["c"]) == 1 and e["c"].isascii() and e["c"].isalnum()}
        if len(latin) == 1:
            out[ord(ch)] = ord(latin.pop().casefold())
    return out, path


def fold_all(cp, flags, compat, han, conf):
    if "compat" in flags:
        cp = compat.get(cp, cp)
    cp = fold(cp)
    if "han" in flags:
        cp = han.get(cp, cp)
    if "confusables" in flags:
        cp = conf.get(cp, cp)
    return cp


def main(out):
    pairs = []
    skip = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp).casefold()
        if len(c) == 1 and ord(c) != cp:
            pairs.append((cp, ord(c)))
        if unicodedata.category(chr(cp)) in SKIP_CATEGORIES:
            skip.append(cp)
    skip = sorted(set(skip) | set(EXTRA_SKIP))
    compat = compat_table()
    expand = compat_expand_table()
    han, han_src = han_table()
    conf, conf_src = confusable_table()
    # every combination of the folds must be idempotent for the matcher's alphabet to be well defined
    names = ("compat", "han", "confusables")
    for k in range(8):
        flags = {n for b, n in enumerate(names) if k >> b & 1}
        for cp in range(0x110000):
            if not 0xD800 <= cp <= 0xDFFF:
                f = fold_all(cp, flags, compat, han, conf)
                assert fold_all(f, flags, compat, han, conf) == f, (hex(cp), flags)
    # an expansion's characters are final: no compatibility fold or expansion of their own
    for cp, n in expand.items():
        assert cp not in compat and all(ord(c) not in compat and ord(c) not in expand for c in n), hex(cp)
    ranges = []
    for cp in skip:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    lines = [
        "// Generated by csrc/tools/gen_unicode_tables.py from Python %s's unicodedata %s,"
        % (sys.version.split()[0], unicodedata.unidata_version),
        "// OpenCC's %s and the TR39 confusables of confusable-homoglyphs' %s."
        % (han_src.name, conf_src.name),
        "// Do not edit by hand.",
        "#pragma once",
        "#include <cstdint>",
        "namespace rf::unicode_tables {",
        "struct FoldPair { uint32_t from, to; };",
        "struct Range { uint32_t lo, hi; };",
    ]

    def table(name, items):
        lines.append(f"inline constexpr FoldPair {name}[] = {{")
        items = sorted(items)
        for i in range(0, len(items), 6):
            lines.append("  " + " ".join("{0x%X, 0x%X}," % p for p in items[i:i + 6]))
        lines.append("};")

    table("kSimpleCaseFold", pairs)
    table("kCompatFold", compat.items())
    table("kHanFold", han.items())
    table("kConfusableFold", conf.items())
    lines.append("struct Expansion { uint32_t from, offset, length; };  // into kCompatExpandChars")
    lines.append("inline constexpr Expansion kCompatExpand[] = {")
    flat, entries = [], []
    for cp in sorted(expand):
        entries.append((cp, len(flat), len(expand[cp])))
        flat.extend(ord(c) for c in expand[cp])
    for i in range(0, len(entries), 6):
        lines.append("  " + " ".join("{0x%X, %d, %d}," % e for e in entries[i:i + 6]))
    lines.append("};")
    lines.append("inline constexpr uint32_t kCompatExpandChars[] = {")
    for i in range(0, len(flat), 12):
        lines.append("  " + " ".join("0x%X," % c for c in flat[i:i + 12]))
    lines.append("};")
    lines.append("inline constexpr Range kSkipRanges[] = {")
    for i in range(0, len(ranges), 6):
        lines.append("  " + " ".join("{0x%X, 0x%X}," % tuple(r) for r in ranges[i:i + 6]))
    lines += ["};", "}  // namespace rf::unicode_tables", ""]
    Path(out).write_text("\n".join(lines))
    print(f"{len(pairs)} case folds, {len(compat)} compatibility folds, {len(expand)} expansions, "
          f"{len(han)} traditional -> simplified, "
          f"{len(conf)} confusables, {len(ranges)} skip ranges -> {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1] / "unicode_tables.h"))

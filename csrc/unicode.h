// Character normalisation for the matcher and a replacing UTF-8 decoder.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include "unicode_tables.h"

namespace rf::unicode {

inline constexpr uint32_t kReplacement = 0xFFFD;

// Folds beyond width and case, each switchable (Blacklist's `folds`; the generator documents them).
enum FoldFlags : uint32_t {
  kFoldCompat = 1u << 0,      // NFKC to one letter or digit: 𝐁 -> B, ⓑ -> b, ² -> 2
  kFoldHan = 1u << 1,         // traditional -> simplified Chinese: 國 -> 国
  kFoldConfusables = 1u << 2, // Cyrillic/Greek look-alikes -> Latin: е -> e
  kFoldAll = kFoldCompat | kFoldHan | kFoldConfusables,
};

template <size_t N>
inline uint32_t lookup(const unicode_tables::FoldPair (&table)[N], uint32_t cp) {
  const auto* b = std::begin(table);
  const auto* e = std::end(table);
  const auto* it = std::lower_bound(b, e, cp, [](const unicode_tables::FoldPair& p, uint32_t v) { return p.from < v; });
  return (it != e && it->from == cp) ? it->to : cp;
}

// [compatibility fold], full-width ASCII -> ASCII, ideographic space -> space, simple (1:1) case
// folding, [traditional -> simplified], [look-alike -> Latin]. Idempotent for every `flags`.
inline uint32_t fold(uint32_t cp, uint32_t flags = 0) {
  if (flags & kFoldCompat) cp = lookup(unicode_tables::kCompatFold, cp);
  if (cp >= 0xFF01 && cp <= 0xFF5E) cp -= 0xFEE0;
  else if (cp == 0x3000) cp = 0x20;
  cp = lookup(unicode_tables::kSimpleCaseFold, cp);
  if (flags & kFoldHan) cp = lookup(unicode_tables::kHanFold, cp);
  if (flags & kFoldConfusables) cp = lookup(unicode_tables::kConfusableFold, cp);
  return cp;
}

// The NFKC expansion of a compatibility character made of several (ﬁ -> fi, ⑩ -> 10, ㎏ -> kg), or
// an empty range; only under kFoldCompat. Its characters take the rest of the fold themselves.
struct ExpansionView { const uint32_t* begin; const uint32_t* end; };
inline ExpansionView expansion(uint32_t cp) {
  const auto* b = std::begin(unicode_tables::kCompatExpand);
  const auto* e = std::end(unicode_tables::kCompatExpand);
  const auto* it = std::lower_bound(b, e, cp, [](const unicode_tables::Expansion& x, uint32_t v) { return x.from < v; });
  if (it == e || it->from != cp) return {nullptr, nullptr};
  const uint32_t* c = unicode_tables::kCompatExpandChars + it->offset;
  return {c, c + it->length};
}

// Separators, controls/format (zero-width), punctuation and symbols: stepped over by the
// normalising matcher (csrc/tools/gen_unicode_tables.py documents the exact classes).
inline bool is_skip(uint32_t cp) {
  const auto* b = std::begin(unicode_tables::kSkipRanges);
  const auto* e = std::end(unicode_tables::kSkipRanges);
  const auto* it = std::upper_bound(b, e, cp, [](uint32_t v, const unicode_tables::Range& r) { return v < r.lo; });
  return it != b && (it - 1)->hi >= cp;
}

// Decodes UTF-8, one U+FFFD per invalid byte (so every code point maps to a byte range).
// Appends code points to `cps` and each code point's first byte offset (+base) to `cp_byte`.
inline void decode_utf8(std::string_view s, int64_t base, std::vector<uint32_t>& cps,
                        std::vector<int64_t>& cp_byte) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char b0 = p[i];
    uint32_t cp = kReplacement;
    size_t len = 1;
    if (b0 < 0x80) {
      cp = b0;
    } else if (b0 >= 0xC2 && b0 <= 0xDF) {
      if (i + 1 < n && (p[i + 1] & 0xC0) == 0x80) { cp = ((b0 & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu); len = 2; }
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      if (i + 2 < n && (p[i + 1] & 0xC0) == 0x80 && (p[i + 2] & 0xC0) == 0x80) {
        const uint32_t c = ((b0 & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
        if (c >= 0x800 && !(c >= 0xD800 && c <= 0xDFFF)) { cp = c; len = 3; }
      }
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      if (i + 3 < n && (p[i + 1] & 0xC0) == 0x80 && (p[i + 2] & 0xC0) == 0x80 && (p[i + 3] & 0xC0) == 0x80) {
        const uint32_t c = ((b0 & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) | (p[i + 3] & 0x3Fu);
        if (c >= 0x10000 && c <= 0x10FFFF) { cp = c; len = 4; }
      }
    }
    cps.push_back(cp);
    cp_byte.push_back(base + static_cast<int64_t>(i));
    i += len;
  }
}

}  // namespace rf::unicode

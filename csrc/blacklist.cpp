#include "blacklist.h"

#include <algorithm>
#include <stdexcept>

#include "unicode.h"

namespace rf {

// ---------------------------------------------------------------- CharAlphabet

void CharAlphabet::build(std::vector<uint32_t> chars, bool normalize, uint32_t folds) {
  chars_ = std::move(chars);
  normalize_ = normalize;
  folds_ = normalize ? folds : 0;
  std::unordered_map<uint32_t, uint32_t> code_of;
  code_of.reserve(chars_.size() * 2);
  for (size_t k = 0; k < chars_.size(); ++k) code_of[chars_[k]] = static_cast<uint32_t>(k + 1);
  bmp_.assign(0x10000, 0);
  for (uint32_t cp = 0; cp < 0x10000; ++cp) {
    uint32_t f = cp;
    if (normalize) {
      f = unicode::fold(cp, folds_);
      // skipped by what it folds to: a circled letter (a symbol) folds to a letter and counts
      if (unicode::is_skip(f)) { bmp_[cp] = kSkip; continue; }
    }
    auto it = code_of.find(f);
    if (it != code_of.end()) bmp_[cp] = it->second;
  }
  astral_.clear();
  for (const auto& [cp, code] : code_of) if (cp >= 0x10000) astral_[cp] = code;
  if (normalize) {  // astral characters that fold onto the alphabet (𝐁 -> b, 𠁞 -> ...)
    auto add = [&](const auto& table) {
      for (const auto& p : table) {
        if (p.from < 0x10000) continue;
        auto it = code_of.find(unicode::fold(p.from, folds_));
        if (it != code_of.end()) astral_[p.from] = it->second;
      }
    };
    add(unicode_tables::kSimpleCaseFold);
    if (folds_ & unicode::kFoldCompat) add(unicode_tables::kCompatFold);
    if (folds_ & unicode::kFoldHan) add(unicode_tables::kHanFold);
  }
  expansions_.clear();
  if (normalize && (folds_ & unicode::kFoldCompat)) {  // ﬁ feeds f then i: each folded, skipped or coded
    for (const auto& x : unicode_tables::kCompatExpand) {
      std::vector<uint32_t> codes;
      for (uint32_t k = 0; k < x.length; ++k) {
        const uint32_t f = unicode::fold(unicode_tables::kCompatExpandChars[x.offset + k], folds_);
        if (unicode::is_skip(f)) continue;
        auto it = code_of.find(f);
        codes.push_back(it != code_of.end() ? it->second : 0);
      }
      uint32_t code = kSkip;
      if (!codes.empty()) {
        code = kExpand | static_cast<uint32_t>(expansions_.size());
        expansions_.push_back(std::move(codes));
      }
      if (x.from < 0x10000) bmp_[x.from] = code;
      else astral_[x.from] = code;
    }
  }
}

uint32_t CharAlphabet::astral(uint32_t cp) const {
  if (!astral_.empty()) {
    auto it = astral_.find(cp);
    if (it != astral_.end()) return it->second;
  }
  return (normalize_ && unicode::is_skip(cp)) ? kSkip : 0;
}

// ---------------------------------------------------------------- TokenTable

TokenTable::TokenTable(std::string blob, std::vector<int64_t> offsets, std::vector<uint8_t> valid)
    : blob_(std::move(blob)), offsets_(std::move(offsets)), valid_(std::move(valid)) {
  if (offsets_.size() != valid_.size() + 1) throw std::invalid_argument("token table: offsets must have vocab_size + 1 entries");
  if (offsets_.front() != 0 || offsets_.back() != static_cast<int64_t>(blob_.size()))
    throw std::invalid_argument("token table: offsets do not span the byte blob");
  for (size_t i = 0; i + 1 < offsets_.size(); ++i)
    if (offsets_[i + 1] < offsets_[i]) throw std::invalid_argument("token table: offsets must not decrease");
  const size_t V = valid_.size();
  complete_.assign(V, 0);
  cp_offsets_.assign(V + 1, 0);
  std::vector<uint32_t> cps;
  std::vector<int64_t> at;
  for (size_t id = 0; id < V; ++id) {
    cp_offsets_[id] = static_cast<int64_t>(cp_blob_.size());
    const std::string_view b = bytes(static_cast<int64_t>(id));
    if (!valid_[id] || b.empty() || b.size() > 255 || (static_cast<unsigned char>(b[0]) & 0xC0) == 0x80) continue;
    cps.clear();
    at.clear();
    unicode::decode_utf8(b, 0, cps, at);
    // complete iff decoding produced no replacement that the bytes did not spell out (EF BF BD)
    bool ok = true;
    for (size_t k = 0; k < cps.size() && ok; ++k) {
      const int64_t len = (k + 1 < cps.size() ? at[k + 1] : static_cast<int64_t>(b.size())) - at[k];
      ok = !(cps[k] == unicode::kReplacement && len != 3);
    }
    if (!ok) continue;
    complete_[id] = 1;
    cp_blob_.insert(cp_blob_.end(), cps.begin(), cps.end());
    for (int64_t a : at) cp_off_blob_.push_back(static_cast<uint8_t>(a));
  }
  cp_offsets_[V] = static_cast<int64_t>(cp_blob_.size());
}

void TokenTable::check_ids(const int64_t* ids, int64_t n, int64_t seq_index) const {
  for (int64_t j = 0; j < n; ++j)
    if (!valid(ids[j]))
      throw std::invalid_argument("token id " + std::to_string(ids[j]) + " at position " + std::to_string(j) +
                                  " of sequence " + std::to_string(seq_index) +
                                  " is not in the aligner's vocabulary (size " + std::to_string(vocab_size()) + ")");
}

void TokenTable::decode(const int64_t* ids, int64_t n, std::vector<uint32_t>& cps, std::vector<int64_t>& cp_byte,
                        std::vector<int64_t>& tok_byte) const {
  // Tokens that are complete UTF-8 contribute their precomputed code points. Others (a character
  // cut between tokens) collect in `pending` and are decoded together; UTF-8 re-synchronises at a
  // complete token (it starts with a non-continuation byte), so this equals decoding the
  // concatenation of all the tokens' bytes.
  thread_local std::string pending;
  pending.clear();
  int64_t pending_base = 0;
  tok_byte.resize(static_cast<size_t>(n) + 1);
  cps.clear();
  cp_byte.clear();
  int64_t pos = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t id = ids[t];
    tok_byte[t] = pos;
    const int64_t len = offsets_[id + 1] - offsets_[id];
    if (complete_[id]) {
      if (!pending.empty()) {
        unicode::decode_utf8(pending, pending_base, cps, cp_byte);
        pending.clear();
      }
      const int64_t c0 = cp_offsets_[id], c1 = cp_offsets_[id + 1];
      cps.insert(cps.end(), cp_blob_.begin() + c0, cp_blob_.begin() + c1);
      for (int64_t k = c0; k < c1; ++k) cp_byte.push_back(pos + cp_off_blob_[k]);
    } else if (len > 0) {
      if (pending.empty()) pending_base = pos;
      pending.append(blob_.data() + offsets_[id], static_cast<size_t>(len));
    }
    pos += len;
  }
  if (!pending.empty()) unicode::decode_utf8(pending, pending_base, cps, cp_byte);
  tok_byte[n] = pos;
  cp_byte.push_back(pos);
}

void TokenTable::mark_byte_range(const std::vector<int64_t>& tok_byte, int64_t b0, int64_t b1, std::vector<int32_t>& diff) {
  const int64_t n = static_cast<int64_t>(tok_byte.size()) - 1;
  if (b1 <= b0 || n <= 0) return;
  // first token ending after b0, last token starting before b1
  const int64_t t0 = std::upper_bound(tok_byte.begin() + 1, tok_byte.end(), b0) - (tok_byte.begin() + 1);
  const int64_t t1 = (std::lower_bound(tok_byte.begin(), tok_byte.begin() + n, b1) - tok_byte.begin()) - 1;
  if (t0 > t1) return;
  diff[t0] += 1;
  diff[t1 + 1] -= 1;
}

// ---------------------------------------------------------------- Blacklist

Blacklist::Blacklist(const std::vector<std::vector<uint32_t>>& patterns,
                     const std::vector<std::vector<uint32_t>>& exemptions, bool normalize, uint32_t folds)
    : num_patterns_(static_cast<int64_t>(patterns.size())),
      num_exemptions_(static_cast<int64_t>(exemptions.size())),
      normalize_(normalize),
      folds_(normalize ? (folds & unicode::kFoldAll) : 0) {
  std::vector<std::vector<uint32_t>> normalized;
  normalized.reserve(patterns.size() + exemptions.size());
  original_offsets_.push_back(0);
  for (int64_t i = 0; i < num_patterns_ + num_exemptions_; ++i) {
    const auto& p = i < num_patterns_ ? patterns[i] : exemptions[i - num_patterns_];
    originals_.insert(originals_.end(), p.begin(), p.end());
    original_offsets_.push_back(static_cast<int64_t>(originals_.size()));
    std::vector<uint32_t> q;
    q.reserve(p.size());
    for (uint32_t cp : p) {
      if (!normalize) {
        q.push_back(cp);
        continue;
      }
      const unicode::ExpansionView x = (folds_ & unicode::kFoldCompat) ? unicode::expansion(cp)
                                                                       : unicode::ExpansionView{nullptr, nullptr};
      if (x.begin != nullptr) {  // ﬁnance is the pattern finance
        for (const uint32_t* e = x.begin; e != x.end; ++e) {
          const uint32_t f = unicode::fold(*e, folds_);
          if (!unicode::is_skip(f)) q.push_back(f);
        }
        continue;
      }
      const uint32_t f = unicode::fold(cp, folds_);
      if (!unicode::is_skip(f)) q.push_back(f);
    }
    if (q.empty()) {
      const bool ex = i >= num_patterns_;
      const int64_t idx = ex ? i - num_patterns_ : i;
      throw std::invalid_argument(std::string(ex ? "exemption " : "pattern ") + std::to_string(idx) +
                                  (p.empty() ? " is empty"
                                             : " has no characters left after normalisation (only separators, "
                                               "punctuation or symbols)"));
    }
    normalized.push_back(std::move(q));
  }
  finish_build(normalized);
}

void Blacklist::finish_build(const std::vector<std::vector<uint32_t>>& normalized) {
  // Dense codes by descending frequency: frequent characters get small codes, which keeps the
  // double array compact (children of busy states cluster at low offsets).
  std::unordered_map<uint32_t, int64_t> freq;
  for (const auto& p : normalized) for (uint32_t cp : p) ++freq[cp];
  std::vector<std::pair<int64_t, uint32_t>> by_freq;
  by_freq.reserve(freq.size());
  for (const auto& [cp, f] : freq) by_freq.emplace_back(-f, cp);
  std::sort(by_freq.begin(), by_freq.end());
  std::vector<uint32_t> chars;
  chars.reserve(by_freq.size());
  std::unordered_map<uint32_t, uint32_t> code_of;
  for (const auto& [f, cp] : by_freq) {
    chars.push_back(cp);
    code_of[cp] = static_cast<uint32_t>(chars.size());
  }
  std::vector<std::vector<uint32_t>> codes(normalized.size());
  for (size_t i = 0; i < normalized.size(); ++i) {
    codes[i].reserve(normalized[i].size());
    for (uint32_t cp : normalized[i]) codes[i].push_back(code_of[cp]);
  }
  const auto A = static_cast<uint32_t>(chars.size());
  alphabet_.build(std::move(chars), normalize_, folds_);
  ac_.build(codes, A);
}

template <typename CharT, bool Normalize>
void Blacklist::scan(const CharT* text, int64_t n, std::vector<Hit>& out) const {
  const size_t first = out.size();
  bool any_exemption = false;
  // Normalize: original offsets of the last consumed (non-skipped) characters, so a hit's start
  // is reported in the original text even when separators were stepped over inside it.
  int64_t small_ring[64];
  std::vector<int64_t> big_ring;
  int64_t* ring = small_ring;
  size_t rmask = 0;
  if constexpr (Normalize) {
    size_t r = 1;
    while (r < static_cast<size_t>(std::max<int32_t>(ac_.max_length(), 1))) r <<= 1;
    if (r > 64) {
      big_ring.resize(r);
      ring = big_ring.data();
    }
    rmask = r - 1;
  }
  int64_t k = 0;
  int32_t s = DoubleArrayAC::kRoot;
  int64_t i = 0;
  // one code into the automaton for text[i]; hits end after text[i]
  auto feed = [&](uint32_t c) {
    if constexpr (Normalize) {
      ring[static_cast<size_t>(k) & rmask] = i;
      ++k;
    }
    if (c == 0) {
      s = DoubleArrayAC::kRoot;
      return;
    }
    s = ac_.next(s, c);
    for (int32_t o = ac_.out(s); o >= 0;) {
      const DaOutput& d = ac_.output(o);
      int64_t start;
      if constexpr (Normalize) start = ring[static_cast<size_t>(k - d.length) & rmask];
      else start = i + 1 - d.length;
      out.push_back(Hit{start, i + 1, d.pattern});
      any_exemption |= d.pattern >= num_patterns_;
      o = d.next;
    }
  };
  for (; i < n; ++i) {
    const uint32_t c = alphabet_.code(static_cast<uint32_t>(text[i]));
    if constexpr (Normalize) {
      if (c >= CharAlphabet::kExpand) {  // one rare branch for both: a skipped or an expanding character
        if (c != CharAlphabet::kSkip) {
          const size_t before = out.size();
          for (uint32_t e : alphabet_.expansion(c)) feed(e);
          // every hit of the expansion ends after text[i]: (start, pattern) order, as within one feed
          if (out.size() - before > 1)
            std::sort(out.begin() + static_cast<std::ptrdiff_t>(before), out.end(), [](const Hit& a, const Hit& b) {
              return a.start != b.start ? a.start < b.start : a.pattern < b.pattern;
            });
        }
        continue;
      }
    }
    feed(c);
  }
  if (any_exemption) drop_exempted(out, first);
}

void Blacklist::drop_exempted(std::vector<Hit>& hits, size_t first) const {
  std::vector<std::pair<int64_t, int64_t>> ex;
  for (size_t i = first; i < hits.size(); ++i)
    if (hits[i].pattern >= num_patterns_) ex.emplace_back(hits[i].start, hits[i].end);
  size_t w = first;
  for (size_t i = first; i < hits.size(); ++i) {
    const Hit h = hits[i];
    if (h.pattern >= num_patterns_) continue;
    bool covered = false;
    for (const auto& [xs, xe] : ex) covered |= (xs <= h.start && h.end <= xe);
    if (!covered) hits[w++] = h;
  }
  hits.resize(w);
}

template <typename CharT>
void Blacklist::find(const CharT* text, int64_t n, std::vector<Hit>& out) const {
  if (normalize_) scan<CharT, true>(text, n, out);
  else scan<CharT, false>(text, n, out);
}
template void Blacklist::find<uint8_t>(const uint8_t*, int64_t, std::vector<Hit>&) const;
template void Blacklist::find<uint16_t>(const uint16_t*, int64_t, std::vector<Hit>&) const;
template void Blacklist::find<uint32_t>(const uint32_t*, int64_t, std::vector<Hit>&) const;

void Blacklist::token_mask(const TokenTable& table, const int64_t* ids, int64_t n, uint8_t* mask) const {
  struct Scratch {  // one thread_local lookup per call instead of one per buffer
    std::vector<uint32_t> cps;
    std::vector<int64_t> cp_byte, tok_byte;
    std::vector<Hit> hits;
    std::vector<int32_t> diff;
  };
  thread_local Scratch scratch;
  auto& [cps, cp_byte, tok_byte, hits, diff] = scratch;
  table.decode(ids, n, cps, cp_byte, tok_byte);
  hits.clear();
  find<uint32_t>(cps.data(), static_cast<int64_t>(cps.size()), hits);
  diff.assign(static_cast<size_t>(n) + 1, 0);
  for (const Hit& h : hits) TokenTable::mark_byte_range(tok_byte, cp_byte[h.start], cp_byte[h.end], diff);
  int32_t run = 0;
  for (int64_t t = 0; t < n; ++t) {
    run += diff[t];
    mask[t] = (run > 0 && tok_byte[t + 1] > tok_byte[t]) ? 1 : 0;
  }
}

size_t Blacklist::memory_bytes() const {
  return ac_.memory_bytes() + 0x10000 * sizeof(uint32_t) + alphabet_.chars().capacity() * sizeof(uint32_t) +
         originals_.capacity() * sizeof(uint32_t) + original_offsets_.capacity() * sizeof(int64_t);
}

// ---------------------------------------------------------------- serialisation

namespace {
constexpr char kMagic[8] = {'R', 'F', 'B', 'L', 'I', 'S', 'T', '\0'};
constexpr uint32_t kVersion = 1;
}  // namespace

std::string Blacklist::serialize() const {
  std::string out(kMagic, 8);
  bin::put<uint32_t>(out, kVersion);
  bin::put<uint8_t>(out, normalize_ ? static_cast<uint8_t>(1 | (folds_ << 1)) : 0);  // files before the folds: 1
  bin::put<int64_t>(out, num_patterns_);
  bin::put<int64_t>(out, num_exemptions_);
  bin::put_vec(out, originals_);
  bin::put_vec(out, original_offsets_);
  bin::put_vec(out, alphabet_.chars());
  ac_.serialize(out);
  bin::put<uint64_t>(out, bin::fnv1a(out.data(), out.size()));
  return out;
}

Blacklist Blacklist::deserialize(const std::string& data) {
  if (data.size() < 8 + sizeof(uint64_t) || std::string_view(data.data(), 8) != std::string_view(kMagic, 8))
    throw std::invalid_argument("not a relate_fast blacklist file (bad magic)");
  const size_t body = data.size() - sizeof(uint64_t);
  uint64_t stored;
  std::memcpy(&stored, data.data() + body, sizeof(stored));
  if (stored != bin::fnv1a(data.data(), body)) throw std::invalid_argument("corrupt blacklist file (checksum mismatch)");
  const std::string in = data.substr(0, body);
  size_t pos = 8;
  const uint32_t version = bin::get<uint32_t>(in, pos, "header");
  if (version != kVersion) throw std::invalid_argument("unsupported blacklist file version " + std::to_string(version));
  Blacklist b;
  const uint8_t mode = bin::get<uint8_t>(in, pos, "header");
  b.normalize_ = (mode & 1) != 0;
  b.folds_ = b.normalize_ ? ((mode >> 1) & unicode::kFoldAll) : 0;
  b.num_patterns_ = bin::get<int64_t>(in, pos, "header");
  b.num_exemptions_ = bin::get<int64_t>(in, pos, "header");
  bin::get_vec(in, pos, b.originals_, "patterns");
  bin::get_vec(in, pos, b.original_offsets_, "pattern offsets");
  std::vector<uint32_t> chars;
  bin::get_vec(in, pos, chars, "alphabet");
  b.ac_.deserialize(in, pos);
  if (pos != in.size()) throw std::invalid_argument("corrupt blacklist file (trailing bytes)");
  const int64_t total = b.num_patterns_ + b.num_exemptions_;
  if (b.num_patterns_ < 0 || b.num_exemptions_ < 0 || b.ac_.num_patterns() != total ||
      static_cast<int64_t>(b.original_offsets_.size()) != total + 1 || b.ac_.alphabet_size() != chars.size() ||
      b.original_offsets_.front() != 0 || b.original_offsets_.back() != static_cast<int64_t>(b.originals_.size()))
    throw std::invalid_argument("corrupt blacklist file (inconsistent sizes)");
  for (int64_t i = 0; i < total; ++i)
    if (b.original_offsets_[i + 1] < b.original_offsets_[i]) throw std::invalid_argument("corrupt blacklist file (offsets)");
  b.alphabet_.build(std::move(chars), b.normalize_, b.folds_);
  return b;
}

}  // namespace rf

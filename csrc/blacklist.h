// Blacklist matcher over Unicode code points, and the token -> bytes table that maps its hits to
// token indices. Pure C++ (no Python types): bindings.cpp adapts Python objects to these.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "automaton.h"

namespace rf {

struct Hit {
  int64_t start;  // code point offsets into the original text, [start, end)
  int64_t end;
  int32_t pattern;
};

// Maps a code point to its automaton code. Normalisation is baked into the table: a folded
// variant (Ａ, a, A) maps to the same code and an ignorable character to kSkip, so the scan loop
// pays one table load per character whatever the normalisation.
class CharAlphabet {
 public:
  static constexpr uint32_t kSkip = 0xFFFFFFFFu;
  // codes >= kExpand (except kSkip) name an expansion: the character feeds several codes
  static constexpr uint32_t kExpand = 0x80000000u;
  // chars[k] is the (normalised) code point given code k + 1
  void build(std::vector<uint32_t> chars, bool normalize, uint32_t folds);
  inline uint32_t code(uint32_t cp) const { return cp < 0x10000 ? bmp_[cp] : astral(cp); }
  const std::vector<uint32_t>& chars() const { return chars_; }
  const std::vector<uint32_t>& expansion(uint32_t code) const { return expansions_[code - kExpand]; }
  uint32_t size() const { return static_cast<uint32_t>(chars_.size()); }

 private:
  uint32_t astral(uint32_t cp) const;
  std::vector<uint32_t> chars_;
  std::vector<uint32_t> bmp_;
  std::unordered_map<uint32_t, uint32_t> astral_;
  std::vector<std::vector<uint32_t>> expansions_;  // codes fed for one expanding character
  bool normalize_ = true;
  uint32_t folds_ = 0;
};

// Token id -> exact bytes, built once from a tokenizer (relate_fast/matcher/aligner.py does the reading).
class TokenTable {
 public:
  TokenTable(std::string blob, std::vector<int64_t> offsets, std::vector<uint8_t> valid);
  int64_t vocab_size() const { return static_cast<int64_t>(valid_.size()); }
  bool valid(int64_t id) const { return id >= 0 && id < vocab_size() && valid_[id]; }
  std::string_view bytes(int64_t id) const {
    return std::string_view(blob_.data() + offsets_[id], offsets_[id + 1] - offsets_[id]);
  }
  // Concatenates the tokens' bytes and decodes them: code points, each code point's first byte,
  // and each token's first byte (tok_byte has n + 1 entries, the last is the total length).
  void decode(const int64_t* ids, int64_t n, std::vector<uint32_t>& cps, std::vector<int64_t>& cp_byte,
              std::vector<int64_t>& tok_byte) const;
  // Throws std::invalid_argument naming sequence/position for the first id not in the table.
  void check_ids(const int64_t* ids, int64_t n, int64_t seq_index) const;
  // Marks tokens whose byte range overlaps [b0, b1) (empty tokens never overlap).
  static void mark_byte_range(const std::vector<int64_t>& tok_byte, int64_t b0, int64_t b1, std::vector<int32_t>& diff);

 private:
  std::string blob_;
  std::vector<int64_t> offsets_;
  std::vector<uint8_t> valid_;
  // Per token that is complete UTF-8 on its own (most tokens): its code points and each one's
  // byte offset within the token, so decode() copies them instead of decoding bytes.
  std::vector<uint32_t> cp_blob_;
  std::vector<uint8_t> cp_off_blob_;
  std::vector<int64_t> cp_offsets_;  // [vocab + 1]
  std::vector<uint8_t> complete_;
};

class Blacklist {
 public:
  // patterns and exemptions as code point sequences (original, un-normalised).
  Blacklist(const std::vector<std::vector<uint32_t>>& patterns,
            const std::vector<std::vector<uint32_t>>& exemptions, bool normalize, uint32_t folds);
  Blacklist() = default;

  // Appends every overlapping hit to `out`, ordered by (end, start, pattern).
  template <typename CharT>
  void find(const CharT* text, int64_t n, std::vector<Hit>& out) const;

  // Flags token t of the sequence iff its byte range overlaps a hit's byte range.
  void token_mask(const TokenTable& table, const int64_t* ids, int64_t n, uint8_t* mask) const;

  int64_t num_patterns() const { return num_patterns_; }
  int64_t num_exemptions() const { return num_exemptions_; }
  bool normalize() const { return normalize_; }
  uint32_t folds() const { return folds_; }  // unicode::FoldFlags, with normalize
  // Original pattern (i < num_patterns) or exemption (i >= num_patterns) as code points.
  std::vector<uint32_t> original(int64_t i) const {
    return std::vector<uint32_t>(originals_.begin() + original_offsets_[i],
                                 originals_.begin() + original_offsets_[i + 1]);
  }
  size_t memory_bytes() const;
  int64_t num_states() const { return ac_.num_states(); }

  std::string serialize() const;
  static Blacklist deserialize(const std::string& data);

 private:
  template <typename CharT, bool Normalize>
  void scan(const CharT* text, int64_t n, std::vector<Hit>& out) const;
  void drop_exempted(std::vector<Hit>& hits, size_t first) const;
  void finish_build(const std::vector<std::vector<uint32_t>>& normalized);

  int64_t num_patterns_ = 0;
  int64_t num_exemptions_ = 0;
  bool normalize_ = true;
  uint32_t folds_ = 0;
  std::vector<uint32_t> originals_;  // all patterns then all exemptions, concatenated
  std::vector<int64_t> original_offsets_;
  CharAlphabet alphabet_;
  DoubleArrayAC ac_;
};

extern template void Blacklist::find<uint8_t>(const uint8_t*, int64_t, std::vector<Hit>&) const;
extern template void Blacklist::find<uint16_t>(const uint16_t*, int64_t, std::vector<Hit>&) const;
extern template void Blacklist::find<uint32_t>(const uint32_t*, int64_t, std::vector<Hit>&) const;

}  // namespace rf

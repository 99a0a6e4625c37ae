// Aho-Corasick automaton stored as a double array over a dense alphabet.
//
// Symbols are renumbered densely to codes 1..alphabet_size before they reach this class (code 0
// means "not in the alphabet" and is handled by the caller as a reset to the root), so the same
// automaton serves Unicode characters (Blacklist) and token ids (NgramCounter's G_high).
// See csrc/DESIGN.md for why a double array with a dense root.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace rf {

// One double-array slot; a state is the index of its slot. 16 bytes, so everything one step reads
// about the current state sits in one cache line.
struct DaUnit {
  static constexpr uint32_t kHasOutput = 0x80000000u;
  uint32_t base = 0;         // children live at (base & ~kHasOutput) + code; top bit: has output
  int32_t check = -1;        // parent state of the state living in this slot; -1 = free slot
  int32_t fail = 0;          // failure link (longest proper suffix that is a trie prefix)
  uint32_t child_mask = 0;   // bit (code & 31) set for each child: most failing transitions are
                             // decided here, without touching the (usually uncached) target slot
};

// Output chains are linked lists through a shared pool; next < own index, so chains are acyclic.
// The first output of a state is the longest pattern ending there.
struct DaOutput {
  int32_t pattern;  // pattern index given to build()
  int32_t length;   // pattern length in codes
  int32_t next;     // next (shorter) output, -1 = end
};

class DoubleArrayAC {
 public:
  static constexpr int32_t kRoot = 0;

  // patterns[i]: non-empty sequence of codes in [1, alphabet_size]. Equal patterns all report.
  void build(const std::vector<std::vector<uint32_t>>& patterns, uint32_t alphabet_size);

  // Transition on code c in [1, alphabet_size]. The root's transitions are a dense table, so the
  // hot "nothing matched yet" state costs one load; other states use the double array.
  inline int32_t next(int32_t s, uint32_t c) const {
    const uint32_t bit = 1u << (c & 31);
    for (;;) {
      if (s == kRoot) return root_next_[c];
      const DaUnit& u = units_[s];
      if (u.child_mask & bit) {
        const uint32_t t = (u.base & ~DaUnit::kHasOutput) + c;
        if (units_[t].check == s) return static_cast<int32_t>(t);
      }
      s = u.fail;
    }
  }
  // Head of the output chain of state s (longest pattern first), -1 = none.
  inline int32_t out(int32_t s) const { return (units_[s].base & DaUnit::kHasOutput) ? out_[s] : -1; }
  inline const DaOutput& output(int32_t o) const { return outputs_[o]; }

  uint32_t alphabet_size() const { return alphabet_size_; }
  int32_t max_length() const { return max_length_; }
  int64_t num_patterns() const { return num_patterns_; }
  int64_t num_states() const { return num_states_; }
  size_t memory_bytes() const {
    return units_.capacity() * sizeof(DaUnit) + out_.capacity() * sizeof(int32_t) +
           root_next_.capacity() * sizeof(int32_t) +
           outputs_.capacity() * sizeof(DaOutput);
  }

  void serialize(std::string& out) const;
  // Reads what serialize() wrote starting at pos (advanced); throws std::invalid_argument on a
  // truncated or inconsistent buffer so a corrupt file is an error, never a crash.
  void deserialize(const std::string& in, size_t& pos);

 private:
  std::vector<DaUnit> units_;
  std::vector<int32_t> out_;        // per slot, read only when the unit's kHasOutput bit is set
  std::vector<int32_t> root_next_;  // [alphabet_size + 1], 0 = back to root
  std::vector<DaOutput> outputs_;
  uint32_t alphabet_size_ = 0;
  int32_t max_length_ = 0;
  int64_t num_patterns_ = 0;
  int64_t num_states_ = 1;
};

// Little binary writer/reader shared by the serialisers.
namespace bin {
template <typename T>
inline void put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
template <typename T>
inline void put_vec(std::string& out, const std::vector<T>& v) {
  put<uint64_t>(out, v.size());
  if (!v.empty()) out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}
void need(const std::string& in, size_t pos, size_t n, const char* what);
template <typename T>
inline T get(const std::string& in, size_t& pos, const char* what) {
  need(in, pos, sizeof(T), what);
  T v;
  std::memcpy(&v, in.data() + pos, sizeof(T));
  pos += sizeof(T);
  return v;
}
template <typename T>
inline void get_vec(const std::string& in, size_t& pos, std::vector<T>& v, const char* what) {
  const uint64_t n = get<uint64_t>(in, pos, what);
  if (n > (in.size() - pos) / sizeof(T)) need(in, pos, in.size() + 1, what);
  v.resize(n);
  if (n) std::memcpy(v.data(), in.data() + pos, n * sizeof(T));
  pos += n * sizeof(T);
}
uint64_t fnv1a(const char* data, size_t n);
}  // namespace bin

}  // namespace rf

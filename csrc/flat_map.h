// Open-addressing hash map from uint64 keys to int32 values: linear probing, Fibonacci hashing,
// backward-shift deletion (no tombstones, so a long-running rolling window does not degrade).
#pragma once

#include <cstdint>
#include <vector>

namespace rf {

class FlatMap {
 public:
  static constexpr uint64_t kEmpty = ~0ull;
  explicit FlatMap(int bits = 10) { reset(bits); }

  inline int32_t find(uint64_t key) const {
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (keys_[i] == key) return vals_[i];
      if (keys_[i] == kEmpty) return -1;
    }
  }
  // Returns the value for key, inserting make() if absent.
  template <typename Make>
  inline int32_t find_or_insert(uint64_t key, Make&& make) {
    if ((size_ + 1) * 2 > keys_.size()) grow();
    size_t i = slot(key);
    for (;; i = (i + 1) & mask_) {
      if (keys_[i] == key) return vals_[i];
      if (keys_[i] == kEmpty) break;
    }
    const int32_t v = make();
    keys_[i] = key;
    vals_[i] = v;
    ++size_;
    return v;
  }
  void insert(uint64_t key, int32_t v) { find_or_insert(key, [v] { return v; }); }
  void erase(uint64_t key) {
    size_t i = slot(key);
    for (;; i = (i + 1) & mask_) {
      if (keys_[i] == kEmpty) return;
      if (keys_[i] == key) break;
    }
    // backward shift: pull later entries of the probe run into the hole
    size_t hole = i;
    for (size_t j = (i + 1) & mask_; keys_[j] != kEmpty; j = (j + 1) & mask_) {
      const size_t home = slot(keys_[j]);
      if (((j - home) & mask_) >= ((j - hole) & mask_)) {
        keys_[hole] = keys_[j];
        vals_[hole] = vals_[j];
        hole = j;
      }
    }
    keys_[hole] = kEmpty;
    --size_;
  }
  size_t size() const { return size_; }
  size_t memory_bytes() const { return keys_.capacity() * 8 + vals_.capacity() * 4; }
  template <typename F>
  void for_each(F&& f) const {
    for (size_t i = 0; i < keys_.size(); ++i) if (keys_[i] != kEmpty) f(keys_[i], vals_[i]);
  }
  void clear() { reset(10); }

 private:
  inline size_t slot(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  void reset(int bits) {
    keys_.assign(size_t(1) << bits, kEmpty);
    vals_.assign(size_t(1) << bits, 0);
    mask_ = (size_t(1) << bits) - 1;
    shift_ = 64 - bits;
    size_ = 0;
  }
  void grow() {
    std::vector<uint64_t> k = std::move(keys_);
    std::vector<int32_t> v = std::move(vals_);
    reset(64 - shift_ + 1);
    for (size_t i = 0; i < k.size(); ++i) if (k[i] != kEmpty) insert(k[i], v[i]);
  }
  std::vector<uint64_t> keys_;
  std::vector<int32_t> vals_;
  size_t mask_ = 0;
  int shift_ = 54;
  size_t size_ = 0;
};

}  // namespace rf

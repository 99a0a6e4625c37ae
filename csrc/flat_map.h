// Open-addressing hash map from uint64 keys to small values stored inline with the key (one cache
// miss per probe): linear probing, Fibonacci hashing, backward-shift deletion (no tombstones, so a
// long-running rolling window does not degrade).
#pragma once

#include <cstdint>
#include <vector>

namespace rf {

template <typename V>
class FlatMap {
 public:
  static constexpr uint64_t kEmpty = ~0ull;
  struct Entry {
    uint64_t key;
    V val;
  };
  explicit FlatMap(int bits = 10) { reset(bits); }

  inline const V* find(uint64_t key) const {
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (table_[i].key == key) return &table_[i].val;
      if (table_[i].key == kEmpty) return nullptr;
    }
  }
  inline V* find(uint64_t key) { return const_cast<V*>(static_cast<const FlatMap*>(this)->find(key)); }
  // The value for key, inserting make() if absent. The reference is valid until the next insert.
  template <typename Make>
  inline V& find_or_insert(uint64_t key, Make&& make) {
    if ((size_ + 1) * 2 > table_.size()) grow();
    size_t i = slot(key);
    for (;; i = (i + 1) & mask_) {
      if (table_[i].key == key) return table_[i].val;
      if (table_[i].key == kEmpty) break;
    }
    table_[i].key = key;
    table_[i].val = make();
    ++size_;
    return table_[i].val;
  }
  // Starts loading the slot where key would live (no effect on the map's state).
  inline void prefetch(uint64_t key) const { __builtin_prefetch(&table_[slot(key)]); }
  void insert(uint64_t key, const V& v) { find_or_insert(key, [&] { return v; }) = v; }
  void erase(uint64_t key) {
    size_t i = slot(key);
    for (;; i = (i + 1) & mask_) {
      if (table_[i].key == kEmpty) return;
      if (table_[i].key == key) break;
    }
    // backward shift: pull later entries of the probe run into the hole
    size_t hole = i;
    for (size_t j = (i + 1) & mask_; table_[j].key != kEmpty; j = (j + 1) & mask_) {
      const size_t home = slot(table_[j].key);
      if (((j - home) & mask_) >= ((j - hole) & mask_)) {
        table_[hole] = table_[j];
        hole = j;
      }
    }
    table_[hole].key = kEmpty;
    --size_;
  }
  size_t size() const { return size_; }
  size_t memory_bytes() const { return table_.capacity() * sizeof(Entry); }
  template <typename F>
  void for_each(F&& f) {
    for (auto& e : table_) if (e.key != kEmpty) f(e.key, e.val);
  }
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& e : table_) if (e.key != kEmpty) f(e.key, e.val);
  }

 private:
  inline size_t slot(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  void reset(int bits) {
    table_.assign(size_t(1) << bits, Entry{kEmpty, V{}});
    mask_ = (size_t(1) << bits) - 1;
    shift_ = 64 - bits;
    size_ = 0;
  }
  void grow() {
    std::vector<Entry> old = std::move(table_);
    reset(64 - shift_ + 1);
    for (const auto& e : old) if (e.key != kEmpty) insert(e.key, e.val);
  }
  std::vector<Entry> table_;
  size_t mask_ = 0;
  int shift_ = 54;
  size_t size_ = 0;
};

}  // namespace rf

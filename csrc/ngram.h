// Exact counts of token-id n-grams over a rolling window of batches, and masks of the tokens
// covered by frequent n-grams (the set G_high of RELATE's diversity reward).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "automaton.h"
#include "flat_map.h"

namespace rf {

// A batch of id sequences as views (bindings.cpp keeps the owners alive).
struct IdBatch {
  std::vector<const int64_t*> data;
  std::vector<int64_t> size;
  int64_t total() const {
    int64_t t = 0;
    for (int64_t s : size) t += s;
    return t;
  }
};

class NgramCounter {
 public:
  // window <= 0: every batch ever passed counts; otherwise only the last `window` batches.
  NgramCounter(int n_min, int n_max, bool count_responses, int64_t window);

  void update(const IdBatch& batch);
  int64_t count(const int64_t* ngram, int n) const;
  // All n-grams (n_min <= n <= n_max) with count >= min_count, sorted by (length, ids).
  std::vector<std::vector<uint32_t>> frequent(int64_t min_count) const;
  // mask[i][t] = 1 iff token t of sequence i lies inside an occurrence of a frequent n-gram.
  void mask(const IdBatch& batch, int64_t min_count, const std::vector<uint8_t*>& out, int num_threads) const;
  // out[i] = number of occurrences of frequent n-grams in sequence i: every (start, length) whose
  // n-gram is in G_high counts once (eq. 4 of RELATE sums Δd over them).
  void occurrences(const IdBatch& batch, int64_t min_count, int64_t* out, int num_threads) const;

  int n_min() const { return n_min_; }
  int n_max() const { return n_max_; }
  bool count_responses() const { return count_responses_; }
  int64_t window() const { return window_; }
  int64_t num_batches() const { return static_cast<int64_t>(batches_.size()); }
  int64_t batches_seen() const { return batches_seen_; }
  int64_t num_nodes() const { return static_cast<int64_t>(parent_.size() - free_.size()); }
  size_t memory_bytes() const;

  std::string serialize() const;
  static std::unique_ptr<NgramCounter> deserialize(const std::string& data);

  static void validate_ids(const IdBatch& batch);  // ids must fit uint32 (minus the sentinel)

 private:
  struct StoredBatch {
    std::vector<uint32_t> ids;
    std::vector<int64_t> offsets;  // size + 1
  };
  struct GHigh {  // automaton over G_high, cached until the counts or min_count change
    uint64_t version = ~0ull;
    int64_t min_count = -1;
    FlatMap<int32_t> code_of;
    DoubleArrayAC ac;
    bool empty = true;
  };
  static inline uint64_t key(int32_t parent, uint32_t token) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(parent)) << 32) | token;
  }
  int32_t new_node(int32_t parent, uint32_t token, int depth);
  void next_epoch();
  void add_sequences(const StoredBatch& b, int sign);
  void evict_oldest();
  std::shared_ptr<const GHigh> ghigh(int64_t min_count) const;

  int n_min_, n_max_;
  bool count_responses_;
  int64_t window_;
  int64_t batches_seen_ = 0;
  uint64_t version_ = 0;
  // An edge (parent node, token) -> child node, with the child's count stored in the same entry:
  // the hot update loop then touches one cache line per n-gram.
  struct Edge {
    int32_t node;
    uint32_t stamp;  // last response that counted the node (count="responses")
    int64_t count;
  };
  FlatMap<Edge> edges_{16};
  // per node (0 = root), written once at creation: to rebuild n-grams and remove dead nodes
  std::vector<int32_t> parent_;
  std::vector<uint32_t> token_;
  std::vector<uint8_t> depth_;
  uint32_t epoch_ = 0;
  std::vector<int32_t> free_;
  std::deque<StoredBatch> batches_;
  mutable std::mutex ghigh_mu_;
  mutable std::shared_ptr<const GHigh> ghigh_;
};

}  // namespace rf

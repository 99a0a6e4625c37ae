#include "ngram.h"

#include <algorithm>
#include <stdexcept>

#include "thread_pool.h"

namespace rf {

NgramCounter::NgramCounter(int n_min, int n_max, bool count_responses, int64_t window)
    : n_min_(n_min), n_max_(n_max), count_responses_(count_responses), window_(window) {
  if (n_min < 1 || n_max < n_min || n_max > 255)
    throw std::invalid_argument("need 1 <= n_min <= n_max <= 255, got n_min=" + std::to_string(n_min) +
                                ", n_max=" + std::to_string(n_max));
  parent_.push_back(-1);
  token_.push_back(0);
  depth_.push_back(0);
}

void NgramCounter::next_epoch() {
  if (++epoch_ == 0) {  // wrapped after 2**32 responses: forget old stamps
    edges_.for_each([](uint64_t, Edge& e) { e.stamp = 0; });
    epoch_ = 1;
  }
}

void NgramCounter::validate_ids(const IdBatch& batch) {
  for (size_t i = 0; i < batch.data.size(); ++i)
    for (int64_t j = 0; j < batch.size[i]; ++j) {
      const int64_t v = batch.data[i][j];
      if (v < 0 || v >= 0xFFFFFFFFll)
        throw std::invalid_argument("token id " + std::to_string(v) + " at position " + std::to_string(j) +
                                    " of sequence " + std::to_string(i) + " is out of range [0, 2**32 - 1)");
    }
}

int32_t NgramCounter::new_node(int32_t parent, uint32_t token, int depth) {
  int32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
    parent_[id] = parent;
    token_[id] = token;
    depth_[id] = static_cast<uint8_t>(depth);
  } else {
    if (parent_.size() >= static_cast<size_t>(INT32_MAX)) throw std::length_error("n-gram trie too large");
    id = static_cast<int32_t>(parent_.size());
    parent_.push_back(parent);
    token_.push_back(token);
    depth_.push_back(static_cast<uint8_t>(depth));
  }
  return id;
}

// Walks every n-gram (all depths 1..n_max, depth < n_min kept for pruning) of every sequence and
// adds `sign` to its count; with count="responses" a node counts once per sequence.
void NgramCounter::add_sequences(const StoredBatch& b, int sign) {
  std::vector<int32_t> zeroed;
  const size_t nseq = b.offsets.size() - 1;
  // Walks from K neighbouring start positions advance in lockstep, one depth at a time: each round
  // first prefetches the K hash slots, then resolves them, so K cache misses overlap instead of
  // forming one dependent chain per walk.
  constexpr int64_t K = 8;
  int32_t node[K];
  uint64_t keys[K];
  for (size_t q = 0; q < nseq; ++q) {
    const uint32_t* ids = b.ids.data() + b.offsets[q];
    const int64_t L = b.offsets[q + 1] - b.offsets[q];
    next_epoch();
    for (int64_t i0 = 0; i0 < L; i0 += K) {
      const int64_t kn = std::min<int64_t>(K, L - i0);
      for (int64_t k = 0; k < kn; ++k) node[k] = 0;
      const int64_t dmax = std::min<int64_t>(n_max_, L - i0);
      for (int64_t d = 1; d <= dmax; ++d) {
        // walk k starts at i0 + k and is still going while i0 + k + d <= L
        const int64_t live = std::min<int64_t>(kn, L - i0 - d + 1);
        for (int64_t k = 0; k < live; ++k) {
          keys[k] = key(node[k], ids[i0 + k + d - 1]);
          edges_.prefetch(keys[k]);
        }
        for (int64_t k = 0; k < live; ++k) {
          Edge* e;
          if (sign > 0) {
            const int32_t parent = node[k];
            const uint32_t tok = ids[i0 + k + d - 1];
            e = &edges_.find_or_insert(keys[k], [&] { return Edge{new_node(parent, tok, static_cast<int>(d)), 0, 0}; });
          } else {
            e = edges_.find(keys[k]);
            if (e == nullptr) throw std::logic_error("n-gram window out of sync");
          }
          if (!count_responses_ || e->stamp != epoch_) {
            e->stamp = epoch_;
            e->count += sign;
            if (sign < 0 && e->count == 0) zeroed.push_back(e->node);
          }
          node[k] = e->node;
        }
      }
    }
  }
  // Remove dead nodes only after the whole batch: during the walk they must stay reachable.
  for (int32_t id : zeroed) {
    const Edge* e = edges_.find(key(parent_[id], token_[id]));
    if (e == nullptr || e->count != 0) continue;
    edges_.erase(key(parent_[id], token_[id]));
    parent_[id] = -2;  // marks a free slot
    free_.push_back(id);
  }
}

void NgramCounter::update(const IdBatch& batch) {
  validate_ids(batch);
  StoredBatch b;
  b.ids.reserve(static_cast<size_t>(batch.total()));
  b.offsets.push_back(0);
  for (size_t i = 0; i < batch.data.size(); ++i) {
    for (int64_t j = 0; j < batch.size[i]; ++j) b.ids.push_back(static_cast<uint32_t>(batch.data[i][j]));
    b.offsets.push_back(static_cast<int64_t>(b.ids.size()));
  }
  add_sequences(b, +1);
  ++batches_seen_;
  ++version_;
  if (window_ > 0) {
    batches_.push_back(std::move(b));
    while (static_cast<int64_t>(batches_.size()) > window_) evict_oldest();
  }
}

void NgramCounter::evict_oldest() {
  StoredBatch b = std::move(batches_.front());
  batches_.pop_front();
  add_sequences(b, -1);
}

int64_t NgramCounter::count(const int64_t* ngram, int n) const {
  int32_t node = 0;
  for (int k = 0; k < n; ++k) {
    if (ngram[k] < 0 || ngram[k] >= 0xFFFFFFFFll) return 0;
    const Edge* e = edges_.find(key(node, static_cast<uint32_t>(ngram[k])));
    if (e == nullptr) return 0;
    node = e->node;
    if (k == n - 1) return e->count;
  }
  return 0;
}

std::vector<std::vector<uint32_t>> NgramCounter::frequent(int64_t min_count) const {
  std::vector<std::vector<uint32_t>> result;
  edges_.for_each([&](uint64_t, const Edge& e) {
    const int32_t id = e.node;
    if (depth_[id] < n_min_ || e.count < min_count || e.count <= 0) return;
    std::vector<uint32_t> g(depth_[id]);
    int32_t x = id;
    for (int k = depth_[id] - 1; k >= 0; --k, x = parent_[x]) g[k] = token_[x];
    result.push_back(std::move(g));
  });
  std::sort(result.begin(), result.end(), [](const auto& a, const auto& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  });
  return result;
}

std::shared_ptr<const NgramCounter::GHigh> NgramCounter::ghigh(int64_t min_count) const {
  std::lock_guard<std::mutex> lk(ghigh_mu_);
  if (ghigh_ && ghigh_->version == version_ && ghigh_->min_count == min_count) return ghigh_;
  auto g = std::make_shared<GHigh>();
  g->version = version_;
  g->min_count = min_count;
  auto grams = frequent(min_count);
  g->empty = grams.empty();
  // token ids -> dense codes 1..A, then the n-grams rewritten as code sequences
  uint32_t next_code = 0;
  for (auto& gram : grams)
    for (auto& tok : gram)
      tok = static_cast<uint32_t>(g->code_of.find_or_insert(tok, [&] { return static_cast<int32_t>(++next_code); }));
  g->ac.build(grams, next_code);
  ghigh_ = g;
  return g;
}

void NgramCounter::mask(const IdBatch& batch, int64_t min_count, const std::vector<uint8_t*>& out, int num_threads) const {
  const std::shared_ptr<const GHigh> held = ghigh(min_count);  // survives a concurrent rebuild
  const GHigh& g = *held;
  const int64_t nseq = static_cast<int64_t>(batch.data.size());
  if (g.empty) {
    for (int64_t i = 0; i < nseq; ++i) std::fill(out[i], out[i] + batch.size[i], 0);
    return;
  }
  parallel_for(nseq, num_threads, [&](int64_t i) {
    const int64_t* ids = batch.data[i];
    const int64_t n = batch.size[i];
    uint8_t* m = out[i];
    // Forward: the longest G_high n-gram ending at j is the state's first output; store its start.
    thread_local std::vector<int64_t> start;
    start.assign(static_cast<size_t>(n), INT64_MAX);
    int32_t s = DoubleArrayAC::kRoot;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t v = ids[j];
      const int32_t* c = (v >= 0 && v < 0xFFFFFFFFll) ? g.code_of.find(static_cast<uint64_t>(v)) : nullptr;
      if (c == nullptr) { s = DoubleArrayAC::kRoot; continue; }
      s = g.ac.next(s, static_cast<uint32_t>(*c));
      const int32_t o = g.ac.out(s);
      if (o >= 0) start[j] = j + 1 - g.ac.output(o).length;
    }
    // Backward: token t is covered iff some occurrence ending at or after t starts at or before t.
    int64_t reach = INT64_MAX;
    for (int64_t t = n - 1; t >= 0; --t) {
      reach = std::min(reach, start[t]);
      m[t] = reach <= t ? 1 : 0;
    }
  });
}

void NgramCounter::occurrences(const IdBatch& batch, int64_t min_count, int64_t* out, int num_threads) const {
  const std::shared_ptr<const GHigh> held = ghigh(min_count);
  const GHigh& g = *held;
  const int64_t nseq = static_cast<int64_t>(batch.data.size());
  if (g.empty) {
    std::fill(out, out + nseq, 0);
    return;
  }
  parallel_for(nseq, num_threads, [&](int64_t i) {
    const int64_t* ids = batch.data[i];
    int64_t found = 0;
    int32_t s = DoubleArrayAC::kRoot;
    for (int64_t j = 0; j < batch.size[i]; ++j) {
      const int64_t v = ids[j];
      const int32_t* c = (v >= 0 && v < 0xFFFFFFFFll) ? g.code_of.find(static_cast<uint64_t>(v)) : nullptr;
      if (c == nullptr) { s = DoubleArrayAC::kRoot; continue; }
      s = g.ac.next(s, static_cast<uint32_t>(*c));
      // every G_high n-gram ending at j: the state's output chain (longest first, each a suffix)
      for (int32_t o = g.ac.out(s); o >= 0; o = g.ac.output(o).next) ++found;
    }
    out[i] = found;
  });
}

size_t NgramCounter::memory_bytes() const {
  size_t b = edges_.memory_bytes() + parent_.capacity() * (4 + 4 + 1) + free_.capacity() * 4;
  for (const auto& sb : batches_) b += sb.ids.capacity() * 4 + sb.offsets.capacity() * 8;
  return b;
}

// ---------------------------------------------------------------- serialisation

namespace {
constexpr char kMagic[8] = {'R', 'F', 'N', 'G', 'R', 'A', 'M', '\0'};
constexpr uint32_t kVersion = 1;
}  // namespace

std::string NgramCounter::serialize() const {
  std::string out(kMagic, 8);
  bin::put<uint32_t>(out, kVersion);
  bin::put<int32_t>(out, n_min_);
  bin::put<int32_t>(out, n_max_);
  bin::put<uint8_t>(out, count_responses_ ? 1 : 0);
  bin::put<int64_t>(out, window_);
  bin::put<int64_t>(out, batches_seen_);
  std::vector<int64_t> counts(parent_.size(), 0);
  edges_.for_each([&](uint64_t, const Edge& e) { counts[e.node] = e.count; });
  bin::put_vec(out, parent_);
  bin::put_vec(out, token_);
  bin::put_vec(out, counts);
  bin::put_vec(out, depth_);
  bin::put<uint64_t>(out, batches_.size());
  for (const auto& b : batches_) {
    bin::put_vec(out, b.ids);
    bin::put_vec(out, b.offsets);
  }
  bin::put<uint64_t>(out, bin::fnv1a(out.data(), out.size()));
  return out;
}

std::unique_ptr<NgramCounter> NgramCounter::deserialize(const std::string& data) {
  if (data.size() < 16 || std::string_view(data.data(), 8) != std::string_view(kMagic, 8))
    throw std::invalid_argument("not a relate_fast n-gram counter state (bad magic)");
  const size_t body = data.size() - 8;
  uint64_t stored;
  std::memcpy(&stored, data.data() + body, 8);
  if (stored != bin::fnv1a(data.data(), body)) throw std::invalid_argument("corrupt n-gram counter state (checksum mismatch)");
  const std::string in = data.substr(0, body);
  size_t pos = 8;
  if (bin::get<uint32_t>(in, pos, "header") != kVersion) throw std::invalid_argument("unsupported n-gram counter state version");
  const int32_t n_min = bin::get<int32_t>(in, pos, "header");
  const int32_t n_max = bin::get<int32_t>(in, pos, "header");
  const bool responses = bin::get<uint8_t>(in, pos, "header") != 0;
  const int64_t window = bin::get<int64_t>(in, pos, "header");
  auto c = std::make_unique<NgramCounter>(n_min, n_max, responses, window);
  c->batches_seen_ = bin::get<int64_t>(in, pos, "header");
  std::vector<int64_t> counts;
  bin::get_vec(in, pos, c->parent_, "nodes");
  bin::get_vec(in, pos, c->token_, "nodes");
  bin::get_vec(in, pos, counts, "nodes");
  bin::get_vec(in, pos, c->depth_, "nodes");
  const size_t nn = c->parent_.size();
  if (nn < 1 || c->token_.size() != nn || counts.size() != nn || c->depth_.size() != nn || c->parent_[0] != -1)
    throw std::invalid_argument("corrupt n-gram counter state (node arrays)");
  for (size_t id = 1; id < nn; ++id) {
    const int32_t p = c->parent_[id];
    if (p == -2) { c->free_.push_back(static_cast<int32_t>(id)); continue; }
    if (p < 0 || static_cast<size_t>(p) >= nn || c->depth_[id] != c->depth_[p] + 1 || c->depth_[id] > n_max)
      throw std::invalid_argument("corrupt n-gram counter state (node links)");
    c->edges_.insert(key(p, c->token_[id]), Edge{static_cast<int32_t>(id), 0, counts[id]});
  }
  const uint64_t nb = bin::get<uint64_t>(in, pos, "window");
  for (uint64_t k = 0; k < nb; ++k) {
    StoredBatch b;
    bin::get_vec(in, pos, b.ids, "window batch");
    bin::get_vec(in, pos, b.offsets, "window batch");
    if (b.offsets.empty() || b.offsets.front() != 0 || b.offsets.back() != static_cast<int64_t>(b.ids.size()))
      throw std::invalid_argument("corrupt n-gram counter state (window batch)");
    for (size_t q = 0; q + 1 < b.offsets.size(); ++q)
      if (b.offsets[q + 1] < b.offsets[q]) throw std::invalid_argument("corrupt n-gram counter state (window batch)");
    c->batches_.push_back(std::move(b));
  }
  if (pos != in.size()) throw std::invalid_argument("corrupt n-gram counter state (trailing bytes)");
  return c;
}

}  // namespace rf

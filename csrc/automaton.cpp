#include "automaton.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace rf {

namespace bin {
void need(const std::string& in, size_t pos, size_t n, const char* what) {
  if (pos > in.size() || n > in.size() - pos)
    throw std::invalid_argument(std::string("truncated or corrupt data while reading ") + what);
}
uint64_t fnv1a(const char* data, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 1099511628211ull;
  }
  return h;
}
}  // namespace bin

namespace {

// Temporary trie built from lexicographically sorted patterns: a node's children are created in
// increasing code order, so insertion only ever compares with the last child (no child search).
struct TrieNode {
  int32_t first_child = -1;
  int32_t last_child = -1;
  int32_t next_sibling = -1;
  uint32_t code = 0;
  int32_t depth = 0;
  int32_t term_first = -1;  // first index into `terminals` whose pattern ends here
  int32_t term_last = -1;
};

// Free slots of the growing double array as a doubly linked list in index order.
class FreeList {
 public:
  int32_t head() const { return head_; }
  int32_t next(int32_t i) const { return next_[i]; }
  bool is_free(int32_t i) const { return i >= size() || free_[i] != 0; }
  int32_t size() const { return static_cast<int32_t>(free_.size()); }

  void grow(int32_t new_size) {
    const int32_t old = size();
    if (new_size <= old) return;
    free_.resize(new_size, 1);
    next_.resize(new_size);
    prev_.resize(new_size);
    tries_.resize(new_size, 0);
    for (int32_t i = old; i < new_size; ++i) {
      prev_[i] = (i == old) ? tail_ : i - 1;
      next_[i] = (i + 1 < new_size) ? i + 1 : -1;
    }
    if (tail_ >= 0) next_[tail_] = old; else head_ = old;
    tail_ = new_size - 1;
  }
  void take(int32_t i) {
    const bool listed = free_[i] == 1;
    free_[i] = 0;
    if (!listed) return;
    if (prev_[i] >= 0) next_[prev_[i]] = next_[i]; else head_ = next_[i];
    if (next_[i] >= 0) prev_[next_[i]] = prev_[i]; else tail_ = prev_[i];
  }
  // A slot that keeps failing as a candidate is dropped from the list (it stays unused), which
  // keeps placement near-linear for large pattern sets.
  bool give_up(int32_t i) { return ++tries_[i] > 32; }
  void drop(int32_t i) {  // leave free but no longer offered as a candidate
    free_[i] = 2;
    if (prev_[i] >= 0) next_[prev_[i]] = next_[i]; else head_ = next_[i];
    if (next_[i] >= 0) prev_[next_[i]] = prev_[i]; else tail_ = prev_[i];
  }

 private:
  std::vector<uint8_t> free_;
  std::vector<int32_t> next_, prev_;
  std::vector<uint8_t> tries_;
  int32_t head_ = -1, tail_ = -1;
};

}  // namespace

void DoubleArrayAC::build(const std::vector<std::vector<uint32_t>>& patterns,
                          uint32_t alphabet_size) {
  alphabet_size_ = alphabet_size;
  num_patterns_ = static_cast<int64_t>(patterns.size());
  max_length_ = 0;
  if (patterns.size() > static_cast<size_t>(INT32_MAX))
    throw std::invalid_argument("too many patterns");
  for (size_t i = 0; i < patterns.size(); ++i) {
    if (patterns[i].empty()) throw std::invalid_argument("pattern " + std::to_string(i) + " is empty");
    for (uint32_t c : patterns[i])
      if (c == 0 || c > alphabet_size) throw std::invalid_argument("pattern code out of range");
    max_length_ = std::max<int32_t>(max_length_, static_cast<int32_t>(patterns[i].size()));
  }

  // 1. Trie over sorted patterns (stable: equal patterns keep index order).
  std::vector<int32_t> order(patterns.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return patterns[a] < patterns[b]; });
  std::vector<TrieNode> trie(1);
  std::vector<std::pair<int32_t, int32_t>> terminals;  // (pattern, next terminal of same node)
  for (int32_t p : order) {
    int32_t node = 0;
    for (uint32_t c : patterns[p]) {
      const int32_t lc = trie[node].last_child;
      if (lc >= 0 && trie[lc].code == c) {
        node = lc;
        continue;
      }
      const int32_t child = static_cast<int32_t>(trie.size());
      TrieNode n;
      n.code = c;
      n.depth = trie[node].depth + 1;
      trie.push_back(n);
      if (lc >= 0) trie[lc].next_sibling = child; else trie[node].first_child = child;
      trie[node].last_child = child;
      node = child;
    }
    const int32_t t = static_cast<int32_t>(terminals.size());
    terminals.emplace_back(p, -1);
    if (trie[node].term_last >= 0) terminals[trie[node].term_last].second = t;
    else trie[node].term_first = t;
    trie[node].term_last = t;
  }
  num_states_ = static_cast<int64_t>(trie.size());

  // 2. Place states into the double array in BFS order (BFS order is also what step 3 needs).
  std::vector<int32_t> bfs;
  bfs.reserve(trie.size());
  bfs.push_back(0);
  std::vector<int32_t> slot_of(trie.size(), -1);
  slot_of[0] = kRoot;
  FreeList fl;
  fl.grow(std::max<int32_t>(1024, static_cast<int32_t>(alphabet_size) + 2));
  fl.take(kRoot);
  std::vector<int32_t> bases(1, 0);  // per slot, grown alongside
  std::vector<int32_t> checks(1, -1);
  std::vector<uint32_t> codes;
  for (size_t qi = 0; qi < bfs.size(); ++qi) {
    const int32_t u = bfs[qi];
    const int32_t s = slot_of[u];
    codes.clear();
    for (int32_t ch = trie[u].first_child; ch >= 0; ch = trie[ch].next_sibling) {
      codes.push_back(trie[ch].code);
      bfs.push_back(ch);
    }
    if (codes.empty()) continue;
    const int32_t c0 = static_cast<int32_t>(codes.front());
    int32_t base = -1;
    for (int32_t f = fl.head(); f >= 0;) {
      const int32_t nf = fl.next(f);
      const int32_t b = f - c0;
      if (b >= 0) {
        bool ok = true;
        for (size_t k = 1; k < codes.size() && ok; ++k) ok = fl.is_free(b + static_cast<int32_t>(codes[k]));
        if (ok) { base = b; break; }
      }
      if (fl.give_up(f)) fl.drop(f);
      f = nf;
    }
    if (base < 0) base = std::max<int32_t>(0, fl.size() - c0);
    const int32_t need = base + static_cast<int32_t>(codes.back()) + 1;
    if (need > fl.size()) fl.grow(std::max(need, fl.size() + fl.size() / 2));
    if (static_cast<int32_t>(bases.size()) < fl.size()) {
      bases.resize(fl.size(), 0);
      checks.resize(fl.size(), -1);
    }
    bases[s] = base;
    int32_t ch = trie[u].first_child;
    for (uint32_t c : codes) {
      const int32_t t = base + static_cast<int32_t>(c);
      fl.take(t);
      checks[t] = s;
      slot_of[ch] = t;
      ch = trie[ch].next_sibling;
    }
  }

  // Size so that base + any code stays in range for every state: next() needs no bounds check.
  int32_t max_base = 0;
  for (int32_t b : bases) max_base = std::max(max_base, b);
  const size_t n_units = std::max<size_t>(bases.size(), static_cast<size_t>(max_base) + alphabet_size + 1);
  units_.assign(n_units, DaUnit{});
  out_.assign(n_units, -1);
  for (size_t i = 0; i < bases.size(); ++i) {
    units_[i].base = static_cast<uint32_t>(bases[i]);
    units_[i].check = checks[i];
    if (checks[i] >= 0) units_[checks[i]].child_mask |= 1u << ((static_cast<uint32_t>(i) - static_cast<uint32_t>(bases[checks[i]])) & 31);
  }
  units_[kRoot].check = -1;
  root_next_.assign(static_cast<size_t>(alphabet_size) + 1, kRoot);
  for (int32_t ch = trie[0].first_child; ch >= 0; ch = trie[ch].next_sibling)
    root_next_[trie[ch].code] = slot_of[ch];

  // 3. Failure links and output chains in BFS order (a state's fail target is shallower, so its
  //    chain already exists when the state is reached).
  outputs_.clear();
  outputs_.reserve(terminals.size());
  for (int32_t u : bfs) {
    const int32_t t = slot_of[u];
    if (u != 0) {
      const int32_t parent = units_[t].check;
      int32_t f = kRoot;
      if (parent != kRoot) {
        const uint32_t c = trie[u].code;
        int32_t g = units_[parent].fail;
        f = next(g, c);
      }
      units_[t].fail = f;
    }
    int32_t chain = (u == 0) ? -1 : out(units_[t].fail);
    // own outputs pushed last-first so that every `next` points to an earlier entry
    std::vector<int32_t> own;
    for (int32_t k = trie[u].term_first; k >= 0; k = terminals[k].second) own.push_back(terminals[k].first);
    for (auto it = own.rbegin(); it != own.rend(); ++it) {
      outputs_.push_back(DaOutput{*it, trie[u].depth, chain});
      chain = static_cast<int32_t>(outputs_.size()) - 1;
    }
    out_[t] = chain;
    if (chain >= 0) units_[t].base |= DaUnit::kHasOutput;
  }
}

void DoubleArrayAC::serialize(std::string& out) const {
  bin::put<uint32_t>(out, alphabet_size_);
  bin::put<int32_t>(out, max_length_);
  bin::put<int64_t>(out, num_patterns_);
  bin::put<int64_t>(out, num_states_);
  bin::put_vec(out, units_);
  bin::put_vec(out, out_);
  bin::put_vec(out, root_next_);
  bin::put_vec(out, outputs_);
}

void DoubleArrayAC::deserialize(const std::string& in, size_t& pos) {
  alphabet_size_ = bin::get<uint32_t>(in, pos, "automaton header");
  max_length_ = bin::get<int32_t>(in, pos, "automaton header");
  num_patterns_ = bin::get<int64_t>(in, pos, "automaton header");
  num_states_ = bin::get<int64_t>(in, pos, "automaton header");
  bin::get_vec(in, pos, units_, "automaton states");
  bin::get_vec(in, pos, out_, "automaton outputs");
  bin::get_vec(in, pos, root_next_, "automaton root");
  bin::get_vec(in, pos, outputs_, "automaton outputs");
  // Range checks: after these, next() and output walks cannot read out of bounds or loop.
  const int64_t nu = static_cast<int64_t>(units_.size());
  const int64_t no = static_cast<int64_t>(outputs_.size());
  auto bad = [](const char* what) { throw std::invalid_argument(std::string("corrupt automaton: ") + what); };
  if (nu < 1 || out_.size() != units_.size() || root_next_.size() != static_cast<size_t>(alphabet_size_) + 1) bad("sizes");
  for (int64_t s = 0; s < nu; ++s) {
    const DaUnit& u = units_[s];
    if (static_cast<int64_t>(u.base & ~DaUnit::kHasOutput) + alphabet_size_ >= nu) bad("base");
    if (u.check < -1 || u.check >= nu || u.fail < 0 || u.fail >= nu) bad("links");
    if (out_[s] < -1 || out_[s] >= no) bad("outputs");
  }
  for (int32_t r : root_next_) if (r < 0 || r >= nu) bad("root");
  for (int64_t i = 0; i < no; ++i) {
    const DaOutput& o = outputs_[i];
    if (o.pattern < 0 || o.pattern >= num_patterns_ || o.length < 1 || o.length > max_length_ ||
        o.next < -1 || o.next >= i)
      bad("output chain");
  }
  // Failure links must strictly shorten the match or next() could spin: check depth decreases.
  std::vector<int32_t> depth(nu, -1);
  depth[kRoot] = 0;
  for (uint32_t c = 1; c <= alphabet_size_; ++c) if (root_next_[c] != kRoot) {
    if (units_[root_next_[c]].check != kRoot) bad("root");
    depth[root_next_[c]] = 1;
  }
  // states are reachable through check links; compute depth by walking parents (memoised)
  std::vector<int32_t> stack;
  for (int64_t s = 0; s < nu; ++s) {
    if (units_[s].check < 0 || depth[s] >= 0) continue;
    int32_t x = static_cast<int32_t>(s);
    stack.clear();
    while (x != kRoot && depth[x] < 0) {
      stack.push_back(x);
      if (static_cast<int64_t>(stack.size()) > nu) bad("parent cycle");
      x = units_[x].check;
      if (x < 0) bad("orphan state");
    }
    int32_t d = depth[x];
    for (auto it = stack.rbegin(); it != stack.rend(); ++it) depth[*it] = ++d;
  }
  for (int64_t s = 1; s < nu; ++s)
    if (units_[s].check >= 0 && depth[units_[s].fail] >= depth[s]) bad("failure link");
}

}  // namespace rf

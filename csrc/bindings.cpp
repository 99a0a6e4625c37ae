// pybind11 bindings: adapts Python objects (str buffers, id sequences, numpy arrays) to the pure
// C++ matcher. Texts are read from the str's own buffer (1/2/4-byte kinds), never copied to UTF-8.
#include <Python.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "blacklist.h"
#include "ngram.h"
#include "thread_pool.h"

namespace py = pybind11;
using namespace rf;

namespace {

// A view of a Python str's code units; valid while the str object is alive.
struct StrView {
  int kind;
  const void* data;
  int64_t len;
};

// `what` names the argument in the error; a callable so the name is only built on error.
template <typename What>
StrView str_view(py::handle h, What&& what) {
  if (!PyUnicode_Check(h.ptr()))
    throw py::type_error(what() + " must be str, got " + std::string(Py_TYPE(h.ptr())->tp_name));
  return StrView{static_cast<int>(PyUnicode_KIND(h.ptr())), PyUnicode_DATA(h.ptr()), PyUnicode_GET_LENGTH(h.ptr())};
}

std::vector<uint32_t> code_points(py::handle h, const std::string& what) {
  const StrView v = str_view(h, [&] { return what; });
  std::vector<uint32_t> cps(static_cast<size_t>(v.len));
  for (int64_t i = 0; i < v.len; ++i) cps[i] = PyUnicode_READ(v.kind, v.data, i);
  return cps;
}

py::str str_from_code_points(const std::vector<uint32_t>& cps) {
  PyObject* s = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, cps.data(), static_cast<Py_ssize_t>(cps.size()));
  if (!s) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(s);
}

void find_in(const Blacklist& bl, const StrView& v, std::vector<Hit>& out) {
  switch (v.kind) {
    case PyUnicode_1BYTE_KIND: bl.find(static_cast<const uint8_t*>(v.data), v.len, out); break;
    case PyUnicode_2BYTE_KIND: bl.find(static_cast<const uint16_t*>(v.data), v.len, out); break;
    default: bl.find(static_cast<const uint32_t*>(v.data), v.len, out); break;
  }
}

// Ints below 2**16 are created once and shared (the GIL guards the cache): hit tuples are mostly
// small offsets and pattern indices, and allocating a fresh int for each dominated find's cost.
PyObject* cached_int(int64_t v) {
  static std::vector<PyObject*> cache;
  constexpr int64_t kMax = 1 << 16;
  if (v < 0 || v >= kMax) return PyLong_FromLongLong(v);
  if (cache.empty()) cache.assign(kMax, nullptr);
  PyObject*& o = cache[static_cast<size_t>(v)];
  if (o == nullptr) o = PyLong_FromLongLong(v);
  Py_XINCREF(o);
  return o;
}

py::list hits_to_list(const std::vector<Hit>& hits, size_t begin, size_t end) {
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(end - begin));
  if (!list) throw py::error_already_set();
  for (size_t k = begin; k < end; ++k) {
    PyObject* t = PyTuple_New(3);
    if (!t) { Py_DECREF(list); throw py::error_already_set(); }
    PyTuple_SET_ITEM(t, 0, cached_int(hits[k].start));
    PyTuple_SET_ITEM(t, 1, cached_int(hits[k].end));
    PyTuple_SET_ITEM(t, 2, cached_int(hits[k].pattern));
    PyObject_GC_UnTrack(t);  // ints only: can never be part of a cycle (CPython untracks such tuples too)
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(k - begin), t);
  }
  return py::reinterpret_steal<py::list>(list);
}
py::list hits_to_list(const std::vector<Hit>& hits) { return hits_to_list(hits, 0, hits.size()); }

int64_t sequence_length(py::handle h, const std::string& what) {
  if (PyUnicode_Check(h.ptr()) || PyBytes_Check(h.ptr()) || !PySequence_Check(h.ptr()))
    throw py::type_error(what + " must be a sequence (list, tuple, numpy array), got " +
                         std::string(Py_TYPE(h.ptr())->tp_name));
  const Py_ssize_t n = PySequence_Size(h.ptr());
  if (n < 0) throw py::error_already_set();
  return n;
}

// Token ids are small ints: read single-digit ints directly (one load instead of a call that
// checks for overflow), the general conversion otherwise. Same value either way.
inline bool read_small_int(PyObject* o, int64_t& v) {
#if PY_VERSION_HEX >= 0x030C0000
  if (PyUnstable_Long_IsCompact(reinterpret_cast<PyLongObject*>(o))) {
    v = static_cast<int64_t>(PyUnstable_Long_CompactValue(reinterpret_cast<PyLongObject*>(o)));
    return true;
  }
#else
  const Py_ssize_t size = Py_SIZE(o);
  if (size == 0 || size == 1) {
    v = size == 0 ? 0 : static_cast<int64_t>(reinterpret_cast<PyLongObject*>(o)->ob_digit[0]);
    return true;
  }
#endif
  return false;
}

// A batch of token-id sequences from Python: lists/tuples of ints, 1-D integer numpy arrays (zero
// copy when int64 and contiguous), or anything numpy converts (torch CPU tensors, 2-D arrays).
struct PyIdBatch {
  IdBatch batch;
  std::vector<py::array_t<int64_t>> arrays;
  std::vector<std::vector<int64_t>> owned;

  PyIdBatch(py::handle obj, const std::string& name) {
    const int64_t n = sequence_length(obj, name);
    batch.data.resize(n);
    batch.size.resize(n);
    owned.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      const auto where_of = [&] { return name + "[" + std::to_string(i) + "]"; };
      py::object item = py::reinterpret_steal<py::object>(PySequence_GetItem(obj.ptr(), i));
      if (!item) throw py::error_already_set();
      PyObject* p = item.ptr();
      if (PyList_Check(p) || PyTuple_Check(p)) {
        const Py_ssize_t m = PySequence_Fast_GET_SIZE(p);
        PyObject** elems = PySequence_Fast_ITEMS(p);
        auto& v = owned[i];
        v.resize(m);
        for (Py_ssize_t j = 0; j < m; ++j) {
          if (!PyLong_Check(elems[j]))
            throw py::type_error(where_of() + "[" + std::to_string(j) + "] must be an int token id, got " +
                                 std::string(Py_TYPE(elems[j])->tp_name));
          if (read_small_int(elems[j], v[j])) continue;
          int overflow = 0;
          v[j] = PyLong_AsLongLongAndOverflow(elems[j], &overflow);
          if (overflow) throw py::value_error(where_of() + "[" + std::to_string(j) + "] is out of the int64 range");
        }
        batch.data[i] = v.data();
        batch.size[i] = m;
        continue;
      }
      if (PyUnicode_Check(p) || PyBytes_Check(p))
        throw py::type_error(where_of() + " must be a sequence of int token ids, got " + std::string(Py_TYPE(p)->tp_name));
      py::array arr = py::array::ensure(item);
      if (!arr) {
        PyErr_Clear();
        throw py::type_error(where_of() + " must be a list, tuple or integer array of token ids, got " +
                             std::string(Py_TYPE(p)->tp_name));
      }
      const char kind = arr.dtype().kind();
      if (kind == 'O')
        throw py::type_error(where_of() + " must be a list, tuple or integer array of token ids, got " +
                             std::string(Py_TYPE(p)->tp_name));
      if (arr.ndim() != 1 || (kind != 'i' && kind != 'u' && !(arr.size() == 0)))
        throw py::type_error(where_of() + " must be a 1-D integer array, got ndim=" + std::to_string(arr.ndim()) +
                             " dtype=" + std::string(py::str(arr.dtype())));
      auto a = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
      if (!a) throw py::error_already_set();
      batch.data[i] = a.data();
      batch.size[i] = a.size();
      arrays.push_back(std::move(a));
    }
  }
};

py::list new_bool_arrays(const IdBatch& b, std::vector<uint8_t*>& ptrs) {
  py::list out(b.data.size());
  ptrs.resize(b.data.size());
  for (size_t i = 0; i < b.data.size(); ++i) {
    py::array_t<bool> m(static_cast<py::ssize_t>(b.size[i]));
    ptrs[i] = reinterpret_cast<uint8_t*>(m.mutable_data());
    out[i] = std::move(m);
  }
  return out;
}

std::vector<std::vector<uint32_t>> str_list(py::handle seq, const std::string& name) {
  const int64_t n = sequence_length(seq, name);
  std::vector<std::vector<uint32_t>> out(n);
  for (int64_t i = 0; i < n; ++i) {
    py::object item = py::reinterpret_steal<py::object>(PySequence_GetItem(seq.ptr(), i));
    if (!item) throw py::error_already_set();
    out[i] = code_points(item, name + "[" + std::to_string(i) + "]");
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "relate_fast native matcher (Aho-Corasick over code points and token ids)";
  m.def("hardware_threads", &hardware_threads);

  py::class_<TokenTable>(m, "TokenTable")
      .def(py::init([](py::bytes blob, std::vector<int64_t> offsets, std::vector<uint8_t> valid) {
             return new TokenTable(std::string(blob), std::move(offsets), std::move(valid));
           }),
           py::arg("blob"), py::arg("offsets"), py::arg("valid"))
      .def_property_readonly("vocab_size", &TokenTable::vocab_size)
      .def("valid", &TokenTable::valid)
      .def("token_bytes", [](const TokenTable& t, int64_t id) {
        if (!t.valid(id)) throw py::value_error("token id " + std::to_string(id) + " is not in the vocabulary (size " + std::to_string(t.vocab_size()) + ")");
        auto b = t.bytes(id);
        return py::bytes(b.data(), b.size());
      })
      .def("decode", [](const TokenTable& t, py::handle ids) {
        // -> (code points uint32, first byte of each code point + total, first byte of each token + total)
        py::list wrap;
        wrap.append(ids);
        PyIdBatch b(wrap, "token_ids");
        t.check_ids(b.batch.data[0], b.batch.size[0], 0);
        std::vector<uint32_t> cps;
        std::vector<int64_t> cp_byte, tok_byte;
        t.decode(b.batch.data[0], b.batch.size[0], cps, cp_byte, tok_byte);
        py::array_t<uint32_t> a(cps.size());
        std::copy(cps.begin(), cps.end(), a.mutable_data());
        py::array_t<int64_t> c(cp_byte.size());
        std::copy(cp_byte.begin(), cp_byte.end(), c.mutable_data());
        py::array_t<int64_t> d(tok_byte.size());
        std::copy(tok_byte.begin(), tok_byte.end(), d.mutable_data());
        return py::make_tuple(a, c, d);
      });

  py::class_<Blacklist>(m, "Blacklist")
      .def(py::init([](py::handle patterns, py::handle exemptions, bool normalize, uint32_t folds) {
             auto p = str_list(patterns, "patterns");
             auto x = str_list(exemptions, "exemptions");
             py::gil_scoped_release nogil;
             auto* bl = new Blacklist(p, x, normalize, folds);
#if defined(__GLIBC__)
             malloc_trim(0);  // hand the construction scratch (trie, sort buffers) back to the OS
#endif
             return bl;
           }),
           py::arg("patterns"), py::arg("exemptions"), py::arg("normalize"), py::arg("folds") = 0u)
      .def("find", [](const Blacklist& bl, py::handle text) {
        const StrView v = str_view(text, [] { return std::string("text"); });
        std::vector<Hit> hits;
        if (v.len > 4096) {
          py::gil_scoped_release nogil;
          find_in(bl, v, hits);
        } else {
          find_in(bl, v, hits);
        }
        return hits_to_list(hits);
      }, py::arg("text"))
      .def("find_batch", [](const Blacklist& bl, py::handle texts, int num_threads) {
        const int64_t n = sequence_length(texts, "texts");
        std::vector<py::object> keep(n);  // the strs stay alive while the GIL is released
        std::vector<StrView> views(n);
        for (int64_t i = 0; i < n; ++i) {
          keep[i] = py::reinterpret_steal<py::object>(PySequence_GetItem(texts.ptr(), i));
          if (!keep[i]) throw py::error_already_set();
          views[i] = str_view(keep[i], [i] { return "texts[" + std::to_string(i) + "]"; });
        }
        // Helpers scan chunks of texts without the GIL; the calling thread turns each finished
        // chunk into Python objects (briefly taking the GIL) while the helpers scan on, and scans
        // chunks itself whenever the next one is not ready. One thread: scan, convert, repeat.
        // Hits go to one flat buffer per chunk (allocated here, on the calling thread): per-text
        // vectors allocated by a helper and freed by the caller cost cross-thread malloc traffic.
        constexpr int64_t kChunk = 32;
        const int64_t n_chunks = (n + kChunk - 1) / kChunk;
        std::vector<std::vector<Hit>> chunk_hits(static_cast<size_t>(n_chunks));
        for (auto& v : chunk_hits) v.reserve(256);
        std::vector<size_t> text_end(static_cast<size_t>(n));
        std::unique_ptr<std::atomic<uint8_t>[]> done(new std::atomic<uint8_t>[static_cast<size_t>(n_chunks) + 1]);
        for (int64_t c = 0; c < n_chunks; ++c) done[c].store(0, std::memory_order_relaxed);
        std::atomic<int64_t> next_chunk{0};
        auto scan_chunk = [&](int64_t c) {
          std::vector<Hit>& v = chunk_hits[c];
          for (int64_t i = c * kChunk, e = std::min(n, (c + 1) * kChunk); i < e; ++i) {
            find_in(bl, views[i], v);
            text_end[i] = v.size();
          }
          done[c].store(1, std::memory_order_release);
        };
        std::function<void()> helper = [&] {
          for (int64_t c; (c = next_chunk.fetch_add(1)) < n_chunks;) scan_chunk(c);
        };
        py::list out(n);
        std::function<void()> main = [&] {
          for (int64_t c = 0; c < n_chunks; ++c) {
            while (!done[c].load(std::memory_order_acquire)) {
              const int64_t mine = next_chunk.fetch_add(1);
              if (mine < n_chunks) scan_chunk(mine);
              else std::this_thread::yield();
            }
            py::gil_scoped_acquire gil;
            size_t begin = 0;
            for (int64_t i = c * kChunk, e = std::min(n, (c + 1) * kChunk); i < e; ++i) {
              out[i] = hits_to_list(chunk_hits[c], begin, text_end[i]);
              begin = text_end[i];
            }
          }
        };
        {
          py::gil_scoped_release nogil;
          run_with_helpers(num_threads, helper, main);
        }
        return out;
      }, py::arg("texts"), py::arg("num_threads") = 0)
      .def("token_mask", [](const Blacklist& bl, py::handle batch, const TokenTable& table, int num_threads) {
        PyIdBatch b(batch, "batch_token_ids");
        for (size_t i = 0; i < b.batch.data.size(); ++i) table.check_ids(b.batch.data[i], b.batch.size[i], static_cast<int64_t>(i));
        std::vector<uint8_t*> ptrs;
        py::list out = new_bool_arrays(b.batch, ptrs);
        {
          py::gil_scoped_release nogil;
          parallel_for(static_cast<int64_t>(ptrs.size()), num_threads,
                       [&](int64_t i) { bl.token_mask(table, b.batch.data[i], b.batch.size[i], ptrs[i]); });
        }
        return out;
      }, py::arg("batch_token_ids"), py::arg("table"), py::arg("num_threads") = 0)
      .def_property_readonly("num_patterns", &Blacklist::num_patterns)
      .def_property_readonly("num_exemptions", &Blacklist::num_exemptions)
      .def_property_readonly("normalize", &Blacklist::normalize)
      .def_property_readonly("folds", &Blacklist::folds)
      .def_property_readonly("num_states", &Blacklist::num_states)
      .def_property_readonly("memory_bytes", &Blacklist::memory_bytes)
      .def("original", [](const Blacklist& bl, int64_t i) {
        if (i < 0 || i >= bl.num_patterns() + bl.num_exemptions()) throw py::index_error("pattern index out of range");
        return str_from_code_points(bl.original(i));
      })
      .def("serialize", [](const Blacklist& bl) {
        std::string s;
        {
          py::gil_scoped_release nogil;
          s = bl.serialize();
        }
        return py::bytes(s);
      })
      .def_static("deserialize", [](py::bytes data) {
        std::string s(data);
        py::gil_scoped_release nogil;
        return new Blacklist(Blacklist::deserialize(s));
      });

  py::class_<NgramCounter>(m, "NgramCounter")
      .def(py::init<int, int, bool, int64_t>(), py::arg("n_min"), py::arg("n_max"), py::arg("count_responses"),
           py::arg("window"))
      .def("update", [](NgramCounter& c, py::handle batch) {
        PyIdBatch b(batch, "batch");
        NgramCounter::validate_ids(b.batch);
        py::gil_scoped_release nogil;
        c.update(b.batch);
      }, py::arg("batch"))
      .def("count", [](const NgramCounter& c, py::handle ngram) {
        py::list wrap;
        wrap.append(ngram);
        PyIdBatch b(wrap, "ngram");
        return c.count(b.batch.data[0], static_cast<int>(b.batch.size[0]));
      }, py::arg("ngram"))
      .def("frequent", [](const NgramCounter& c, int64_t min_count) {
        auto grams = c.frequent(min_count);
        py::list out(grams.size());
        for (size_t i = 0; i < grams.size(); ++i) {
          py::tuple t(grams[i].size());
          for (size_t k = 0; k < grams[i].size(); ++k) t[k] = py::int_(grams[i][k]);
          out[i] = std::move(t);
        }
        return out;
      }, py::arg("min_count"))
      .def("mask", [](const NgramCounter& c, py::handle seqs, int64_t min_count, int num_threads) {
        PyIdBatch b(seqs, "seqs");
        std::vector<uint8_t*> ptrs;
        py::list out = new_bool_arrays(b.batch, ptrs);
        {
          py::gil_scoped_release nogil;
          c.mask(b.batch, min_count, ptrs, num_threads);
        }
        return out;
      }, py::arg("seqs"), py::arg("min_count"), py::arg("num_threads") = 1)
      .def("occurrences", [](const NgramCounter& c, py::handle seqs, int64_t min_count, int num_threads) {
        PyIdBatch b(seqs, "seqs");
        py::array_t<int64_t> out(static_cast<py::ssize_t>(b.batch.data.size()));
        int64_t* p = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          c.occurrences(b.batch, min_count, p, num_threads);
        }
        return out;
      }, py::arg("seqs"), py::arg("min_count"), py::arg("num_threads") = 1)
      .def_property_readonly("n_min", &NgramCounter::n_min)
      .def_property_readonly("n_max", &NgramCounter::n_max)
      .def_property_readonly("count_responses", &NgramCounter::count_responses)
      .def_property_readonly("window", &NgramCounter::window)
      .def_property_readonly("num_batches", &NgramCounter::num_batches)
      .def_property_readonly("batches_seen", &NgramCounter::batches_seen)
      .def_property_readonly("num_nodes", &NgramCounter::num_nodes)
      .def_property_readonly("memory_bytes", &NgramCounter::memory_bytes)
      .def("serialize", [](const NgramCounter& c) { return py::bytes(c.serialize()); })
      .def_static("deserialize", [](py::bytes data) { return NgramCounter::deserialize(std::string(data)); });
}

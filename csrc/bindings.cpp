// pybind11 face of the C++ state cache: t2arec_fast._state_cache.
//
// This file only checks Python arguments (types, shapes, memory layout) and moves data pointers across; all
// cache logic is in state_cache.cpp / shard.cpp / snapshot.cpp, which do not depend on Python. The public
// Python API is t2arec_fast.cache.StateCache, which wraps StateCacheCore (and converts torch tensors).
//
// Layout policy: state arrays (`states`, `out`) must already be C-contiguous, aligned float32; they are
// refused otherwise, never silently copied, because they are the large buffers on the serving hot path.
// user_ids (8 bytes per row) are copied when strided.
// Batch work runs with the GIL released so that several Python threads use the cache in parallel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

#include "row_kernels.h"
#include "state_cache.h"

namespace py = pybind11;
using t2arec::StateCache;

namespace {

std::string shape_of(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string type_name(const py::handle& obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

py::array as_array(const py::handle& obj, const char* name, const char* expected) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy array of " + expected + ", got " + type_name(obj));
    return py::reinterpret_borrow<py::array>(obj);
}

void require_c_layout(const py::array& a, const char* name) {
    const int flags = a.flags();
    if (!(flags & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous (the cache refuses rather than copies "
                              "state buffers): pass np.ascontiguousarray(" + name + ")");
    if (!(flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        throw py::value_error(std::string(name) + " is not aligned for its dtype: pass a copy");
}

// User ids as a contiguous int64 pointer. A strided 1-D int64 view is copied into `storage` (8 bytes per id);
// other dtypes are refused here (the Python wrapper converts lists and other integer dtypes first).
struct IdBatch {
    const int64_t* data;
    size_t n;
    std::vector<int64_t> storage;
};

IdBatch id_batch(const py::handle& obj) {
    py::array a = as_array(obj, "user_ids", "int64");
    if (!py::isinstance<py::array_t<int64_t>>(a))
        throw py::type_error("user_ids must have dtype int64, got " + std::string(py::str(a.dtype())));
    if (a.ndim() != 1) throw py::value_error("user_ids must be 1-D (n,), got shape " + shape_of(a));
    IdBatch batch{static_cast<const int64_t*>(a.data()), static_cast<size_t>(a.shape(0)), {}};
    const bool contiguous = a.flags() & py::array::c_style;
    const bool aligned = a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_;
    if (!contiguous || !aligned) {
        const auto* base = static_cast<const char*>(a.data());
        const py::ssize_t stride = a.strides(0);
        batch.storage.resize(batch.n);
        for (size_t i = 0; i < batch.n; ++i)  // memcpy: the view may be unaligned
            std::memcpy(&batch.storage[i], base + static_cast<py::ssize_t>(i) * stride, sizeof(int64_t));
        batch.data = batch.storage.data();
    }
    return batch;
}

// A float32 (n, state_size) array; `writable` for output buffers.
float* state_rows(const py::handle& obj, const char* name, size_t n, size_t state_size, bool writable) {
    py::array a = as_array(obj, name, "float32");
    if (!py::isinstance<py::array_t<float>>(a))
        throw py::type_error(std::string(name) + " must have dtype float32, got " + std::string(py::str(a.dtype())) +
                             " (the cache converts to its storage dtype itself)");
    if (a.ndim() != 2 || static_cast<size_t>(a.shape(0)) != n || static_cast<size_t>(a.shape(1)) != state_size)
        throw py::value_error(std::string(name) + " must have shape (" + std::to_string(n) + ", " +
                              std::to_string(state_size) + ") = (len(user_ids), state_size), got " + shape_of(a));
    require_c_layout(a, name);
    if (writable && !a.writeable()) throw py::value_error(std::string(name) + " is read-only");
    return static_cast<float*>(const_cast<void*>(a.data()));
}

py::dict stats_dict(const StateCache& cache) {
    const t2arec::CacheStats s = cache.stats();
    py::dict d;
    d["hits"] = s.hits;
    d["misses"] = s.misses;
    d["stale"] = s.stale;
    d["evictions"] = s.evictions;
    d["puts"] = s.puts;
    d["entries"] = s.entries;
    d["max_entries"] = s.max_entries;
    d["bytes"] = s.bytes;
    d["capacity_bytes"] = cache.capacity_bytes();
    return d;
}

py::dict header_dict(const t2arec::SnapshotHeader& h) {
    py::dict d;
    d["format_version"] = h.format_version;
    d["dtype"] = t2arec::dtype_name(h.dtype);
    d["state_size"] = h.state_size;
    d["entry_count"] = h.entry_count;
    d["capacity_bytes"] = h.capacity_bytes;
    d["shards"] = h.shards;
    d["min_version"] = h.min_version;
    d["max_version"] = h.max_version;
    d["file_bytes"] = h.file_bytes;
    return d;
}

void translate_io_error(std::exception_ptr p) {
    try {
        if (p) std::rethrow_exception(p);
    } catch (const t2arec::IoError& e) {
        // OSError(errno, text, filename) picks the matching subclass (FileNotFoundError, PermissionError, ...).
        const std::string text = e.doing + ": " + e.reason;
        PyObject* exc = PyObject_CallFunction(PyExc_OSError, "iss", e.error_code, text.c_str(), e.path.c_str());
        if (exc != nullptr) {
            PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc)), exc);
            Py_DECREF(exc);
        }
    }
}

py::array_t<uint16_t> float_to_half_bits(py::array_t<float, py::array::c_style | py::array::forcecast> x) {
    py::array_t<uint16_t> out(x.size());
    t2arec::floats_to_halves(x.data(), out.mutable_data(), static_cast<size_t>(x.size()));
    return out;
}

py::array_t<float> half_bits_to_float(py::array_t<uint16_t, py::array::c_style | py::array::forcecast> h) {
    py::array_t<float> out(h.size());
    t2arec::halves_to_floats(h.data(), out.mutable_data(), static_cast<size_t>(h.size()));
    return out;
}

}  // namespace

PYBIND11_MODULE(_state_cache, m) {
    m.doc() = "Native per-user state cache of t2arec_fast (use t2arec_fast.cache.StateCache).";
    py::register_exception<t2arec::SnapshotError>(m, "SnapshotError", PyExc_ValueError);
    py::register_exception_translator(&translate_io_error);
    m.attr("FORMAT_VERSION") = StateCache::kFormatVersion;

    py::class_<StateCache>(m, "StateCacheCore")
        .def(py::init([](int64_t state_size, int64_t capacity_bytes, const std::string& dtype, int64_t shards) {
                 if (state_size <= 0) throw py::value_error("state_size must be positive, got " +
                                                            std::to_string(state_size));
                 if (shards < 0) throw py::value_error("shards must be positive (or 0 for automatic), got " +
                                                       std::to_string(shards));
                 return std::make_unique<StateCache>(static_cast<size_t>(state_size), capacity_bytes,
                                                     t2arec::parse_dtype(dtype), static_cast<size_t>(shards));
             }),
             py::arg("state_size"), py::arg("capacity_bytes"), py::arg("dtype") = "float32", py::arg("shards") = 0)
        .def(
            "put",
            [](StateCache& c, const py::object& user_ids, const py::object& states, int64_t version) {
                const IdBatch ids = id_batch(user_ids);
                const float* rows = state_rows(states, "states", ids.n, c.state_size(), false);
                py::gil_scoped_release release;
                c.put(ids.data, rows, ids.n, version);
            },
            py::arg("user_ids"), py::arg("states"), py::arg("version"))
        .def(
            "get",
            [](StateCache& c, const py::object& user_ids, int64_t version) {
                const IdBatch ids = id_batch(user_ids);
                py::array_t<bool> found(static_cast<py::ssize_t>(ids.n));
                py::array_t<float> out({static_cast<py::ssize_t>(ids.n), static_cast<py::ssize_t>(c.state_size())});
                bool* found_ptr = found.mutable_data();
                float* out_ptr = out.mutable_data();
                {
                    py::gil_scoped_release release;
                    c.get(ids.data, ids.n, version, out_ptr, found_ptr, /*zero_misses=*/true);
                }
                return py::make_tuple(found, out);
            },
            py::arg("user_ids"), py::arg("version"))
        .def(
            "get_into",
            [](StateCache& c, const py::object& user_ids, int64_t version, const py::object& out) {
                const IdBatch ids = id_batch(user_ids);
                float* rows = state_rows(out, "out", ids.n, c.state_size(), true);
                py::array_t<bool> found(static_cast<py::ssize_t>(ids.n));
                bool* found_ptr = found.mutable_data();
                {
                    py::gil_scoped_release release;
                    c.get(ids.data, ids.n, version, rows, found_ptr, /*zero_misses=*/false);
                }
                return found;
            },
            py::arg("user_ids"), py::arg("version"), py::arg("out"))
        .def(
            "delete",
            [](StateCache& c, const py::object& user_ids) {
                const IdBatch ids = id_batch(user_ids);
                py::gil_scoped_release release;
                return c.erase(ids.data, ids.n);
            },
            py::arg("user_ids"))
        .def("clear", &StateCache::clear, py::call_guard<py::gil_scoped_release>())
        .def("contains", &StateCache::contains, py::arg("user_id"))
        .def("__len__", &StateCache::size)
        .def("keys",
             [](const StateCache& c) {
                 std::vector<int64_t> keys;
                 {
                     py::gil_scoped_release release;
                     keys = c.keys();
                 }
                 py::array_t<int64_t> out(static_cast<py::ssize_t>(keys.size()));
                 std::copy(keys.begin(), keys.end(), out.mutable_data());
                 return out;
             })
        .def("stats", &stats_dict)
        .def("save", &StateCache::save, py::arg("path"), py::call_guard<py::gil_scoped_release>())
        .def_static(
            "load",
            [](const std::string& path, int64_t capacity_bytes, int64_t shards, int64_t state_size,
               const std::string& dtype) {
                t2arec::LoadOptions options;
                options.capacity_bytes = capacity_bytes;
                options.shards = static_cast<size_t>(shards < 0 ? 0 : shards);
                options.expected_state_size = static_cast<size_t>(state_size < 0 ? 0 : state_size);
                options.expected_dtype = dtype.empty() ? -1 : static_cast<int>(t2arec::parse_dtype(dtype));
                py::gil_scoped_release release;
                return StateCache::load(path, options);
            },
            py::arg("path"), py::arg("capacity_bytes") = -1, py::arg("shards") = 0, py::arg("state_size") = 0,
            py::arg("dtype") = "")
        .def_static(
            "read_snapshot_header",
            [](const std::string& path) { return header_dict(StateCache::read_snapshot_header(path)); },
            py::arg("path"))
        .def_static("min_capacity_bytes",
                    [](int64_t state_size, const std::string& dtype) {
                        if (state_size <= 0) throw py::value_error("state_size must be positive");
                        return StateCache::min_capacity_bytes(static_cast<size_t>(state_size),
                                                              t2arec::parse_dtype(dtype));
                    })
        .def_property_readonly("state_size", &StateCache::state_size)
        .def_property_readonly("dtype", [](const StateCache& c) { return t2arec::dtype_name(c.dtype()); })
        .def_property_readonly("capacity_bytes", &StateCache::capacity_bytes)
        .def_property_readonly("shards", &StateCache::shards)
        .def_property_readonly("max_entries", &StateCache::max_entries)
        .def_property_readonly("row_bytes", &StateCache::row_bytes);

    m.def("_float_to_half_bits", &float_to_half_bits, "float32 values -> IEEE half bit patterns (uint16), for tests");
    m.def("_half_bits_to_float", &half_bits_to_float, "IEEE half bit patterns (uint16) -> float32, for tests");
    m.def("_row_kernels_isa", &t2arec::row_kernels_isa, "which row kernels run here: avx2+f16c or portable");
}

// Standalone tests of the C++ state cache (no Python, no test framework). Built and run by `make -C csrc test`,
// under AddressSanitizer + UndefinedBehaviorSanitizer by `make -C csrc sanitize` and under ThreadSanitizer by
// `make -C csrc tsan`. Exits non-zero at the first failed check.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "checksum.h"
#include "half.h"
#include "row_kernels.h"
#include "shard.h"
#include "state_cache.h"

using namespace t2arec;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            std::exit(1);                                                                  \
        }                                                                                  \
    } while (0)

template <class Exception, class F>
bool throws(F&& f) {
    try {
        f();
    } catch (const Exception&) {
        return true;
    }
    return false;
}

namespace {

std::string g_tmpdir;

std::vector<float> rows_of(const std::vector<int64_t>& ids, size_t state_size, float salt) {
    std::vector<float> rows(ids.size() * state_size);
    for (size_t i = 0; i < ids.size(); ++i)
        for (size_t j = 0; j < state_size; ++j) rows[i * state_size + j] = float(ids[i]) * 0.5f + float(j) + salt;
    return rows;
}

std::vector<int64_t> iota_ids(int64_t first, size_t n) {
    std::vector<int64_t> ids(n);
    for (size_t i = 0; i < n; ++i) ids[i] = first + int64_t(i);
    return ids;
}

struct GetResult {
    std::vector<float> rows;
    std::vector<char> found;  // not vector<bool>: get() writes through bool*
};

GetResult get_all(StateCache& c, const std::vector<int64_t>& ids, int64_t version) {
    GetResult r{std::vector<float>(ids.size() * c.state_size(), -1.0f), std::vector<char>(ids.size(), 0)};
    c.get(ids.data(), ids.size(), version, r.rows.data(), reinterpret_cast<bool*>(r.found.data()), true);
    return r;
}

std::vector<unsigned char> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::vector<unsigned char>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// ---- float16 ---------------------------------------------------------------------------------------------

// Nearest half to |f| by binary search over the (monotone) positive half bit patterns, ties to even.
uint16_t reference_half_magnitude(float f) {
    const double x = std::fabs(double(f));
    uint32_t lo = 0, hi = 0x7BFF;  // largest half <= x lies in [lo, hi]
    while (lo < hi) {
        const uint32_t mid = (lo + hi + 1) / 2;
        if (double(half_to_float(uint16_t(mid))) <= x) lo = mid;
        else hi = mid - 1;
    }
    if (lo == 0x7BFF) return 0x7BFF;
    const double below = half_to_float(uint16_t(lo)), above = half_to_float(uint16_t(lo + 1));
    if (x - below < above - x) return uint16_t(lo);
    if (x - below > above - x) return uint16_t(lo + 1);
    return uint16_t((lo & 1) ? lo + 1 : lo);
}

void test_half_conversion() {
    CHECK(half_to_float(0x3C00) == 1.0f);
    CHECK(half_to_float(0xC000) == -2.0f);
    CHECK(half_to_float(0x7BFF) == 65504.0f);
    CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));
    CHECK(half_to_float(0x0400) == std::ldexp(1.0f, -14));
    CHECK(std::isinf(half_to_float(0x7C00)) && std::isnan(half_to_float(0x7E00)));
    for (uint32_t h = 0; h < 0x10000; ++h) {  // every finite half survives half -> float -> half
        if ((h & 0x7C00) == 0x7C00) continue;
        CHECK(float_to_half(half_to_float(uint16_t(h))) == h);
    }
    std::mt19937 rng(7);
    std::uniform_int_distribution<uint32_t> any_bits;
    for (int k = 0; k < 200000; ++k) {  // random floats within the half range, including tiny ones
        float f = bits_float(any_bits(rng));
        if (!std::isfinite(f) || std::fabs(f) > 65504.0f) f = std::fmod(f, 65504.0f);
        if (!std::isfinite(f)) continue;
        const uint16_t expect = uint16_t(reference_half_magnitude(f) | (std::signbit(f) ? 0x8000 : 0));
        CHECK(float_to_half(f) == expect);
    }
    const float midpoints[] = {1.0f + std::ldexp(1.0f, -11), 1.0f + 3 * std::ldexp(1.0f, -11), 65504.0f,
                               std::ldexp(1.0f, -25), std::ldexp(3.0f, -25)};
    for (float f : midpoints) CHECK(float_to_half(f) == reference_half_magnitude(f));
}

// Every kernel set agrees with the scalar conversions and with the scalar range check, on odd lengths too.
void test_row_kernels() {
    std::printf("     row kernels in use: %s\n", row_kernels_isa());
    std::mt19937 rng(5);
    std::uniform_int_distribution<uint32_t> any_bits;
    std::vector<float> x(1037);
    for (float& v : x) {
        v = bits_float(any_bits(rng));
        if (!std::isfinite(v) || std::fabs(v) > 65504.0f) v = std::fmod(v, 1000.0f);
        if (!std::isfinite(v)) v = 0.5f;
    }
    std::vector<uint16_t> all_halves;
    for (uint32_t h = 0; h < 0x10000; ++h) all_halves.push_back(uint16_t(h));
    struct Set {
        const char* name;
        void (*to_halves)(const float*, uint16_t*, size_t);
        void (*to_floats)(const uint16_t*, float*, size_t);
        bool (*above)(const float*, size_t, uint32_t);
    };
    std::vector<Set> sets = {{"portable", portable::floats_to_halves, portable::halves_to_floats,
                              portable::any_abs_above},
                             {"dispatch", floats_to_halves, halves_to_floats, any_abs_above}};
#ifdef T2AREC_HAVE_AVX2_KERNELS
    if (avx2::cpu_supported())
        sets.push_back({"avx2", avx2::floats_to_halves, avx2::halves_to_floats, avx2::any_abs_above});
#endif
    for (const Set& k : sets) {
        for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(8), size_t(9), x.size()}) {
            std::vector<uint16_t> h(n);
            k.to_halves(x.data(), h.data(), n);
            for (size_t i = 0; i < n; ++i) CHECK(h[i] == float_to_half(x[i]));
        }
        std::vector<float> f(all_halves.size());
        k.to_floats(all_halves.data(), f.data(), f.size());
        for (size_t i = 0; i < f.size(); ++i) {
            const float expect = half_to_float(all_halves[i]);
            CHECK(float_bits(f[i]) == float_bits(expect) || (std::isnan(f[i]) && std::isnan(expect)));
        }
        CHECK(!k.above(x.data(), x.size(), kHalfMaxAsFloatBits));
        for (float bad : {NAN, -NAN, INFINITY, -INFINITY, 65520.0f, -1e30f}) {
            for (size_t pos : {size_t(0), size_t(5), x.size() - 1}) {
                const float keep = x[pos];
                x[pos] = bad;
                CHECK(k.above(x.data(), x.size(), kHalfMaxAsFloatBits));
                CHECK(k.above(x.data(), x.size(), 0x7F7FFFFFu) == !std::isfinite(bad));
                x[pos] = keep;
            }
        }
    }
}

// ---- checksum --------------------------------------------------------------------------------------------

void test_checksum() {
    std::vector<unsigned char> data(1000);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<unsigned char>(i * 131 + 7);
    const uint64_t whole = Checksum64::of(data.data(), data.size());
    Checksum64 streamed;
    std::mt19937 rng(3);
    for (size_t off = 0; off < data.size();) {
        const size_t len = std::min<size_t>(rng() % 70, data.size() - off);
        streamed.update(data.data() + off, len);
        off += len;
    }
    CHECK(streamed.digest() == whole);
    for (size_t i = 0; i < data.size(); ++i) {  // a single changed byte anywhere is always detected
        for (unsigned char flip : {0x01, 0x80, 0xFF}) {
            data[i] ^= flip;
            CHECK(Checksum64::of(data.data(), data.size()) != whole);
            data[i] ^= flip;
        }
    }
    CHECK(Checksum64::of(data.data(), 999) != Checksum64::of(data.data(), 1000));
    const unsigned char zeros[3] = {0, 0, 0};
    CHECK(Checksum64::of(zeros, 1) != Checksum64::of(zeros, 2));  // trailing zeros count
}

// ---- shard index against a reference map -------------------------------------------------------------------

void test_shard_against_model() {
    Shard shard;
    const size_t slots = 300;
    shard.configure(8, slots);
    std::unordered_map<int64_t, int64_t> model;  // key -> version, as long as nothing is evicted
    std::mt19937_64 rng(11);
    for (int step = 0; step < 200000; ++step) {
        const int64_t key = int64_t(rng() % 600) - 300;  // negative ids too; collisions in the index
        const uint64_t h = hash_user_id(key);
        const int op = int(rng() % 3);
        if (op == 0 && model.size() < slots && model.count(key) == 0) {
            bool evicted = false;
            const uint32_t slot = shard.insert(key, h, step, &evicted);
            CHECK(!evicted);
            std::memcpy(shard.row(slot), &key, 8);
            model[key] = step;
        } else if (op == 1) {
            CHECK(shard.erase(key, h) == (model.erase(key) == 1));
        } else {
            const uint32_t slot = shard.find(key, h);
            const auto it = model.find(key);
            CHECK((slot != Shard::kNone) == (it != model.end()));
            if (it != model.end()) {
                int64_t stored;
                std::memcpy(&stored, shard.row(slot), 8);
                CHECK(stored == key && shard.meta(slot).version == it->second);
            }
        }
        CHECK(shard.size() == model.size());
    }
    CHECK(shard.allocated_bytes() <= Shard::bytes_for_slots(8, slots));
}

// ---- cache behaviour -------------------------------------------------------------------------------------

void test_round_trip_and_versions() {
    for (Dtype dtype : {Dtype::Float32, Dtype::Float16}) {
        StateCache c(37, 1 << 20, dtype);
        const auto ids = iota_ids(-5, 50);
        const auto rows = rows_of(ids, 37, 0.25f);
        c.put(ids.data(), rows.data(), ids.size(), 7);
        CHECK(c.size() == 50);
        auto r = get_all(c, ids, 7);
        for (size_t i = 0; i < rows.size(); ++i) {
            const float expect = dtype == Dtype::Float32 ? rows[i] : half_to_float(float_to_half(rows[i]));
            CHECK(r.rows[i] == expect);
        }
        for (char f : r.found) CHECK(f);
        r = get_all(c, ids, 8);  // another model version: misses with zeroed rows
        for (char f : r.found) CHECK(!f);
        for (float v : r.rows) CHECK(v == 0.0f);
        const CacheStats s = c.stats();
        CHECK(s.hits == 50 && s.misses == 50 && s.stale == 50 && s.entries == 50 && s.puts == 50);
    }
}

void test_lru_and_budget() {
    const size_t state_size = 16;
    // Find a capacity that holds exactly 4 entries in one shard.
    int64_t cap = int64_t(StateCache::min_capacity_bytes(state_size, Dtype::Float32));
    while (StateCache(state_size, cap, Dtype::Float32, 1).max_entries() < 4) cap += 8;
    StateCache c(state_size, cap, Dtype::Float32, 1);
    CHECK(c.max_entries() == 4);
    const auto ids = iota_ids(1, 4);
    const auto rows = rows_of(ids, state_size, 0);
    c.put(ids.data(), rows.data(), 4, 1);
    const int64_t refresh = 1;  // 1 is least recently used; a get makes it the most recent
    float out[state_size];
    bool found;
    c.get(&refresh, 1, 1, out, &found, false);
    CHECK(found);
    const int64_t newcomer = 99;
    c.put(&newcomer, rows.data(), 1, 1);
    CHECK(c.contains(1) && !c.contains(2) && c.contains(3) && c.contains(4) && c.contains(99));
    CHECK(c.stats().evictions == 1);
    CHECK(c.stats().bytes <= uint64_t(cap));
    // Budget edges.
    const int64_t min_cap = int64_t(StateCache::min_capacity_bytes(state_size, Dtype::Float32));
    CHECK(StateCache(state_size, min_cap, Dtype::Float32).max_entries() >= 1);
    CHECK(throws<InvalidArgument>([&] { StateCache(state_size, min_cap - 1, Dtype::Float32); }));
    CHECK(throws<InvalidArgument>([&] { StateCache(state_size, -1, Dtype::Float32); }));
    CHECK(throws<InvalidArgument>([&] { StateCache(0, 1 << 20, Dtype::Float32); }));
    CHECK(throws<InvalidArgument>([&] { StateCache(state_size, min_cap, Dtype::Float32, 16); }));
    // Filling a big cache never exceeds the budget.
    StateCache big(2500, 8 << 20, Dtype::Float32);
    const auto many = iota_ids(0, 2000);
    const auto many_rows = rows_of(many, 2500, 1);
    big.put(many.data(), many_rows.data(), many.size(), 1);
    const CacheStats s = big.stats();
    CHECK(s.bytes <= uint64_t(8 << 20) && s.entries == s.max_entries && s.evictions == 2000 - s.entries);
    CHECK(double(s.bytes) / double(s.entries) < 1.2 * 2500 * 4);
}

void test_bad_input_changes_nothing() {
    StateCache c(8, 1 << 16, Dtype::Float16);
    const auto ids = iota_ids(0, 3);
    auto rows = rows_of(ids, 8, 0);
    c.put(ids.data(), rows.data(), 3, 1);
    const CacheStats before = c.stats();
    const auto fresh = iota_ids(100, 3);
    for (float bad : {NAN, INFINITY, 70000.0f}) {
        auto poisoned = rows_of(fresh, 8, 0);
        poisoned[2 * 8 + 5] = bad;  // last row: the first two must not be written either
        CHECK(throws<InvalidArgument>([&] { c.put(fresh.data(), poisoned.data(), 3, 2); }));
    }
    const CacheStats after = c.stats();
    CHECK(after.entries == before.entries && after.puts == before.puts && !c.contains(100) && !c.contains(101));
    StateCache f32(8, 1 << 16, Dtype::Float32);
    auto big = rows_of(fresh, 8, 0);
    big[3] = 70000.0f;  // fine in float32 mode
    f32.put(fresh.data(), big.data(), 3, 1);
    CHECK(f32.size() == 3);
}

void test_duplicates_delete_clear_keys() {
    StateCache c(4, 1 << 16, Dtype::Float32);
    const std::vector<int64_t> ids = {5, 6, 5};
    const std::vector<float> rows = {1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};
    c.put(ids.data(), rows.data(), 3, 1);
    CHECK(c.size() == 2);
    auto r = get_all(c, {5}, 1);
    CHECK(r.found[0] && r.rows[0] == 3.0f);  // the last duplicate wins
    auto keys = c.keys();
    std::sort(keys.begin(), keys.end());
    CHECK((keys == std::vector<int64_t>{5, 6}));
    const std::vector<int64_t> gone = {5, 5, 42};
    CHECK(c.erase(gone.data(), gone.size()) == 1);
    CHECK(!c.contains(5) && c.contains(6) && c.size() == 1);
    c.clear();
    CHECK(c.size() == 0 && c.keys().empty() && !c.contains(6));
    c.put(ids.data(), rows.data(), 3, 1);  // usable after clear
    CHECK(c.size() == 2);
}

// ---- snapshots -------------------------------------------------------------------------------------------

void expect_snapshot_error(const std::string& path, const char* needle, const LoadOptions& options = {}) {
    try {
        StateCache::load(path, options);
    } catch (const SnapshotError& e) {
        if (std::strstr(e.what(), needle) == nullptr || std::strstr(e.what(), path.c_str()) == nullptr) {
            std::fprintf(stderr, "unexpected message: %s\n", e.what());
            CHECK(false);
        }
        return;
    }
    std::fprintf(stderr, "no SnapshotError for %s (expected '%s')\n", path.c_str(), needle);
    CHECK(false);
}

void test_snapshots() {
    const std::string path = g_tmpdir + "/cache.snap";
    StateCache c(6, 1 << 16, Dtype::Float16, 2);
    const auto ids = iota_ids(10, 9);
    const auto rows = rows_of(ids, 6, 0.5f);
    c.put(ids.data(), rows.data(), 5, 3);
    c.put(ids.data() + 5, rows.data() + 5 * 6, 4, 4);
    c.save(path);
    auto loaded = StateCache::load(path);
    CHECK(loaded->size() == 9 && loaded->dtype() == Dtype::Float16 && loaded->shards() == 2);
    CHECK(loaded->keys() == c.keys());  // same shards, same LRU order
    const auto a = get_all(c, ids, 3), b = get_all(*loaded, ids, 3);
    CHECK(a.rows == b.rows && a.found == b.found);
    const SnapshotHeader h = StateCache::read_snapshot_header(path);
    CHECK(h.entry_count == 9 && h.min_version == 3 && h.max_version == 4 && h.state_size == 6);

    const auto bytes = read_file(path);
    const std::string bad = g_tmpdir + "/bad.snap";
    for (size_t i = 0; i < bytes.size(); ++i) {  // every single flipped byte is refused
        auto copy = bytes;
        copy[i] ^= 0x10;
        write_file(bad, copy);
        CHECK(throws<SnapshotError>([&] { StateCache::load(bad); }));
    }
    write_file(bad, std::vector<unsigned char>(bytes.begin(), bytes.end() - 1));
    expect_snapshot_error(bad, "truncated");
    write_file(bad, std::vector<unsigned char>(bytes.begin(), bytes.begin() + 40));
    expect_snapshot_error(bad, "truncated");
    auto longer = bytes;
    longer.push_back(0);
    write_file(bad, longer);
    expect_snapshot_error(bad, "unexpected bytes");
    write_file(bad, std::vector<unsigned char>(200, 'x'));
    expect_snapshot_error(bad, "not a t2arec state-cache snapshot");
    LoadOptions other_size;
    other_size.expected_state_size = 7;
    expect_snapshot_error(path, "state_size 6, expected 7", other_size);
    LoadOptions other_dtype;
    other_dtype.expected_dtype = int(Dtype::Float32);
    expect_snapshot_error(path, "stores float16, expected float32", other_dtype);
    // A smaller cache keeps what fits; failures of the OS surface as IoError with the path.
    LoadOptions small;
    small.capacity_bytes = int64_t(StateCache::min_capacity_bytes(6, Dtype::Float16));
    const auto shrunk = StateCache::load(path, small);
    CHECK(shrunk->size() == shrunk->max_entries() && shrunk->size() < 9 && shrunk->stats().evictions > 0);
    CHECK(throws<IoError>([&] { StateCache::load(g_tmpdir + "/missing.snap"); }));
    CHECK(throws<IoError>([&] { c.save(g_tmpdir + "/no/such/dir/x.snap"); }));
    StateCache empty(6, 1 << 16, Dtype::Float32);
    empty.save(path);
    CHECK(StateCache::load(path)->size() == 0);
}

// ---- threads ---------------------------------------------------------------------------------------------

// Eight threads: each owns keys whose value is a counter it increments (a lost update shows up as an old
// counter), and all of them write and read shared keys whose rows are self-consistent (a torn or misrouted
// row shows up as a mismatch), under two model versions, while one thread also deletes and saves.
void test_threads() {
    const size_t state_size = 64, threads = 8, owned = 32, shared = 16;
    StateCache c(state_size, 4 << 20, Dtype::Float32, 4);
    CHECK(c.max_entries() > threads * owned + shared);  // no eviction: every owned key must stay
    std::atomic<bool> failed{false};
    std::atomic<uint64_t> gets_done{0};
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    auto worker = [&](size_t t) {
        std::mt19937_64 rng(t);
        std::vector<uint32_t> counter(owned, 0);
        std::vector<float> row(state_size), out(state_size);
        uint64_t my_gets = 0;
        while (std::chrono::steady_clock::now() < deadline && !failed) {
            const size_t k = rng() % owned;
            const int64_t mine = int64_t(1000 * (t + 1) + k);
            bool found = false;
            c.get(&mine, 1, 1, out.data(), &found, false);
            ++my_gets;
            if (counter[k] > 0 && (!found || out[0] != float(counter[k]) || out[state_size - 1] != float(counter[k])))
                failed = true;
            ++counter[k];
            std::fill(row.begin(), row.end(), float(counter[k]));
            c.put(&mine, row.data(), 1, 1);

            const int64_t key = int64_t(rng() % shared);
            const int64_t version = int64_t(1 + rng() % 2);
            if (rng() % 2) {
                for (size_t j = 0; j < state_size; ++j) row[j] = float(key * 100 + version * 10) + float(t);
                row[0] = float(key);
                row[1] = float(version);
                c.put(&key, row.data(), 1, version);
            } else if (rng() % 8 == 0) {
                c.erase(&key, 1);
            } else {
                c.get(&key, 1, version, out.data(), &found, false);
                ++my_gets;
                if (found) {
                    const float base = out[2];
                    bool ok = out[0] == float(key) && out[1] == float(version);
                    for (size_t j = 3; j < state_size; ++j) ok = ok && out[j] == base;
                    if (!ok) failed = true;
                }
            }
            if (t == 0 && rng() % 500 == 0) c.save(g_tmpdir + "/threads.snap");
        }
        for (size_t k = 0; k < owned; ++k) {  // final values equal the last counter written
            const int64_t mine = int64_t(1000 * (t + 1) + k);
            bool found = false;
            c.get(&mine, 1, 1, out.data(), &found, false);
            ++my_gets;
            if (counter[k] > 0 && (!found || out[0] != float(counter[k]))) failed = true;
        }
        gets_done += my_gets;
    };
    std::vector<std::thread> pool;
    for (size_t t = 0; t < threads; ++t) pool.emplace_back(worker, t);
    for (auto& th : pool) th.join();
    CHECK(!failed);
    const CacheStats s = c.stats();
    CHECK(s.hits + s.misses == gets_done.load() && s.evictions == 0);
    CHECK(StateCache::load(g_tmpdir + "/threads.snap")->size() > 0);

    // Eviction pressure: many threads, a cache far too small; rows must stay self-consistent, bytes bounded.
    StateCache tiny(32, 32 * 1024, Dtype::Float16, 2);
    std::vector<std::thread> churn;
    for (size_t t = 0; t < threads; ++t) {
        churn.emplace_back([&, t] {
            std::mt19937_64 rng(100 + t);
            std::vector<int64_t> ids(16);
            std::vector<float> rows(16 * 32), out(16 * 32);
            std::vector<char> found(16);
            for (int it = 0; it < 3000 && !failed; ++it) {
                for (size_t i = 0; i < ids.size(); ++i) {
                    ids[i] = int64_t(rng() % 2000);
                    std::fill(rows.begin() + i * 32, rows.begin() + (i + 1) * 32, float(ids[i] % 1024));
                }
                if (it % 2) tiny.put(ids.data(), rows.data(), ids.size(), 1);
                else tiny.get(ids.data(), ids.size(), 1, out.data(), reinterpret_cast<bool*>(found.data()), true);
                for (size_t i = 0; i < ids.size() && it % 2 == 0; ++i)
                    if (found[i] && out[i * 32] != float(ids[i] % 1024)) failed = true;
            }
        });
    }
    for (auto& th : churn) th.join();
    CHECK(!failed);
    CHECK(tiny.stats().bytes <= 32 * 1024 && tiny.stats().evictions > 0);
}

}  // namespace

int main() {
    char tmpl[] = "/tmp/t2arec_cache_test.XXXXXX";
    CHECK(mkdtemp(tmpl) != nullptr);
    g_tmpdir = tmpl;
    const std::pair<const char*, std::function<void()>> tests[] = {
        {"half_conversion", test_half_conversion},
        {"row_kernels", test_row_kernels},
        {"checksum", test_checksum},
        {"shard_against_model", test_shard_against_model},
        {"round_trip_and_versions", test_round_trip_and_versions},
        {"lru_and_budget", test_lru_and_budget},
        {"bad_input_changes_nothing", test_bad_input_changes_nothing},
        {"duplicates_delete_clear_keys", test_duplicates_delete_clear_keys},
        {"snapshots", test_snapshots},
        {"threads", test_threads},
    };
    for (const auto& [name, fn] : tests) {
        fn();
        std::printf("ok   %s\n", name);
    }
    std::system(("rm -rf '" + g_tmpdir + "'").c_str());
    std::printf("all %zu C++ state-cache tests passed\n", sizeof tests / sizeof tests[0]);
    return 0;
}

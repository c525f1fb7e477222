#include "state_cache.h"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "half.h"
#include "row_kernels.h"
#include "shard.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "t2arec state cache: snapshots and the checksum assume a little-endian host"
#endif

namespace t2arec {
namespace {

constexpr size_t kAutoShardCandidates[] = {16, 8, 4, 2};
constexpr size_t kMinAutoEntriesPerShard = 64;  // below this, fewer shards keep LRU order closer to global
constexpr size_t kMaxStateSize = size_t{1} << 28;
constexpr uint32_t kMaxFiniteFloatBits = 0x7F7FFFFFu;
// new[] of an over-aligned type with a destructor stores the element count in front of the array, padded to the
// alignment; counted so that stats().bytes stays an upper bound of what the cache really holds.
constexpr size_t kArrayCookieBytes = alignof(GuardedShard);

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
    char buf[512];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, args);
    va_end(args);
    return buf;
}

size_t fixed_bytes(size_t shards) {
    return sizeof(StateCache) + kArrayCookieBytes + shards * sizeof(GuardedShard);
}

// Slots each of `shards` shards can hold within capacity (0 when not even the bookkeeping fits).
size_t slots_per_shard(size_t row_bytes, int64_t capacity, size_t shards) {
    const size_t cap = static_cast<size_t>(capacity);
    if (cap <= fixed_bytes(shards)) return 0;
    return Shard::max_slots_for_budget(row_bytes, (cap - fixed_bytes(shards)) / shards);
}

struct ShardLock {
    explicit ShardLock(const GuardedShard& s) : lock(s.mutex) {}
    std::lock_guard<std::mutex> lock;
};

}  // namespace

const char* dtype_name(Dtype dtype) { return dtype == Dtype::Float16 ? "float16" : "float32"; }

size_t dtype_bytes(Dtype dtype) { return dtype == Dtype::Float16 ? 2 : 4; }

Dtype parse_dtype(const std::string& name) {
    if (name == "float32" || name == "fp32") return Dtype::Float32;
    if (name == "float16" || name == "fp16" || name == "half") return Dtype::Float16;
    throw InvalidArgument("dtype must be \"float32\" or \"float16\", got \"" + name + "\"");
}

// ---- construction -------------------------------------------------------------------------------------------

size_t StateCache::min_capacity_bytes(size_t state_size, Dtype dtype) {
    return fixed_bytes(1) + Shard::bytes_for_slots(state_size * dtype_bytes(dtype), 1);
}

StateCache::StateCache(size_t state_size, int64_t capacity_bytes, Dtype dtype, size_t shards)
    : state_size_(state_size), dtype_(dtype), row_bytes_(state_size * dtype_bytes(dtype)),
      capacity_bytes_(capacity_bytes) {
    if (state_size == 0 || state_size > kMaxStateSize)
        throw InvalidArgument(format("state_size must be in [1, %zu], got %zu", kMaxStateSize, state_size));
    if (capacity_bytes < 0)
        throw InvalidArgument(format("capacity_bytes must be >= 0, got %lld", (long long)capacity_bytes));
    if (slots_per_shard(row_bytes_, capacity_bytes, 1) == 0)
        throw InvalidArgument(format(
            "capacity_bytes=%lld is smaller than one entry: state_size=%zu stored as %s needs at least %zu bytes",
            (long long)capacity_bytes, state_size, dtype_name(dtype), min_capacity_bytes(state_size, dtype)));

    if (shards == kAutoShards) {
        num_shards_ = 1;
        for (size_t candidate : kAutoShardCandidates) {
            if (slots_per_shard(row_bytes_, capacity_bytes, candidate) >= kMinAutoEntriesPerShard) {
                num_shards_ = candidate;
                break;
            }
        }
    } else {
        if (shards > kMaxShards)
            throw InvalidArgument(format("shards must be in [1, %zu], got %zu", kMaxShards, shards));
        if (slots_per_shard(row_bytes_, capacity_bytes, shards) == 0)
            throw InvalidArgument(format(
                "capacity_bytes=%lld leaves no room for one entry per shard with shards=%zu "
                "(state_size=%zu, %s): raise the capacity or pass fewer shards (or shards=None for automatic)",
                (long long)capacity_bytes, shards, state_size, dtype_name(dtype)));
        num_shards_ = shards;
    }

    const size_t slots = slots_per_shard(row_bytes_, capacity_bytes, num_shards_);
    shards_.reset(new GuardedShard[num_shards_]);
    for (size_t s = 0; s < num_shards_; ++s) shards_[s].shard.configure(row_bytes_, slots);
}

StateCache::~StateCache() = default;

size_t StateCache::max_entries() const { return num_shards_ * shards_[0].shard.max_slots(); }

// ---- batches: group rows by shard so that each shard is locked once per call --------------------------------

struct StateCache::BatchPlan {
    std::vector<uint64_t> hashes;  // per row
    std::vector<uint32_t> order;   // row numbers, grouped by shard, ascending within a shard
    std::vector<uint32_t> starts;  // shard s owns order[starts[s] .. starts[s + 1])
};

size_t StateCache::shard_index(uint64_t hash) const {
    // Multiply-shift maps the high 32 hash bits onto [0, shards) without a division.
    return static_cast<size_t>(((hash >> 32) * static_cast<uint64_t>(num_shards_)) >> 32);
}

GuardedShard& StateCache::shard_for(uint64_t hash) const { return shards_[shard_index(hash)]; }

void StateCache::plan_batch(const int64_t* user_ids, size_t n, BatchPlan& plan) const {
    if (n >= UINT32_MAX) throw InvalidArgument(format("a batch holds at most %u rows, got %zu", UINT32_MAX - 1, n));
    plan.hashes.resize(n);
    plan.order.resize(n);
    plan.starts.assign(num_shards_ + 1, 0);
    for (size_t i = 0; i < n; ++i) {
        plan.hashes[i] = hash_user_id(user_ids[i]);
        ++plan.starts[shard_index(plan.hashes[i]) + 1];
    }
    for (size_t s = 0; s < num_shards_; ++s) plan.starts[s + 1] += plan.starts[s];
    std::vector<uint32_t> cursor(plan.starts.begin(), plan.starts.end() - 1);
    // A stable counting sort: rows keep their batch order within a shard, so the last duplicate id wins.
    for (size_t i = 0; i < n; ++i) plan.order[cursor[shard_index(plan.hashes[i])]++] = static_cast<uint32_t>(i);
}

// Concurrent batches start their sweep at different shards, so two threads rarely queue on the same lock.
size_t StateCache::first_shard_to_visit() const {
    return rotor_.fetch_add(1, std::memory_order_relaxed) % num_shards_;
}

// Calls f(shard, counters, row, hash) for every row of the batch, visiting each shard that owns rows once and
// holding its lock meanwhile.
template <class F>
void StateCache::visit_by_shard(const BatchPlan& plan, F&& f) const {
    const size_t first = first_shard_to_visit();
    for (size_t k = 0; k < num_shards_; ++k) {
        const size_t s = (first + k) % num_shards_;
        const uint32_t* begin = plan.order.data() + plan.starts[s];
        const uint32_t* end = plan.order.data() + plan.starts[s + 1];
        if (begin == end) continue;
        GuardedShard& g = shards_[s];
        ShardLock lock(g);
        for (const uint32_t* it = begin; it != end; ++it) f(g.shard, g.counters, *it, plan.hashes[*it]);
    }
}

void StateCache::check_states(const int64_t* user_ids, const float* states, size_t n) const {
    const uint32_t limit = dtype_ == Dtype::Float16 ? kHalfMaxAsFloatBits : kMaxFiniteFloatBits;
    for (size_t i = 0; i < n; ++i) {
        const float* row = states + i * state_size_;
        if (!any_abs_above(row, state_size_, limit)) continue;
        size_t j = 0;
        while ((float_bits(row[j]) & 0x7FFFFFFFu) <= limit) ++j;
        const float v = row[j];
        const std::string what = std::isnan(v)   ? "is NaN"
                                 : std::isinf(v) ? "is infinite"
                                                 : format("= %g is outside the float16 range (|x| <= 65504)", v);
        throw InvalidArgument(format("states[%zu, %zu] (user id %lld) %s: the whole batch of %zu rows was refused, "
                                     "nothing was stored",
                                     i, j, (long long)user_ids[i], what.c_str(), n));
    }
}

void StateCache::write_row(unsigned char* dst, const float* src) const {
    if (dtype_ == Dtype::Float16) floats_to_halves(src, reinterpret_cast<uint16_t*>(dst), state_size_);
    else std::memcpy(dst, src, row_bytes_);
}

void StateCache::read_row(float* dst, const unsigned char* src) const {
    if (dtype_ == Dtype::Float16) halves_to_floats(reinterpret_cast<const uint16_t*>(src), dst, state_size_);
    else std::memcpy(dst, src, row_bytes_);
}

void StateCache::put(const int64_t* user_ids, const float* states, size_t n, int64_t version) {
    if (n == 0) return;
    check_states(user_ids, states, n);  // before any write: a bad row refuses the whole batch
    BatchPlan plan;
    plan_batch(user_ids, n, plan);
    visit_by_shard(plan, [&](Shard& shard, ShardCounters& counters, size_t i, uint64_t hash) {
        uint32_t slot = shard.find(user_ids[i], hash);
        if (slot == Shard::kNone) {
            bool evicted = false;
            slot = shard.insert(user_ids[i], hash, version, &evicted);
            counters.evictions += evicted;
        } else {
            shard.meta(slot).version = version;
            shard.touch(slot);
        }
        write_row(shard.row(slot), states + i * state_size_);
        ++counters.puts;
    });
}

size_t StateCache::get(const int64_t* user_ids, size_t n, int64_t version, float* out, bool* found,
                       bool zero_misses) {
    if (n == 0) return 0;
    BatchPlan plan;
    plan_batch(user_ids, n, plan);
    size_t hits = 0;
    visit_by_shard(plan, [&](Shard& shard, ShardCounters& counters, size_t i, uint64_t hash) {
        const uint32_t slot = shard.find(user_ids[i], hash);
        const bool hit = slot != Shard::kNone && shard.meta(slot).version == version;
        found[i] = hit;
        if (hit) {
            shard.touch(slot);
            read_row(out + i * state_size_, shard.row(slot));
            ++counters.hits;
            ++hits;
        } else {
            ++counters.misses;
            counters.stale += slot != Shard::kNone;
        }
    });
    if (zero_misses && hits < n) {  // outside the locks: only the caller's buffer is touched
        for (size_t i = 0; i < n; ++i)
            if (!found[i]) std::memset(out + i * state_size_, 0, state_size_ * sizeof(float));
    }
    return hits;
}

size_t StateCache::erase(const int64_t* user_ids, size_t n) {
    if (n == 0) return 0;
    BatchPlan plan;
    plan_batch(user_ids, n, plan);
    size_t erased = 0;
    visit_by_shard(plan, [&](Shard& shard, ShardCounters&, size_t i, uint64_t hash) {
        erased += shard.erase(user_ids[i], hash);
    });
    return erased;
}

void StateCache::clear() {
    for (size_t s = 0; s < num_shards_; ++s) {
        ShardLock lock(shards_[s]);
        shards_[s].shard.clear();
    }
}

// ---- queries ------------------------------------------------------------------------------------------------

bool StateCache::contains(int64_t user_id) const {
    const uint64_t hash = hash_user_id(user_id);
    const GuardedShard& g = shard_for(hash);
    ShardLock lock(g);
    return g.shard.find(user_id, hash) != Shard::kNone;
}

size_t StateCache::size() const {
    size_t total = 0;
    for (size_t s = 0; s < num_shards_; ++s) {
        ShardLock lock(shards_[s]);
        total += shards_[s].shard.size();
    }
    return total;
}

std::vector<int64_t> StateCache::keys() const {
    std::vector<int64_t> out;
    for (size_t s = 0; s < num_shards_; ++s) {
        ShardLock lock(shards_[s]);
        out.reserve(out.size() + shards_[s].shard.size());
        shards_[s].shard.for_each_lru_first([&](const SlotMeta& m, const unsigned char*) { out.push_back(m.key); });
    }
    return out;
}

CacheStats StateCache::stats() const {
    CacheStats st;
    st.bytes = fixed_bytes(num_shards_);
    st.max_entries = max_entries();
    for (size_t s = 0; s < num_shards_; ++s) {
        ShardLock lock(shards_[s]);
        const ShardCounters& c = shards_[s].counters;
        st.hits += c.hits;
        st.misses += c.misses;
        st.stale += c.stale;
        st.evictions += c.evictions;
        st.puts += c.puts;
        st.entries += shards_[s].shard.size();
        st.bytes += shards_[s].shard.allocated_bytes();
    }
    return st;
}

// ---- helpers for load() ---------------------------------------------------------------------------------------

void StateCache::insert_stored_row(int64_t user_id, int64_t version, const unsigned char* row) {
    const uint64_t hash = hash_user_id(user_id);
    GuardedShard& g = shard_for(hash);
    ShardLock lock(g);
    uint32_t slot = g.shard.find(user_id, hash);
    if (slot == Shard::kNone) {
        bool evicted = false;
        slot = g.shard.insert(user_id, hash, version, &evicted);
        g.counters.evictions += evicted;
    } else {
        g.shard.meta(slot).version = version;
        g.shard.touch(slot);
    }
    std::memcpy(g.shard.row(slot), row, row_bytes_);
}

void StateCache::reset_access_counters() {
    for (size_t s = 0; s < num_shards_; ++s) {
        ShardLock lock(shards_[s]);
        ShardCounters& c = shards_[s].counters;
        c.hits = c.misses = c.stale = c.puts = 0;  // evictions made while loading stay visible
    }
}

}  // namespace t2arec

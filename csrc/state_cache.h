// t2arec::StateCache — a thread-safe, byte-budgeted LRU cache of fixed-size float vectors keyed by int64 user id,
// each tagged with the int64 model version that wrote it. It knows nothing of models or of Python: serving packs
// a user's recurrent state into state_size floats, the cache stores and returns them.
//
// Contract (the Python face in t2arec_fast/cache.py and docs/state_cache.md repeat it):
//   * put/get/erase work on batches; rows are state_size contiguous float32 values.
//   * An entry written under another version counts as a miss on get (and as "stale" in the counters).
//   * A put is validated completely before anything is written: a non-finite value (or, in float16 mode, a
//     value outside +-65504) refuses the whole batch. Duplicate ids in one put: the last row wins.
//   * Memory: everything the cache allocates counts against capacity_bytes (payload, slot metadata, index,
//     bookkeeping); when a shard is full its least recently used entry is evicted. get() hits refresh recency.
//   * Sharding: a user id hashes to one of `shards` shards, each with its own mutex, budget and LRU list, so
//     LRU order is exact within a shard and approximate across shards.
//   * Snapshots: save() writes atomically (temporary file + fsync + rename); load() verifies everything and
//     throws SnapshotError on a truncated, corrupted or mismatched file.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace t2arec {

enum class Dtype : uint32_t { Float32 = 0, Float16 = 1 };

const char* dtype_name(Dtype dtype);
size_t dtype_bytes(Dtype dtype);
Dtype parse_dtype(const std::string& name);  // "float32" | "float16" (also "fp32"/"fp16"/"half")

// Bad arguments or bad data passed in by the caller (Python: ValueError). Nothing was changed.
struct InvalidArgument : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// A snapshot file that cannot be used: not a snapshot, truncated, corrupted, other format/state_size/dtype.
struct SnapshotError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// An operating-system error while reading or writing `path` (Python: OSError with errno and filename).
struct IoError : std::runtime_error {
    IoError(int error_code, std::string path, std::string doing, const std::string& reason)
        : std::runtime_error(doing + " " + path + ": " + reason), error_code(error_code), path(std::move(path)),
          doing(std::move(doing)), reason(reason) {}
    int error_code;
    std::string path;
    std::string doing;   // e.g. "cannot open"
    std::string reason;  // strerror text
};

struct CacheStats {
    uint64_t hits = 0;
    uint64_t misses = 0;  // absent + stale
    uint64_t stale = 0;   // present under another model version
    uint64_t evictions = 0;
    uint64_t puts = 0;        // rows stored
    uint64_t entries = 0;
    uint64_t max_entries = 0;
    uint64_t bytes = 0;  // allocated now, all overhead included; never above capacity_bytes
};

struct SnapshotHeader {
    uint32_t format_version = 0;
    Dtype dtype = Dtype::Float32;
    uint64_t state_size = 0;
    uint64_t entry_count = 0;
    uint64_t capacity_bytes = 0;  // of the cache that wrote it
    uint32_t shards = 0;
    int64_t min_version = 0;  // over the stored entries (0 when empty)
    int64_t max_version = 0;
    uint64_t file_bytes = 0;
};

struct LoadOptions {
    int64_t capacity_bytes = -1;     // < 0: the capacity recorded in the snapshot
    size_t shards = 0;               // 0: the snapshot's shard count (or automatic if capacity changes)
    size_t expected_state_size = 0;  // 0: accept any
    int expected_dtype = -1;         // < 0: accept any; else a Dtype value
};

struct GuardedShard;  // shard.h

class StateCache {
public:
    static constexpr uint32_t kFormatVersion = 1;
    static constexpr size_t kAutoShards = 0;
    static constexpr size_t kMaxShards = 4096;

    // Throws InvalidArgument for state_size 0, negative capacity, a capacity too small for one entry, or a
    // shard count that leaves a shard without room for one entry.
    StateCache(size_t state_size, int64_t capacity_bytes, Dtype dtype, size_t shards = kAutoShards);
    ~StateCache();
    StateCache(const StateCache&) = delete;
    StateCache& operator=(const StateCache&) = delete;

    // Smallest capacity_bytes that holds one entry (with one shard).
    static size_t min_capacity_bytes(size_t state_size, Dtype dtype);

    // states: n rows of state_size floats. Refuses the whole batch (InvalidArgument) on a bad value.
    void put(const int64_t* user_ids, const float* states, size_t n, int64_t version);
    // Fills out rows of hits and sets found[i]; miss rows are zeroed when zero_misses, else left untouched.
    // Returns the number of hits.
    size_t get(const int64_t* user_ids, size_t n, int64_t version, float* out, bool* found, bool zero_misses);
    size_t erase(const int64_t* user_ids, size_t n);  // returns how many were present
    void clear();                                     // drops all entries; counters are kept

    bool contains(int64_t user_id) const;  // any version; does not touch recency or counters
    size_t size() const;
    std::vector<int64_t> keys() const;  // shard by shard, least recently used first within a shard
    CacheStats stats() const;

    void save(const std::string& path) const;
    static std::unique_ptr<StateCache> load(const std::string& path, const LoadOptions& options = {});
    static SnapshotHeader read_snapshot_header(const std::string& path);

    size_t state_size() const { return state_size_; }
    Dtype dtype() const { return dtype_; }
    int64_t capacity_bytes() const { return capacity_bytes_; }
    size_t shards() const { return num_shards_; }
    size_t max_entries() const;
    size_t row_bytes() const { return row_bytes_; }  // stored payload bytes per entry

private:
    struct BatchPlan;

    GuardedShard& shard_for(uint64_t hash) const;
    size_t shard_index(uint64_t hash) const;
    void plan_batch(const int64_t* user_ids, size_t n, BatchPlan& plan) const;
    size_t first_shard_to_visit() const;
    template <class F>
    void visit_by_shard(const BatchPlan& plan, F&& f) const;
    void check_states(const int64_t* user_ids, const float* states, size_t n) const;
    void write_row(unsigned char* dst, const float* src) const;
    void read_row(float* dst, const unsigned char* src) const;
    void insert_stored_row(int64_t user_id, int64_t version, const unsigned char* row);  // used by load()
    void reset_access_counters();

    size_t state_size_;
    Dtype dtype_;
    size_t row_bytes_;
    int64_t capacity_bytes_;
    size_t num_shards_;
    std::unique_ptr<GuardedShard[]> shards_;
    mutable std::atomic<size_t> rotor_{0};  // spreads where concurrent batches start their sweep over shards
};

}  // namespace t2arec

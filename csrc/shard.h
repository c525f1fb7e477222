// One shard of the state cache: a slab of fixed-size slots, an open-addressing index from user id to slot, and an
// intrusive LRU list threaded through the slots. A Shard is NOT thread-safe by itself: StateCache wraps each one
// in a GuardedShard and holds its mutex around every call.
//
// Memory layout (see docs/state_cache.md for the numbers):
//   index   : power-of-two array of 8-byte buckets {slot, low 32 bits of the key hash}, load factor <= 3/4,
//             allocated once for the shard's maximum slot count (it is small next to the payload).
//   slots   : allocated lazily in 64-byte-aligned chunks of up to ~1 MiB; a chunk holds its slots' metadata
//             (24 bytes each) followed by their payload rows, so a 10 kB state costs 10 kB + ~35 bytes.
// Every byte the shard allocates is counted by allocated_bytes(), and configure() picks the largest slot count
// whose fully-grown footprint fits the shard's budget, so the cache never exceeds capacity_bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

namespace t2arec {

// Mixes a user id into a well-spread 64-bit hash (ids are often small consecutive integers). The high 32 bits
// choose the shard, the low 32 bits the index bucket, so the two choices are independent.
inline uint64_t hash_user_id(int64_t key) {
    uint64_t x = static_cast<uint64_t>(key) + 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

struct SlotMeta {
    int64_t key;
    int64_t version;
    uint32_t prev;  // towards the most recently used end
    uint32_t next;  // towards the least recently used end; also links the free list
};

class Shard {
public:
    static constexpr uint32_t kNone = UINT32_MAX;

    Shard() = default;
    Shard(const Shard&) = delete;
    Shard& operator=(const Shard&) = delete;

    // Layout arithmetic, shared with StateCache's capacity checks.
    static size_t row_stride(size_t row_bytes);
    static size_t bytes_for_slots(size_t row_bytes, size_t slots);
    static size_t max_slots_for_budget(size_t row_bytes, size_t budget_bytes);

    // Sets the row size and the slot budget (allocates the index). Call once, before any other method.
    void configure(size_t row_bytes, size_t max_slots);

    uint32_t find(int64_t key, uint64_t hash) const;
    // Inserts a key that is not present, at the most recently used end. Reuses a free slot, grows the slab, or
    // evicts the least recently used entry (then *evicted is set). The payload row is left for the caller.
    uint32_t insert(int64_t key, uint64_t hash, int64_t version, bool* evicted);
    bool erase(int64_t key, uint64_t hash);
    void touch(uint32_t slot);  // mark as most recently used
    void clear();               // drops every entry and frees the slab; the index stays allocated

    SlotMeta& meta(uint32_t slot) { return chunks_[slot >> chunk_shift_].meta[slot & chunk_mask_]; }
    const SlotMeta& meta(uint32_t slot) const { return chunks_[slot >> chunk_shift_].meta[slot & chunk_mask_]; }
    unsigned char* row(uint32_t slot) {
        return chunks_[slot >> chunk_shift_].rows + (slot & chunk_mask_) * stride_;
    }
    const unsigned char* row(uint32_t slot) const {
        return chunks_[slot >> chunk_shift_].rows + (slot & chunk_mask_) * stride_;
    }

    size_t size() const { return live_; }
    size_t max_slots() const { return max_slots_; }
    size_t allocated_bytes() const;

    // Visits entries from least to most recently used: f(const SlotMeta&, const unsigned char* row).
    template <class F>
    void for_each_lru_first(F&& f) const {
        for (uint32_t s = lru_tail_; s != kNone; s = meta(s).prev) f(meta(s), row(s));
    }

private:
    struct Bucket {
        uint32_t slot;
        uint32_t hash_low;
    };
    struct FreeBytes {
        void operator()(unsigned char* p) const { std::free(p); }
    };
    struct Chunk {
        std::unique_ptr<unsigned char, FreeBytes> memory;
        size_t bytes;
        SlotMeta* meta;
        unsigned char* rows;
    };

    static size_t index_buckets(size_t slots);
    static size_t slots_per_chunk(size_t stride);
    static size_t chunk_bytes(size_t stride, size_t slots);

    uint32_t acquire_slot(bool* evicted);
    void add_chunk();
    void link_front(uint32_t slot);
    void unlink(uint32_t slot);
    size_t bucket_of(int64_t key, uint64_t hash) const;  // position of key in the index, or SIZE_MAX
    void erase_bucket(size_t pos);

    size_t stride_ = 0;
    size_t max_slots_ = 0;
    unsigned chunk_shift_ = 0;
    uint32_t chunk_mask_ = 0;
    std::vector<Bucket> index_;
    size_t index_mask_ = 0;
    std::vector<Chunk> chunks_;  // reserved up front, so never reallocated
    size_t slab_bytes_ = 0;      // sum of chunk sizes
    uint32_t slots_in_chunks_ = 0;
    uint32_t next_unused_ = 0;  // slots [0, next_unused_) have been handed out at least once
    uint32_t free_head_ = kNone;
    uint32_t lru_head_ = kNone;  // most recently used
    uint32_t lru_tail_ = kNone;  // least recently used, next to be evicted
    size_t live_ = 0;
};

struct ShardCounters {
    uint64_t hits = 0;
    uint64_t misses = 0;  // includes stale
    uint64_t stale = 0;   // present, but written under another model version
    uint64_t evictions = 0;
    uint64_t puts = 0;
};

// A shard with its lock and counters, on its own cache lines so shards do not false-share.
struct alignas(64) GuardedShard {
    mutable std::mutex mutex;
    Shard shard;
    ShardCounters counters;
};

}  // namespace t2arec

#include "shard.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <stdexcept>

namespace t2arec {
namespace {

constexpr size_t kRowAlign = 16;               // row start alignment: lets vector loads/stores stay aligned
constexpr size_t kChunkAlign = 64;             // a cache line
constexpr size_t kChunkTargetBytes = 1 << 20;  // big enough to amortise malloc, small enough to grow gently
constexpr size_t kMaxSlotsPerShard = size_t{1} << 31;  // slot ids are uint32 with kNone reserved

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

size_t floor_pow2(size_t x) {
    size_t p = 1;
    while (p * 2 <= x) p *= 2;
    return p;
}

size_t ceil_pow2(size_t x) {
    size_t p = 1;
    while (p < x) p *= 2;
    return p;
}

unsigned log2_exact(size_t pow2) {
    unsigned s = 0;
    while ((size_t{1} << s) < pow2) ++s;
    return s;
}

}  // namespace

// ---- layout arithmetic -------------------------------------------------------------------------------------

size_t Shard::row_stride(size_t row_bytes) { return align_up(row_bytes, kRowAlign); }

size_t Shard::index_buckets(size_t slots) {
    // Load factor at most 3/4 when full, and always at least one empty bucket so that probes terminate.
    return ceil_pow2((slots * 4 + 2) / 3 + 1);
}

size_t Shard::slots_per_chunk(size_t stride) {
    return floor_pow2(kChunkTargetBytes / stride > 0 ? kChunkTargetBytes / stride : 1);
}

size_t Shard::chunk_bytes(size_t stride, size_t slots) {
    if (slots == 0) return 0;
    return align_up(align_up(slots * sizeof(SlotMeta), kChunkAlign) + slots * stride, kChunkAlign);
}

size_t Shard::bytes_for_slots(size_t row_bytes, size_t slots) {
    const size_t stride = row_stride(row_bytes);
    const size_t per_chunk = slots_per_chunk(stride);
    const size_t full_chunks = slots / per_chunk;
    const size_t rest = slots % per_chunk;
    const size_t n_chunks = full_chunks + (rest ? 1 : 0);
    return index_buckets(slots) * sizeof(Bucket) + n_chunks * sizeof(Chunk) +
           full_chunks * chunk_bytes(stride, per_chunk) + chunk_bytes(stride, rest);
}

size_t Shard::max_slots_for_budget(size_t row_bytes, size_t budget_bytes) {
    // bytes_for_slots grows with the slot count, so binary-search the largest count that fits.
    size_t lo = 0;
    size_t hi = budget_bytes / row_stride(row_bytes);
    if (hi > kMaxSlotsPerShard) hi = kMaxSlotsPerShard;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo + 1) / 2;
        if (bytes_for_slots(row_bytes, mid) <= budget_bytes) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

size_t Shard::allocated_bytes() const {
    return index_.capacity() * sizeof(Bucket) + chunks_.capacity() * sizeof(Chunk) + slab_bytes_;
}

// ---- set-up and slab growth ---------------------------------------------------------------------------------

void Shard::configure(size_t row_bytes, size_t max_slots) {
    stride_ = row_stride(row_bytes);
    max_slots_ = max_slots;
    const size_t per_chunk = slots_per_chunk(stride_);
    chunk_shift_ = log2_exact(per_chunk);
    chunk_mask_ = static_cast<uint32_t>(per_chunk - 1);
    const size_t buckets = index_buckets(max_slots);
    index_.assign(buckets, Bucket{kNone, 0});
    index_.shrink_to_fit();
    index_mask_ = buckets - 1;
    chunks_.reserve((max_slots + per_chunk - 1) / per_chunk);
}

void Shard::add_chunk() {
    // The last chunk is cut to the slots that remain, so a fully grown shard matches bytes_for_slots exactly.
    const size_t per_chunk = size_t{1} << chunk_shift_;
    const size_t slots = std::min(per_chunk, max_slots_ - slots_in_chunks_);
    const size_t bytes = chunk_bytes(stride_, slots);
    auto* memory = static_cast<unsigned char*>(std::aligned_alloc(kChunkAlign, bytes));
    if (memory == nullptr) throw std::bad_alloc();
    Chunk chunk{std::unique_ptr<unsigned char, FreeBytes>(memory), bytes, reinterpret_cast<SlotMeta*>(memory),
                memory + align_up(slots * sizeof(SlotMeta), kChunkAlign)};
    chunks_.push_back(std::move(chunk));  // capacity was reserved: no reallocation, no exception
    slab_bytes_ += bytes;
    slots_in_chunks_ += static_cast<uint32_t>(slots);
}

uint32_t Shard::acquire_slot(bool* evicted) {
    if (free_head_ != kNone) {  // a slot freed by erase()
        const uint32_t slot = free_head_;
        free_head_ = meta(slot).next;
        return slot;
    }
    if (next_unused_ < max_slots_) {  // grow the slab
        if (next_unused_ == slots_in_chunks_) add_chunk();
        return next_unused_++;
    }
    // Full: recycle the least recently used slot.
    if (lru_tail_ == kNone) throw std::logic_error("Shard::insert on a shard configured with no slots");
    const uint32_t victim = lru_tail_;
    const SlotMeta& m = meta(victim);
    erase_bucket(bucket_of(m.key, hash_user_id(m.key)));
    unlink(victim);
    --live_;
    *evicted = true;
    return victim;
}

// ---- LRU list ----------------------------------------------------------------------------------------------

void Shard::link_front(uint32_t slot) {
    SlotMeta& m = meta(slot);
    m.prev = kNone;
    m.next = lru_head_;
    if (lru_head_ != kNone) meta(lru_head_).prev = slot;
    lru_head_ = slot;
    if (lru_tail_ == kNone) lru_tail_ = slot;
}

void Shard::unlink(uint32_t slot) {
    SlotMeta& m = meta(slot);
    if (m.prev != kNone) meta(m.prev).next = m.next;
    else lru_head_ = m.next;
    if (m.next != kNone) meta(m.next).prev = m.prev;
    else lru_tail_ = m.prev;
}

void Shard::touch(uint32_t slot) {
    if (slot == lru_head_) return;
    unlink(slot);
    link_front(slot);
}

// ---- index (linear probing, backward-shift deletion: no tombstones) ----------------------------------------

size_t Shard::bucket_of(int64_t key, uint64_t hash) const {
    const uint32_t low = static_cast<uint32_t>(hash);
    for (size_t pos = low & index_mask_;; pos = (pos + 1) & index_mask_) {
        const Bucket& b = index_[pos];
        if (b.slot == kNone) return SIZE_MAX;
        if (b.hash_low == low && meta(b.slot).key == key) return pos;
    }
}

uint32_t Shard::find(int64_t key, uint64_t hash) const {
    const size_t pos = bucket_of(key, hash);
    return pos == SIZE_MAX ? kNone : index_[pos].slot;
}

void Shard::erase_bucket(size_t hole) {
    // Pull later members of the probe run back into the hole when the hole lies between their home bucket and
    // their current bucket; otherwise lookups that start at their home would stop early at an empty bucket.
    for (size_t pos = (hole + 1) & index_mask_; index_[pos].slot != kNone; pos = (pos + 1) & index_mask_) {
        const size_t home = index_[pos].hash_low & index_mask_;
        const size_t dist_from_home = (pos - home) & index_mask_;
        const size_t dist_from_hole = (pos - hole) & index_mask_;
        if (dist_from_home >= dist_from_hole) {
            index_[hole] = index_[pos];
            hole = pos;
        }
    }
    index_[hole] = Bucket{kNone, 0};
}

uint32_t Shard::insert(int64_t key, uint64_t hash, int64_t version, bool* evicted) {
    const uint32_t slot = acquire_slot(evicted);
    SlotMeta& m = meta(slot);
    m.key = key;
    m.version = version;
    link_front(slot);
    ++live_;
    const uint32_t low = static_cast<uint32_t>(hash);
    size_t pos = low & index_mask_;
    while (index_[pos].slot != kNone) pos = (pos + 1) & index_mask_;
    index_[pos] = Bucket{slot, low};
    return slot;
}

bool Shard::erase(int64_t key, uint64_t hash) {
    const size_t pos = bucket_of(key, hash);
    if (pos == SIZE_MAX) return false;
    const uint32_t slot = index_[pos].slot;
    erase_bucket(pos);
    unlink(slot);
    meta(slot).next = free_head_;
    free_head_ = slot;
    --live_;
    return true;
}

void Shard::clear() {
    std::fill(index_.begin(), index_.end(), Bucket{kNone, 0});
    chunks_.clear();  // frees the slab; capacity (the reserved chunk table) is kept and still counted
    slab_bytes_ = 0;
    slots_in_chunks_ = 0;
    next_unused_ = 0;
    free_head_ = kNone;
    lru_head_ = lru_tail_ = kNone;
    live_ = 0;
}

}  // namespace t2arec

#include "checksum.h"

#include <cstring>

namespace t2arec {
namespace {

// Odd constants (odd, so multiplication by them is invertible modulo 2^64), drawn at random once.
constexpr uint64_t kMulA = 0x821d291e76ee0df1ULL;
constexpr uint64_t kMulB = 0x92256d997dba809dULL;
constexpr uint64_t kMulC = 0x1c5d5a5cd5a4db51ULL;
constexpr uint64_t kAddD = 0xa0a568e42262e09dULL;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

inline uint64_t load64(const unsigned char* p) {
    uint64_t w;
    std::memcpy(&w, p, sizeof w);  // snapshots are little-endian; state_cache.cpp refuses big-endian builds
    return w;
}

// One lane step: bijective in `acc` for a fixed word and bijective in `word` for a fixed acc.
inline uint64_t lane_step(uint64_t acc, uint64_t word) { return rotl(acc ^ (word * kMulA), 29) * kMulB; }

// Final avalanche (xor-shift / multiply rounds are each invertible).
inline uint64_t avalanche(uint64_t x) {
    x ^= x >> 31;
    x *= kMulC;
    x ^= x >> 29;
    x *= kMulA;
    x ^= x >> 32;
    return x;
}

}  // namespace

Checksum64::Checksum64(uint64_t seed) {
    for (int i = 0; i < 4; ++i) lanes_[i] = seed + kAddD * static_cast<uint64_t>(i + 1);
}

void Checksum64::consume_stripe(const unsigned char* p) {
    for (int i = 0; i < 4; ++i) lanes_[i] = lane_step(lanes_[i], load64(p + 8 * i));
}

void Checksum64::update(const void* data, size_t len) {
    const auto* p = static_cast<const unsigned char*>(data);
    total_len_ += len;
    if (pending_len_ > 0) {  // top up a partial stripe left by the previous call
        const size_t take = len < kStripe - pending_len_ ? len : kStripe - pending_len_;
        std::memcpy(pending_ + pending_len_, p, take);
        pending_len_ += take;
        p += take;
        len -= take;
        if (pending_len_ < kStripe) return;
        consume_stripe(pending_);
        pending_len_ = 0;
    }
    for (; len >= kStripe; p += kStripe, len -= kStripe) consume_stripe(p);
    std::memcpy(pending_, p, len);
    pending_len_ = len;
}

uint64_t Checksum64::digest() const {
    // The tail (< 32 bytes) goes through lane 0 word by word, zero-padded; the total length is mixed in so
    // that trailing zero bytes still change the result.
    uint64_t tail_lane = lanes_[0];
    unsigned char padded[kStripe] = {0};
    std::memcpy(padded, pending_, pending_len_);
    for (size_t off = 0; off < pending_len_; off += 8) tail_lane = lane_step(tail_lane, load64(padded + off));

    uint64_t h = total_len_ * kMulC + kAddD;
    const uint64_t finals[4] = {tail_lane, lanes_[1], lanes_[2], lanes_[3]};
    for (uint64_t lane : finals) h = (h ^ avalanche(lane)) * kMulB + kAddD;
    return avalanche(h);
}

uint64_t Checksum64::of(const void* data, size_t len, uint64_t seed) {
    Checksum64 c(seed);
    c.update(data, len);
    return c.digest();
}

}  // namespace t2arec

// A streaming 64-bit checksum for state-cache snapshots ("lane hash 1").
//
// Why not CRC32: snapshots can be gigabytes; a table CRC runs at ~1 GB/s while four independent
// multiply-rotate lanes run at memory speed. Every step of a lane is a bijection of both its accumulator and
// the 8-byte input word, and the final merge is a bijection of each lane, so changing any single 8-byte word of
// the input (in particular flipping any bits of one byte) ALWAYS changes the checksum; other corruptions go
// unnoticed with probability about 2^-64. It is an integrity check, not a cryptographic hash.
#pragma once

#include <cstddef>
#include <cstdint>

namespace t2arec {

class Checksum64 {
public:
    explicit Checksum64(uint64_t seed = 0);

    void update(const void* data, size_t len);
    uint64_t digest() const;  // does not change the state: more data may follow

    static uint64_t of(const void* data, size_t len, uint64_t seed = 0);

private:
    static constexpr size_t kStripe = 32;  // four 8-byte lanes

    void consume_stripe(const unsigned char* p);

    uint64_t lanes_[4];
    unsigned char pending_[kStripe];
    size_t pending_len_ = 0;
    uint64_t total_len_ = 0;
};

}  // namespace t2arec

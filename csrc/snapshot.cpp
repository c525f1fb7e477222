// Durable snapshots of a StateCache: StateCache::save, StateCache::load, StateCache::read_snapshot_header.
//
// File format, version 1 (all integers little-endian):
//   header, 88 bytes
//     0  char[8]  magic "T2ASTATE"
//     8  u32      format version (1)
//    12  u32      dtype of the stored rows: 0 float32, 1 float16
//    16  u64      state_size
//    24  u64      record_bytes = 16 + state_size * dtype size
//    32  u64      entry_count
//    40  u64      capacity_bytes of the cache that wrote it
//    48  u32      shards of the cache that wrote it
//    52  u32      reserved, 0
//    56  i64      smallest model version among the entries (0 when empty)
//    64  i64      largest model version among the entries (0 when empty)
//    72  u64      checksum of all records (Checksum64, seed 0)
//    80  u64      checksum of header bytes [0, 80) (Checksum64, seed 0)
//   entry_count records: i64 user id, i64 model version, the stored row (state_size floats or halves)
// Records are written shard by shard, least recently used first, so loading them in file order rebuilds each
// shard's LRU order, and a smaller cache keeps the most recently used entries.
//
// Durability: the file is written as "<path>.tmp.<pid>.<n>" in the same directory, fsync'ed, renamed over
// <path> and the directory fsync'ed. A crash at any moment leaves either the old snapshot or the new one at
// <path> (possibly plus a stray .tmp file), never a mix. Each shard is copied under its own lock, so a save
// that runs beside writers is consistent per shard, not across shards.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "checksum.h"
#include "half.h"
#include "shard.h"
#include "state_cache.h"

namespace t2arec {
namespace {

constexpr char kMagic[8] = {'T', '2', 'A', 'S', 'T', 'A', 'T', 'E'};
constexpr size_t kHeaderBytes = 88;
constexpr size_t kHeaderChecksumOffset = 80;
constexpr size_t kRecordPrefixBytes = 16;  // user id + version
constexpr size_t kIoBlockBytes = 1 << 20;

// ---- little-endian field access ----------------------------------------------------------------------------

void put_u32(unsigned char* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
void put_u64(unsigned char* p, uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint32_t get_u32(const unsigned char* p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
    return v;
}
uint64_t get_u64(const unsigned char* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
}

size_t record_bytes(size_t state_size, Dtype dtype) { return kRecordPrefixBytes + state_size * dtype_bytes(dtype); }

void encode_header(const SnapshotHeader& h, uint64_t records_checksum, unsigned char* out) {
    std::memset(out, 0, kHeaderBytes);
    std::memcpy(out, kMagic, sizeof kMagic);
    put_u32(out + 8, h.format_version);
    put_u32(out + 12, static_cast<uint32_t>(h.dtype));
    put_u64(out + 16, h.state_size);
    put_u64(out + 24, record_bytes(h.state_size, h.dtype));
    put_u64(out + 32, h.entry_count);
    put_u64(out + 40, h.capacity_bytes);
    put_u32(out + 48, h.shards);
    put_u64(out + 56, static_cast<uint64_t>(h.min_version));
    put_u64(out + 64, static_cast<uint64_t>(h.max_version));
    put_u64(out + 72, records_checksum);
    put_u64(out + kHeaderChecksumOffset, Checksum64::of(out, kHeaderChecksumOffset));
}

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw SnapshotError(path + ": " + what); }

// Checks everything the header alone can tell; returns the records checksum it announces.
uint64_t decode_header(const unsigned char* in, uint64_t file_bytes, const std::string& path, SnapshotHeader& h) {
    if (std::memcmp(in, kMagic, sizeof kMagic) != 0)
        fail(path, "not a t2arec state-cache snapshot (bad magic bytes)");
    if (get_u64(in + kHeaderChecksumOffset) != Checksum64::of(in, kHeaderChecksumOffset))
        fail(path, "snapshot header is corrupted (header checksum mismatch)");
    h.format_version = get_u32(in + 8);
    if (h.format_version != StateCache::kFormatVersion)
        fail(path, "snapshot format version " + std::to_string(h.format_version) + " cannot be read by this build "
                   "(it reads version " + std::to_string(StateCache::kFormatVersion) + ")");
    const uint32_t dtype_code = get_u32(in + 12);
    if (dtype_code > 1) fail(path, "unknown dtype code " + std::to_string(dtype_code));
    h.dtype = static_cast<Dtype>(dtype_code);
    h.state_size = get_u64(in + 16);
    if (h.state_size == 0 || h.state_size > (uint64_t{1} << 28))
        fail(path, "invalid state_size " + std::to_string(h.state_size));
    if (get_u64(in + 24) != record_bytes(h.state_size, h.dtype)) fail(path, "record size does not match state_size");
    h.entry_count = get_u64(in + 32);
    h.capacity_bytes = get_u64(in + 40);
    h.shards = get_u32(in + 48);
    h.min_version = static_cast<int64_t>(get_u64(in + 56));
    h.max_version = static_cast<int64_t>(get_u64(in + 64));
    h.file_bytes = file_bytes;

    const uint64_t rec = record_bytes(h.state_size, h.dtype);
    if (h.entry_count > (UINT64_MAX - kHeaderBytes) / rec) fail(path, "entry count is impossibly large");
    const uint64_t expected = kHeaderBytes + h.entry_count * rec;
    if (file_bytes < expected)
        fail(path, "snapshot is truncated: the header announces " + std::to_string(h.entry_count) + " entries (" +
                       std::to_string(expected) + " bytes) but the file has " + std::to_string(file_bytes) + " bytes");
    if (file_bytes > expected)
        fail(path, "snapshot has " + std::to_string(file_bytes - expected) + " unexpected bytes after its last entry");
    return get_u64(in + 72);
}

// ---- files ---------------------------------------------------------------------------------------------------

[[noreturn]] void fail_io(const std::string& path, const std::string& doing) {
    const int code = errno;
    throw IoError(code, path, doing, std::strerror(code));
}

class File {
public:
    File(const std::string& path, int flags, mode_t mode = 0) : path_(path) {
        do fd_ = ::open(path.c_str(), flags | O_CLOEXEC, mode);
        while (fd_ < 0 && errno == EINTR);
        if (fd_ < 0) fail_io(path, (flags & O_WRONLY) ? "cannot create" : "cannot open");
    }
    ~File() {
        if (fd_ >= 0) ::close(fd_);
    }
    File(const File&) = delete;
    File& operator=(const File&) = delete;

    void write_all(const void* data, size_t len, off_t offset = -1) {
        const auto* p = static_cast<const unsigned char*>(data);
        while (len > 0) {
            const ssize_t n = offset < 0 ? ::write(fd_, p, len) : ::pwrite(fd_, p, len, offset);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) fail_io(path_, "cannot write");
            p += n;
            len -= static_cast<size_t>(n);
            if (offset >= 0) offset += n;
        }
    }
    // Reads exactly len bytes; returns false at end of file before that.
    bool read_all(void* data, size_t len) {
        auto* p = static_cast<unsigned char*>(data);
        while (len > 0) {
            const ssize_t n = ::read(fd_, p, len);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) fail_io(path_, "cannot read");
            if (n == 0) return false;
            p += n;
            len -= static_cast<size_t>(n);
        }
        return true;
    }
    uint64_t size() const {
        struct stat st;
        if (::fstat(fd_, &st) != 0) fail_io(path_, "cannot stat");
        if (S_ISDIR(st.st_mode)) {
            errno = EISDIR;
            fail_io(path_, "cannot read snapshot");
        }
        return static_cast<uint64_t>(st.st_size);
    }
    void sync() {
        if (::fsync(fd_) != 0) fail_io(path_, "cannot fsync");
    }
    void close() {
        const int fd = fd_;
        fd_ = -1;
        if (::close(fd) != 0) fail_io(path_, "cannot close");
    }

private:
    std::string path_;
    int fd_ = -1;
};

// Buffers small writes and checksums the records as they go out.
class RecordWriter {
public:
    explicit RecordWriter(File& file) : file_(file) { buffer_.reserve(kIoBlockBytes); }
    void append(const void* data, size_t len) {
        checksum_.update(data, len);
        const auto* p = static_cast<const unsigned char*>(data);
        if (buffer_.size() + len > kIoBlockBytes) flush();
        if (len >= kIoBlockBytes) file_.write_all(p, len);
        else buffer_.insert(buffer_.end(), p, p + len);
    }
    void flush() {
        file_.write_all(buffer_.data(), buffer_.size());
        buffer_.clear();
    }
    uint64_t checksum() const { return checksum_.digest(); }

private:
    File& file_;
    std::vector<unsigned char> buffer_;
    Checksum64 checksum_;
};

std::string directory_of(const std::string& path) {
    const size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

// Makes a rename durable. Some file systems cannot fsync a directory (EINVAL): then there is nothing to do.
void sync_directory(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) fail_io(dir, "cannot open directory");
    const int rc = ::fsync(fd);
    const int code = errno;
    ::close(fd);
    if (rc != 0 && code != EINVAL) {
        errno = code;
        fail_io(dir, "cannot fsync directory");
    }
}

// Removes the temporary file unless the save committed it.
struct TempFileGuard {
    std::string path;
    bool committed = false;
    ~TempFileGuard() {
        if (!committed) ::unlink(path.c_str());
    }
};

std::string temp_path_for(const std::string& path) {
    static std::atomic<uint64_t> counter{0};
    return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
}

bool stored_row_is_finite(const unsigned char* row, size_t state_size, Dtype dtype) {
    for (size_t j = 0; j < state_size; ++j) {
        if (dtype == Dtype::Float16) {
            uint16_t h;
            std::memcpy(&h, row + 2 * j, 2);
            if ((h & 0x7C00u) == 0x7C00u) return false;
        } else {
            uint32_t u;
            std::memcpy(&u, row + 4 * j, 4);
            if ((u & 0x7F800000u) == 0x7F800000u) return false;
        }
    }
    return true;
}

}  // namespace

// ---- save --------------------------------------------------------------------------------------------------

void StateCache::save(const std::string& path) const {
    if (path.empty()) throw InvalidArgument("save: path is empty");
    TempFileGuard temp{temp_path_for(path)};
    File file(temp.path, O_WRONLY | O_CREAT | O_EXCL, 0644);

    unsigned char header[kHeaderBytes] = {0};
    file.write_all(header, kHeaderBytes);  // placeholder: the entry count is known only at the end

    SnapshotHeader h;
    h.format_version = kFormatVersion;
    h.dtype = dtype_;
    h.state_size = state_size_;
    h.capacity_bytes = static_cast<uint64_t>(capacity_bytes_);
    h.shards = static_cast<uint32_t>(num_shards_);
    RecordWriter writer(file);
    for (size_t s = 0; s < num_shards_; ++s) {
        std::lock_guard<std::mutex> lock(shards_[s].mutex);
        shards_[s].shard.for_each_lru_first([&](const SlotMeta& m, const unsigned char* row) {
            unsigned char prefix[kRecordPrefixBytes];
            put_u64(prefix, static_cast<uint64_t>(m.key));
            put_u64(prefix + 8, static_cast<uint64_t>(m.version));
            writer.append(prefix, sizeof prefix);
            writer.append(row, row_bytes_);
            h.min_version = h.entry_count == 0 || m.version < h.min_version ? m.version : h.min_version;
            h.max_version = h.entry_count == 0 || m.version > h.max_version ? m.version : h.max_version;
            ++h.entry_count;
        });
    }
    writer.flush();
    encode_header(h, writer.checksum(), header);
    file.write_all(header, kHeaderBytes, 0);
    file.sync();
    file.close();
    if (::rename(temp.path.c_str(), path.c_str()) != 0) fail_io(path, "cannot rename the temporary snapshot onto");
    temp.committed = true;
    sync_directory(directory_of(path));
}

// ---- load --------------------------------------------------------------------------------------------------

namespace {
// Read and check the fixed-size header at the start of `file`; returns the checksum it announces for the body.
uint64_t read_header(File& file, const std::string& path, SnapshotHeader& h) {
    const uint64_t size = file.size();
    unsigned char header[kHeaderBytes];
    if (size < kHeaderBytes || !file.read_all(header, kHeaderBytes))
        fail(path, "snapshot is truncated: " + std::to_string(size) + " bytes, smaller than the " +
                       std::to_string(kHeaderBytes) + "-byte header");
    return decode_header(header, size, path, h);
}
}  // namespace

SnapshotHeader StateCache::read_snapshot_header(const std::string& path) {
    File file(path, O_RDONLY);
    SnapshotHeader h;
    read_header(file, path, h);
    return h;
}

std::unique_ptr<StateCache> StateCache::load(const std::string& path, const LoadOptions& options) {
    File file(path, O_RDONLY);
    SnapshotHeader h;
    const uint64_t announced_checksum = read_header(file, path, h);

    if (options.expected_state_size != 0 && options.expected_state_size != h.state_size)
        fail(path, "snapshot holds states of state_size " + std::to_string(h.state_size) + ", expected " +
                       std::to_string(options.expected_state_size));
    if (options.expected_dtype >= 0 && static_cast<Dtype>(options.expected_dtype) != h.dtype)
        fail(path, std::string("snapshot stores ") + dtype_name(h.dtype) + ", expected " +
                       dtype_name(static_cast<Dtype>(options.expected_dtype)));

    const bool same_capacity = options.capacity_bytes < 0;
    const int64_t capacity = same_capacity ? static_cast<int64_t>(h.capacity_bytes) : options.capacity_bytes;
    const size_t shards = options.shards != 0 ? options.shards : (same_capacity ? h.shards : kAutoShards);
    auto cache = std::make_unique<StateCache>(h.state_size, capacity, h.dtype, shards);

    // Insert while reading; the checksum is compared at the end and a mismatch discards the new cache, so the
    // caller never sees data from a corrupted file.
    const size_t rec = record_bytes(h.state_size, h.dtype);
    const size_t per_block = kIoBlockBytes / rec > 0 ? kIoBlockBytes / rec : 1;
    std::vector<unsigned char> block(per_block * rec);
    Checksum64 checksum;
    uint64_t first_bad = UINT64_MAX;
    for (uint64_t done = 0; done < h.entry_count;) {
        const size_t count = static_cast<size_t>(std::min<uint64_t>(per_block, h.entry_count - done));
        if (!file.read_all(block.data(), count * rec)) fail(path, "snapshot is truncated (it shrank while loading)");
        checksum.update(block.data(), count * rec);
        for (size_t r = 0; r < count; ++r) {
            const unsigned char* record = block.data() + r * rec;
            const unsigned char* row = record + kRecordPrefixBytes;
            if (!stored_row_is_finite(row, h.state_size, h.dtype)) {
                if (first_bad == UINT64_MAX) first_bad = done + r;
                continue;
            }
            cache->insert_stored_row(static_cast<int64_t>(get_u64(record)),
                                     static_cast<int64_t>(get_u64(record + 8)), row);
        }
        done += count;
    }
    if (checksum.digest() != announced_checksum)
        fail(path, "snapshot is corrupted: checksum of its entries does not match the header");
    if (first_bad != UINT64_MAX)
        fail(path, "snapshot entry " + std::to_string(first_bad) + " holds a non-finite value");
    cache->reset_access_counters();
    return cache;
}

}  // namespace t2arec

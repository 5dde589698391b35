#include "runtime/disk_cache.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <thread>

#include "runtime/sha256.h"

namespace dv::runtime {
namespace fs = std::filesystem;

namespace {

// File layout, all integers little-endian:
//   0  "DVKC"
//   4  u32 format version
//   8  u64 payload length
//  16  u64 FNV-1a 64 of the payload
//  24  u32 key length
//  28  key bytes, then the payload
constexpr char kMagic[4] = {'D', 'V', 'K', 'C'};
constexpr std::uint32_t kFormatVersion = 1;
constexpr std::size_t kFixedHeader = 28;

void put_le(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t get_le(const std::string& in, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= std::uint64_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
  }
  return v;
}

std::string encode(const std::string& key, const std::string& payload) {
  std::string out;
  out.reserve(kFixedHeader + key.size() + payload.size());
  out.append(kMagic, sizeof kMagic);
  put_le(out, kFormatVersion, 4);
  put_le(out, payload.size(), 8);
  put_le(out, fnv1a64(payload), 8);
  put_le(out, key.size(), 4);
  out += key;
  out += payload;
  return out;
}

enum class Decoded { ok, other_version, damaged };

// Checks every header field against the file and extracts the payload.
Decoded decode(const std::string& file, const std::string& key, std::string& payload) {
  if (file.size() < kFixedHeader || std::memcmp(file.data(), kMagic, sizeof kMagic) != 0) {
    return Decoded::damaged;
  }
  if (get_le(file, 4, 4) != kFormatVersion) return Decoded::other_version;
  const std::uint64_t length = get_le(file, 8, 8);
  const std::uint64_t checksum = get_le(file, 16, 8);
  const std::uint64_t key_length = get_le(file, 24, 4);
  if (key_length != key.size() || file.size() != kFixedHeader + key_length + length) {
    return Decoded::damaged;
  }
  if (file.compare(kFixedHeader, key_length, key) != 0) return Decoded::damaged;
  payload = file.substr(kFixedHeader + key_length);
  if (fnv1a64(payload) != checksum) return Decoded::damaged;
  return Decoded::ok;
}

// Reads the whole file behind `fd`; false on any read error.
bool read_all(int fd, std::string& out) {
  char chunk[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n == 0) return true;
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    out.append(chunk, static_cast<std::size_t>(n));
  }
}

bool write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Removes `path` only if it is still the file we read (same inode), so a reader
// does not delete a good entry that a writer renamed into place meanwhile.
void remove_if_same(const fs::path& path, const struct stat& seen) {
  struct stat now {};
  if (::stat(path.c_str(), &now) == 0 && now.st_dev == seen.st_dev && now.st_ino == seen.st_ino) {
    ::unlink(path.c_str());
  }
}

// A name no other writer (thread or process) will pick: pid, thread, random bits.
std::string unique_temp_name(const std::string& key) {
  thread_local std::mt19937_64 rng([] {
    std::random_device rd;
    return (std::uint64_t{rd()} << 32) ^ rd() ^
           static_cast<std::uint64_t>(std::hash<std::thread::id>{}(std::this_thread::get_id()));
  }());
  const std::uint64_t tid = std::hash<std::thread::id>{}(std::this_thread::get_id());
  char buf[96];
  std::snprintf(buf, sizeof buf, ".tmp.%ld.%llx.%llx", static_cast<long>(::getpid()),
                static_cast<unsigned long long>(tid), static_cast<unsigned long long>(rng()));
  // Leading dot keeps temp files out of the key namespace ("<hex>.cubin").
  return "." + key + buf;
}

bool fsync_requested() {
  const char* v = std::getenv("DEEPVISOR_CACHE_FSYNC");
  return v != nullptr && v[0] != '\0' && v[0] != '0';
}

fs::path home_dir() {
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') return home;
  if (const passwd* pw = ::getpwuid(::getuid()); pw != nullptr && pw->pw_dir != nullptr) {
    return pw->pw_dir;
  }
  return {};
}

}  // namespace

std::uint64_t fnv1a64(std::string_view bytes) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::string content_key(std::initializer_list<std::string_view> parts) {
  Sha256 h;
  for (const std::string_view part : parts) {
    char length[8];
    for (int i = 0; i < 8; ++i) {
      length[i] = static_cast<char>((std::uint64_t{part.size()} >> (8 * i)) & 0xff);
    }
    h.update(std::string_view(length, sizeof length));
    h.update(part);
  }
  const Sha256::Digest d = h.digest();
  return to_hex(d.data(), d.size());
}

DiskCache::DiskCache(fs::path dir, std::string extension) : dir_(std::move(dir)), extension_(std::move(extension)) {}

bool DiskCache::enabled() {
  const char* v = std::getenv("DEEPVISOR_DISK_CACHE");
  return v == nullptr || std::string(v) != "0";
}

fs::path DiskCache::default_dir() {
  fs::path base;
  if (const char* v = std::getenv("DEEPVISOR_CACHE_DIR"); v != nullptr && v[0] != '\0') {
    base = v;
  } else if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && x[0] != '\0') {
    base = fs::path(x) / "deepvisor";
  } else if (fs::path home = home_dir(); !home.empty()) {
    base = home / ".cache" / "deepvisor";
  } else {
    base = fs::temp_directory_path() / ("deepvisor-" + std::to_string(::getuid()));
  }
  return base / "kernels";
}

bool DiskCache::valid_key(std::string_view key) {
  if (key.empty() || key.size() > 128) return false;
  for (const char c : key) {
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!hex) return false;
  }
  return true;
}

fs::path DiskCache::path_for(const std::string& key) const { return dir_ / (key + extension_); }

std::optional<std::string> DiskCache::load(const std::string& key) const {
  if (!valid_key(key)) return std::nullopt;
  const fs::path path = path_for(key);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  struct stat st {};
  std::string file;
  const bool read_ok = ::fstat(fd, &st) == 0 && read_all(fd, file);
  ::close(fd);
  if (!read_ok) return std::nullopt;

  std::string payload;
  switch (decode(file, key, payload)) {
    case Decoded::ok:
      return payload;
    case Decoded::other_version:
      // Written by another deepvisor build: a miss, and the next store replaces it.
      return std::nullopt;
    case Decoded::damaged:
      remove_if_same(path, st);
      return std::nullopt;
  }
  return std::nullopt;
}

void DiskCache::store(const std::string& key, const std::string& data) const {
  if (!valid_key(key)) return;
  std::error_code ec;
  fs::create_directories(dir_, ec);  // an error shows up as a failed open below

  const fs::path temp = dir_ / unique_temp_name(key);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return;
  // Without fsync a crash can leave a damaged file behind the final name; the
  // checksum turns that into a miss, so durability is opt-in.
  bool ok = write_all(fd, encode(key, data));
  if (ok && fsync_requested()) ok = ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  // rename() atomically replaces any existing entry: readers see old or new, whole.
  if (!ok || ::rename(temp.c_str(), path_for(key).c_str()) != 0) ::unlink(temp.c_str());
}

}  // namespace dv::runtime

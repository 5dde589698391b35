// A content-addressed on-disk store: compiled kernels, autotuning choices,
// host kernels, the tracer's code tables.
//
// One file per key: <dir>/<key><extension>, holding a small header (magic, format
// version, payload length, FNV-1a 64 checksum, the key) and the payload. Writers
// publish with rename(), so concurrent processes never see a partial file; a
// reader that finds a damaged file reports a miss and removes it.
#pragma once

#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace dv::runtime {

class DiskCache {
 public:
  // extension: of the entries' file names (kernels keep ".cubin").
  explicit DiskCache(std::filesystem::path dir, std::string extension = ".cubin");

  // $DEEPVISOR_CACHE_DIR, else $XDG_CACHE_HOME/deepvisor, else ~/.cache/deepvisor;
  // kernels live in its subfolder "kernels".
  static std::filesystem::path default_dir();
  // Whether the disk tiers are on (DEEPVISOR_DISK_CACHE=0 turns them all off).
  static bool enabled();

  const std::filesystem::path& dir() const { return dir_; }

  // The payload stored under `key`, or nullopt if missing, unreadable or damaged
  // (a damaged file is deleted, best effort). Keys must be hex strings.
  std::optional<std::string> load(const std::string& key) const;

  // Stores `data` under `key` atomically. Never throws on I/O failure: it is a
  // cache, so a failed store is only a later miss. Creates the directory.
  void store(const std::string& key, const std::string& data) const;

  // Path of the file that holds `key` (exists only after a store).
  std::filesystem::path path_for(const std::string& key) const;

  // Whether `key` is acceptable: 1..128 hex digits (so it is a safe file name).
  static bool valid_key(std::string_view key);

 private:
  std::filesystem::path dir_;
  std::string extension_;
};

// A collision-resistant lower-case hex digest (SHA-256) of the parts. Each part is
// length-prefixed, so ("ab","c") and ("a","bc") differ.
std::string content_key(std::initializer_list<std::string_view> parts);

// 64-bit FNV-1a of bytes (the disk format's checksum).
std::uint64_t fnv1a64(std::string_view bytes);

}  // namespace dv::runtime

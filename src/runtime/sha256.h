// SHA-256 (FIPS 180-4), used to name compiled kernels by their content.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dv::runtime {

// Incremental SHA-256: update() any number of times, then digest() once.
class Sha256 {
 public:
  using Digest = std::array<std::uint8_t, 32>;

  Sha256();
  void update(std::string_view bytes);
  // Finishes the hash. The object must not be updated afterwards.
  Digest digest();

 private:
  void compress(const std::uint8_t* block);

  std::array<std::uint32_t, 8> state_;
  std::array<std::uint8_t, 64> buffer_{};
  std::size_t buffered_ = 0;  // bytes waiting in buffer_
  std::uint64_t total_bytes_ = 0;
};

// Lower-case hex of bytes.
std::string to_hex(const std::uint8_t* bytes, std::size_t n);

// Lower-case hex SHA-256 of `bytes` (64 characters).
std::string sha256_hex(std::string_view bytes);

}  // namespace dv::runtime

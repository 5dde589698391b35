// Element types of tensors and of loop-IR values.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace dv::ir {

// Every element type a PyTorch tensor can have (c10::ScalarType), so that any
// tensor of a captured run is a legal graph value. Only the first seven are
// *kernel dtypes* (is_kernel_dtype): the loop IR, the CPU interpreter and the
// CUDA emitter handle those alone, and lowering turns every op that reads or
// writes another dtype into a fallback. Loop-IR values only ever carry a
// *compute* type (see compute_dtype): half types are computed in float32.
enum class DType : std::uint8_t {
  // Kernel dtypes.
  Bool, Int32, Int64, Float16, BFloat16, Float32, Float64,
  // Graph values only: fallbacks compute with them.
  UInt8, Int8, Int16, UInt16, UInt32, UInt64,
  Complex32, Complex64, Complex128,
  Float8_e5m2, Float8_e4m3fn, Float8_e5m2fnuz, Float8_e4m3fnuz, Float8_e8m0fnu, Float4_e2m1fn_x2,
  QInt8, QUInt8, QInt32, QUInt4x2, QUInt2x4,  // quantized tensors are rejected at capture; dtype arguments only
  Bits1x8, Bits2x4, Bits4x2, Bits8, Bits16,
  UInt1, UInt2, UInt3, UInt4, UInt5, UInt6, UInt7,
  Int1, Int2, Int3, Int4, Int5, Int6, Int7,
};
inline constexpr int kNumDTypes = static_cast<int>(DType::Int7) + 1;

// Short names used by the printers and the graph format: b8 i32 i64 f16 bf16
// f32 f64, u8 i8 i16 u16 u32 u64, c32 c64 c128, f8e5m2 f8e4m3fn f8e5m2fnuz
// f8e4m3fnuz f8e8m0fnu f4e2m1fnx2, qi8 qu8 qi32 qu4x2 qu2x4, bits1x8 bits2x4
// bits4x2 bits8 bits16, u1..u7, i1..i7.
std::string_view dtype_name(DType t);
std::optional<DType> parse_dtype(std::string_view name);

int dtype_size(DType t);  // bytes an element (sub-byte and packed types: 1, as in torch)
bool is_floating(DType t);  // f16 bf16 f32 f64 and the float8/float4 types
bool is_integral(DType t);  // signed and unsigned integers, sub-byte ones too; excludes Bool
bool is_complex(DType t);
// The loop IR can load, compute and store it (b8 i32 i64 f16 bf16 f32 f64).
bool is_kernel_dtype(DType t);

// The type arithmetic on `t` is carried out in: f16/bf16 -> f32, others unchanged.
DType compute_dtype(DType t);

// PyTorch's torch.promote_types for two tensor dtypes. Throws
// std::invalid_argument where torch has no promotion (e.g. float8 with
// another type, uint16..uint64 with signed integers, quantized types).
DType promote_types(DType a, DType b);

// The C type name the CUDA emitter uses for a storage or compute type.
// Throws std::logic_error for a dtype that is not a kernel dtype.
std::string_view cuda_storage_type(DType t);

}  // namespace dv::ir

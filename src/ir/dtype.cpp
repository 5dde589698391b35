#include "ir/dtype.h"

#include <array>
#include <stdexcept>
#include <string>

namespace dv::ir {

namespace {

enum class Category : std::uint8_t {
  Bool,
  Int,          // int8..int64 and uint8: promote among themselves and upwards
  LimitedUInt,  // uint16..uint64, sub-byte ints: promote only with themselves and with floats
  Float,        // f16 bf16 f32 f64
  Complex,
  Other,        // float8/float4, quantized, bits: no promotion but with themselves
};

struct DTypeInfo {
  DType type;
  std::string_view name;
  int size;
  Category category;
  std::string_view cuda_type;  // kernel dtypes only
};

constexpr std::array<DTypeInfo, kNumDTypes> kInfo{{
    {DType::Bool, "b8", 1, Category::Bool, "bool"},
    {DType::Int32, "i32", 4, Category::Int, "int"},
    {DType::Int64, "i64", 8, Category::Int, "long long"},
    {DType::Float16, "f16", 2, Category::Float, "unsigned short"},
    {DType::BFloat16, "bf16", 2, Category::Float, "unsigned short"},
    {DType::Float32, "f32", 4, Category::Float, "float"},
    {DType::Float64, "f64", 8, Category::Float, "double"},
    {DType::UInt8, "u8", 1, Category::Int, ""},
    {DType::Int8, "i8", 1, Category::Int, ""},
    {DType::Int16, "i16", 2, Category::Int, ""},
    {DType::UInt16, "u16", 2, Category::LimitedUInt, ""},
    {DType::UInt32, "u32", 4, Category::LimitedUInt, ""},
    {DType::UInt64, "u64", 8, Category::LimitedUInt, ""},
    {DType::Complex32, "c32", 4, Category::Complex, ""},
    {DType::Complex64, "c64", 8, Category::Complex, ""},
    {DType::Complex128, "c128", 16, Category::Complex, ""},
    {DType::Float8_e5m2, "f8e5m2", 1, Category::Other, ""},
    {DType::Float8_e4m3fn, "f8e4m3fn", 1, Category::Other, ""},
    {DType::Float8_e5m2fnuz, "f8e5m2fnuz", 1, Category::Other, ""},
    {DType::Float8_e4m3fnuz, "f8e4m3fnuz", 1, Category::Other, ""},
    {DType::Float8_e8m0fnu, "f8e8m0fnu", 1, Category::Other, ""},
    {DType::Float4_e2m1fn_x2, "f4e2m1fnx2", 1, Category::Other, ""},
    {DType::QInt8, "qi8", 1, Category::Other, ""},
    {DType::QUInt8, "qu8", 1, Category::Other, ""},
    {DType::QInt32, "qi32", 4, Category::Other, ""},
    {DType::QUInt4x2, "qu4x2", 1, Category::Other, ""},
    {DType::QUInt2x4, "qu2x4", 1, Category::Other, ""},
    {DType::Bits1x8, "bits1x8", 1, Category::Other, ""},
    {DType::Bits2x4, "bits2x4", 1, Category::Other, ""},
    {DType::Bits4x2, "bits4x2", 1, Category::Other, ""},
    {DType::Bits8, "bits8", 1, Category::Other, ""},
    {DType::Bits16, "bits16", 2, Category::Other, ""},
    {DType::UInt1, "u1", 1, Category::LimitedUInt, ""},
    {DType::UInt2, "u2", 1, Category::LimitedUInt, ""},
    {DType::UInt3, "u3", 1, Category::LimitedUInt, ""},
    {DType::UInt4, "u4", 1, Category::LimitedUInt, ""},
    {DType::UInt5, "u5", 1, Category::LimitedUInt, ""},
    {DType::UInt6, "u6", 1, Category::LimitedUInt, ""},
    {DType::UInt7, "u7", 1, Category::LimitedUInt, ""},
    {DType::Int1, "i1", 1, Category::LimitedUInt, ""},
    {DType::Int2, "i2", 1, Category::LimitedUInt, ""},
    {DType::Int3, "i3", 1, Category::LimitedUInt, ""},
    {DType::Int4, "i4", 1, Category::LimitedUInt, ""},
    {DType::Int5, "i5", 1, Category::LimitedUInt, ""},
    {DType::Int6, "i6", 1, Category::LimitedUInt, ""},
    {DType::Int7, "i7", 1, Category::LimitedUInt, ""},
}};

constexpr bool table_in_enum_order() {
  for (int i = 0; i < kNumDTypes; ++i)
    if (static_cast<int>(kInfo[i].type) != i) return false;
  return true;
}
static_assert(table_in_enum_order(), "kInfo must list the dtypes in enum order");

const DTypeInfo& info(DType t) {
  auto i = static_cast<std::size_t>(t);
  if (i >= kInfo.size()) throw std::logic_error("invalid DType " + std::to_string(i));
  return kInfo[i];
}

Category category(DType t) { return info(t).category; }

// The real type of a complex type's components.
DType complex_part(DType t) {
  switch (t) {
    case DType::Complex32: return DType::Float16;
    case DType::Complex64: return DType::Float32;
    default: return DType::Float64;
  }
}
DType complex_of(DType part) {
  switch (part) {
    case DType::Float16: return DType::Complex32;
    case DType::Float32: return DType::Complex64;
    default: return DType::Complex128;
  }
}

// Floats among themselves: f16 with bf16 gives f32; otherwise the wider one.
DType promote_floats(DType a, DType b) {
  if (a == b) return a;
  if ((a == DType::Float16 && b == DType::BFloat16) || (a == DType::BFloat16 && b == DType::Float16))
    return DType::Float32;
  return dtype_size(a) >= dtype_size(b) ? a : b;
}

bool is_signed_int(DType t) { return t == DType::Int8 || t == DType::Int16 || t == DType::Int32 || t == DType::Int64; }

[[noreturn]] void no_promotion(DType a, DType b) {
  throw std::invalid_argument("no type promotion between " + std::string(dtype_name(a)) + " and " +
                              std::string(dtype_name(b)));
}

}  // namespace

std::string_view dtype_name(DType t) { return info(t).name; }
int dtype_size(DType t) { return info(t).size; }

std::string_view cuda_storage_type(DType t) {
  if (!is_kernel_dtype(t))
    throw std::logic_error("cuda_storage_type: " + std::string(dtype_name(t)) + " is not a kernel dtype");
  return info(t).cuda_type;
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& i : kInfo)
    if (i.name == name) return i.type;
  return std::nullopt;
}

bool is_floating(DType t) {
  switch (t) {
    case DType::Float16:
    case DType::BFloat16:
    case DType::Float32:
    case DType::Float64:
    case DType::Float8_e5m2:
    case DType::Float8_e4m3fn:
    case DType::Float8_e5m2fnuz:
    case DType::Float8_e4m3fnuz:
    case DType::Float8_e8m0fnu:
    case DType::Float4_e2m1fn_x2: return true;
    default: return false;
  }
}

bool is_integral(DType t) {
  Category c = category(t);
  return c == Category::Int || c == Category::LimitedUInt;
}

bool is_complex(DType t) { return category(t) == Category::Complex; }

bool is_kernel_dtype(DType t) { return static_cast<int>(t) <= static_cast<int>(DType::Float64); }

DType compute_dtype(DType t) {
  return (t == DType::Float16 || t == DType::BFloat16) ? DType::Float32 : t;
}

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  Category ca = category(a), cb = category(b);
  if (ca == Category::Other || cb == Category::Other) no_promotion(a, b);
  if (ca == Category::LimitedUInt || cb == Category::LimitedUInt) {
    // Only with floats (and themselves, above).
    if (ca == Category::Float) return a;
    if (cb == Category::Float) return b;
    no_promotion(a, b);
  }
  if (ca == Category::Bool) return b;
  if (cb == Category::Bool) return a;
  if (ca == Category::Complex || cb == Category::Complex) {
    auto part = [](DType t, Category c) -> std::optional<DType> {
      if (c == Category::Complex) return complex_part(t);
      if (c == Category::Float) return t;
      return std::nullopt;  // integers take the complex operand's precision
    };
    auto pa = part(a, ca), pb = part(b, cb);
    if (!pa) return b;
    if (!pb) return a;
    return complex_of(promote_floats(*pa, *pb));
  }
  if (ca == Category::Float || cb == Category::Float) {
    if (ca != cb) return ca == Category::Float ? a : b;
    return promote_floats(a, b);
  }
  // Integers: uint8 with int8 needs int16; otherwise the wider one (uint8 is
  // the narrowest, so a signed partner always holds it).
  if (a == DType::UInt8 || b == DType::UInt8) {
    DType other = a == DType::UInt8 ? b : a;
    if (!is_signed_int(other)) no_promotion(a, b);
    return other == DType::Int8 ? DType::Int16 : other;
  }
  return dtype_size(a) >= dtype_size(b) ? a : b;
}

}  // namespace dv::ir

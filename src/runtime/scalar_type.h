// Conversions between deepvisor's DType and LibTorch's ScalarType.
#pragma once

#include <c10/core/ScalarType.h>

#include <array>
#include <optional>
#include <stdexcept>
#include <utility>

#include "ir/dtype.h"

namespace dv::runtime {

namespace detail {
using ST = c10::ScalarType;
using DT = ir::DType;
// Every DType with its ScalarType (one to one).
inline constexpr std::array<std::pair<DT, ST>, ir::kNumDTypes> kScalarTypes{{
    {DT::Bool, ST::Bool},
    {DT::Int32, ST::Int},
    {DT::Int64, ST::Long},
    {DT::Float16, ST::Half},
    {DT::BFloat16, ST::BFloat16},
    {DT::Float32, ST::Float},
    {DT::Float64, ST::Double},
    {DT::UInt8, ST::Byte},
    {DT::Int8, ST::Char},
    {DT::Int16, ST::Short},
    {DT::UInt16, ST::UInt16},
    {DT::UInt32, ST::UInt32},
    {DT::UInt64, ST::UInt64},
    {DT::Complex32, ST::ComplexHalf},
    {DT::Complex64, ST::ComplexFloat},
    {DT::Complex128, ST::ComplexDouble},
    {DT::Float8_e5m2, ST::Float8_e5m2},
    {DT::Float8_e4m3fn, ST::Float8_e4m3fn},
    {DT::Float8_e5m2fnuz, ST::Float8_e5m2fnuz},
    {DT::Float8_e4m3fnuz, ST::Float8_e4m3fnuz},
    {DT::Float8_e8m0fnu, ST::Float8_e8m0fnu},
    {DT::Float4_e2m1fn_x2, ST::Float4_e2m1fn_x2},
    {DT::QInt8, ST::QInt8},
    {DT::QUInt8, ST::QUInt8},
    {DT::QInt32, ST::QInt32},
    {DT::QUInt4x2, ST::QUInt4x2},
    {DT::QUInt2x4, ST::QUInt2x4},
    {DT::Bits1x8, ST::Bits1x8},
    {DT::Bits2x4, ST::Bits2x4},
    {DT::Bits4x2, ST::Bits4x2},
    {DT::Bits8, ST::Bits8},
    {DT::Bits16, ST::Bits16},
    {DT::UInt1, ST::UInt1},
    {DT::UInt2, ST::UInt2},
    {DT::UInt3, ST::UInt3},
    {DT::UInt4, ST::UInt4},
    {DT::UInt5, ST::UInt5},
    {DT::UInt6, ST::UInt6},
    {DT::UInt7, ST::UInt7},
    {DT::Int1, ST::Int1},
    {DT::Int2, ST::Int2},
    {DT::Int3, ST::Int3},
    {DT::Int4, ST::Int4},
    {DT::Int5, ST::Int5},
    {DT::Int6, ST::Int6},
    {DT::Int7, ST::Int7},
}};
constexpr bool in_enum_order() {
  for (int i = 0; i < ir::kNumDTypes; ++i)
    if (static_cast<int>(kScalarTypes[i].first) != i) return false;
  return true;
}
static_assert(in_enum_order(), "kScalarTypes must list the dtypes in enum order");
}  // namespace detail

inline c10::ScalarType to_scalar_type(ir::DType t) {
  auto i = static_cast<std::size_t>(t);
  if (i >= detail::kScalarTypes.size()) throw std::logic_error("to_scalar_type: unknown DType");
  return detail::kScalarTypes[i].second;
}

inline std::optional<ir::DType> from_scalar_type(c10::ScalarType t) {
  for (const auto& [d, s] : detail::kScalarTypes)
    if (s == t) return d;
  return std::nullopt;
}

}  // namespace dv::runtime

// Conversions between deepvisor's DType and LibTorch's ScalarType.
#pragma once

#include <c10/core/ScalarType.h>

#include <optional>
#include <stdexcept>

#include "ir/dtype.h"

namespace dv::runtime {

inline c10::ScalarType to_scalar_type(ir::DType t) {
  switch (t) {
    case ir::DType::Bool: return c10::ScalarType::Bool;
    case ir::DType::Int32: return c10::ScalarType::Int;
    case ir::DType::Int64: return c10::ScalarType::Long;
    case ir::DType::Float16: return c10::ScalarType::Half;
    case ir::DType::BFloat16: return c10::ScalarType::BFloat16;
    case ir::DType::Float32: return c10::ScalarType::Float;
    case ir::DType::Float64: return c10::ScalarType::Double;
  }
  throw std::logic_error("to_scalar_type: unknown DType");
}

inline std::optional<ir::DType> from_scalar_type(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Bool: return ir::DType::Bool;
    case c10::ScalarType::Int: return ir::DType::Int32;
    case c10::ScalarType::Long: return ir::DType::Int64;
    case c10::ScalarType::Half: return ir::DType::Float16;
    case c10::ScalarType::BFloat16: return ir::DType::BFloat16;
    case c10::ScalarType::Float: return ir::DType::Float32;
    case c10::ScalarType::Double: return ir::DType::Float64;
    default: return std::nullopt;
  }
}

}  // namespace dv::runtime

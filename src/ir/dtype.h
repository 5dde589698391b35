// Element types of tensors and of loop-IR values.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace dv::ir {

// Storage types a tensor may have. Loop-IR values only ever carry a
// *compute* type (see compute_dtype): half types are computed in float32.
enum class DType : std::uint8_t { Bool, Int32, Int64, Float16, BFloat16, Float32, Float64 };

// Short names used by the printers and the graph format: b8 i32 i64 f16 bf16 f32 f64.
std::string_view dtype_name(DType t);
std::optional<DType> parse_dtype(std::string_view name);

int dtype_size(DType t);
bool is_floating(DType t);
bool is_integral(DType t);  // excludes Bool

// The type arithmetic on `t` is carried out in: f16/bf16 -> f32, others unchanged.
DType compute_dtype(DType t);

// PyTorch's torch.promote_types for two tensor dtypes.
DType promote_types(DType a, DType b);

// The C type name the CUDA emitter uses for a storage or compute type.
std::string_view cuda_storage_type(DType t);

}  // namespace dv::ir

#include "ir/dtype.h"

#include <array>

namespace dv::ir {

namespace {
struct DTypeInfo {
  DType type;
  std::string_view name;
  int size;
  std::string_view cuda_type;
};
constexpr std::array<DTypeInfo, 7> kInfo{{
    {DType::Bool, "b8", 1, "bool"},
    {DType::Int32, "i32", 4, "int"},
    {DType::Int64, "i64", 8, "long long"},
    {DType::Float16, "f16", 2, "unsigned short"},
    {DType::BFloat16, "bf16", 2, "unsigned short"},
    {DType::Float32, "f32", 4, "float"},
    {DType::Float64, "f64", 8, "double"},
}};
const DTypeInfo& info(DType t) { return kInfo[static_cast<int>(t)]; }

// Rank of a dtype within its category, for promotion.
int category(DType t) { return t == DType::Bool ? 0 : is_integral(t) ? 1 : 2; }
}  // namespace

std::string_view dtype_name(DType t) { return info(t).name; }
int dtype_size(DType t) { return info(t).size; }
std::string_view cuda_storage_type(DType t) { return info(t).cuda_type; }

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& i : kInfo)
    if (i.name == name) return i.type;
  return std::nullopt;
}

bool is_floating(DType t) {
  return t == DType::Float16 || t == DType::BFloat16 || t == DType::Float32 || t == DType::Float64;
}
bool is_integral(DType t) { return t == DType::Int32 || t == DType::Int64; }

DType compute_dtype(DType t) {
  return (t == DType::Float16 || t == DType::BFloat16) ? DType::Float32 : t;
}

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  if (category(a) != category(b)) return category(a) > category(b) ? a : b;
  // Same category, different types.
  if (category(a) == 1) return DType::Int64;
  // Floating: f16 with bf16 gives f32; otherwise the wider one.
  if ((a == DType::Float16 && b == DType::BFloat16) || (a == DType::BFloat16 && b == DType::Float16))
    return DType::Float32;
  return dtype_size(a) >= dtype_size(b) ? a : b;
}

}  // namespace dv::ir

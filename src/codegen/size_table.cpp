#include "codegen/size_table.h"

#include <algorithm>
#include <cmath>

namespace dv::codegen {

bool SizeTable::symbolic(std::int64_t value) const {
  return enabled_ && !std::binary_search(constant_sizes_.begin(), constant_sizes_.end(), value);
}

bool SizeTable::xnumel_symbolic(std::int64_t xnumel) const {
  return origins_.known ? enabled_ && origins_.xnumel_symbolic : symbolic(xnumel);
}

bool SizeTable::rnumel_symbolic(std::int64_t rnumel) const {
  return origins_.known ? enabled_ && origins_.rnumel_symbolic : symbolic(rnumel);
}

std::string SizeTable::use(std::int64_t value, const std::string& literal) {
  if (!enabled_) return literal;
  const std::size_t use = uses_++;
  const bool fixed = origins_.known ? use < origins_.static_uses.size() && origins_.static_uses[use] : !symbolic(value);
  if (fixed) return literal;
  values_.push_back(value);
  return entry_name_(values_.size() - 1);
}

std::string SizeTable::float_use(double value, const std::string& literal, const std::string& type) {
  if (value < 2 || value >= 2147483648.0 || value != std::floor(value)) return literal;  // (before the cast)
  return int_use(static_cast<std::int64_t>(value), literal, type);
}

std::string SizeTable::int_use(std::int64_t value, const std::string& literal, const std::string& type) {
  if (!enabled_ || value < 2 || value >= 2147483648LL) return literal;
  const std::string text = use(value, literal);
  return text == literal ? literal : "((" + type + ")" + text + ")";
}

std::string SizeTable::entry(std::int64_t value) {
  ++uses_;
  values_.push_back(value);
  return entry_name_(values_.size() - 1);
}

}  // namespace dv::codegen

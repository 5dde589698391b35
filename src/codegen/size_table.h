// Sizes as arguments (dynamic shapes), for both kernel emitters.
//
// A kernel with size arguments reads its sizes (index constants, extents,
// the iteration space) from a table passed with each launch instead of
// having them written into its source, so that the kernels of two instances
// of a dynamic-shape plan that differ only in sizes are one source (one
// compile). Every choice an emitter makes from a size still shows in the
// text (vector widths, tails, bounds checks, row buffers): two sizes share a
// source only where every such choice agrees, and each launch passes its
// own table, so sharing never changes a result.
//
// Each use of a size is an entry of its own, never one shared by equal
// values: which sizes happen to be equal differs between instances and must
// not change the source. Sizes an instance shares with every other (a
// static dimension, its strides) may stay literals, so that divisions by
// them keep compiling to multiplications: by value (constant_sizes), or by
// origin (SizeOrigins, from a second lowering at other symbol values).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ir/loop_ir.h"

namespace dv::codegen {

// What a second lowering of the same graph at other values of its symbols
// showed: which of a kernel's sizes depend on the symbols. When known, it
// replaces the guess by value (constant_sizes), which takes a symbolic size
// that happens to equal a static one for static.
struct SizeOrigins {
  bool known = false;
  bool xnumel_symbolic = false, rnumel_symbolic = false;
  // Per use of a size in the source, in the order the emitter writes them
  // (every use a table entry when this is empty): a literal.
  std::vector<bool> static_uses;
};

// The table of one kernel while its source is written.
class SizeTable {
 public:
  // `entry_name(i)`: how the source reads entry i. Without `enabled` every
  // size is a literal. `constant_sizes` sorted.
  SizeTable(bool enabled, const std::vector<std::int64_t>& constant_sizes, const SizeOrigins& origins,
            std::string (*entry_name)(std::size_t))
      : enabled_(enabled), constant_sizes_(constant_sizes), origins_(origins), entry_name_(entry_name) {}

  bool enabled() const { return enabled_; }
  // Whether `value` may take another value in another instance, by value:
  // it is not one of the constant sizes.
  bool symbolic(std::int64_t value) const;
  // Whether the iteration space's row count / row length may: by origin
  // where known, else by value.
  bool xnumel_symbolic(std::int64_t xnumel) const;
  bool rnumel_symbolic(std::int64_t rnumel) const;
  // One use of a size: `literal`, or a new entry where the size may be
  // symbolic (by its origin where known, else by value).
  std::string use(std::int64_t value, const std::string& literal);
  // One use that is an entry whatever its origin (an extent of the
  // iteration space, where symbolic sizes show).
  std::string entry(std::int64_t value);
  // A float constant of `type` (the source's name for it): `literal`, or
  // where it is a whole number from 2 up that may be a symbolic size (a
  // mean's count), a use of that size converted to `type` (int-to-float
  // conversion rounds to nearest, as the literal would), so that the source
  // does not depend on it.
  std::string float_use(double value, const std::string& literal, const std::string& type);
  // An int constant of `type` in the kernel's body: the same, for a whole
  // number from 2 up that may be a symbolic size (where a cat's second part
  // starts: the length of a KV cache). Index constants, where divisions
  // happen, go through `use` instead.
  std::string int_use(std::int64_t value, const std::string& literal, const std::string& type);
  // The table's values, in entry order.
  const std::vector<std::int64_t>& values() const { return values_; }

 private:
  bool enabled_;
  const std::vector<std::int64_t>& constant_sizes_;
  const SizeOrigins& origins_;
  std::string (*entry_name_)(std::size_t);
  std::vector<std::int64_t> values_;
  std::size_t uses_ = 0;  // sizes written so far (SizeOrigins::static_uses)
};

// `kernel` emitted with size arguments whose origins come from `reference`
// (the same graph lowered at other values of its symbols; null: none):
// both emitted with every size from the table must give one text, and then
// a use whose value is the same in both tables is static (a literal). Where
// the two differ in form the origins stay guessed by value. `Options` has
// size_arguments and origins; `emit(kernel, options)` returns a kernel with
// `source` and `size_args`.
template <class Options, class Emit>
auto emit_with_origins(const ir::Kernel& kernel, const ir::Kernel* reference, Options options, Emit emit) {
  if (!options.size_arguments || reference == nullptr) return emit(kernel, options);
  options.origins = SizeOrigins{};
  options.origins.known = true;
  options.origins.xnumel_symbolic = kernel.xnumel != reference->xnumel;
  options.origins.rnumel_symbolic = kernel.rnumel != reference->rnumel;
  const auto mine = emit(kernel, options);
  const auto other = emit(*reference, options);
  if (mine.source != other.source || mine.size_args.size() != other.size_args.size()) {
    options.origins = {};
    return emit(kernel, options);
  }
  for (std::size_t u = 0; u < mine.size_args.size(); ++u)
    options.origins.static_uses.push_back(mine.size_args[u] == other.size_args[u]);
  return emit(kernel, options);
}

}  // namespace dv::codegen

// Scheduling: which tensor definitions are realized, how they group into
// kernels, and the steps of the Program.
//
// Fusion is decided from indices alone. A fusion group has a layout: an
// iteration shape split into kept dims (enumerated by the kernel's x) and
// reduced dims (enumerated by r). Every member is evaluated at "its point" of
// that space; a member may read another member only at exactly that point,
// which is checked by comparing the simplified flat indices. If a read lands
// elsewhere, the candidate is not fusable and starts a group of its own.
#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "codegen/arena_plan.h"
#include "codegen/common_nodes.h"
#include "codegen/library_bias.h"
#include "codegen/program.h"
#include "codegen/tensor_def.h"

namespace dv::codegen {

namespace {

using ir::IndexExpr;
using ir::ValueId;

struct NotFusable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr std::size_t kMaxGroupMembers = 64;

std::int64_t product(const std::vector<std::int64_t>& v) {
  std::int64_t n = 1;
  for (auto s : v) n *= s;
  return n;
}

// The coordinates of point `flat` of a space of `sizes` whose dims are
// counted in `order` (outermost first; empty: row-major), so that
// consecutive points are consecutive in a tensor stored in that order.
Coords unflatten_in_order(const IndexExpr& flat, const std::vector<std::int64_t>& sizes, const std::vector<int>& order) {
  if (order.empty()) return ir::unflatten_index(flat, sizes);
  std::vector<std::int64_t> ordered_sizes;
  for (int d : order) ordered_sizes.push_back(sizes.at(d));
  const Coords ordered = ir::unflatten_index(flat, ordered_sizes);
  Coords c(sizes.size(), IndexExpr(0));
  for (std::size_t i = 0; i < order.size(); ++i) c[order[i]] = ordered[i];
  return c;
}

struct Layout {
  std::vector<std::int64_t> iter_sizes;
  std::vector<bool> reduced;  // per iteration dim
  std::int64_t xnumel = 1;
  std::int64_t rnumel = 1;
  std::vector<int> x_order;  // the kept dims (their places among them), outermost first; empty: in order

  static Layout pointwise(const std::vector<std::int64_t>& sizes) {
    Layout l;
    l.iter_sizes = sizes;
    l.reduced.assign(sizes.size(), false);
    l.xnumel = product(sizes);
    return l;
  }
  static Layout of_reduction(const TensorDef& d) {
    Layout l;
    l.iter_sizes = d.input_sizes;
    l.reduced = d.reduced;
    l.xnumel = l.rnumel = 1;
    for (std::size_t i = 0; i < d.input_sizes.size(); ++i) (d.reduced[i] ? l.rnumel : l.xnumel) *= d.input_sizes[i];
    // A reduction stored in an order (TensorDef::order) counts its points in it.
    std::vector<int> place(d.input_sizes.size(), -1);
    int kept = 0;
    for (std::size_t i = 0; i < d.reduced.size(); ++i)
      if (!d.reduced[i]) place[i] = kept++;
    for (int dim : d.order)
      if (!d.reduced.at(dim)) l.x_order.push_back(place[dim]);
    return l;
  }
  // Coordinates of the iteration shape at the point (x, r).
  Coords coords(const IndexExpr& x, const IndexExpr& r) const {
    std::vector<std::int64_t> kept, red;
    for (std::size_t i = 0; i < iter_sizes.size(); ++i) (reduced[i] ? red : kept).push_back(iter_sizes[i]);
    Coords kc = unflatten_in_order(x, kept, x_order), rc = ir::unflatten_index(r, red);
    Coords c;
    std::size_t ki = 0, ri = 0;
    for (std::size_t i = 0; i < iter_sizes.size(); ++i) c.push_back(reduced[i] ? rc[ri++] : kc[ki++]);
    return c;
  }
};

std::string buffer_name(int def) { return "d" + std::to_string(def); }

// Where a def's elements lie: a buffer's strides, else row-major or in the
// def's storage order (TensorDef::order).
std::vector<std::int64_t> storage_strides(const TensorDef& td) {
  return td.kind == TensorDef::Kind::Buffer ? td.strides : ir::ordered_strides(td.sizes, td.order);
}

// Names that do not depend on the kernel's place in the graph: buffers by
// position and role, the entry by content (ir::content_name), so that a
// repeated layer's kernels are one source, compiled once.
void name_by_content(ir::Kernel& k) {
  for (std::size_t i = 0; i < k.buffers.size(); ++i)
    k.buffers[i].name = (k.buffers[i].written ? "out" : "in") + std::to_string(i);
  k.name = ir::content_name(k);
}

// Emits the members of one fusion group into a kernel.
class GroupEmitter : public BodyContext {
 public:
  GroupEmitter(const LoweredGraph& lg, const std::vector<int>& group_of, int group, const Layout& layout,
               const std::string& name, const std::vector<ir::TensorMeta>& values)
      : lg_(lg), group_of_(group_of), group_(group), layout_(layout), values_(values),
        kb_(name, layout.xnumel, layout.rnumel) {}

  ir::KernelBuilder& kb() override { return kb_; }

  ValueId read(int d, const Coords& c) override {
    const TensorDef& td = lg_.defs[d];
    if (auto it = computed_.find(d); it != computed_.end()) {
      if (ir::linear_index(c, storage_strides(td)) != it->second.first)
        throw NotFusable(td.label + " is read at another point than where this kernel computes it");
      return as_stored(td, it->second.second, stored_.count(d) > 0);
    }
    if (in_memory(d)) return load(d, c);
    if (td.kind != TensorDef::Kind::Pointwise) throw std::logic_error("scheduler: unrealized reduction " + td.label);
    auto key = std::make_tuple(d, c, mask_);
    if (auto it = inlined_.find(key); it != inlined_.end()) return it->second;
    ValueId v = as_stored(td, td.body(*this, c));
    inlined_.emplace(std::move(key), v);
    return v;
  }

  // What readers of `td` see of its computed value `v`: a rounded def
  // (TensorDef::rounded) as eager stores it, rounded to its 16-bit dtype.
  // So is a def that this kernel also stores (`stored`) in a 16-bit dtype:
  // its readers here see what the kernels after it load, or a reduction over
  // it here and a pointwise reader of it there would see two values (a
  // softmax's sums taken over the float32 product, its numerators over the
  // product rounded to bf16: columns summing to 1.03).
  ValueId as_stored(const TensorDef& td, ValueId v, bool stored = false) {
    const bool low = td.dtype == ir::DType::BFloat16 || td.dtype == ir::DType::Float16;
    if (!(td.rounded || (stored && low)) || kb_.dtype(v) != ir::DType::Float32) return v;
    return kb_.unary(td.dtype == ir::DType::BFloat16 ? ir::PrimOp::RoundBf16 : ir::PrimOp::RoundF16, v);
  }

  // Under a mask every load is masked (with the masks around it): an inlined
  // def's body is evaluated where it may be out of range, so nothing it
  // loads may touch memory there; its value is then replaced by `other`.
  ValueId read_masked(int d, const Coords& c, ValueId mask, double other) override {
    const ValueId outer = mask_;
    mask_ = outer < 0 ? mask : kb_.binary(ir::PrimOp::LogicalAnd, outer, mask);
    ValueId v;
    if (!computed_.count(d) && in_memory(d)) {
      v = load(d, c, nullptr, other);  // a masked load yields `other` itself
    } else {
      v = read(d, c);
      v = kb_.where(mask, v, kb_.constant(other, kb_.dtype(v)));
    }
    mask_ = outer;
    return v;
  }

  ValueId read_indirect(int d, const Coords& c, int dim, ValueId index) override {
    check_gathered(d);
    const Indirect ind{{dim}, index, storage_strides(lg_.defs[d]).at(dim), lg_.defs[d].sizes.at(dim)};
    return load(d, c, &ind, 0);
  }

  // One offset in elements, the sum of each index times its dim's stride;
  // each index is checked against its own dim (an index past one dim must
  // not land on another row).
  ValueId read_indirect(int d, const Coords& c, const std::vector<std::pair<int, ValueId>>& indices) override {
    if (indices.size() == 1) return read_indirect(d, c, indices[0].first, indices[0].second);
    check_gathered(d);
    const TensorDef& td = lg_.defs[d];
    const std::vector<std::int64_t> strides = storage_strides(td);
    Indirect ind{{}, checked_flat_offset(td, indices, strides), 1, 1};
    for (auto [dim, index] : indices) {
      ind.extent += (td.sizes.at(dim) - 1) * strides.at(dim);
      ind.dims.push_back(dim);
    }
    return load(d, c, &ind, 0);
  }

  // Evaluates member `d` at its point; stores it if `store`.
  void emit_member(int d, bool store) {
    const TensorDef& td = lg_.defs[d];
    if (td.kind == TensorDef::Kind::Scatter) return emit_scatter(td);
    IndexExpr x = kb_.x(), r = kb_.r();
    Coords coords;
    ValueId value;
    IndexExpr point;
    if (td.kind == TensorDef::Kind::Reduction) {
      if (td.input_sizes != layout_.iter_sizes || td.reduced != layout_.reduced)
        throw NotFusable(td.label + " reduces another iteration space");
      coords = layout_.coords(x, r);
      value = td.body(*this, coords);
      if (layout_.rnumel != 1) value = kb_.reduce(td.reduce_op, value);
      Coords out = coords;
      for (std::size_t i = 0; i < out.size(); ++i)
        if (td.reduced[i]) out[i] = 0;
      point = ir::linear_index(out, storage_strides(td));
    } else {
      if (layout_.rnumel > 1 && td.sizes == layout_.iter_sizes) coords = layout_.coords(x, r);
      else if (td.numel() == layout_.xnumel) coords = unflatten_in_order(x, td.sizes, td.order);
      else throw NotFusable(td.label + " does not map onto the group's iteration space");
      value = td.body(*this, coords);
      point = ir::linear_index(coords, storage_strides(td));
    }
    computed_[d] = {point, value};
    if (store) {
      stored_.insert(d);
      int b = buffer_for(d, td.dtype, td.numel(), true);
      kb_.store(b, point, value);
    }
  }

  // A scatter's updates, at every point of its update space, written into
  // its base's memory (which holds the scatter's result once they are done).
  void emit_scatter(const TensorDef& td) {
    if (layout_.rnumel != 1 || layout_.iter_sizes != td.update_sizes)
      throw NotFusable(td.label + " scatters over another iteration space");
    const ScatterPoint p = td.scatter(*this, ir::unflatten_index(kb_.x(), td.update_sizes));
    const auto strides = ir::contiguous_strides(td.sizes);
    Coords at = p.at;
    for (const auto& [dim, index] : p.indexed) at.at(dim) = 0;
    ir::StoreOptions options = scatter_offset(td, p.indexed, strides);
    options.accumulate = td.accumulate;
    const int b = buffer_for(td.deps.at(0), td.dtype, td.numel(), true);
    kb_.store(b, ir::linear_index(at, strides), kb_.cast(p.value, ir::compute_dtype(td.dtype)), options);
  }

  // The data-dependent part of a scatter's element: one indexed dim is the
  // store's offset along it; several are checked here and combined into one
  // flat offset (-1, out of range, when any of them is).
  ir::StoreOptions scatter_offset(const TensorDef& td, const std::vector<std::pair<int, ValueId>>& indexed,
                                  const std::vector<std::int64_t>& strides) {
    ir::StoreOptions o;
    if (indexed.empty()) return o;
    if (indexed.size() == 1) {
      o.offset = indexed[0].second;
      o.offset_stride = strides.at(indexed[0].first);
      o.offset_extent = td.sizes.at(indexed[0].first);
      return o;
    }
    o.offset = checked_flat_offset(td, indexed, strides);
    o.offset_extent = std::max<std::int64_t>(1, td.numel());
    return o;
  }

  // Several indexed dims as one Int64 offset in elements; -1 (out of range
  // of any extent) when an index lies outside its own dim.
  ValueId checked_flat_offset(const TensorDef& td, const std::vector<std::pair<int, ValueId>>& indexed,
                              const std::vector<std::int64_t>& strides) {
    const ir::DType i64 = ir::DType::Int64;
    ValueId valid = -1, flat = kb_.int_constant(0, i64);
    for (const auto& [dim, index] : indexed) {
      const ValueId i = kb_.cast(index, i64);
      const ValueId ok = kb_.binary(ir::PrimOp::LogicalAnd, kb_.binary(ir::PrimOp::Ge, i, kb_.int_constant(0, i64)),
                                    kb_.binary(ir::PrimOp::Lt, i, kb_.int_constant(td.sizes.at(dim), i64)));
      valid = valid < 0 ? ok : kb_.binary(ir::PrimOp::LogicalAnd, valid, ok);
      flat = kb_.binary(ir::PrimOp::Add, flat, kb_.binary(ir::PrimOp::Mul, i, kb_.int_constant(strides.at(dim), i64)));
    }
    return kb_.where(valid, flat, kb_.int_constant(-1, i64));
  }

  const std::set<int>& loaded_defs() const { return loaded_; }
  const std::vector<int>& buffer_defs() const { return buffer_defs_; }
  ir::Kernel finish() && { return std::move(kb_).finish(); }

 private:
  // Coordinates `dims` of a load replaced by `offset` x `stride` elements,
  // the offset in [0, extent).
  struct Indirect {
    std::vector<int> dims;
    ValueId offset;
    std::int64_t stride;
    std::int64_t extent;
  };

  void check_gathered(int d) const {
    const TensorDef& td = lg_.defs[d];
    if (computed_.count(d)) throw NotFusable(td.label + " is read at data-dependent points of this kernel");
    if (!in_memory(d)) throw std::logic_error("scheduler: " + td.label + " is read indirectly but not realized");
  }

  // A tensor in memory (an input, a fallback's output, or realized by another group).
  bool in_memory(int d) const {
    const TensorDef& td = lg_.defs[d];
    return td.kind == TensorDef::Kind::Buffer || (group_of_[d] >= 0 && group_of_[d] != group_);
  }

  // Loads def d at c: coordinates ind->dims given by a value if `ind`, under
  // the current mask (with `other` where it is false) if there is one.
  ValueId load(int d, const Coords& c, const Indirect* ind = nullptr, double other = 0) {
    const TensorDef& td = lg_.defs[d];
    const std::vector<std::int64_t> strides = storage_strides(td);
    std::int64_t extent = td.numel();
    bool aligned = true;
    if (td.kind == TensorDef::Kind::Buffer) {
      const auto& meta = values_.at(td.value);
      extent = meta.storage_extent();
      aligned = meta.aligned16;
    } else {
      loaded_.insert(d);
    }
    int b = buffer_for(d, td.dtype, extent, aligned);
    ir::LoadOptions options;
    Coords at = c;
    if (ind) {
      for (int dim : ind->dims) at.at(dim) = 0;
      options.offset = ind->offset;
      options.offset_stride = ind->stride;
      options.offset_extent = ind->extent;
    }
    options.mask = mask_;
    options.other = other;
    return kb_.load(b, ir::linear_index(at, strides), options);
  }

  int buffer_for(int d, ir::DType dtype, std::int64_t numel, bool aligned) {
    int b = kb_.buffer(buffer_name(d), dtype, numel, aligned);
    if (static_cast<std::size_t>(b) == buffer_defs_.size()) buffer_defs_.push_back(d);
    return b;
  }

  const LoweredGraph& lg_;
  const std::vector<int>& group_of_;
  int group_;
  const Layout& layout_;
  const std::vector<ir::TensorMeta>& values_;
  ir::KernelBuilder kb_;
  std::unordered_map<int, std::pair<IndexExpr, ValueId>> computed_;
  std::unordered_set<int> stored_;  // members of computed_ that this kernel stores
  std::map<std::tuple<int, Coords, ValueId>, ValueId> inlined_;  // (def, coords, mask)
  ValueId mask_ = -1;  // inside read_masked: the conjunction of the masks around the read
  std::set<int> loaded_;
  std::vector<int> buffer_defs_;
};

// The transcendental work (exp, log, tanh, erf, sin, cos, pow, sqrt and
// divisions) of def `d`'s own body, counted in a scratch kernel where every
// read is a constant.
class WorkCounter final : public BodyContext {
 public:
  // `d`: the def to count; its points are the scratch kernel's.
  WorkCounter(const LoweredGraph& lg, int d)
      : lg_(lg), d_(d), kb_("work", std::max<std::int64_t>(lg.defs[d].numel(), 2), 1) {}

  int count() {
    const TensorDef& td = lg_.defs[d_];
    td.body(*this, ir::unflatten_index(kb_.x(), td.sizes));
    int n = 0;
    for (const ir::Instr& i : std::move(kb_).finish().body) n += expensive(i.op);
    return n;
  }

  ir::KernelBuilder& kb() override { return kb_; }
  ValueId read(int d, const Coords&) override {
    const ir::DType t = ir::compute_dtype(lg_.defs[d].dtype);
    return ir::is_floating(t) ? kb_.constant(1.0, t) : kb_.int_constant(1, t);
  }
  ValueId read_masked(int d, const Coords& c, ValueId, double) override { return read(d, c); }
  ValueId read_indirect(int d, const Coords& c, int, ValueId) override { return read(d, c); }
  ValueId read_indirect(int d, const Coords& c, const std::vector<std::pair<int, ValueId>>&) override {
    return read(d, c);
  }

 private:
  static bool expensive(ir::PrimOp op) {
    switch (op) {
      case ir::PrimOp::Exp: case ir::PrimOp::Exp2: case ir::PrimOp::Log: case ir::PrimOp::Log1p: case ir::PrimOp::Tanh:
      case ir::PrimOp::Erf: case ir::PrimOp::Sin: case ir::PrimOp::Cos: case ir::PrimOp::Pow: case ir::PrimOp::Sqrt:
      case ir::PrimOp::Rsqrt: case ir::PrimOp::Div:
        return true;
      default:
        return false;
    }
  }

  const LoweredGraph& lg_;
  int d_;
  ir::KernelBuilder kb_;
};

struct Group {
  Layout layout;
  std::vector<int> members;
  std::set<int> reads;  // realized defs and buffers its members read
  int position = 0;     // in the step sequence
};

struct SequenceEntry {
  int group = -1;          // a fusion group, or
  int fallback_node = -1;  // a fallback call
};

class Scheduler {
 public:
  Scheduler(const ir::Graph& g, LoweredGraph lg, const CompileOptions& options)
      : g_(g), lg_(std::move(lg)), options_(options) {}

  Program run();

 private:
  void find_realized();
  void realize_shared_chains(const std::vector<bool>& live);
  void realize_repeated_work();
  std::set<int> realized_deps(int d) const;
  int position_of(int d) const;
  void assign(int d);
  bool try_join(Group& group, int group_id, int d, const std::set<int>& deps);
  struct Built {
    ir::Kernel kernel;
    std::vector<int> buffer_defs;
    std::set<int> loaded;
  };
  Built build(int group_id, const Layout& layout, const std::vector<int>& members, const std::set<int>& stores) const;
  Program assemble();

  const ir::Graph& g_;
  LoweredGraph lg_;
  CompileOptions options_;
  std::vector<bool> realized_;
  std::set<int> roots_;
  std::vector<int> group_of_;
  std::vector<Group> groups_;
  std::vector<SequenceEntry> sequence_;
  std::unordered_map<int, int> fallback_position_;  // node -> position
};

void Scheduler::find_realized() {
  auto def_of = [&](int v) { return lg_.value_def.at(v); };
  for (int v : g_.outputs) roots_.insert(def_of(v));
  for (const auto& m : g_.mutations) roots_.insert(def_of(m.value));
  for (int n : lg_.fallback_nodes) {
    for (const auto& a : g_.nodes[n].args) {
      if (a.kind == ir::Arg::Kind::Tensor) roots_.insert(def_of(a.tensor));
      if (a.kind == ir::Arg::Kind::TensorList)
        for (auto v : a.ints)
          if (v >= 0) roots_.insert(def_of(static_cast<int>(v)));
    }
  }
  std::vector<bool> live(lg_.defs.size(), false);
  for (int r : roots_) live[r] = true;
  for (std::size_t d = lg_.defs.size(); d-- > 0;) {
    if (!live[d]) continue;
    for (int dep : lg_.defs[d].deps) live[dep] = true;
  }
  // Defs read at data-dependent coordinates must be in memory.
  std::vector<bool> gathered(lg_.defs.size(), false);
  for (std::size_t d = 0; d < lg_.defs.size(); ++d)
    if (live[d])
      for (int g : lg_.defs[d].gathered) gathered[g] = true;
  realized_.assign(lg_.defs.size(), false);
  for (std::size_t d = 0; d < lg_.defs.size(); ++d) {
    const TensorDef& td = lg_.defs[d];
    if (!live[d] || td.kind == TensorDef::Kind::Buffer) continue;
    realized_[d] = td.kind != TensorDef::Kind::Pointwise || gathered[d] || roots_.count(static_cast<int>(d));
  }
  // A scatter writes into its base's memory: the base is realized and stored.
  for (std::size_t d = 0; d < lg_.defs.size(); ++d) {
    if (!live[d] || lg_.defs[d].kind != TensorDef::Kind::Scatter) continue;
    realized_[lg_.defs[d].deps.at(0)] = true;
    roots_.insert(lg_.defs[d].deps.at(0));
  }
  realize_shared_chains(live);
  realize_repeated_work();
  // Realized for kernels alone, a float32 def whose values a 16-bit dtype
  // holds is stored in it (TensorDef::held_by).
  for (std::size_t d = 0; d < lg_.defs.size(); ++d) {
    TensorDef& td = lg_.defs[d];
    if (realized_[d] && td.kind == TensorDef::Kind::Pointwise && td.held_by && !roots_.count(static_cast<int>(d)))
      td.dtype = *td.held_by;
  }
}

// A pointwise def read by several defs is inlined into each of them. That
// is free while it reads little, but a chain of them (the residual stream of
// a pre-norm transformer: x + a1 + m1 + a2 + m2 ...) would make every later
// layer reload every earlier layer's buffers. Such a def is realized once it
// reads kSharedChainLoads or more buffers (defs in dependency order, so its
// own inputs are decided first).
void Scheduler::realize_shared_chains(const std::vector<bool>& live) {
  constexpr std::size_t kSharedChainLoads = 4;
  std::vector<int> readers(lg_.defs.size(), 0);
  for (std::size_t d = 0; d < lg_.defs.size(); ++d)
    if (live[d])
      for (int dep : std::set<int>(lg_.defs[d].deps.begin(), lg_.defs[d].deps.end())) ++readers[dep];
  for (std::size_t d = 0; d < lg_.defs.size(); ++d) {
    const TensorDef& td = lg_.defs[d];
    if (!live[d] || realized_[d] || td.kind != TensorDef::Kind::Pointwise || readers[d] < 2) continue;
    if (realized_deps(static_cast<int>(d)).size() >= kSharedChainLoads) realized_[d] = true;
  }
}

// An inlined def is computed once for each element of the kernel that
// reads it: where that kernel has several times its elements (nearest
// upsampling repeats each element, a cat computes every part's value for
// each of its elements), its work repeats. MonoDepth's decoder computed its
// ELU (exp, log, a division) twelve times an element so. A def whose own
// body has transcendental work, read by a realized def with kRepeats times
// its elements, is realized where it is large enough for a kernel of its
// own to pay.
void Scheduler::realize_repeated_work() {
  constexpr std::int64_t kRepeats = 2, kMinElements = std::int64_t{1} << 16;
  constexpr int kMinExpensiveOps = 2;
  std::vector<int> counted(lg_.defs.size(), -1);  // by def: several readers may ask
  const auto work = [&](int d) {
    if (counted[d] < 0) counted[d] = WorkCounter(lg_, d).count();
    return counted[d];
  };
  for (std::size_t r = lg_.defs.size(); r-- > 0;) {
    const TensorDef& reader = lg_.defs[r];
    if (!realized_[r] || reader.kind != TensorDef::Kind::Pointwise) continue;
    std::set<int> seen;
    std::vector<int> stack(reader.deps.begin(), reader.deps.end());
    while (!stack.empty()) {
      const int d = stack.back();
      stack.pop_back();
      const TensorDef& td = lg_.defs[d];
      if (!seen.insert(d).second || realized_[d] || td.kind != TensorDef::Kind::Pointwise) continue;
      if (td.numel() >= kMinElements && reader.numel() >= kRepeats * td.numel() &&
          work(d) >= kMinExpensiveOps) {
        realized_[d] = true;
        continue;
      }
      stack.insert(stack.end(), td.deps.begin(), td.deps.end());
    }
  }
}

// Realized defs and buffers that `d` reads, looking through inlined pointwise defs.
std::set<int> Scheduler::realized_deps(int d) const {
  std::set<int> out, seen;
  std::vector<int> stack(lg_.defs[d].deps.begin(), lg_.defs[d].deps.end());
  while (!stack.empty()) {
    int x = stack.back();
    stack.pop_back();
    if (!seen.insert(x).second) continue;
    const TensorDef& td = lg_.defs[x];
    if (realized_[x] || td.kind == TensorDef::Kind::Buffer) out.insert(x);
    else stack.insert(stack.end(), td.deps.begin(), td.deps.end());
  }
  return out;
}

// The step position at which def `d` becomes available (-1: before any step).
int Scheduler::position_of(int d) const {
  const TensorDef& td = lg_.defs[d];
  if (td.kind == TensorDef::Kind::Buffer) {
    if (td.fallback_node < 0) return -1;
    return fallback_position_.at(td.fallback_node);
  }
  return groups_.at(group_of_.at(d)).position;
}

Scheduler::Built Scheduler::build(int group_id, const Layout& layout, const std::vector<int>& members,
                                  const std::set<int>& stores) const {
  GroupEmitter e(lg_, group_of_, group_id, layout, "k" + std::to_string(group_id), g_.values);
  for (int m : members) e.emit_member(m, stores.count(m) > 0);
  Built b{{}, e.buffer_defs(), e.loaded_defs()};
  b.kernel = std::move(e).finish();
  return b;
}

bool Scheduler::try_join(Group& group, int group_id, int d, const std::set<int>& deps) {
  if (group.members.size() >= kMaxGroupMembers) return false;
  // A scatter's kernel is its updates alone: what follows must see them complete.
  if (lg_.defs[d].kind == TensorDef::Kind::Scatter || lg_.defs[group.members.at(0)].kind == TensorDef::Kind::Scatter)
    return false;
  for (int dep : deps) {  // everything read from outside must be ready before the group runs
    bool inside = !(lg_.defs[dep].kind == TensorDef::Kind::Buffer) && group_of_[dep] == group_id;
    if (!inside && position_of(dep) >= group.position) return false;
  }
  std::vector<Layout> layouts{group.layout};
  if (lg_.defs[d].kind == TensorDef::Kind::Reduction && group.layout.rnumel == 1)
    layouts.push_back(Layout::of_reduction(lg_.defs[d]));  // a pointwise group becomes the reduction's prologue
  std::vector<int> members = group.members;
  members.push_back(d);
  for (const Layout& layout : layouts) {
    try {
      build(group_id, layout, members, {});
      group.layout = layout;
      group.members = members;
      group.reads.insert(deps.begin(), deps.end());
      group_of_[d] = group_id;
      return true;
    } catch (const NotFusable&) {
    }
  }
  return false;
}

void Scheduler::assign(int d) {
  std::set<int> deps = realized_deps(d);
  if (options_.fuse) {
    // Groups that compute what d reads (vertical fusion) or read what d reads
    // (horizontal fusion: the shared inputs are loaded once).
    std::vector<int> candidates;
    for (int dep : deps)
      if (lg_.defs[dep].kind != TensorDef::Kind::Buffer) candidates.push_back(group_of_[dep]);
    for (std::size_t gid = 0; gid < groups_.size(); ++gid) {
      for (int dep : deps) {
        if (groups_[gid].reads.count(dep)) {
          candidates.push_back(static_cast<int>(gid));
          break;
        }
      }
    }
    std::sort(candidates.begin(), candidates.end(),
              [&](int a, int b) { return groups_[a].position > groups_[b].position; });
    candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
    for (int gid : candidates)
      if (try_join(groups_[gid], gid, d, deps)) return;
  }
  const TensorDef& td = lg_.defs[d];
  Group g;
  g.layout = td.kind == TensorDef::Kind::Reduction ? Layout::of_reduction(td)
             : td.kind == TensorDef::Kind::Scatter ? Layout::pointwise(td.update_sizes)
                                                   : Layout::pointwise(td.sizes);
  g.members = {d};
  g.reads = deps;
  g.position = static_cast<int>(sequence_.size());
  group_of_[d] = static_cast<int>(groups_.size());
  sequence_.push_back({static_cast<int>(groups_.size()), -1});
  groups_.push_back(std::move(g));
}

Program Scheduler::run() {
  find_realized();
  group_of_.assign(lg_.defs.size(), -1);
  for (std::size_t d = 0; d < lg_.defs.size(); ++d) {
    const TensorDef& td = lg_.defs[d];
    if (td.kind == TensorDef::Kind::Buffer && td.fallback_node >= 0 && !fallback_position_.count(td.fallback_node)) {
      fallback_position_[td.fallback_node] = static_cast<int>(sequence_.size());
      sequence_.push_back({-1, td.fallback_node});
    }
    if (realized_[d]) assign(static_cast<int>(d));
  }
  // Fallback nodes without tensor outputs still run, at their place.
  for (int n : lg_.fallback_nodes) {
    if (!fallback_position_.count(n)) {
      fallback_position_[n] = static_cast<int>(sequence_.size());
      sequence_.push_back({-1, n});
    }
  }
  return assemble();
}

Program Scheduler::assemble() {
  Program p;
  p.graph = g_;
  // Which realized defs must reach memory: roots, and whatever another kernel loads.
  std::set<int> stores = roots_;
  for (std::size_t gid = 0; gid < groups_.size(); ++gid) {
    auto b = build(static_cast<int>(gid), groups_[gid].layout, groups_[gid].members, {});
    stores.insert(b.loaded.begin(), b.loaded.end());
  }
  // Slots: graph inputs, fallback outputs, stored kernel results.
  std::unordered_map<int, int> def_slot;
  auto add_slot = [&](Slot s, int d) {
    p.slots.push_back(std::move(s));
    def_slot[d] = static_cast<int>(p.slots.size()) - 1;
  };
  for (std::size_t d = 0; d < lg_.defs.size(); ++d) {
    const TensorDef& td = lg_.defs[d];
    Slot s;
    s.dtype = td.dtype;
    s.sizes = td.sizes;
    s.value = td.value;
    if (td.kind == TensorDef::Kind::Buffer) {
      s.origin = td.graph_input >= 0 ? Slot::Origin::GraphInput : Slot::Origin::Fallback;
      s.graph_input = td.graph_input;
      s.strides = td.strides;
      add_slot(std::move(s), static_cast<int>(d));
    } else if (td.kind == TensorDef::Kind::Scatter && realized_[d]) {
      def_slot[static_cast<int>(d)] = def_slot.at(td.deps.at(0));  // its result is its base's memory, updated
    } else if (realized_[d] && stores.count(static_cast<int>(d))) {
      s.origin = Slot::Origin::Kernel;
      s.strides = storage_strides(td);
      add_slot(std::move(s), static_cast<int>(d));
    }
  }
  for (std::size_t v = 0; v < lg_.value_def.size(); ++v) {  // name slots by the graph values they hold
    int d = lg_.value_def[v];
    if (d >= 0 && def_slot.count(d) && p.slots[def_slot[d]].value < 0) p.slots[def_slot[d]].value = static_cast<int>(v);
  }
  for (const auto& entry : sequence_) {
    Step step;
    if (entry.group >= 0) {
      const Group& grp = groups_[entry.group];
      auto b = build(entry.group, grp.layout, grp.members, stores);
      step.kind = Step::Kind::Kernel;
      step.kernel = static_cast<int>(p.kernels.size());
      for (int d : b.buffer_defs) step.buffer_slots.push_back(def_slot.at(d));
      FusionGroup fg;
      fg.kernel = step.kernel;
      for (int m : grp.members) fg.members.push_back("def" + std::to_string(m) + " " + lg_.defs[m].label);
      p.groups.push_back(std::move(fg));
      name_by_content(b.kernel);
      p.kernels.push_back(std::move(b.kernel));
    } else {
      const ir::Node& n = g_.nodes[entry.fallback_node];
      const bool view = std::find(lg_.view_nodes.begin(), lg_.view_nodes.end(), entry.fallback_node) != lg_.view_nodes.end();
      const bool chosen = std::find(lg_.aten_nodes.begin(), lg_.aten_nodes.end(), entry.fallback_node) != lg_.aten_nodes.end();
      step.kind = view ? Step::Kind::View : chosen ? Step::Kind::Aten : Step::Kind::Fallback;
      step.node = entry.fallback_node;
      for (const auto& a : n.args) {
        if (a.kind == ir::Arg::Kind::Tensor) step.fallback_values.push_back(a.tensor);
        if (a.kind == ir::Arg::Kind::TensorList)
          for (auto v : a.ints)
            if (v >= 0) step.fallback_values.push_back(static_cast<int>(v));
      }
      step.num_fallback_inputs = static_cast<int>(step.fallback_values.size());
      step.fallback_values.insert(step.fallback_values.end(), n.outputs.begin(), n.outputs.end());
      for (int v : step.fallback_values) step.value_slots.push_back(v < 0 ? -1 : def_slot.at(lg_.value_def.at(v)));
      if (step.kind == Step::Kind::Fallback) p.fallback_ops.push_back(n.op);
    }
    p.steps.push_back(std::move(step));
  }
  for (int v : g_.outputs) p.output_slots.push_back(def_slot.at(lg_.value_def.at(v)));
  for (const auto& m : g_.mutations)
    p.mutation_slots.emplace_back(def_slot.at(lg_.value_def.at(m.input)), def_slot.at(lg_.value_def.at(m.value)));
  for (const auto& r : g_.restrides) {
    int slot = def_slot.at(lg_.value_def.at(r.input));
    if (p.slots[slot].origin != Slot::Origin::GraphInput) throw std::runtime_error("restride of a value that is not an input");
    p.restride_slots.push_back(slot);
  }
  // Free each intermediate after its last use.
  std::set<int> kept(p.output_slots.begin(), p.output_slots.end());
  for (auto [in, val] : p.mutation_slots) kept.insert(val);
  std::vector<int> last_use(p.slots.size(), -1);
  for (std::size_t i = 0; i < p.steps.size(); ++i) {
    const Step& s = p.steps[i];
    for (int sl : s.kind == Step::Kind::Kernel ? s.buffer_slots : s.value_slots)
      if (sl >= 0) last_use[sl] = static_cast<int>(i);
  }
  for (std::size_t sl = 0; sl < p.slots.size(); ++sl) {
    if (p.slots[sl].origin == Slot::Origin::GraphInput || kept.count(static_cast<int>(sl)) || last_use[sl] < 0) continue;
    p.steps[last_use[sl]].frees.push_back(static_cast<int>(sl));
  }
  p.notes = lg_.notes;
  return p;
}

}  // namespace

Program compile_graph(const ir::Graph& captured, const CompileOptions& options) {
  const ir::Graph merged = merge_identical_nodes(captured);
  if (options.cpu_plans_run_aten && ir::graph_device(merged) == "cpu")
    return Scheduler(merged, lower_graph_to_aten(merged), options).run();  // addmm stays whole too
  if (options.cpu_rows_run_aten && ir::graph_device(merged) == "cpu")
    return Scheduler(merged, lower_graph_rows_to_aten(merged, options.cpu_min_rows), options).run();
  const ir::Graph unfused = options.unfuse_library_bias ? unfuse_library_bias(merged) : merged;
  const ir::Graph graph = channels_last_activations(unfused, options.channels_last, options.channels_last_weight_copies);
  LoweredGraph lowered = lower_graph(graph);
  store_in_value_layout(graph, lowered);
  return Scheduler(graph, std::move(lowered), options).run();
}

std::string describe(const Program& p) {
  std::ostringstream os;
  os << "slots:\n";
  for (std::size_t i = 0; i < p.slots.size(); ++i) {
    const Slot& s = p.slots[i];
    const char* origin = s.origin == Slot::Origin::GraphInput ? "input" : s.origin == Slot::Origin::Fallback ? "fallback" : "kernel";
    os << "  s" << i << ": " << origin << " " << ir::dtype_name(s.dtype) << "[";
    for (std::size_t k = 0; k < s.sizes.size(); ++k) os << (k ? "," : "") << s.sizes[k];
    os << "]";
    if (!s.strides.empty() && s.strides != ir::contiguous_strides(s.sizes)) {  // another layout than row-major
      os << " strides=";
      for (std::size_t k = 0; k < s.strides.size(); ++k) os << (k ? "," : "") << s.strides[k];
    }
    if (s.value >= 0) os << " %" << s.value;
    os << "\n";
  }
  os << "steps:\n";
  for (std::size_t i = 0; i < p.steps.size(); ++i) {
    const Step& s = p.steps[i];
    if (s.kind == Step::Kind::Kernel) {
      os << "  " << i << ": kernel " << p.kernels[s.kernel].name << " (";
      for (std::size_t k = 0; k < s.buffer_slots.size(); ++k) os << (k ? ", " : "") << "s" << s.buffer_slots[k];
      os << ")";
    } else {
      os << "  " << i << ": " << (s.kind == Step::Kind::View ? "view " : s.kind == Step::Kind::Aten ? "aten " : "fallback ") << p.graph.nodes[s.node].op << " (";
      for (std::size_t k = 0; k < s.value_slots.size(); ++k)
        os << (k ? ", " : "") << (static_cast<int>(k) == s.num_fallback_inputs ? "-> " : "")
           << (s.value_slots[k] < 0 ? std::string("none") : "s" + std::to_string(s.value_slots[k]));
      os << ")";
    }
    if (!s.frees.empty()) {
      os << " free";
      for (int f : s.frees) os << " s" << f;
    }
    os << "\n";
  }
  os << "fusion groups:\n";
  for (const auto& g : p.groups) {
    os << "  " << p.kernels[g.kernel].name << ":";
    for (const auto& m : g.members) os << " [" << m << "]";
    os << "\n";
  }
  os << "outputs:";
  for (int s : p.output_slots) os << " s" << s;
  os << "\n";
  // (The runtime also leaves out kept constants and inputs of ATen views.)
  const ArenaPlan arena = plan_arena(p, {}, library_steps_into(p));
  os << "arena: " << arena.bytes << " bytes for a live peak of " << arena.live_peak_bytes << " (" << arena.results_over_inputs()
     << " results written over an input that dies at them), beside " << arena.others_peak_bytes << " of other storage at its peak; "
     << arena.together_peak_bytes << " together\n";
  for (const auto& n : p.notes) os << "fallback: " << n << "\n";
  return os.str();
}

}  // namespace dv::codegen

// The CUDA emitter's class, shared by the files that write its kernel forms:
// cuda_emitter.cpp (analysis, values, instructions, reductions, the entry and
// its constants), cuda_pointwise.cpp and cuda_rows.cpp. A new kernel form is
// one more file with its emit_ method. Internal to codegen.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "codegen/cuda_emitter.h"
#include "codegen/cuda_text.h"
#include "ir/loop_ir.h"

namespace dv::codegen::cuda {

// ---------------------------------------------------------------------------
// A segment: the code region over which lane arrays are defined.

struct Segment {
  enum class Mask { None, LastChunk, Every };
  int nchunk = 1;                 // chunks in each lane array
  int width = 1;                  // W: lanes per chunk
  std::string base;               // C variable: the lane variable at chunk 0, lane 0
  std::int64_t chunk_stride = 0;  // lane-variable distance between consecutive chunks
  Mask mask = Mask::None;         // which chunks may lie past `limit`
  std::string limit;              // lanes >= limit are outside the iteration space
  std::string store_guard;        // extra condition for stores (e.g. "row_ok"), or ""
  std::string lane_var;           // "x" (pointwise) or "r" (row kernels)
  int size() const { return nchunk * width; }
};

// ---------------------------------------------------------------------------
// The emitter

struct RowLayout;  // how a row kernel's threads cover its rows (see emit_rows)

class Emitter {
 public:
  Emitter(const Kernel& k, const DeviceSpec& d, const KernelTuning& t)
      : k_(k), dev_(d), tune_(t), table_(d.size_arguments, d.constant_sizes, d.origins, &table_entry_name) {}
  CudaKernel run();

 private:
  // Analysis.
  void validate() const;
  void analyze();
  bool needs_64bit() const;
  int max_lane_access_bytes() const;
  bool has_lane_values(int bytes) const;
  std::vector<int> pass_of_values(int* num_passes, int* max_carried) const;

  // Emission of values.
  std::string name(ValueId id) const;
  std::string ref(ValueId id, const std::string& k) const;  // operand reference at array element k
  DType arg_type(const Instr& in, int i) const { return k_.body[in.args[i]].dtype; }
  std::string op_expr(const Instr& in, const std::vector<std::string>& a) const;
  bool is_constant_one(ValueId v) const;
  std::string cast_expr(DType from, DType to, const std::string& a) const;
  std::string load_conv(DType storage, const std::string& e) const;
  std::string gather_expr(const Instr& in, const std::string& index, const std::string& k) const;
  std::string store_conv(DType value, DType storage, const std::string& e) const;
  std::string scatter_store(const Instr& in, const std::string& index, const std::string& k) const;
  std::string buf(int b) const { return cat("b", b, "_", c_identifier(k_.buffers[b].name)); }
  std::string scalar_index(const IndexExpr& e) const;
  bool symbolic_size(std::int64_t value) const;
  bool xnumel_symbolic() const;
  bool rnumel_symbolic() const;
  std::string size_use(std::int64_t value, const std::string& literal) const;
  std::int64_t layout_xnumel() const;
  ConstMap size_text() const;
  static std::string table_entry_name(std::size_t i);
  std::string constant_text(const Instr& in) const;
  std::string size_ll(std::int64_t value) const;
  std::string checked_address(const Instr& in, const std::string& index, const std::string& k) const;
  void emit_size_constant(const std::string& name, std::int64_t value);
  CudaKernel with_size_arguments(CudaKernel k) const;
  std::string lane_index(const IndexExpr& e, const Segment& s, const std::string& lane_value) const;
  LaneAccess access_kind(const Instr& in, const Segment& s) const;
  // The chunk lies in the row: "" (always), "l0 < L", or the disjunction
  // "c < N || l0 < L", which a caller joining it to another condition brackets.
  std::string chunk_valid(const Segment& s) const;
  void begin_chunk_loop(const Segment& s, bool need_l0 = true);

  void use_operands(const Instr& in);  // flushes pending reductions the instruction reads
  void emit_scalar(ValueId id, const std::string& store_guard);
  void emit_lanes(ValueId id, const Segment& s);
  void emit_lane_list(const std::vector<ValueId>& ids, const Segment& s);
  std::string row_load_call(ValueId id, const Segment& s, const std::string& ptr) const;
  std::string vector_store(const std::string& ptr, const std::string& value, int bytes) const;
  bool fast_math() const;
  void emit_elementwise_run(const std::vector<ValueId>& ids, const Segment& s);
  void emit_lane_load(ValueId id, const Segment& s);
  void emit_lane_gather(ValueId id, const Segment& s);
  bool lane_uniform(ValueId id, const Segment& s) const;
  bool uniform_comparison(const Instr& in, const Segment& s) const;
  void emit_lane_masked_vector(ValueId id, const Segment& s);
  void emit_lane_store(ValueId id, const Segment& s);
  void emit_lane_scatter(ValueId id, const Segment& s);
  bool packs_halves(DType value, DType storage, int width) const;
  void emit_packed_half_store(const Instr& in, const Segment& s);
  void emit_lane_index(ValueId id, const Segment& s);
  void emit_reduce_init(ValueId id, const std::string& acc, int width);
  void emit_reduce_accumulate(ValueId id, const Segment& s, const std::string& acc);
  void emit_reduce_finish(ValueId id, const std::string& acc, int width);
  void emit_fold_lanes(ReduceOp op, DType t, const std::string& acc, int width);
  void emit_butterfly(ReduceOp op, DType t, const std::vector<std::string>& vars, int group);
  void emit_slot_combine(ReduceOp op, DType t, const std::string& var, bool declare, const std::string& array, int parts,
                         const std::function<std::string(const std::string&)>& slot);
  void flush_reductions();
  ValueId resolve(ValueId id) const;
  ValueId squared_deviation_source(ValueId sq_sum) const;
  void find_moment_pairs(const Segment& s, bool persistent, std::int64_t steps);
  void emit_moments(ValueId sum, ValueId sq_sum, const Segment& s);
  bool sums_pivoted(ValueId sum) const;
  void emit_thread_moments(ValueId x, const std::string& pivot, const Segment& s, const std::string& thread_sum);
  void emit_moments_combine(ValueId sum, ValueId sq_sum, bool b_is_a);
  void emit_looped_moments_start(ValueId sum);
  void emit_looped_moments_step(ValueId sum, const Segment& s);
  void emit_looped_moments_finish(ValueId sum, int width);
  void emit_moments_flush(ValueId sq_sum, int parts, const std::function<std::string(const std::string&)>& slot);
  bool has_row_start_value(ValueId id, int budget) const;
  std::string row_start_value(ValueId id);

  // Kernels.
  void emit_prelude_and_constants(const std::string& strategy);
  std::string signature(int threads) const;
  void emit_empty();
  void emit_pointwise();
  void emit_rows();
  bool prefers_col_major() const;
  bool writes_rows() const;  // some live r-level Store
  bool prefers_one_looped_step(std::int64_t chunks, int vec, std::int64_t widest_tpr) const;
  std::int64_t whole_warps_threads(std::int64_t chunks, int target_chunks, std::int64_t max_block) const;
  void emit_rows_kernel(const RowLayout& L, Segment s, const std::vector<int>& pass, int num_passes);
  void emit_rows_persistent(const Segment& s, const std::vector<int>& pass);
  void emit_rows_looped(Segment s, const std::string& outer, const std::vector<int>& pass,
                        const std::vector<std::vector<char>>& needs);
  std::vector<char> lanes_needed_by_pass(const std::vector<int>& pass, int p) const;
  void set_row_load_hints(const std::vector<std::vector<char>>& needs, int p);

  const Kernel& k_;
  const DeviceSpec& dev_;
  const KernelTuning& tune_;
  Writer w_;
  std::string entry_;
  // Size arguments (DeviceSpec::size_arguments): the table's values, written as uses come.
  mutable SizeTable table_;
  LaunchConfig launch_;
  bool idx64_ = false;

  std::vector<char> live_;   // contributes to a Store
  std::vector<char> lanes_;  // a lane array (else a scalar)
  std::vector<ValueId> alias_;  // a value that is another one (Reduce with rnumel == 1), or -1
  // Lane arrays of f16/bf16 loads kept as loaded (two to a register) and
  // converted where used: bf16 layer_norm needed 64 registers a thread with
  // its row, weight and bias converted on load, 48 this way.
  std::vector<char> raw_half_;
  bool rows_ = false;           // row kernel (rnumel > 1)

  // Row-kernel layout.
  int tpr_ = 1, rpb_ = 1, threads_ = 32;
  bool col_major_ = false;
  bool loads_once_ = false;  // a row kernel that writes no row: its rows' 16-byte loads skip L1
  // Looped rows: per Load, the cache hint of its 16-byte row loads in the pass being written.
  enum class RowLoadHint { None, Keep, Last };
  std::vector<RowLoadHint> row_load_hint_;
  std::vector<ValueId> pending_;  // reductions written to shared memory, not yet read back
  // One-pass variance (persistent rows, looped rows of one step): for a sum R1, the R2 =
  // sum((x - R1/N)^2) computed with it, or -1; for such an R2, its R1, or -1.
  std::vector<ValueId> sq_sum_of_, sum_of_sq_;
  int moments_per_thread_ = 0;  // K: elements each thread holds (all valid)
  std::vector<std::string> row_start_;  // row_start_value's memo: emitted scalar names
};

}  // namespace dv::codegen::cuda

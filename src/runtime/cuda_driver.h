// The CUDA driver API, loaded at run time (dlopen of libcuda.so.1), so deepvisor
// loads and runs on a machine without a GPU or driver: available() is then false
// and unavailable_reason() says why.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

// The same opaque handle types as <cuda.h> (repeating an identical typedef is
// allowed), so that includers need no CUDA header.
typedef struct CUfunc_st* CUfunction;
typedef struct CUmod_st* CUmodule;
typedef struct CUctx_st* CUcontext;

namespace dv::runtime {

// A failed driver call; what() names the call, the kernel if any, and CUDA's error.
class CudaError : public std::runtime_error {
 public:
  CudaError(const std::string& message, int code) : std::runtime_error(message), code_(code) {}
  int code() const { return code_; }  // the CUresult (0 when the driver is unavailable)

 private:
  int code_;
};

class CudaDriver {
 public:
  // The process-wide driver, loaded from default_candidates() on first use.
  static CudaDriver& instance();

  // $DEEPVISOR_CUDA_DRIVER_LIBRARY if set, then "libcuda.so.1".
  static std::vector<std::string> default_candidates();

  // Loads the first candidate with every needed symbol, then runs cuInit(0).
  explicit CudaDriver(const std::vector<std::string>& candidates);
  ~CudaDriver();  // keeps the library, modules and contexts: kernels may run until exit
  CudaDriver(const CudaDriver&) = delete;
  CudaDriver& operator=(const CudaDriver&) = delete;

  // True when the driver loaded, initialised and sees at least one device.
  bool available() const { return api_ != nullptr; }
  std::string unavailable_reason() const { return reason_; }
  int device_count() const { return device_count_; }
  int driver_version() const { return driver_version_; }  // e.g. 13000; 0 if unavailable

  // Makes a context of `device` current on this thread: keeps the current one if
  // it belongs to `device`, else retains the device's primary context (the one
  // PyTorch uses) and makes it current.
  void ensure_context(int device);

  struct DeviceInfo {
    int arch = 0;  // compute capability as major*10+minor, e.g. 90
    int sm_count = 0;
    int max_threads_per_block = 0;
    int max_shared_per_block_optin = 0;  // bytes, with the dynamic opt-in
    int l2_bytes = 0;
    std::string name;  // e.g. "NVIDIA H200"
  };
  DeviceInfo device_info(int device);

  // Loads `cubin` into the current context and returns its kernel `name`. The
  // module stays loaded for the life of the process, and is loaded once a
  // context: a cubin of several kernels (nvrtc_batch.h) serves each of them.
  // Needs a current context.
  CUfunction load_function(const std::string& cubin, const std::string& name);

  // Launches f on `stream` (a CUstream; nullptr is the legacy default stream).
  // Above 48 KiB of dynamic shared memory it first raises the kernel's limit.
  void launch(CUfunction f, unsigned grid_x, unsigned grid_y, unsigned grid_z, unsigned block_x,
              unsigned block_y, unsigned block_z, unsigned shared_bytes, void* stream, void** args);

  // Small helpers for tests and tools; deepvisor's buffers come from PyTorch.
  std::uint64_t mem_alloc(std::size_t bytes);  // a CUdeviceptr
  void mem_free(std::uint64_t ptr);
  void copy_to_device(std::uint64_t dst, const void* src, std::size_t bytes);
  void copy_to_host(void* dst, std::uint64_t src, std::size_t bytes);
  void memset_zero(std::uint64_t ptr, std::size_t bytes);  // cuMemsetD8 (synchronous w.r.t. the host)
  void memset_zero_async(std::uint64_t ptr, std::size_t bytes, void* stream);  // cuMemsetD8Async on a CUstream
  void synchronize();  // cuCtxSynchronize: waits for the current context's work

  // Events (CUevent as void*), for timing kernels (runtime/autotune).
  void* event_create();
  void event_record(void* event, void* stream);
  float elapsed_ms(void* start, void* end);  // waits for `end`, then the time between the two
  void event_destroy(void* event);

  // Ends a stream capture that failed halfway and drops what it captured.
  // Errors are ignored: the capture is over either way.
  void abort_capture(void* stream);

  // The number of nodes of a captured graph (a CUgraph, which is a cudaGraph_t).
  std::size_t graph_nodes(void* graph);

  // The dlsym'ed entry points (defined in cuda_driver.cpp; opaque elsewhere).
  struct Api;

 private:
  const Api& api(const char* call) const;  // throws CudaError when unavailable
  void check(int result, const char* call, const std::string& context) const;
  std::string kernel_name(CUfunction f) const;

  Api* api_ = nullptr;
  std::string reason_;
  int device_count_ = 0;
  int driver_version_ = 0;

  mutable std::mutex mu_;  // guards everything below
  std::unordered_map<int, CUcontext> primary_contexts_;
  std::unordered_map<int, DeviceInfo> device_infos_;
  std::unordered_map<std::string, CUmodule> modules_;  // by the context's address and the cubin
  std::unordered_map<CUfunction, std::string> function_names_;
  std::unordered_map<CUfunction, unsigned> shared_limit_;  // raised dynamic-smem limits
};

}  // namespace dv::runtime

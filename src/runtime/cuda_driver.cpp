#include "runtime/cuda_driver.h"

#include <cuda.h>  // for the types and signatures only; the library is dlopen'ed
#include <dlfcn.h>

#include <cstdlib>
#include <sstream>

namespace dv::runtime {

// <cuda.h> maps some API names to versioned symbols with macros (cuMemAlloc is
// cuMemAlloc_v2). Expanding the name before stringizing it gives the exact symbol
// that the header's declaration (and so our pointer type) belongs to.
#define DV_CU_SYMBOL_NAME(name) DV_CU_STRINGIZE(name)
#define DV_CU_STRINGIZE(name) #name

#define DV_CU_API_FUNCTIONS(X) \
  X(cuInit)                    \
  X(cuDriverGetVersion)        \
  X(cuDeviceGetCount)          \
  X(cuDeviceGet)               \
  X(cuDeviceGetAttribute)      \
  X(cuCtxGetCurrent)           \
  X(cuCtxSetCurrent)           \
  X(cuCtxGetDevice)            \
  X(cuCtxSynchronize)          \
  X(cuDevicePrimaryCtxRetain)  \
  X(cuModuleLoadData)          \
  X(cuModuleGetFunction)       \
  X(cuModuleUnload)            \
  X(cuLaunchKernel)            \
  X(cuFuncSetAttribute)        \
  X(cuGetErrorString)          \
  X(cuGetErrorName)            \
  X(cuMemAlloc)                \
  X(cuMemFree)                 \
  X(cuMemcpyHtoD)              \
  X(cuMemcpyDtoH)              \
  X(cuStreamEndCapture)        \
  X(cuGraphDestroy)            \
  X(cuGraphGetNodes)           \
  X(cuDeviceGetName)           \
  X(cuMemsetD8)                \
  X(cuMemsetD8Async)           \
  X(cuEventCreate)             \
  X(cuEventRecord)             \
  X(cuEventSynchronize)        \
  X(cuEventElapsedTime)        \
  X(cuEventDestroy)

struct CudaDriver::Api {
#define DV_CU_FIELD(name) decltype(&::name) name = nullptr;
  DV_CU_API_FUNCTIONS(DV_CU_FIELD)
#undef DV_CU_FIELD
};

namespace {

// Looks up every symbol of Api in `handle`; returns the first missing name, or "".
std::string bind_symbols(void* handle, CudaDriver::Api& api) {
#define DV_CU_BIND(name)                                                                     \
  api.name = reinterpret_cast<decltype(api.name)>(::dlsym(handle, DV_CU_SYMBOL_NAME(name))); \
  if (api.name == nullptr) return DV_CU_SYMBOL_NAME(name);
  DV_CU_API_FUNCTIONS(DV_CU_BIND)
#undef DV_CU_BIND
  return "";
}

// "CUDA_ERROR_NO_DEVICE (100): no CUDA-capable device is detected"
std::string error_text(const CudaDriver::Api& api, CUresult r) {
  const char* name = nullptr;
  const char* text = nullptr;
  api.cuGetErrorName(r, &name);
  api.cuGetErrorString(r, &text);
  std::ostringstream out;
  out << (name != nullptr ? name : "CUDA error") << " (" << static_cast<int>(r) << ")";
  if (text != nullptr) out << ": " << text;
  return out.str();
}

// Loads one candidate library; on success returns the Api, else null and `why`.
CudaDriver::Api* open_driver(const std::string& candidate, std::string& why) {
  void* handle = ::dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = ::dlerror();
    why = err != nullptr ? err : "dlopen failed";
    return nullptr;
  }
  auto* api = new CudaDriver::Api;
  if (const std::string missing = bind_symbols(handle, *api); !missing.empty()) {
    why = "missing symbol " + missing;
    delete api;
    ::dlclose(handle);
    return nullptr;
  }
  return api;
}

}  // namespace

CudaDriver& CudaDriver::instance() {
  // Function-local static: C++ guarantees one thread loads, the others wait.
  static CudaDriver driver(default_candidates());
  return driver;
}

std::vector<std::string> CudaDriver::default_candidates() {
  std::vector<std::string> out;
  if (const char* p = std::getenv("DEEPVISOR_CUDA_DRIVER_LIBRARY"); p != nullptr && p[0] != '\0') {
    out.push_back(p);
  }
  out.push_back("libcuda.so.1");  // the driver's soname; always next to the kernel module
  return out;
}

CudaDriver::CudaDriver(const std::vector<std::string>& candidates) {
  std::ostringstream tried;
  Api* api = nullptr;
  for (const std::string& candidate : candidates) {
    std::string why;
    api = open_driver(candidate, why);
    if (api != nullptr) break;
    tried << "\n  " << candidate << ": " << why;
  }
  if (api == nullptr) {
    reason_ = "CUDA driver not found; tried:" + tried.str();
    return;
  }
  if (CUresult r = api->cuInit(0); r != CUDA_SUCCESS) {
    reason_ = "cuInit failed: " + error_text(*api, r);
    return;  // the Api leaks on purpose: it is tiny and the library stays loaded
  }
  int count = 0;
  if (CUresult r = api->cuDeviceGetCount(&count); r != CUDA_SUCCESS || count <= 0) {
    reason_ = r != CUDA_SUCCESS ? "cuDeviceGetCount failed: " + error_text(*api, r)
                                : std::string("the CUDA driver sees no device");
    return;
  }
  api->cuDriverGetVersion(&driver_version_);
  device_count_ = count;
  api_ = api;
}

CudaDriver::~CudaDriver() {
  // Nothing is released: kernels launched on PyTorch's streams may still be
  // running at exit, and the driver tears contexts down itself.
}

const CudaDriver::Api& CudaDriver::api(const char* call) const {
  if (api_ == nullptr) {
    throw CudaError(std::string(call) + ": CUDA driver unavailable: " + reason_, 0);
  }
  return *api_;
}

void CudaDriver::check(int result, const char* call, const std::string& context) const {
  if (result == CUDA_SUCCESS) return;
  std::string message = std::string(call) + " failed";
  if (!context.empty()) message += " " + context;
  message += ": " + error_text(*api_, static_cast<CUresult>(result));
  throw CudaError(message, result);
}

std::string CudaDriver::kernel_name(CUfunction f) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = function_names_.find(f);
  return it != function_names_.end() ? it->second : std::string("<unknown kernel>");
}

void CudaDriver::ensure_context(int device) {
  const Api& a = api("ensure_context");
  if (device < 0 || device >= device_count_) {
    throw CudaError("ensure_context: device " + std::to_string(device) + " out of range (" +
                        std::to_string(device_count_) + " devices)",
                    CUDA_ERROR_INVALID_DEVICE);
  }
  const std::string where = "for device " + std::to_string(device);
  CUdevice dev = 0;
  check(a.cuDeviceGet(&dev, device), "cuDeviceGet", where);

  CUcontext current = nullptr;
  check(a.cuCtxGetCurrent(&current), "cuCtxGetCurrent", where);
  if (current != nullptr) {
    CUdevice current_dev = -1;
    check(a.cuCtxGetDevice(&current_dev), "cuCtxGetDevice", where);
    if (current_dev == dev) return;  // the caller's (or PyTorch's) context: keep it
  }

  CUcontext primary = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = primary_contexts_.find(device); it != primary_contexts_.end()) {
      primary = it->second;
    } else {
      // Retained once and never released: it lives as long as the process.
      check(a.cuDevicePrimaryCtxRetain(&primary, dev), "cuDevicePrimaryCtxRetain", where);
      primary_contexts_.emplace(device, primary);
    }
  }
  check(a.cuCtxSetCurrent(primary), "cuCtxSetCurrent", where);
}

CudaDriver::DeviceInfo CudaDriver::device_info(int device) {
  const Api& a = api("device_info");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = device_infos_.find(device); it != device_infos_.end()) return it->second;
  }
  const std::string where = "for device " + std::to_string(device);
  CUdevice dev = 0;
  check(a.cuDeviceGet(&dev, device), "cuDeviceGet", where);
  auto attribute = [&](CUdevice_attribute attr, const char* what) {
    int value = 0;
    check(a.cuDeviceGetAttribute(&value, attr, dev), "cuDeviceGetAttribute",
          std::string(what) + " " + where);
    return value;
  };
  DeviceInfo info;
  info.arch = 10 * attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "(major)") +
              attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "(minor)");
  info.sm_count = attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "(SM count)");
  info.max_threads_per_block =
      attribute(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, "(max threads per block)");
  info.max_shared_per_block_optin = attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                                              "(max shared memory opt-in)");
  info.l2_bytes = attribute(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, "(L2 size)");
  char name[256] = {};
  check(a.cuDeviceGetName(name, sizeof(name) - 1, dev), "cuDeviceGetName", where);
  info.name = name;

  std::lock_guard<std::mutex> lock(mu_);
  device_infos_.emplace(device, info);
  return info;
}

CUfunction CudaDriver::load_function(const std::string& cubin, const std::string& name) {
  const Api& a = api("load_function");
  const std::string where = "for kernel '" + name + "'";
  CUcontext current = nullptr;
  check(a.cuCtxGetCurrent(&current), "cuCtxGetCurrent", where);
  if (current == nullptr) {
    throw CudaError(
        "load_function " + where + ": no current CUDA context (call ensure_context(device) first)",
        CUDA_ERROR_INVALID_CONTEXT);
  }
  if (cubin.empty()) {
    throw CudaError("load_function " + where + ": empty cubin", CUDA_ERROR_INVALID_IMAGE);
  }
  std::string key(reinterpret_cast<const char*>(&current), sizeof current);
  key += cubin;
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, fresh] = modules_.try_emplace(std::move(key), nullptr);
  if (fresh) {
    CUmodule module = nullptr;
    if (CUresult r = a.cuModuleLoadData(&module, cubin.data()); r != CUDA_SUCCESS) {
      modules_.erase(it);
      check(r, "cuModuleLoadData", where);
    }
    it->second = module;
  }
  CUfunction function = nullptr;
  check(a.cuModuleGetFunction(&function, it->second, name.c_str()), "cuModuleGetFunction",
        where + " (is it extern \"C\" __global__?)");
  function_names_[function] = name;
  return function;
}

void CudaDriver::launch(CUfunction f, unsigned grid_x, unsigned grid_y, unsigned grid_z,
                        unsigned block_x, unsigned block_y, unsigned block_z, unsigned shared_bytes,
                        void* stream, void** args) {
  const Api& a = api("launch");
  // Above 48 KiB a kernel must opt in to dynamic shared memory; remember the
  // limit set per kernel so that the attribute call is made once.
  constexpr unsigned kDefaultSharedLimit = 48 * 1024;
  if (shared_bytes > kDefaultSharedLimit) {
    std::unique_lock<std::mutex> lock(mu_);
    unsigned& limit = shared_limit_[f];
    if (limit < shared_bytes) {
      lock.unlock();
      check(a.cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 static_cast<int>(shared_bytes)),
            "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
            "for kernel '" + kernel_name(f) + "' (" + std::to_string(shared_bytes) + " B)");
      lock.lock();
      unsigned& now = shared_limit_[f];  // re-find: the map may have rehashed
      if (now < shared_bytes) now = shared_bytes;
    }
  }
  const CUresult r = a.cuLaunchKernel(f, grid_x, grid_y, grid_z, block_x, block_y, block_z,
                                      shared_bytes, static_cast<CUstream>(stream), args, nullptr);
  if (r != CUDA_SUCCESS) {
    std::ostringstream where;
    where << "for kernel '" << kernel_name(f) << "' (grid " << grid_x << "x" << grid_y << "x"
          << grid_z << ", block " << block_x << "x" << block_y << "x" << block_z << ", "
          << shared_bytes << " B dynamic shared memory)";
    check(r, "cuLaunchKernel", where.str());
  }
}

std::uint64_t CudaDriver::mem_alloc(std::size_t bytes) {
  CUdeviceptr ptr = 0;
  check(api("mem_alloc").cuMemAlloc(&ptr, bytes), "cuMemAlloc",
        "of " + std::to_string(bytes) + " bytes");
  return ptr;
}

void CudaDriver::mem_free(std::uint64_t ptr) {
  check(api("mem_free").cuMemFree(static_cast<CUdeviceptr>(ptr)), "cuMemFree", "");
}

void CudaDriver::copy_to_device(std::uint64_t dst, const void* src, std::size_t bytes) {
  check(api("copy_to_device").cuMemcpyHtoD(static_cast<CUdeviceptr>(dst), src, bytes),
        "cuMemcpyHtoD", "of " + std::to_string(bytes) + " bytes");
}

void CudaDriver::copy_to_host(void* dst, std::uint64_t src, std::size_t bytes) {
  check(api("copy_to_host").cuMemcpyDtoH(dst, static_cast<CUdeviceptr>(src), bytes), "cuMemcpyDtoH",
        "of " + std::to_string(bytes) + " bytes");
}

void CudaDriver::abort_capture(void* stream) {
  const Api& a = api("abort_capture");
  CUgraph graph = nullptr;
  if (a.cuStreamEndCapture(static_cast<CUstream>(stream), &graph) == CUDA_SUCCESS && graph != nullptr)
    a.cuGraphDestroy(graph);
}

std::size_t CudaDriver::graph_nodes(void* graph) {
  std::size_t n = 0;
  check(api("graph_nodes").cuGraphGetNodes(static_cast<CUgraph>(graph), nullptr, &n), "cuGraphGetNodes", "");
  return n;
}

void CudaDriver::memset_zero(std::uint64_t ptr, std::size_t bytes) {
  check(api("memset_zero").cuMemsetD8(static_cast<CUdeviceptr>(ptr), 0, bytes), "cuMemsetD8",
        "of " + std::to_string(bytes) + " bytes");
}

void CudaDriver::memset_zero_async(std::uint64_t ptr, std::size_t bytes, void* stream) {
  check(api("memset_zero_async").cuMemsetD8Async(static_cast<CUdeviceptr>(ptr), 0, bytes, static_cast<CUstream>(stream)),
        "cuMemsetD8Async", "of " + std::to_string(bytes) + " bytes");
}

void* CudaDriver::event_create() {
  CUevent e = nullptr;
  check(api("event_create").cuEventCreate(&e, CU_EVENT_DEFAULT), "cuEventCreate", "");
  return e;
}

void CudaDriver::event_record(void* event, void* stream) {
  check(api("event_record").cuEventRecord(static_cast<CUevent>(event), static_cast<CUstream>(stream)),
        "cuEventRecord", "");
}

float CudaDriver::elapsed_ms(void* start, void* end) {
  const Api& a = api("elapsed_ms");
  check(a.cuEventSynchronize(static_cast<CUevent>(end)), "cuEventSynchronize", "");
  float ms = 0;
  check(a.cuEventElapsedTime(&ms, static_cast<CUevent>(start), static_cast<CUevent>(end)), "cuEventElapsedTime", "");
  return ms;
}

void CudaDriver::event_destroy(void* event) {
  if (event != nullptr) api("event_destroy").cuEventDestroy(static_cast<CUevent>(event));
}

void CudaDriver::synchronize() {
  check(api("synchronize").cuCtxSynchronize(), "cuCtxSynchronize", "");
}

}  // namespace dv::runtime

// NVRTC, loaded at run time with dlopen (never linked), so deepvisor builds and
// runs where the CUDA toolkit is missing; available() then says why.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace dv::runtime {

// A kernel that NVRTC rejected. what() names the kernel and holds the NVRTC log
// and the first lines of the source, numbered.
class CompileError : public std::runtime_error {
 public:
  CompileError(const std::string& message, std::string log)
      : std::runtime_error(message), log_(std::move(log)) {}
  const std::string& log() const { return log_; }

 private:
  std::string log_;
};

class Nvrtc {
 public:
  // The process-wide instance, loaded from default_candidates() on first use.
  static Nvrtc& instance();

  // Where to look, in order: $DEEPVISOR_NVRTC_LIBRARY, "libnvrtc.so.13",
  // "libnvrtc.so", $CUDA_HOME/lib64/libnvrtc.so, /usr/local/cuda/lib64/libnvrtc.so.
  static std::vector<std::string> default_candidates();

  // Loads the first candidate that opens and has every needed symbol.
  explicit Nvrtc(const std::vector<std::string>& candidates);
  ~Nvrtc();  // keeps the library loaded: other static destructors may still compile
  Nvrtc(const Nvrtc&) = delete;
  Nvrtc& operator=(const Nvrtc&) = delete;

  bool available() const { return api_ != nullptr; }
  std::string unavailable_reason() const { return reason_; }
  // The file that was loaded, as the dynamic loader resolved it ("" if unavailable).
  const std::string& library_path() const { return path_; }
  // A CUDA toolkit include directory holding cuda_fp16.h and cuda_bf16.h, which
  // NVRTC does not build in: next to the loaded library (<lib>/../include), else
  // $CUDA_HOME/include, else /usr/local/cuda/include; "" if none has them.
  // compile_cubin does not add it; callers that emit half types pass
  // "--include-path=<dir>" (KernelCompiler does).
  const std::string& cuda_include_dir() const { return include_dir_; }
  // NVRTC's {major, minor}; {0, 0} if unavailable.
  std::pair<int, int> version() const { return version_; }

  // Options every compile gets before the caller's: target and language only.
  // No fast-math: generated kernels must match PyTorch's numerics.
  static std::vector<std::string> default_options(int arch);

  // Compiles CUDA C source to a cubin for sm_<arch> (e.g. 90). Throws
  // CompileError if NVRTC rejects it, std::runtime_error if NVRTC is unavailable.
  // Thread-safe.
  std::string compile_cubin(const std::string& source, const std::string& program_name, int arch,
                            const std::vector<std::string>& extra_options = {}) const;

  // The dlsym'ed entry points (defined in nvrtc.cpp; opaque elsewhere).
  struct Api;

 private:
  Api* api_ = nullptr;  // null when unavailable; owned, never freed with the library
  std::string reason_;
  std::string path_;
  std::string include_dir_;
  std::pair<int, int> version_{0, 0};
};

// The first `max_lines` lines of `source`, each prefixed with its number.
std::string numbered_source_excerpt(const std::string& source, int max_lines = 40);

}  // namespace dv::runtime

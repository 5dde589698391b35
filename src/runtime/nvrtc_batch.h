// Several kernels compiled as one NVRTC program.
//
// Most of an NVRTC compile of one generated kernel is fixed cost (starting
// the compiler, parsing the shared prelude): about two thirds of it for a
// ResNet-50 kernel on sm_90. On the H100 machine NVRTC compiles also do not
// run faster with more than two threads (bench/NOTES.md, session 32), so a
// plan's cold start paid for each kernel in turn. A program holding several
// kernels pays the fixed cost once; its cubin holds every member's entry point
// (each is extern "C", named by its content), and each member's cache entry
// is that cubin.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace dv::runtime {

// Whether a generated source can share a program: it includes no file (a
// wrapping namespace would hold the included declarations).
bool batchable(const std::string& source);

// One program holding each source in a namespace of its own (helpers of the
// same name do not collide), each source's macros undefined after it.
std::string batch_source(const std::vector<const std::string*>& sources);

// Groups of indices into `names` to compile together: about `groups` groups
// (fewer where there are fewer kernels), at most `max_members` kernels in
// one, no name twice in one (autotuning candidates share their kernel's
// name). Every index is in exactly one group.
std::vector<std::vector<std::size_t>> plan_batches(const std::vector<std::string>& names, std::size_t groups,
                                                   std::size_t max_members);

}  // namespace dv::runtime

// DEEPVISOR_LOG for the C++ side: the same kinds and line format as
// python/deepvisor/_log.py ("deepvisor[kind]: message" on stderr), read at
// each event so that it may be set at any time.
#pragma once

#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>

namespace dv::runtime {

// DEEPVISOR_LOG, a comma-separated list, names `kind` (or "all").
inline bool log_enabled(const std::string& kind) {
  const char* v = std::getenv("DEEPVISOR_LOG");
  if (v == nullptr) return false;
  std::istringstream names(v);
  for (std::string name; std::getline(names, name, ',');) {
    const auto first = name.find_first_not_of(" \t");
    const auto last = name.find_last_not_of(" \t");
    if (first == std::string::npos) continue;
    name = name.substr(first, last - first + 1);
    if (name == kind || name == "all") return true;
  }
  return false;
}

// One line for an event of `kind` when DEEPVISOR_LOG asks for it.
inline void log_event(const std::string& kind, const std::string& message) {
  if (log_enabled(kind)) std::cerr << "deepvisor[" << kind << "]: " << message << std::endl;
}

}  // namespace dv::runtime

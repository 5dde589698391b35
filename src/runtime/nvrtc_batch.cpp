#include "runtime/nvrtc_batch.h"

#include <algorithm>
#include <cctype>
#include <sstream>
#include <unordered_set>

namespace dv::runtime {
namespace {

// The name a `#define` line defines, or "" for any other line.
std::string defined_macro(const std::string& line) {
  std::size_t i = line.find_first_not_of(" \t");
  if (i == std::string::npos || line[i] != '#') return "";
  i = line.find_first_not_of(" \t", i + 1);
  if (i == std::string::npos || line.compare(i, 6, "define") != 0) return "";
  i = line.find_first_not_of(" \t", i + 6);
  if (i == std::string::npos) return "";
  std::size_t end = i;
  while (end < line.size() && (std::isalnum(static_cast<unsigned char>(line[end])) || line[end] == '_')) ++end;
  return line.substr(i, end - i);
}

}  // namespace

bool batchable(const std::string& source) {
  std::istringstream in(source);
  for (std::string line; std::getline(in, line);) {
    const std::size_t i = line.find_first_not_of(" \t");
    if (i == std::string::npos || line[i] != '#') continue;
    const std::size_t d = line.find_first_not_of(" \t", i + 1);
    if (d != std::string::npos && line.compare(d, 7, "include") == 0) return false;
  }
  return true;
}

std::string batch_source(const std::vector<const std::string*>& sources) {
  std::string out;
  for (std::size_t u = 0; u < sources.size(); ++u) {
    const std::string unit = "dv_unit_" + std::to_string(u);
    out += "namespace " + unit + " {\n";
    out += *sources[u];
    if (!sources[u]->empty() && sources[u]->back() != '\n') out += '\n';
    out += "}  // namespace " + unit + "\n";
    std::istringstream in(*sources[u]);
    for (std::string line; std::getline(in, line);)
      if (std::string name = defined_macro(line); !name.empty()) out += "#undef " + name + "\n";
  }
  return out;
}

std::vector<std::vector<std::size_t>> plan_batches(const std::vector<std::string>& names, std::size_t groups,
                                                   std::size_t max_members) {
  max_members = std::max<std::size_t>(1, max_members);
  groups = std::max<std::size_t>(1, groups);
  // Even groups: no larger than needed to make `groups` of them.
  const std::size_t even = (names.size() + groups - 1) / groups;
  const std::size_t size = std::max<std::size_t>(1, std::min(max_members, even));
  std::vector<std::vector<std::size_t>> out;
  std::vector<std::unordered_set<std::string>> names_in;
  for (std::size_t i = 0; i < names.size(); ++i) {
    std::size_t g = 0;
    while (g < out.size() && (out[g].size() >= size || names_in[g].count(names[i]) != 0)) ++g;
    if (g == out.size()) {
      out.emplace_back();
      names_in.emplace_back();
    }
    out[g].push_back(i);
    names_in[g].insert(names[i]);
  }
  return out;
}

}  // namespace dv::runtime

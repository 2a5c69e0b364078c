// libFuzzer target for composite rule expressions: parse anything, evaluate what parses
// under a few hit patterns, and check the canonical form parses to the same thing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "policy/expression.hpp"

using mxgate::policy::Expression;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string error;
  const auto expression = Expression::parse(input, error);
  if (!expression) {
    if (error.empty()) std::abort();
    return 0;
  }
  const std::size_t names = expression->names().size();
  for (std::uint32_t pattern : {0u, ~0u, 0x55555555u}) {
    const bool first = expression->evaluate(
        [&](std::size_t index) { return index < names && ((pattern >> (index % 32)) & 1); });
    // The printed form is the same expression: it must parse and agree.
    std::string reparse_error;
    const std::string canonical = expression->to_string();
    if (canonical.size() <= 4096) {
      const auto again = Expression::parse(canonical, reparse_error);
      if (!again) continue;  // deeper than the nesting bound once parenthesised
      const bool second = again->evaluate([&](std::size_t index) {
        const auto& name = again->names()[index];
        for (std::size_t i = 0; i < names; ++i)
          if (expression->names()[i] == name) return ((pattern >> (i % 32)) & 1) != 0;
        std::abort();
      });
      if (first != second) std::abort();
    }
  }
  return 0;
}

// libFuzzer target for the content prefilter: for any literals and any text, the AVX2 and
// portable paths agree, no literal that occurs is missed (a miss would skip a rule), and
// every reported start is a real occurrence.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "filters/literal_scan.hpp"

using mxgate::filters::LiteralScanner;
using mxgate::filters::LiteralScanPath;

namespace {

char fold(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool occurs_at(std::string_view text, std::size_t at, std::string_view literal) {
  if (at + literal.size() > text.size()) return false;
  for (std::size_t i = 0; i < literal.size(); ++i)
    if (fold(text[at + i]) != literal[i]) return false;
  return true;
}

bool occurs(std::string_view text, std::string_view literal) {
  for (std::size_t at = 0; at + literal.size() <= text.size(); ++at)
    if (occurs_at(text, at, literal)) return true;
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Input: literals separated by '\n', then '\0', then the text.
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t split = input.find('\0');
  if (split == std::string_view::npos) return 0;
  std::vector<std::string> literals;
  std::string_view list = input.substr(0, split);
  while (!list.empty() && literals.size() < 64) {
    std::size_t end = std::min(list.find('\n'), list.size());
    std::string literal(list.substr(0, end));
    // FilteredRE2 hands out lower-case atoms; keep them short like real ones.
    std::transform(literal.begin(), literal.end(), literal.begin(), fold);
    if (!literal.empty() && literal.size() <= 32) literals.push_back(std::move(literal));
    list.remove_prefix(std::min(end + 1, list.size()));
  }
  if (literals.empty()) return 0;
  const std::string_view text = input.substr(split + 1);

  LiteralScanner fastest;
  LiteralScanner portable;
  fastest.build(literals, LiteralScanPath::fastest);
  portable.build(literals, LiteralScanPath::portable);
  std::vector<std::uint8_t> found_fast(literals.size());
  std::vector<std::uint8_t> found_portable(literals.size());
  std::vector<std::size_t> starts_fast;
  std::vector<std::size_t> starts_portable;
  const bool exact_fast = fastest.scan(text, found_fast, &starts_fast);
  const bool exact_portable = portable.scan(text, found_portable, &starts_portable);
  if (exact_fast != exact_portable || found_fast != found_portable) std::abort();
  std::sort(starts_fast.begin(), starts_fast.end());
  std::sort(starts_portable.begin(), starts_portable.end());
  if (starts_fast != starts_portable) std::abort();

  // always() literals are left to the caller to add (content.cpp does).
  for (int always : fastest.always()) found_fast[static_cast<std::size_t>(always)] = 1;
  for (std::size_t i = 0; i < literals.size(); ++i) {
    // No false negative, ever: a missed literal would skip the rule that needs it.
    if (occurs(text, literals[i]) && !found_fast[i]) {
      std::fprintf(stderr, "missed literal %zu of %zu: \"%s\"\n", i, literals.size(), literals[i].c_str());
      std::abort();
    }
  }
  for (std::size_t start : starts_fast) {
    const bool real = std::any_of(literals.begin(), literals.end(), [&](const std::string& l) {
      return occurs_at(text, start, l);
    });
    if (!real) std::abort();
  }
  return 0;
}

// libFuzzer target for the config loader: any YAML text and any -o override must give a
// Config or a non-empty list of errors, never a crash, a hang or an escaped exception.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "policy/loader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  // Leading "-o KEY=VALUE" lines become overrides, so the path walker is fuzzed as well.
  std::vector<std::string> overrides;
  while (text.starts_with("-o ")) {
    const std::size_t end = text.find('\n');
    overrides.push_back(text.substr(3, end == std::string::npos ? std::string::npos : end - 3));
    text.erase(0, end == std::string::npos ? text.size() : end + 1);
  }
  // A directory that does not exist: relative list files fail to open instead of reading
  // whatever lies around the fuzzer.
  const mxgate::policy::LoadResult result =
      mxgate::policy::load_config_text(text, "/nonexistent/fuzz.yaml", overrides);
  if (!result.ok() && result.errors.empty()) __builtin_trap();
  for (const mxgate::policy::ConfigError& error : result.errors) (void)error.to_string();
  if (result.ok()) (void)mxgate::policy::summarize(*result.config);
  return 0;
}

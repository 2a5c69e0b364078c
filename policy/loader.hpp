// Loads conf/mxgate.yaml (and the list files it names) into an immutable Config,
// collecting every error with its file:line:column. No other I/O.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "policy/config.hpp"

namespace mxgate::policy {

struct ConfigError {
  SourceMark mark;
  std::string key;      // dotted path, e.g. "limits.max_recipients"
  std::string message;
  // "file:line:column: key: message" (line/column omitted when unknown).
  std::string to_string() const;
};

struct LoadResult {
  std::shared_ptr<const Config> config;   // null when errors is not empty
  std::vector<ConfigError> errors;
  bool ok() const { return config != nullptr; }
};

// `overrides` are "dotted.key=value" strings from -o; they win over the file.
LoadResult load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The same, from YAML text (tests; `name` is used as the file name in errors).
LoadResult load_config_text(const std::string& yaml_text, const std::string& name,
                            const std::vector<std::string>& overrides = {});

// A short human summary of the effective policy, printed by `mxgate check`.
std::string summarize(const Config& config);

}  // namespace mxgate::policy

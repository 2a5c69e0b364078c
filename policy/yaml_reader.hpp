// Typed reading of a yaml-cpp tree for the loader: every error is collected with its
// file:line:column and dotted key, never thrown. Internal to policy/.
#pragma once

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "policy/config.hpp"
#include "policy/loader.hpp"

namespace mxgate::policy::detail {

std::string child_path(std::string_view parent, std::string_view key);
std::string index_path(std::string_view parent, std::size_t index);

// Shared state of one load: where errors go and how positions are named.
class Context {
 public:
  Context(std::string file, std::filesystem::path directory);

  const std::string& file() const { return file_; }
  // The position of `node`: its place in the file, or the -o that set it (nodes built by
  // overrides have no mark; `path` finds the override), or the file without a line.
  SourceMark mark(const YAML::Node& node, std::string_view path) const;
  SourceMark mark_for_path(std::string_view path) const;
  void error(const SourceMark& mark, std::string path, std::string message);
  void error(const YAML::Node& node, const std::string& path, std::string message) {
    error(mark(node, path), path, std::move(message));
  }
  void add_override(std::string path, int position);
  // List files are relative to the config file's directory, as Postfix's are to its
  // config_directory: the same config then works from any working directory.
  std::filesystem::path resolve(std::string_view file_name) const;
  void note_file_read(const std::string& file_name) { files_read_.push_back(file_name); }
  const std::vector<std::string>& files_read() const { return files_read_; }
  bool has_errors() const { return !errors_.empty(); }
  // All errors, ordered by file (the config file first, -o last), then line and column.
  std::vector<ConfigError> sorted_errors() const;

 private:
  std::string file_;
  std::filesystem::path directory_;
  std::vector<ConfigError> errors_;
  std::vector<std::pair<std::string, int>> overrides_;  // dotted path, -o position
  std::vector<std::string> files_read_;
};

// "a mapping", "a list", "an empty value", "'text'": for "expected X, got Y" messages.
std::string describe_node(const YAML::Node& node);

// One scalar of a list, wherever it came from (the config, a comma-split string, a list
// file), with the position and key to blame for it.
struct ListItem {
  std::string value;
  SourceMark mark;
  std::string path;
};

// A list of scalars: a YAML list, or a string holding one or more comma-separated items
// (so `-o dns.servers=a,b` works). With `expand_files`, an item "file:PATH" is replaced by
// the entries of that list file. Null gives an empty list.
std::optional<std::vector<ListItem>> read_scalar_list(Context& context, const YAML::Node& node,
                                                      const std::string& path, bool expand_files);

// Reads a whole regular file of at most kMaxFileSize bytes; on failure `error` says why
// ("No such file or directory", "not a regular file"). Devices and FIFOs are refused so
// that `file:/dev/zero` cannot hang `mxgate check`.
constexpr std::size_t kMaxFileSize = 64 * 1024 * 1024;
bool read_whole_file(const std::string& file_name, std::string& contents, std::string& error);

// Reads a file named in the config: false (and an error at `reference`) when unreadable.
bool read_config_file(Context& context, const std::string& file_name, const SourceMark& reference,
                      const std::string& path, std::string& contents,
                      std::filesystem::path& resolved);

// The named values of an enum key, in documentation order.
template <typename Enum>
using EnumNames = std::vector<std::pair<std::string_view, Enum>>;

// The keys of one YAML mapping. Each read_* call declares its key as known; when the
// Fields object goes away, any key nobody asked for is reported as unknown with the
// nearest known key as a suggestion. read_* return true when the key was present and
// valid (and only then write `out`), so defaults stay in place otherwise.
class Fields {
 public:
  Fields(Context& context, const YAML::Node& node, std::string path);
  ~Fields();
  Fields(const Fields&) = delete;
  Fields& operator=(const Fields&) = delete;

  Context& context() { return context_; }
  const std::string& path() const { return path_; }
  bool is_mapping() const { return is_mapping_; }
  SourceMark mapping_mark() const { return context_.mark(node_, path_); }
  std::string path_of(std::string_view key) const { return child_path(path_, key); }

  // The value node of `key` (declaring it known), or null when absent.
  const YAML::Node* find(std::string_view key);
  // The position of `key`'s value, or of the mapping when the key is absent.
  SourceMark mark_of(std::string_view key);
  void error(std::string_view key, std::string message);
  // Reports "missing required key" at the mapping when `key` is absent.
  bool require(std::string_view key);

  bool read_string(std::string_view key, std::string& out);
  bool read_bool(std::string_view key, bool& out);
  bool read_integer(std::string_view key, std::int64_t& out, std::int64_t min, std::int64_t max);
  template <typename Integer>
  bool read_integer(std::string_view key, Integer& out, std::int64_t min, std::int64_t max) {
    std::int64_t value = 0;
    if (!read_integer(key, value, min, max)) return false;
    out = static_cast<Integer>(value);
    return true;
  }
  bool read_number(std::string_view key, double& out, double min, double max);
  bool read_duration(std::string_view key, Duration& out, Duration min, Duration max);
  bool read_size(std::string_view key, std::uint64_t& out, std::uint64_t min, std::uint64_t max);
  bool read_rate(std::string_view key, double& out);
  // `allow_port_zero` for listening sockets only (the kernel picks a port).
  bool read_endpoint(std::string_view key, Endpoint& out, std::optional<std::uint16_t> default_port,
                     bool allow_port_zero = false);
  bool read_choice(std::string_view key, std::string& out, const std::vector<std::string>& choices);
  template <typename Enum>
  bool read_enum(std::string_view key, Enum& out, const EnumNames<Enum>& names) {
    std::vector<std::string> choices;
    for (const auto& [name, value] : names) choices.emplace_back(name);
    std::string chosen;
    if (!read_choice(key, chosen, choices)) return false;
    for (const auto& [name, value] : names) {
      if (name == chosen) out = value;
    }
    return true;
  }
  std::optional<std::vector<ListItem>> read_list(std::string_view key, bool expand_files);

 private:
  struct Entry {
    std::string key;
    YAML::Node key_node;
    YAML::Node value;
    bool known = false;
  };
  // The scalar text of `key`'s value; reports "expected <what>" for other node kinds.
  std::optional<std::string> scalar(std::string_view key, std::string_view what);

  Context& context_;
  YAML::Node node_;
  std::string path_;
  bool is_mapping_ = true;
  std::vector<Entry> entries_;
  std::vector<std::string> known_keys_;
};

// "expected one of allow, tempfail; got 'maybe'" (with a suggestion for near misses).
std::string choice_error(std::string_view value, const std::vector<std::string>& choices);

}  // namespace mxgate::policy::detail

// Typed YAML reading with collected, positioned errors; list files.
#include "policy/yaml_reader.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <tuple>

#include "policy/names.hpp"
#include "policy/units.hpp"

namespace mxgate::policy::detail {
namespace {

constexpr std::string_view kFilePrefix = "file:";
constexpr std::string_view kOverrideFile = "-o";

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

// True when `path` is `ancestor` or lies below it ("dnsbl[0].zone" below "dnsbl").
bool is_within(std::string_view path, std::string_view ancestor) {
  if (!path.starts_with(ancestor)) return false;
  return path.size() == ancestor.size() || path[ancestor.size()] == '.' ||
         path[ancestor.size()] == '[';
}

std::string join(const std::vector<std::string>& words) {
  std::string result;
  for (const std::string& word : words) {
    if (!result.empty()) result += ", ";
    result += word;
  }
  return result;
}

// Entries of one list file: one per line, '#' to end of line is a comment.
std::vector<ListItem> list_file_items(Context& context, const std::string& contents,
                                      const std::string& display_name, const std::string& path) {
  std::vector<ListItem> items;
  int line_number = 0;
  std::size_t start = 0;
  while (start < contents.size()) {
    std::size_t end = contents.find('\n', start);
    if (end == std::string::npos) end = contents.size();
    std::string_view line(contents.data() + start, end - start);
    start = end + 1;
    ++line_number;
    line = line.substr(0, line.find('#'));
    line = trim(line);
    if (line.empty()) continue;
    const SourceMark mark{display_name, line_number, 0};
    if (line.starts_with(kFilePrefix)) {
      context.error(mark, path, "a list file cannot name another list file");
      continue;
    }
    items.push_back({std::string(line), mark, path});
  }
  return items;
}

}  // namespace

std::string child_path(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return std::string(parent) + "." + std::string(key);
}

std::string index_path(std::string_view parent, std::size_t index) {
  return std::string(parent) + "[" + std::to_string(index) + "]";
}

Context::Context(std::string file, std::filesystem::path directory)
    : file_(std::move(file)), directory_(std::move(directory)) {}

SourceMark Context::mark(const YAML::Node& node, std::string_view path) const {
  if (node.IsDefined()) {
    const YAML::Mark position = node.Mark();
    if (!position.is_null()) return {file_, position.line + 1, position.column + 1};
  }
  return mark_for_path(path);
}

SourceMark Context::mark_for_path(std::string_view path) const {
  // The latest override that set this key or one above it wins, as it won the value.
  for (auto it = overrides_.rbegin(); it != overrides_.rend(); ++it) {
    if (is_within(path, it->first)) return {std::string(kOverrideFile), it->second, 0};
  }
  // A section created by an override ("-o redis.address=..." creates "redis").
  for (auto it = overrides_.rbegin(); it != overrides_.rend(); ++it) {
    if (!path.empty() && is_within(it->first, path)) {
      return {std::string(kOverrideFile), it->second, 0};
    }
  }
  return {file_, 0, 0};
}

void Context::error(const SourceMark& mark, std::string path, std::string message) {
  errors_.push_back({mark, std::move(path), std::move(message)});
}

void Context::add_override(std::string path, int position) {
  overrides_.emplace_back(std::move(path), position);
}

std::filesystem::path Context::resolve(std::string_view file_name) const {
  const std::filesystem::path name(file_name);
  if (name.is_absolute()) return name.lexically_normal();
  return (directory_ / name).lexically_normal();
}

std::vector<ConfigError> Context::sorted_errors() const {
  std::vector<std::string> file_order{file_};
  for (const ConfigError& error : errors_) {
    if (error.mark.file != kOverrideFile &&
        std::find(file_order.begin(), file_order.end(), error.mark.file) == file_order.end()) {
      file_order.push_back(error.mark.file);
    }
  }
  auto rank = [&](const ConfigError& error) {
    const auto found = std::find(file_order.begin(), file_order.end(), error.mark.file);
    const auto file_rank =
        found == file_order.end() ? file_order.size() : found - file_order.begin();
    // Errors without a line (cross-checks on defaults) come after the positioned ones.
    const int line = error.mark.line == 0 ? INT_MAX : error.mark.line;
    return std::tuple(static_cast<std::size_t>(file_rank), line, error.mark.column);
  };
  std::vector<ConfigError> sorted = errors_;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [&](const ConfigError& first, const ConfigError& second) {
                     return rank(first) < rank(second);
                   });
  return sorted;
}

std::string describe_node(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "an empty value";
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  std::string text = node.Scalar();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return "'" + text + "'";
}

std::string choice_error(std::string_view value, const std::vector<std::string>& choices) {
  std::string message = "expected one of " + join(choices) + "; got '" + std::string(value) + "'";
  if (std::optional<std::string> suggestion = nearest_word(value, choices)) {
    message += " (did you mean '" + *suggestion + "'?)";
  }
  return message;
}

bool read_whole_file(const std::string& file_name, std::string& contents, std::string& error) {
  std::error_code status_error;
  const std::filesystem::file_status status = std::filesystem::status(file_name, status_error);
  if (status_error) {
    error = std::strerror(status_error.value());
    return false;
  }
  if (std::filesystem::is_directory(status)) {
    error = std::strerror(EISDIR);
    return false;
  }
  if (!std::filesystem::is_regular_file(status)) {
    error = "not a regular file";
    return false;
  }
  errno = 0;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(file_name.c_str(), "rb"),
                                                       &std::fclose);
  if (!file) {
    error = std::strerror(errno);
    return false;
  }
  char buffer[65536];
  std::size_t count = 0;
  while ((count = std::fread(buffer, 1, sizeof buffer, file.get())) > 0) {
    contents.append(buffer, count);
    if (contents.size() > kMaxFileSize) {
      error = "larger than " + format_size(kMaxFileSize);
      return false;
    }
  }
  if (std::ferror(file.get())) {
    error = std::strerror(errno);
    return false;
  }
  return true;
}

bool read_config_file(Context& context, const std::string& file_name, const SourceMark& reference,
                      const std::string& path, std::string& contents,
                      std::filesystem::path& resolved) {
  resolved = context.resolve(file_name);
  if (file_name.empty()) {
    context.error(reference, path, "empty file name after 'file:'");
    return false;
  }
  std::string error;
  if (!read_whole_file(resolved.string(), contents, error)) {
    context.error(reference, path, "cannot read '" + resolved.string() + "': " + error);
    return false;
  }
  context.note_file_read(resolved.string());
  return true;
}

std::optional<std::vector<ListItem>> read_scalar_list(Context& context, const YAML::Node& node,
                                                      const std::string& path, bool expand_files) {
  std::vector<ListItem> items;
  if (!node.IsDefined() || node.IsNull()) return items;
  if (node.IsMap()) {
    context.error(node, path, "expected a list or a string, got a mapping");
    return std::nullopt;
  }
  bool valid = true;
  if (node.IsScalar()) {
    const std::string& text = node.Scalar();
    if (trim(text).empty()) return items;
    std::size_t start = 0;
    while (true) {
      const std::size_t comma = text.find(',', start);
      const std::string_view item = trim(
          std::string_view(text).substr(start, comma == std::string::npos ? comma : comma - start));
      if (item.empty()) {
        context.error(node, path, "empty item in comma-separated list '" + text + "'");
        valid = false;
      } else {
        items.push_back({std::string(item), context.mark(node, path), path});
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  } else {
    for (std::size_t index = 0; index < node.size(); ++index) {
      const YAML::Node element = node[index];
      const std::string element_path = index_path(path, index);
      if (!element.IsScalar() || trim(element.Scalar()).empty()) {
        context.error(element, element_path, "expected a value, got " + describe_node(element));
        valid = false;
        continue;
      }
      items.push_back(
          {std::string(trim(element.Scalar())), context.mark(element, element_path), element_path});
    }
  }
  if (!expand_files) return valid ? std::optional(items) : std::nullopt;

  std::vector<ListItem> expanded;
  for (ListItem& item : items) {
    if (!item.value.starts_with(kFilePrefix)) {
      expanded.push_back(std::move(item));
      continue;
    }
    const std::string file_name(trim(std::string_view(item.value).substr(kFilePrefix.size())));
    std::string contents;
    std::filesystem::path resolved;
    if (!read_config_file(context, file_name, item.mark, item.path, contents, resolved)) {
      valid = false;
      continue;
    }
    for (ListItem& entry : list_file_items(context, contents, resolved.string(), item.path)) {
      expanded.push_back(std::move(entry));
    }
  }
  if (!valid) return std::nullopt;
  return expanded;
}

Fields::Fields(Context& context, const YAML::Node& node, std::string path)
    : context_(context), node_(node), path_(std::move(path)) {
  if (!node.IsDefined() || node.IsNull()) return;
  if (!node.IsMap()) {
    context_.error(node, path_, "expected a mapping, got " + describe_node(node));
    is_mapping_ = false;
    return;
  }
  for (auto iterator = node.begin(); iterator != node.end(); ++iterator) {
    const YAML::Node key_node = iterator->first;
    if (!key_node.IsScalar()) {
      context_.error(key_node, path_, "expected a key name, got " + describe_node(key_node));
      continue;
    }
    const std::string key = key_node.Scalar();
    const auto first = std::find_if(entries_.begin(), entries_.end(),
                                    [&](const Entry& entry) { return entry.key == key; });
    if (first != entries_.end()) {
      // yaml-cpp keeps both; an admin editing one copy would wonder why nothing changes.
      const SourceMark first_mark = context_.mark(first->key_node, child_path(path_, key));
      context_.error(
          key_node, child_path(path_, key),
          "duplicate key '" + key + "' (first at line " + std::to_string(first_mark.line) + ")");
      continue;
    }
    entries_.push_back({key, key_node, iterator->second});
  }
}

Fields::~Fields() {
  for (const Entry& entry : entries_) {
    if (entry.known) continue;
    std::string message = "unknown key '" + entry.key + "'";
    if (std::optional<std::string> suggestion = nearest_word(entry.key, known_keys_)) {
      message += " (did you mean '" + *suggestion + "'?)";
    }
    context_.error(entry.key_node, child_path(path_, entry.key), message);
  }
}

const YAML::Node* Fields::find(std::string_view key) {
  if (std::find(known_keys_.begin(), known_keys_.end(), key) == known_keys_.end()) {
    known_keys_.emplace_back(key);
  }
  for (Entry& entry : entries_) {
    if (entry.key == key) {
      entry.known = true;
      return &entry.value;
    }
  }
  return nullptr;
}

SourceMark Fields::mark_of(std::string_view key) {
  find(key);
  for (const Entry& entry : entries_) {
    if (entry.key != key) continue;
    // yaml-cpp places an empty value after the line break; the key is what to point at.
    if (entry.value.IsNull()) return context_.mark(entry.key_node, path_of(key));
    return context_.mark(entry.value, path_of(key));
  }
  return mapping_mark();
}

void Fields::error(std::string_view key, std::string message) {
  context_.error(mark_of(key), path_of(key), std::move(message));
}

bool Fields::require(std::string_view key) {
  if (find(key)) return true;
  context_.error(mapping_mark(), path_, "missing required key '" + std::string(key) + "'");
  return false;
}

std::optional<std::string> Fields::scalar(std::string_view key, std::string_view what) {
  const YAML::Node* value = find(key);
  if (!value) return std::nullopt;
  if (value->IsScalar()) return value->Scalar();
  error(key, "expected " + std::string(what) + ", got " + describe_node(*value));
  return std::nullopt;
}

bool Fields::read_string(std::string_view key, std::string& out) {
  const YAML::Node* value = find(key);
  if (!value) return false;
  if (value->IsNull()) {  // "key:" with nothing after it: the empty string
    out.clear();
    return true;
  }
  std::optional<std::string> text = scalar(key, "a string");
  if (!text) return false;
  out = *text;
  return true;
}

bool Fields::read_bool(std::string_view key, bool& out) {
  std::optional<std::string> text = scalar(key, "true or false");
  if (!text) return false;
  const std::string word = ascii_lower(*text);
  if (word == "true" || word == "yes" || word == "on") {
    out = true;
  } else if (word == "false" || word == "no" || word == "off") {
    out = false;
  } else {
    error(key, "expected true or false, got '" + *text + "'");
    return false;
  }
  return true;
}

bool Fields::read_integer(std::string_view key, std::int64_t& out, std::int64_t min,
                          std::int64_t max) {
  std::optional<std::string> text = scalar(key, "an integer");
  if (!text) return false;
  std::int64_t value = 0;
  auto [end, parse_error] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (text->empty() || parse_error != std::errc() || end != text->data() + text->size()) {
    error(key, "expected an integer, got '" + *text + "'");
    return false;
  }
  if (value < min || value > max) {
    error(key, fmt::format("{} is out of range {}..{}", value, min, max));
    return false;
  }
  out = value;
  return true;
}

bool Fields::read_number(std::string_view key, double& out, double min, double max) {
  std::optional<std::string> text = scalar(key, "a number");
  if (!text) return false;
  double value = 0;
  auto [end, parse_error] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (text->empty() || parse_error != std::errc() || end != text->data() + text->size() ||
      !std::isfinite(value)) {
    error(key, "expected a number, got '" + *text + "'");
    return false;
  }
  if (value < min || value > max) {
    error(key, fmt::format("{} is out of range {}..{}", value, min, max));
    return false;
  }
  out = value;
  return true;
}

bool Fields::read_duration(std::string_view key, Duration& out, Duration min, Duration max) {
  std::optional<std::string> text = scalar(key, "a duration");
  if (!text) return false;
  std::optional<Duration> value = parse_duration(*text);
  if (!value) {
    error(key, "invalid duration '" + *text + "' (examples: 250ms, 30s, 5m, 1h30m, 1d)");
    return false;
  }
  if (*value < min || *value > max) {
    error(key, *text + " is out of range " + format_duration(min) + ".." + format_duration(max));
    return false;
  }
  out = *value;
  return true;
}

bool Fields::read_size(std::string_view key, std::uint64_t& out, std::uint64_t min,
                       std::uint64_t max) {
  std::optional<std::string> text = scalar(key, "a size");
  if (!text) return false;
  std::optional<std::uint64_t> value = parse_size(*text);
  if (!value) {
    error(key, "invalid size '" + *text + "' (examples: 512, 64KiB, 25MiB, 1GiB)");
    return false;
  }
  if (*value < min || *value > max) {
    error(key, *text + " is out of range " + format_size(min) + ".." + format_size(max));
    return false;
  }
  out = *value;
  return true;
}

bool Fields::read_rate(std::string_view key, double& out) {
  std::optional<std::string> text = scalar(key, "a rate");
  if (!text) return false;
  std::optional<double> value = parse_rate(*text);
  if (!value) {
    error(key, "invalid rate '" + *text + "' (examples: 60/min, 10/s, 100/h, 5000/day, 2/5min)");
    return false;
  }
  if (*value <= 0) {
    error(key, "rate '" + *text + "' must be greater than zero");
    return false;
  }
  out = *value;
  return true;
}

bool Fields::read_endpoint(std::string_view key, Endpoint& out,
                           std::optional<std::uint16_t> default_port, bool allow_port_zero) {
  std::optional<std::string> text = scalar(key, "host:port");
  if (!text) return false;
  std::string endpoint_error;
  std::optional<Endpoint> value = parse_endpoint(*text, default_port, endpoint_error);
  if (!value) {
    error(key, endpoint_error);
    return false;
  }
  if (value->port == 0 && !allow_port_zero) {
    error(key, "'" + *text + "': port 0 is only valid for a listening address");
    return false;
  }
  out = *value;
  return true;
}

bool Fields::read_choice(std::string_view key, std::string& out,
                         const std::vector<std::string>& choices) {
  std::optional<std::string> text = scalar(key, "one of " + join(choices));
  if (!text) return false;
  if (std::find(choices.begin(), choices.end(), *text) == choices.end()) {
    error(key, choice_error(*text, choices));
    return false;
  }
  out = *text;
  return true;
}

std::optional<std::vector<ListItem>> Fields::read_list(std::string_view key, bool expand_files) {
  const YAML::Node* value = find(key);
  if (!value) return std::nullopt;
  return read_scalar_list(context_, *value, path_of(key), expand_files);
}

}  // namespace mxgate::policy::detail

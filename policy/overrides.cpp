// Applies `-o key=value` overrides to the parsed YAML tree.
#include "policy/overrides.hpp"

#include <cctype>
#include <charconv>
#include <string>
#include <variant>
#include <vector>

namespace mxgate::policy::detail {
namespace {

using Step = std::variant<std::string, std::size_t>;  // a key, or a list index

bool is_key_character(char character) {
  return std::isalnum(static_cast<unsigned char>(character)) || character == '_' ||
         character == '-';
}

// "dnsbl[0].weight" -> {"dnsbl", 0, "weight"}.
std::optional<std::vector<Step>> parse_key_path(std::string_view text, std::string& error) {
  std::vector<Step> steps;
  std::size_t position = 0;
  while (true) {
    const std::size_t start = position;
    while (position < text.size() && is_key_character(text[position])) ++position;
    if (position == start) {
      error = "invalid key (expected a dotted path such as limits.max_recipients)";
      return std::nullopt;
    }
    steps.emplace_back(std::string(text.substr(start, position - start)));
    while (position < text.size() && text[position] == '[') {
      const std::size_t close = text.find(']', position);
      std::size_t index = 0;
      const char* first = text.data() + position + 1;
      const char* last = text.data() + (close == std::string_view::npos ? text.size() : close);
      auto [end, parse_error] = std::from_chars(first, last, index);
      if (close == std::string_view::npos || first == last || parse_error != std::errc() ||
          end != last) {
        error = "invalid list index (expected e.g. dnsbl[0].weight)";
        return std::nullopt;
      }
      steps.emplace_back(index);
      position = close + 1;
    }
    if (position == text.size()) return steps;
    if (text[position] != '.') {
      error = "invalid key (expected a dotted path such as limits.max_recipients)";
      return std::nullopt;
    }
    ++position;
  }
}

std::string path_text(const std::vector<Step>& steps, std::size_t count) {
  std::string path;
  for (std::size_t index = 0; index < count; ++index) {
    if (const auto* key = std::get_if<std::string>(&steps[index])) {
      path = child_path(path, *key);
    } else {
      path = index_path(path, std::get<std::size_t>(steps[index]));
    }
  }
  return path;
}

// The value as a fresh node (no mark, so errors in it are blamed on the -o).
std::optional<YAML::Node> value_node(const std::string& value, std::string& error) {
  if (value == "~" || value == "null") return YAML::Node(YAML::NodeType::Null);
  const bool quoted = !value.empty() && (value.front() == '"' || value.front() == '\'');
  const bool flow_list = !value.empty() && value.front() == '[';
  if (!quoted && !flow_list) return YAML::Node(value);
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& exception) {
    error = "invalid value: " + exception.msg;
    return std::nullopt;
  }
  if (quoted && parsed.IsScalar()) return YAML::Node(parsed.Scalar());
  if (flow_list && parsed.IsSequence()) {
    YAML::Node list(YAML::NodeType::Sequence);
    for (std::size_t index = 0; index < parsed.size(); ++index) {
      if (!parsed[index].IsScalar()) {
        error = "invalid value: list items must be plain values";
        return std::nullopt;
      }
      list.push_back(YAML::Node(parsed[index].Scalar()));
    }
    return list;
  }
  error = "invalid value '" + value + "'";
  return std::nullopt;
}

}  // namespace

void apply_override(Context& context, YAML::Node& root, std::string_view text, int position) {
  const SourceMark mark{"-o", position, 0};
  const std::size_t equals = text.find('=');
  if (equals == std::string_view::npos) {
    context.error(mark, std::string(text), "expected key=value");
    return;
  }
  const std::string_view key_text = text.substr(0, equals);
  const std::string value(text.substr(equals + 1));
  std::string error;
  std::optional<std::vector<Step>> steps = parse_key_path(key_text, error);
  if (!steps) {
    context.error(mark, std::string(key_text), error);
    return;
  }
  const std::string path = path_text(*steps, steps->size());
  std::optional<YAML::Node> value_node_or = value_node(value, error);
  if (!value_node_or) {
    context.error(mark, path, error);
    return;
  }
  try {
    YAML::Node current = root;
    for (std::size_t index = 0; index < steps->size(); ++index) {
      const bool last = index + 1 == steps->size();
      const std::string walked = path_text(*steps, index);
      if (const auto* key = std::get_if<std::string>(&(*steps)[index])) {
        // A missing or empty section becomes a mapping; a value cannot hold keys.
        if (current.IsDefined() && !current.IsNull() && !current.IsMap()) {
          context.error(mark, path,
                        "'" + walked + "' is " + (current.IsSequence() ? "a list" : "a value") +
                            ", not a section");
          return;
        }
        if (last) {
          current[*key] = *value_node_or;
        } else {
          YAML::Node next = current[*key];
          current.reset(next);
        }
        continue;
      }
      const std::size_t element = std::get<std::size_t>((*steps)[index]);
      if (!current.IsDefined() || !current.IsSequence() || element >= current.size()) {
        const std::string size = current.IsDefined() && current.IsSequence()
                                     ? "it has " + std::to_string(current.size()) + " entries"
                                     : "it is not a list";
        context.error(
            mark, path,
            "no entry [" + std::to_string(element) + "] in '" + walked + "' (" + size + ")");
        return;
      }
      if (last) {
        current[element] = *value_node_or;
      } else {
        YAML::Node next = current[element];
        current.reset(next);
      }
    }
  } catch (const YAML::Exception& exception) {
    context.error(mark, path, "cannot apply: " + exception.msg);
    return;
  }
  context.add_override(path, position);
}

}  // namespace mxgate::policy::detail

// Content rules: RE2 patterns and composite expressions from the config, and content
// files (a header line, then one pattern per line), each error at its own file:line.
#include <fmt/format.h>
#include <re2/re2.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>

#include "policy/expression.hpp"
#include "policy/names.hpp"
#include "policy/rules.hpp"

namespace mxgate::policy::detail {

std::string regex_error(const std::string& pattern) {
  if (pattern.empty()) return "empty pattern (it would match everything)";
  RE2::Options options;
  options.set_log_errors(false);
  RE2 regex(pattern, options);
  if (regex.ok()) return {};
  return "invalid regular expression '" + pattern + "': " + regex.error();
}

namespace {

// Where a content pattern looks; "header:<Name>" selects one header field. The same names
// as filters/content.cpp's parse_content_target (policy cannot depend on filters).
const std::vector<std::string> kContentTargets{"body", "headers",    "all-headers", "subject",
                                               "from", "to",         "message",     "raw",
                                               "url",  "attachment", "mime"};

std::string content_target_error(const std::string& where) {
  if (std::find(kContentTargets.begin(), kContentTargets.end(), where) != kContentTargets.end()) {
    return {};
  }
  constexpr std::string_view kHeaderPrefix = "header:";
  if (where.starts_with(kHeaderPrefix)) {
    const std::string_view name = std::string_view(where).substr(kHeaderPrefix.size());
    // RFC 5322 2.2: field names are printable ASCII except ':'.
    const bool valid = !name.empty() && std::all_of(name.begin(), name.end(), [](char character) {
      return character > ' ' && character < 0x7f && character != ':';
    });
    if (valid) return {};
    return "'" + where + "': invalid header field name";
  }
  std::vector<std::string> choices = kContentTargets;
  choices.push_back("header:<Name>");
  return choice_error(where, choices);
}

std::string file_stem(const std::string& file_name) {
  return std::filesystem::path(file_name).stem().string();
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

// The header line of a content file; false (with errors reported) when it is unusable.
bool parse_content_file_header(Context& context, std::string_view line, const SourceMark& mark,
                               const std::string& path, ContentRule& defaults,
                               std::string& name_prefix) {
  const std::string usage =
      "expected a header line 'where=<target> score=<number> [action=<action>] "
      "[name=<prefix>]' before the patterns";
  bool valid = true;
  bool has_where = false;
  bool has_score = false;
  const std::vector<std::string> keys{"where", "score", "action", "name"};
  std::size_t start = 0;
  while (start < line.size()) {
    const std::size_t end = std::min(line.find_first_of(" \t", start), line.size());
    const std::string_view token = line.substr(start, end - start);
    start = line.find_first_not_of(" \t", end);
    if (start == std::string_view::npos) start = line.size();
    const std::size_t equals = token.find('=');
    if (equals == std::string_view::npos) {
      context.error(mark, path, usage);
      return false;
    }
    const std::string key(token.substr(0, equals));
    const std::string value(token.substr(equals + 1));
    if (key == "where") {
      has_where = true;
      if (std::string error = content_target_error(value); !error.empty()) {
        context.error(mark, path, "where: " + error);
        valid = false;
      }
      defaults.where = value;
    } else if (key == "score") {
      has_score = true;
      double score = 0;
      auto [parsed_end, parse_error] =
          std::from_chars(value.data(), value.data() + value.size(), score);
      if (value.empty() || parse_error != std::errc() ||
          parsed_end != value.data() + value.size() || !std::isfinite(score) ||
          std::abs(score) > kMaxScore) {
        context.error(
            mark, path,
            fmt::format("score: expected a number in -{0}..{0}, got '{1}'", kMaxScore, value));
        valid = false;
      }
      defaults.score = score;
    } else if (key == "action") {
      const auto found = std::find_if(kRuleActions.begin(), kRuleActions.end(),
                                      [&](const auto& entry) { return entry.first == value; });
      if (found == kRuleActions.end()) {
        std::vector<std::string> choices;
        for (const auto& [action_text, action] : kRuleActions) choices.emplace_back(action_text);
        context.error(mark, path, "action: " + choice_error(value, choices));
        valid = false;
      } else {
        defaults.action = found->second;
      }
    } else if (key == "name") {
      std::string error;
      if (!valid_rule_name(value, error)) {
        context.error(mark, path, "name: " + error);
        valid = false;
      }
      name_prefix = value;
    } else {
      std::string message = "unknown header key '" + key + "'";
      if (std::optional<std::string> suggestion = nearest_word(key, keys)) {
        message += " (did you mean '" + *suggestion + "'?)";
      }
      context.error(mark, path, message);
      valid = false;
    }
  }
  if (!has_where || !has_score) {
    context.error(mark, path, usage);
    return false;
  }
  if (valid && defaults.action == RuleAction::score && defaults.score == 0) {
    context.error(mark, path, "score 0 with action 'score' has no effect");
    valid = false;
  }
  return valid;
}

}  // namespace

void parse_content_rule(Context& context, const YAML::Node& node, const std::string& path,
                        ContentRule& rule) {
  Fields fields(context, node, path);
  if (!fields.is_mapping()) return;
  read_rule_name(fields, rule.name, true);
  if (fields.read_string("where", rule.where)) {
    if (std::string error = content_target_error(rule.where); !error.empty()) {
      fields.error("where", error);
    }
  }
  const bool has_pattern = fields.read_string("pattern", rule.pattern);
  const bool has_expression = fields.read_string("expression", rule.expression);
  if (has_pattern) {
    if (std::string error = regex_error(rule.pattern); !error.empty()) {
      fields.error("pattern", error);
    }
  }
  if (has_expression) {
    std::string error;
    if (rule.expression.empty()) {
      fields.error("expression", "empty expression");
    } else if (!Expression::parse(rule.expression, error)) {
      fields.error("expression", "invalid expression '" + rule.expression + "': " + error);
    }
  }
  if (!fields.find("pattern") && !fields.find("expression")) {
    context.error(fields.mapping_mark(), path, "needs a 'pattern' or an 'expression'");
  } else if (fields.find("pattern") && fields.find("expression")) {
    fields.error("expression", "a rule has either a 'pattern' or an 'expression', not both");
  }
  read_action_and_score(fields, rule.action, "score", rule.score, /*allow_tag=*/true);
  fields.read_string("description", rule.description);
}

void parse_content_file(Context& context, const ListItem& file_reference,
                        std::vector<ContentRule>& rules, RuleNames& names) {
  std::string file_name = file_reference.value;
  if (file_name.starts_with("file:")) file_name = std::string(trim(file_name.substr(5)));
  std::string contents;
  std::filesystem::path resolved;
  if (!read_config_file(context, file_name, file_reference.mark, file_reference.path, contents,
                        resolved)) {
    return;
  }
  const std::string display_name = resolved.string();
  ContentRule defaults;
  std::string name_prefix = file_stem(display_name);
  bool has_header = false;
  bool header_valid = false;
  int line_number = 0;
  std::size_t start = 0;
  while (start < contents.size()) {
    std::size_t end = contents.find('\n', start);
    if (end == std::string::npos) end = contents.size();
    const std::string_view line = trim(std::string_view(contents).substr(start, end - start));
    start = end + 1;
    ++line_number;
    // Only whole-line comments: '#' is an ordinary character inside a pattern.
    if (line.empty() || line.front() == '#') continue;
    const SourceMark mark{display_name, line_number, 0};
    if (!has_header) {
      has_header = true;
      header_valid = parse_content_file_header(context, line, mark, file_reference.path, defaults,
                                               name_prefix);
      continue;
    }
    ContentRule rule = defaults;
    rule.mark = mark;
    rule.name = name_prefix + ":" + std::to_string(line_number);
    rule.pattern = std::string(line);
    if (std::string error = regex_error(rule.pattern); !error.empty()) {
      context.error(mark, file_reference.path, error);
    }
    if (!header_valid) continue;
    names.check(context, rule.name, mark, file_reference.path);
    rules.push_back(std::move(rule));
  }
  if (!has_header) {
    context.error({display_name, 0, 0}, file_reference.path,
                  "empty content file (expected a header line 'where=<target> score=<number>' "
                  "and patterns)");
  }
}

// Composite rules may only name content rules that exist, and must not depend on
// themselves (directly or through other composites): such a rule could never be decided.
void check_expression_references(Fields& root, const std::vector<ContentRule>& rules) {
  Context& context = root.context();
  const YAML::Node* section = root.find("content");
  std::map<std::string, std::vector<std::string>> dependencies;  // composite -> names
  std::vector<std::string> all_names;
  for (const ContentRule& rule : rules) all_names.push_back(rule.name);
  auto expression_mark = [&](std::size_t index) {
    const std::string path = child_path(index_path("content", index), "expression");
    if (section && section->IsSequence() && index < section->size()) {
      const YAML::Node rule_node = (*section)[index];
      if (rule_node.IsMap() && rule_node["expression"]) {
        return context.mark(rule_node["expression"], path);
      }
    }
    return rules[index].mark;
  };
  for (std::size_t index = 0; index < rules.size(); ++index) {
    const ContentRule& rule = rules[index];
    if (rule.expression.empty()) continue;
    std::string error;
    std::optional<Expression> expression = Expression::parse(rule.expression, error);
    if (!expression) continue;  // already reported
    const std::string path = child_path(index_path("content", index), "expression");
    for (const std::string& name : expression->names()) {
      if (std::find(all_names.begin(), all_names.end(), name) == all_names.end()) {
        std::string message = "expression names unknown content rule '" + name + "'";
        if (std::optional<std::string> suggestion = nearest_word(name, all_names)) {
          message += " (did you mean '" + *suggestion + "'?)";
        }
        context.error(expression_mark(index), path, message);
      }
    }
    dependencies[rule.name] = expression->names();
  }
  // Depth-first search for a path from each composite back to itself; a cycle is
  // reported once, at its first rule.
  std::vector<std::string> in_reported_cycle;
  for (std::size_t index = 0; index < rules.size(); ++index) {
    const std::string& start = rules[index].name;
    if (!dependencies.count(start)) continue;
    if (std::find(in_reported_cycle.begin(), in_reported_cycle.end(), start) !=
        in_reported_cycle.end()) {
      continue;
    }
    std::vector<std::vector<std::string>> stack{{start}};
    std::vector<std::string> visited;
    while (!stack.empty()) {
      std::vector<std::string> chain = std::move(stack.back());
      stack.pop_back();
      const auto found = dependencies.find(chain.back());
      if (found == dependencies.end()) continue;
      bool reported = false;
      for (const std::string& next : found->second) {
        if (next == start) {
          std::string cycle;
          for (const std::string& name : chain) {
            cycle += name + " -> ";
            in_reported_cycle.push_back(name);
          }
          context.error(expression_mark(index),
                        child_path(index_path("content", index), "expression"),
                        "rule '" + start + "' depends on itself (" + cycle + start + ")");
          reported = true;
          break;
        }
        if (std::find(visited.begin(), visited.end(), next) != visited.end()) continue;
        visited.push_back(next);
        std::vector<std::string> longer = chain;
        longer.push_back(next);
        stack.push_back(std::move(longer));
      }
      if (reported) break;
    }
  }
}

}  // namespace mxgate::policy::detail

// Parsers of the rule sections (dnsbl, access, ratelimit, content, content_files): one
// function per rule kind, so a new rule key is one line in one place. Internal to policy/.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "policy/config.hpp"
#include "policy/yaml_reader.hpp"

namespace mxgate::policy::detail {

// Rule names must be unique within a filter: logs and `mxgate logs` name rules by them.
class RuleNames {
 public:
  void check(Context& context, const std::string& name, const SourceMark& mark,
             const std::string& path);

 private:
  std::map<std::string, SourceMark> first_seen_;
};

// Scores beyond this are typos: thresholds are single or double digits.
inline constexpr double kMaxScore = 1000;
extern const EnumNames<RuleAction> kRuleActions;

// Empty when `pattern` is a valid RE2 pattern, else the error to report ("invalid regular
// expression '...': ..."). An empty pattern is an error: it would match everything.
// Compiled only to be validated; the filters compile their own.
std::string regex_error(const std::string& pattern);

// `name`, validated; `required` for rules that have no natural default name.
void read_rule_name(Fields& fields, std::string& name, bool required);
// Reads `action` and the score key (`score`, or `weight` for dnsbl), then checks that they
// agree: action score with score 0, or a score that another action never counts, is an error.
void read_action_and_score(Fields& fields, RuleAction& action, std::string_view score_key,
                           double& score, bool allow_tag = false);

void parse_dnsbl_rule(Context& context, const YAML::Node& node, const std::string& path,
                      DnsblRule& rule);
void parse_access_rule(Context& context, const YAML::Node& node, const std::string& path,
                       AccessRule& rule);
void parse_ratelimit_rule(Context& context, const YAML::Node& node, const std::string& path,
                          RateLimitRule& rule);
void parse_content_rule(Context& context, const YAML::Node& node, const std::string& path,
                        ContentRule& rule);

// A content file: a header line "where=<target> score=<number> [action=<action>]
// [name=<prefix>]", then one RE2 pattern per line. Blank lines and lines starting with
// '#' are skipped; patterns are trimmed. Rule names are "<prefix>:<line>" (prefix
// defaults to the file name without extension), so a log line leads to the pattern.
void parse_content_file(Context& context, const ListItem& file_reference,
                        std::vector<ContentRule>& rules, RuleNames& names);

// Composite rules may only name content rules that exist and must not depend on
// themselves; checked once every content rule (inline and from files) is known.
void check_expression_references(Fields& root, const std::vector<ContentRule>& rules);

// The four rule sections plus content_files, read from the top-level mapping.
void parse_rule_sections(Fields& root, Config& config);

}  // namespace mxgate::policy::detail

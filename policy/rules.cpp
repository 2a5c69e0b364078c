// Rule sections of the policy: dnsbl, access and ratelimit rules (content rules are in
// content_rules.cpp), each checked for the combinations that could never take effect.
#include "policy/rules.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "policy/cidr.hpp"
#include "policy/names.hpp"
#include "policy/reply_filter.hpp"

namespace mxgate::policy::detail {
namespace {

const EnumNames<OnError> kOnErrors{{"allow", OnError::allow}, {"tempfail", OnError::tempfail}};
const EnumNames<DnsblRule::Kind> kDnsblKinds{
    {"ip", DnsblRule::Kind::ip},
    {"helo", DnsblRule::Kind::helo},
    {"sender_domain", DnsblRule::Kind::sender_domain},
};
const EnumNames<AccessRule::Kind> kAccessKinds{
    {"client_ip", AccessRule::Kind::client_ip},
    {"helo", AccessRule::Kind::helo},
    {"sender", AccessRule::Kind::sender},
    {"sender_domain", AccessRule::Kind::sender_domain},
    {"recipient", AccessRule::Kind::recipient},
    {"recipient_domain", AccessRule::Kind::recipient_domain},
};

const std::vector<std::string> kStages{"connect", "helo", "mail", "rcpt", "data"};
const std::vector<std::string> kCounts{"events",     "connections", "messages",
                                       "recipients", "errors",      "concurrency"};
// The stages at which a rate-limit key is known: a sender exists from MAIL on, a
// recipient only while its RCPT is being decided.
struct KeyStages {
  std::string_view key;
  std::size_t first_stage;
  std::size_t last_stage;
};
constexpr std::array<KeyStages, 7> kRateLimitKeys{{
    {"client_ip", 0, 4},
    {"client_net", 0, 4},
    {"helo", 1, 4},
    {"sender", 2, 4},
    {"sender_domain", 2, 4},
    {"recipient", 3, 3},
    {"recipient_domain", 3, 3},
}};

std::string action_name(RuleAction action) {
  for (const auto& [name, value] : kRuleActions) {
    if (value == action) return std::string(name);
  }
  return "?";
}

std::string mark_text(const SourceMark& mark) {
  if (mark.line == 0) return mark.file;
  return mark.file + ":" + std::to_string(mark.line);
}

void read_cidr_list(Fields& fields, std::string_view key, std::vector<std::string>& out) {
  std::optional<std::vector<ListItem>> items = fields.read_list(key, true);
  if (!items) return;
  out.clear();
  for (const ListItem& item : *items) {
    std::string error;
    if (std::optional<Cidr> cidr = parse_cidr(item.value, error)) {
      out.push_back(cidr->to_string());
    } else {
      fields.context().error(item.mark, item.path, error);
    }
  }
}

template <typename Rule, typename Parse>
void parse_rule_list(Fields& root, std::string_view section, std::vector<Rule>& rules,
                     RuleNames& names, Parse parse) {
  const YAML::Node* node = root.find(section);
  if (!node || node->IsNull()) return;
  Context& context = root.context();
  const std::string section_path(section);
  if (!node->IsSequence()) {
    context.error(*node, section_path, "expected a list of rules, got " + describe_node(*node));
    return;
  }
  for (std::size_t index = 0; index < node->size(); ++index) {
    const YAML::Node element = (*node)[index];
    const std::string path = index_path(section_path, index);
    Rule rule;
    rule.mark = context.mark(element, path);
    parse(context, element, path, rule);
    if (!rule.name.empty()) names.check(context, rule.name, rule.mark, child_path(path, "name"));
    rules.push_back(std::move(rule));
  }
}

}  // namespace

const EnumNames<RuleAction> kRuleActions{
    {"score", RuleAction::score},       {"reject", RuleAction::reject},
    {"tempfail", RuleAction::tempfail}, {"accept", RuleAction::accept},
    {"drop", RuleAction::drop},         {"log", RuleAction::log},
    {"tag", RuleAction::tag},
};

void read_rule_name(Fields& fields, std::string& name, bool required) {
  if (required && !fields.require("name")) return;
  if (!fields.read_string("name", name)) return;
  std::string error;
  if (!valid_rule_name(name, error)) fields.error("name", error);
}

// Reads `action` and the score key, then checks that they agree, or the rule cannot do
// what its author meant. Skipped when either is invalid (already reported).
void read_action_and_score(Fields& fields, RuleAction& action, std::string_view score_key,
                           double& score, bool allow_tag) {
  const bool action_valid =
      fields.read_enum("action", action, kRuleActions) || !fields.find("action");
  const bool score_valid =
      fields.read_number(score_key, score, -kMaxScore, kMaxScore) || !fields.find(score_key);
  if (!action_valid || !score_valid) return;
  if (action == RuleAction::tag && !allow_tag) {
    fields.error("action", "action 'tag' is only for content rules");
  } else if (action == RuleAction::score && score == 0) {
    fields.error(score_key, fmt::format("{} 0 with action 'score' has no effect; set a non-zero "
                                        "{} or another action",
                                        score_key, score_key));
  } else if (action != RuleAction::score && action != RuleAction::log && fields.find(score_key) &&
             score != 0) {
    fields.error(score_key, fmt::format("{} {} is never counted with action '{}' (only with "
                                        "action 'score' or 'log')",
                                        score_key, score, action_name(action)));
  }
}

void RuleNames::check(Context& context, const std::string& name, const SourceMark& mark,
                      const std::string& path) {
  const auto [first, inserted] = first_seen_.emplace(name, mark);
  if (inserted) return;
  context.error(mark, path,
                "duplicate rule name '" + name + "' (first at " + mark_text(first->second) + ")");
}

void parse_dnsbl_rule(Context& context, const YAML::Node& node, const std::string& path,
                      DnsblRule& rule) {
  Fields fields(context, node, path);
  if (!fields.is_mapping()) return;
  if (fields.require("zone") && fields.read_string("zone", rule.zone)) {
    std::string error;
    if (!normalize_domain(rule.zone, error)) fields.error("zone", error);
  }
  // Both default to the zone; a zone carrying a query key (Spamhaus DQS) should set
  // reply_name so the key never reaches a client.
  rule.name = rule.zone;
  rule.reply_name = rule.zone;
  read_rule_name(fields, rule.name, false);
  if (fields.read_string("reply_name", rule.reply_name)) {
    std::string error;
    std::string reply_name = rule.reply_name;
    if (!normalize_domain(reply_name, error)) fields.error("reply_name", error);
  }
  fields.read_enum("kind", rule.kind, kDnsblKinds);
  if (fields.read_string("match", rule.match)) {
    std::string error;
    if (!valid_reply_filter(rule.match, error)) {
      fields.error("match", "invalid reply filter '" + rule.match + "': " + error);
    }
  }
  read_action_and_score(fields, rule.action, "weight", rule.weight);
  fields.read_bool("fetch_txt", rule.fetch_txt);
  fields.read_enum("on_error", rule.on_error, kOnErrors);
}

void parse_access_rule(Context& context, const YAML::Node& node, const std::string& path,
                       AccessRule& rule) {
  Fields fields(context, node, path);
  if (!fields.is_mapping()) return;
  read_rule_name(fields, rule.name, true);
  const bool kind_known =
      fields.require("kind") && fields.read_enum("kind", rule.kind, kAccessKinds);
  if (fields.require("values")) {
    std::optional<std::vector<ListItem>> items = fields.read_list("values", true);
    if (items && items->empty()) {
      fields.error("values", "empty list: the rule can never match");
    }
    if (items && kind_known) {
      for (const ListItem& item : *items) {
        std::string value = item.value;
        std::string error;
        bool valid = false;
        switch (rule.kind) {
          case AccessRule::Kind::client_ip:
            if (std::optional<Cidr> cidr = parse_cidr(value, error)) {
              value = cidr->to_string();
              valid = true;
            }
            break;
          case AccessRule::Kind::helo:
            // A HELO may be an address literal; filters/access compares it as text.
            valid = value.starts_with("[") ? valid_address_literal(value, error)
                                           : normalize_domain_entry(value, error);
            break;
          case AccessRule::Kind::sender_domain:
          case AccessRule::Kind::recipient_domain:
            // filters/access: "example.org" matches it and its subdomains, ".example.org"
            // only its subdomains.
            valid = normalize_domain_entry(value, error);
            break;
          case AccessRule::Kind::sender:
          case AccessRule::Kind::recipient:
            valid = normalize_address(value, error);
            break;
        }
        if (valid) {
          rule.values.push_back(value);
        } else {
          context.error(item.mark, item.path, error);
        }
      }
    }
  }
  read_action_and_score(fields, rule.action, "score", rule.score);
}

void parse_ratelimit_rule(Context& context, const YAML::Node& node, const std::string& path,
                          RateLimitRule& rule) {
  Fields fields(context, node, path);
  if (!fields.is_mapping()) return;
  read_rule_name(fields, rule.name, true);
  const bool stage_known =
      fields.read_choice("stage", rule.stage, kStages) || !fields.find("stage");
  const std::size_t stage_index =
      std::find(kStages.begin(), kStages.end(), rule.stage) - kStages.begin();
  if (fields.require("key")) {
    if (std::optional<std::vector<ListItem>> items = fields.read_list("key", false)) {
      if (items->empty()) fields.error("key", "empty list (name at least one, e.g. client_ip)");
      for (const ListItem& item : *items) {
        const auto found =
            std::find_if(kRateLimitKeys.begin(), kRateLimitKeys.end(),
                         [&](const KeyStages& key) { return key.key == item.value; });
        if (found == kRateLimitKeys.end()) {
          std::vector<std::string> choices;
          for (const KeyStages& key : kRateLimitKeys) choices.emplace_back(key.key);
          context.error(item.mark, item.path, choice_error(item.value, choices));
          continue;
        }
        if (stage_known && stage_index < found->first_stage) {
          context.error(item.mark, item.path,
                        "key '" + item.value + "' is not known yet at stage '" + rule.stage +
                            "' (earliest stage: " + kStages[found->first_stage] + ")");
          continue;
        }
        if (stage_known && stage_index > found->last_stage) {
          context.error(item.mark, item.path,
                        "key '" + item.value + "' is per recipient: use stage 'rcpt'");
          continue;
        }
        rule.key.push_back(item.value);
      }
    }
  }
  fields.read_choice("count", rule.count, kCounts);
  if (rule.count == "concurrency") {
    // A concurrency limit counts sessions open at once: a size, not a rate.
    if (fields.require("limit")) fields.read_integer("limit", rule.limit, 1, 1000000);
    fields.read_duration("slot_ttl", rule.slot_ttl, std::chrono::seconds(10),
                         std::chrono::hours(24));
  } else {
    if (fields.require("rate")) fields.read_rate("rate", rule.rate);
    if (fields.read_number("burst", rule.burst, 0, 1e9) && rule.burst > 0 && rule.burst < 1) {
      fields.error("burst", fmt::format("burst {} is below 1: no event could ever pass", rule.burst));
    }
  }
  read_action_and_score(fields, rule.action, "score", rule.score);
  // The reply code follows the action unless given: a rejecting limit is a 5xx.
  if (rule.action == RuleAction::reject) rule.reply_code = 550;
  if (fields.read_integer("reply_code", rule.reply_code, 400, 599)) {
    // Invariant 2 ("when in doubt, 4xx"): the code class must be the one the action says.
    if (rule.action == RuleAction::tempfail && rule.reply_code >= 500) {
      fields.error("reply_code", fmt::format("{} is a permanent failure but action is 'tempfail' "
                                             "(use 4xx)",
                                             rule.reply_code));
    } else if (rule.action == RuleAction::reject && rule.reply_code < 500) {
      fields.error("reply_code", fmt::format("{} is a temporary failure but action is 'reject' "
                                             "(use 5xx, or action 'tempfail')",
                                             rule.reply_code));
    }
  }
  fields.read_enum("on_error", rule.on_error, kOnErrors);
  read_cidr_list(fields, "exempt", rule.exempt);
}

void parse_rule_sections(Fields& root, Config& config) {
  RuleNames dnsbl_names;
  parse_rule_list(root, "dnsbl", config.dnsbl, dnsbl_names, parse_dnsbl_rule);
  RuleNames uribl_names;
  parse_rule_list(root, "uribl", config.uribl, uribl_names, parse_dnsbl_rule);
  RuleNames access_names;
  parse_rule_list(root, "access", config.access, access_names, parse_access_rule);
  RuleNames ratelimit_names;
  parse_rule_list(root, "ratelimit", config.ratelimit, ratelimit_names, parse_ratelimit_rule);
  RuleNames content_names;
  parse_rule_list(root, "content", config.content, content_names, parse_content_rule);
  if (std::optional<std::vector<ListItem>> files = root.read_list("content_files", false)) {
    for (const ListItem& file : *files) {
      parse_content_file(root.context(), file, config.content, content_names);
    }
  }
  check_expression_references(root, config.content);
}

}  // namespace mxgate::policy::detail

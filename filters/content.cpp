// Content scanning: one RE2::Set per target, each message walked once per target, each
// line matched once against every pattern of that target (not once per rule).
#include "filters/content.hpp"
#include "policy/names.hpp"

#include <fmt/format.h>
#include <re2/re2.h>
#include <re2/set.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <map>
#include <stdexcept>

#include "filters/metrics.hpp"

namespace mxgate::filters {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

struct TargetName {
  std::string_view name;
  ContentTarget target;
};
constexpr TargetName kTargets[] = {
    {"subject", ContentTarget::subject},
    {"from", ContentTarget::from},
    {"to", ContentTarget::to},
    {"all-headers", ContentTarget::all_headers},
    {"headers", ContentTarget::all_headers},
    {"body", ContentTarget::body},
    {"raw", ContentTarget::raw},
    {"message", ContentTarget::message},
    {"url", ContentTarget::url},
    {"attachment", ContentTarget::attachment},
    {"mime", ContentTarget::mime},
};

}  // namespace

std::optional<TargetKey> parse_content_target(std::string_view where) {
  constexpr std::string_view kHeaderPrefix = "header:";
  if (where.starts_with(kHeaderPrefix)) {
    const std::string_view name = where.substr(kHeaderPrefix.size());
    if (name.empty()) return std::nullopt;
    return TargetKey{ContentTarget::header, policy::ascii_lower(name)};
  }
  for (const auto& entry : kTargets)
    if (entry.name == where) return TargetKey{entry.target, {}};
  return std::nullopt;
}

std::string target_name(const TargetKey& key) {
  if (key.target == ContentTarget::header) return "header:" + key.header;
  for (const auto& entry : kTargets)
    if (entry.target == key.target) return std::string(entry.name);
  return "?";
}

struct CompiledSet {
  std::unique_ptr<RE2::Set> set;
  std::vector<std::size_t> rule_of;  // set index -> rule index
};

struct ContentScanner::Group {
  TargetKey key;
  std::vector<CompiledSet> sets;
};

namespace {

RE2::Options set_options(const ContentOptions& options) {
  RE2::Options re2_options;
  re2_options.set_log_errors(false);
  re2_options.set_max_mem(options.re2_max_mem);
  return re2_options;
}

// Compiles `members` into one set, or, when RE2's memory budget is too small for them,
// into halves (recursively). A single pattern over budget is disabled and reported.
void compile_sets(const std::vector<std::size_t>& members, std::vector<ContentScanner::Rule>& rules,
                  const ContentOptions& options, std::vector<CompiledSet>& out,
                  std::vector<std::string>& errors) {
  if (members.empty()) return;
  CompiledSet compiled;
  compiled.set = std::make_unique<RE2::Set>(set_options(options), RE2::UNANCHORED);
  for (std::size_t index : members) {
    std::string error;
    if (compiled.set->Add(rules[index].config.pattern, &error) < 0) {
      rules[index].enabled = false;
      errors.push_back(
          fmt::format("content rule '{}': invalid pattern: {}", rules[index].config.name, error));
      continue;
    }
    compiled.rule_of.push_back(index);
  }
  if (compiled.rule_of.empty()) return;
  if (compiled.set->Compile()) {
    out.push_back(std::move(compiled));
    return;
  }
  if (compiled.rule_of.size() == 1) {
    auto& rule = rules[compiled.rule_of.front()];
    rule.enabled = false;
    errors.push_back(
        fmt::format("content rule '{}': the pattern needs more than "
                    "content_limits.re2_max_mem ({} bytes)",
                    rule.config.name, options.re2_max_mem));
    return;
  }
  const std::size_t half = compiled.rule_of.size() / 2;
  std::vector<std::size_t> first(compiled.rule_of.begin(), compiled.rule_of.begin() + half);
  std::vector<std::size_t> second(compiled.rule_of.begin() + half, compiled.rule_of.end());
  compile_sets(first, rules, options, out, errors);
  compile_sets(second, rules, options, out, errors);
}

// Feeds each field or line of one target to `visit`.
void for_each_field(const TargetKey& key, const mime::Message& parsed, std::string_view message,
                    std::string& buffer, const std::function<bool(std::string_view)>& visit) {
  auto lines = [&](std::string_view text) {
    std::size_t position = 0;
    while (position < text.size()) {
      const std::size_t newline = text.find('\n', position);
      const std::size_t end = newline == std::string_view::npos ? text.size() : newline;
      std::string_view line = text.substr(position, end - position);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      position = end + 1;
      if (!visit(line)) return false;
    }
    return true;
  };
  auto headers_named = [&](std::string_view name) {
    for (const auto& field : parsed.headers)
      if (iequals(field.name, name) && !visit(field.value)) return;
  };
  switch (key.target) {
    case ContentTarget::header:
      return headers_named(key.header);
    case ContentTarget::subject:
      return headers_named("subject");
    case ContentTarget::from:
      return headers_named("from");
    case ContentTarget::to:
      return headers_named("to");
    case ContentTarget::all_headers:
      for (const auto& field : parsed.headers) {
        buffer.assign(field.name);
        buffer += ": ";
        buffer += field.value;
        if (!visit(buffer)) return;
      }
      return;
    case ContentTarget::body:
      for (const auto& part : parsed.texts)
        if (!lines(part.text)) return;
      return;
    case ContentTarget::raw:
      lines(message.substr(std::min(parsed.body_offset, message.size())));
      return;
    case ContentTarget::message:
      lines(message);
      return;
    case ContentTarget::url:
      for (const auto& url : parsed.urls)
        if (!visit(url)) return;
      return;
    case ContentTarget::attachment:
      for (const auto& attachment : parsed.attachments) {
        if (!attachment.file_name.empty() && !visit(attachment.file_name)) return;
        if (!visit(attachment.content_type)) return;
      }
      return;
    case ContentTarget::mime:
      for (std::size_t i = 0; i < mime::kFindingCount; ++i)
        if (parsed.finding_counts[i] && !visit(mime::finding_name(static_cast<mime::Finding>(i))))
          return;
      return;
  }
}

}  // namespace

ContentOptions content_options(const policy::Config& config) {
  ContentOptions options;
  options.max_line_scan = config.content_limits.max_line_scan;
  options.re2_max_mem = static_cast<std::int64_t>(config.content_limits.re2_max_mem);
  options.max_scan_bytes = 2 * config.limits.max_message_size;
  // Decoded text cannot be larger than the message (base64 and QP only shrink it).
  options.mime.max_decoded = static_cast<std::size_t>(config.limits.max_message_size);
  return options;
}

ContentScanner::~ContentScanner() = default;

std::shared_ptr<const ContentScanner> ContentScanner::build(
    const std::vector<policy::ContentRule>& rules, const ContentOptions& options,
    std::vector<std::string>& errors) {
  std::shared_ptr<ContentScanner> scanner(new ContentScanner());
  scanner->options_ = options;
  if (scanner->options_.max_line_scan < 64) scanner->options_.max_line_scan = 64;
  std::map<std::string, std::size_t> by_name;
  for (const auto& config : rules) {
    Rule rule;
    rule.config = config;
    if (auto key = parse_content_target(config.where)) {
      rule.target = *key;
    } else {
      rule.enabled = false;
      errors.push_back(
          fmt::format("content rule '{}': unknown target '{}'", config.name, config.where));
    }
    if (!config.expression.empty()) {
      std::string error;
      rule.expression = policy::Expression::parse(config.expression, error);
      if (!rule.expression) {
        rule.enabled = false;
        errors.push_back(fmt::format("content rule '{}': expression: {}", config.name, error));
      }
    }
    by_name.emplace(config.name, scanner->rules_.size());
    scanner->rules_.push_back(std::move(rule));
  }

  // Pattern rules, grouped by target in order of first appearance.
  std::vector<std::pair<TargetKey, std::vector<std::size_t>>> members;
  for (std::size_t i = 0; i < scanner->rules_.size(); ++i) {
    const Rule& rule = scanner->rules_[i];
    if (!rule.enabled || rule.expression) continue;
    auto found = std::find_if(members.begin(), members.end(),
                              [&](const auto& entry) { return entry.first == rule.target; });
    if (found == members.end()) {
      members.push_back({rule.target, {}});
      found = members.end() - 1;
    }
    found->second.push_back(i);
  }
  for (auto& [key, indices] : members) {
    auto group = std::make_unique<Group>();
    group->key = key;
    compile_sets(indices, scanner->rules_, scanner->options_, group->sets, errors);
    if (!group->sets.empty()) scanner->groups_.push_back(std::move(group));
  }

  // Composites: resolve names, then order them so operands come first (depth-first,
  // a rule on the current path again is a cycle).
  for (auto& rule : scanner->rules_) {
    if (!rule.expression || !rule.enabled) continue;
    for (const auto& name : rule.expression->names()) {
      auto found = by_name.find(name);
      if (found == by_name.end()) {
        rule.enabled = false;
        errors.push_back(fmt::format("content rule '{}': expression names unknown rule '{}'",
                                     rule.config.name, name));
        break;
      }
      rule.operands.push_back(found->second);
    }
  }
  enum class Mark { none, visiting, done };
  std::vector<Mark> marks(scanner->rules_.size(), Mark::none);
  std::function<bool(std::size_t)> visit = [&](std::size_t index) -> bool {
    Rule& rule = scanner->rules_[index];
    if (marks[index] == Mark::done) return rule.enabled;
    if (marks[index] == Mark::visiting) return false;
    marks[index] = Mark::visiting;
    if (rule.expression && rule.enabled) {
      for (std::size_t operand : rule.operands) {
        if (!visit(operand)) {
          if (rule.enabled)
            errors.push_back(fmt::format(
                "content rule '{}': expression depends on '{}', which is disabled or part of a "
                "cycle",
                rule.config.name, scanner->rules_[operand].config.name));
          rule.enabled = false;
        }
      }
      if (rule.enabled) scanner->composite_order_.push_back(index);
    }
    marks[index] = Mark::done;
    return rule.enabled;
  };
  for (std::size_t i = 0; i < scanner->rules_.size(); ++i) visit(i);
  return scanner;
}

std::size_t ContentScanner::set_count() const {
  std::size_t count = 0;
  for (const auto& group : groups_) count += group->sets.size();
  return count;
}

void ContentScanner::scan_group(const Group& group, const mime::Message& parsed,
                                std::string_view message, ContentScanResult& result) const {
  const std::size_t window = options_.max_line_scan;
  const std::size_t overlap = std::min<std::size_t>(256, window / 2);
  std::uint64_t budget = options_.max_scan_bytes;
  std::vector<int> matched;
  std::string buffer;
  auto match = [&](std::string_view text) {
    for (const auto& compiled : group.sets) {
      matched.clear();
      RE2::Set::ErrorInfo info{RE2::Set::kNoError};
      if (compiled.set->Match(text, &matched, &info)) {
        for (int index : matched)
          result.hits[compiled.rule_of[static_cast<std::size_t>(index)]] = true;
      } else if (info.kind != RE2::Set::kNoError) {
        result.incomplete = true;  // DFA out of memory: raise re2_max_mem
      }
    }
  };
  for_each_field(group.key, parsed, message, buffer, [&](std::string_view field) {
    // Empty fields still match patterns like "^$" (an empty Subject).
    if (field.size() <= window) {
      if (field.size() > budget) {
        result.incomplete = true;
        return false;
      }
      budget -= field.size();
      result.bytes_scanned += field.size();
      match(field);
      return true;
    }
    for (std::size_t start = 0; start < field.size(); start += window - overlap) {
      const std::string_view piece = field.substr(start, window);
      if (piece.size() > budget) {
        result.incomplete = true;
        return false;
      }
      budget -= piece.size();
      result.bytes_scanned += piece.size();
      match(piece);
      if (start + window >= field.size()) break;
    }
    return true;
  });
}

ContentScanResult ContentScanner::scan(const mime::Message& parsed,
                                       std::string_view message) const {
  ContentScanResult result;
  result.hits.assign(rules_.size(), false);
  for (const auto& group : groups_) scan_group(*group, parsed, message, result);
  for (std::size_t index : composite_order_) {
    const Rule& rule = rules_[index];
    result.hits[index] = rule.expression->evaluate(
        [&](std::size_t operand) { return result.hits[rule.operands[operand]]; });
  }
  return result;
}

ContentScanResult ContentScanner::scan(std::string_view message) const {
  const mime::Message parsed = mime::parse(message, options_.mime);
  return scan(parsed, message);
}

std::shared_ptr<const mime::Message> parse_message_shared(std::string_view message,
                                                          const mime::Limits& limits) {
  struct Memo {
    const char* data = nullptr;
    std::size_t size = 0;
    std::size_t hash = 0;
    std::shared_ptr<const mime::Message> parsed;
  };
  thread_local Memo memo;
  const std::size_t hash = std::hash<std::string_view>{}(message);
  if (memo.parsed && memo.data == message.data() && memo.size == message.size() &&
      memo.hash == hash)
    return memo.parsed;
  auto parsed = std::make_shared<const mime::Message>(mime::parse(message, limits));
  memo = {message.data(), message.size(), hash, parsed};
  return parsed;
}

// --- the filter ---------------------------------------------------------------------

namespace {

class ContentInstance final : public FilterInstance {
 public:
  explicit ContentInstance(const ContentFilter& filter) : filter_(filter) {}

  boost::asio::awaitable<Verdict> on_stage(Stage stage, const SessionContext& context) override {
    if (stage != Stage::data || !context.message) co_return Verdict::next();
    co_return filter_.judge(*context.message);
  }

 private:
  const ContentFilter& filter_;
};

}  // namespace

ContentFilter::ContentFilter(const std::vector<policy::ContentRule>& rules,
                             const ContentOptions& options) {
  std::vector<std::string> errors;
  scanner_ = ContentScanner::build(rules, options, errors);
  // policy/ validated every pattern with RE2 already; what fails here is a budget, so
  // the daemon keeps running with the rules that work and says which do not.
  for (const auto& error : errors) spdlog::error("content: {}", error);
  auto& registry = metrics::Registry::global();
  for (const auto& rule : scanner_->rules())
    hit_counters_.push_back(&registry.counter("mxgate_content_rule_hits_total",
                                              "Messages that matched a content rule",
                                              {{"rule", rule.config.name}}));
  incomplete_ = &registry.counter("mxgate_content_scans_incomplete_total",
                                  "Messages only partly scanned (a scan budget was reached)");
  spdlog::info("content: {} rules in {} RE2 sets", scanner_->rules().size(), scanner_->set_count());
}

ContentFilter::~ContentFilter() = default;

std::unique_ptr<FilterInstance> ContentFilter::open(Services&) const {
  return std::make_unique<ContentInstance>(*this);
}

Verdict ContentFilter::judge(std::string_view message) const {
  const auto parsed = parse_message_shared(message, scanner_->options().mime);
  const ContentScanResult result = scanner_->scan(*parsed, message);
  if (result.incomplete) incomplete_->inc();
  Verdict verdict;
  const auto& rules = scanner_->rules();
  for (std::size_t i = 0; i < rules.size(); ++i) {
    if (!result.hits[i]) continue;
    const auto& rule = rules[i];
    hit_counters_[i]->inc();
    std::string detail =
        rule.expression ? "expression " + rule.config.expression : target_name(rule.target);
    if (!rule.config.description.empty()) detail += ": " + rule.config.description;
    const bool dry_run = rule.config.action == policy::RuleAction::log;
    using policy::RuleAction;
    if (rule.config.action == RuleAction::score || dry_run) {
      verdict.contributions.push_back(
          {name_, rule.config.name, rule.config.score, detail, "data", dry_run, ""});
      continue;
    }
    if (rule.config.action == RuleAction::tag) {
      verdict.contributions.push_back(
          {name_, rule.config.name, 0, detail + " (tag)", "data", false, ""});
      verdict.tags.push_back(rule.config.name);
      continue;
    }
    // Decisive actions: the first hit in config order decides, as Postfix restrictions.
    verdict.contributions.push_back({name_, rule.config.name, 0, detail, "data", false, ""});
    if (verdict.kind != Verdict::Kind::next) continue;
    verdict.filter = name_;
    verdict.rule = rule.config.name;
    verdict.detail = detail;
    switch (rule.config.action) {
      case RuleAction::reject:
        verdict.kind = Verdict::Kind::reject;
        verdict.reply = smtp::Reply(550, "5.7.1", "Message content rejected");
        break;
      case RuleAction::tempfail:
        verdict.kind = Verdict::Kind::tempfail;
        verdict.reply = smtp::Reply(451, "4.7.1", "Message content deferred, try again later");
        break;
      case RuleAction::drop:
        verdict.kind = Verdict::Kind::drop;
        verdict.reply = smtp::Reply(421, "4.7.0", "Message content rejected, closing connection");
        break;
      case RuleAction::accept:
        verdict.kind = Verdict::Kind::accept;
        break;
      default:
        break;
    }
  }
  return verdict;
}

}  // namespace mxgate::filters

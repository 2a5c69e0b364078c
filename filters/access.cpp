// Access lists: first decisive match wins (as Postfix access maps), score rules add up.
#include "filters/access.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>

namespace mxgate::filters {

namespace {

std::string normalize(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!out.empty() && out.back() == '.') out.pop_back();
  if (out.size() >= 2 && out.front() == '<' && out.back() == '>')
    out = out.substr(1, out.size() - 2);
  return out;
}

std::string_view domain_of(std::string_view address) {
  const std::size_t at = address.rfind('@');
  return at == std::string_view::npos ? std::string_view() : address.substr(at + 1);
}

using Kind = policy::AccessRule::Kind;

Stage stage_of(Kind kind) {
  switch (kind) {
    case Kind::client_ip:
      return Stage::connect;
    case Kind::helo:
      return Stage::helo;
    case Kind::sender:
    case Kind::sender_domain:
      return Stage::mail;
    case Kind::recipient:
    case Kind::recipient_domain:
      return Stage::rcpt;
  }
  return Stage::connect;
}

// Postfix's wording, so admins and senders recognise it.
std::string denial_text(Kind kind, const SessionContext& context) {
  switch (kind) {
    case Kind::client_ip:
      return fmt::format("<{}[{}]>: Client host rejected: Access denied",
                         context.client_name.empty() ? "unknown" : context.client_name,
                         context.client_ip);
    case Kind::helo:
      return fmt::format("<{}>: Helo command rejected: Access denied", context.helo);
    case Kind::sender:
    case Kind::sender_domain:
      return fmt::format("<{}>: Sender address rejected: Access denied", context.sender);
    case Kind::recipient:
    case Kind::recipient_domain:
      return fmt::format("<{}>: Recipient address rejected: Access denied", context.recipient);
  }
  return "Access denied";
}

class AccessInstance final : public FilterInstance {
 public:
  explicit AccessInstance(const AccessFilter& filter) : filter_(filter) {}
  boost::asio::awaitable<Verdict> on_stage(Stage stage, const SessionContext& context) override {
    co_return filter_.evaluate(stage, context);
  }

 private:
  const AccessFilter& filter_;
};

}  // namespace

bool domain_matches(std::string_view domain, std::string_view pattern) {
  if (pattern.empty() || domain.empty()) return false;
  if (pattern.front() == '.') return domain.size() > pattern.size() && domain.ends_with(pattern);
  if (domain == pattern) return true;
  return domain.size() > pattern.size() && domain.ends_with(pattern) &&
         domain[domain.size() - pattern.size() - 1] == '.';
}

AccessFilter::AccessFilter(const std::vector<policy::AccessRule>& rules) {
  for (const auto& config : rules) {
    Rule rule{config, {}, {}};
    for (const auto& value : config.values) {
      if (config.kind == Kind::client_ip) {
        std::string error;
        if (auto network = policy::parse_cidr(value, error))
          rule.networks.push_back(*network);
        else
          spdlog::warn("access {}: ignoring '{}': {}", config.name, value, error);
      } else {
        rule.names.push_back(normalize(value));
      }
    }
    rules_.push_back(std::move(rule));
  }
}

bool AccessFilter::wants(Stage stage) const {
  return std::any_of(rules_.begin(), rules_.end(),
                     [&](const Rule& rule) { return stage_of(rule.config.kind) == stage; });
}

std::unique_ptr<FilterInstance> AccessFilter::open(Services&) const {
  return std::make_unique<AccessInstance>(*this);
}

bool AccessFilter::matches(const Rule& rule, const SessionContext& context) const {
  switch (rule.config.kind) {
    case Kind::client_ip: {
      std::string error;
      auto client = policy::parse_cidr(context.client_ip, error);
      if (!client) return false;
      return std::any_of(rule.networks.begin(), rule.networks.end(),
                         [&](const policy::Cidr& network) { return network.contains(*client); });
    }
    case Kind::helo: {
      const std::string helo = normalize(context.helo);
      return std::find(rule.names.begin(), rule.names.end(), helo) != rule.names.end();
    }
    case Kind::sender:
    case Kind::recipient: {
      const std::string address =
          normalize(rule.config.kind == Kind::sender ? context.sender : context.recipient);
      return std::find(rule.names.begin(), rule.names.end(), address) != rule.names.end();
    }
    case Kind::sender_domain:
    case Kind::recipient_domain: {
      const std::string address =
          normalize(rule.config.kind == Kind::sender_domain ? context.sender : context.recipient);
      const std::string_view domain = domain_of(address);
      return std::any_of(rule.names.begin(), rule.names.end(), [&](const std::string& pattern) {
        return domain_matches(domain, pattern);
      });
    }
  }
  return false;
}

Verdict AccessFilter::evaluate(Stage stage, const SessionContext& context) const {
  Verdict verdict;
  for (const auto& rule : rules_) {
    if (stage_of(rule.config.kind) != stage || !matches(rule, context)) continue;
    const auto action = rule.config.action;
    const std::string detail = fmt::format("access rule {} matched", rule.config.name);
    if (action == policy::RuleAction::score || action == policy::RuleAction::log ||
        rule.config.score != 0) {
      verdict.contributions.push_back({name_, rule.config.name, rule.config.score, detail,
                                       stage_name(stage), action == policy::RuleAction::log, ""});
    }
    if (action == policy::RuleAction::score || action == policy::RuleAction::log) continue;
    // The first decisive rule wins, as the first matching Postfix restriction does.
    verdict.filter = name_;
    verdict.rule = rule.config.name;
    verdict.detail = detail;
    const std::string text = denial_text(rule.config.kind, context);
    switch (action) {
      case policy::RuleAction::accept:
        verdict.kind = Verdict::Kind::accept;
        break;
      case policy::RuleAction::reject:
        verdict.kind = Verdict::Kind::reject;
        verdict.reply = smtp::Reply(554, "5.7.1", text);
        break;
      case policy::RuleAction::tempfail:
        verdict.kind = Verdict::Kind::tempfail;
        verdict.reply = smtp::Reply(450, "4.7.1", text);
        break;
      case policy::RuleAction::drop:
        verdict.kind = Verdict::Kind::drop;
        verdict.reply = smtp::Reply(421, "4.7.0", text);
        break;
      default:
        break;
    }
    break;
  }
  return verdict;
}

}  // namespace mxgate::filters

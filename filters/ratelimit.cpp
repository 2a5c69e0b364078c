// Rate and concurrency limits: one store call per rule and stage (GCRA in one Lua call on
// Redis), slots released at close and expiring on their own if this process dies.
#include "filters/ratelimit.hpp"
#include "policy/names.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <cctype>
#include <cmath>
#include <random>

#include "filters/metrics.hpp"

namespace mxgate::filters {

namespace {

std::string_view domain_of(std::string_view address) {
  const auto at = address.rfind('@');
  return at == std::string_view::npos ? std::string_view() : address.substr(at + 1);
}

Stage stage_from(const std::string& name) {
  if (name == "helo") return Stage::helo;
  if (name == "mail") return Stage::mail;
  if (name == "rcpt") return Stage::rcpt;
  if (name == "data") return Stage::data;
  return Stage::connect;
}

RateRule::Count count_from(const std::string& name) {
  if (name == "connections") return RateRule::Count::connections;
  if (name == "messages") return RateRule::Count::messages;
  if (name == "recipients") return RateRule::Count::recipients;
  if (name == "errors") return RateRule::Count::errors;
  if (name == "concurrency") return RateRule::Count::concurrency;
  return RateRule::Count::events;
}

// Where a rule is counted: a message exists from MAIL on, a recipient at RCPT (or, at the
// data stage, all of a message's recipients at once).
Stage counting_stage(const RateRule& rule) {
  switch (rule.count) {
    case RateRule::Count::messages:
      return std::max(rule.stage, Stage::mail);
    case RateRule::Count::recipients:
      return rule.stage == Stage::data ? Stage::data : Stage::rcpt;
    default:
      return rule.stage;
  }
}

std::string default_instance_id() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::random_device random;
  return fmt::format("{}:{}:{:08x}", host, ::getpid(), random());
}

bool exempt(const RateRule& rule, const std::string& client_ip) {
  if (rule.exempt.empty()) return false;
  std::string error;
  const auto client = policy::parse_cidr(client_ip, error);
  if (!client) return false;
  return std::any_of(rule.exempt.begin(), rule.exempt.end(),
                     [&](const policy::Cidr& network) { return network.contains(*client); });
}

}  // namespace

std::string client_net(std::string_view address, const ClientNetOptions& options) {
  const std::string text(address);
  unsigned char bytes[16] = {};
  if (inet_pton(AF_INET, text.c_str(), bytes) == 1) {
    const int prefix = std::clamp(options.ipv4_prefix, 0, 32);
    for (int bit = prefix; bit < 32; ++bit)
      bytes[bit / 8] &= static_cast<unsigned char>(~(0x80 >> (bit % 8)));
    return fmt::format("{}.{}.{}.{}/{}", bytes[0], bytes[1], bytes[2], bytes[3], prefix);
  }
  if (inet_pton(AF_INET6, text.c_str(), bytes) != 1) return {};
  static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(std::begin(kMapped), std::end(kMapped), bytes)) {
    return client_net(fmt::format("{}.{}.{}.{}", bytes[12], bytes[13], bytes[14], bytes[15]),
                      options);
  }
  const int prefix = std::clamp(options.ipv6_prefix, 0, 128);
  for (int bit = prefix; bit < 128; ++bit)
    bytes[bit / 8] &= static_cast<unsigned char>(~(0x80 >> (bit % 8)));
  char buffer[INET6_ADDRSTRLEN] = {};
  inet_ntop(AF_INET6, bytes, buffer, sizeof buffer);
  return fmt::format("{}/{}", buffer, prefix);
}

std::optional<std::string> rate_key(const RateRule& rule, const SessionContext& context,
                                    const ClientNetOptions& options) {
  std::string identity = rule.name;
  for (const std::string& part : rule.key) {
    std::string value;
    if (part == "client_ip") {
      value = context.client_ip;
    } else if (part == "client_net") {
      value = client_net(context.client_ip, options);
    } else if (part == "helo") {
      value = policy::ascii_lower(context.helo);
    } else if (part == "sender") {
      value = context.sender.empty() ? "<>" : policy::ascii_lower(context.sender);
    } else if (part == "sender_domain") {
      value = context.sender.empty() ? "<>" : policy::ascii_lower(context.sender_domain);
    } else if (part == "recipient") {
      value = policy::ascii_lower(context.recipient);
    } else if (part == "recipient_domain") {
      value = policy::ascii_lower(domain_of(context.recipient));
    }
    if (value.empty()) return std::nullopt;
    identity += identity.size() == rule.name.size() ? ':' : '|';
    identity += value;
  }
  return identity;
}

RateLimitOptions rate_limit_options(const policy::Config& config) {
  RateLimitOptions options;
  options.client_net.ipv4_prefix = config.client_net.ipv4_prefix;
  options.client_net.ipv6_prefix = config.client_net.ipv6_prefix;
  for (const policy::RateLimitRule& source : config.ratelimit) {
    RateRule rule;
    rule.name = source.name;
    rule.stage = stage_from(source.stage);
    rule.key = source.key;
    rule.count = count_from(source.count);
    // burst 0 (the default): a minute's worth of the rate, at least one, so "60/min"
    // lets a client open a few connections at once instead of one a second.
    const double burst =
        source.burst > 0 ? source.burst : std::max(1.0, std::floor(source.rate * 60));
    rule.rate = {source.rate, burst};
    rule.limit = source.limit;
    rule.slot_ttl = std::chrono::duration_cast<std::chrono::seconds>(source.slot_ttl);
    rule.action = source.action;
    rule.reply_code = source.reply_code;
    rule.score = source.score;
    rule.on_error = source.on_error;
    for (const std::string& text : source.exempt) {
      std::string error;
      if (auto network = policy::parse_cidr(text, error)) rule.exempt.push_back(*network);
    }
    options.rules.push_back(std::move(rule));
  }
  return options;
}

RateLimitFilter::RateLimitFilter(RateLimitOptions options) : options_(std::move(options)) {
  if (options_.instance_id.empty()) options_.instance_id = default_instance_id();
  auto& registry = metrics::Registry::global();
  for (const RateRule& rule : options_.rules) {
    limited_.push_back(&registry.counter(
        "mxgate_ratelimit_limited_total",
        "Events refused (or scored) by a rate or concurrency limit", {{"rule", rule.name}}));
    store_errors_.push_back(&registry.counter(
        "mxgate_ratelimit_store_errors_total",
        "Rate limit checks the store could not answer (on_error applied)", {{"rule", rule.name}}));
  }
}

void RateLimitFilter::count_limited(std::size_t rule) const { limited_[rule]->inc(); }
void RateLimitFilter::count_store_error(std::size_t rule) const { store_errors_[rule]->inc(); }

bool RateLimitFilter::wants(Stage stage) const {
  if (stage == Stage::close) {
    // Errors are counted and slots released when the session is over.
    return std::any_of(options_.rules.begin(), options_.rules.end(), [](const RateRule& rule) {
      return rule.count == RateRule::Count::errors || rule.count == RateRule::Count::concurrency;
    });
  }
  return std::any_of(options_.rules.begin(), options_.rules.end(),
                     [stage](const RateRule& rule) { return counting_stage(rule) == stage; });
}

policy::OnError RateLimitFilter::on_error() const {
  const bool any_tempfail =
      std::any_of(options_.rules.begin(), options_.rules.end(),
                  [](const RateRule& rule) { return rule.on_error == policy::OnError::tempfail; });
  return any_tempfail ? policy::OnError::tempfail : policy::OnError::allow;
}

Verdict RateLimitFilter::refusal(const RateRule& rule, const std::string& detail) const {
  Verdict verdict;
  verdict.filter = name_;
  verdict.rule = rule.name;
  verdict.detail = detail;
  const bool concurrency = rule.count == RateRule::Count::concurrency;
  const std::string text = concurrency ? "too many concurrent sessions, try again later"
                                       : "rate limit exceeded, try again later";
  switch (rule.action) {
    case policy::RuleAction::reject:
      verdict.kind = Verdict::Kind::reject;
      verdict.reply = smtp::Reply(rule.reply_code, "5.7.1", text);
      break;
    case policy::RuleAction::drop:
      verdict.kind = Verdict::Kind::drop;
      verdict.reply = smtp::Reply(421, "4.7.0", text);
      break;
    case policy::RuleAction::score:
    case policy::RuleAction::log:
      verdict.contributions.push_back({name_, rule.name, rule.score, detail, "",
                                       rule.action == policy::RuleAction::log,
                                       "rate limit exceeded"});
      verdict.dry_run = rule.action == policy::RuleAction::log;
      if (verdict.dry_run) {
        verdict.kind = Verdict::Kind::tempfail;
        verdict.reply = smtp::Reply(451, "4.7.1", text);
      }
      break;
    case policy::RuleAction::accept:  // not a sensible limit action; policy/ refuses it
    case policy::RuleAction::tag:     // content rules only; policy/ refuses it
    case policy::RuleAction::tempfail:
      verdict.kind = Verdict::Kind::tempfail;
      // RFC 3463: X.7.1 "delivery not authorized"; 421 closes the session (X.7.0).
      verdict.reply =
          smtp::Reply(rule.reply_code, rule.reply_code == 421 ? "4.7.0" : "4.7.1", text);
      break;
  }
  return verdict;
}

Verdict RateLimitFilter::store_failure(const RateRule& rule, const std::string& detail) const {
  Verdict verdict;
  verdict.filter = name_;
  verdict.rule = rule.name;
  verdict.detail = detail;
  verdict.contributions.push_back({name_, rule.name, 0, detail, "", false, ""});
  if (rule.on_error == policy::OnError::tempfail) {
    // When in doubt, 4xx (DESIGN invariant 2).
    verdict.kind = Verdict::Kind::tempfail;
    verdict.reply =
        smtp::Reply(451, "4.3.0", "Temporary failure in a policy check; try again later");
  }
  return verdict;
}

namespace {

class RateLimitInstance final : public FilterInstance {
 public:
  RateLimitInstance(const RateLimitFilter& filter, Services& services)
      : filter_(filter),
        executor_(services.executor),
        store_(services.store),
        counted_(filter.options().rules.size(), false) {}

  ~RateLimitInstance() override {
    // Closed without the close stage (an exception upstream): give the slots back anyway;
    // they would expire, but a tight limit should not wait slot_ttl for it.
    if (slots_.empty() || !store_ || !executor_) return;
    boost::asio::co_spawn(executor_, release_all(store_, std::move(slots_)), boost::asio::detached);
  }

  void reset_transaction() override {
    const auto& rules = filter_.options().rules;
    for (std::size_t i = 0; i < rules.size(); ++i) {
      if (rules[i].count == RateRule::Count::messages) counted_[i] = false;
    }
  }

  boost::asio::awaitable<Verdict> on_stage(Stage stage, const SessionContext& context) override {
    if (!store_) co_return Verdict::next();
    if (stage == Stage::close) {
      co_await close(context);
      co_return Verdict::next();
    }
    const auto& options = filter_.options();
    Verdict combined;  // score lines of every rule that scored
    for (std::size_t i = 0; i < options.rules.size(); ++i) {
      const RateRule& rule = options.rules[i];
      if (counting_stage(rule) != stage || exempt(rule, context.client_ip)) continue;
      std::optional<Verdict> verdict = co_await check(i, rule, context);
      if (!verdict) continue;
      if (verdict->kind != Verdict::Kind::next && !verdict->dry_run) co_return std::move(*verdict);
      for (auto& line : verdict->contributions) combined.contributions.push_back(std::move(line));
      if (verdict->dry_run && combined.kind == Verdict::Kind::next) {
        combined.kind = verdict->kind;
        combined.reply = verdict->reply;
        combined.dry_run = true;
        combined.filter = verdict->filter;
        combined.rule = verdict->rule;
        combined.detail = verdict->detail;
      }
    }
    co_return combined;
  }

 private:
  // Nothing to do (rule already counted, key unknown) -> nullopt.
  boost::asio::awaitable<std::optional<Verdict>> check(std::size_t index, const RateRule& rule,
                                                       const SessionContext& context) {
    const bool once = rule.count == RateRule::Count::connections ||
                      rule.count == RateRule::Count::messages ||
                      rule.count == RateRule::Count::concurrency;
    if (once && counted_[index]) co_return std::nullopt;
    const std::optional<std::string> identity =
        rate_key(rule, context, filter_.options().client_net);
    if (!identity) co_return std::nullopt;
    counted_[index] = true;
    const StoreTime now = store_now();

    if (rule.count == RateRule::Count::concurrency) {
      const std::string key = store_key("cc", *identity);
      const std::string slot = filter_.options().instance_id + ":" + context.session_id;
      auto result = co_await store_->acquire_slot(key, slot, rule.limit, rule.slot_ttl, now);
      if (!result.ok()) co_return failed(index, rule, *identity, result.message);
      if (result.value->acquired) {
        slots_.push_back({key, slot});
        co_return std::nullopt;
      }
      filter_.count_limited(index);
      co_return filter_.refusal(rule, fmt::format("{}: {} sessions already open (limit {})",
                                                  *identity, result.value->in_use, rule.limit));
    }

    std::int64_t cost = 1;
    RateMode mode = RateMode::consume;
    if (rule.count == RateRule::Count::errors) mode = RateMode::peek;  // counted at close
    if (rule.count == RateRule::Count::recipients && rule.stage == Stage::data) {
      cost = static_cast<std::int64_t>(context.recipients.size());
      if (cost == 0) co_return std::nullopt;
    }
    auto result =
        co_await store_->rate_limit(store_key("rl", *identity), rule.rate, cost, mode, now);
    if (!result.ok()) co_return failed(index, rule, *identity, result.message);
    if (result.value->allowed) co_return std::nullopt;
    filter_.count_limited(index);
    const auto retry =
        std::chrono::duration_cast<std::chrono::milliseconds>(result.value->retry_after);
    co_return filter_.refusal(
        rule, fmt::format("{}: over {}/s burst {}, retry in {:.1f}s", *identity, rule.rate.rate,
                          rule.rate.burst, static_cast<double>(retry.count()) / 1000));
  }

  Verdict failed(std::size_t index, const RateRule& rule, const std::string& identity,
                 const std::string& message) {
    filter_.count_store_error(index);
    // One line per failing check would flood the log during an outage: the store logs
    // its state changes; this counts, and the verdict's detail carries the reason.
    return filter_.store_failure(
        rule, fmt::format("{}: store failed ({}), on_error {}", identity, message,
                          rule.on_error == policy::OnError::tempfail ? "tempfail" : "allow"));
  }

  boost::asio::awaitable<void> close(const SessionContext& context) {
    const auto& rules = filter_.options().rules;
    const std::int64_t errors = context.protocol_errors + context.recipients_rejected;
    for (std::size_t i = 0; i < rules.size() && errors > 0; ++i) {
      const RateRule& rule = rules[i];
      if (rule.count != RateRule::Count::errors || exempt(rule, context.client_ip)) continue;
      const auto identity = rate_key(rule, context, filter_.options().client_net);
      if (!identity) continue;
      // The errors happened: counted even past the limit, so the next session is refused.
      auto result = co_await store_->rate_limit(store_key("rl", *identity), rule.rate, errors,
                                                RateMode::force, store_now());
      if (!result.ok()) filter_.count_store_error(i);
    }
    auto slots = std::move(slots_);
    slots_.clear();
    co_await release_all(store_, std::move(slots));
  }

  static boost::asio::awaitable<void> release_all(
      std::shared_ptr<Store> store, std::vector<std::pair<std::string, std::string>> slots) {
    for (const auto& [key, slot] : slots) co_await store->release_slot(key, slot);
  }

  const RateLimitFilter& filter_;
  boost::asio::any_io_executor executor_;
  std::shared_ptr<Store> store_;
  std::vector<bool> counted_;  // per rule: counted this session (or transaction)
  std::vector<std::pair<std::string, std::string>> slots_;  // (key, slot) held
};

}  // namespace

std::unique_ptr<FilterInstance> RateLimitFilter::open(Services& services) const {
  return std::make_unique<RateLimitInstance>(*this, services);
}

}  // namespace mxgate::filters

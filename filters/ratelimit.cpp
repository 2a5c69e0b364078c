// Rate and concurrency limits: one store call per rule and stage (GCRA in one Lua call on
// Redis), in the background for connect/helo/mail rules, slots released at close and
// expiring on their own if this process dies.
#include "filters/ratelimit.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>
#include <cctype>
#include <cmath>
#include <random>

#include "filters/completion.hpp"
#include "filters/metrics.hpp"
#include "policy/names.hpp"

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

// Connect, helo and mail verdicts are only enforced at the first RCPT (DESIGN.md): those
// rules are checked in the background so the client does not wait for the store at
// those stages. A `drop` is enforced at once, so its rule is checked at its stage.
bool in_background(const RateRule& rule) {
  return counting_stage(rule) <= Stage::mail && rule.action != policy::RuleAction::drop;
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

metrics::Counter& RateLimitFilter::limited_counter(std::size_t rule) const {
  return *limited_[rule];
}
metrics::Counter& RateLimitFilter::store_error_counter(std::size_t rule) const {
  return *store_errors_[rule];
}

bool RateLimitFilter::may_wait(Stage stage) const {
  if (stage > Stage::mail) return true;
  return std::any_of(options_.rules.begin(), options_.rules.end(), [stage](const RateRule& rule) {
    return counting_stage(rule) == stage && !in_background(rule);
  });
}

bool RateLimitFilter::wants(Stage stage) const {
  if (stage == Stage::close) {
    // Errors are counted and slots released when the session is over.
    return std::any_of(options_.rules.begin(), options_.rules.end(), [](const RateRule& rule) {
      return rule.count == RateRule::Count::errors || rule.count == RateRule::Count::concurrency;
    });
  }
  return std::any_of(options_.rules.begin(), options_.rules.end(), [stage](const RateRule& rule) {
    // The first RCPT reports what the background checks found.
    return counting_stage(rule) == stage || (stage == Stage::rcpt && in_background(rule));
  });
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

namespace asio = boost::asio;

// One rule's store call, prepared at its stage. It carries copies of all it needs, so a
// call still running after its session (or, after a reload, its filter) is gone touches
// neither.
struct Call {
  std::size_t rule = 0;
  std::string identity;  // "conn-per-ip:192.0.2.7"
  std::string key;       // in the store
  bool concurrency = false;
  std::string slot;  // concurrency: this session's slot
  std::int64_t limit = 0;
  std::chrono::seconds slot_ttl{0};
  RateSpec rate;
  std::int64_t cost = 1;
  RateMode mode = RateMode::consume;
  StoreTime now = 0;
  bool refusal_decides = false;  // a refusal ends the stage's checks (not score or log)
  bool failure_decides = false;  // on_error tempfail
  metrics::Counter* limited = nullptr;
  metrics::Counter* store_errors = nullptr;
  // The answer.
  StoreResult<RateResult> rate_answer;
  StoreResult<SlotResult> slot_answer;
  bool slot_held = false;  // acquired and not handed to a release yet
};

bool call_failed(const Call& call) {
  return call.concurrency ? !call.slot_answer.ok() : !call.rate_answer.ok();
}

bool call_refused(const Call& call) {
  if (call_failed(call)) return false;
  return call.concurrency ? !call.slot_answer.value->acquired : !call.rate_answer.value->allowed;
}

// Whether the stage's later rules go unchecked, as when the stage returned this verdict.
bool call_decides(const Call& call) {
  return call_failed(call) ? call.failure_decides : call_refused(call) && call.refusal_decides;
}

// Counted when the store answers, whether or not a verdict is ever reported.
void count_answer(Call& call) {
  if (call_failed(call)) {
    call.store_errors->inc();
  } else if (call_refused(call)) {
    call.limited->inc();
  } else if (call.concurrency) {
    call.slot_held = true;
  }
}

asio::awaitable<void> perform(Call& call, Store& store) {
  try {
    if (call.concurrency) {
      auto answer =
          co_await store.acquire_slot(call.key, call.slot, call.limit, call.slot_ttl, call.now);
      call.slot_answer = std::move(answer);
    } else {
      auto answer = co_await store.rate_limit(call.key, call.rate, call.cost, call.mode, call.now);
      call.rate_answer = std::move(answer);
    }
  } catch (const std::exception& error) {
    // Stores answer failures as values; anything else is a failure too, under on_error.
    call.slot_answer = StoreResult<SlotResult>::failure(StoreError::failed, error.what());
    call.rate_answer = StoreResult<RateResult>::failure(StoreError::failed, error.what());
  }
  count_answer(call);
}

asio::awaitable<void> release_all(std::shared_ptr<Store> store,
                                  std::vector<std::pair<std::string, std::string>> slots) {
  for (const auto& [key, slot] : slots) co_await store->release_slot(key, slot);
}

// The background rules of one stage, checked one after the other as the stage checked
// them when it awaited them: a deciding refusal leaves the later rules uncounted.
struct Batch {
  explicit Batch(const asio::any_io_executor& executor) : completion(executor) {}
  Stage origin = Stage::connect;
  std::vector<Call> calls;
  std::size_t performed = 0;  // calls[0, performed) have their answer
  bool reported = false;      // its verdict went to the pipeline, or its transaction ended
  bool abandoned = false;     // the session is over: the batch gives back the slots it takes
  Completion completion;      // set when every call answered: wakes the waiting session
};

asio::awaitable<void> run_batch(std::shared_ptr<Batch> batch, std::shared_ptr<Store> store) {
  for (Call& call : batch->calls) {
    co_await perform(call, *store);
    ++batch->performed;
    if (call_decides(call)) break;
  }
  batch->completion.set();
  std::vector<std::pair<std::string, std::string>> slots;
  if (batch->abandoned) {
    for (Call& call : batch->calls)
      if (call.slot_held) slots.emplace_back(call.key, call.slot);
  }
  co_await release_all(store, std::move(slots));
}

// Folds one rule's verdict into its stage's, rules in config order: a deciding verdict
// replaces everything (true: stop checking), score lines add up, and the first dry-run
// refusal is what would have happened.
bool fold(Verdict& combined, Verdict verdict) {
  if (verdict.kind != Verdict::Kind::next && !verdict.dry_run) {
    combined = std::move(verdict);
    return true;
  }
  for (auto& line : verdict.contributions) combined.contributions.push_back(std::move(line));
  if (verdict.dry_run && combined.kind == Verdict::Kind::next) {
    combined.kind = verdict.kind;
    combined.reply = verdict.reply;
    combined.dry_run = true;
    combined.filter = verdict.filter;
    combined.rule = verdict.rule;
    combined.detail = verdict.detail;
  }
  return false;
}

int severity(Verdict::Kind kind) {
  switch (kind) {
    case Verdict::Kind::drop:
      return 3;
    case Verdict::Kind::reject:
      return 2;
    case Verdict::Kind::tempfail:
      return 1;
    default:
      return 0;
  }
}

// Enforced verdicts before dry-run ones, then by severity: the pipeline's order.
int rank(const Verdict& verdict) { return (verdict.dry_run ? 0 : 10) + severity(verdict.kind); }

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
    let_go_of_batches();
    if (slots_.empty() || !store_ || !executor_) return;
    asio::co_spawn(executor_, release_all(store_, std::move(slots_)), asio::detached);
  }

  void reset_transaction() override {
    const auto& rules = filter_.options().rules;
    for (std::size_t i = 0; i < rules.size(); ++i) {
      if (rules[i].count == RateRule::Count::messages) counted_[i] = false;
    }
    // The pipeline forgets the transaction's held verdicts; so does the instance. A batch
    // still running stays listed: close gives back the slot it may take.
    for (const auto& batch : batches_)
      if (batch->origin == Stage::mail) batch->reported = true;
    std::erase_if(withheld_, [](const Verdict& verdict) { return verdict.origin == Stage::mail; });
    keep_slots_of_finished_batches();
  }

  asio::awaitable<Verdict> on_stage(Stage stage, const SessionContext& context) override {
    // Straight-line (no early co_return): g++ 12 miscompiles coroutines that return
    // ahead of their first await (proxy/session.cpp).
    Verdict verdict;
    const bool enforcing = stage == Stage::rcpt || stage == Stage::data;
    if (!store_) {
      // No store: no limits.
    } else if (stage == Stage::close) {
      co_await close(context);
    } else {
      if (enforcing) co_await wait_for_batches();
      Verdict checked = co_await check_in_line(stage, context);
      if (!enforcing && (checked.kind == Verdict::Kind::next || checked.dry_run))
        start_batch(stage, context);
      verdict = enforcing ? report(std::move(checked)) : std::move(checked);
    }
    co_return verdict;
  }

 private:
  // Nothing to do (rule already counted, key unknown, no recipients) -> nullopt.
  std::optional<Call> prepare(std::size_t index, const SessionContext& context) {
    const RateRule& rule = filter_.options().rules[index];
    const bool once = rule.count == RateRule::Count::connections ||
                      rule.count == RateRule::Count::messages ||
                      rule.count == RateRule::Count::concurrency;
    if (once && counted_[index]) return std::nullopt;
    std::optional<std::string> identity = rate_key(rule, context, filter_.options().client_net);
    if (!identity) return std::nullopt;
    counted_[index] = true;
    Call call;
    call.rule = index;
    call.now = store_now();
    call.refusal_decides =
        rule.action != policy::RuleAction::score && rule.action != policy::RuleAction::log;
    call.failure_decides = rule.on_error == policy::OnError::tempfail;
    call.limited = &filter_.limited_counter(index);
    call.store_errors = &filter_.store_error_counter(index);
    if (rule.count == RateRule::Count::concurrency) {
      call.concurrency = true;
      call.key = store_key("cc", *identity);
      call.slot = filter_.options().instance_id + ":" + context.session_id;
      call.limit = rule.limit;
      call.slot_ttl = rule.slot_ttl;
    } else {
      call.key = store_key("rl", *identity);
      call.rate = rule.rate;
      if (rule.count == RateRule::Count::errors) call.mode = RateMode::peek;  // counted at close
      if (rule.count == RateRule::Count::recipients && rule.stage == Stage::data) {
        call.cost = static_cast<std::int64_t>(context.recipients.size());
        if (call.cost == 0) return std::nullopt;
      }
    }
    call.identity = std::move(*identity);
    return call;
  }

  // The verdict of an answered call; nullopt when it allowed.
  std::optional<Verdict> judge(const Call& call) const {
    const RateRule& rule = filter_.options().rules[call.rule];
    if (call_failed(call)) {
      const std::string& message =
          call.concurrency ? call.slot_answer.message : call.rate_answer.message;
      // One line per failing check would flood the log during an outage: the store logs
      // its state changes; this counts, and the verdict's detail carries the reason.
      return filter_.store_failure(
          rule, fmt::format("{}: store failed ({}), on_error {}", call.identity, message,
                            rule.on_error == policy::OnError::tempfail ? "tempfail" : "allow"));
    }
    if (!call_refused(call)) return std::nullopt;
    if (call.concurrency) {
      return filter_.refusal(rule,
                             fmt::format("{}: {} sessions already open (limit {})", call.identity,
                                         call.slot_answer.value->in_use, rule.limit));
    }
    const auto retry =
        std::chrono::duration_cast<std::chrono::milliseconds>(call.rate_answer.value->retry_after);
    return filter_.refusal(
        rule, fmt::format("{}: over {}/s burst {}, retry in {:.1f}s", call.identity, rule.rate.rate,
                          rule.rate.burst, static_cast<double>(retry.count()) / 1000));
  }

  // This stage's rules that are not left to the background, awaited one by one.
  asio::awaitable<Verdict> check_in_line(Stage stage, const SessionContext& context) {
    const auto& rules = filter_.options().rules;
    Verdict combined;
    bool decided = false;
    for (std::size_t i = 0; i < rules.size() && !decided; ++i) {
      const RateRule& rule = rules[i];
      if (counting_stage(rule) != stage || in_background(rule) || exempt(rule, context.client_ip))
        continue;
      std::optional<Call> call = prepare(i, context);
      if (!call) continue;
      co_await perform(*call, *store_);
      if (call->slot_held) slots_.emplace_back(call->key, call->slot);
      call->slot_held = false;
      std::optional<Verdict> verdict = judge(*call);
      if (verdict) decided = fold(combined, std::move(*verdict));
    }
    co_return combined;
  }

  void start_batch(Stage stage, const SessionContext& context) {
    const auto& rules = filter_.options().rules;
    std::shared_ptr<Batch> batch;
    for (std::size_t i = 0; i < rules.size(); ++i) {
      const RateRule& rule = rules[i];
      if (counting_stage(rule) != stage || !in_background(rule) || exempt(rule, context.client_ip))
        continue;
      std::optional<Call> call = prepare(i, context);
      if (!call) continue;
      if (!batch) {
        batch = std::make_shared<Batch>(executor_);
        batch->origin = stage;
      }
      batch->calls.push_back(std::move(*call));
    }
    if (!batch) return;
    batches_.push_back(batch);
    asio::co_spawn(executor_, run_batch(batch, store_), asio::detached);
  }

  asio::awaitable<void> wait_for_batches() {
    // Past the pipeline's deadline the wait throws and on_error applies; the batch stays,
    // so the next RCPT reports it.
    for (const auto& batch : batches_) {
      if (!batch->reported) co_await batch->completion.wait();
    }
  }

  // The verdict the batch's stage returned when it awaited its checks.
  Verdict stage_verdict(const Batch& batch) const {
    Verdict combined;
    for (std::size_t i = 0; i < batch.performed; ++i) {
      std::optional<Verdict> verdict = judge(batch.calls[i]);
      if (verdict && fold(combined, std::move(*verdict))) break;
    }
    return combined;
  }

  // The background verdicts join this stage's: all score lines at once, with the stage
  // they belong to, but one refusal per call (the pipeline takes one verdict per filter
  // and stage). The one the pipeline would have enforced goes first; the others wait for
  // the next RCPT, where they would have been enforced too.
  Verdict report(Verdict current) {
    std::vector<Contribution> lines;
    for (const auto& batch : batches_) {
      if (batch->reported) continue;
      batch->reported = true;
      Verdict held = stage_verdict(*batch);
      for (auto& line : held.contributions) {
        line.stage = stage_name(batch->origin);
        lines.push_back(std::move(line));
      }
      held.contributions.clear();
      held.origin = batch->origin;
      if (held.kind != Verdict::Kind::next) withheld_.push_back(std::move(held));
    }
    for (auto& line : current.contributions) lines.push_back(std::move(line));
    current.contributions.clear();
    // Ties go to the held verdict: the pipeline enforces the earliest of equals.
    auto best = withheld_.end();
    for (auto it = withheld_.begin(); it != withheld_.end(); ++it)
      if (best == withheld_.end() || rank(*it) > rank(*best)) best = it;
    Verdict verdict;
    if (best != withheld_.end() &&
        (current.kind == Verdict::Kind::next || rank(*best) >= rank(current))) {
      verdict = std::move(*best);
      withheld_.erase(best);
    } else {
      verdict = std::move(current);
    }
    verdict.contributions = std::move(lines);
    keep_slots_of_finished_batches();
    return verdict;
  }

  // A batch answered and reported (or forgotten) is done with: the slots it took are the
  // session's to give back at close, and a long session does not pile batches up.
  void keep_slots_of_finished_batches() {
    for (const auto& batch : batches_) {
      if (!batch->reported || !batch->completion.done()) continue;
      for (Call& call : batch->calls) {
        if (call.slot_held) slots_.emplace_back(call.key, call.slot);
        call.slot_held = false;
      }
    }
    std::erase_if(batches_,
                  [](const auto& batch) { return batch->reported && batch->completion.done(); });
  }

  // The session is over: slots taken in the background are given back, by the session
  // when their call has answered, else by the call when it does.
  void let_go_of_batches() {
    for (const auto& batch : batches_) {
      batch->reported = true;
      if (!batch->completion.done()) batch->abandoned = true;
    }
    keep_slots_of_finished_batches();
    batches_.clear();
  }

  asio::awaitable<void> close(const SessionContext& context) {
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
      if (!result.ok()) filter_.store_error_counter(i).inc();
    }
    let_go_of_batches();
    auto slots = std::move(slots_);
    slots_.clear();
    co_await release_all(store_, std::move(slots));
  }

  const RateLimitFilter& filter_;
  asio::any_io_executor executor_;
  std::shared_ptr<Store> store_;
  std::vector<bool> counted_;  // per rule: counted this session (or transaction)
  std::vector<std::pair<std::string, std::string>> slots_;  // (key, slot) held
  std::vector<std::shared_ptr<Batch>> batches_;             // background checks not finished with
  std::vector<Verdict> withheld_;  // background refusals for a later RCPT, in stage order
};

}  // namespace

std::unique_ptr<FilterInstance> RateLimitFilter::open(Services& services) const {
  return std::make_unique<RateLimitInstance>(*this, services);
}

}  // namespace mxgate::filters

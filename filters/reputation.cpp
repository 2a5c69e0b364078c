// Reputation: records collected as their key becomes known (IP and net at connect, HELO at
// helo, sender domain at mail), read in the background and scored at the first RCPT,
// written once at close with the session's outcome.
#include "filters/reputation.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>
#include <cctype>

#include "filters/completion.hpp"
#include "filters/metrics.hpp"
#include "policy/config.hpp"

namespace mxgate::filters {

namespace {

std::string lower(std::string_view text) {
  std::string result(text);
  std::transform(result.begin(), result.end(), result.begin(), [](unsigned char character) {
    return static_cast<char>(std::tolower(character));
  });
  while (!result.empty() && result.back() == '.') result.pop_back();
  return result;
}

// Which config key names which record kind, and the stage it becomes known at.
struct KeyKind {
  std::string_view config;
  std::string_view kind;
  Stage stage;
};
constexpr KeyKind kKinds[] = {
    {"client_ip", "ip", Stage::connect},
    {"client_net", "net", Stage::connect},
    {"helo", "helo", Stage::helo},
    {"sender_domain", "domain", Stage::mail},
};

std::string value_for(std::string_view kind, const SessionContext& context,
                      const ClientNetOptions& client_net_options) {
  if (kind == "ip") return context.client_ip;
  if (kind == "net") return client_net(context.client_ip, client_net_options);
  if (kind == "helo") return lower(context.helo);
  if (kind == "domain") return lower(context.sender_domain);
  return {};
}

}  // namespace

std::string reputation_key(std::string_view kind, std::string_view value) {
  return store_key("rep", std::string(kind) + ":" + std::string(value));
}

std::vector<std::string> reputation_keys_for(std::string_view argument,
                                             const ClientNetOptions& client_net_options) {
  std::vector<std::string> keys;
  if (argument.starts_with("helo:")) {
    keys.push_back(reputation_key("helo", lower(argument.substr(5))));
    return keys;
  }
  if (argument.starts_with("domain:")) {
    keys.push_back(reputation_key("domain", lower(argument.substr(7))));
    return keys;
  }
  if (argument.find('/') != std::string_view::npos) {
    keys.push_back(reputation_key("net", argument));
    return keys;
  }
  const std::string net = client_net(argument, client_net_options);
  if (!net.empty()) {
    keys.push_back(reputation_key("ip", argument));
    keys.push_back(reputation_key("net", net));
    return keys;
  }
  keys.push_back(reputation_key("helo", lower(argument)));
  keys.push_back(reputation_key("domain", lower(argument)));
  return keys;
}

double reputation_score(const Reputation& record, const ReputationOptions& options) {
  const double events = record.good + record.bad;
  if (events <= 0 || events < options.min_events) return 0;
  // Balance in [-1, 1], weighed by confidence: three outcomes say less than three hundred.
  const double balance = (record.bad - record.good) / events;
  const double confidence = events / (events + std::max(1.0, options.min_events));
  const double score = balance >= 0 ? balance * confidence * options.max_score
                                    : -balance * confidence * options.min_score;
  return std::clamp(score, options.min_score, options.max_score);
}

Outcome session_outcome(const SessionContext& context) {
  Outcome outcome;
  outcome.good = context.messages_accepted;
  outcome.bad = context.messages_rejected + context.recipients_rejected + context.protocol_errors +
                (context.early_talker ? 1 : 0);
  return outcome;
}

ReputationOptions reputation_options(const policy::Config& config) {
  ReputationOptions options;
  options.keys = config.reputation.keys;
  options.half_life = std::chrono::duration_cast<std::chrono::seconds>(config.reputation.half_life);
  options.min_events = config.reputation.min_events;
  options.max_score = config.reputation.max_score;
  options.min_score = config.reputation.min_score;
  options.client_net = {config.client_net.ipv4_prefix, config.client_net.ipv6_prefix};
  return options;
}

ReputationFilter::ReputationFilter(ReputationOptions options)
    : options_(std::move(options)),
      store_errors_(metrics::Registry::global().counter(
          "mxgate_reputation_store_errors_total",
          "Reputation reads and updates the store could not answer (no score given)")) {}

void ReputationFilter::count_store_error() const { store_errors_.inc(); }

bool ReputationFilter::wants(Stage stage) const {
  if (stage == Stage::close) return true;
  // MAIL starts the read of every record known so far; the first RCPT scores them.
  const bool reading = stage == Stage::mail || stage == Stage::rcpt;
  return std::any_of(std::begin(kKinds), std::end(kKinds), [&](const KeyKind& kind) {
    return (reading || kind.stage == stage) && std::find(options_.keys.begin(), options_.keys.end(),
                                                         kind.config) != options_.keys.end();
  });
}

std::vector<std::pair<std::string, std::string>> ReputationFilter::keys_at(
    Stage stage, const SessionContext& context) const {
  std::vector<std::pair<std::string, std::string>> keys;
  for (const KeyKind& kind : kKinds) {
    const bool wanted =
        std::find(options_.keys.begin(), options_.keys.end(), kind.config) != options_.keys.end();
    if (!wanted || (stage != Stage::close && kind.stage != stage)) continue;
    const std::string value = value_for(kind.kind, context, options_.client_net);
    if (value.empty()) continue;
    keys.emplace_back(std::string(kind.kind) + " " + value, reputation_key(kind.kind, value));
  }
  return keys;
}

namespace {

namespace asio = boost::asio;

// One reputation_get for the records of one or more stages, run in the background. The
// session shares it with the coroutine, so a session that ends first leaves nothing behind.
struct Read {
  explicit Read(const asio::any_io_executor& executor) : completion(executor) {}
  std::vector<std::string> keys;
  bool error_counted = false;  // one failed call, one count, whichever stage reports it
  StoreResult<std::vector<Reputation>> records;
  Completion completion;  // set when the records are in: wakes the waiting session
};

asio::awaitable<void> run_read(std::shared_ptr<Read> read, std::shared_ptr<Store> store,
                               std::chrono::seconds half_life) {
  try {
    auto records = co_await store->reputation_get(read->keys, half_life, store_now());
    read->records = std::move(records);
  } catch (const std::exception& error) {
    read->records = StoreResult<std::vector<Reputation>>::failure(StoreError::failed, error.what());
  }
  read->completion.set();
}

// The records that became known at one stage call, scored as that stage used to score
// them when it awaited its own read.
struct Group {
  Stage stage = Stage::connect;
  std::vector<std::pair<std::string, std::string>> keys;  // (kind and value, store key)
  std::shared_ptr<Read> read;                             // null until the read starts
  std::size_t first = 0;                                  // its first record in the read
};

// Connect, helo and mail verdicts are only enforced at the first RCPT (DESIGN.md), so the
// records are read in the background, in one call when MAIL has named the sender domain,
// and scored at the first RCPT of each transaction: the client never waits at
// connect, helo or mail for the store.
class ReputationInstance final : public FilterInstance {
 public:
  ReputationInstance(const ReputationFilter& filter, Services& services)
      : filter_(filter), executor_(services.executor), store_(services.store) {}

  // RCPT waits only for a read still in flight (or one it would have to start).
  bool ready(Stage stage) const override {
    return stage == Stage::rcpt &&
           (!store_ || std::all_of(groups_.begin(), groups_.end(), [](const Group& group) {
              return group.read && group.read->completion.done();
            }));
  }

  void reset_transaction() override {
    transaction_sum_ = 0;
    transaction_reported_ = 0;
    std::erase_if(groups_, [](const Group& group) { return group.stage == Stage::mail; });
  }

  asio::awaitable<Verdict> on_stage(Stage stage, const SessionContext& context) override {
    // Straight-line (no early co_return): g++ 12 miscompiles coroutines that return
    // ahead of their first await (proxy/session.cpp).
    Verdict verdict;
    if (!store_) {
      // No store configured: no reputation.
    } else if (stage == Stage::close) {
      co_await update(context);
    } else if (stage == Stage::rcpt) {
      start_read();
      co_await wait_for_reads();
      verdict = score(context);
    } else {
      collect(stage, context);
      if (stage == Stage::mail) start_read();
    }
    co_return verdict;
  }

 private:
  void collect(Stage stage, const SessionContext& context) {
    auto keys = filter_.keys_at(stage, context);
    if (keys.empty()) return;
    Group group;
    group.stage = stage;
    group.keys = std::move(keys);
    groups_.push_back(std::move(group));
  }

  // One store call for every record no read has asked for yet.
  void start_read() {
    std::shared_ptr<Read> read;
    for (Group& group : groups_) {
      if (group.read) continue;
      if (!read) read = std::make_shared<Read>(executor_);
      group.read = read;
      group.first = read->keys.size();
      for (const auto& key : group.keys) read->keys.push_back(key.second);
    }
    if (!read) return;
    asio::co_spawn(executor_, run_read(read, store_, filter_.options().half_life), asio::detached);
  }

  asio::awaitable<void> wait_for_reads() {
    // Past the pipeline's deadline the wait throws and on_error applies; the groups stay,
    // so the next RCPT reports them.
    for (const Group& group : groups_) co_await group.read->completion.wait();
  }

  // The score lines each stage would have given, in stage order, each with its stage so
  // that the pipeline keeps the session's over a reset and drops the transaction's.
  Verdict score(const SessionContext& context) {
    const ReputationOptions& options = filter_.options();
    Verdict verdict;
    for (const Group& group : groups_) {
      Read& read = *group.read;
      if (!read.records.ok() || read.records.value->size() != read.keys.size()) {
        // Advisory evidence: without it the session is judged on the rest.
        if (!read.error_counted) filter_.count_store_error();
        read.error_counted = true;
        continue;
      }
      std::string detail;
      double sum = 0;
      for (std::size_t i = 0; i < group.keys.size(); ++i) {
        const Reputation& record = (*read.records.value)[group.first + i];
        const double record_score = reputation_score(record, options);
        sum += record_score;
        if (record.good + record.bad <= 0) continue;
        if (!detail.empty()) detail += "; ";
        detail += fmt::format("{} good {:.1f} bad {:.1f} score {:.2f}", group.keys[i].first,
                              record.good, record.bad, record_score);
      }
      // Bounded over all records: the IP, its net and its names are one piece of evidence.
      double delta = 0;
      if (group.stage == Stage::mail) {
        transaction_sum_ += sum;
        const double bounded =
            std::clamp(session_sum_ + transaction_sum_, options.min_score, options.max_score) -
            session_reported_;
        delta = bounded - transaction_reported_;
        transaction_reported_ = bounded;
      } else {
        session_sum_ += sum;
        const double bounded = std::clamp(session_sum_, options.min_score, options.max_score);
        delta = bounded - session_reported_;
        session_reported_ = bounded;
      }
      if (delta == 0 || detail.empty()) continue;
      if (!verdict.detail.empty()) verdict.detail += "; ";
      verdict.detail += detail;
      verdict.contributions.push_back(
          {filter_.name(), "reputation", delta, detail, stage_name(group.stage), false,
           delta > 0 ? fmt::format("client [{}] has a poor reputation", context.client_ip) : ""});
    }
    groups_.clear();
    if (!verdict.contributions.empty()) {
      verdict.filter = filter_.name();
      verdict.rule = "reputation";
    }
    return verdict;
  }

  // The session's outcome, written once at close (the client is gone by then).
  asio::awaitable<void> update(const SessionContext& context) {
    const Outcome outcome = session_outcome(context);
    std::vector<std::string> keys;
    if (outcome.good != 0 || outcome.bad != 0)
      for (const auto& key : filter_.keys_at(Stage::close, context)) keys.push_back(key.second);
    if (!keys.empty()) {
      const ReputationOptions& options = filter_.options();
      auto updated = co_await store_->reputation_update(keys, outcome.good, outcome.bad,
                                                        options.half_life, store_now());
      if (!updated.ok()) filter_.count_store_error();
    }
  }

  const ReputationFilter& filter_;
  asio::any_io_executor executor_;
  std::shared_ptr<Store> store_;
  std::vector<Group> groups_;  // not scored yet, in stage order
  double session_sum_ = 0;     // connect and helo records
  double session_reported_ = 0;
  double transaction_sum_ = 0;  // the sender domain's record
  double transaction_reported_ = 0;
};

}  // namespace

std::unique_ptr<FilterInstance> ReputationFilter::open(Services& services) const {
  return std::make_unique<ReputationInstance>(*this, services);
}

}  // namespace mxgate::filters

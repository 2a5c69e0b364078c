// Reputation: records read as soon as their key is known (IP and net at connect, HELO at
// helo, sender domain at mail), written once at close with the session's outcome.
#include "filters/reputation.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

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
  return std::any_of(std::begin(kKinds), std::end(kKinds), [&](const KeyKind& kind) {
    return kind.stage == stage && std::find(options_.keys.begin(), options_.keys.end(),
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

class ReputationInstance final : public FilterInstance {
 public:
  ReputationInstance(const ReputationFilter& filter, Services& services)
      : filter_(filter), store_(services.store) {}

  void reset_transaction() override {
    transaction_sum_ = 0;
    transaction_reported_ = 0;
  }

  boost::asio::awaitable<Verdict> on_stage(Stage stage, const SessionContext& context) override {
    if (!store_) co_return Verdict::next();
    const ReputationOptions& options = filter_.options();
    const auto keys = filter_.keys_at(stage, context);
    if (keys.empty()) co_return Verdict::next();
    std::vector<std::string> store_keys;
    for (const auto& key : keys) store_keys.push_back(key.second);

    if (stage == Stage::close) {
      const Outcome outcome = session_outcome(context);
      if (outcome.good == 0 && outcome.bad == 0) co_return Verdict::next();
      auto updated = co_await store_->reputation_update(store_keys, outcome.good, outcome.bad,
                                                        options.half_life, store_now());
      if (!updated.ok()) filter_.count_store_error();
      co_return Verdict::next();
    }

    auto records = co_await store_->reputation_get(store_keys, options.half_life, store_now());
    if (!records.ok()) {
      filter_
          .count_store_error();  // advisory evidence: without it the session is judged on the rest
      co_return Verdict::next();
    }
    std::string detail;
    double sum = 0;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const Reputation& record = (*records.value)[i];
      const double score = reputation_score(record, options);
      sum += score;
      if (record.good + record.bad <= 0) continue;
      if (!detail.empty()) detail += "; ";
      detail += fmt::format("{} good {:.1f} bad {:.1f} score {:.2f}", keys[i].first, record.good,
                            record.bad, score);
    }
    // Bounded over all records: the IP, its net and its names are one piece of evidence.
    double delta = 0;
    if (stage == Stage::mail) {
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
    if (delta == 0 || detail.empty()) co_return Verdict::next();
    Verdict verdict;
    verdict.filter = filter_.name();
    verdict.rule = "reputation";
    verdict.detail = detail;
    verdict.contributions.push_back(
        {filter_.name(), "reputation", delta, detail, "", false,
         delta > 0 ? fmt::format("client [{}] has a poor reputation", context.client_ip) : ""});
    co_return verdict;
  }

 private:
  const ReputationFilter& filter_;
  std::shared_ptr<Store> store_;
  double session_sum_ = 0;  // connect and helo records
  double session_reported_ = 0;
  double transaction_sum_ = 0;  // the sender domain's record
  double transaction_reported_ = 0;
};

}  // namespace

std::unique_ptr<FilterInstance> ReputationFilter::open(Services& services) const {
  return std::make_unique<ReputationInstance>(*this, services);
}

}  // namespace mxgate::filters

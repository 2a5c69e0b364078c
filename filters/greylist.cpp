// Greylisting at RCPT, in the shared store so any instance of the fleet recognises the
// retry; skipped for exempt networks and clients with a good reputation.
#include "filters/greylist.hpp"
#include "policy/names.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "filters/metrics.hpp"
#include "policy/config.hpp"

namespace mxgate::filters {

namespace {

const char* state_name(GreylistResult::State state) {
  switch (state) {
    case GreylistResult::State::defer:
      return "defer";
    case GreylistResult::State::retried:
      return "retried";
    case GreylistResult::State::known:
      return "known";
    case GreylistResult::State::allowlisted:
      return "allowlisted";
  }
  return "unknown";
}

}  // namespace

GreylistKeys greylist_keys(const SessionContext& context,
                           const ClientNetOptions& client_net_options) {
  GreylistKeys keys;
  std::string net = client_net(context.client_ip, client_net_options);
  if (net.empty()) net = context.client_ip;
  keys.net = store_key("gl", net);
  // Senders are compared case-blind: a bot varying case must not get a fresh triplet.
  keys.triplet = store_subkey(keys.net, policy::ascii_lower(context.sender.empty() ? "<>" : context.sender) +
                                            "/" + policy::ascii_lower(context.recipient));
  return keys;
}

GreylistOptions greylist_options(const policy::Config& config) {
  const auto seconds = [](policy::Duration duration) {
    return std::chrono::duration_cast<std::chrono::seconds>(duration);
  };
  GreylistOptions options;
  options.spec.delay = seconds(config.greylist.delay);
  options.spec.retry_window = seconds(config.greylist.retry_window);
  options.spec.lifetime = seconds(config.greylist.lifetime);
  options.spec.auto_allowlist = config.greylist.auto_allowlist;
  for (const std::string& text : config.greylist.exempt) {
    std::string error;
    if (auto network = policy::parse_cidr(text, error)) options.exempt.push_back(*network);
  }
  options.skip_good_reputation = config.greylist.skip_good_reputation;
  options.reputation = reputation_options(config);
  options.client_net = options.reputation.client_net;
  options.on_error = config.greylist.on_error;
  return options;
}

GreylistFilter::GreylistFilter(GreylistOptions options) : options_(std::move(options)) {
  for (auto state : {GreylistResult::State::defer, GreylistResult::State::retried,
                     GreylistResult::State::known, GreylistResult::State::allowlisted}) {
    results_.push_back(&metrics::Registry::global().counter(
        "mxgate_greylist_total", "Greylist decisions", {{"result", state_name(state)}}));
  }
}

void GreylistFilter::count(GreylistResult::State state) const {
  results_[static_cast<std::size_t>(state)]->inc();
}

Verdict GreylistFilter::deferral(std::chrono::seconds wait, const std::string& detail) const {
  Verdict verdict;
  verdict.kind = Verdict::Kind::tempfail;
  verdict.filter = name_;
  verdict.rule = "greylist";
  verdict.detail = detail;
  // RFC 6647 section 2.1: a temporary failure the sender's MTA retries on its own.
  verdict.reply = smtp::Reply(
      451, "4.7.1",
      fmt::format("Greylisted: first message from this sender, please try again in {} seconds",
                  std::max<std::int64_t>(1, wait.count())));
  return verdict;
}

namespace {

class GreylistInstance final : public FilterInstance {
 public:
  GreylistInstance(const GreylistFilter& filter, Services& services)
      : filter_(filter), store_(services.store) {}

  boost::asio::awaitable<Verdict> on_stage(Stage, const SessionContext& context) override {
    const GreylistOptions& options = filter_.options();
    if (!store_ || skip_) co_return Verdict::next();
    if (!checked_client_) {
      checked_client_ = true;
      skip_ = co_await trusted_client(context);
      if (skip_) co_return Verdict::next();
    }
    const GreylistKeys keys = greylist_keys(context, options.client_net);
    auto result = co_await store_->greylist(keys.triplet, keys.net, options.spec, store_now());
    if (!result.ok()) {
      Verdict verdict;
      verdict.filter = filter_.name();
      verdict.rule = "on_error";
      verdict.detail = "greylist store failed: " + result.message;
      if (options.on_error == policy::OnError::tempfail) {
        verdict.kind = Verdict::Kind::tempfail;
        verdict.reply =
            smtp::Reply(451, "4.3.0", "Temporary failure in a policy check; try again later");
      }
      co_return verdict;
    }
    filter_.count(result.value->state);
    if (result.value->state != GreylistResult::State::defer) co_return Verdict::next();
    co_return filter_.deferral(result.value->wait,
                               fmt::format("triplet {} first seen, retry in {}s", keys.triplet,
                                           result.value->wait.count()));
  }

 private:
  boost::asio::awaitable<bool> trusted_client(const SessionContext& context) {
    const GreylistOptions& options = filter_.options();
    // A DNSWL hit (a DNS list with a negative weight) vouches for the client, as
    // postscreen's dnsbl allowlisting does: no greylisting for it.
    if (context.score_sheet != nullptr) {
      for (const Contribution& line : *context.score_sheet) {
        if (line.filter == "dnsbl" && line.score < 0 && !line.dry_run) co_return true;
      }
    }
    if (!options.exempt.empty()) {
      std::string error;
      if (auto client = policy::parse_cidr(context.client_ip, error)) {
        for (const auto& network : options.exempt) {
          if (network.contains(*client)) co_return true;
        }
      }
    }
    if (!options.skip_good_reputation) co_return false;
    const std::string net = client_net(context.client_ip, options.client_net);
    if (net.empty()) co_return false;
    std::vector<std::string> keys{reputation_key("ip", context.client_ip),
                                  reputation_key("net", net)};
    auto records = co_await store_->reputation_get(keys, options.reputation.half_life, store_now());
    if (!records.ok()) co_return false;
    double score = 0;
    for (const Reputation& record : *records.value)
      score += reputation_score(record, options.reputation);
    co_return score <= options.good_reputation_below;
  }

  const GreylistFilter& filter_;
  std::shared_ptr<Store> store_;
  bool checked_client_ = false;
  bool skip_ = false;
};

}  // namespace

std::unique_ptr<FilterInstance> GreylistFilter::open(Services& services) const {
  return std::make_unique<GreylistInstance>(*this, services);
}

}  // namespace mxgate::filters

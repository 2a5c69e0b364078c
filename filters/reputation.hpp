// Reputation shared by the fleet: decayed counts of good and bad session outcomes per
// client IP, client net, HELO name and sender domain, turned into a bounded score.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "filters/pipeline.hpp"
#include "filters/ratelimit.hpp"
#include "filters/store.hpp"

namespace mxgate::metrics {
class Counter;
}

namespace mxgate::filters {

struct ReputationOptions {
  // Which records a session reads and updates: client_ip, client_net, helo, sender_domain.
  std::vector<std::string> keys{"client_ip", "client_net", "helo", "sender_domain"};
  std::chrono::seconds half_life{7 * 86400};  // an outcome weighs half as much a week later
  double min_events = 3;                      // fewer (decayed) outcomes than this: no opinion
  double max_score = 5;                       // a record of only bad outcomes adds this much
  double min_score = -3;  // a record of only good outcomes adds this much (negative: trust)
  ClientNetOptions client_net;
};

ReputationOptions reputation_options(const policy::Config& config);

// A record's key kind and value: {"ip", "192.0.2.7"} -> "rep:{ip:192.0.2.7}".
std::string reputation_key(std::string_view kind, std::string_view value);
// The keys support asks about for one argument: an IP (its own and its net's record), a
// CIDR, "helo:NAME" or a domain (its HELO and sender-domain records).
std::vector<std::string> reputation_keys_for(std::string_view argument,
                                             const ClientNetOptions& client_net);

// One record's score: 0 below min_events, else the balance of bad over good scaled into
// [min_score, max_score]. Pure, for the filter, the support tool and tests.
double reputation_score(const Reputation& record, const ReputationOptions& options);

// What a session counts as good (messages the backend accepted) and bad (rejections,
// protocol errors, early talk).
struct Outcome {
  double good = 0;
  double bad = 0;
};
Outcome session_outcome(const SessionContext& context);

class ReputationFilter final : public Filter {
 public:
  explicit ReputationFilter(ReputationOptions options);

  const std::string& name() const override { return name_; }
  bool wants(Stage stage) const override;
  // Keys are collected and the read started before RCPT; RCPT and close wait for Redis.
  bool may_wait(Stage stage) const override { return stage == Stage::rcpt || stage == Stage::close; }
  std::unique_ptr<FilterInstance> open(Services& services) const override;

  const ReputationOptions& options() const { return options_; }
  // The keys known at `stage` that were not known before it, as (kind, store key).
  std::vector<std::pair<std::string, std::string>> keys_at(Stage stage,
                                                           const SessionContext& context) const;
  void count_store_error() const;

 private:
  std::string name_ = "reputation";
  ReputationOptions options_;
  metrics::Counter& store_errors_;
};

}  // namespace mxgate::filters

// Greylisting (optional, off by default): the first attempt of a (client net, sender,
// recipient) triplet gets 451 4.7.1; a real MTA retries after `delay`, most spam bots never do.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "filters/pipeline.hpp"
#include "filters/ratelimit.hpp"
#include "filters/reputation.hpp"
#include "filters/store.hpp"
#include "policy/cidr.hpp"

namespace mxgate::metrics {
class Counter;
}

namespace mxgate::filters {

struct GreylistOptions {
  GreylistSpec spec;                 // delay, retry_window, lifetime, auto_allowlist
  std::vector<policy::Cidr> exempt;  // never greylisted
  // Skip clients whose reputation (IP and net records) scores at or below this: known
  // good senders are not delayed. Needs the reputation records (reputation section).
  bool skip_good_reputation = true;
  double good_reputation_below = -1;
  ReputationOptions reputation;
  ClientNetOptions client_net;
  policy::OnError on_error = policy::OnError::allow;  // store down: let mail through
};

GreylistOptions greylist_options(const policy::Config& config);

// The store keys of one attempt: net "gl:{198.51.100.0/24}", triplet under its hash tag.
struct GreylistKeys {
  std::string net;
  std::string triplet;
};
GreylistKeys greylist_keys(const SessionContext& context, const ClientNetOptions& client_net);

class GreylistFilter final : public Filter {
 public:
  explicit GreylistFilter(GreylistOptions options);

  const std::string& name() const override { return name_; }
  bool wants(Stage stage) const override { return stage == Stage::rcpt; }
  std::unique_ptr<FilterInstance> open(Services& services) const override;
  policy::OnError on_error() const override { return options_.on_error; }

  const GreylistOptions& options() const { return options_; }
  Verdict deferral(std::chrono::seconds wait, const std::string& detail) const;
  void count(GreylistResult::State state) const;

 private:
  std::string name_ = "greylist";
  GreylistOptions options_;
  std::vector<metrics::Counter*> results_;  // by GreylistResult::State
};

}  // namespace mxgate::filters

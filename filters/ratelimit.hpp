// Rate limits and concurrency limits shared by the fleet: each rule counts connections,
// messages, recipients or errors per key (client IP, client net, HELO, sender, ...) in
// the store, or holds a slot of an expiring semaphore for the session's lifetime. Rules
// of the connect, helo and mail stages are checked in the background and reported at the
// first RCPT, where their verdicts are enforced anyway; `drop` rules are checked at once.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "filters/pipeline.hpp"
#include "filters/store.hpp"
#include "policy/cidr.hpp"

namespace mxgate::metrics {
class Counter;
}

namespace mxgate::filters {

// How client addresses group into networks (config `client_net`): botnets spread over a
// /24 or an IPv6 /64 (one customer's allocation) are one client.
struct ClientNetOptions {
  int ipv4_prefix = 24;
  int ipv6_prefix = 64;
};

// "192.0.2.0/24", "2001:db8:1:2::/64"; IPv4-mapped IPv6 counts as IPv4. Empty when
// `address` is not an IP address.
std::string client_net(std::string_view address, const ClientNetOptions& options);

struct RateRule {
  std::string name;
  Stage stage = Stage::connect;
  std::vector<std::string> key;  // client_ip, client_net, helo, sender, sender_domain, ...
  enum class Count { events, connections, messages, recipients, errors, concurrency };
  Count count = Count::events;
  RateSpec rate;                       // events: rate per second and burst
  std::int64_t limit = 0;              // concurrency: sessions at once per key
  std::chrono::seconds slot_ttl{900};  // concurrency: a slot not refreshed expires
  policy::RuleAction action = policy::RuleAction::tempfail;
  int reply_code = 451;
  double score = 0;
  policy::OnError on_error = policy::OnError::allow;
  std::vector<policy::Cidr> exempt;
};

struct RateLimitOptions {
  std::vector<RateRule> rules;
  ClientNetOptions client_net;
  std::string instance_id;  // names this process's concurrency slots; default host:pid:random
};

// From the policy's `ratelimit` rules (validated by policy/).
RateLimitOptions rate_limit_options(const policy::Config& config);

// The key's identity for `rule` in this session: "conn-per-ip:192.0.2.7", parts joined
// by '|', lower-case; nullopt when a part is unknown (no HELO yet).
std::optional<std::string> rate_key(const RateRule& rule, const SessionContext& context,
                                    const ClientNetOptions& options);

class RateLimitFilter final : public Filter {
 public:
  explicit RateLimitFilter(RateLimitOptions options);

  const std::string& name() const override { return name_; }
  bool wants(Stage stage) const override;
  // RCPT, DATA and close wait for the store; earlier stages only when a `drop` rule is
  // checked there in line (others run in the background).
  bool may_wait(Stage stage) const override;
  std::unique_ptr<FilterInstance> open(Services& services) const override;
  // A rule with on_error tempfail makes a missed deadline a tempfail too.
  policy::OnError on_error() const override;

  const RateLimitOptions& options() const { return options_; }
  // The verdict of a rule that refused (or a store failure under on_error tempfail).
  Verdict refusal(const RateRule& rule, const std::string& detail) const;
  Verdict store_failure(const RateRule& rule, const std::string& detail) const;
  // Per rule; registered once and never freed, so a store call still running after its
  // session (and this filter, after a reload) is gone may count into them.
  metrics::Counter& limited_counter(std::size_t rule) const;
  metrics::Counter& store_error_counter(std::size_t rule) const;

 private:
  std::string name_ = "ratelimit";
  RateLimitOptions options_;
  std::vector<metrics::Counter*> limited_;  // per rule, registered once
  std::vector<metrics::Counter*> store_errors_;
};

}  // namespace mxgate::filters

// The client's name, as Postfix's smtpd finds it: the PTR names of its address, the first
// one whose A/AAAA records lead back to that address (forward-confirmed reverse DNS);
// and the rdns_checks filter that scores clients without one or with a dynamic-pool name.
#pragma once

#include <re2/re2.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "filters/pipeline.hpp"

namespace mxgate::filters {

class ClientNameCache;
class DnsResolver;

// "1.2.0.192.in-addr.arpa" for 192.0.2.1, 32 nibbles and ".ip6.arpa" for IPv6 (RFC 3596
// 2.5); IPv4-mapped IPv6 is asked as IPv4. nullopt when `address` is not an IP address.
std::optional<std::string> reverse_lookup_name(std::string_view address);

// At most this many PTR names are checked (a hostile zone may list hundreds).
inline constexpr std::size_t kMaxPtrNames = 4;

struct ReverseDnsResult {
  ClientNameStatus status = ClientNameStatus::unknown;
  std::string name;    // the verified name, lower-case, no final dot; empty unless verified
  std::string ptr;     // the first PTR name, verified or not (what the log shows)
  std::string detail;  // why there is no verified name: "no PTR record (nxdomain)", ...
  // How long the DNS lets this answer stand: the smallest TTL of the PTR answer and of
  // every forward answer read (verified, unverified); the negative TTL for no_ptr, 0 when
  // the resolver gave none; 0 for tempfail. ClientNameCache decides what it keeps.
  std::chrono::seconds ttl{0};
};
const char* client_name_status_name(ClientNameStatus status);

// PTR, then A (IPv4) or AAAA (IPv6) of up to kMaxPtrNames names. Completes within
// `timeout` whatever the servers do; past it the result is tempfail, the PTR name kept
// when it was known. Run it on the resolver's executor.
boost::asio::awaitable<ReverseDnsResult> verify_client_name(std::shared_ptr<DnsResolver> resolver,
                                                            std::string address,
                                                            std::chrono::milliseconds timeout);

// A client-name lookup started when the session starts and awaited where the name is
// needed (the first RCPT verdict, XCLIENT), so the greeting never waits for DNS.
class ReverseDnsLookup : public std::enable_shared_from_this<ReverseDnsLookup> {
 public:
  using Callback = std::function<void(const ReverseDnsResult&)>;
  // Spawned on the resolver's executor; `on_done` runs there once, with the result, and
  // never from inside start(). With a `cache` (null: always ask DNS), it is asked first: on a hit the lookup is
  // done() with its result() when start() returns, and `on_done` is posted to the
  // resolver's executor (on a one-thread io_context it runs before the completion of any
  // I/O started afterwards); on a miss the lookup runs and its result is stored.
  static std::shared_ptr<ReverseDnsLookup> start(std::shared_ptr<DnsResolver> resolver,
                                                 std::shared_ptr<ClientNameCache> cache,
                                                 std::string address,
                                                 std::chrono::milliseconds timeout,
                                                 Callback on_done);
  bool done() const { return done_; }
  const ReverseDnsResult& result() const { return result_; }
  // Returns when the result is in (at most the lookup's timeout), or at once when it is.
  boost::asio::awaitable<void> wait();

  explicit ReverseDnsLookup(const boost::asio::any_io_executor& executor);

 private:
  static boost::asio::awaitable<void> run(std::shared_ptr<ReverseDnsLookup> lookup,
                                          std::shared_ptr<DnsResolver> resolver,
                                          std::shared_ptr<ClientNameCache> cache,
                                          std::string address, std::chrono::milliseconds timeout);
  // Publishes result_: done(), wakes wait(), then the callback (once).
  void finish();
  boost::asio::steady_timer signal_;  // cancelled when done: wakes the waiting session
  bool done_ = false;
  ReverseDnsResult result_;
  Callback on_done_;
};

struct RdnsCheckOptions {
  // A score of 0 disables the check.
  double missing = 0;
  double unverified = 0;
  double dynamic = 0;
  std::vector<std::string> dynamic_patterns;  // RE2, validated by policy/

  bool enabled() const { return missing != 0 || unverified != 0 || dynamic != 0; }
};

// Why `name` looks like the name of a dynamic (residential) address: "it embeds the
// address" when the client's IPv4 octets appear in it (1-2-0-192.pool.example,
// c-192-0-2-1.example, 192000002001.example, c0000201.example), or "it matches '<p>'" for
// the first of `patterns` found in it. nullopt: it does not. Pure: unit-tested directly.
std::optional<std::string> dynamic_name_reason(std::string_view name, std::string_view address,
                                               const std::vector<std::unique_ptr<RE2>>& patterns);

// Scores the settled client name at the first RCPT (the session settles it first). Rule
// names are the option names: "missing", "unverified", "dynamic". The evidence belongs to
// the connection (stage "connect"): it holds for every later transaction.
class RdnsFilter final : public Filter {
 public:
  explicit RdnsFilter(RdnsCheckOptions options);
  const std::string& name() const override { return name_; }
  bool wants(Stage stage) const override { return stage == Stage::rcpt; }
  // It reads the name the session settled: nothing to wait for.
  bool may_wait(Stage) const override { return false; }
  std::unique_ptr<FilterInstance> open(Services& services) const override;

  const RdnsCheckOptions& options() const { return options_; }
  const std::vector<std::unique_ptr<RE2>>& patterns() const { return patterns_; }

 private:
  std::string name_ = "rdns";
  RdnsCheckOptions options_;
  std::vector<std::unique_ptr<RE2>> patterns_;
};

}  // namespace mxgate::filters

// DNS lists, as postscreen does them: DNSBL/DNSWL on the client IP, RHSBL on the sender
// domain and HELO name; weighted, filtered by reply code, probed for health (RFC 5782).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "filters/dns_cache.hpp"
#include "filters/pipeline.hpp"
#include "policy/reply_filter.hpp"

namespace mxgate::filters {

// The query key for an address: "1.2.0.192" for 192.0.2.1, 32 reversed nibbles for
// IPv6 (RFC 5782 2.4). IPv4-mapped IPv6 (::ffff:192.0.2.1) is asked as IPv4.
std::optional<std::string> reverse_address(std::string_view address);

// What one A record of a DNS list answer means.
enum class ListReply {
  listed,           // inside 127/8 and accepted by the list's reply filter
  not_matched,      // a listing, but not a code this rule is about
  error_code,       // 127.255.255.252..255: Spamhaus "typo / open resolver / over limit"
  outside_loopback  // not 127/8: a hijacking resolver or a dead list's wildcard
};
ListReply classify_list_reply(std::uint32_t address, const policy::ReplyFilter& filter);
std::string format_ipv4(std::uint32_t address);

// How an answer is shared through the store (Redis) with the rest of the fleet.
std::string encode_list_answer(const CachedAnswer& answer);
std::optional<CachedAnswer> decode_list_answer(std::string_view text);

struct DnsblOptions {
  // RFC 5782 section 5 health probes: run at first use and every probe_interval.
  bool probe = true;
  std::chrono::seconds probe_interval{600};
  std::chrono::seconds probe_retry{60};  // after an inconclusive (timed-out) probe
};

class DnsblFilter final : public Filter {
 public:
  // `rules` were validated by policy/ (match parses, zone is a domain).
  DnsblFilter(const std::vector<policy::DnsblRule>& rules, DnsblOptions options);
  ~DnsblFilter() override;

  const std::string& name() const override { return name_; }
  bool wants(Stage stage) const override;
  // Lookups start at connect, helo and mail; only the first RCPT waits for answers.
  bool may_wait(Stage stage) const override { return stage == Stage::rcpt; }
  std::unique_ptr<FilterInstance> open(Services& services) const override;
  policy::OnError on_error() const override;

  // Probes every list now and waits for the answers (start-up, tests).
  boost::asio::awaitable<void> probe_all(Services& services) const;
  // By rule name (or reply name): whether its answers are currently ignored.
  bool suspended(std::string_view list) const;

  struct List;

 private:
  std::string name_ = "dnsbl";
  std::vector<std::shared_ptr<List>> lists_;
  DnsblOptions options_;
};

}  // namespace mxgate::filters

// DNS-list reply filters in Postfix postscreen syntax ("127.0.0.[2..11]", "127.0.0.4",
// "127.0.0.[1;3;5]", "127.0.[0..255].[1..3]") or as an IPv4 CIDR ("127.0.0.0/8"). The
// loader validates `dnsbl[].match` with it; filters/dnsbl matches A records with it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mxgate::policy {

struct OctetRange {
  std::uint8_t low = 0;
  std::uint8_t high = 255;
  bool operator==(const OctetRange&) const = default;
};

struct ReplyFilter {
  // For each of the 4 octets, the values it may take (any range matching is enough).
  std::array<std::vector<OctetRange>, 4> octets;

  // `reply` is an A record in network byte order (127.0.0.2 = {127, 0, 0, 2}).
  bool matches(const std::array<std::uint8_t, 4>& reply) const;
};

// Grammar (postscreen_dnsbl_sites): four '.'-separated octets, each a number 0..255 or
// '[' items ']' where items are ';'-separated numbers or "low..high" ranges; or an
// IPv4 CIDR "a.b.c.d/len". On failure `error` says which octet and why.
std::optional<ReplyFilter> parse_reply_filter(std::string_view text, std::string& error);

inline bool valid_reply_filter(std::string_view text, std::string& error) {
  return parse_reply_filter(text, error).has_value();
}

}  // namespace mxgate::policy

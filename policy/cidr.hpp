// IPv4/IPv6 networks as admins write them ("192.0.2.0/24", "2001:db8::/32", or a single
// address): parsed once by the loader, matched by the access, ratelimit and PROXY filters.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mxgate::policy {

struct Cidr {
  enum class Family { ipv4, ipv6 } family = Family::ipv4;
  std::array<std::uint8_t, 16> address{};  // network byte order; IPv4 uses the first 4
  int prefix_length = 0;

  // True when `other` (an address or a network) lies inside this network. Families must
  // match: IPv4-mapped IPv6 addresses (::ffff:192.0.2.1) are parsed as IPv4 for that.
  bool contains(const Cidr& other) const;
  // Canonical text ("2001:db8::/32"; a single address prints without "/32" or "/128").
  std::string to_string() const;
};

// Parses "address" or "address/prefix". Host bits beyond the prefix are an error, with a
// suggestion ("10.0.0.1/8": did you mean 10.0.0.0/8?), as Postfix warns about them.
std::optional<Cidr> parse_cidr(std::string_view text, std::string& error);

}  // namespace mxgate::policy

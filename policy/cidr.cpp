// CIDR parsing with inet_pton, so the accepted address forms are exactly the system's.
#include "policy/cidr.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

namespace mxgate::policy {
namespace {

constexpr std::array<std::uint8_t, 12> kIpv4MappedPrefix{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int address_bits(Cidr::Family family) { return family == Cidr::Family::ipv4 ? 32 : 128; }

// True when the first `bits` bits of both byte arrays are equal.
bool same_prefix(const std::array<std::uint8_t, 16>& first,
                 const std::array<std::uint8_t, 16>& second, int bits) {
  int index = 0;
  for (; bits >= 8; bits -= 8, ++index) {
    if (first[index] != second[index]) return false;
  }
  if (bits == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xff << (8 - bits));
  return (first[index] & mask) == (second[index] & mask);
}

void clear_host_bits(std::array<std::uint8_t, 16>& address, int prefix_length, int total_bits) {
  for (int bit = prefix_length; bit < total_bits; ++bit) {
    address[bit / 8] = static_cast<std::uint8_t>(address[bit / 8] & ~(0x80 >> (bit % 8)));
  }
}

}  // namespace

bool Cidr::contains(const Cidr& other) const {
  if (family != other.family || other.prefix_length < prefix_length) return false;
  return same_prefix(address, other.address, prefix_length);
}

std::string Cidr::to_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == Family::ipv4 ? AF_INET : AF_INET6, address.data(), text, sizeof text);
  std::string result = text;
  if (prefix_length != address_bits(family)) result += "/" + std::to_string(prefix_length);
  return result;
}

std::optional<Cidr> parse_cidr(std::string_view text, std::string& error) {
  const std::string quoted = "'" + std::string(text) + "'";
  const std::size_t slash = text.find('/');
  const std::string address_text(text.substr(0, slash));
  Cidr cidr;
  if (address_text.find(':') != std::string::npos) {
    cidr.family = Cidr::Family::ipv6;
    if (inet_pton(AF_INET6, address_text.c_str(), cidr.address.data()) != 1) {
      error = quoted + " is not an IPv6 address or network";
      return std::nullopt;
    }
  } else if (inet_pton(AF_INET, address_text.c_str(), cidr.address.data()) != 1) {
    error = quoted + " is not an IP address or network";
    return std::nullopt;
  }
  const int total_bits = address_bits(cidr.family);
  cidr.prefix_length = total_bits;
  if (slash != std::string_view::npos) {
    const std::string_view prefix_text = text.substr(slash + 1);
    int prefix = -1;
    auto [end, parse_error] =
        std::from_chars(prefix_text.data(), prefix_text.data() + prefix_text.size(), prefix);
    if (prefix_text.empty() || parse_error != std::errc() ||
        end != prefix_text.data() + prefix_text.size() || prefix < 0 || prefix > total_bits) {
      error = quoted + ": prefix length '" + std::string(prefix_text) + "' is not in 0.." +
              std::to_string(total_bits);
      return std::nullopt;
    }
    cidr.prefix_length = prefix;
    std::array<std::uint8_t, 16> network = cidr.address;
    clear_host_bits(network, prefix, total_bits);
    if (network != cidr.address) {
      Cidr suggestion = cidr;
      suggestion.address = network;
      error = quoted + " has host bits set beyond /" + std::to_string(prefix) + " (did you mean " +
              suggestion.to_string() + "?)";
      return std::nullopt;
    }
  }
  // Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d; store those as IPv4 so that
  // one IPv4 entry matches both forms.
  if (cidr.family == Cidr::Family::ipv6 && cidr.prefix_length >= 96 &&
      std::equal(kIpv4MappedPrefix.begin(), kIpv4MappedPrefix.end(), cidr.address.begin())) {
    Cidr mapped;
    mapped.family = Cidr::Family::ipv4;
    std::copy(cidr.address.begin() + 12, cidr.address.end(), mapped.address.begin());
    mapped.prefix_length = cidr.prefix_length - 96;
    return mapped;
  }
  return cidr;
}

}  // namespace mxgate::policy

// Parser and matcher for postscreen-style DNS-list reply filters.
#include "policy/reply_filter.hpp"

#include <charconv>

#include "policy/cidr.hpp"

namespace mxgate::policy {
namespace {

std::optional<std::uint8_t> parse_octet_number(std::string_view text, std::string& error) {
  unsigned value = 0;
  auto [end, parse_error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || parse_error != std::errc() || end != text.data() + text.size()) {
    error = "'" + std::string(text) + "' is not a number";
    return std::nullopt;
  }
  if (value > 255) {
    error = std::string(text) + " is out of range 0..255";
    return std::nullopt;
  }
  return static_cast<std::uint8_t>(value);
}

// One octet: "4", "[2..11]", "[1;3;5]" or "[1..3;7]".
std::optional<std::vector<OctetRange>> parse_octet(std::string_view text, std::string& error) {
  if (text.empty()) {
    error = "empty";
    return std::nullopt;
  }
  if (text.front() != '[') {
    if (text.find_first_of("].;") != std::string_view::npos) {
      error = "'" + std::string(text) + "': a list or range needs brackets, e.g. [2..11]";
      return std::nullopt;
    }
    std::optional<std::uint8_t> value = parse_octet_number(text, error);
    if (!value) return std::nullopt;
    return std::vector<OctetRange>{{*value, *value}};
  }
  if (text.back() != ']') {
    error = "'" + std::string(text) + "': missing ']'";
    return std::nullopt;
  }
  std::string_view items = text.substr(1, text.size() - 2);
  std::vector<OctetRange> ranges;
  while (true) {
    const std::size_t semicolon = items.find(';');
    const std::string_view item = items.substr(0, semicolon);
    const std::size_t dots = item.find("..");
    if (dots == std::string_view::npos) {
      std::optional<std::uint8_t> value = parse_octet_number(item, error);
      if (!value) return std::nullopt;
      ranges.push_back({*value, *value});
    } else {
      std::optional<std::uint8_t> low = parse_octet_number(item.substr(0, dots), error);
      if (!low) return std::nullopt;
      std::optional<std::uint8_t> high = parse_octet_number(item.substr(dots + 2), error);
      if (!high) return std::nullopt;
      if (*low > *high) {
        // postscreen would silently never match; say so instead.
        error = "empty range " + std::string(item);
        return std::nullopt;
      }
      ranges.push_back({*low, *high});
    }
    if (semicolon == std::string_view::npos) break;
    items.remove_prefix(semicolon + 1);
  }
  return ranges;
}

std::optional<ReplyFilter> parse_cidr_filter(std::string_view text, std::string& error) {
  std::optional<Cidr> cidr = parse_cidr(text, error);
  if (!cidr) return std::nullopt;
  if (cidr->family != Cidr::Family::ipv4) {
    error = "DNS-list replies are IPv4 addresses; '" + std::string(text) + "' is IPv6";
    return std::nullopt;
  }
  // A CIDR is a per-octet filter: fixed octets, one ranged octet, then anything.
  ReplyFilter filter;
  int remaining = cidr->prefix_length;
  for (std::size_t index = 0; index < 4; ++index) {
    const std::uint8_t base = cidr->address[index];
    const int bits = remaining >= 8 ? 8 : (remaining > 0 ? remaining : 0);
    const int span = (1 << (8 - bits)) - 1;
    filter.octets[index] = {{base, static_cast<std::uint8_t>(base + span)}};
    remaining -= bits;
  }
  return filter;
}

}  // namespace

bool ReplyFilter::matches(const std::array<std::uint8_t, 4>& reply) const {
  for (std::size_t index = 0; index < 4; ++index) {
    bool octet_matches = false;
    for (const OctetRange& range : octets[index]) {
      if (reply[index] >= range.low && reply[index] <= range.high) {
        octet_matches = true;
        break;
      }
    }
    if (!octet_matches) return false;
  }
  return true;
}

std::optional<ReplyFilter> parse_reply_filter(std::string_view text, std::string& error) {
  if (text.find('/') != std::string_view::npos) return parse_cidr_filter(text, error);
  ReplyFilter filter;
  std::size_t index = 0;
  std::string_view rest = text;
  while (true) {
    // Split at '.' outside brackets: "[2..11]" contains dots of its own.
    std::size_t end = 0;
    bool in_brackets = false;
    for (; end < rest.size(); ++end) {
      if (rest[end] == '[') in_brackets = true;
      if (rest[end] == ']') in_brackets = false;
      if (rest[end] == '.' && !in_brackets) break;
    }
    if (index == 4) {
      error = "more than 4 octets (expected e.g. 127.0.0.[2..11])";
      return std::nullopt;
    }
    std::string octet_error;
    std::optional<std::vector<OctetRange>> ranges = parse_octet(rest.substr(0, end), octet_error);
    if (!ranges) {
      error = "octet " + std::to_string(index + 1) + ": " + octet_error;
      return std::nullopt;
    }
    filter.octets[index++] = std::move(*ranges);
    if (end == rest.size()) break;
    rest.remove_prefix(end + 1);
  }
  if (index != 4) {
    error = "expected 4 octets, got " + std::to_string(index) + " (e.g. 127.0.0.[2..11])";
    return std::nullopt;
  }
  return filter;
}

}  // namespace mxgate::policy

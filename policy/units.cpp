// Parsers and formatters for the value syntaxes admins write: durations, sizes, rates,
// endpoints. Pure functions: the loader, the CLI and the tests call them directly.
#include "policy/units.hpp"

#include <arpa/inet.h>

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <string>

#include "policy/names.hpp"

namespace mxgate::policy {
namespace {

// Anything longer than this is a typo (an extra zero), not a real timeout; it also keeps
// every conversion far away from int64 overflow.
constexpr double kMaxDurationMilliseconds = 100.0 * 365 * 24 * 3600 * 1000;
// 1 PiB: no message or buffer bound is larger, and the arithmetic stays exact.
constexpr double kMaxSizeBytes = 1024.0 * 1024 * 1024 * 1024 * 1024;

bool is_digit(char character) { return character >= '0' && character <= '9'; }

// A non-negative decimal number ("30", "1.5") at the start of `text`; consumes it.
std::optional<double> take_number(std::string_view& text) {
  std::size_t length = 0;
  while (length < text.size() && is_digit(text[length])) ++length;
  if (length == 0) return std::nullopt;
  if (length < text.size() && text[length] == '.') {
    std::size_t fraction = length + 1;
    while (fraction < text.size() && is_digit(text[fraction])) ++fraction;
    if (fraction == length + 1) return std::nullopt;  // "1." is a typo, not a number
    length = fraction;
  }
  double value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + length, value);
  if (error != std::errc() || end != text.data() + length) return std::nullopt;
  text.remove_prefix(length);
  return value;
}

std::string_view take_letters(std::string_view& text) {
  std::size_t length = 0;
  while (length < text.size() && std::isalpha(static_cast<unsigned char>(text[length]))) ++length;
  std::string_view letters = text.substr(0, length);
  text.remove_prefix(length);
  return letters;
}

std::optional<double> duration_unit_milliseconds(std::string_view unit) {
  if (unit == "ms") return 1;
  if (unit == "s") return 1000;
  if (unit == "m" || unit == "min") return 60 * 1000;
  if (unit == "h") return 3600 * 1000;
  if (unit == "d") return 24 * 3600 * 1000;
  return std::nullopt;
}

std::optional<double> parse_duration_milliseconds(std::string_view text) {
  if (text.empty()) return std::nullopt;
  double total = 0;
  bool first = true;
  while (!text.empty()) {
    std::optional<double> number = take_number(text);
    if (!number) return std::nullopt;
    std::string_view unit = take_letters(text);
    if (unit.empty()) {
      // A bare number is seconds, but only on its own: "1m30" is ambiguous.
      if (!first || !text.empty()) return std::nullopt;
      return *number * 1000;
    }
    std::optional<double> scale = duration_unit_milliseconds(unit);
    if (!scale) return std::nullopt;
    total += *number * *scale;
    if (total > kMaxDurationMilliseconds) return std::nullopt;
    first = false;
  }
  return total;
}

std::optional<double> size_unit_bytes(std::string_view unit) {
  const std::string name = ascii_lower(unit);
  // "MB" means MiB: that is what admins mean when they size a mailbox or a message.
  if (name.empty() || name == "b") return 1;
  if (name == "k" || name == "kb" || name == "kib") return 1024.0;
  if (name == "m" || name == "mb" || name == "mib") return 1024.0 * 1024;
  if (name == "g" || name == "gb" || name == "gib") return 1024.0 * 1024 * 1024;
  if (name == "t" || name == "tb" || name == "tib") return 1024.0 * 1024 * 1024 * 1024;
  return std::nullopt;
}

// The period of a rate written as a bare unit word ("min", "day"), in seconds.
std::optional<double> rate_unit_seconds(std::string_view unit) {
  if (unit == "s" || unit == "sec" || unit == "second") return 1;
  if (unit == "m" || unit == "min" || unit == "minute") return 60;
  if (unit == "h" || unit == "hour") return 3600;
  if (unit == "d" || unit == "day") return 86400;
  return std::nullopt;
}

bool valid_ipv4(const std::string& text) {
  std::array<unsigned char, 4> bytes{};
  return inet_pton(AF_INET, text.c_str(), bytes.data()) == 1;
}

bool valid_ipv6(const std::string& text) {
  std::array<unsigned char, 16> bytes{};
  return inet_pton(AF_INET6, text.c_str(), bytes.data()) == 1;
}

bool looks_like_ipv4(std::string_view host) {
  for (char character : host) {
    if (!is_digit(character) && character != '.') return false;
  }
  return true;
}

}  // namespace

std::string Endpoint::to_string() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::optional<Duration> parse_duration(std::string_view text) {
  std::optional<double> milliseconds = parse_duration_milliseconds(text);
  if (!milliseconds) return std::nullopt;
  return Duration(std::llround(*milliseconds));
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::optional<double> number = take_number(text);
  if (!number) return std::nullopt;
  if (!text.empty() && text.front() == ' ') text.remove_prefix(1);  // "25 MiB"
  std::string_view unit = take_letters(text);
  if (!text.empty()) return std::nullopt;
  std::optional<double> scale = size_unit_bytes(unit);
  if (!scale) return std::nullopt;
  const double bytes = std::floor(*number * *scale);
  if (bytes > kMaxSizeBytes) return std::nullopt;
  return static_cast<std::uint64_t>(bytes);
}

std::optional<double> parse_rate(std::string_view text) {
  const std::size_t slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::string_view count_text = text.substr(0, slash);
  std::optional<double> count = take_number(count_text);
  if (!count || !count_text.empty()) return std::nullopt;
  const std::string_view period_text = text.substr(slash + 1);
  double period_seconds = 0;
  if (std::optional<double> unit = rate_unit_seconds(period_text)) {
    period_seconds = *unit;
  } else if (std::optional<double> milliseconds = parse_duration_milliseconds(period_text)) {
    // "2/5min", "10/30s"; a bare "/5" (seconds) would be too easy to misread, refuse it.
    if (is_digit(period_text.back())) return std::nullopt;
    period_seconds = *milliseconds / 1000;
  } else if (!period_text.empty() && is_digit(period_text.front())) {
    // "5000/1day": a count of a unit word.
    std::string_view rest = period_text;
    std::optional<double> multiple = take_number(rest);
    std::optional<double> unit = rate_unit_seconds(rest);
    if (!multiple || !unit) return std::nullopt;
    period_seconds = *multiple * *unit;
  } else {
    return std::nullopt;
  }
  if (period_seconds <= 0) return std::nullopt;
  return *count / period_seconds;
}

std::optional<Endpoint> parse_endpoint(std::string_view text, std::optional<uint16_t> default_port,
                                       std::string& error) {
  const std::string quoted = "'" + std::string(text) + "'";
  std::string host;
  std::string_view port_text;
  bool has_port = false;
  if (text.empty()) {
    error = "empty endpoint (write host:port)";
    return std::nullopt;
  }
  if (text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) {
      error = quoted + ": missing ']' after the IPv6 address";
      return std::nullopt;
    }
    host = std::string(text.substr(1, close - 1));
    if (!valid_ipv6(host)) {
      error = quoted + ": '" + host + "' is not an IPv6 address";
      return std::nullopt;
    }
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        error = quoted + ": expected ':port' after ']'";
        return std::nullopt;
      }
      port_text = rest.substr(1);
      has_port = true;
    }
  } else {
    const std::size_t colon = text.find(':');
    if (colon != std::string_view::npos && text.find(':', colon + 1) != std::string_view::npos) {
      error = quoted + ": write IPv6 addresses in brackets, e.g. [::1]:25";
      return std::nullopt;
    }
    host = std::string(text.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = text.substr(colon + 1);
      has_port = true;
    }
    if (host.empty()) {
      error = quoted + ": missing host (write 0.0.0.0:port to listen on all IPv4 addresses)";
      return std::nullopt;
    }
    if (looks_like_ipv4(host)) {
      if (!valid_ipv4(host)) {
        error = quoted + ": '" + host + "' is not an IPv4 address";
        return std::nullopt;
      }
    } else {
      std::string domain_error;
      if (!normalize_domain(host, domain_error)) {
        error = quoted + ": " + domain_error;
        return std::nullopt;
      }
    }
  }
  Endpoint endpoint;
  endpoint.host = host;
  if (!has_port) {
    if (!default_port) {
      error = quoted + ": missing port (write host:port)";
      return std::nullopt;
    }
    endpoint.port = *default_port;
    return endpoint;
  }
  unsigned port = 0;
  auto [end, parse_error] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || parse_error != std::errc() ||
      end != port_text.data() + port_text.size() || port > 65535) {
    error = quoted + ": invalid port '" + std::string(port_text) + "' (expected 0..65535)";
    return std::nullopt;
  }
  endpoint.port = static_cast<uint16_t>(port);
  return endpoint;
}

std::optional<Endpoint> parse_endpoint(std::string_view text,
                                       std::optional<uint16_t> default_port) {
  std::string error;
  return parse_endpoint(text, default_port, error);
}

std::string format_duration(Duration duration) {
  std::int64_t milliseconds = duration.count();
  if (milliseconds == 0) return "0s";
  std::string result;
  if (milliseconds < 0) {
    result = "-";
    milliseconds = -milliseconds;
  }
  constexpr std::array<std::pair<std::int64_t, const char*>, 5> units{{
      {86400000, "d"},
      {3600000, "h"},
      {60000, "m"},
      {1000, "s"},
      {1, "ms"},
  }};
  for (const auto& [scale, name] : units) {
    if (milliseconds >= scale) {
      result += std::to_string(milliseconds / scale) + name;
      milliseconds %= scale;
    }
  }
  return result;
}

std::string format_size(std::uint64_t bytes) {
  constexpr std::array<std::pair<std::uint64_t, const char*>, 4> units{{
      {1ull << 40, "TiB"},
      {1ull << 30, "GiB"},
      {1ull << 20, "MiB"},
      {1ull << 10, "KiB"},
  }};
  for (const auto& [scale, name] : units) {
    if (bytes >= scale && bytes % scale == 0) return std::to_string(bytes / scale) + name;
  }
  return std::to_string(bytes) + "B";
}

}  // namespace mxgate::policy

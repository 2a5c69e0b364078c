// Parsers for the value syntaxes admins write: durations, sizes, rates, endpoints.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "policy/config.hpp"

namespace mxgate::policy {

// "250ms", "30s", "5m", "2h", "1d", combinations "1m30s"; a bare number is seconds.
std::optional<Duration> parse_duration(std::string_view text);
// "1000", "512B", "64KiB", "25MiB", "1GiB", also "25MB" (= MiB, as admins mean it).
std::optional<std::uint64_t> parse_size(std::string_view text);
// "60/min", "10/s", "100/h", "5000/day", "2/5min" -> events per second.
std::optional<double> parse_rate(std::string_view text);
// "127.0.0.1:25", "[::1]:25", "localhost:25"; default_port used when no ":port".
std::optional<Endpoint> parse_endpoint(std::string_view text,
                                       std::optional<uint16_t> default_port = {});
// The same, saying what is wrong ("'[::1]:99999': invalid port ...") for `mxgate check`.
// Port 0 is accepted here; callers that connect refuse it.
std::optional<Endpoint> parse_endpoint(std::string_view text, std::optional<uint16_t> default_port,
                                       std::string& error);
// Human forms for summaries and logs.
std::string format_duration(Duration d);
std::string format_size(std::uint64_t bytes);

}  // namespace mxgate::policy

// `mxgate logs`: support's tool to find and explain refusals in the JSON-lines rejection
// log (plain or gzip-rotated files), one readable paragraph or raw JSON line per hit.
#pragma once

#include <CLI/CLI.hpp>
#include <boost/json/object.hpp>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace mxgate::proxy {

struct LogsOptions {
  std::vector<std::string> files;  // "-" reads standard input
  std::string ref;                 // a refusal's ref, or a session id (all its lines)
  std::string ip;                  // address or CIDR
  std::string from;                // sender address, or domain (subdomains too); "<>" = null
  std::string rcpt;                // recipient address or domain
  std::string domain;              // sender or any recipient in this domain
  std::string filter;              // deciding or contributing filter: "dnsbl" or "dnsbl/rule"
  std::string since;               // UTC "2026-11-22", "2026-11-22 10:04[:11]", or "2h" ago
  std::string until;
  bool json = false;
  bool stats = false;
  bool sessions = false;  // include session summaries
};

void add_logs_options(CLI::App& command, LogsOptions& options);
// Returns the process exit code: 0 when something matched, 1 when nothing did, 2 on errors.
int run_logs_command(const LogsOptions& options);
// The same, writing results to `out` and diagnostics to `errors` (tests).
int run_logs_command(const LogsOptions& options, std::ostream& out, std::ostream& errors);

// The readable explanation of one log event (refusal or session summary), ending in '\n':
// "2026-11-22 10:04:11  192.0.2.7 -> alice@example.org  REJECTED at RCPT by dnsbl
// (zen.spamhaus.org 127.0.0.4, +8) total 9 >= reject 6  [ref 7Q3XK2PA]", then the reply.
std::string explain_event(const boost::json::object& event);

// "2026-11-22T10:04:11.123Z" (also without fraction or zone, or with a space) ->
// milliseconds since the epoch, UTC. Relative forms ("90s", "15m", "2h", "3d") count back
// from `now_ms`. Empty optional when the text is none of these.
std::optional<std::int64_t> parse_log_time(std::string_view text, std::int64_t now_ms);

}  // namespace mxgate::proxy

// `mxgate reputation`: support's tool to show or reset the reputation records of a client
// IP, net, HELO name or sender domain in the shared store (Redis).
#pragma once

#include <CLI/CLI.hpp>
#include <iosfwd>
#include <string>
#include <vector>

namespace mxgate::proxy {

struct ReputationCommandOptions {
  std::string config_path = "conf/mxgate.yaml";
  std::vector<std::string> overrides;  // -o key=value, as for run and check
  std::string action = "show";         // show | reset
  // 192.0.2.7 (its IP and net records), 192.0.2.0/24, helo:NAME, domain:NAME, or a bare
  // name (its HELO and sender-domain records).
  std::vector<std::string> targets;
};

// Adds -c, -o and the positional "show|reset TARGET..." to `command`.
void add_reputation_options(CLI::App& command, ReputationCommandOptions& options);
// Exit code: 0 done, 1 nothing found (show) or nothing removed (reset), 2 on errors (bad
// config, no redis configured, store unreachable).
int run_reputation_command(const ReputationCommandOptions& options);
int run_reputation_command(const ReputationCommandOptions& options, std::ostream& out,
                           std::ostream& errors);

}  // namespace mxgate::proxy

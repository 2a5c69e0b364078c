// mxgate's command line: run (serve), check (validate a policy), logs (search the
// rejection log for support).
#include <grp.h>
#include <pwd.h>
#include <cerrno>
#include <cstring>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "policy/loader.hpp"
#include "proxy/logs_command.hpp"
#include "proxy/reputation_command.hpp"
#include "proxy/server.hpp"
#include "proxy/tls.hpp"

namespace {

using mxgate::policy::LoadResult;

void print_errors(const LoadResult& result) {
  for (const auto& error : result.errors) std::cerr << error.to_string() << "\n";
  std::cerr << result.errors.size() << (result.errors.size() == 1 ? " error" : " errors") << "\n";
}

// Checks what the loader cannot: files the daemon will open, the user it becomes.
bool check_runtime(const mxgate::policy::Config& config, std::string& error) {
  if (!config.user.empty() && ::getpwnam(config.user.c_str()) == nullptr) {
    error = config.path + ": user: no such user '" + config.user + "'";
    return false;
  }
  try {
    if (!config.tls.cert_file.empty()) mxgate::proxy::make_server_tls_context(config.tls);
  } catch (const std::exception& failure) {
    error = config.path + ": tls: " + failure.what();
    return false;
  }
  return true;
}

bool drop_privileges(const std::string& user, std::string& error) {
  if (user.empty()) return true;
  struct passwd* entry = ::getpwnam(user.c_str());
  if (entry == nullptr) {
    error = "user: no such user '" + user + "'";
    return false;
  }
  if (::geteuid() != 0) {
    // Started unprivileged (a high port, systemd User=): nothing to drop, but say so
    // when it is not the configured user, since the operator expected a switch.
    if (::geteuid() != entry->pw_uid) {
      spdlog::warn("user: not running as root, so staying uid {} instead of '{}'", ::geteuid(),
                   user);
    }
    return true;
  }
  if (::initgroups(entry->pw_name, entry->pw_gid) != 0 || ::setgid(entry->pw_gid) != 0 ||
      ::setuid(entry->pw_uid) != 0) {
    error = "user: cannot switch to '" + user + "': " + std::strerror(errno);
    return false;
  }
  if (::setuid(0) == 0) {  // the switch must be one way
    error = "user: could regain root after switching to '" + user + "'";
    return false;
  }
  return true;
}

spdlog::level::level_enum parse_level(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  return parsed == spdlog::level::off && level != "off" ? spdlog::level::info : parsed;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mxgate: an SMTP filtering front-end for Postfix"};
  app.require_subcommand(1);
  std::string config_path = "conf/mxgate.yaml";
  std::vector<std::string> overrides;

  auto* run = app.add_subcommand("run", "Serve SMTP with the given policy");
  run->add_option("-c,--config", config_path, "Policy file (YAML)");
  run->add_option("-o,--override", overrides, "Override a config key: -o limits.max_recipients=50")
      ->allow_extra_args(false);

  auto* check = app.add_subcommand("check", "Validate a policy; exit 1 with file:line errors");
  check->add_option("-c,--config", config_path, "Policy file (YAML)");
  check->add_option("-o,--override", overrides, "Override a config key")->allow_extra_args(false);

  mxgate::proxy::LogsOptions logs_options;
  auto* logs = app.add_subcommand("logs", "Search rejection logs (plain or .gz) for support");
  mxgate::proxy::add_logs_options(*logs, logs_options);

  mxgate::proxy::ReputationCommandOptions reputation_options;
  auto* reputation = app.add_subcommand(
      "reputation", "Show or reset reputation records in Redis: show|reset 192.0.2.7 ...");
  mxgate::proxy::add_reputation_options(*reputation, reputation_options);

  CLI11_PARSE(app, argc, argv);

  auto console = spdlog::stderr_color_mt("mxgate");
  spdlog::set_default_logger(console);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  if (logs->parsed()) return mxgate::proxy::run_logs_command(logs_options);
  if (reputation->parsed()) return mxgate::proxy::run_reputation_command(reputation_options);

  LoadResult result = mxgate::policy::load_config(config_path, overrides);
  if (!result.ok()) {
    print_errors(result);
    return 1;
  }
  std::string error;
  if (!check_runtime(*result.config, error)) {
    std::cerr << error << "\n";
    return 1;
  }
  if (check->parsed()) {
    std::cout << config_path << ": ok\n" << mxgate::policy::summarize(*result.config);
    return 0;
  }

  spdlog::set_level(parse_level(result.config->log.level));
  try {
    mxgate::proxy::Server server(result.config);
    if (!server.bind(error)) {
      spdlog::error("cannot listen: {}", error);
      return 1;
    }
    if (!drop_privileges(result.config->user, error)) {
      spdlog::error("{}", error);
      return 1;
    }
    return server.run(overrides);
  } catch (const std::exception& failure) {
    spdlog::error("fatal: {}", failure.what());
    return 1;
  }
}

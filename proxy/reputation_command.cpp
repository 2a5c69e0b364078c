// `mxgate reputation show|reset TARGET...`: reads or deletes reputation records through
// the same RedisStore the daemon uses, so keys and decay are computed the same way.
#include "proxy/reputation_command.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <iostream>

#include "filters/redis_store.hpp"
#include "filters/reputation.hpp"
#include "policy/loader.hpp"

namespace mxgate::proxy {

namespace asio = boost::asio;

void add_reputation_options(CLI::App& command, ReputationCommandOptions& options) {
  command.add_option("-c,--config", options.config_path, "Policy file (YAML)");
  command.add_option("-o,--override", options.overrides, "Override a config key")
      ->allow_extra_args(false);
  command.add_option("action", options.action, "show or reset")
      ->required()
      ->check(CLI::IsMember({"show", "reset"}));
  command
      .add_option("targets", options.targets,
                  "192.0.2.7, 192.0.2.0/24, helo:NAME, domain:NAME or a bare name")
      ->required();
}

namespace {

std::string format_time(filters::StoreTime micros) {
  if (micros == 0) return "never";
  const std::chrono::sys_time<std::chrono::seconds> time{
      std::chrono::seconds(micros / filters::kMicrosPerSecond)};
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", time);
}

// Strips the "rep:{...}" wrapping for display: "ip:192.0.2.7".
std::string display_name(const std::string& key) {
  const auto open = key.find('{');
  const auto close = key.rfind('}');
  if (open == std::string::npos || close == std::string::npos || close < open) return key;
  return key.substr(open + 1, close - open - 1);
}

asio::awaitable<int> run_on_store(filters::RedisStore& store,
                                  const ReputationCommandOptions& options,
                                  const filters::ReputationOptions& reputation, std::ostream& out,
                                  std::ostream& errors) {
  std::vector<std::string> keys;
  for (const std::string& target : options.targets) {
    for (std::string& key : filters::reputation_keys_for(target, reputation.client_net)) {
      keys.push_back(std::move(key));
    }
  }
  int found = 0;
  if (options.action == "reset") {
    for (const std::string& key : keys) {
      auto removed = co_await store.remove(key);
      if (!removed.ok()) {
        errors << "reputation: " << filters::store_error_name(removed.error) << ": "
               << removed.message << "\n";
        co_return 2;
      }
      out << display_name(key) << (*removed.value ? ": reset\n" : ": no record\n");
      found += *removed.value ? 1 : 0;
    }
    co_return found > 0 ? 0 : 1;
  }
  auto records = co_await store.reputation_get(keys, reputation.half_life, filters::store_now());
  if (!records.ok()) {
    errors << "reputation: " << filters::store_error_name(records.error) << ": " << records.message
           << "\n";
    co_return 2;
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const filters::Reputation& record = (*records.value)[i];
    if (record.updated == 0) {
      out << display_name(keys[i]) << ": no record\n";
      continue;
    }
    ++found;
    out << fmt::format("{}: good {:.2f} bad {:.2f} score {:+.2f} (half-life {}s, updated {})\n",
                       display_name(keys[i]), record.good, record.bad,
                       filters::reputation_score(record, reputation), reputation.half_life.count(),
                       format_time(record.updated));
  }
  co_return found > 0 ? 0 : 1;
}

}  // namespace

int run_reputation_command(const ReputationCommandOptions& options) {
  return run_reputation_command(options, std::cout, std::cerr);
}

int run_reputation_command(const ReputationCommandOptions& options, std::ostream& out,
                           std::ostream& errors) {
  policy::LoadResult loaded = policy::load_config(options.config_path, options.overrides);
  if (!loaded.ok()) {
    for (const auto& error : loaded.errors) errors << error.to_string() << "\n";
    return 2;
  }
  const policy::Config& config = *loaded.config;
  if (!config.redis) {
    errors << options.config_path
           << ": no redis section: the embedded store lives inside the running mxgate and "
              "its reputation records are not shared (configure redis to inspect them)\n";
    return 2;
  }
  filters::RedisStoreOptions store_options = filters::redis_store_options(*config.redis);
  // A person is waiting, not an SMTP client: allow a slower answer than the daemon does.
  store_options.timeout = std::max(store_options.timeout, std::chrono::milliseconds(2000));
  store_options.connect_timeout =
      std::max(store_options.connect_timeout, std::chrono::milliseconds(2000));
  const filters::ReputationOptions reputation = filters::reputation_options(config);

  asio::io_context io;
  int code = 2;
  {
    filters::RedisStore store(io.get_executor(), store_options);
    auto future =
        asio::co_spawn(io, run_on_store(store, options, reputation, out, errors), asio::use_future);
    // Not io.run(): the connection's socket watch would keep it running forever.
    while (future.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      io.run_one_for(std::chrono::milliseconds(100));
    }
    code = future.get();
  }
  io.restart();
  io.poll();  // the store closes its connection on the io_context
  return code;
}

}  // namespace mxgate::proxy

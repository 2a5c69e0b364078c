// The shared-state keys of the policy: concurrency limits, client_net, reputation and
// greylist sections, their defaults (off) and their file:line errors.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "policy/loader.hpp"

namespace mxgate::policy {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> errors_of(const std::string& yaml) {
  std::vector<std::string> lines;
  for (const ConfigError& error : load_config_text(yaml, "test.yaml").errors) {
    lines.push_back(error.to_string());
  }
  return lines;
}

std::shared_ptr<const Config> load_ok(const std::string& yaml) {
  LoadResult result = load_config_text(yaml, "test.yaml");
  EXPECT_TRUE(result.ok()) << ::testing::PrintToString(errors_of(yaml));
  return result.config;
}

TEST(StoreConfig, DefaultsAreOff) {
  auto config = load_ok("hostname: mx.test\n");
  ASSERT_TRUE(config);
  EXPECT_FALSE(config->redis);
  EXPECT_FALSE(config->reputation.enabled);
  EXPECT_FALSE(config->greylist.enabled);
  EXPECT_EQ(config->client_net.ipv4_prefix, 24);
  EXPECT_EQ(config->client_net.ipv6_prefix, 64);
}

TEST(StoreConfig, ConcurrencyRuleTakesALimitNotARate) {
  auto config = load_ok(
      "ratelimit:\n"
      "  - { name: sessions-per-ip, key: client_ip, count: concurrency, limit: 10, "
      "slot_ttl: 30m, reply_code: 421 }\n");
  ASSERT_TRUE(config);
  ASSERT_EQ(config->ratelimit.size(), 1u);
  EXPECT_EQ(config->ratelimit[0].limit, 10);
  EXPECT_EQ(config->ratelimit[0].slot_ttl, 30min);
  EXPECT_EQ(config->ratelimit[0].reply_code, 421);

  const auto missing = errors_of(
      "ratelimit:\n"
      "  - { name: c, key: client_ip, count: concurrency }\n");
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_NE(missing[0].find("test.yaml:2:"), std::string::npos) << missing[0];
  EXPECT_NE(missing[0].find("limit"), std::string::npos) << missing[0];
  // A rate still needs its rate.
  EXPECT_EQ(errors_of("ratelimit:\n  - { name: r, key: client_ip }\n").size(), 1u);
}

TEST(StoreConfig, ClientNetPrefixes) {
  auto config = load_ok("client_net: { ipv4_prefix: 22, ipv6_prefix: 48 }\n");
  ASSERT_TRUE(config);
  EXPECT_EQ(config->client_net.ipv4_prefix, 22);
  EXPECT_EQ(config->client_net.ipv6_prefix, 48);
  const auto errors = errors_of("client_net:\n  ipv4_prefix: 4\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind("test.yaml:2:", 0), 0u) << errors[0];
}

TEST(StoreConfig, ReputationSectionEnables) {
  auto config = load_ok(
      "reputation:\n"
      "  keys: [client_ip, sender_domain]\n"
      "  half_life: 3d\n"
      "  min_events: 5\n"
      "  max_score: 4\n"
      "  min_score: -2\n");
  ASSERT_TRUE(config);
  EXPECT_TRUE(config->reputation.enabled);
  EXPECT_EQ(config->reputation.keys, (std::vector<std::string>{"client_ip", "sender_domain"}));
  EXPECT_EQ(config->reputation.half_life, 72h);
  EXPECT_EQ(config->reputation.min_events, 5);
  EXPECT_EQ(config->reputation.max_score, 4);
  EXPECT_EQ(config->reputation.min_score, -2);
  EXPECT_TRUE(load_ok("reputation: {}\n")->reputation.enabled);
  EXPECT_FALSE(load_ok("reputation: { enabled: false }\n")->reputation.enabled);

  const auto errors = errors_of("reputation:\n  keys: [client_ip, recipient]\n  min_score: 3\n");
  ASSERT_EQ(errors.size(), 2u) << ::testing::PrintToString(errors);
  EXPECT_EQ(errors[0].rfind("test.yaml:2:", 0), 0u) << errors[0];
  EXPECT_NE(errors[0].find("recipient"), std::string::npos) << errors[0];
  EXPECT_EQ(errors[1].rfind("test.yaml:3:", 0), 0u) << errors[1];
}

TEST(StoreConfig, GreylistSectionEnables) {
  auto config = load_ok(
      "greylist:\n"
      "  delay: 2m\n"
      "  retry_window: 12h\n"
      "  lifetime: 30d\n"
      "  auto_allowlist: 3\n"
      "  skip_good_reputation: false\n"
      "  exempt: [192.0.2.0/24]\n"
      "  on_error: tempfail\n");
  ASSERT_TRUE(config);
  EXPECT_TRUE(config->greylist.enabled);
  EXPECT_EQ(config->greylist.delay, 2min);
  EXPECT_EQ(config->greylist.retry_window, 12h);
  EXPECT_EQ(config->greylist.lifetime, 24h * 30);
  EXPECT_EQ(config->greylist.auto_allowlist, 3);
  EXPECT_FALSE(config->greylist.skip_good_reputation);
  EXPECT_EQ(config->greylist.exempt, (std::vector<std::string>{"192.0.2.0/24"}));
  EXPECT_EQ(config->greylist.on_error, OnError::tempfail);

  const auto errors = errors_of("greylist:\n  delay: 1h\n  retry_window: 30m\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("retry_window"), std::string::npos) << errors[0];
  EXPECT_EQ(errors_of("greylist:\n  exempt: [192.0.2.1/24]\n").size(), 1u);
}

// The commented examples of conf/mxgate.yaml for these sections, uncommented, load clean.
TEST(StoreConfig, ExampleSectionsAreValid) {
  std::ifstream file(std::string(MXGATE_SOURCE_DIR) + "/conf/mxgate.yaml");
  std::stringstream whole;
  whole << file.rdbuf();
  std::istringstream input(whole.str());
  std::string sections;
  std::string rules = "ratelimit:\n";
  std::string line;
  bool in_block = false;
  bool in_more_rules = false;
  while (std::getline(input, line)) {
    if (line == "# client_net:" || line == "# reputation:" || line == "# greylist:") {
      in_block = true;
      sections += line.substr(2) + "\n";
      continue;
    }
    if (line.starts_with("# More ratelimit rules")) {
      in_more_rules = true;
      continue;
    }
    if (in_block && line.starts_with("#   ")) {
      sections += line.substr(2) + "\n";
      continue;
    }
    if (in_more_rules && line.starts_with("#   ")) {
      rules += line.substr(2) + "\n";
      continue;
    }
    in_block = in_more_rules = false;
  }
  const std::string text = rules + sections;
  // Named as the example file, so "file:lists/..." resolves beside it.
  LoadResult result = load_config_text(text, std::string(MXGATE_SOURCE_DIR) + "/conf/mxgate.yaml");
  ASSERT_TRUE(result.ok()) << text << ::testing::PrintToString(errors_of(text));
  const auto& config = result.config;
  EXPECT_EQ(config->ratelimit.size(), 2u);
  EXPECT_EQ(config->ratelimit[0].count, "concurrency");
  EXPECT_TRUE(config->reputation.enabled);
  EXPECT_TRUE(config->greylist.enabled);
  EXPECT_EQ(config->greylist.exempt.size(), 4u);  // lists/trusted_clients
}

}  // namespace
}  // namespace mxgate::policy

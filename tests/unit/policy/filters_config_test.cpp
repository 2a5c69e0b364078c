// The keys of the pipeline and postscreen-style filters: limits.filter_timeout, the dns
// list probes, early_talker, helo_checks, dns.reverse_lookup and rdns_checks; their
// defaults and their file:line errors.
#include <gtest/gtest.h>

#include "policy/loader.hpp"

namespace mxgate::policy {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> errors_of(const std::string& yaml) {
  std::vector<std::string> lines;
  for (const ConfigError& error : load_config_text(yaml, "test.yaml").errors)
    lines.push_back(error.to_string());
  return lines;
}

std::shared_ptr<const Config> load_ok(const std::string& yaml) {
  LoadResult result = load_config_text(yaml, "test.yaml");
  EXPECT_TRUE(result.ok()) << ::testing::PrintToString(errors_of(yaml));
  return result.config;
}

bool has_error(const std::string& yaml, const std::string& fragment) {
  for (const auto& line : errors_of(yaml))
    if (line.find(fragment) != std::string::npos) return true;
  ADD_FAILURE() << "no error containing '" << fragment
                << "': " << ::testing::PrintToString(errors_of(yaml));
  return false;
}

TEST(FiltersConfig, Defaults) {
  auto config = load_ok("hostname: mx.test\n");
  ASSERT_TRUE(config);
  EXPECT_EQ(config->limits.filter_timeout, 5s);
  EXPECT_TRUE(config->dns.probe);
  EXPECT_EQ(config->dns.probe_interval, 10min);
  EXPECT_EQ(config->early_talker.greet_pause, 0s);  // off
  EXPECT_EQ(config->helo_checks.invalid, 0);        // off
  EXPECT_TRUE(config->dns.reverse_lookup);
  EXPECT_FALSE(config->rdns_checks.enabled());     // off
  EXPECT_EQ(config->rdns_checks.dynamic_patterns.size(), 2u);
}

TEST(FiltersConfig, ReverseDnsChecks) {
  auto config = load_ok(R"(hostname: mx.test
dns: { reverse_lookup: true }
rdns_checks:
  missing: 3
  unverified: 1.5
  dynamic: 2
  dynamic_patterns: ['(^|[.-])dsl\d', 'pool']
)");
  ASSERT_TRUE(config);
  EXPECT_EQ(config->rdns_checks.missing, 3);
  EXPECT_EQ(config->rdns_checks.unverified, 1.5);
  EXPECT_EQ(config->rdns_checks.dynamic, 2);
  EXPECT_EQ(config->rdns_checks.dynamic_patterns,
            (std::vector<std::string>{"(^|[.-])dsl\\d", "pool"}));
  EXPECT_TRUE(config->rdns_checks.enabled());
  auto off = load_ok("dns: { reverse_lookup: false }\n");
  ASSERT_TRUE(off);
  EXPECT_FALSE(off->dns.reverse_lookup);
  // An empty list keeps only the built-in check (the address inside the name).
  auto empty = load_ok("rdns_checks: { dynamic: 1, dynamic_patterns: [] }\n");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->rdns_checks.dynamic_patterns.empty());
}

TEST(FiltersConfig, ReverseDnsErrors) {
  EXPECT_EQ(errors_of("dns: { reverse_lookup: sometimes }\n"),
            std::vector<std::string>{
                "test.yaml:1:24: dns.reverse_lookup: expected true or false, got 'sometimes'"});
  EXPECT_EQ(errors_of("rdns_checks:\n  dynamic: 1\n  dynamic_patterns: ['ok', 'dsl(']\n"),
            std::vector<std::string>{
                "test.yaml:3:28: rdns_checks.dynamic_patterns[1]: invalid regular expression "
                "'dsl(': missing ): dsl("});
  // An empty pattern would call every name dynamic.
  EXPECT_TRUE(has_error("rdns_checks: { dynamic: 1, dynamic_patterns: [''] }\n",
                        "rdns_checks.dynamic_patterns[0]: expected a value"));
  EXPECT_TRUE(has_error("rdns_checks: { mising: 1 }\n", "unknown key 'mising'"));
  EXPECT_TRUE(has_error("rdns_checks: { unverified: lots }\n", "rdns_checks.unverified"));
  // The checks judge the lookup's answer: on without it, they would never fire.
  EXPECT_EQ(errors_of("dns: { reverse_lookup: false }\nrdns_checks: { missing: 2 }\n"),
            std::vector<std::string>{"test.yaml:2:14: rdns_checks: needs dns.reverse_lookup: "
                                     "true (the checks judge its answer)"});
}

TEST(FiltersConfig, AllKeys) {
  auto config = load_ok(R"(hostname: mx.test
limits: { filter_timeout: 750ms }
dns: { probe: false, probe_interval: 30m }
early_talker: { greet_pause: 2s, action: drop }
helo_checks:
  missing: 1
  bare_ip: 2
  invalid: 3
  not_fqdn: 0.5
  our_hostname: 5
  our_address: 5
  our_names: [Mail.Example.ORG.]
  our_addresses: [192.0.2.25, "2001:db8::25"]
)");
  ASSERT_TRUE(config);
  EXPECT_EQ(config->limits.filter_timeout, 750ms);
  EXPECT_FALSE(config->dns.probe);
  EXPECT_EQ(config->dns.probe_interval, 30min);
  EXPECT_EQ(config->early_talker.greet_pause, 2s);
  EXPECT_EQ(config->early_talker.action, RuleAction::drop);
  EXPECT_EQ(config->helo_checks.missing, 1);
  EXPECT_EQ(config->helo_checks.bare_ip, 2);
  EXPECT_EQ(config->helo_checks.invalid, 3);
  EXPECT_EQ(config->helo_checks.not_fqdn, 0.5);
  EXPECT_EQ(config->helo_checks.our_hostname, 5);
  EXPECT_EQ(config->helo_checks.our_address, 5);
  EXPECT_EQ(config->helo_checks.our_names, std::vector<std::string>{"mail.example.org"});
  EXPECT_EQ(config->helo_checks.our_addresses,
            (std::vector<std::string>{"192.0.2.25", "2001:db8::25"}));
}

TEST(FiltersConfig, EarlyTalkerScore) {
  auto config =
      load_ok("hostname: mx.test\nearly_talker: { greet_pause: 1s, action: score, score: 4 }\n");
  ASSERT_TRUE(config);
  EXPECT_EQ(config->early_talker.action, RuleAction::score);
  EXPECT_EQ(config->early_talker.score, 4);
}

TEST(FiltersConfig, Errors) {
  EXPECT_TRUE(has_error("limits: { filter_timeout: 0s }\n", "limits.filter_timeout"));
  EXPECT_TRUE(has_error("dns: { probe_interval: 1s }\n", "dns.probe_interval"));
  EXPECT_TRUE(has_error("early_talker: { greet_pause: 2x }\n", "early_talker.greet_pause"));
  EXPECT_TRUE(has_error("early_talker: { greet_pause: 1m }\n", "early_talker.greet_pause"));
  // Accepting a client for talking first makes no sense; postscreen has no such action.
  EXPECT_TRUE(
      has_error("early_talker: { greet_pause: 1s, action: accept }\n", "early_talker.action"));
  EXPECT_TRUE(has_error("early_talker: { greet_pause: 1s, action: score }\n", "score"));
  EXPECT_TRUE(has_error("early_talker: { greet_pase: 1s }\n", "greet_pase"));
  EXPECT_TRUE(has_error("helo_checks: { invalid: lots }\n", "helo_checks.invalid"));
  EXPECT_TRUE(
      has_error("helo_checks: { our_addresses: [mx.example.org] }\n", "helo_checks.our_addresses"));
  EXPECT_TRUE(has_error("helo_checks: { our_names: [\"bad name\"] }\n", "helo_checks.our_names"));
  EXPECT_TRUE(has_error("helo_checks: { bare_ip: 2, unknown_check: 1 }\n", "unknown_check"));
}

}  // namespace
}  // namespace mxgate::policy

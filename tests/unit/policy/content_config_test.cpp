// The content scanning keys of the policy: content_limits (line window, RE2 memory, URL
// lookups) and uribl lists, their defaults and their file:line errors.
#include <gtest/gtest.h>

#include "policy/loader.hpp"

namespace mxgate::policy {
namespace {

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

TEST(ContentConfig, Defaults) {
  auto config = load_ok("hostname: mx.test\n");
  ASSERT_TRUE(config);
  EXPECT_EQ(config->content_limits.max_line_scan, 4096u);
  EXPECT_EQ(config->content_limits.re2_max_mem, 64u << 20);
  EXPECT_EQ(config->content_limits.max_url_lookups, 20u);
  EXPECT_TRUE(config->uribl.empty());
}

TEST(ContentConfig, LimitsAreRead) {
  auto config = load_ok(
      "content_limits: { max_line_scan: 8KiB, re2_max_mem: 256MiB, max_url_lookups: 50 }\n");
  ASSERT_TRUE(config);
  EXPECT_EQ(config->content_limits.max_line_scan, 8192u);
  EXPECT_EQ(config->content_limits.re2_max_mem, 256u << 20);
  EXPECT_EQ(config->content_limits.max_url_lookups, 50u);
}

TEST(ContentConfig, LimitsOutOfRangeAreErrorsWithLines) {
  const auto errors = errors_of(
      "hostname: mx.test\n"
      "content_limits:\n"
      "  max_line_scan: 10\n"
      "  re2_max_mem: 1KiB\n"
      "  max_url_lookups: 100000\n"
      "  max_lines: 3\n");
  ASSERT_EQ(errors.size(), 4u) << ::testing::PrintToString(errors);
  EXPECT_EQ(errors[0].rfind("test.yaml:3:", 0), 0u) << errors[0];
  EXPECT_NE(errors[0].find("content_limits.max_line_scan"), std::string::npos);
  EXPECT_EQ(errors[1].rfind("test.yaml:4:", 0), 0u) << errors[1];
  EXPECT_EQ(errors[2].rfind("test.yaml:5:", 0), 0u) << errors[2];
  EXPECT_EQ(errors[3].rfind("test.yaml:6:", 0), 0u) << errors[3];
  EXPECT_NE(errors[3].find("unknown key 'max_lines'"), std::string::npos);
}

TEST(ContentConfig, UriblListsAreDnsListRules) {
  auto config = load_ok(
      "uribl:\n"
      "  - { zone: dbl.spamhaus.org, match: \"127.0.1.[2..99]\", weight: 6 }\n"
      "  - { name: surbl, zone: multi.surbl.org, match: \"127.0.0.[2..255]\", action: reject }\n");
  ASSERT_TRUE(config);
  ASSERT_EQ(config->uribl.size(), 2u);
  EXPECT_EQ(config->uribl[0].zone, "dbl.spamhaus.org");
  EXPECT_EQ(config->uribl[0].weight, 6);
  EXPECT_EQ(config->uribl[1].name, "surbl");
  EXPECT_EQ(config->uribl[1].action, RuleAction::reject);
}

TEST(ContentConfig, UriblErrorsPointAtTheLine) {
  const auto errors = errors_of(
      "uribl:\n"
      "  - { zone: dbl.spamhaus.org, match: \"127.0.1.[2..300]\", weight: 6 }\n");
  ASSERT_EQ(errors.size(), 1u) << ::testing::PrintToString(errors);
  EXPECT_EQ(errors[0].rfind("test.yaml:2:", 0), 0u) << errors[0];
  EXPECT_NE(errors[0].find("uribl[0].match"), std::string::npos) << errors[0];
}

}  // namespace
}  // namespace mxgate::policy

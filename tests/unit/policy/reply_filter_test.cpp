// DNS-list reply filters in postscreen syntax: which A records match, and the exact
// complaint for each malformed filter.
#include "policy/reply_filter.hpp"

#include <gtest/gtest.h>

namespace mxgate::policy {
namespace {

ReplyFilter parse(std::string_view text) {
  std::string error;
  std::optional<ReplyFilter> filter = parse_reply_filter(text, error);
  EXPECT_TRUE(filter.has_value()) << text << ": " << error;
  return filter.value_or(ReplyFilter{});
}

TEST(ReplyFilter, SingleAddress) {
  const ReplyFilter filter = parse("127.0.0.4");
  EXPECT_TRUE(filter.matches({127, 0, 0, 4}));
  EXPECT_FALSE(filter.matches({127, 0, 0, 5}));
  EXPECT_FALSE(filter.matches({128, 0, 0, 4}));
}

TEST(ReplyFilter, Range) {
  const ReplyFilter filter = parse("127.0.0.[2..11]");
  EXPECT_FALSE(filter.matches({127, 0, 0, 1}));
  EXPECT_TRUE(filter.matches({127, 0, 0, 2}));
  EXPECT_TRUE(filter.matches({127, 0, 0, 11}));
  EXPECT_FALSE(filter.matches({127, 0, 0, 12}));
  EXPECT_EQ(filter.octets[3], (std::vector<OctetRange>{{2, 11}}));
}

TEST(ReplyFilter, ListAndMixedItems) {
  const ReplyFilter list = parse("127.0.0.[1;3;5]");
  EXPECT_TRUE(list.matches({127, 0, 0, 3}));
  EXPECT_FALSE(list.matches({127, 0, 0, 4}));
  const ReplyFilter mixed = parse("127.0.[0..255].[1..3;7]");
  EXPECT_TRUE(mixed.matches({127, 0, 200, 2}));
  EXPECT_TRUE(mixed.matches({127, 0, 9, 7}));
  EXPECT_FALSE(mixed.matches({127, 0, 9, 6}));
}

TEST(ReplyFilter, CidrIsPerOctet) {
  const ReplyFilter any_loopback = parse("127.0.0.0/8");
  EXPECT_TRUE(any_loopback.matches({127, 255, 3, 9}));
  EXPECT_FALSE(any_loopback.matches({126, 0, 0, 2}));
  const ReplyFilter partial = parse("127.0.0.0/29");
  EXPECT_TRUE(partial.matches({127, 0, 0, 7}));
  EXPECT_FALSE(partial.matches({127, 0, 0, 8}));
  EXPECT_EQ(partial.octets[3], (std::vector<OctetRange>{{0, 7}}));
}

TEST(ReplyFilter, DefaultMatchOfDnsblRuleIsValid) {
  std::string error;
  EXPECT_TRUE(valid_reply_filter("127.0.0.0/8", error)) << error;
}

TEST(ReplyFilter, ExplainsErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"127.0.0", "expected 4 octets, got 3 (e.g. 127.0.0.[2..11])"},
      {"127.0.0.1.2", "more than 4 octets (expected e.g. 127.0.0.[2..11])"},
      {"127.0.0.256", "octet 4: 256 is out of range 0..255"},
      {"127.0.0.[2..", "octet 4: '[2..': missing ']'"},
      {"127.0.0.[11..2]", "octet 4: empty range 11..2"},
      {"127.0.0.[1;;3]", "octet 4: '' is not a number"},
      {"127.0.x.1", "octet 3: 'x' is not a number"},
      {"127.0..1", "octet 3: empty"},
      {"127.0.0.1;2", "octet 4: '1;2': a list or range needs brackets, e.g. [2..11]"},
      {"127.0.0.1/33", "'127.0.0.1/33': prefix length '33' is not in 0..32"},
      {"::1/128", "DNS-list replies are IPv4 addresses; '::1/128' is IPv6"},
      {"", "octet 1: empty"},
  };
  for (const auto& [text, expected] : cases) {
    std::string error;
    EXPECT_FALSE(valid_reply_filter(text, error)) << text;
    EXPECT_EQ(error, expected) << text;
  }
}

}  // namespace
}  // namespace mxgate::policy

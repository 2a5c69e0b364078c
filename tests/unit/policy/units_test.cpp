// Value syntaxes admins write (durations, sizes, rates, endpoints), names and CIDRs:
// exact values for good input, nothing (or the exact complaint) for bad input.
#include "policy/units.hpp"

#include <gtest/gtest.h>

#include "policy/cidr.hpp"
#include "policy/names.hpp"

namespace mxgate::policy {
namespace {

using namespace std::chrono_literals;

TEST(ParseDuration, AcceptsUnitsAndCombinations) {
  EXPECT_EQ(parse_duration("250ms"), Duration(250));
  EXPECT_EQ(parse_duration("30s"), Duration(30s));
  EXPECT_EQ(parse_duration("5m"), Duration(5min));
  EXPECT_EQ(parse_duration("5min"), Duration(5min));
  EXPECT_EQ(parse_duration("2h"), Duration(2h));
  EXPECT_EQ(parse_duration("1d"), Duration(24h));
  EXPECT_EQ(parse_duration("1m30s"), Duration(90s));
  EXPECT_EQ(parse_duration("1h30m15s500ms"), Duration(5415500));
  EXPECT_EQ(parse_duration("1.5s"), Duration(1500));
  EXPECT_EQ(parse_duration("0"), Duration(0));
}

TEST(ParseDuration, BareNumberIsSeconds) { EXPECT_EQ(parse_duration("45"), Duration(45s)); }

TEST(ParseDuration, RejectsMalformed) {
  for (const char* text : {"", "s", "5x", "-5s", "1m30", "5 s", "1.s", "5sec", "99999999999d"}) {
    EXPECT_EQ(parse_duration(text), std::nullopt) << text;
  }
}

TEST(ParseSize, AcceptsBinaryUnits) {
  EXPECT_EQ(parse_size("512"), 512u);
  EXPECT_EQ(parse_size("512B"), 512u);
  EXPECT_EQ(parse_size("64KiB"), 64u * 1024);
  EXPECT_EQ(parse_size("25MiB"), 25u * 1024 * 1024);
  EXPECT_EQ(parse_size("1GiB"), 1024u * 1024 * 1024);
  EXPECT_EQ(parse_size("1.5KiB"), 1536u);
  EXPECT_EQ(parse_size("25 MiB"), 25u * 1024 * 1024);
}

TEST(ParseSize, MegabytesMeanMebibytes) {
  EXPECT_EQ(parse_size("25MB"), parse_size("25MiB"));
  EXPECT_EQ(parse_size("10kb"), 10u * 1024);
  EXPECT_EQ(parse_size("2G"), 2ull * 1024 * 1024 * 1024);
}

TEST(ParseSize, RejectsMalformed) {
  for (const char* text : {"", "MiB", "25 parsecs", "-1", "25MiBs", "1e3", "9999999TiB"}) {
    EXPECT_EQ(parse_size(text), std::nullopt) << text;
  }
}

TEST(ParseRate, ConvertsToEventsPerSecond) {
  EXPECT_DOUBLE_EQ(*parse_rate("60/min"), 1.0);
  EXPECT_DOUBLE_EQ(*parse_rate("10/s"), 10.0);
  EXPECT_DOUBLE_EQ(*parse_rate("100/h"), 100.0 / 3600);
  EXPECT_DOUBLE_EQ(*parse_rate("5000/day"), 5000.0 / 86400);
  EXPECT_DOUBLE_EQ(*parse_rate("2/5min"), 2.0 / 300);
  EXPECT_DOUBLE_EQ(*parse_rate("10/30s"), 10.0 / 30);
  EXPECT_DOUBLE_EQ(*parse_rate("5000/1day"), 5000.0 / 86400);
  EXPECT_DOUBLE_EQ(*parse_rate("0/min"), 0.0);  // parsed; the loader refuses it
}

TEST(ParseRate, RejectsMalformed) {
  for (const char* text : {"", "60", "60/", "/min", "60/fortnight", "60/0s", "-1/s", "10/5"}) {
    EXPECT_EQ(parse_rate(text), std::nullopt) << text;
  }
}

TEST(ParseEndpoint, HostsAndPorts) {
  EXPECT_EQ(parse_endpoint("127.0.0.1:25")->to_string(), "127.0.0.1:25");
  EXPECT_EQ(parse_endpoint("[::1]:2525")->host, "::1");
  EXPECT_EQ(parse_endpoint("[::1]:2525")->to_string(), "[::1]:2525");
  EXPECT_EQ(parse_endpoint("MX.Example.ORG:25")->host, "mx.example.org");
  EXPECT_EQ(parse_endpoint("localhost", 6379)->to_string(), "localhost:6379");
  EXPECT_EQ(parse_endpoint("[2001:db8::1]", 53)->to_string(), "[2001:db8::1]:53");
  EXPECT_EQ(parse_endpoint("0.0.0.0:0")->port, 0);
}

TEST(ParseEndpoint, ExplainsErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"127.0.0.1", "'127.0.0.1': missing port (write host:port)"},
      {"127.0.0.1:99999", "'127.0.0.1:99999': invalid port '99999' (expected 0..65535)"},
      {"127.0.0.1:", "'127.0.0.1:': invalid port '' (expected 0..65535)"},
      {"::1", "'::1': write IPv6 addresses in brackets, e.g. [::1]:25"},
      {"[::1:25", "'[::1:25': missing ']' after the IPv6 address"},
      {"[127.0.0.1]:25", "'[127.0.0.1]:25': '127.0.0.1' is not an IPv6 address"},
      {"[::1]25", "'[::1]25': expected ':port' after ']'"},
      {"300.0.0.1:25", "'300.0.0.1:25': '300.0.0.1' is not an IPv4 address"},
      {":25", "':25': missing host (write 0.0.0.0:port to listen on all IPv4 addresses)"},
      {"mx_1 .example:25",
       "'mx_1 .example:25': 'mx_1 .example' is not a valid domain name: invalid character ' '"},
      {"", "empty endpoint (write host:port)"},
  };
  for (const auto& [text, expected] : cases) {
    std::string error;
    EXPECT_EQ(parse_endpoint(text, std::nullopt, error), std::nullopt) << text;
    EXPECT_EQ(error, expected) << text;
  }
}

TEST(Format, DurationsAndSizes) {
  EXPECT_EQ(format_duration(Duration(0)), "0s");
  EXPECT_EQ(format_duration(Duration(250)), "250ms");
  EXPECT_EQ(format_duration(Duration(90s)), "1m30s");
  EXPECT_EQ(format_duration(Duration(26h)), "1d2h");
  EXPECT_EQ(format_duration(Duration(1500)), "1s500ms");
  EXPECT_EQ(format_size(512), "512B");
  EXPECT_EQ(format_size(25ull * 1024 * 1024), "25MiB");
  EXPECT_EQ(format_size(1536), "1536B");
  EXPECT_EQ(format_size(1024ull * 1024 * 1024), "1GiB");
}

TEST(Format, RoundTripsThroughParse) {
  for (const char* text : {"250ms", "1m30s", "2h", "1d", "5m"}) {
    EXPECT_EQ(format_duration(*parse_duration(text)), text);
  }
  for (const char* text : {"512B", "64KiB", "25MiB", "1GiB"}) {
    EXPECT_EQ(format_size(*parse_size(text)), text);
  }
}

TEST(NormalizeDomain, LowerCasesAndStripsTrailingDot) {
  std::string domain = "Example.ORG.";
  std::string error;
  ASSERT_TRUE(normalize_domain(domain, error)) << error;
  EXPECT_EQ(domain, "example.org");
}

TEST(NormalizeDomain, ExplainsErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"exa mple.org", "'exa mple.org' is not a valid domain name: invalid character ' '"},
      {"a..org", "'a..org' is not a valid domain name: empty label"},
      {".org", "'.org' is not a valid domain name: empty label"},
      {"-a.org", "'-a.org' is not a valid domain name: label starts or ends with '-'"},
      {"192.0.2.1",
       "'192.0.2.1' is not a valid domain name: numeric top-level label (an IP address is not a "
       "domain)"},
      {"bücher.example",
       "'bücher.example' is not a valid domain name: non-ASCII; write internationalised names in "
       "their xn-- form"},
      {std::string(64, 'a') + ".org", "'" + std::string(64, 'a') +
                                          ".org' is not a valid domain name: label longer than 63 "
                                          "characters"},
      {"", "'' is not a valid domain name: empty"},
      {"tab\there.org", "'tab\there.org' is not a valid domain name: invalid character \\x09"},
  };
  for (const auto& [text, expected] : cases) {
    std::string domain = text;
    std::string error;
    EXPECT_FALSE(normalize_domain(domain, error)) << text;
    EXPECT_EQ(error, expected);
  }
}

TEST(NormalizeAddress, KeepsLocalPartCaseAndLowersDomain) {
  std::string address = "John.Doe@Example.ORG";
  std::string error;
  ASSERT_TRUE(normalize_address(address, error)) << error;
  EXPECT_EQ(address, "John.Doe@example.org");
  std::string null_sender = "<>";
  EXPECT_TRUE(normalize_address(null_sender, error));
  std::string bad = "nobody";
  EXPECT_FALSE(normalize_address(bad, error));
  EXPECT_EQ(error, "'nobody' is not a mail address (expected local@domain)");
}

TEST(RuleName, AllowsLogFriendlyCharactersOnly) {
  std::string error;
  EXPECT_TRUE(valid_rule_name("conn-per-ip_2:a.b", error));
  EXPECT_FALSE(valid_rule_name("two words", error));
  EXPECT_EQ(error,
            "rule name 'two words' has invalid character ' ' (use letters, digits, '.', '_', ':', "
            "'-')");
}

TEST(NearestWord, SuggestsOnlyCloseCandidates) {
  const std::vector<std::string> keys{"max_recipients", "max_errors", "log", "limits"};
  EXPECT_EQ(nearest_word("max_recipient", keys), "max_recipients");
  EXPECT_EQ(nearest_word("limtis", keys), "limits");  // a transposition is one edit
  EXPECT_EQ(nearest_word("foo", keys), std::nullopt);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
}

TEST(Cidr, ParsesAndCanonicalises) {
  std::string error;
  EXPECT_EQ(parse_cidr("192.0.2.0/24", error)->to_string(), "192.0.2.0/24");
  EXPECT_EQ(parse_cidr("2001:DB8:0::/32", error)->to_string(), "2001:db8::/32");
  EXPECT_EQ(parse_cidr("10.1.2.3", error)->to_string(), "10.1.2.3");
  EXPECT_EQ(parse_cidr("::ffff:192.0.2.1", error)->to_string(), "192.0.2.1");
  EXPECT_EQ(parse_cidr("::ffff:10.0.0.0/104", error)->to_string(), "10.0.0.0/8");
  EXPECT_EQ(parse_cidr("0.0.0.0/0", error)->to_string(), "0.0.0.0/0");
}

TEST(Cidr, ExplainsErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"10.0.0.1/8", "'10.0.0.1/8' has host bits set beyond /8 (did you mean 10.0.0.0/8?)"},
      {"2001:db8::1/32",
       "'2001:db8::1/32' has host bits set beyond /32 (did you mean 2001:db8::/32?)"},
      {"10.0.0.300", "'10.0.0.300' is not an IP address or network"},
      {"10.0.0.0/33", "'10.0.0.0/33': prefix length '33' is not in 0..32"},
      {"::1/129", "'::1/129': prefix length '129' is not in 0..128"},
      {"10.0.0.0/", "'10.0.0.0/': prefix length '' is not in 0..32"},
      {"fe80::1%eth0", "'fe80::1%eth0' is not an IPv6 address or network"},
      {"example.org", "'example.org' is not an IP address or network"},
  };
  for (const auto& [text, expected] : cases) {
    std::string error;
    EXPECT_EQ(parse_cidr(text, error), std::nullopt) << text;
    EXPECT_EQ(error, expected);
  }
}

TEST(Cidr, Contains) {
  std::string error;
  const Cidr network = *parse_cidr("192.0.2.0/25", error);
  EXPECT_TRUE(network.contains(*parse_cidr("192.0.2.127", error)));
  EXPECT_FALSE(network.contains(*parse_cidr("192.0.2.128", error)));
  EXPECT_TRUE(network.contains(*parse_cidr("::ffff:192.0.2.1", error)));
  EXPECT_FALSE(network.contains(*parse_cidr("192.0.2.0/24", error)));  // wider than the network
  const Cidr v6 = *parse_cidr("2001:db8::/32", error);
  EXPECT_TRUE(v6.contains(*parse_cidr("2001:db8:ffff::1", error)));
  EXPECT_FALSE(v6.contains(*parse_cidr("2001:db9::1", error)));
  EXPECT_FALSE(v6.contains(*parse_cidr("192.0.2.1", error)));
  EXPECT_TRUE(parse_cidr("0.0.0.0/0", error)->contains(*parse_cidr("203.0.113.9", error)));
}

}  // namespace
}  // namespace mxgate::policy

// Tests for the relay gate (invariant 3: no open relay), on addresses as the RCPT
// parser produces them, so that every odd form is checked end to end.
#include "filters/relay.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mxgate::filters {
namespace {

RelayPolicy example_policy() {
  RelayPolicy policy;
  policy.relay_domains = {"example.org", "example.net"};
  return policy;
}

// Parses "TO:<...>" and runs the relay check; fails the test if the parse fails.
RelayDecision check(const std::string& recipient, const RelayPolicy& policy = example_policy()) {
  const smtp::PathResult parsed = smtp::parse_rcpt_to("TO:<" + recipient + ">", {});
  EXPECT_TRUE(parsed.ok) << recipient << ": " << parsed.error.render();
  return check_relay(parsed.address, policy);
}

void expect_refused(const std::string& recipient, const std::string& reason,
                    const RelayPolicy& policy = example_policy()) {
  const RelayDecision decision = check(recipient, policy);
  EXPECT_FALSE(decision.allowed) << recipient;
  EXPECT_EQ(decision.reason, reason) << recipient;
}

TEST(RelayTest, RelayDomainIsAllowed) {
  const RelayDecision decision = check("user@example.org");
  EXPECT_TRUE(decision.allowed);
  EXPECT_EQ(decision.reason, "relay domain");
  EXPECT_TRUE(check("user@example.net").allowed);
}

TEST(RelayTest, CaseDoesNotMatter) {
  EXPECT_TRUE(check("U@EXAMPLE.ORG").allowed);
  EXPECT_TRUE(check("u@Example.Org").allowed);
  RelayPolicy upper;
  upper.relay_domains = {"EXAMPLE.ORG"};
  EXPECT_TRUE(check("u@example.org", upper).allowed);
}

TEST(RelayTest, TrailingDotIsAllowedAndStripped) {
  const smtp::PathResult parsed = smtp::parse_rcpt_to("TO:<u@example.org.>", {});
  ASSERT_TRUE(parsed.ok);
  EXPECT_TRUE(parsed.address.had_trailing_dot);
  EXPECT_EQ(parsed.address.full(), "u@example.org");
  EXPECT_TRUE(check_relay(parsed.address, example_policy()).allowed);
}

TEST(RelayTest, OtherDomainsAreRefused) {
  expect_refused("u@evil.com", "unknown domain");
  expect_refused("u@example.org.evil.com", "unknown domain");
  expect_refused("u@notexample.org", "unknown domain");
  expect_refused("u@org", "unknown domain");
}

TEST(RelayTest, SubdomainRefusedUnlessDotEntry) {
  expect_refused("u@sub.example.org", "unknown domain");
  RelayPolicy policy;
  policy.relay_domains = {".example.org"};
  EXPECT_TRUE(check("u@sub.example.org", policy).allowed);
  EXPECT_TRUE(check("u@a.b.example.org", policy).allowed);
  EXPECT_TRUE(check("u@SUB.Example.ORG.", policy).allowed);
  expect_refused("u@example.org", "unknown domain", policy);
  expect_refused("u@badexample.org", "unknown domain", policy);
}

TEST(RelayTest, SourceRouteIsRefused) {
  expect_refused("@a:u@example.org", "source route");
  expect_refused("@example.org:u@example.org", "source route");
  expect_refused("@a,@b:u@example.org", "source route");
}

TEST(RelayTest, PercentHackIsRefused) {
  expect_refused("u%evil.com@example.org", "percent hack");
  expect_refused("\"u%evil.com\"@example.org", "percent hack");
}

TEST(RelayTest, BangPathIsRefused) {
  expect_refused("evil.com!u@example.org", "bang path");
  expect_refused("\"evil.com!u\"@example.org", "bang path");
}

TEST(RelayTest, QuotedLocalPartWithAtIsRefused) {
  expect_refused("\"u@evil.com\"@example.org", "quoted local part with @");
  expect_refused("\"@evil.com:u\"@example.org", "quoted local part with @");
  // A quoted local part without routing characters is just a mailbox name.
  EXPECT_TRUE(check("\"john doe\"@example.org").allowed);
}

TEST(RelayTest, AddressLiteralsAreRefusedByDefault) {
  expect_refused("u@[192.0.2.1]", "address literal");
  expect_refused("u@[IPv6:2001:db8::1]", "address literal");
  RelayPolicy listed = example_policy();
  listed.relay_domains.push_back("[192.0.2.1]");
  // Listed but not allowed: still refused.
  expect_refused("u@[192.0.2.1]", "address literal", listed);
}

TEST(RelayTest, AddressLiteralAllowedOnlyWhenListedAndEnabled) {
  RelayPolicy policy = example_policy();
  policy.allow_address_literals = true;
  expect_refused("u@[192.0.2.1]", "address literal", policy);  // not listed
  policy.relay_domains.push_back("[192.0.2.1]");
  policy.relay_domains.push_back("[ipv6:2001:db8::1]");
  EXPECT_TRUE(check("u@[192.0.2.1]", policy).allowed);
  EXPECT_TRUE(check("u@[IPv6:2001:DB8::1]", policy).allowed);
  expect_refused("u@[192.0.2.2]", "address literal", policy);
  // Verbatim only: another spelling of the same address is not listed.
  expect_refused("u@[IPv6:2001:db8:0::1]", "address literal", policy);
  // A literal never matches through a domain entry, nor a domain through a literal.
  expect_refused("u@192.0.2.1", "unknown domain", policy);
}

TEST(RelayTest, NullRecipientIsRefused) {
  smtp::Address null_path;
  null_path.null_path = true;
  const RelayDecision decision = check_relay(null_path, example_policy());
  EXPECT_FALSE(decision.allowed);
  EXPECT_EQ(decision.reason, "null recipient");
}

TEST(RelayTest, EmptyDomainIsRefused) {
  expect_refused("postmaster", "empty domain");  // RFC 5321 <Postmaster> form
  smtp::Address address;
  address.local_part = "u";
  EXPECT_EQ(check_relay(address, example_policy()).reason, "empty domain");
}

TEST(RelayTest, BadDomainCharactersAreRefused) {
  // Addresses built by hand, bypassing the parser: the gate does not trust it.
  for (const char* domain : {"exa_mple.org", "example.org/evil", "example..org", ".example.org",
                             "example.org:25", "ex ample.org", "example.org\r\n"}) {
    smtp::Address address;
    address.local_part = "u";
    address.domain = domain;
    const RelayDecision decision = check_relay(address, example_policy());
    EXPECT_FALSE(decision.allowed) << domain;
    EXPECT_EQ(decision.reason, "bad domain") << domain;
  }
}

TEST(RelayTest, HandBuiltAddressesAreCheckedToo) {
  smtp::Address address;
  address.local_part = "u";
  address.domain = "example.org.";  // trailing dot not stripped by a parser
  EXPECT_TRUE(check_relay(address, example_policy()).allowed);
  address.domain = "[192.0.2.1]";  // literal without the flag
  EXPECT_EQ(check_relay(address, example_policy()).reason, "address literal");
  address.domain = "example.org";
  address.source_route = "@evil.com";  // route without the flag
  EXPECT_EQ(check_relay(address, example_policy()).reason, "source route");
}

TEST(RelayTest, Utf8DomainsMatchBytewise) {
  RelayPolicy policy;
  policy.relay_domains = {
      "b\xc3\xbc"
      "cher.example"};
  EXPECT_TRUE(check("u@b\xc3\xbc"
                    "cher.example",
                    policy)
                  .allowed);
  EXPECT_TRUE(check("u@B\xc3\xbc"
                    "CHER.example",
                    policy)
                  .allowed);
  expect_refused("u@bucher.example", "unknown domain", policy);
}

TEST(RelayTest, EmptyRelayDomainsRefuseEverything) {
  expect_refused("u@example.org", "unknown domain", RelayPolicy{});
}

}  // namespace
}  // namespace mxgate::filters

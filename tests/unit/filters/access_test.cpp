// Access lists: IPv4/IPv6 networks, HELO names, senders, sender domains (with Postfix's
// subdomain rule), recipients; accept, reject or score; first decisive match wins.
#include "filters/access.hpp"

#include <gtest/gtest.h>

namespace mxgate::filters {
namespace {

using Kind = policy::AccessRule::Kind;

policy::AccessRule rule(std::string name, Kind kind, std::vector<std::string> values,
                        policy::RuleAction action, double score = 0) {
  policy::AccessRule access;
  access.name = std::move(name);
  access.kind = kind;
  access.values = std::move(values);
  access.action = action;
  access.score = score;
  return access;
}

SessionContext client(std::string ip) {
  SessionContext context;
  context.client_ip = std::move(ip);
  return context;
}

TEST(AccessFilter, ClientNetworksIpv4AndIpv6) {
  AccessFilter filter({rule("office", Kind::client_ip, {"192.0.2.0/24", "2001:db8:1::/48"},
                            policy::RuleAction::accept),
                       rule("bad", Kind::client_ip, {"198.51.100.7"}, policy::RuleAction::reject)});
  EXPECT_EQ(filter.evaluate(Stage::connect, client("192.0.2.200")).kind, Verdict::Kind::accept);
  EXPECT_EQ(filter.evaluate(Stage::connect, client("192.0.3.1")).kind, Verdict::Kind::next);
  EXPECT_EQ(filter.evaluate(Stage::connect, client("2001:db8:1:ffff::1")).kind,
            Verdict::Kind::accept);
  EXPECT_EQ(filter.evaluate(Stage::connect, client("2001:db8:2::1")).kind, Verdict::Kind::next);
  EXPECT_EQ(filter.evaluate(Stage::connect, client("::ffff:192.0.2.9")).kind,
            Verdict::Kind::accept);
  Verdict denied = filter.evaluate(Stage::connect, client("198.51.100.7"));
  EXPECT_EQ(denied.kind, Verdict::Kind::reject);
  EXPECT_EQ(denied.filter, "access");
  EXPECT_EQ(denied.rule, "bad");
  EXPECT_EQ(denied.reply.render(),
            "554 5.7.1 <unknown[198.51.100.7]>: Client host rejected: Access denied\r\n");
  EXPECT_FALSE(filter.wants(Stage::rcpt));
  EXPECT_TRUE(filter.wants(Stage::connect));
}

TEST(AccessFilter, FirstDecisiveMatchWinsScoresAddUp) {
  AccessFilter filter(
      {rule("suspicious", Kind::client_ip, {"192.0.2.0/24"}, policy::RuleAction::score, 2.5),
       rule("deny", Kind::client_ip, {"192.0.2.1"}, policy::RuleAction::reject),
       rule("allow", Kind::client_ip, {"192.0.2.1"}, policy::RuleAction::accept)});
  Verdict verdict = filter.evaluate(Stage::connect, client("192.0.2.1"));
  EXPECT_EQ(verdict.kind, Verdict::Kind::reject);
  ASSERT_EQ(verdict.contributions.size(), 1u);
  EXPECT_EQ(verdict.contributions[0].score, 2.5);
  EXPECT_EQ(verdict.contributions[0].rule, "suspicious");
}

TEST(AccessFilter, HeloSenderAndRecipient) {
  AccessFilter filter(
      {rule("bad-helo", Kind::helo, {"Friend.Example."}, policy::RuleAction::reject),
       rule("spammer", Kind::sender, {"Boss@Example.COM"}, policy::RuleAction::tempfail),
       rule("partner", Kind::sender_domain, {"partner.example"}, policy::RuleAction::accept),
       rule("abuse", Kind::recipient, {"abuse@example.org"}, policy::RuleAction::accept),
       rule("trap", Kind::recipient_domain, {".trap.example.org"}, policy::RuleAction::score, 7)});
  SessionContext context = client("192.0.2.1");
  context.helo = "friend.example";
  EXPECT_EQ(filter.evaluate(Stage::helo, context).kind, Verdict::Kind::reject);
  context.sender = "boss@example.com";
  Verdict tempfail = filter.evaluate(Stage::mail, context);
  EXPECT_EQ(tempfail.kind, Verdict::Kind::tempfail);
  EXPECT_EQ(tempfail.reply.code, 450);
  context.sender = "someone@mail.partner.example";
  EXPECT_EQ(filter.evaluate(Stage::mail, context).kind, Verdict::Kind::accept);
  context.sender = "someone@notpartner.example";
  EXPECT_EQ(filter.evaluate(Stage::mail, context).kind, Verdict::Kind::next);
  context.recipient = "ABUSE@example.org";
  EXPECT_EQ(filter.evaluate(Stage::rcpt, context).kind, Verdict::Kind::accept);
  context.recipient = "x@a.trap.example.org";
  Verdict trapped = filter.evaluate(Stage::rcpt, context);
  ASSERT_EQ(trapped.contributions.size(), 1u);
  EXPECT_EQ(trapped.contributions[0].score, 7);
  context.recipient = "x@trap.example.org";  // ".domain": subdomains only
  EXPECT_TRUE(filter.evaluate(Stage::rcpt, context).contributions.empty());
}

TEST(DomainMatches, PostfixParentDomainSemantics) {
  EXPECT_TRUE(domain_matches("example.org", "example.org"));
  EXPECT_TRUE(domain_matches("mail.example.org", "example.org"));
  EXPECT_FALSE(domain_matches("badexample.org", "example.org"));
  EXPECT_FALSE(domain_matches("example.org", ".example.org"));
  EXPECT_TRUE(domain_matches("a.example.org", ".example.org"));
  EXPECT_FALSE(domain_matches("", "example.org"));
}

}  // namespace
}  // namespace mxgate::filters

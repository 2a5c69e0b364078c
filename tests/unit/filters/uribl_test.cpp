// Tests for URL domain lists: list keys (public suffixes, IDN) and verdicts, with the
// answers served from the DNS cache (the resolver's own tests cover the wire).
#include "filters/uribl.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include "filters/dns_cache.hpp"

namespace mxgate::filters {
namespace {

std::string key(std::string_view url) {
  return url_list_domain(url, public_suffix_list()).value_or("<none>");
}

TEST(UriblKeys, RegistrableDomainsInALabels) {
  EXPECT_EQ(key("http://www.spam.example.com/x"), "example.com");
  EXPECT_EQ(key("https://a.b.shop.example.co.uk:8443/?q"), "example.co.uk");
  EXPECT_EQ(key("HTTPS://User@Click.Example.COM./path"), "example.com");
  EXPECT_EQ(key("www.bad.example.org/landing"), "example.org");
  EXPECT_EQ(key("https://bücher.example.de/login"), "example.de");
  EXPECT_EQ(key("https://www.bücher.de/login"), "xn--bcher-kva.de");
  EXPECT_EQ(key("https://xn--bcher-kva.de/"), "xn--bcher-kva.de");
  EXPECT_EQ(key("https://B%C3%BCcher.de/"), "xn--bcher-kva.de");
  EXPECT_EQ(key("http://пример.рф/"), "xn--e1afmkfd.xn--p1ai");
  // Hosts on a private suffix (PSL's private section) are registrable on their own.
  EXPECT_EQ(key("https://evil.github.io/x"), "evil.github.io");
}

TEST(UriblKeys, NoKeyForAddressesSuffixesAndJunk) {
  EXPECT_EQ(key("http://192.0.2.1/x"), "<none>");
  EXPECT_EQ(key("http://[2001:db8::1]/x"), "<none>");
  EXPECT_EQ(key("https://co.uk/"), "<none>");
  EXPECT_EQ(key("/relative/link"), "<none>");
  EXPECT_EQ(key("http://exa mple.com/"), "<none>");
  EXPECT_EQ(key("http://localhost/"), "<none>");
}

policy::DnsblRule list(std::string zone, std::string match, double weight,
                       policy::RuleAction action = policy::RuleAction::score) {
  policy::DnsblRule rule;
  rule.zone = std::move(zone);
  rule.match = std::move(match);
  rule.weight = weight;
  rule.action = action;
  return rule;
}

constexpr std::uint32_t address(int a, int b, int c, int d) {
  return (static_cast<std::uint32_t>(a) << 24) | (b << 16) | (c << 8) | d;
}

struct Fixture {
  boost::asio::io_context io;
  std::shared_ptr<DnsCache> cache =
      std::make_shared<DnsCache>(1000, std::chrono::seconds(60), std::chrono::seconds(3600));
  Services services;

  Fixture() {
    services.executor = io.get_executor();
    services.dns_cache = cache;
  }
  void listed(const std::string& qname, std::uint32_t code) {
    cache->put(qname, CachedAnswer{true, {code}, ""}, std::chrono::seconds(300));
  }
  void clean(const std::string& qname) {
    cache->put(qname, CachedAnswer{}, std::chrono::seconds(300));
  }
  Verdict run(const Filter& filter, const std::string& message) {
    auto instance = filter.open(services);
    SessionContext context;
    context.message = &message;
    auto future = boost::asio::co_spawn(io, instance->on_stage(Stage::data, context),
                                        boost::asio::use_future);
    io.run();
    io.restart();
    return future.get();
  }
};

const std::string kMessage =
    "Subject: offer\r\n\r\n"
    "Visit https://www.bad.example.com/buy and http://promo.bad.example.com/x\r\n"
    "or https://fine.example.net/ and https://worse.example.org/.\r\n";

TEST(UriblFilter, ListedDomainsScoreOncePerList) {
  Fixture fixture;
  fixture.listed("example.com.dbl.example", address(127, 0, 1, 2));
  fixture.clean("example.net.dbl.example");
  fixture.listed("example.org.dbl.example", address(127, 0, 1, 4));
  fixture.clean("example.com.multi.surbl.example");
  fixture.clean("example.net.multi.surbl.example");
  fixture.listed("example.org.multi.surbl.example", address(127, 0, 0, 1));  // not matched
  UriblFilter filter({list("dbl.example", "127.0.1.[2..99]", 6),
                      list("multi.surbl.example", "127.0.0.[2..255]", 4)},
                     {});
  const Verdict verdict = fixture.run(filter, kMessage);
  EXPECT_EQ(verdict.kind, Verdict::Kind::next);
  ASSERT_EQ(verdict.contributions.size(), 1u);
  EXPECT_EQ(verdict.contributions[0].filter, "uribl");
  EXPECT_EQ(verdict.contributions[0].rule, "dbl.example");
  EXPECT_EQ(verdict.contributions[0].score, 6);
  EXPECT_EQ(verdict.contributions[0].detail,
            "dbl.example example.com 127.0.1.2, example.org 127.0.1.4");
  EXPECT_EQ(verdict.contributions[0].stage, "data");
}

TEST(UriblFilter, RejectActionAndLookupCap) {
  Fixture fixture;
  fixture.listed("example.com.dbl.example", address(127, 0, 1, 2));
  UriblOptions options;
  options.max_url_lookups = 1;
  UriblFilter filter({list("dbl.example", "127.0.1.[2..99]", 0, policy::RuleAction::reject)},
                     options);
  const Verdict verdict = fixture.run(filter, kMessage);
  EXPECT_EQ(verdict.kind, Verdict::Kind::reject);
  EXPECT_EQ(verdict.rule, "dbl.example");
  EXPECT_EQ(verdict.reply.code, 554);
  EXPECT_EQ(verdict.reply.text(),
            "Message content rejected; message links to example.com, listed by dbl.example");
}

TEST(UriblFilter, FailuresFollowOnError) {
  Fixture fixture;  // no resolver and nothing cached: every lookup fails
  policy::DnsblRule closed = list("dbl.example", "127.0.1.[2..99]", 5);
  closed.on_error = policy::OnError::tempfail;
  UriblFilter filter({closed}, {});
  EXPECT_EQ(filter.on_error(), policy::OnError::tempfail);
  const Verdict verdict = fixture.run(filter, kMessage);
  EXPECT_EQ(verdict.kind, Verdict::Kind::tempfail);
  EXPECT_EQ(verdict.reply.code, 451);

  UriblFilter open_filter({list("dbl.example", "127.0.1.[2..99]", 5)}, {});
  EXPECT_EQ(fixture.run(open_filter, kMessage).kind, Verdict::Kind::next);
}

TEST(UriblFilter, MessagesWithoutUrlsAskNothing) {
  Fixture fixture;
  UriblFilter filter({list("dbl.example", "127.0.1.[2..99]", 5)}, {});
  const Verdict verdict = fixture.run(filter, "Subject: hi\r\n\r\nno links here\r\n");
  EXPECT_EQ(verdict.kind, Verdict::Kind::next);
  EXPECT_TRUE(verdict.contributions.empty());
}

}  // namespace
}  // namespace mxgate::filters

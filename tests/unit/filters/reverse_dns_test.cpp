// The client's name against a real dnsmasq on a loopback port: PTR and AAAA queries,
// forward confirmation (verified, no PTR, unverified, several PTR names, IPv6), the one
// deadline over every lookup (a silent server, a slow forward zone, a closed port), the
// lookup run beside a session, and the rdns_checks scores.
#include "filters/reverse_dns.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "coroutine_support.hpp"
#include "dns_blackhole.hpp"
#include "dnsmasq.hpp"
#include "filters/dns_resolver.hpp"

namespace mxgate::filters {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using testing::run_until_done;

using testing::Blackhole;
using testing::Dnsmasq;
using testing::dnsmasq_path;
using testing::free_udp_port;

// The zone, one loopback address per case: .1 verified; .2 a PTR whose name resolves
// elsewhere; .4 a PTR whose name does not exist; .5 verified, with a pool-like name; .6
// two PTR names, only one confirming; .7 a PTR into slow.test, forwarded to a server
// that never answers; ::1 verified through AAAA.
std::vector<std::string> records(std::uint16_t slow_port) {
  return {
      "--host-record=mx.client.test,127.0.0.1",
      "--ptr-record=2.0.0.127.in-addr.arpa,liar.client.test",
      "--host-record=liar.client.test,192.0.2.99",
      "--ptr-record=4.0.0.127.in-addr.arpa,nowhere.client.test",
      "--host-record=5-0-0-127.pool.client.test,127.0.0.5",
      "--ptr-record=6.0.0.127.in-addr.arpa,wrong.client.test",
      "--ptr-record=6.0.0.127.in-addr.arpa,right.client.test",
      "--host-record=right.client.test,127.0.0.6",
      "--host-record=wrong.client.test,192.0.2.98",
      "--ptr-record=7.0.0.127.in-addr.arpa,host.slow.test",
      "--server=/slow.test/127.0.0.1#" + std::to_string(slow_port),
      "--host-record=mx6.client.test,::1",
      "--host-record=mx6.client.test,2001:db8::6",
  };
}

class ReverseDnsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (dnsmasq_path() == nullptr) return;
    slow_ = new Blackhole();
    server_ = new Dnsmasq(records(slow_->port));
  }
  static void TearDownTestSuite() {
    delete server_;
    delete slow_;
    server_ = nullptr;
    slow_ = nullptr;
  }
  void SetUp() override {
    if (dnsmasq_path() == nullptr) GTEST_SKIP() << "dnsmasq is not installed (dnsmasq-base)";
    ASSERT_TRUE(server_->running()) << "dnsmasq did not start: " << server_->log();
    use_server(server_->port());
  }

  void use_server(std::uint16_t port, std::chrono::milliseconds timeout = 2000ms) {
    resolver = testing::loopback_resolver(io.get_executor(), port, timeout, 1);
  }

  DnsAnswer query(std::string name, bool aaaa = false) {
    auto ask = [](std::shared_ptr<DnsResolver> resolver, std::string name,
                  bool aaaa) -> asio::awaitable<DnsAnswer> {
      if (aaaa) co_return co_await resolver->query_aaaa(name);
      co_return co_await resolver->query_ptr(name);
    };
    return run_until_done(io, ask(resolver, std::move(name), aaaa));
  }

  ReverseDnsResult verify(std::string address, std::chrono::milliseconds timeout = 2000ms) {
    return run_until_done(io, verify_client_name(resolver, std::move(address), timeout));
  }

  static Dnsmasq* server_;
  static Blackhole* slow_;
  asio::io_context io;
  std::shared_ptr<DnsResolver> resolver;
};

Dnsmasq* ReverseDnsTest::server_ = nullptr;
Blackhole* ReverseDnsTest::slow_ = nullptr;

TEST(ReverseLookupName, ReversedOctetsAndNibbles) {
  EXPECT_EQ(reverse_lookup_name("192.0.2.1"), "1.2.0.192.in-addr.arpa");
  EXPECT_EQ(reverse_lookup_name("::ffff:192.0.2.1"), "1.2.0.192.in-addr.arpa");
  EXPECT_EQ(reverse_lookup_name("2001:db8::567:89ab"),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
  EXPECT_EQ(reverse_lookup_name("client.example"), std::nullopt);
  EXPECT_EQ(reverse_lookup_name(""), std::nullopt);
}

TEST_F(ReverseDnsTest, ResolverAnswersPtrAndAaaa) {
  DnsAnswer ptr = query("1.0.0.127.in-addr.arpa");
  ASSERT_EQ(ptr.status, DnsAnswer::Status::ok) << ptr.error;
  EXPECT_EQ(ptr.names, std::vector<std::string>{"mx.client.test"});

  DnsAnswer two = query("6.0.0.127.in-addr.arpa");
  ASSERT_EQ(two.status, DnsAnswer::Status::ok);
  std::vector<std::string> names = two.names;
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"right.client.test", "wrong.client.test"}));

  EXPECT_EQ(query("3.0.0.127.in-addr.arpa").status, DnsAnswer::Status::nxdomain);

  DnsAnswer aaaa = query("mx6.client.test", true);
  ASSERT_EQ(aaaa.status, DnsAnswer::Status::ok) << aaaa.error;
  ASSERT_EQ(aaaa.ipv6_addresses.size(), 2u);
  std::array<std::uint8_t, 16> loopback{};
  loopback[15] = 1;
  EXPECT_NE(std::find(aaaa.ipv6_addresses.begin(), aaaa.ipv6_addresses.end(), loopback),
            aaaa.ipv6_addresses.end());
  EXPECT_TRUE(aaaa.addresses.empty());
  // A name with only an A record has no AAAA: "nodata", not an error.
  EXPECT_EQ(query("mx.client.test", true).status, DnsAnswer::Status::nodata);
}

TEST_F(ReverseDnsTest, ForwardConfirmedNameIsVerified) {
  ReverseDnsResult result = verify("127.0.0.1");
  EXPECT_EQ(result.status, ClientNameStatus::verified) << result.detail;
  EXPECT_EQ(result.name, "mx.client.test");
  EXPECT_EQ(result.ptr, "mx.client.test");
  EXPECT_EQ(result.detail, "");
}

// A verified name can still be a home PC's: rdns_checks' dynamic check reads it.
TEST_F(ReverseDnsTest, VerifiedPoolName) {
  ReverseDnsResult result = verify("127.0.0.5");
  EXPECT_EQ(result.status, ClientNameStatus::verified) << result.detail;
  EXPECT_EQ(result.name, "5-0-0-127.pool.client.test");
}

TEST_F(ReverseDnsTest, NoPtrRecord) {
  ReverseDnsResult result = verify("127.0.0.3");
  EXPECT_EQ(result.status, ClientNameStatus::no_ptr);
  EXPECT_EQ(result.name, "");
  EXPECT_EQ(result.ptr, "");
  EXPECT_EQ(result.detail, "no PTR record (nxdomain)");
}

TEST_F(ReverseDnsTest, PtrNameThatResolvesElsewhereIsUnverified) {
  ReverseDnsResult result = verify("127.0.0.2");
  EXPECT_EQ(result.status, ClientNameStatus::unverified);
  EXPECT_EQ(result.name, "");
  EXPECT_EQ(result.ptr, "liar.client.test");  // kept for the log
  EXPECT_EQ(result.detail, "PTR liar.client.test resolves to 192.0.2.99, not to the client");

  ReverseDnsResult nowhere = verify("127.0.0.4");
  EXPECT_EQ(nowhere.status, ClientNameStatus::unverified);
  EXPECT_EQ(nowhere.ptr, "nowhere.client.test");
  EXPECT_EQ(nowhere.detail, "PTR nowhere.client.test has no A record");
}

TEST_F(ReverseDnsTest, AnyOfSeveralPtrNamesMayConfirm) {
  ReverseDnsResult result = verify("127.0.0.6");
  EXPECT_EQ(result.status, ClientNameStatus::verified) << result.detail;
  EXPECT_EQ(result.name, "right.client.test");
}

TEST_F(ReverseDnsTest, Ipv6ClientIsConfirmedByAaaa) {
  ReverseDnsResult result = verify("::1");
  EXPECT_EQ(result.status, ClientNameStatus::verified) << result.detail;
  EXPECT_EQ(result.name, "mx6.client.test");
  EXPECT_EQ(verify("2001:db8::7").status, ClientNameStatus::no_ptr);
}

TEST_F(ReverseDnsTest, NotAnAddressIsNotLookedUp) {
  const std::uint64_t before = resolver->queries_sent();
  ReverseDnsResult result = verify("unix-socket");
  EXPECT_EQ(result.status, ClientNameStatus::unknown);
  EXPECT_EQ(resolver->queries_sent(), before);
}

// One deadline for all the lookups: a forward zone that never answers costs the
// timeout, not more, and what was learnt (the PTR name) is kept for the log.
TEST_F(ReverseDnsTest, SlowForwardLookupGivesUpAtTheDeadlineKeepingThePtrName) {
  const auto started = std::chrono::steady_clock::now();
  ReverseDnsResult result = verify("127.0.0.7", 400ms);
  const auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(result.status, ClientNameStatus::tempfail);
  EXPECT_EQ(result.ptr, "host.slow.test");
  EXPECT_EQ(result.name, "");
  EXPECT_EQ(result.detail, "no answer within 400ms");
  EXPECT_GE(elapsed, 380ms);
  EXPECT_LT(elapsed, 700ms);
}

TEST_F(ReverseDnsTest, SilentServerGivesUpWithinTheTimeout) {
  Blackhole silent;
  use_server(silent.port, 300ms);
  const auto started = std::chrono::steady_clock::now();
  ReverseDnsResult result = verify("127.0.0.1", 300ms);
  const auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(result.status, ClientNameStatus::tempfail);
  EXPECT_EQ(result.name, "");
  EXPECT_GE(elapsed, 250ms);
  EXPECT_LT(elapsed, 600ms);
  // A resolver slower than the deadline does not stretch it.
  use_server(silent.port, 5000ms);
  const auto again = std::chrono::steady_clock::now();
  EXPECT_EQ(verify("127.0.0.1", 300ms).status, ClientNameStatus::tempfail);
  EXPECT_LT(std::chrono::steady_clock::now() - again, 600ms);
}

// What the integration harness relies on: a closed port is refused at once, so a
// session does not wait for DNS that is not there.
TEST_F(ReverseDnsTest, ClosedPortFailsAtOnce) {
  use_server(free_udp_port(), 2000ms);
  const auto started = std::chrono::steady_clock::now();
  ReverseDnsResult result = verify("127.0.0.1", 2000ms);
  EXPECT_EQ(result.status, ClientNameStatus::tempfail);
  EXPECT_NE(result.detail.find("PTR lookup failed"), std::string::npos) << result.detail;
  EXPECT_LT(std::chrono::steady_clock::now() - started, 200ms);
}

TEST_F(ReverseDnsTest, LookupRunsBesideTheCallerAndCallsBackOnce) {
  int calls = 0;
  ReverseDnsResult seen;
  auto lookup =
      ReverseDnsLookup::start(resolver, nullptr, "127.0.0.1", 2000ms, [&](const ReverseDnsResult& result) {
        ++calls;
        seen = result;
      });
  EXPECT_FALSE(lookup->done());  // nothing ran yet: start() never blocks
  run_until_done(io, lookup->wait());
  EXPECT_TRUE(lookup->done());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen.name, "mx.client.test");
  EXPECT_EQ(lookup->result().status, ClientNameStatus::verified);
  run_until_done(io, lookup->wait());  // done: returns at once
  EXPECT_EQ(calls, 1);
}

TEST_F(ReverseDnsTest, LookupOutlivesItsCaller) {
  Blackhole silent;
  use_server(silent.port, 300ms);
  bool called = false;
  std::weak_ptr<ReverseDnsLookup> weak = ReverseDnsLookup::start(
      resolver, nullptr, "127.0.0.1", 300ms, [&](const ReverseDnsResult&) { called = true; });
  // The caller (a session) is gone; the lookup finishes on its own within its timeout.
  io.restart();
  io.run_for(600ms);
  EXPECT_TRUE(called);
  EXPECT_TRUE(weak.expired());
}

// --- rdns_checks -----------------------------------------------------------------------

std::vector<std::unique_ptr<RE2>> default_patterns() {
  std::vector<std::unique_ptr<RE2>> compiled;
  RE2::Options options;
  options.set_case_sensitive(false);
  for (const auto& pattern : policy::RdnsChecksConfig{}.dynamic_patterns)
    compiled.push_back(std::make_unique<RE2>(pattern, options));
  return compiled;
}

TEST(DynamicName, AddressEmbeddedInTheName) {
  const auto patterns = default_patterns();
  for (const char* name :
       {"1-2-0-192.example.net", "c-192-0-2-1.hsd1.example.net", "192.0.2.1.static.example.net",
        "ip192-0-2-1.example.net", "192000002001.example.net", "host-c0000201.example.net"})
    EXPECT_EQ(dynamic_name_reason(name, "192.0.2.1", patterns), "it embeds the address") << name;
  // Another address's octets, or only some of ours, are not ours.
  EXPECT_EQ(dynamic_name_reason("1-2-0-193.example.net", "192.0.2.1", patterns), std::nullopt);
  EXPECT_EQ(dynamic_name_reason("mail2.192.example.net", "192.0.2.1", patterns), std::nullopt);
  EXPECT_EQ(dynamic_name_reason("1-2--0-192.example.net", "192.0.2.1", patterns), std::nullopt);
}

TEST(DynamicName, PoolWordsOfTheDefaultPatterns) {
  const auto patterns = default_patterns();
  for (const char* name : {"dsl-42.isp.example", "pool-71-2.isp.example", "ppp12.isp.example",
                           "x.dynamic.isp.example", "abc.DHCP.isp.example", "host123.isp.example",
                           "client-7.isp.example", "cable.isp.example."}) {
    auto reason = dynamic_name_reason(name, "198.51.100.7", patterns);
    ASSERT_TRUE(reason) << name;
    EXPECT_TRUE(reason->starts_with("it matches '")) << *reason;
  }
  for (const char* name : {"mx.client.test", "mail.example.org", "smtp-out.provider.example",
                           "poolside.example", "mx1.example.org", "hostmaster.example"})
    EXPECT_EQ(dynamic_name_reason(name, "198.51.100.7", patterns), std::nullopt) << name;
}

SessionContext settled(ClientNameStatus status, std::string name, std::string ptr,
                       std::string ip = "192.0.2.1") {
  SessionContext context;
  context.session_id = "test";
  context.client_ip = std::move(ip);
  context.client_name_status = status;
  context.client_name = std::move(name);
  context.client_ptr = std::move(ptr);
  return context;
}

std::vector<Contribution> judge(const RdnsFilter& filter, const SessionContext& context,
                                int rcpts = 1) {
  asio::io_context io;
  Services services;
  auto instance = filter.open(services);
  std::vector<Contribution> lines;
  for (int i = 0; i < rcpts; ++i) {
    Verdict verdict = run_until_done(io, instance->on_stage(Stage::rcpt, context));
    EXPECT_EQ(verdict.kind, Verdict::Kind::next);
    lines.insert(lines.end(), verdict.contributions.begin(), verdict.contributions.end());
  }
  return lines;
}

RdnsCheckOptions all_checks() {
  RdnsCheckOptions options;
  options.missing = 3;
  options.unverified = 2;
  options.dynamic = 4;
  options.dynamic_patterns = policy::RdnsChecksConfig{}.dynamic_patterns;
  return options;
}

TEST(RdnsFilter, ScoresEachCauseOnceAsConnectionEvidence) {
  RdnsFilter filter(all_checks());
  auto missing = judge(filter, settled(ClientNameStatus::no_ptr, "", ""), 3);
  ASSERT_EQ(missing.size(), 1u);  // three RCPTs, one line
  EXPECT_EQ(missing[0].filter, "rdns");
  EXPECT_EQ(missing[0].rule, "missing");
  EXPECT_EQ(missing[0].score, 3);
  EXPECT_EQ(missing[0].stage, "connect");
  EXPECT_EQ(missing[0].reply_text, "cannot find your reverse hostname, [192.0.2.1]");

  auto unverified =
      judge(filter, settled(ClientNameStatus::unverified, "", "1-2-0-192.dsl.example"));
  ASSERT_EQ(unverified.size(), 2u);
  EXPECT_EQ(unverified[0].rule, "unverified");
  EXPECT_EQ(unverified[0].detail,
            "PTR 1-2-0-192.dsl.example of [192.0.2.1] does not resolve back to it");
  EXPECT_EQ(unverified[0].reply_text, "cannot find your hostname, [192.0.2.1]");
  EXPECT_EQ(unverified[1].rule, "dynamic");  // the unverified name still tells
  EXPECT_EQ(unverified[1].score, 4);
  EXPECT_EQ(unverified[1].detail,
            "client name 1-2-0-192.dsl.example looks dynamic: it embeds the address");

  EXPECT_TRUE(judge(filter, settled(ClientNameStatus::verified, "mx.client.test", "mx.client.test"))
                  .empty());
  auto dynamic =
      judge(filter, settled(ClientNameStatus::verified, "dsl-9.isp.example", "dsl-9.isp.example"));
  ASSERT_EQ(dynamic.size(), 1u);
  EXPECT_EQ(dynamic[0].reply_text,
            "client dsl-9.isp.example[192.0.2.1] looks like a dynamic address");
}

TEST(RdnsFilter, TemporaryFailureIsShownNotScored) {
  RdnsFilter filter(all_checks());
  auto lines = judge(filter, settled(ClientNameStatus::tempfail, "", ""));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].rule, "tempfail");
  EXPECT_EQ(lines[0].score, 0);
  // Not settled yet (or not looked up): nothing to say, and it is asked again later.
  RdnsFilter again(all_checks());
  EXPECT_TRUE(judge(again, settled(ClientNameStatus::unknown, "", "")).empty());
}

TEST(RdnsFilter, ZeroScoreTurnsACheckOff) {
  RdnsCheckOptions options = all_checks();
  options.missing = 0;
  options.dynamic = 0;
  RdnsFilter filter(options);
  EXPECT_TRUE(judge(filter, settled(ClientNameStatus::no_ptr, "", "")).empty());
  EXPECT_TRUE(
      judge(filter, settled(ClientNameStatus::verified, "dsl-9.isp.example", "dsl-9.isp.example"))
          .empty());
}

// Through the pipeline: the score reaches the thresholds at the first RCPT, and the reply
// names the evidence, Postfix's words.
TEST(RdnsFilter, ScoreRefusesAtRcptWithTheReason) {
  policy::Config config;
  config.scoring = {4, 6, 10};
  RdnsCheckOptions options = all_checks();
  options.missing = 6;
  std::vector<std::unique_ptr<Filter>> filters;
  filters.push_back(std::make_unique<RdnsFilter>(options));
  auto pipeline = Pipeline::assemble(std::move(filters), config);
  asio::io_context io;
  Services services;
  services.executor = io.get_executor();
  auto run = [&](SessionContext context) -> asio::awaitable<Decision> {
    auto session = pipeline->start(services);
    for (Stage stage : {Stage::connect, Stage::helo, Stage::mail})
      co_await session->run(stage, context);
    Decision first = co_await session->run(Stage::rcpt, context);
    session->reset_transaction();
    co_await session->run(Stage::mail, context);
    Decision second = co_await session->run(Stage::rcpt, context);
    // The connection's evidence holds for the next transaction too.
    EXPECT_EQ(second.action, first.action);
    co_return first;
  };
  Decision decision = run_until_done(io, run(settled(ClientNameStatus::no_ptr, "", "")));
  EXPECT_EQ(decision.action, Decision::Action::tempfail);
  EXPECT_EQ(decision.reply.code, 450);
  EXPECT_NE(decision.reply.text().find("cannot find your reverse hostname, [192.0.2.1]"),
            std::string::npos)
      << decision.reply.text();
  Decision verified = run_until_done(
      io, run(settled(ClientNameStatus::verified, "mx.client.test", "mx.client.test")));
  EXPECT_EQ(verified.action, Decision::Action::proceed);
}

}  // namespace
}  // namespace mxgate::filters

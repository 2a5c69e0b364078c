// The client-name cache in front of real DNS (dnsmasq on a loopback port): the TTL a
// lookup reports, a second session from the same address answered without a query (the
// resolver then points at a server that never answers, so only the cache can answer), a
// failure kept for tempfail_ttl and asked again after it, and one cache for every worker.
#include <gtest/gtest.h>

#include <boost/asio/post.hpp>
#include <boost/asio/use_future.hpp>
#include <thread>

#include "coroutine_support.hpp"
#include "dns_blackhole.hpp"
#include "dnsmasq.hpp"
#include "filters/client_name_cache.hpp"
#include "filters/dns_resolver.hpp"
#include "filters/metrics.hpp"
#include "filters/reverse_dns.hpp"

namespace mxgate::filters {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using testing::Blackhole;
using testing::Dnsmasq;
using testing::dnsmasq_path;
using testing::run_until_done;

// TTLs chosen so that each case has a different smallest one: .1 PTR and A 120 s; .2 PTR
// 900 s (--local-ttl) below its A's 1800 s; .3 A 300 s below its PTR's 900 s; .4 a PTR
// whose name resolves elsewhere in 200 s (unverified); .5 no PTR at all.
std::vector<std::string> records() {
  return {
      "--local-ttl=900",
      "--host-record=mx.client.test,127.0.0.1,120",
      "--ptr-record=2.0.0.127.in-addr.arpa,two.client.test",
      "--host-record=two.client.test,127.0.0.2,1800",
      "--ptr-record=3.0.0.127.in-addr.arpa,three.client.test",
      "--host-record=three.client.test,127.0.0.3,300",
      "--ptr-record=4.0.0.127.in-addr.arpa,liar.client.test",
      "--host-record=liar.client.test,192.0.2.99,200",
  };
}

metrics::Counter& counter(const char* name, const char* result) {
  return metrics::Registry::global().counter(name, "", {{"result", result}});
}

// One ReverseDnsLookup as a session runs it: started, then the io_context runs until the
// callback came (bounded: a lookup that never calls back fails the test, not hangs it).
struct Outcome {
  bool done_at_start = false;
  int calls_at_start = 0;  // the callback must not run inside start()
  int calls = 0;
  bool wait_returned = false;
  ReverseDnsResult result;     // what the callback saw
  ReverseDnsResult published;  // lookup->result()
};

class ReverseDnsCacheTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (dnsmasq_path() != nullptr) server_ = new Dnsmasq(records());
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    if (dnsmasq_path() == nullptr) GTEST_SKIP() << "dnsmasq is not installed (dnsmasq-base)";
    ASSERT_TRUE(server_->running()) << "dnsmasq did not start: " << server_->log();
    use_server(server_->port());
  }

  void use_server(std::uint16_t port, std::chrono::milliseconds timeout = 2000ms) {
    resolver = testing::loopback_resolver(io.get_executor(), port, timeout, 0);
  }

  Outcome lookup(const std::shared_ptr<ClientNameCache>& cache, const std::string& address,
                 std::chrono::milliseconds timeout = 2000ms) {
    // Shared with the callback: it must not dangle should a failed test return early.
    auto outcome = std::make_shared<Outcome>();
    auto started = ReverseDnsLookup::start(resolver, cache, address, timeout,
                                           [outcome](const ReverseDnsResult& result) {
                                             ++outcome->calls;
                                             outcome->result = result;
                                           });
    outcome->done_at_start = started->done();
    outcome->calls_at_start = outcome->calls;
    // What a session does at its first RCPT: wait for the name (at once when done).
    auto waited = asio::co_spawn(io, started->wait(), asio::use_future);
    io.restart();
    const auto deadline = std::chrono::steady_clock::now() + timeout + 2s;
    while ((outcome->calls == 0 || waited.wait_for(0s) != std::future_status::ready) &&
           std::chrono::steady_clock::now() < deadline)
      io.run_one_for(50ms);
    outcome->wait_returned = waited.wait_for(0s) == std::future_status::ready;
    io.restart();
    io.poll();  // a second callback, were there one, would run now
    outcome->published = started->result();
    return *outcome;
  }

  static Dnsmasq* server_;
  asio::io_context io;
  std::shared_ptr<DnsResolver> resolver;
};

Dnsmasq* ReverseDnsCacheTest::server_ = nullptr;

std::shared_ptr<ClientNameCache> make_cache(std::chrono::milliseconds tempfail_ttl = 5000ms) {
  return std::make_shared<ClientNameCache>(100, 60s, 3600s, tempfail_ttl);
}

TEST_F(ReverseDnsCacheTest, LookupReportsTheSmallestTtlOfTheAnswersItRead) {
  struct Case {
    const char* address;
    ClientNameStatus status;
    std::chrono::seconds ttl;
  };
  for (const Case& expected : {Case{"127.0.0.1", ClientNameStatus::verified, 120s},
                               Case{"127.0.0.2", ClientNameStatus::verified, 900s},
                               Case{"127.0.0.3", ClientNameStatus::verified, 300s},
                               Case{"127.0.0.4", ClientNameStatus::unverified, 200s},
                               // dnsmasq sends no SOA with its NXDOMAIN: no negative TTL.
                               Case{"127.0.0.5", ClientNameStatus::no_ptr, 0s}}) {
    ReverseDnsResult result =
        run_until_done(io, verify_client_name(resolver, expected.address, 2000ms));
    EXPECT_EQ(result.status, expected.status) << expected.address << ": " << result.detail;
    EXPECT_EQ(result.ttl, expected.ttl) << expected.address;
  }
}

TEST_F(ReverseDnsCacheTest, SecondLookupIsAnsweredFromTheCache) {
  auto cache = make_cache();
  auto& hits = counter("mxgate_client_name_cache_total", "hit");
  auto& misses = counter("mxgate_client_name_cache_total", "miss");
  auto& verified_lookups = counter("mxgate_reverse_dns_lookups_total", "verified");
  const std::uint64_t hits_before = hits.value();
  const std::uint64_t misses_before = misses.value();
  const std::uint64_t lookups_before = verified_lookups.value();

  std::vector<Outcome> first;
  for (const char* address : {"127.0.0.2", "127.0.0.4", "127.0.0.5"}) {
    first.push_back(lookup(cache, address));
    EXPECT_FALSE(first.back().done_at_start) << address;  // a miss: asked DNS
    EXPECT_EQ(first.back().calls, 1) << address;
  }
  EXPECT_EQ(first[0].result.status, ClientNameStatus::verified) << first[0].result.detail;
  EXPECT_EQ(first[0].result.name, "two.client.test");
  EXPECT_EQ(first[1].result.status, ClientNameStatus::unverified);
  EXPECT_EQ(first[2].result.status, ClientNameStatus::no_ptr);
  EXPECT_GT(resolver->queries_sent(), 0u);
  EXPECT_EQ(cache->size(), 3u);

  // From now on DNS never answers: whatever comes back, the cache said it.
  Blackhole silent;
  use_server(silent.port, 300ms);
  for (std::size_t i = 0; i < first.size(); ++i) {
    const char* address = i == 0 ? "127.0.0.2" : i == 1 ? "127.0.0.4" : "127.0.0.5";
    Outcome again = lookup(cache, address, 300ms);
    EXPECT_TRUE(again.done_at_start) << address;
    EXPECT_EQ(again.calls_at_start, 0) << address << ": called back from inside start()";
    EXPECT_EQ(again.calls, 1) << address;
    EXPECT_TRUE(again.wait_returned) << address;
    EXPECT_EQ(again.result.status, first[i].result.status) << address;
    EXPECT_EQ(again.result.name, first[i].result.name) << address;
    EXPECT_EQ(again.result.ptr, first[i].result.ptr) << address;
    EXPECT_EQ(again.result.detail, first[i].result.detail) << address;
    EXPECT_EQ(again.published.status, first[i].result.status) << address;
    EXPECT_EQ(again.published.name, first[i].result.name) << address;
  }
  EXPECT_EQ(resolver->queries_sent(), 0u);
  EXPECT_EQ(hits.value() - hits_before, 3u);
  EXPECT_EQ(misses.value() - misses_before, 3u);
  // Real lookups only: the hit of 127.0.0.2 is not a second verified lookup.
  EXPECT_EQ(verified_lookups.value() - lookups_before, 1u);
}

TEST_F(ReverseDnsCacheTest, FailureIsKeptForTempfailTtlThenAskedAgain) {
  auto cache = make_cache(600ms);
  Blackhole silent;
  use_server(silent.port, 200ms);

  Outcome failed = lookup(cache, "127.0.0.1", 200ms);
  EXPECT_FALSE(failed.done_at_start);
  EXPECT_EQ(failed.result.status, ClientNameStatus::tempfail);
  const auto stored = std::chrono::steady_clock::now();
  const std::uint64_t asked = resolver->queries_sent();
  EXPECT_GT(asked, 0u);

  // Within tempfail_ttl: the failure at once, no query, no wait for the timeout.
  Outcome remembered = lookup(cache, "127.0.0.1", 200ms);
  EXPECT_TRUE(remembered.done_at_start);
  EXPECT_EQ(remembered.calls, 1);
  EXPECT_EQ(remembered.result.status, ClientNameStatus::tempfail);
  EXPECT_EQ(remembered.result.detail, failed.result.detail);
  EXPECT_EQ(resolver->queries_sent(), asked);
  ASSERT_LT(std::chrono::steady_clock::now() - stored, 600ms) << "the machine is too slow";

  // Past it: DNS is asked again (and here answers: the name replaces the failure).
  std::this_thread::sleep_until(stored + 650ms);
  use_server(server_->port());
  Outcome recovered = lookup(cache, "127.0.0.1");
  EXPECT_FALSE(recovered.done_at_start);
  EXPECT_GT(resolver->queries_sent(), 0u);
  EXPECT_EQ(recovered.result.status, ClientNameStatus::verified) << recovered.result.detail;
  EXPECT_EQ(recovered.result.name, "mx.client.test");
  Outcome cached = lookup(cache, "127.0.0.1");
  EXPECT_TRUE(cached.done_at_start);
  EXPECT_EQ(cached.result.status, ClientNameStatus::verified);
}

TEST_F(ReverseDnsCacheTest, ExpiredFailureGoesToTheSameResolverAgain) {
  auto cache = make_cache(300ms);
  Blackhole silent;
  use_server(silent.port, 200ms);
  Outcome failed = lookup(cache, "127.0.0.1", 200ms);
  EXPECT_EQ(failed.result.status, ClientNameStatus::tempfail);
  const std::uint64_t asked = resolver->queries_sent();
  std::this_thread::sleep_for(350ms);
  Outcome again = lookup(cache, "127.0.0.1", 200ms);
  EXPECT_FALSE(again.done_at_start);
  EXPECT_EQ(again.result.status, ClientNameStatus::tempfail);
  EXPECT_GT(resolver->queries_sent(), asked);
}

TEST_F(ReverseDnsCacheTest, ZeroTempfailTtlAsksEverySession) {
  auto cache = make_cache(0ms);
  Blackhole silent;
  use_server(silent.port, 200ms);
  std::uint64_t asked = 0;
  for (int session = 0; session < 2; ++session) {
    Outcome outcome = lookup(cache, "127.0.0.1", 200ms);
    EXPECT_FALSE(outcome.done_at_start) << session;
    EXPECT_EQ(outcome.result.status, ClientNameStatus::tempfail);
    EXPECT_GT(resolver->queries_sent(), asked) << session;
    asked = resolver->queries_sent();
  }
  EXPECT_EQ(cache->size(), 0u);
}

// Workers run one io_context each: a name found by one serves the next session on another.
TEST_F(ReverseDnsCacheTest, OneCacheServesEveryWorker) {
  auto cache = make_cache();
  Outcome found = lookup(cache, "127.0.0.3");
  ASSERT_EQ(found.result.status, ClientNameStatus::verified) << found.result.detail;

  asio::io_context other;
  Blackhole silent;
  DnsResolverOptions options;
  options.servers = {"127.0.0.1:" + std::to_string(silent.port)};
  options.timeout = 300ms;
  auto other_resolver = DnsResolver::create(other.get_executor(), options);
  bool done_at_start = false;
  int calls = 0;
  ReverseDnsResult seen;
  std::thread worker([&] {
    asio::post(other, [&] {
      auto started = ReverseDnsLookup::start(other_resolver, cache, "127.0.0.3", 300ms,
                                             [&](const ReverseDnsResult& result) {
                                               ++calls;
                                               seen = result;
                                             });
      done_at_start = started->done();
    });
    other.run_for(2s);
  });
  worker.join();
  EXPECT_TRUE(done_at_start);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen.status, ClientNameStatus::verified);
  EXPECT_EQ(seen.name, "three.client.test");
  EXPECT_EQ(other_resolver->queries_sent(), 0u);
}

}  // namespace
}  // namespace mxgate::filters

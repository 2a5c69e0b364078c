// The client-name cache alone: what each status is kept for (the answer's TTL clamped to
// min_ttl..max_ttl, min_ttl for a PTR-less address, tempfail_ttl for failures), LRU
// eviction at capacity, and its hit/miss counters.
#include "filters/client_name_cache.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include "filters/metrics.hpp"
#include "filters/pipeline.hpp"

namespace mxgate::filters {
namespace {

using namespace std::chrono_literals;
using Clock = ClientNameCache::Clock;

ReverseDnsResult named(ClientNameStatus status, std::string name, std::chrono::seconds ttl) {
  ReverseDnsResult result;
  result.status = status;
  result.ptr = name;
  if (status == ClientNameStatus::verified) result.name = name;
  result.ttl = ttl;
  return result;
}

// 60 s .. 1 h, failures 5 s: the defaults.
ClientNameCache defaults(std::size_t capacity = 100, std::size_t shards = 16) {
  return ClientNameCache(capacity, 60s, 3600s, 5s, shards);
}

TEST(ClientNameCache, KeepsTheWholeResultPerAddress) {
  ClientNameCache cache = defaults();
  ReverseDnsResult stored = named(ClientNameStatus::unverified, "liar.client.test", 300s);
  stored.detail = "PTR liar.client.test resolves to 192.0.2.99, not to the client";
  const auto now = Clock::now();
  EXPECT_TRUE(cache.put("192.0.2.1", stored, now));
  EXPECT_TRUE(cache.put("2001:db8::1", named(ClientNameStatus::verified, "mx6.test", 300s), now));

  std::optional<ReverseDnsResult> hit = cache.get("192.0.2.1", now + 1s);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->status, ClientNameStatus::unverified);
  EXPECT_EQ(hit->name, "");
  EXPECT_EQ(hit->ptr, "liar.client.test");
  EXPECT_EQ(hit->detail, stored.detail);
  EXPECT_EQ(hit->ttl, 300s);
  std::optional<ReverseDnsResult> six = cache.get("2001:db8::1", now + 1s);
  ASSERT_TRUE(six);
  EXPECT_EQ(six->name, "mx6.test");
  EXPECT_FALSE(cache.get("192.0.2.2", now + 1s));
  EXPECT_EQ(cache.size(), 2u);
}

TEST(ClientNameCache, VerifiedNameLivesForItsTtlClamped) {
  ClientNameCache cache = defaults();
  const auto now = Clock::now();
  cache.put("192.0.2.1", named(ClientNameStatus::verified, "mx.test", 300s), now);
  EXPECT_TRUE(cache.get("192.0.2.1", now + 299s));
  EXPECT_FALSE(cache.get("192.0.2.1", now + 300s));
  // Below min_ttl: kept for min_ttl (as postscreen_dnsbl_min_ttl); above max_ttl: cut.
  cache.put("192.0.2.2", named(ClientNameStatus::verified, "short.test", 5s), now);
  EXPECT_TRUE(cache.get("192.0.2.2", now + 59s));
  EXPECT_FALSE(cache.get("192.0.2.2", now + 60s));
  cache.put("192.0.2.3", named(ClientNameStatus::verified, "long.test", 86400s), now);
  EXPECT_TRUE(cache.get("192.0.2.3", now + 3599s));
  EXPECT_FALSE(cache.get("192.0.2.3", now + 3600s));
  // A zero TTL ("do not cache") is still held for min_ttl, as list answers are.
  EXPECT_EQ(cache.ttl_for(named(ClientNameStatus::verified, "zero.test", 0s)), 60s);
}

TEST(ClientNameCache, TtlPerStatus) {
  ClientNameCache cache = defaults();
  EXPECT_EQ(cache.ttl_for(named(ClientNameStatus::verified, "a.test", 900s)), 900s);
  EXPECT_EQ(cache.ttl_for(named(ClientNameStatus::unverified, "a.test", 120s)), 120s);
  EXPECT_EQ(cache.ttl_for(named(ClientNameStatus::unverified, "a.test", 10s)), 60s);
  // No PTR: the negative TTL when there is one, clamped; else min_ttl.
  EXPECT_EQ(cache.ttl_for(named(ClientNameStatus::no_ptr, "", 0s)), 60s);
  EXPECT_EQ(cache.ttl_for(named(ClientNameStatus::no_ptr, "", 900s)), 900s);
  EXPECT_EQ(cache.ttl_for(named(ClientNameStatus::no_ptr, "", 10s)), 60s);
  EXPECT_EQ(cache.ttl_for(named(ClientNameStatus::no_ptr, "", 86400s)), 3600s);
  // A failure: tempfail_ttl, below min_ttl (not clamped up to it).
  EXPECT_EQ(cache.ttl_for(named(ClientNameStatus::tempfail, "", 0s)), 5s);
  // Never looked up (not an address): nothing to keep.
  EXPECT_EQ(cache.ttl_for(named(ClientNameStatus::unknown, "", 0s)), std::nullopt);
}

TEST(ClientNameCache, NoPtrLivesForMinTtl) {
  ClientNameCache cache(100, 30s, 3600s, 5s);
  const auto now = Clock::now();
  cache.put("192.0.2.1", named(ClientNameStatus::no_ptr, "", 0s), now);
  std::optional<ReverseDnsResult> hit = cache.get("192.0.2.1", now + 29s);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->status, ClientNameStatus::no_ptr);
  EXPECT_FALSE(cache.get("192.0.2.1", now + 30s));
}

TEST(ClientNameCache, TempfailLivesForTempfailTtl) {
  ClientNameCache cache(100, 60s, 3600s, 1500ms);
  const auto now = Clock::now();
  EXPECT_TRUE(cache.put("192.0.2.1", named(ClientNameStatus::tempfail, "", 0s), now));
  std::optional<ReverseDnsResult> hit = cache.get("192.0.2.1", now + 1499ms);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->status, ClientNameStatus::tempfail);
  EXPECT_FALSE(cache.get("192.0.2.1", now + 1500ms));
}

TEST(ClientNameCache, ZeroTempfailTtlKeepsNoFailure) {
  ClientNameCache cache(100, 60s, 3600s, 0ms);
  const auto now = Clock::now();
  EXPECT_FALSE(cache.put("192.0.2.1", named(ClientNameStatus::tempfail, "", 0s), now));
  EXPECT_FALSE(cache.get("192.0.2.1", now));
  EXPECT_EQ(cache.size(), 0u);
  // Only failures: answers are still kept.
  EXPECT_TRUE(cache.put("192.0.2.2", named(ClientNameStatus::no_ptr, "", 0s), now));
  EXPECT_TRUE(cache.get("192.0.2.2", now + 1s));
}

TEST(ClientNameCache, UnknownIsNeverKept) {
  ClientNameCache cache = defaults();
  ReverseDnsResult unknown;
  unknown.detail = "not an IP address";
  EXPECT_FALSE(cache.put("unix-socket", unknown));
  EXPECT_FALSE(cache.get("unix-socket"));
  EXPECT_EQ(cache.size(), 0u);
}

// A failure replaces the expired answer, and an answer replaces a failure.
TEST(ClientNameCache, PutReplaces) {
  ClientNameCache cache = defaults();
  const auto now = Clock::now();
  cache.put("192.0.2.1", named(ClientNameStatus::tempfail, "", 0s), now);
  cache.put("192.0.2.1", named(ClientNameStatus::verified, "mx.test", 600s), now + 1s);
  std::optional<ReverseDnsResult> hit = cache.get("192.0.2.1", now + 300s);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->status, ClientNameStatus::verified);
  EXPECT_EQ(hit->name, "mx.test");
  EXPECT_EQ(cache.size(), 1u);
}

TEST(ClientNameCache, EvictsLeastRecentlyUsedAtCapacity) {
  ClientNameCache cache = defaults(3, 1);
  const auto now = Clock::now();
  for (const char* address : {"192.0.2.1", "192.0.2.2", "192.0.2.3"})
    cache.put(address, named(ClientNameStatus::verified, address, 300s), now);
  ASSERT_TRUE(cache.get("192.0.2.1", now));  // .1 is now the most recent; .2 the least
  cache.put("192.0.2.4", named(ClientNameStatus::verified, "four.test", 300s), now);
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_FALSE(cache.get("192.0.2.2", now));
  EXPECT_TRUE(cache.get("192.0.2.1", now));
  EXPECT_TRUE(cache.get("192.0.2.3", now));
  EXPECT_TRUE(cache.get("192.0.2.4", now));
}

TEST(ClientNameCache, ShardedCacheStaysBounded) {
  ClientNameCache cache = defaults(64, 16);
  const auto now = Clock::now();
  for (int i = 0; i < 10000; ++i)
    cache.put("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256),
              named(ClientNameStatus::no_ptr, "", 0s), now);
  EXPECT_LE(cache.size(), cache.capacity());
  EXPECT_LE(cache.capacity(), 64u);
}

TEST(ClientNameCache, CountsHitsAndMisses) {
  auto& registry = metrics::Registry::global();
  metrics::Counter& hit =
      registry.counter("mxgate_client_name_cache_total", "", {{"result", "hit"}});
  metrics::Counter& miss =
      registry.counter("mxgate_client_name_cache_total", "", {{"result", "miss"}});
  const std::uint64_t hits = hit.value();
  const std::uint64_t misses = miss.value();
  ClientNameCache cache = defaults();  // registers the family with its help text
  const auto now = Clock::now();
  EXPECT_FALSE(cache.get("192.0.2.1", now));
  cache.put("192.0.2.1", named(ClientNameStatus::verified, "mx.test", 300s), now);
  EXPECT_TRUE(cache.get("192.0.2.1", now));
  EXPECT_TRUE(cache.get("192.0.2.1", now));
  EXPECT_FALSE(cache.get("192.0.2.1", now + 300s));  // expired: a miss
  EXPECT_EQ(hit.value() - hits, 2u);
  EXPECT_EQ(miss.value() - misses, 2u);
  const std::string exposition = registry.render();
  EXPECT_NE(exposition.find("mxgate_client_name_cache_total{result=\"hit\"}"), std::string::npos);
  EXPECT_NE(exposition.find("# HELP mxgate_client_name_cache_total Client name lookups answered "
                            "from the cache (hit) or sent to DNS (miss)"),
            std::string::npos);
}

// The proxy builds one per policy generation and hands it to every worker's Services.
TEST(ClientNameCache, OneCacheSharedByEveryWorkerWithTheDnsKnobs) {
  policy::Config config;
  config.dns.cache_size = 10;
  config.dns.min_ttl = 30s;
  config.dns.tempfail_ttl = 2s;
  auto shared = make_client_name_cache(config);
  boost::asio::io_context first;
  boost::asio::io_context second;
  Services one = make_services(first.get_executor(), config, nullptr, shared);
  Services two = make_services(second.get_executor(), config, nullptr, shared);
  EXPECT_EQ(one.client_name_cache, shared);
  EXPECT_EQ(two.client_name_cache, shared);
  EXPECT_EQ(shared->capacity(), 10u);
  EXPECT_EQ(shared->ttl_for(named(ClientNameStatus::tempfail, "", 0s)), 2s);
  EXPECT_EQ(shared->ttl_for(named(ClientNameStatus::no_ptr, "", 0s)), 30s);
  EXPECT_EQ(shared->ttl_for(named(ClientNameStatus::verified, "a.test", 7200s)), 3600s);
  // Without one (tests): a cache of its own.
  Services alone = make_services(first.get_executor(), config);
  ASSERT_TRUE(alone.client_name_cache);
  EXPECT_NE(alone.client_name_cache, shared);
}

}  // namespace
}  // namespace mxgate::filters

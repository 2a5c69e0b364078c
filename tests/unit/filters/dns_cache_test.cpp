// The DNS cache is bounded (LRU) and keeps answers for their TTL clamped to min/max.
#include "filters/dns_cache.hpp"

#include <gtest/gtest.h>

namespace mxgate::filters {
namespace {

using namespace std::chrono_literals;

CachedAnswer listed(std::uint32_t address) { return CachedAnswer{true, {address}, ""}; }

TEST(DnsCache, ClampsTtl) {
  DnsCache cache(100, 60s, 3600s);
  EXPECT_EQ(cache.clamp_ttl(0s), 60s);
  EXPECT_EQ(cache.clamp_ttl(300s), 300s);
  EXPECT_EQ(cache.clamp_ttl(86400s), 3600s);
}

TEST(DnsCache, ShortTtlLivesForMinTtl) {
  DnsCache cache(100, 60s, 3600s);
  const auto now = DnsCache::Clock::now();
  cache.put("2.0.0.127.bl.example", listed(0x7f000002), 5s, now);
  EXPECT_TRUE(cache.get("2.0.0.127.bl.example", now + 59s));
  EXPECT_FALSE(cache.get("2.0.0.127.bl.example", now + 60s));
}

TEST(DnsCache, LongTtlIsCutToMaxTtl) {
  DnsCache cache(100, 60s, 3600s);
  const auto now = DnsCache::Clock::now();
  cache.put("k", listed(1), 86400s, now);
  EXPECT_TRUE(cache.get("k", now + 3599s));
  EXPECT_FALSE(cache.get("k", now + 3600s));
}

TEST(DnsCache, NegativeAnswersAreCached) {
  DnsCache cache(100, 60s, 3600s);
  cache.put("1.2.0.192.bl.example", CachedAnswer{}, 0s);
  auto hit = cache.get("1.2.0.192.bl.example");
  ASSERT_TRUE(hit);
  EXPECT_FALSE(hit->exists);
}

TEST(DnsCache, EvictsLeastRecentlyUsed) {
  DnsCache cache(3, 60s, 3600s, 1);
  cache.put("a", listed(1), 300s);
  cache.put("b", listed(2), 300s);
  cache.put("c", listed(3), 300s);
  ASSERT_TRUE(cache.get("a"));  // a is now the most recent; b the least
  cache.put("d", listed(4), 300s);
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_FALSE(cache.get("b"));
  EXPECT_TRUE(cache.get("a"));
  EXPECT_TRUE(cache.get("c"));
  EXPECT_TRUE(cache.get("d"));
}

TEST(DnsCache, ShardedCacheStaysBounded) {
  DnsCache cache(64, 60s, 3600s, 16);
  for (int i = 0; i < 10000; ++i) cache.put("key" + std::to_string(i), listed(i), 300s);
  EXPECT_LE(cache.size(), cache.capacity());
  EXPECT_LE(cache.capacity(), 64u);
}

TEST(DnsCache, PutReplacesAndRefreshes) {
  DnsCache cache(10, 60s, 3600s);
  const auto now = DnsCache::Clock::now();
  cache.put("k", listed(1), 60s, now);
  cache.put("k", listed(2), 600s, now);
  auto hit = cache.get("k", now + 300s);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->addresses, std::vector<std::uint32_t>{2});
  EXPECT_EQ(cache.size(), 1u);
}

}  // namespace
}  // namespace mxgate::filters

// A bounded in-process cache of DNS list answers, kept for the answer's TTL clamped
// to [min_ttl, max_ttl] (postscreen_dnsbl_min_ttl / _max_ttl: 60 s / 1 h by default).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "filters/sharded_lru.hpp"

namespace mxgate::filters {

// What a DNS list said about one name: the A records and, when fetched, the TXT reason.
struct CachedAnswer {
  bool exists = false;                   // false: NXDOMAIN or no A record (not listed)
  std::vector<std::uint32_t> addresses;  // host byte order
  std::string text;                      // TXT, joined; empty when not fetched
};

// Shared by every worker thread: a ShardedLru (one lock per shard, none global).
class DnsCache {
 public:
  using Clock = std::chrono::steady_clock;

  DnsCache(std::size_t capacity, std::chrono::seconds min_ttl, std::chrono::seconds max_ttl,
           std::size_t shards = 16);
  DnsCache(const DnsCache&) = delete;
  DnsCache& operator=(const DnsCache&) = delete;

  std::optional<CachedAnswer> get(const std::string& key, Clock::time_point now = Clock::now());
  // Stores `answer` for `ttl` clamped to [min_ttl, max_ttl]; evicts the least recently
  // used entry of the shard when it is full.
  void put(const std::string& key, CachedAnswer answer, std::chrono::seconds ttl,
           Clock::time_point now = Clock::now());

  std::chrono::seconds clamp_ttl(std::chrono::seconds ttl) const;
  std::size_t size() const { return entries_.size(); }
  std::size_t capacity() const { return entries_.capacity(); }

 private:
  std::chrono::seconds min_ttl_;
  std::chrono::seconds max_ttl_;
  metrics::Counter& hits_;
  metrics::Counter& misses_;
  ShardedLru<CachedAnswer> entries_;
};

}  // namespace mxgate::filters

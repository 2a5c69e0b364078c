// A bounded in-process cache of DNS list answers, kept for the answer's TTL clamped
// to [min_ttl, max_ttl] (postscreen_dnsbl_min_ttl / _max_ttl: 60 s / 1 h by default).
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace mxgate::metrics {
class Counter;
}

namespace mxgate::filters {

// What a DNS list said about one name: the A records and, when fetched, the TXT reason.
struct CachedAnswer {
  bool exists = false;                   // false: NXDOMAIN or no A record (not listed)
  std::vector<std::uint32_t> addresses;  // host byte order
  std::string text;                      // TXT, joined; empty when not fetched
};

// Sharded LRU: each shard has its own lock, so threads only contend when they hit the
// same shard at the same instant (no global lock on the hot path).
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
  std::size_t size() const;
  std::size_t capacity() const { return shard_capacity_ * shards_.size(); }

 private:
  struct Entry {
    std::string key;
    CachedAnswer answer;
    Clock::time_point expires;
  };
  struct Shard {
    mutable std::mutex mutex;
    std::list<Entry> order;  // most recently used first
    std::unordered_map<std::string, std::list<Entry>::iterator> index;
  };
  Shard& shard_for(const std::string& key);

  std::vector<std::unique_ptr<Shard>> shards_;
  std::size_t shard_capacity_;
  std::chrono::seconds min_ttl_;
  std::chrono::seconds max_ttl_;
  metrics::Counter& hits_;
  metrics::Counter& misses_;
  metrics::Counter& evictions_;
};

}  // namespace mxgate::filters

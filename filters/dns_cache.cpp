// Sharded LRU cache of DNS list answers with clamped TTLs.
#include "filters/dns_cache.hpp"

#include <algorithm>
#include <functional>

#include "filters/metrics.hpp"

namespace mxgate::filters {

DnsCache::DnsCache(std::size_t capacity, std::chrono::seconds min_ttl, std::chrono::seconds max_ttl,
                   std::size_t shards)
    : shard_capacity_(std::max<std::size_t>(1, capacity / std::max<std::size_t>(1, shards))),
      min_ttl_(min_ttl),
      max_ttl_(std::max(min_ttl, max_ttl)),
      hits_(metrics::Registry::global().counter("mxgate_dns_cache_hits_total",
                                                "DNS list answers served from the cache")),
      misses_(metrics::Registry::global().counter("mxgate_dns_cache_misses_total",
                                                  "DNS list lookups not found in the cache")),
      evictions_(metrics::Registry::global().counter(
          "mxgate_dns_cache_evictions_total", "DNS cache entries evicted because it was full")) {
  shards = std::max<std::size_t>(1, shards);
  // A tiny cache (tests) must still hold `capacity` entries, not round down to zero.
  if (capacity < shards) {
    shards = 1;
    shard_capacity_ = std::max<std::size_t>(1, capacity);
  }
  shards_.reserve(shards);
  for (std::size_t i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>());
}

std::chrono::seconds DnsCache::clamp_ttl(std::chrono::seconds ttl) const {
  return std::clamp(ttl, min_ttl_, max_ttl_);
}

DnsCache::Shard& DnsCache::shard_for(const std::string& key) {
  return *shards_[std::hash<std::string>{}(key) % shards_.size()];
}

std::optional<CachedAnswer> DnsCache::get(const std::string& key, Clock::time_point now) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  auto found = shard.index.find(key);
  if (found == shard.index.end()) {
    misses_.inc();
    return std::nullopt;
  }
  if (found->second->expires <= now) {
    shard.order.erase(found->second);
    shard.index.erase(found);
    misses_.inc();
    return std::nullopt;
  }
  shard.order.splice(shard.order.begin(), shard.order, found->second);
  hits_.inc();
  return found->second->answer;
}

void DnsCache::put(const std::string& key, CachedAnswer answer, std::chrono::seconds ttl,
                   Clock::time_point now) {
  const auto expires = now + clamp_ttl(ttl);
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  auto found = shard.index.find(key);
  if (found != shard.index.end()) {
    found->second->answer = std::move(answer);
    found->second->expires = expires;
    shard.order.splice(shard.order.begin(), shard.order, found->second);
    return;
  }
  while (shard.order.size() >= shard_capacity_) {
    shard.index.erase(shard.order.back().key);
    shard.order.pop_back();
    evictions_.inc();
  }
  shard.order.push_front(Entry{key, std::move(answer), expires});
  shard.index.emplace(key, shard.order.begin());
}

std::size_t DnsCache::size() const {
  std::size_t total = 0;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard->mutex);
    total += shard->order.size();
  }
  return total;
}

}  // namespace mxgate::filters

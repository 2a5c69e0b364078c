// DNS list answers in a sharded LRU, kept for their TTL clamped to [min_ttl, max_ttl].
#include "filters/dns_cache.hpp"

#include <algorithm>

#include "filters/metrics.hpp"

namespace mxgate::filters {

DnsCache::DnsCache(std::size_t capacity, std::chrono::seconds min_ttl, std::chrono::seconds max_ttl,
                   std::size_t shards)
    : min_ttl_(min_ttl),
      max_ttl_(std::max(min_ttl, max_ttl)),
      hits_(metrics::Registry::global().counter("mxgate_dns_cache_hits_total",
                                                "DNS list answers served from the cache")),
      misses_(metrics::Registry::global().counter("mxgate_dns_cache_misses_total",
                                                  "DNS list lookups not found in the cache")),
      entries_(
          capacity, shards,
          &metrics::Registry::global().counter("mxgate_dns_cache_evictions_total",
                                               "DNS cache entries evicted because it was full")) {}

std::chrono::seconds DnsCache::clamp_ttl(std::chrono::seconds ttl) const {
  return std::clamp(ttl, min_ttl_, max_ttl_);
}

std::optional<CachedAnswer> DnsCache::get(const std::string& key, Clock::time_point now) {
  std::optional<CachedAnswer> answer = entries_.get(key, now);
  (answer ? hits_ : misses_).inc();
  return answer;
}

void DnsCache::put(const std::string& key, CachedAnswer answer, std::chrono::seconds ttl,
                   Clock::time_point now) {
  entries_.put(key, std::move(answer), now + clamp_ttl(ttl));
}

}  // namespace mxgate::filters

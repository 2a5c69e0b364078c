// Client names per address in a sharded LRU, kept for as long as their status allows.
#include "filters/client_name_cache.hpp"

#include <algorithm>

#include "filters/metrics.hpp"

namespace mxgate::filters {

namespace {

metrics::Counter& lookups(const char* result) {
  return metrics::Registry::global().counter(
      "mxgate_client_name_cache_total",
      "Client name lookups answered from the cache (hit) or sent to DNS (miss)",
      {{"result", result}});
}

}  // namespace

ClientNameCache::ClientNameCache(std::size_t capacity, std::chrono::seconds min_ttl,
                                 std::chrono::seconds max_ttl,
                                 std::chrono::milliseconds tempfail_ttl, std::size_t shards)
    : min_ttl_(min_ttl),
      max_ttl_(std::max(min_ttl, max_ttl)),
      tempfail_ttl_(tempfail_ttl),
      hits_(lookups("hit")),
      misses_(lookups("miss")),
      entries_(capacity, shards, nullptr) {}

std::optional<std::chrono::milliseconds> ClientNameCache::ttl_for(
    const ReverseDnsResult& result) const {
  switch (result.status) {
    case ClientNameStatus::verified:
    case ClientNameStatus::unverified:
      return std::clamp(result.ttl, min_ttl_, max_ttl_);
    case ClientNameStatus::no_ptr:
      // The resolver reports no negative TTL (SOA minimum) for NXDOMAIN today: min_ttl.
      return std::clamp(result.ttl > std::chrono::seconds(0) ? result.ttl : min_ttl_, min_ttl_,
                        max_ttl_);
    case ClientNameStatus::tempfail:
      if (tempfail_ttl_ <= std::chrono::milliseconds(0)) return std::nullopt;
      return tempfail_ttl_;
    case ClientNameStatus::unknown:
      return std::nullopt;
  }
  return std::nullopt;
}

std::optional<ReverseDnsResult> ClientNameCache::get(const std::string& address,
                                                     Clock::time_point now) {
  std::optional<ReverseDnsResult> result = entries_.get(address, now);
  (result ? hits_ : misses_).inc();
  return result;
}

bool ClientNameCache::put(const std::string& address, ReverseDnsResult result,
                          Clock::time_point now) {
  const std::optional<std::chrono::milliseconds> ttl = ttl_for(result);
  if (!ttl) return false;
  entries_.put(address, std::move(result), now + *ttl);
  return true;
}

}  // namespace mxgate::filters

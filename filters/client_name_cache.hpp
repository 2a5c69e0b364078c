// The client's name (PTR and forward confirmation) per client address, so that a client
// connecting hundreds of times a second costs one reverse lookup per TTL, not per session.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include "filters/reverse_dns.hpp"
#include "filters/sharded_lru.hpp"

namespace mxgate::filters {

// How long each kind of answer is kept (dns.min_ttl, dns.max_ttl, dns.tempfail_ttl):
// - verified, unverified: the smallest TTL of the PTR and forward answers it was built
//   from (ReverseDnsResult::ttl), clamped to [min_ttl, max_ttl], as DNS list answers;
// - no_ptr: the negative TTL when the resolver reported one, else min_ttl, clamped alike;
// - tempfail: tempfail_ttl, not clamped (RFC 2308 section 7 allows up to 5 minutes for
//   server failures and dead servers; a few seconds spare a failing resolver a query per
//   session and still let a recovered one be seen soon); 0: not kept;
// - unknown (not an address, no resolver): never kept.
// Shared by every worker thread: a ShardedLru (one lock per shard, none global).
class ClientNameCache {
 public:
  using Clock = std::chrono::steady_clock;

  ClientNameCache(std::size_t capacity, std::chrono::seconds min_ttl, std::chrono::seconds max_ttl,
                  std::chrono::milliseconds tempfail_ttl, std::size_t shards = 16);
  ClientNameCache(const ClientNameCache&) = delete;
  ClientNameCache& operator=(const ClientNameCache&) = delete;

  // Counted in mxgate_client_name_cache_total{result="hit"|"miss"}.
  std::optional<ReverseDnsResult> get(const std::string& address,
                                      Clock::time_point now = Clock::now());
  // Keeps `result` for ttl_for(result); false when that status is not kept.
  bool put(const std::string& address, ReverseDnsResult result,
           Clock::time_point now = Clock::now());

  // nullopt: not kept at all. Milliseconds: tempfail_ttl may be below a second.
  std::optional<std::chrono::milliseconds> ttl_for(const ReverseDnsResult& result) const;
  std::size_t size() const { return entries_.size(); }
  std::size_t capacity() const { return entries_.capacity(); }

 private:
  std::chrono::seconds min_ttl_;
  std::chrono::seconds max_ttl_;
  std::chrono::milliseconds tempfail_ttl_;
  metrics::Counter& hits_;
  metrics::Counter& misses_;
  ShardedLru<ReverseDnsResult> entries_;
};

}  // namespace mxgate::filters

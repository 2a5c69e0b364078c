// The embedded store: the same operations and answers as the Redis store, kept in this
// process. The default when no `redis` section is configured (one mxgate, no fleet).
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "filters/store.hpp"

namespace mxgate::metrics {
class Counter;
class Gauge;
}  // namespace mxgate::metrics

namespace mxgate::filters {

// Shared by every worker thread: keys are spread over shards, each with its own lock held
// for a few hash-map operations, so threads contend only on the same shard at once.
// Expired entries are swept when a shard grows; a full shard evicts before it inserts.
class MemoryStore final : public Store {
 public:
  explicit MemoryStore(std::size_t max_entries = 1'000'000, std::size_t shards = 16);
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  const char* backend() const override { return "memory"; }

  boost::asio::awaitable<StoreResult<RateResult>> rate_limit(const std::string& key, RateSpec spec,
                                                             std::int64_t cost, RateMode mode,
                                                             StoreTime now) override;
  boost::asio::awaitable<StoreResult<SlotResult>> acquire_slot(const std::string& key,
                                                               const std::string& slot,
                                                               std::int64_t limit,
                                                               std::chrono::seconds ttl,
                                                               StoreTime now) override;
  boost::asio::awaitable<StoreResult<bool>> release_slot(const std::string& key,
                                                         const std::string& slot) override;
  boost::asio::awaitable<StoreResult<std::vector<Reputation>>> reputation_update(
      const std::vector<std::string>& keys, double good, double bad, std::chrono::seconds half_life,
      StoreTime now) override;
  boost::asio::awaitable<StoreResult<std::vector<Reputation>>> reputation_get(
      const std::vector<std::string>& keys, std::chrono::seconds half_life, StoreTime now) override;
  boost::asio::awaitable<StoreResult<GreylistResult>> greylist(const std::string& triplet_key,
                                                               const std::string& net_key,
                                                               GreylistSpec spec,
                                                               StoreTime now) override;
  boost::asio::awaitable<StoreResult<std::optional<std::string>>> get(
      const std::string& key) override;
  boost::asio::awaitable<StoreResult<bool>> set(const std::string& key, std::string value,
                                                std::chrono::milliseconds ttl) override;
  boost::asio::awaitable<StoreResult<bool>> remove(const std::string& key) override;

  // The synchronous operations behind the awaitables (benchmarks, tests).
  RateResult rate_limit_now(const std::string& key, RateSpec spec, std::int64_t cost, RateMode mode,
                            StoreTime now);
  SlotResult acquire_slot_now(const std::string& key, const std::string& slot, std::int64_t limit,
                              std::chrono::seconds ttl, StoreTime now);
  bool release_slot_now(const std::string& key, const std::string& slot);
  Reputation reputation_update_now(const std::string& key, double good, double bad,
                                   std::chrono::seconds half_life, StoreTime now);
  Reputation reputation_get_now(const std::string& key, std::chrono::seconds half_life,
                                StoreTime now);
  GreylistResult greylist_now(const std::string& triplet_key, const std::string& net_key,
                              const GreylistSpec& spec, StoreTime now);
  std::size_t size() const;

 private:
  // One value of any kind; `expires` 0 = never (as a Redis key without TTL).
  struct Entry {
    StoreTime expires = 0;
    std::int64_t number = 0;                 // GCRA tat, greylist first-seen or counter
    std::string text;                        // plain values
    std::map<std::string, StoreTime> slots;  // concurrency: slot -> expiry
    Reputation reputation;
  };
  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, Entry> entries;
    std::size_t sweep_at = 1024;
  };

  Shard& shard_for(const std::string& key);
  // The live entry for `key`, or null (an expired one is erased). Shard lock held.
  static Entry* find_live(Shard& shard, const std::string& key, StoreTime now);
  Entry& insert(Shard& shard, const std::string& key, StoreTime now);
  StoreTime wall_now() const;
  void count_call(const char* operation) const;

  std::vector<std::unique_ptr<Shard>> shards_;
  std::size_t shard_capacity_;
  metrics::Counter& calls_;
  metrics::Counter& evictions_;
};

}  // namespace mxgate::filters

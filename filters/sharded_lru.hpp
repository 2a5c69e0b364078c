// The bounded, expiring map behind the DNS caches (list answers, client names): an LRU
// split into shards that each have their own lock, shared by every worker thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "filters/metrics.hpp"

namespace mxgate::filters {

// Threads only contend when they hit the same shard at the same instant: no global lock
// on the hot path. Expiry is the caller's decision (each cache has its own TTL rules).
template <typename Value>
class ShardedLru {
 public:
  using Clock = std::chrono::steady_clock;

  // `evictions` (may be null) counts entries pushed out because a shard was full.
  ShardedLru(std::size_t capacity, std::size_t shards, metrics::Counter* evictions)
      : shard_capacity_(std::max<std::size_t>(1, capacity / std::max<std::size_t>(1, shards))),
        evictions_(evictions) {
    shards = std::max<std::size_t>(1, shards);
    // A tiny cache (tests) must still hold `capacity` entries, not round down to zero.
    if (capacity < shards) {
      shards = 1;
      shard_capacity_ = std::max<std::size_t>(1, capacity);
    }
    shards_.reserve(shards);
    for (std::size_t i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>());
  }
  ShardedLru(const ShardedLru&) = delete;
  ShardedLru& operator=(const ShardedLru&) = delete;

  // nullopt when absent or expired at `now` (an expired entry is dropped on the way).
  std::optional<Value> get(const std::string& key, Clock::time_point now) {
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    auto found = shard.index.find(key);
    if (found == shard.index.end()) return std::nullopt;
    if (found->second->expires <= now) {
      shard.order.erase(found->second);
      shard.index.erase(found);
      return std::nullopt;
    }
    shard.order.splice(shard.order.begin(), shard.order, found->second);
    return found->second->value;
  }

  // Replaces any entry for `key`; evicts the shard's least recently used when it is full.
  void put(const std::string& key, Value value, Clock::time_point expires) {
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    auto found = shard.index.find(key);
    if (found != shard.index.end()) {
      found->second->value = std::move(value);
      found->second->expires = expires;
      shard.order.splice(shard.order.begin(), shard.order, found->second);
      return;
    }
    while (shard.order.size() >= shard_capacity_) {
      shard.index.erase(shard.order.back().key);
      shard.order.pop_back();
      if (evictions_ != nullptr) evictions_->inc();
    }
    shard.order.push_front(Entry{key, std::move(value), expires});
    shard.index.emplace(key, shard.order.begin());
  }

  std::size_t size() const {
    std::size_t total = 0;
    for (const auto& shard : shards_) {
      std::lock_guard lock(shard->mutex);
      total += shard->order.size();
    }
    return total;
  }
  std::size_t capacity() const { return shard_capacity_ * shards_.size(); }

 private:
  struct Entry {
    std::string key;
    Value value;
    Clock::time_point expires;
  };
  struct Shard {
    mutable std::mutex mutex;
    std::list<Entry> order;  // most recently used first
    std::unordered_map<std::string, typename std::list<Entry>::iterator> index;
  };
  Shard& shard_for(const std::string& key) {
    return *shards_[std::hash<std::string>{}(key) % shards_.size()];
  }

  std::vector<std::unique_ptr<Shard>> shards_;
  std::size_t shard_capacity_;
  metrics::Counter* evictions_;
};

}  // namespace mxgate::filters

// The Redis store: the Store operations as Lua scripts (atomic, one slot each) and plain
// commands over a RedisConnection (filters/redis_connection.hpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "filters/redis_connection.hpp"
#include "filters/store.hpp"

namespace mxgate::policy {
struct RedisConfig;
}

namespace mxgate::filters {

RedisStoreOptions redis_store_options(const policy::RedisConfig& config);

// The store over one RedisConnection, owned by one worker thread: every call must be
// made on the thread running `executor`. Connects lazily at the first call; commands
// from concurrent sessions are pipelined. Calls end within `timeout` with an answer or
// an error.
class RedisStore final : public Store {
 public:
  RedisStore(boost::asio::any_io_executor executor, RedisStoreOptions options);
  ~RedisStore() override;
  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  const char* backend() const override { return "redis"; }

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

  // Any command, keys not prefixed (tests, support tools). Same deadline and breaker.
  boost::asio::awaitable<StoreResult<RedisValue>> command(std::vector<std::string> arguments);

  CircuitBreaker::State breaker_state() const;
  bool connected() const;
  const RedisStoreOptions& options() const;

 private:
  std::string prefixed(const std::string& key) const;

  boost::asio::any_io_executor executor_;
  std::shared_ptr<RedisConnection> connection_;
};

}  // namespace mxgate::filters

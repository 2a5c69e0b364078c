// One Redis connection through hiredis's async API, driven by a worker's Asio io_context
// (no extra thread, no blocking call): reconnect with backoff, a deadline per call,
// pipelining, scripts loaded at connect (EVALSHA, NOSCRIPT handled), a circuit breaker.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "filters/store.hpp"

namespace mxgate::metrics {
class Counter;
class Gauge;
class Histogram;
}  // namespace mxgate::metrics

namespace mxgate::filters {

struct RedisStoreOptions {
  std::string host = "127.0.0.1";  // an address or a name (resolved asynchronously)
  std::uint16_t port = 6379;
  std::string password;                             // AUTH when not empty
  int database = 0;                                 // SELECT when not 0
  std::chrono::milliseconds timeout{50};            // every call's deadline
  std::chrono::milliseconds connect_timeout{1000};  // connect, AUTH, SELECT, SCRIPT LOAD
  std::string key_prefix = "mxgate";                // "mxgate:rl:{...}"
  CircuitBreaker::Options breaker;
  // After a failed connect or a lost connection, the next attempt waits this long,
  // doubling up to reconnect_max (reset by a successful connect).
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{5000};
};

// One Redis reply, copied out of hiredis (whose replies die with their callback).
struct RedisValue {
  enum class Type { none, nil, string, integer, array, status, error };
  Type type = Type::none;  // none: no reply (the connection was lost)
  std::string text;        // string, status, error
  long long integer = 0;
  std::vector<RedisValue> elements;
};

using RedisCommand = std::vector<std::string>;

struct RedisOutcome {
  StoreError error = StoreError::none;
  std::string message;
  std::vector<RedisValue> replies;  // one per command, in order
};

struct RedisLink;

// Used from the thread running `executor` only. Held by shared_ptr: calls in flight keep
// it alive; close() (posted to that thread) releases the hiredis context.
class RedisConnection : public std::enable_shared_from_this<RedisConnection> {
 public:
  // `scripts`: Lua sources loaded with SCRIPT LOAD at every (re)connect.
  RedisConnection(boost::asio::any_io_executor executor, RedisStoreOptions options,
                  std::vector<std::string> scripts);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Sends `commands` pipelined and waits for every reply until the call's deadline.
  // `script`: EVALSHA commands get that script's digest once connected.
  boost::asio::awaitable<RedisOutcome> run(std::vector<RedisCommand> commands,
                                           std::optional<std::size_t> script = std::nullopt);
  // EVALSHA `script` once per entry of `keys_and_args` (keys first, key_counts[i] of
  // them); reloads the script on NOSCRIPT and reruns those calls. A server error reply
  // becomes StoreError::failed.
  boost::asio::awaitable<RedisOutcome> evaluate(std::size_t script,
                                                std::vector<RedisCommand> keys_and_args,
                                                std::vector<std::size_t> key_counts);
  void close();

  CircuitBreaker::State breaker_state() const { return breaker_.state(); }
  bool ready() const { return state_ == State::ready; }
  const RedisStoreOptions& options() const { return options_; }

  // From the hiredis connect/disconnect callbacks.
  void link_changed(RedisLink& link, bool lost);

 private:
  enum class State { disconnected, connecting, ready, closed };
  using Clock = std::chrono::steady_clock;

  boost::asio::awaitable<void> connect();
  boost::asio::awaitable<std::string> handshake(Clock::time_point deadline);
  struct SendResult {
    std::vector<RedisValue> replies;
    bool timed_out = false;
  };
  boost::asio::awaitable<SendResult> send(const std::vector<RedisCommand>& commands,
                                          Clock::time_point deadline);
  boost::asio::awaitable<void> wait_for_change(Clock::time_point deadline);
  void notify();
  void drop_link();
  void connect_failed(const std::string& reason);
  void record(RedisOutcome& outcome, Clock::time_point started);

  boost::asio::any_io_executor executor_;
  RedisStoreOptions options_;
  std::vector<std::string> scripts_;
  std::vector<std::string> shas_;  // digests from SCRIPT LOAD, by script index
  std::string name_;               // "redis 127.0.0.1:6379" in log lines
  State state_ = State::disconnected;
  std::shared_ptr<RedisLink> link_;
  std::list<boost::asio::steady_timer*> waiters_;  // woken by notify()
  CircuitBreaker breaker_;
  Clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_;
  int connect_failures_ = 0;
  bool reported_open_ = false;  // counted in mxgate_store_breakers_open
  bool ever_connected_ = false;
  std::string last_error_ = "not connected yet";

  metrics::Counter& calls_;
  metrics::Counter& timeouts_;
  metrics::Counter& unavailable_;
  metrics::Counter& failed_;
  metrics::Histogram& latency_;
  metrics::Gauge& breakers_open_;
  metrics::Gauge& connections_;
  metrics::Counter& connects_ok_;
  metrics::Counter& connects_failed_;
};

}  // namespace mxgate::filters

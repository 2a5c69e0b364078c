// The shared state store: the few atomic operations the rate-limit, concurrency,
// reputation and greylist filters need, with one Redis and one in-process implementation.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mxgate::policy {
struct Config;
}

namespace mxgate::filters {

// Why a store call failed. Every call ends within its deadline with one of these.
enum class StoreError {
  none,
  timeout,      // no answer within the call's deadline
  unavailable,  // not connected, reconnecting, or the circuit breaker is open
  failed,       // the server answered with an error
};
const char* store_error_name(StoreError error);

template <typename T>
struct StoreResult {
  std::optional<T> value;
  StoreError error = StoreError::none;
  std::string message;

  bool ok() const { return error == StoreError::none && value.has_value(); }
  static StoreResult success(T value) { return {std::move(value), StoreError::none, {}}; }
  static StoreResult failure(StoreError error, std::string message) {
    return {std::nullopt, error, std::move(message)};
  }
};

// Times are wall-clock microseconds since the Unix epoch, given by the caller: the fleet
// shares buckets, so every instance must speak the same clock (NTP), and tests can replay
// one sequence against both stores.
using StoreTime = std::int64_t;
StoreTime store_now();
constexpr StoreTime kMicrosPerSecond = 1'000'000;

// ---- rate limits: GCRA (the "virtual scheduling" form of a token bucket, ITU-T I.371) ----

struct RateSpec {
  double rate = 1;   // events per second
  double burst = 1;  // events allowed at once; below 1 means 1
};

enum class RateMode {
  consume,  // count `cost` if it fits, else refuse and count nothing
  peek,     // would `cost` fit now? Counts nothing (checks an error budget)
  force,    // count `cost` whatever happens (errors already made); says if it fitted
};

struct RateResult {
  bool allowed = false;
  std::int64_t remaining = 0;                // events that would still fit right now
  std::chrono::microseconds retry_after{0};  // when refused: wait this long
  bool operator==(const RateResult&) const = default;
};

// Integer parameters, so the Lua script and C++ compute bit for bit the same answers.
struct GcraParameters {
  std::int64_t interval = 0;  // microseconds between events at the sustained rate
  std::int64_t capacity = 1;  // burst
};
GcraParameters gcra_parameters(const RateSpec& spec);

struct GcraStep {
  RateResult result;
  bool store = false;        // write new_tat back
  std::int64_t new_tat = 0;  // theoretical arrival time
  std::int64_t ttl = 0;      // microseconds until the bucket is full again (key expiry)
};
// One GCRA decision. `tat` is the stored theoretical arrival time (absent: a full bucket).
GcraStep gcra_step(std::optional<std::int64_t> tat, GcraParameters parameters, std::int64_t cost,
                   RateMode mode, StoreTime now);

// ---- concurrency: a semaphore whose slots expire, so a crashed instance's slots vanish ----

struct SlotResult {
  bool acquired = false;
  std::int64_t in_use = 0;  // slots held after this call (including ours when acquired)
  bool operator==(const SlotResult&) const = default;
};

// ---- reputation: exponentially decayed counts of good and bad outcomes ----

struct Reputation {
  double good = 0;
  double bad = 0;
  StoreTime updated = 0;  // 0: never seen
};
// The record as it weighs at `now`: each count halves every `half_life`.
Reputation decay(const Reputation& reputation, std::chrono::seconds half_life, StoreTime now);

// ---- greylisting (the classic triplet, as postgrey) ----

struct GreylistSpec {
  std::chrono::seconds delay{300};            // a retry before this is deferred again
  std::chrono::seconds retry_window{86400};   // how long a first attempt waits for its retry
  std::chrono::seconds lifetime{35 * 86400};  // how long a passed triplet or net is remembered
  int auto_allowlist = 5;  // passed triplets after which a net is allowlisted; 0 = never
};

struct GreylistResult {
  enum class State { defer, retried, known, allowlisted } state = State::defer;
  std::chrono::seconds wait{0};  // with defer: how long until a retry passes
  bool operator==(const GreylistResult&) const = default;
};

// ---- keys ----

// "kind:{identity}": the braces are a Redis Cluster hash tag (each operation touches one
// slot). Characters that would break the tag or the key's readability are %-escaped.
std::string store_key(std::string_view kind, std::string_view identity);
// A key sharing `tag_key`'s hash tag ("gl:{198.51.100.0/24}" + ":a@b:c@d").
std::string store_subkey(std::string_view tag_key, std::string_view suffix);
// Redis Cluster's slot for a key (CRC16/XMODEM of the hash tag, modulo 16384).
std::uint16_t hash_slot(std::string_view key);

// The operations every filter needs. Calls are awaitable, never block a worker thread,
// and end within the store's deadline with a value or an error.
class Store {
 public:
  virtual ~Store() = default;
  virtual const char* backend() const = 0;  // "redis" or "memory"

  virtual boost::asio::awaitable<StoreResult<RateResult>> rate_limit(
      const std::string& key, RateSpec spec, std::int64_t cost, RateMode mode, StoreTime now) = 0;

  // Takes (or refreshes) `slot` in the semaphore `key` of size `limit`; slots expire
  // `ttl` after their last acquire.
  virtual boost::asio::awaitable<StoreResult<SlotResult>> acquire_slot(const std::string& key,
                                                                       const std::string& slot,
                                                                       std::int64_t limit,
                                                                       std::chrono::seconds ttl,
                                                                       StoreTime now) = 0;
  virtual boost::asio::awaitable<StoreResult<bool>> release_slot(const std::string& key,
                                                                 const std::string& slot) = 0;

  // Adds `good` and `bad` to every key's decayed record; answers the updated records.
  virtual boost::asio::awaitable<StoreResult<std::vector<Reputation>>> reputation_update(
      const std::vector<std::string>& keys, double good, double bad, std::chrono::seconds half_life,
      StoreTime now) = 0;
  // The records decayed to `now` (a never-seen key answers zeros).
  virtual boost::asio::awaitable<StoreResult<std::vector<Reputation>>> reputation_get(
      const std::vector<std::string>& keys, std::chrono::seconds half_life, StoreTime now) = 0;

  // `net_key` names the client net (its hash tag must be the triplet's).
  virtual boost::asio::awaitable<StoreResult<GreylistResult>> greylist(
      const std::string& triplet_key, const std::string& net_key, GreylistSpec spec,
      StoreTime now) = 0;

  // Plain values with an expiry (caches).
  virtual boost::asio::awaitable<StoreResult<std::optional<std::string>>> get(
      const std::string& key) = 0;
  virtual boost::asio::awaitable<StoreResult<bool>> set(const std::string& key, std::string value,
                                                        std::chrono::milliseconds ttl) = 0;
  // Deletes a key of any kind (a support reset). True when it existed.
  virtual boost::asio::awaitable<StoreResult<bool>> remove(const std::string& key) = 0;
};

// Closed -> (failure_threshold consecutive failures) -> open -> (open_for elapsed) ->
// half-open: one probe call goes through; its success closes, its failure reopens for
// twice as long (up to max_open_for). Stops hammering a dead Redis, finds it again.
class CircuitBreaker {
 public:
  using Clock = std::chrono::steady_clock;
  enum class State { closed, open, half_open };
  struct Options {
    int failure_threshold = 5;
    std::chrono::milliseconds open_for{1000};
    std::chrono::milliseconds max_open_for{30000};
  };

  CircuitBreaker() = default;
  explicit CircuitBreaker(Options options) : options_(options), open_for_(options.open_for) {}

  // May a call go out now? In half-open state only one probe is let through at a time.
  bool allow(Clock::time_point now);
  // Both answer true when the state changed (for a log line and the metric).
  bool record_success();
  bool record_failure(Clock::time_point now);

  State state() const { return state_; }
  std::chrono::milliseconds open_for() const { return open_for_; }

 private:
  Options options_;
  State state_ = State::closed;
  int failures_ = 0;
  bool probe_in_flight_ = false;
  Clock::time_point reopen_at_{};
  std::chrono::milliseconds open_for_{options_.open_for};
};
const char* breaker_state_name(CircuitBreaker::State state);

// The process-wide embedded store: created at first use, shared by every worker thread
// (it locks per shard) and kept across policy reloads.
std::shared_ptr<Store> embedded_store();
// The store one worker thread uses: a Redis connection of its own when `redis` is
// configured (call from any thread; it connects lazily on `executor`), else the
// embedded store.
std::shared_ptr<Store> make_store(boost::asio::any_io_executor executor,
                                  const policy::Config& config);

}  // namespace mxgate::filters

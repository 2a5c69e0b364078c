// Arithmetic shared by both stores (GCRA, decay), key building, the circuit breaker, and
// the choice between Redis and the embedded store.
#include "filters/store.hpp"

#include <algorithm>
#include <cmath>
#include <mutex>

#include "filters/memory_store.hpp"
#include "filters/redis_store.hpp"
#include "policy/config.hpp"

namespace mxgate::filters {

const char* store_error_name(StoreError error) {
  switch (error) {
    case StoreError::none:
      return "none";
    case StoreError::timeout:
      return "timeout";
    case StoreError::unavailable:
      return "unavailable";
    case StoreError::failed:
      return "failed";
  }
  return "unknown";
}

StoreTime store_now() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

GcraParameters gcra_parameters(const RateSpec& spec) {
  GcraParameters parameters;
  const double rate = spec.rate > 0 ? spec.rate : 1e-9;
  // At least one microsecond, at most a year: a zero interval would never limit.
  parameters.interval = static_cast<std::int64_t>(
      std::clamp(std::llround(1e6 / rate), 1LL, 365LL * 86400 * kMicrosPerSecond));
  parameters.capacity =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(std::floor(spec.burst)));
  return parameters;
}

GcraStep gcra_step(std::optional<std::int64_t> tat, GcraParameters parameters, std::int64_t cost,
                   RateMode mode, StoreTime now) {
  // The Lua script in redis_store.cpp is this function line for line; keep them together.
  std::int64_t start = tat.value_or(now);
  if (start < now) start = now;
  const std::int64_t new_tat = start + cost * parameters.interval;
  const std::int64_t allow_at = new_tat - parameters.capacity * parameters.interval;
  GcraStep step;
  step.result.allowed = now >= allow_at;
  if (step.result.allowed) {
    step.result.remaining = (now - allow_at) / parameters.interval;
  } else {
    step.result.retry_after = std::chrono::microseconds(allow_at - now);
  }
  step.store = mode == RateMode::force || (mode == RateMode::consume && step.result.allowed);
  if (step.store) {
    step.new_tat = new_tat;
    step.ttl = new_tat - now;
  }
  return step;
}

Reputation decay(const Reputation& reputation, std::chrono::seconds half_life, StoreTime now) {
  Reputation decayed = reputation;
  if (reputation.updated == 0 || now <= reputation.updated || half_life.count() <= 0) {
    return decayed;
  }
  const double elapsed = static_cast<double>(now - reputation.updated) / kMicrosPerSecond;
  const double factor = std::pow(2.0, -elapsed / static_cast<double>(half_life.count()));
  decayed.good = reputation.good * factor;
  decayed.bad = reputation.bad * factor;
  return decayed;
}

namespace {

// Braces would end or open a hash tag early, '%' is the escape itself, and blanks or
// control characters make keys unreadable in redis-cli.
bool needs_escape(char character) {
  const auto byte = static_cast<unsigned char>(character);
  return character == '{' || character == '}' || character == '%' || byte <= 0x20 || byte == 0x7f;
}

}  // namespace

std::string store_key(std::string_view kind, std::string_view identity) {
  std::string key;
  key.reserve(kind.size() + identity.size() + 3);
  key.append(kind);
  key += ":{";
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char character : identity) {
    if (!needs_escape(character)) {
      key += character;
      continue;
    }
    const auto byte = static_cast<unsigned char>(character);
    key += '%';
    key += kHex[byte >> 4];
    key += kHex[byte & 0x0f];
  }
  key += '}';
  return key;
}

std::string store_subkey(std::string_view tag_key, std::string_view suffix) {
  std::string key(tag_key);
  key += ':';
  for (char character : suffix) {
    // The suffix may not open a second tag; it is never hashed (the first tag wins).
    key += needs_escape(character) ? '_' : character;
  }
  return key;
}

std::uint16_t hash_slot(std::string_view key) {
  // Redis Cluster specification, "Hash tags": hash only what is between the first '{'
  // and the next '}', when that is not empty.
  if (const auto open = key.find('{'); open != std::string_view::npos) {
    if (const auto close = key.find('}', open + 1);
        close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  std::uint16_t crc = 0;  // CRC16/XMODEM: polynomial 0x1021, initial 0
  for (char character : key) {
    crc ^= static_cast<std::uint16_t>(static_cast<unsigned char>(character) << 8);
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021)
                           : static_cast<std::uint16_t>(crc << 1);
    }
  }
  return crc & 16383;
}

bool CircuitBreaker::allow(Clock::time_point now) {
  switch (state_) {
    case State::closed:
      return true;
    case State::open:
      if (now < reopen_at_) return false;
      state_ = State::half_open;
      probe_in_flight_ = true;
      return true;
    case State::half_open:
      if (probe_in_flight_) return false;
      probe_in_flight_ = true;
      return true;
  }
  return false;
}

bool CircuitBreaker::record_success() {
  failures_ = 0;
  probe_in_flight_ = false;
  if (state_ == State::closed) return false;
  state_ = State::closed;
  open_for_ = options_.open_for;
  return true;
}

bool CircuitBreaker::record_failure(Clock::time_point now) {
  switch (state_) {
    case State::closed:
      if (++failures_ < options_.failure_threshold) return false;
      state_ = State::open;
      open_for_ = options_.open_for;
      reopen_at_ = now + open_for_;
      return true;
    case State::half_open:
      // The probe failed: wait longer before the next one.
      probe_in_flight_ = false;
      state_ = State::open;
      open_for_ = std::min(open_for_ * 2, options_.max_open_for);
      reopen_at_ = now + open_for_;
      return true;
    case State::open:
      // A call admitted before the breaker opened failed late; nothing changes.
      return false;
  }
  return false;
}

const char* breaker_state_name(CircuitBreaker::State state) {
  switch (state) {
    case CircuitBreaker::State::closed:
      return "closed";
    case CircuitBreaker::State::open:
      return "open";
    case CircuitBreaker::State::half_open:
      return "half_open";
  }
  return "unknown";
}

std::shared_ptr<Store> embedded_store() {
  // One per process, created at first use and kept across reloads: a reload must not
  // hand every client a fresh rate-limit budget.
  static std::mutex mutex;
  static std::shared_ptr<Store> store;
  std::lock_guard lock(mutex);
  if (!store) store = std::make_shared<MemoryStore>();
  return store;
}

std::shared_ptr<Store> make_store(boost::asio::any_io_executor executor,
                                  const policy::Config& config) {
  if (!config.redis) return embedded_store();
  return std::make_shared<RedisStore>(std::move(executor), redis_store_options(*config.redis));
}

}  // namespace mxgate::filters

// The Redis store: each atomic operation is a Lua script run with EVALSHA on this worker
// thread's RedisConnection (filters/redis_connection.hpp); plain ones are single commands.
#include "filters/redis_store.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <cstdlib>

#include "policy/config.hpp"

namespace mxgate::filters {

namespace asio = boost::asio;

namespace {

// ---- Lua scripts. Each mirrors a C++ function of store.cpp / memory_store.cpp; the
// "same answers" test runs one table of operations against both. Numbers travel as
// integers of microseconds (exact in Lua's doubles up to 2^53, year 2255). ----

// Indexes into kScripts (the connection loads them in this order).
namespace script {
constexpr std::size_t rate_limit = 0;
constexpr std::size_t acquire_slot = 1;
constexpr std::size_t reputation_update = 2;
constexpr std::size_t greylist = 3;
}  // namespace script

// gcra_step() in store.cpp. KEYS[1] bucket; ARGV interval, capacity, cost, mode, now.
constexpr const char* kRateLimitScript = R"lua(
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local mode = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local start = now
local stored = redis.call('GET', KEYS[1])
if stored then start = tonumber(stored) end
if start < now then start = now end
local new_tat = start + cost * interval
local allow_at = new_tat - capacity * interval
local allowed = 0
local remaining = 0
local retry_after = 0
if now >= allow_at then
  allowed = 1
  remaining = math.floor((now - allow_at) / interval)
else
  retry_after = allow_at - now
end
if mode == 2 or (mode == 0 and allowed == 1) then
  local ttl = new_tat - now
  if ttl > 0 then
    redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(ttl / 1000))
  end
end
return {allowed, remaining, retry_after}
)lua";

// A sorted set of slot -> expiry. KEYS[1] semaphore; ARGV slot, limit, ttl, now.
constexpr const char* kAcquireSlotScript = R"lua(
local limit = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
local expiry = string.format('%.0f', now + ttl)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
local count = redis.call('ZCARD', KEYS[1])
if not held then
  if count >= limit then return {0, count} end
  count = count + 1
end
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000))
return {1, count}
)lua";

// decay() in store.cpp plus an addition. KEYS[1] record; ARGV good, bad, half_life (s), now.
constexpr const char* kReputationUpdateScript = R"lua(
local values = redis.call('HMGET', KEYS[1], 'good', 'bad', 'updated')
local good, bad, updated = 0, 0, 0
if values[1] then good = tonumber(values[1]) end
if values[2] then bad = tonumber(values[2]) end
if values[3] then updated = tonumber(values[3]) end
local half = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if updated ~= 0 and now > updated and half > 0 then
  local factor = 2 ^ (-((now - updated) / 1000000) / half)
  good = good * factor
  bad = bad * factor
end
good = good + tonumber(ARGV[1])
bad = bad + tonumber(ARGV[2])
local good_text = string.format('%.17g', good)
local bad_text = string.format('%.17g', bad)
redis.call('HSET', KEYS[1], 'good', good_text, 'bad', bad_text, 'updated', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], 20 * half * 1000)
return {good_text, bad_text}
)lua";

// MemoryStore::greylist_now(). Values are "value:expires" so an entry expires at the
// caller's clock, as in the embedded store. KEYS triplet, net allowlist, net retries;
// ARGV delay, retry_window, lifetime, auto_allowlist, now.
constexpr const char* kGreylistScript = R"lua(
local delay = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local lifetime = tonumber(ARGV[3])
local auto = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local function live(key)
  local value = redis.call('GET', key)
  if not value then return nil end
  local separator = string.find(value, ':', 1, true)
  if not separator or tonumber(string.sub(value, separator + 1)) <= now then return nil end
  return string.sub(value, 1, separator - 1)
end
local function put(key, value, ttl)
  redis.call('SET', key, value .. ':' .. string.format('%.0f', now + ttl), 'PX', math.ceil(ttl / 1000))
end
if auto > 0 and live(KEYS[2]) then return {3, 0} end
local first = live(KEYS[1])
if not first then
  put(KEYS[1], string.format('%.0f', now), window)
  return {0, delay}
end
if first == 'passed' then
  put(KEYS[1], 'passed', lifetime)
  return {2, 0}
end
local waited = now - tonumber(first)
if waited < delay then return {0, delay - waited} end
put(KEYS[1], 'passed', lifetime)
if auto > 0 then
  local count = tonumber(live(KEYS[3]) or '0') + 1
  put(KEYS[3], string.format('%d', count), lifetime)
  if count >= auto then put(KEYS[2], '1', lifetime) end
end
return {1, 0}
)lua";

constexpr std::array<const char*, 4> kScripts{kRateLimitScript, kAcquireSlotScript,
                                              kReputationUpdateScript, kGreylistScript};

std::string number(std::int64_t value) { return std::to_string(value); }

}  // namespace

// ---- RedisStore ----

RedisStoreOptions redis_store_options(const policy::RedisConfig& config) {
  RedisStoreOptions options;
  options.host = config.address.host;
  options.port = config.address.port;
  options.password = config.password;
  options.database = config.database;
  options.timeout = config.timeout;
  options.connect_timeout = config.connect_timeout;
  options.key_prefix = config.key_prefix;
  return options;
}

RedisStore::RedisStore(asio::any_io_executor executor, RedisStoreOptions options)
    : executor_(executor),
      connection_(std::make_shared<RedisConnection>(
          std::move(executor), std::move(options),
          std::vector<std::string>(kScripts.begin(), kScripts.end()))) {}

RedisStore::~RedisStore() {
  // The store may die on any thread (the last session of an old policy generation); the
  // connection belongs to its worker thread, so it is closed there.
  asio::post(executor_, [connection = std::move(connection_)] { connection->close(); });
}

CircuitBreaker::State RedisStore::breaker_state() const { return connection_->breaker_state(); }
bool RedisStore::connected() const { return connection_->ready(); }
const RedisStoreOptions& RedisStore::options() const { return connection_->options(); }

std::string RedisStore::prefixed(const std::string& key) const {
  const std::string& prefix = connection_->options().key_prefix;
  return prefix.empty() ? key : prefix + ":" + key;
}

namespace {

bool integer_at(const RedisValue& value, std::size_t index, long long& out) {
  if (value.type != RedisValue::Type::array || value.elements.size() <= index) return false;
  const RedisValue& element = value.elements[index];
  if (element.type != RedisValue::Type::integer) return false;
  out = element.integer;
  return true;
}

double double_of(const RedisValue& value) {
  if (value.type != RedisValue::Type::string) return 0;
  return std::strtod(value.text.c_str(), nullptr);
}

}  // namespace

asio::awaitable<StoreResult<RateResult>> RedisStore::rate_limit(const std::string& key,
                                                                RateSpec spec, std::int64_t cost,
                                                                RateMode mode, StoreTime now) {
  const GcraParameters parameters = gcra_parameters(spec);
  const int mode_number = mode == RateMode::consume ? 0 : mode == RateMode::peek ? 1 : 2;
  // Arguments are built outside the co_await: GCC 12 miscompiles braced lists there.
  std::vector<RedisCommand> calls{{prefixed(key), number(parameters.interval),
                                   number(parameters.capacity), number(cost), number(mode_number),
                                   number(now)}};
  RedisOutcome outcome = co_await connection_->evaluate(script::rate_limit, std::move(calls),
                                                        std::vector<std::size_t>(1, 1));
  if (outcome.error != StoreError::none) {
    co_return StoreResult<RateResult>::failure(outcome.error, outcome.message);
  }
  long long allowed = 0, remaining = 0, retry_after = 0;
  if (!integer_at(outcome.replies[0], 0, allowed) ||
      !integer_at(outcome.replies[0], 1, remaining) ||
      !integer_at(outcome.replies[0], 2, retry_after)) {
    co_return StoreResult<RateResult>::failure(StoreError::failed, "unexpected script reply");
  }
  co_return StoreResult<RateResult>::success(
      {allowed == 1, remaining, std::chrono::microseconds(retry_after)});
}

asio::awaitable<StoreResult<SlotResult>> RedisStore::acquire_slot(const std::string& key,
                                                                  const std::string& slot,
                                                                  std::int64_t limit,
                                                                  std::chrono::seconds ttl,
                                                                  StoreTime now) {
  std::vector<RedisCommand> calls{
      {prefixed(key), slot, number(limit), number(ttl.count() * kMicrosPerSecond), number(now)}};
  RedisOutcome outcome = co_await connection_->evaluate(script::acquire_slot, std::move(calls),
                                                        std::vector<std::size_t>(1, 1));
  if (outcome.error != StoreError::none) {
    co_return StoreResult<SlotResult>::failure(outcome.error, outcome.message);
  }
  long long acquired = 0, in_use = 0;
  if (!integer_at(outcome.replies[0], 0, acquired) || !integer_at(outcome.replies[0], 1, in_use)) {
    co_return StoreResult<SlotResult>::failure(StoreError::failed, "unexpected script reply");
  }
  co_return StoreResult<SlotResult>::success({acquired == 1, in_use});
}

asio::awaitable<StoreResult<bool>> RedisStore::release_slot(const std::string& key,
                                                            const std::string& slot) {
  std::vector<RedisCommand> commands{{"ZREM", prefixed(key), slot}};
  RedisOutcome outcome = co_await connection_->run(std::move(commands));
  if (outcome.error == StoreError::none && outcome.replies[0].type == RedisValue::Type::error) {
    outcome.error = StoreError::failed;
    outcome.message = outcome.replies[0].text;
  }
  if (outcome.error != StoreError::none) {
    co_return StoreResult<bool>::failure(outcome.error, outcome.message);
  }
  co_return StoreResult<bool>::success(outcome.replies[0].integer > 0);
}

asio::awaitable<StoreResult<std::vector<Reputation>>> RedisStore::reputation_update(
    const std::vector<std::string>& keys, double good, double bad, std::chrono::seconds half_life,
    StoreTime now) {
  // One script call per key (each its own slot), pipelined in one round trip.
  std::vector<RedisCommand> calls;
  std::vector<std::size_t> key_counts;
  for (const std::string& key : keys) {
    calls.push_back({prefixed(key), fmt::format("{:.17g}", good), fmt::format("{:.17g}", bad),
                     number(half_life.count()), number(now)});
    key_counts.push_back(1);
  }
  if (calls.empty()) co_return StoreResult<std::vector<Reputation>>::success({});
  RedisOutcome outcome =
      co_await connection_->evaluate(script::reputation_update, std::move(calls), key_counts);
  if (outcome.error != StoreError::none) {
    co_return StoreResult<std::vector<Reputation>>::failure(outcome.error, outcome.message);
  }
  std::vector<Reputation> records;
  for (const RedisValue& reply : outcome.replies) {
    Reputation record;
    if (reply.type == RedisValue::Type::array && reply.elements.size() == 2) {
      record.good = double_of(reply.elements[0]);
      record.bad = double_of(reply.elements[1]);
    }
    record.updated = now;
    records.push_back(record);
  }
  co_return StoreResult<std::vector<Reputation>>::success(std::move(records));
}

asio::awaitable<StoreResult<std::vector<Reputation>>> RedisStore::reputation_get(
    const std::vector<std::string>& keys, std::chrono::seconds half_life, StoreTime now) {
  std::vector<RedisCommand> commands;
  for (const std::string& key : keys) {
    commands.push_back({"HMGET", prefixed(key), "good", "bad", "updated"});
  }
  if (commands.empty()) co_return StoreResult<std::vector<Reputation>>::success({});
  RedisOutcome outcome = co_await connection_->run(std::move(commands));
  if (outcome.error != StoreError::none) {
    co_return StoreResult<std::vector<Reputation>>::failure(outcome.error, outcome.message);
  }
  std::vector<Reputation> records;
  for (const RedisValue& reply : outcome.replies) {
    if (reply.type == RedisValue::Type::error) {
      co_return StoreResult<std::vector<Reputation>>::failure(StoreError::failed, reply.text);
    }
    Reputation record;
    if (reply.type == RedisValue::Type::array && reply.elements.size() == 3) {
      record.good = double_of(reply.elements[0]);
      record.bad = double_of(reply.elements[1]);
      record.updated = static_cast<StoreTime>(double_of(reply.elements[2]));
    }
    records.push_back(decay(record, half_life, now));
  }
  co_return StoreResult<std::vector<Reputation>>::success(std::move(records));
}

asio::awaitable<StoreResult<GreylistResult>> RedisStore::greylist(const std::string& triplet_key,
                                                                  const std::string& net_key,
                                                                  GreylistSpec spec,
                                                                  StoreTime now) {
  const auto micros = [](std::chrono::seconds value) {
    return number(value.count() * kMicrosPerSecond);
  };
  std::vector<RedisCommand> calls{{prefixed(triplet_key), prefixed(net_key),
                                   prefixed(store_subkey(net_key, "retries")), micros(spec.delay),
                                   micros(spec.retry_window), micros(spec.lifetime),
                                   number(spec.auto_allowlist), number(now)}};
  RedisOutcome outcome = co_await connection_->evaluate(script::greylist, std::move(calls),
                                                        std::vector<std::size_t>(1, 3));
  if (outcome.error != StoreError::none) {
    co_return StoreResult<GreylistResult>::failure(outcome.error, outcome.message);
  }
  long long state = 0, wait = 0;
  if (!integer_at(outcome.replies[0], 0, state) || !integer_at(outcome.replies[0], 1, wait)) {
    co_return StoreResult<GreylistResult>::failure(StoreError::failed, "unexpected script reply");
  }
  GreylistResult result;
  result.state = static_cast<GreylistResult::State>(std::clamp(state, 0LL, 3LL));
  result.wait = std::chrono::seconds((wait + kMicrosPerSecond - 1) / kMicrosPerSecond);
  co_return StoreResult<GreylistResult>::success(result);
}

asio::awaitable<StoreResult<std::optional<std::string>>> RedisStore::get(const std::string& key) {
  std::vector<RedisCommand> commands{{"GET", prefixed(key)}};
  RedisOutcome outcome = co_await connection_->run(std::move(commands));
  if (outcome.error == StoreError::none && outcome.replies[0].type == RedisValue::Type::error) {
    outcome.error = StoreError::failed;
    outcome.message = outcome.replies[0].text;
  }
  if (outcome.error != StoreError::none) {
    co_return StoreResult<std::optional<std::string>>::failure(outcome.error, outcome.message);
  }
  std::optional<std::string> value;
  if (outcome.replies[0].type == RedisValue::Type::string) value = outcome.replies[0].text;
  co_return StoreResult<std::optional<std::string>>::success(std::move(value));
}

asio::awaitable<StoreResult<bool>> RedisStore::set(const std::string& key, std::string value,
                                                   std::chrono::milliseconds ttl) {
  RedisCommand command{"SET", prefixed(key), std::move(value)};
  if (ttl.count() > 0) {
    command.push_back("PX");
    command.push_back(number(ttl.count()));
  }
  std::vector<RedisCommand> commands{std::move(command)};
  RedisOutcome outcome = co_await connection_->run(std::move(commands));
  if (outcome.error == StoreError::none && outcome.replies[0].type == RedisValue::Type::error) {
    outcome.error = StoreError::failed;
    outcome.message = outcome.replies[0].text;
  }
  if (outcome.error != StoreError::none) {
    co_return StoreResult<bool>::failure(outcome.error, outcome.message);
  }
  co_return StoreResult<bool>::success(true);
}

asio::awaitable<StoreResult<bool>> RedisStore::remove(const std::string& key) {
  std::vector<RedisCommand> commands{{"DEL", prefixed(key)}};
  RedisOutcome outcome = co_await connection_->run(std::move(commands));
  if (outcome.error == StoreError::none && outcome.replies[0].type == RedisValue::Type::error) {
    outcome.error = StoreError::failed;
    outcome.message = outcome.replies[0].text;
  }
  if (outcome.error != StoreError::none) {
    co_return StoreResult<bool>::failure(outcome.error, outcome.message);
  }
  co_return StoreResult<bool>::success(outcome.replies[0].integer > 0);
}

asio::awaitable<StoreResult<RedisValue>> RedisStore::command(std::vector<std::string> arguments) {
  std::vector<RedisCommand> commands{std::move(arguments)};
  RedisOutcome outcome = co_await connection_->run(std::move(commands));
  if (outcome.error != StoreError::none) {
    co_return StoreResult<RedisValue>::failure(outcome.error, outcome.message);
  }
  co_return StoreResult<RedisValue>::success(std::move(outcome.replies[0]));
}

}  // namespace mxgate::filters

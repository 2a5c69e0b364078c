// The Redis store against a real redis-server on a loopback port: exact limits shared by
// two clients, expiring slots, reputation, failures within the deadline, the circuit
// breaker, recovery, NOSCRIPT, AUTH/SELECT, and the same answers as the embedded store.
#include "filters/redis_store.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <boost/asio/detached.hpp>
#include <functional>

#include "filters/memory_store.hpp"
#include "tests/unit/filters/coroutine_support.hpp"
#include "tests/unit/filters/redis_server.hpp"

namespace mxgate::filters {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using testing::RedisServer;
using testing::run_until_done;

constexpr StoreTime kSecond = kMicrosPerSecond;

class RedisStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!RedisServer::available()) GTEST_SKIP() << "redis-server is not installed";
    server_ = std::make_unique<RedisServer>();
  }
  void TearDown() override {
    stores_.clear();
    io_.poll();  // let the stores close their connections
    server_.reset();
  }

  RedisStoreOptions options(std::uint16_t port = 0) {
    RedisStoreOptions options;
    options.port = port != 0 ? port : server_->port();
    options.timeout = 200ms;
    options.connect_timeout = 500ms;
    options.key_prefix = "test";
    options.breaker = {3, 300ms, 1000ms};
    options.reconnect_min = 50ms;
    options.reconnect_max = 200ms;
    return options;
  }
  RedisStore& make_store(RedisStoreOptions store_options) {
    stores_.push_back(std::make_unique<RedisStore>(io_.get_executor(), std::move(store_options)));
    return *stores_.back();
  }
  RedisStore& make_store() { return make_store(options()); }

  template <typename T>
  T run(asio::awaitable<T> work) {
    return run_until_done(io_, std::move(work));
  }
  StoreResult<RateResult> rate(Store& store, const std::string& key, RateSpec spec, StoreTime now,
                               RateMode mode = RateMode::consume) {
    return run(store.rate_limit(key, spec, 1, mode, now));
  }
  void sleep_for(std::chrono::milliseconds duration) {
    auto wait = [this, duration]() -> asio::awaitable<void> {
      asio::steady_timer timer(io_, duration);
      co_await timer.async_wait(asio::use_awaitable);
    };
    run(wait());
  }

  asio::io_context io_;
  std::unique_ptr<RedisServer> server_;
  std::vector<std::unique_ptr<RedisStore>> stores_;
};

TEST_F(RedisStoreTest, RateIsEnforcedExactlyAndRefills) {
  RedisStore& store = make_store();
  const StoreTime now = store_now();
  const RateSpec spec{1, 5};
  for (int i = 0; i < 5; ++i) {
    auto result = rate(store, "rl:{exact}", spec, now);
    ASSERT_TRUE(result.ok()) << result.message;
    EXPECT_TRUE(result.value->allowed) << "event " << i;
    EXPECT_EQ(result.value->remaining, 4 - i);
  }
  auto refused = rate(store, "rl:{exact}", spec, now);
  ASSERT_TRUE(refused.ok());
  EXPECT_FALSE(refused.value->allowed);
  EXPECT_EQ(refused.value->retry_after, 1s);
  EXPECT_TRUE(rate(store, "rl:{exact}", spec, now + kSecond).value->allowed);
  EXPECT_FALSE(rate(store, "rl:{exact}", spec, now + kSecond).value->allowed);
}

TEST_F(RedisStoreTest, RefillsInRealTime) {
  RedisStore& store = make_store();
  const RateSpec spec{20, 2};  // one every 50 ms
  EXPECT_TRUE(rate(store, "rl:{real}", spec, store_now()).value->allowed);
  EXPECT_TRUE(rate(store, "rl:{real}", spec, store_now()).value->allowed);
  EXPECT_FALSE(rate(store, "rl:{real}", spec, store_now()).value->allowed);
  sleep_for(60ms);
  EXPECT_TRUE(rate(store, "rl:{real}", spec, store_now()).value->allowed);
  // The key expires with the bucket full: nothing is left behind.
  sleep_for(150ms);
  auto exists = run(store.command({"EXISTS", "test:rl:{real}"}));
  ASSERT_TRUE(exists.ok());
  EXPECT_EQ(exists.value->integer, 0);
}

TEST_F(RedisStoreTest, TwoInstancesShareOneLimit) {
  RedisStore& first = make_store();
  RedisStore& second = make_store();
  const StoreTime now = store_now();
  int allowed = 0;
  for (int i = 0; i < 10; ++i) {
    RedisStore& store = i % 2 == 0 ? first : second;
    auto result = rate(store, "rl:{shared}", {0.01, 7}, now);
    ASSERT_TRUE(result.ok()) << result.message;
    allowed += result.value->allowed ? 1 : 0;
  }
  EXPECT_EQ(allowed, 7);
}

TEST_F(RedisStoreTest, PipelinedConcurrentCallsCountExactly) {
  RedisStore& store = make_store();
  const StoreTime now = store_now();
  auto many = [&]() -> asio::awaitable<int> {
    // 50 calls in flight at once on one connection. The lambda outlives its coroutines.
    int allowed = 0;
    int finished = 0;
    auto one = [&]() -> asio::awaitable<void> {
      auto result = co_await store.rate_limit("rl:{burst}", {0.01, 20}, 1, RateMode::consume, now);
      if (result.ok() && result.value->allowed) ++allowed;
      ++finished;
    };
    for (int i = 0; i < 50; ++i) asio::co_spawn(io_, one(), asio::detached);
    asio::steady_timer timer(io_);
    while (finished < 50) {
      timer.expires_after(5ms);
      co_await timer.async_wait(asio::use_awaitable);
    }
    co_return allowed;
  };
  EXPECT_EQ(run(many()), 20);
}

TEST_F(RedisStoreTest, ConcurrencySlotsAcrossInstancesAndExpiry) {
  RedisStore& first = make_store();
  RedisStore& second = make_store();
  const StoreTime now = store_now();
  auto acquire = [&](RedisStore& store, const char* slot, StoreTime at) {
    auto result = run(store.acquire_slot("cc:{192.0.2.7}", slot, 2, 30s, at));
    EXPECT_TRUE(result.ok()) << result.message;
    return result.value.value_or(SlotResult{});
  };
  EXPECT_EQ(acquire(first, "mx1:s1", now), (SlotResult{true, 1}));
  EXPECT_EQ(acquire(second, "mx2:s1", now), (SlotResult{true, 2}));
  EXPECT_EQ(acquire(second, "mx2:s2", now), (SlotResult{false, 2}));
  EXPECT_TRUE(*run(first.release_slot("cc:{192.0.2.7}", "mx1:s1")).value);
  EXPECT_EQ(acquire(second, "mx2:s2", now), (SlotResult{true, 2}));
  // mx2 "crashes" holding two slots: 31 s later they are gone.
  EXPECT_EQ(acquire(first, "mx1:s3", now + 31 * kSecond), (SlotResult{true, 1}));
}

TEST_F(RedisStoreTest, ReputationMovesAndDecays) {
  RedisStore& store = make_store();
  const StoreTime now = store_now();
  const std::vector<std::string> keys{"rep:{ip:192.0.2.7}", "rep:{net:192.0.2.0/24}"};
  auto updated = run(store.reputation_update(keys, 1, 0, 3600s, now));
  ASSERT_TRUE(updated.ok()) << updated.message;
  run(store.reputation_update(keys, 0, 3, 3600s, now));
  auto read = run(store.reputation_get(keys, 3600s, now + 3600 * kSecond));
  ASSERT_TRUE(read.ok()) << read.message;
  ASSERT_EQ(read.value->size(), 2u);
  EXPECT_DOUBLE_EQ((*read.value)[0].good, 0.5);
  EXPECT_DOUBLE_EQ((*read.value)[0].bad, 1.5);
  EXPECT_TRUE(*run(store.remove("rep:{ip:192.0.2.7}")).value);
  EXPECT_DOUBLE_EQ((*run(store.reputation_get(keys, 3600s, now)).value)[0].good, 0);
}

TEST_F(RedisStoreTest, ScriptsAreReloadedAfterScriptFlush) {
  RedisStore& store = make_store();
  const StoreTime now = store_now();
  EXPECT_TRUE(rate(store, "rl:{flush}", {1, 2}, now).value->allowed);
  ASSERT_TRUE(run(store.command({"SCRIPT", "FLUSH"})).ok());
  auto result = rate(store, "rl:{flush}", {1, 2}, now);
  ASSERT_TRUE(result.ok()) << result.message;
  EXPECT_TRUE(result.value->allowed);
  EXPECT_FALSE(rate(store, "rl:{flush}", {1, 2}, now).value->allowed);  // counted once each
}

TEST_F(RedisStoreTest, AuthAndSelect) {
  RedisServer secured(0, {"--requirepass", "s3cret"});
  RedisStoreOptions good = options(secured.port());
  good.password = "s3cret";
  good.database = 3;
  RedisStore& store = make_store(good);
  ASSERT_TRUE(run(store.set("plain", "value", 10s)).ok());
  EXPECT_EQ(run(store.command({"CLIENT", "INFO"})).value->text.find("db=3") != std::string::npos,
            true);

  RedisStoreOptions wrong = options(secured.port());
  wrong.password = "guess";
  RedisStore& refused = make_store(wrong);
  auto result = run(refused.get("plain"));
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.message.find("AUTH"), std::string::npos) << result.message;
}

TEST_F(RedisStoreTest, KeysCarryPrefixAndHashTag) {
  RedisStore& store = make_store();
  rate(store, store_key("rl", "conn:192.0.2.7"), {1, 2}, store_now());
  auto keys = run(store.command({"KEYS", "*"}));
  ASSERT_TRUE(keys.ok());
  ASSERT_EQ(keys.value->elements.size(), 1u);
  EXPECT_EQ(keys.value->elements[0].text, "test:rl:{conn:192.0.2.7}");
}

TEST_F(RedisStoreTest, KilledMidRunFailsFastOpensBreakerAndRecovers) {
  RedisStore& store = make_store();
  const std::uint16_t port = server_->port();
  ASSERT_TRUE(rate(store, "rl:{kill}", {100, 100}, store_now()).ok());
  server_->kill();
  // Every call ends within its deadline (200 ms) with an error, never a hang.
  for (int i = 0; i < 5; ++i) {
    const auto started = std::chrono::steady_clock::now();
    auto result = rate(store, "rl:{kill}", {100, 100}, store_now());
    EXPECT_FALSE(result.ok());
    EXPECT_LT(std::chrono::steady_clock::now() - started, 300ms) << store_error_name(result.error);
  }
  EXPECT_EQ(store.breaker_state(), CircuitBreaker::State::open);
  auto blocked = rate(store, "rl:{kill}", {100, 100}, store_now());
  EXPECT_EQ(blocked.error, StoreError::unavailable);
  EXPECT_EQ(blocked.message, "circuit breaker open");

  server_ = std::make_unique<RedisServer>(port);
  // The next probe after the open period reconnects; calls succeed again.
  bool recovered = false;
  for (int i = 0; i < 40 && !recovered; ++i) {
    sleep_for(100ms);
    recovered = rate(store, "rl:{kill}", {100, 100}, store_now()).ok();
  }
  EXPECT_TRUE(recovered);
  EXPECT_EQ(store.breaker_state(), CircuitBreaker::State::closed);
  EXPECT_TRUE(store.connected());
}

TEST_F(RedisStoreTest, HungServerTimesOutWithinTheDeadline) {
  RedisStore& store = make_store();
  ASSERT_TRUE(rate(store, "rl:{hang}", {100, 100}, store_now()).ok());
  server_->pause();
  const auto started = std::chrono::steady_clock::now();
  auto result = rate(store, "rl:{hang}", {100, 100}, store_now());
  const auto elapsed = std::chrono::steady_clock::now() - started;
  server_->resume();
  EXPECT_EQ(result.error, StoreError::timeout);
  EXPECT_GE(elapsed, 190ms);
  EXPECT_LT(elapsed, 400ms);
  EXPECT_TRUE(rate(store, "rl:{hang}", {100, 100}, store_now()).ok());
}

TEST_F(RedisStoreTest, StoppedAtStartUpThenStarted) {
  const std::uint16_t port = RedisServer::free_port();
  RedisStore& store = make_store(options(port));
  for (int i = 0; i < 4; ++i) {
    const auto started = std::chrono::steady_clock::now();
    auto result = rate(store, "rl:{late}", {1, 1}, store_now());
    EXPECT_EQ(result.error, StoreError::unavailable) << result.message;
    EXPECT_LT(std::chrono::steady_clock::now() - started, 300ms);
  }
  RedisServer late(port);
  bool recovered = false;
  for (int i = 0; i < 40 && !recovered; ++i) {
    sleep_for(100ms);
    recovered = rate(store, "rl:{late}", {1, 1}, store_now()).ok();
  }
  EXPECT_TRUE(recovered);
  stores_.clear();
  io_.poll();
}

// One table of operations, run against Redis and the embedded store: the answers must
// be the same (reputation to 1e-9: the libm behind Lua's ^ and std::pow may round apart).
TEST_F(RedisStoreTest, EmbeddedStoreGivesTheSameAnswers) {
  RedisStore& redis = make_store();
  MemoryStore memory;
  const StoreTime base = store_now();
  GreylistSpec greylist;
  greylist.delay = 60s;
  greylist.retry_window = 600s;
  greylist.lifetime = 3600s;
  greylist.auto_allowlist = 2;
  const std::string net = store_key("gl", "198.51.100.0/24");
  using Operation = std::function<asio::awaitable<std::string>(Store&)>;
  auto at = [base](double seconds) { return base + static_cast<StoreTime>(seconds * kSecond); };
  auto rate_op = [&](std::string key, RateSpec spec, std::int64_t cost, RateMode mode,
                     double when) -> Operation {
    return [=](Store& store) -> asio::awaitable<std::string> {
      auto result = co_await store.rate_limit(key, spec, cost, mode, at(when));
      if (!result.ok()) co_return "error " + result.message;
      co_return fmt::format("rate {} {} {}", result.value->allowed, result.value->remaining,
                            result.value->retry_after.count());
    };
  };
  auto slot_op = [&](std::string slot, std::int64_t limit, double when) -> Operation {
    return [=](Store& store) -> asio::awaitable<std::string> {
      auto result = co_await store.acquire_slot("cc:{x}", slot, limit, 10s, at(when));
      if (!result.ok()) co_return "error " + result.message;
      co_return fmt::format("slot {} {}", result.value->acquired, result.value->in_use);
    };
  };
  auto release_op = [&](std::string slot) -> Operation {
    return [=](Store& store) -> asio::awaitable<std::string> {
      auto result = co_await store.release_slot("cc:{x}", slot);
      co_return fmt::format("release {}", result.value.value_or(false));
    };
  };
  auto reputation_op = [&](double good, double bad, double when) -> Operation {
    return [=](Store& store) -> asio::awaitable<std::string> {
      const std::vector<std::string> keys{"rep:{a}", "rep:{b}"};  // not braced in co_await (GCC 12)
      auto result = co_await store.reputation_update(keys, good, bad, 100s, at(when));
      if (!result.ok()) co_return "error " + result.message;
      const Reputation& first = result.value->front();
      co_return fmt::format("reputation {:.9f} {:.9f}", first.good, first.bad);
    };
  };
  auto read_op = [&](double when) -> Operation {
    return [=](Store& store) -> asio::awaitable<std::string> {
      const std::vector<std::string> keys{"rep:{b}", "rep:{none}"};
      auto result = co_await store.reputation_get(keys, 100s, at(when));
      if (!result.ok()) co_return "error " + result.message;
      co_return fmt::format("read {:.9f} {:.9f} {:.9f}", (*result.value)[0].good,
                            (*result.value)[0].bad, (*result.value)[1].good);
    };
  };
  auto greylist_op = [&](std::string sender, double when) -> Operation {
    return [=](Store& store) -> asio::awaitable<std::string> {
      auto result = co_await store.greylist(store_subkey(net, sender), net, greylist, at(when));
      if (!result.ok()) co_return "error " + result.message;
      co_return fmt::format("greylist {} {}", static_cast<int>(result.value->state),
                            result.value->wait.count());
    };
  };
  const std::vector<Operation> operations{
      rate_op("rl:{a}", {2, 3}, 1, RateMode::consume, 0),
      rate_op("rl:{a}", {2, 3}, 1, RateMode::consume, 0),
      rate_op("rl:{a}", {2, 3}, 1, RateMode::consume, 0.1),
      rate_op("rl:{a}", {2, 3}, 1, RateMode::consume, 0.2),
      rate_op("rl:{a}", {2, 3}, 1, RateMode::peek, 0.3),
      rate_op("rl:{a}", {2, 3}, 2, RateMode::consume, 0.9),
      rate_op("rl:{a}", {2, 3}, 1, RateMode::consume, 0.95),
      rate_op("rl:{a}", {2, 3}, 1, RateMode::consume, 5),
      rate_op("rl:{e}", {0.1, 3}, 5, RateMode::force, 0),
      rate_op("rl:{e}", {0.1, 3}, 1, RateMode::peek, 1),
      rate_op("rl:{e}", {0.1, 3}, 1, RateMode::peek, 30),
      rate_op("rl:{e}", {0.1, 3}, 0, RateMode::consume, 30),
      rate_op("rl:{z}", {1.0 / 3600, 1}, 1, RateMode::consume, 0),
      rate_op("rl:{z}", {1.0 / 3600, 1}, 1, RateMode::consume, 1800),
      slot_op("a", 2, 0),
      slot_op("b", 2, 1),
      slot_op("c", 2, 2),
      slot_op("a", 2, 3),
      release_op("b"),
      release_op("b"),
      slot_op("c", 2, 4),
      slot_op("d", 2, 4),
      slot_op("d", 2, 13.5),
      slot_op("e", 2, 13.5),
      reputation_op(1, 0, 0),
      reputation_op(2, 1, 50),
      reputation_op(0, 4, 250),
      read_op(250),
      read_op(1000),
      reputation_op(0.5, 0.25, 1000),
      greylist_op("s1", 0),
      greylist_op("s1", 30),
      greylist_op("s1", 59.5),
      greylist_op("s1", 60),
      greylist_op("s1", 61),
      greylist_op("s2", 100),
      greylist_op("s3", 100),
      greylist_op("s2", 700),  // beyond retry_window: a new first attempt
      greylist_op("s3", 170),  // second net retry: the net is allowlisted
      greylist_op("s4", 171),
      greylist_op("s4", 5000),  // allowlist expired after its lifetime
  };
  for (std::size_t i = 0; i < operations.size(); ++i) {
    const std::string from_redis = run(operations[i](redis));
    const std::string from_memory = run(operations[i](memory));
    EXPECT_EQ(from_redis, from_memory) << "operation " << i;
    EXPECT_EQ(from_redis.rfind("error", 0), std::string::npos) << from_redis;
  }
}

}  // namespace
}  // namespace mxgate::filters

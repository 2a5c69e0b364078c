// The store's arithmetic and the embedded store: GCRA to the microsecond, decay, keys and
// their Redis Cluster slots, the circuit breaker's transitions, expiry of slots.
#include "filters/store.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <thread>

#include "filters/memory_store.hpp"

namespace mxgate::filters {
namespace {

constexpr StoreTime kStart = 1'700'000'000LL * kMicrosPerSecond;
constexpr StoreTime kSecond = kMicrosPerSecond;

TEST(Gcra, ParametersFromRateAndBurst) {
  EXPECT_EQ(gcra_parameters({1, 5}).interval, kSecond);
  EXPECT_EQ(gcra_parameters({1, 5}).capacity, 5);
  EXPECT_EQ(gcra_parameters({60.0 / 3600, 0}).interval, 60 * kSecond);  // 60/h
  EXPECT_EQ(gcra_parameters({60.0 / 3600, 0}).capacity, 1);             // no burst: one at a time
  EXPECT_EQ(gcra_parameters({1e9, 1}).interval, 1);                     // never zero
}

TEST(Gcra, BurstPassesThenRefusesWithRetryAfter) {
  const GcraParameters parameters = gcra_parameters({1, 3});
  std::optional<std::int64_t> tat;
  for (int event = 0; event < 3; ++event) {
    GcraStep step = gcra_step(tat, parameters, 1, RateMode::consume, kStart);
    ASSERT_TRUE(step.result.allowed) << "event " << event;
    EXPECT_EQ(step.result.remaining, 2 - event);
    ASSERT_TRUE(step.store);
    tat = step.new_tat;
  }
  GcraStep refused = gcra_step(tat, parameters, 1, RateMode::consume, kStart);
  EXPECT_FALSE(refused.result.allowed);
  EXPECT_FALSE(refused.store);
  EXPECT_EQ(refused.result.retry_after, std::chrono::seconds(1));
  // One interval later exactly one more fits.
  GcraStep later = gcra_step(tat, parameters, 1, RateMode::consume, kStart + kSecond);
  EXPECT_TRUE(later.result.allowed);
  EXPECT_EQ(later.result.remaining, 0);
  EXPECT_EQ(later.ttl, 3 * kSecond);  // the bucket is full again three intervals on
}

TEST(Gcra, PeekCountsNothingForceCountsEverything) {
  const GcraParameters parameters = gcra_parameters({1, 2});
  GcraStep peek = gcra_step(std::nullopt, parameters, 1, RateMode::peek, kStart);
  EXPECT_TRUE(peek.result.allowed);
  EXPECT_FALSE(peek.store);
  GcraStep force = gcra_step(std::nullopt, parameters, 5, RateMode::force, kStart);
  EXPECT_FALSE(force.result.allowed);  // five errors do not fit a budget of two...
  EXPECT_TRUE(force.store);            // ...but they happened: counted anyway
  EXPECT_EQ(force.new_tat, kStart + 5 * kSecond);
  GcraStep after = gcra_step(force.new_tat, parameters, 1, RateMode::peek, kStart);
  EXPECT_FALSE(after.result.allowed);
  EXPECT_EQ(after.result.retry_after, std::chrono::seconds(4));
}

TEST(Decay, HalvesEveryHalfLife) {
  const Reputation record{8, 4, kStart};
  const Reputation one = decay(record, std::chrono::seconds(3600), kStart + 3600 * kSecond);
  EXPECT_DOUBLE_EQ(one.good, 4);
  EXPECT_DOUBLE_EQ(one.bad, 2);
  const Reputation two = decay(record, std::chrono::seconds(3600), kStart + 7200 * kSecond);
  EXPECT_DOUBLE_EQ(two.good, 2);
  EXPECT_DOUBLE_EQ(decay(record, std::chrono::seconds(3600), kStart).good, 8);  // no time passed
  EXPECT_DOUBLE_EQ(decay({}, std::chrono::seconds(3600), kStart).good, 0);      // never seen
}

TEST(StoreKey, HashTagWrapsTheIdentity) {
  EXPECT_EQ(store_key("rl", "conn-per-ip:192.0.2.7"), "rl:{conn-per-ip:192.0.2.7}");
  // A sender may contain braces: escaped, so it cannot end or move the tag.
  EXPECT_EQ(store_key("rl", "a}b{c d%"), "rl:{a%7Db%7Bc%20d%25}");
  EXPECT_EQ(store_subkey("gl:{198.51.100.0/24}", "a@b:{c}@d"), "gl:{198.51.100.0/24}:a@b:_c_@d");
}

TEST(HashSlot, MatchesRedisCluster) {
  // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
  EXPECT_EQ(hash_slot("123456789"), 12739);
  EXPECT_EQ(hash_slot("foo"), 12182);
  EXPECT_EQ(hash_slot("{user1000}.following"), hash_slot("{user1000}.followers"));
  EXPECT_EQ(hash_slot("foo{}{bar}"), hash_slot("foo{}{bar}"));  // empty tag: whole key
  EXPECT_NE(hash_slot("foo{}{bar}"), hash_slot("bar"));
}

TEST(HashSlot, OneOperationOneSlot) {
  // The greylist script touches three keys: they must hash to one slot.
  const std::string net = store_key("gl", "198.51.100.0/24");
  const std::string triplet = store_subkey(net, "a@example.org:b@example.net");
  EXPECT_EQ(hash_slot("mxgate:" + net), hash_slot("mxgate:" + triplet));
  EXPECT_EQ(hash_slot("mxgate:" + net), hash_slot("mxgate:" + store_subkey(net, "retries")));
}

TEST(CircuitBreaker, OpensAfterThresholdProbesAndCloses) {
  using namespace std::chrono_literals;
  CircuitBreaker breaker({3, 1000ms, 4000ms});
  const auto now = CircuitBreaker::Clock::now();
  EXPECT_TRUE(breaker.allow(now));
  EXPECT_FALSE(breaker.record_failure(now));
  EXPECT_FALSE(breaker.record_failure(now));
  EXPECT_TRUE(breaker.record_failure(now));  // third: open
  EXPECT_EQ(breaker.state(), CircuitBreaker::State::open);
  EXPECT_FALSE(breaker.allow(now + 999ms));
  EXPECT_TRUE(breaker.allow(now + 1000ms));  // one probe...
  EXPECT_EQ(breaker.state(), CircuitBreaker::State::half_open);
  EXPECT_FALSE(breaker.allow(now + 1000ms));  // ...at a time
  EXPECT_TRUE(breaker.record_failure(now + 1000ms));
  EXPECT_EQ(breaker.state(), CircuitBreaker::State::open);
  EXPECT_EQ(breaker.open_for(), 2000ms);  // backs off
  EXPECT_FALSE(breaker.allow(now + 2999ms));
  EXPECT_TRUE(breaker.allow(now + 3000ms));
  EXPECT_TRUE(breaker.record_failure(now + 3000ms));
  EXPECT_EQ(breaker.open_for(), 4000ms);
  EXPECT_TRUE(breaker.allow(now + 7000ms));
  EXPECT_TRUE(breaker.record_failure(now + 7000ms));
  EXPECT_EQ(breaker.open_for(), 4000ms);  // capped
  EXPECT_TRUE(breaker.allow(now + 11000ms));
  EXPECT_TRUE(breaker.record_success());
  EXPECT_EQ(breaker.state(), CircuitBreaker::State::closed);
  EXPECT_EQ(breaker.open_for(), 1000ms);
  EXPECT_TRUE(breaker.allow(now + 11000ms));
}

TEST(CircuitBreaker, SuccessResetsTheFailureCount) {
  CircuitBreaker breaker({2, std::chrono::milliseconds(100), std::chrono::milliseconds(100)});
  const auto now = CircuitBreaker::Clock::now();
  EXPECT_FALSE(breaker.record_failure(now));
  EXPECT_FALSE(breaker.record_success());
  EXPECT_FALSE(breaker.record_failure(now));
  EXPECT_EQ(breaker.state(), CircuitBreaker::State::closed);
}

TEST(MemoryStore, RateRefillsOverTime) {
  MemoryStore store;
  const RateSpec spec{2, 4};  // 2/s, burst 4
  for (int i = 0; i < 4; ++i)
    EXPECT_TRUE(store.rate_limit_now("k", spec, 1, RateMode::consume, kStart).allowed);
  RateResult refused = store.rate_limit_now("k", spec, 1, RateMode::consume, kStart);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after, std::chrono::milliseconds(500));
  EXPECT_TRUE(store.rate_limit_now("k", spec, 1, RateMode::consume, kStart + kSecond / 2).allowed);
  EXPECT_FALSE(store.rate_limit_now("k", spec, 1, RateMode::consume, kStart + kSecond / 2).allowed);
  // After two seconds the bucket is full again and its entry has expired.
  EXPECT_EQ(store.rate_limit_now("k", spec, 1, RateMode::peek, kStart + 3 * kSecond).remaining, 3);
  EXPECT_TRUE(store.rate_limit_now("other", spec, 1, RateMode::consume, kStart).allowed);
}

TEST(MemoryStore, SlotsAreLimitedRefreshedAndExpire) {
  MemoryStore store;
  const auto ttl = std::chrono::seconds(60);
  EXPECT_EQ(store.acquire_slot_now("c", "a", 2, ttl, kStart), (SlotResult{true, 1}));
  EXPECT_EQ(store.acquire_slot_now("c", "b", 2, ttl, kStart), (SlotResult{true, 2}));
  EXPECT_EQ(store.acquire_slot_now("c", "c", 2, ttl, kStart), (SlotResult{false, 2}));
  EXPECT_EQ(store.acquire_slot_now("c", "a", 2, ttl, kStart + kSecond), (SlotResult{true, 2}));
  EXPECT_TRUE(store.release_slot_now("c", "b"));
  EXPECT_FALSE(store.release_slot_now("c", "b"));
  EXPECT_EQ(store.acquire_slot_now("c", "c", 2, ttl, kStart + kSecond), (SlotResult{true, 2}));
  // A crashed holder never releases: its slot goes away after ttl.
  EXPECT_EQ(store.acquire_slot_now("c", "d", 2, ttl, kStart + 62 * kSecond), (SlotResult{true, 1}));
}

TEST(MemoryStore, ReputationAccumulatesAndDecays) {
  MemoryStore store;
  const auto half_life = std::chrono::seconds(100);
  store.reputation_update_now("r", 1, 0, half_life, kStart);
  const Reputation after =
      store.reputation_update_now("r", 0, 2, half_life, kStart + 100 * kSecond);
  EXPECT_DOUBLE_EQ(after.good, 0.5);
  EXPECT_DOUBLE_EQ(after.bad, 2);
  const Reputation read = store.reputation_get_now("r", half_life, kStart + 200 * kSecond);
  EXPECT_DOUBLE_EQ(read.good, 0.25);
  EXPECT_DOUBLE_EQ(read.bad, 1);
  EXPECT_DOUBLE_EQ(store.reputation_get_now("unknown", half_life, kStart).good, 0);
}

TEST(MemoryStore, GreylistDefersThenPassesAndAllowlistsTheNet) {
  MemoryStore store;
  GreylistSpec spec;
  spec.delay = std::chrono::seconds(300);
  spec.auto_allowlist = 2;
  const std::string net = store_key("gl", "198.51.100.0/24");
  const auto triplet = [&](const char* sender) { return store_subkey(net, sender); };
  using State = GreylistResult::State;
  EXPECT_EQ(store.greylist_now(triplet("a"), net, spec, kStart),
            (GreylistResult{State::defer, std::chrono::seconds(300)}));
  EXPECT_EQ(store.greylist_now(triplet("a"), net, spec, kStart + 100 * kSecond),
            (GreylistResult{State::defer, std::chrono::seconds(200)}));
  EXPECT_EQ(store.greylist_now(triplet("a"), net, spec, kStart + 300 * kSecond).state,
            State::retried);
  EXPECT_EQ(store.greylist_now(triplet("a"), net, spec, kStart + 301 * kSecond).state,
            State::known);
  // A second triplet from the same net retries correctly: the net is allowlisted.
  EXPECT_EQ(store.greylist_now(triplet("b"), net, spec, kStart).state, State::defer);
  EXPECT_EQ(store.greylist_now(triplet("b"), net, spec, kStart + 400 * kSecond).state,
            State::retried);
  EXPECT_EQ(store.greylist_now(triplet("c"), net, spec, kStart + 401 * kSecond).state,
            State::allowlisted);
  // A first attempt not retried within retry_window is forgotten.
  const std::string other = store_key("gl", "203.0.113.0/24");
  EXPECT_EQ(store.greylist_now(store_subkey(other, "x"), other, spec, kStart).state, State::defer);
  EXPECT_EQ(store
                .greylist_now(store_subkey(other, "x"), other, spec,
                              kStart + spec.retry_window.count() * kSecond + 1)
                .state,
            State::defer);
}

TEST(MemoryStore, ValuesExpireAndRemoveWorksOnAnyKind) {
  boost::asio::io_context io;
  MemoryStore store;
  store.rate_limit_now("bucket", {1, 1}, 1, RateMode::consume, store_now());
  auto check = [&]() -> boost::asio::awaitable<void> {
    EXPECT_TRUE((co_await store.set("v", "hello", std::chrono::milliseconds(30))).ok());
    auto value = co_await store.get("v");
    EXPECT_EQ(value.value->value_or(""), "hello");
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
    EXPECT_FALSE((co_await store.get("v")).value->has_value());
    EXPECT_TRUE(*(co_await store.remove("bucket")).value);
    EXPECT_FALSE(*(co_await store.remove("bucket")).value);
  };
  boost::asio::co_spawn(io, check(), boost::asio::detached);
  io.run();
}

TEST(MemoryStore, ThreadsShareOneLimitExactly) {
  MemoryStore store;
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        if (store.rate_limit_now("shared", {1e-3, 1000}, 1, RateMode::consume, kStart).allowed) {
          ++allowed;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(allowed.load(), 1000);
}

TEST(MemoryStore, BoundedByEviction) {
  MemoryStore store(64, 4);
  for (int i = 0; i < 1000; ++i) {
    store.rate_limit_now("k" + std::to_string(i), {1e-3, 10}, 1, RateMode::consume, kStart);
  }
  EXPECT_LE(store.size(), 64u);
}

}  // namespace
}  // namespace mxgate::filters

// The store's hot operation, a rate-limit check: embedded (one thread and contended) and
// the Lua call on a loopback redis-server (one at a time, and 64 pipelined in flight).
#include <benchmark/benchmark.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <vector>

#include "filters/memory_store.hpp"
#include "filters/redis_store.hpp"
#include "tests/unit/filters/redis_server.hpp"

namespace {

using namespace mxgate::filters;
namespace asio = boost::asio;

std::vector<std::string> make_keys(std::size_t count) {
  std::vector<std::string> keys;
  for (std::size_t i = 0; i < count; ++i)
    keys.push_back(store_key("rl", "conn:10.0." + std::to_string(i)));
  return keys;
}

void BM_MemoryStoreRateLimit(benchmark::State& state) {
  static MemoryStore store;  // shared by the threads of the contended variant
  const auto keys = make_keys(4096);
  std::size_t next = static_cast<std::size_t>(state.thread_index()) * 997;
  for (auto _ : state) {
    const RateResult result = store.rate_limit_now(keys[next++ % keys.size()], {100, 50}, 1,
                                                   RateMode::consume, store_now());
    benchmark::DoNotOptimize(result);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MemoryStoreRateLimit);
BENCHMARK(BM_MemoryStoreRateLimit)->Threads(2);

// A redis-server of the benchmark's own on a free loopback port (skipped without one).
struct RedisFixture {
  RedisFixture() {
    if (!mxgate::filters::testing::RedisServer::available()) return;
    server = std::make_unique<mxgate::filters::testing::RedisServer>();
    RedisStoreOptions options;
    options.port = server->port();
    options.timeout = std::chrono::milliseconds(1000);
    options.key_prefix = "bench";
    store = std::make_unique<RedisStore>(io.get_executor(), options);
  }
  ~RedisFixture() {
    store.reset();
    io.poll();
  }
  asio::io_context io;
  std::unique_ptr<mxgate::filters::testing::RedisServer> server;
  std::unique_ptr<RedisStore> store;
};

// Runs `in_flight` rate-limit calls at once until all answered; returns failures.
int run_batch(RedisFixture& fixture, const std::vector<std::string>& keys, std::size_t& next,
              int in_flight) {
  int pending = in_flight;
  int failures = 0;
  auto one = [&](std::string key) -> asio::awaitable<void> {
    auto result =
        co_await fixture.store->rate_limit(key, {100, 50}, 1, RateMode::consume, store_now());
    if (!result.ok()) ++failures;
    --pending;
  };
  for (int i = 0; i < in_flight; ++i) {
    asio::co_spawn(fixture.io, one(keys[next++ % keys.size()]), asio::detached);
  }
  fixture.io.restart();
  while (pending > 0) fixture.io.run_one();
  return failures;
}

void BM_RedisRateLimit(benchmark::State& state) {
  RedisFixture fixture;
  if (!fixture.store) {
    state.SkipWithError("redis-server is not installed");
    return;
  }
  const auto keys = make_keys(4096);
  std::size_t next = 0;
  const int in_flight = static_cast<int>(state.range(0));
  if (run_batch(fixture, keys, next, 1) != 0) {  // connect and load the scripts
    state.SkipWithError("redis-server did not answer");
    return;
  }
  int failures = 0;
  for (auto _ : state) failures += run_batch(fixture, keys, next, in_flight);
  if (failures > 0) state.SkipWithError("some calls failed");
  state.SetItemsProcessed(state.iterations() * in_flight);
}
BENCHMARK(BM_RedisRateLimit)->Arg(1)->Arg(64)->UseRealTime();

}  // namespace

// The pipeline's own overhead: one session (connect, helo, mail, rcpt, data, close) through
// N filters that all answer `next` at once, so what is measured is the bookkeeping and
// the coroutine machinery (per-call deadline timer and `||`), not any filter's work.
#include <benchmark/benchmark.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "filters/pipeline.hpp"

namespace {

using namespace mxgate::filters;
namespace asio = boost::asio;

class NoopFilter final : public Filter {
 public:
  explicit NoopFilter(std::string name) : name_(std::move(name)) {}
  const std::string& name() const override { return name_; }
  bool wants(Stage) const override { return true; }
  std::unique_ptr<FilterInstance> open(Services&) const override {
    return std::make_unique<Instance>();
  }

 private:
  class Instance final : public FilterInstance {
   public:
    asio::awaitable<Verdict> on_stage(Stage, const SessionContext&) override {
      co_return Verdict::next();
    }
  };
  std::string name_;
};

constexpr Stage kStages[] = {Stage::connect, Stage::helo, Stage::mail,
                             Stage::rcpt,    Stage::data, Stage::close};

// range(0): filters; range(1): 1 = every call under the filter deadline (the default,
// limits.filter_timeout), 0 = no deadline (the timer and `||` left out).
void BM_PipelineSession(benchmark::State& state) {
  const auto filter_count = static_cast<std::size_t>(state.range(0));
  const bool deadline = state.range(1) != 0;
  std::vector<std::unique_ptr<Filter>> filters;
  for (std::size_t i = 0; i < filter_count; ++i)
    filters.push_back(std::make_unique<NoopFilter>("noop" + std::to_string(i)));
  mxgate::policy::Config config;
  config.hostname = "mx.example.org";
  config.scoring = {4, 6, 10};
  auto pipeline =
      Pipeline::assemble(std::move(filters), config,
                         deadline ? std::chrono::milliseconds(5000) : std::chrono::milliseconds(0));

  asio::io_context io;
  Services services;
  services.executor = io.get_executor();
  SessionContext context;
  context.session_id = "7Q3XK2PA";
  context.client_ip = "192.0.2.1";
  context.helo = "client.example";
  context.sender = "sender@client.example";
  context.sender_domain = "client.example";
  context.recipient = "alice@example.org";
  const std::string message = "Subject: hi\r\n\r\nHello.\r\n";
  context.message = &message;

  // The benchmark loop runs inside one coroutine on the io_context's thread, so each
  // stage costs what it costs in a session, without a co_spawn per iteration.
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (auto _ : state) {
          auto session = pipeline->start(services);
          for (const Stage stage : kStages) {
            Decision decision = co_await session->run(stage, context);
            benchmark::DoNotOptimize(decision);
          }
          session->reset_transaction();
        }
      },
      asio::detached);
  io.run();
  state.SetItemsProcessed(state.iterations());  // sessions of one message
  state.counters["filter_calls"] = benchmark::Counter(
      static_cast<double>(state.iterations() * std::size(kStages) * filter_count),
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PipelineSession)
    ->ArgsProduct({{0, 1, 4, 8}, {1, 0}})
    ->ArgNames({"filters", "deadline"});

}  // namespace

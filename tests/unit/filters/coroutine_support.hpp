// Test helpers: run one coroutine to completion on an io_context, and a scripted filter
// whose verdicts, delay and failures a test chooses.
#pragma once

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "filters/pipeline.hpp"

namespace mxgate::filters::testing {

// Runs the io_context until `work` is done (detached work it started may remain).
template <typename T>
T run_until_done(boost::asio::io_context& io, boost::asio::awaitable<T> work) {
  auto future = boost::asio::co_spawn(io, std::move(work), boost::asio::use_future);
  io.restart();
  while (future.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
    io.run_one_for(std::chrono::milliseconds(50));
  return future.get();
}

// A filter stage started without running the io_context, so that a test decides when
// it may finish (a gated store, a stage that must not wait). `context` must outlive the
// call: the coroutine reads it when the io_context runs.
inline std::future<Verdict> start_stage(boost::asio::io_context& io, FilterInstance& instance,
                                        Stage stage, const SessionContext& context) {
  return boost::asio::co_spawn(io, instance.on_stage(stage, context), boost::asio::use_future);
}
// Runs the io_context for 20 ms; whether the stage has its verdict now.
inline bool stage_ready(boost::asio::io_context& io, std::future<Verdict>& verdict) {
  io.restart();
  io.run_for(std::chrono::milliseconds(20));
  return verdict.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}
inline Verdict finish_stage(boost::asio::io_context& io, std::future<Verdict>& verdict) {
  while (!stage_ready(io, verdict)) {
  }
  return verdict.get();
}

struct ScriptedFilterState {
  int calls = 0;
};

class ScriptedFilter final : public Filter {
 public:
  ScriptedFilter(std::string name, std::map<Stage, Verdict> verdicts,
                 std::chrono::milliseconds delay = {}, bool throws = false,
                 policy::OnError on_error = policy::OnError::allow)
      : name_(std::move(name)),
        verdicts_(std::move(verdicts)),
        delay_(delay),
        throws_(throws),
        on_error_(on_error),
        state_(std::make_shared<ScriptedFilterState>()) {}

  const std::string& name() const override { return name_; }
  bool wants(Stage stage) const override { return verdicts_.count(stage) != 0; }
  policy::OnError on_error() const override { return on_error_; }
  std::shared_ptr<ScriptedFilterState> state() const { return state_; }

  std::unique_ptr<FilterInstance> open(Services&) const override {
    return std::make_unique<Instance>(*this);
  }

 private:
  class Instance final : public FilterInstance {
   public:
    explicit Instance(const ScriptedFilter& filter) : filter_(filter) {}
    boost::asio::awaitable<Verdict> on_stage(Stage stage, const SessionContext&) override {
      ++filter_.state_->calls;
      if (filter_.delay_.count() > 0) {
        boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
        timer.expires_after(filter_.delay_);
        co_await timer.async_wait(boost::asio::use_awaitable);
      }
      if (filter_.throws_) throw std::runtime_error("scripted failure");
      Verdict verdict = filter_.verdicts_.at(stage);
      if (verdict.filter.empty()) verdict.filter = filter_.name_;
      co_return verdict;
    }

   private:
    const ScriptedFilter& filter_;
  };

  std::string name_;
  std::map<Stage, Verdict> verdicts_;
  std::chrono::milliseconds delay_;
  bool throws_;
  policy::OnError on_error_;
  std::shared_ptr<ScriptedFilterState> state_;
};

}  // namespace mxgate::filters::testing

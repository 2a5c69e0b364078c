// A store whose reads wait until the test opens its gate, for the rate-limit and
// reputation tests: it shows which calls a stage awaits and which it leaves running.
#pragma once

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>
#include <string>
#include <vector>

#include "filters/memory_store.hpp"
#include "filters/store.hpp"

namespace mxgate::filters::testing {

// rate_limit, acquire_slot and reputation_get wait for open(); the other calls (releases,
// updates) go straight to the embedded store behind it.
class GatedStore final : public Store {
 public:
  GatedStore(const boost::asio::any_io_executor& executor, std::shared_ptr<MemoryStore> inner)
      : inner_(std::move(inner)), gate_(executor) {
    gate_.expires_at(boost::asio::steady_timer::time_point::max());
  }

  const char* backend() const override { return "gated"; }
  void open() {
    open_ = true;
    gate_.cancel();
  }
  // From now on the gated calls answer `unavailable`, as a Redis that went away.
  void fail() { failing_ = true; }
  int calls() const { return calls_; }                // gated calls made so far
  int waiting() const { return calls_ - answered_; }  // gated calls not answered yet
  const std::vector<std::string>& last_keys() const { return last_keys_; }

  boost::asio::awaitable<StoreResult<RateResult>> rate_limit(const std::string& key, RateSpec spec,
                                                             std::int64_t cost, RateMode mode,
                                                             StoreTime now) override {
    std::vector<std::string> keys(1, key);
    co_await pass(std::move(keys));
    auto result = co_await inner_->rate_limit(key, spec, cost, mode, now);
    ++answered_;
    if (failing_) result = StoreResult<RateResult>::failure(StoreError::unavailable, "gone");
    co_return result;
  }
  boost::asio::awaitable<StoreResult<SlotResult>> acquire_slot(const std::string& key,
                                                               const std::string& slot,
                                                               std::int64_t limit,
                                                               std::chrono::seconds ttl,
                                                               StoreTime now) override {
    std::vector<std::string> keys(1, key);
    co_await pass(std::move(keys));
    auto result = co_await inner_->acquire_slot(key, slot, limit, ttl, now);
    ++answered_;
    if (failing_) result = StoreResult<SlotResult>::failure(StoreError::unavailable, "gone");
    co_return result;
  }
  boost::asio::awaitable<StoreResult<std::vector<Reputation>>> reputation_get(
      const std::vector<std::string>& keys, std::chrono::seconds half_life,
      StoreTime now) override {
    co_await pass(keys);
    auto result = co_await inner_->reputation_get(keys, half_life, now);
    ++answered_;
    if (failing_)
      result = StoreResult<std::vector<Reputation>>::failure(StoreError::unavailable, "gone");
    co_return result;
  }

  boost::asio::awaitable<StoreResult<bool>> release_slot(const std::string& key,
                                                         const std::string& slot) override {
    auto result = co_await inner_->release_slot(key, slot);
    co_return result;
  }
  boost::asio::awaitable<StoreResult<std::vector<Reputation>>> reputation_update(
      const std::vector<std::string>& keys, double good, double bad, std::chrono::seconds half_life,
      StoreTime now) override {
    auto result = co_await inner_->reputation_update(keys, good, bad, half_life, now);
    co_return result;
  }
  boost::asio::awaitable<StoreResult<GreylistResult>> greylist(const std::string& triplet_key,
                                                               const std::string& net_key,
                                                               GreylistSpec spec,
                                                               StoreTime now) override {
    auto result = co_await inner_->greylist(triplet_key, net_key, spec, now);
    co_return result;
  }
  boost::asio::awaitable<StoreResult<std::optional<std::string>>> get(
      const std::string& key) override {
    auto result = co_await inner_->get(key);
    co_return result;
  }
  boost::asio::awaitable<StoreResult<bool>> set(const std::string& key, std::string value,
                                                std::chrono::milliseconds ttl) override {
    auto result = co_await inner_->set(key, std::move(value), ttl);
    co_return result;
  }
  boost::asio::awaitable<StoreResult<bool>> remove(const std::string& key) override {
    auto result = co_await inner_->remove(key);
    co_return result;
  }

 private:
  boost::asio::awaitable<void> pass(std::vector<std::string> keys) {
    ++calls_;
    last_keys_ = std::move(keys);
    while (!open_) {
      boost::system::error_code error;
      co_await gate_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, error));
    }
  }

  std::shared_ptr<MemoryStore> inner_;
  boost::asio::steady_timer gate_;
  bool open_ = false;
  bool failing_ = false;
  int calls_ = 0;
  int answered_ = 0;
  std::vector<std::string> last_keys_;
};

}  // namespace mxgate::filters::testing

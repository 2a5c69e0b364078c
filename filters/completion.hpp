// A one-shot "done" that coroutines can wait for: background work a filter starts at one
// stage (a DNS lookup, a store read) sets it; the stage that needs the answer waits.
// Single executor, like the filters that use it.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

namespace mxgate::filters {

class Completion {
 public:
  explicit Completion(const boost::asio::any_io_executor& executor) : signal_(executor) {
    signal_.expires_at(boost::asio::steady_timer::time_point::max());
  }
  bool done() const { return done_; }
  // Marks it done and wakes every waiter (a timer that never expires, cancelled).
  void set() {
    done_ = true;
    signal_.cancel();
  }
  // Returns once set() has run. A wait woken otherwise was cancelled by its caller (the
  // pipeline's deadline): that throws operation_aborted, and the filter's on_error applies.
  boost::asio::awaitable<void> wait() {
    // A loop with no co_return ahead of the await (g++ 12: see proxy/session.cpp).
    while (!done_) {
      boost::system::error_code error;
      co_await signal_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, error));
      if (!done_) throw boost::system::system_error(boost::asio::error::operation_aborted);
    }
  }

 private:
  boost::asio::steady_timer signal_;
  bool done_ = false;
};

}  // namespace mxgate::filters

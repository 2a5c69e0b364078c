// Clients whose message the backend accepted lately (backend.early_connect): for them the
// session opens the backend connection at MAIL, ahead of the first RCPT. Shared by every
// worker; touched once per MAIL and once per accepted message, so one lock is enough.
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

namespace mxgate::proxy {

class RecentSenders {
 public:
  using Clock = std::chrono::steady_clock;

  // Remembers `client_ip` as of `now`. When `capacity` clients are remembered, the
  // expired ones are dropped first, then (a flood of distinct senders) an arbitrary one:
  // a forgotten client only loses the early connect.
  void note(const std::string& client_ip, Clock::duration window, std::size_t capacity,
            Clock::time_point now = Clock::now()) {
    std::lock_guard lock(mutex_);
    auto found = last_.find(client_ip);
    if (found != last_.end()) {
      found->second = now;
      return;
    }
    if (last_.size() >= capacity) {
      std::erase_if(last_, [&](const auto& entry) { return now - entry.second > window; });
      if (last_.size() >= capacity) last_.erase(last_.begin());
    }
    last_.emplace(client_ip, now);
  }

  // Whether the backend accepted a message from `client_ip` within `window` of `now`.
  bool contains(const std::string& client_ip, Clock::duration window,
                Clock::time_point now = Clock::now()) const {
    std::lock_guard lock(mutex_);
    auto found = last_.find(client_ip);
    return found != last_.end() && now - found->second <= window;
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return last_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Clock::time_point> last_;
};

}  // namespace mxgate::proxy

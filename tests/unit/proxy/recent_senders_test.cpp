// RecentSenders (backend.early_connect): who counts as a recent sender, for how long, and
// that the memory it takes stays within early_connect_clients.
#include "proxy/recent_senders.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mxgate::proxy {
namespace {

using namespace std::chrono_literals;
using Clock = RecentSenders::Clock;

TEST(RecentSenders, KnownWithinTheWindowOnly) {
  RecentSenders senders;
  const Clock::time_point start{};
  EXPECT_FALSE(senders.contains("192.0.2.1", 10min, start));
  senders.note("192.0.2.1", 10min, 100, start);
  EXPECT_TRUE(senders.contains("192.0.2.1", 10min, start + 10min));
  EXPECT_FALSE(senders.contains("192.0.2.1", 10min, start + 10min + 1s));
  EXPECT_FALSE(senders.contains("192.0.2.2", 10min, start));
  // Another accepted message restarts the window.
  senders.note("192.0.2.1", 10min, 100, start + 9min);
  EXPECT_TRUE(senders.contains("192.0.2.1", 10min, start + 15min));
}

TEST(RecentSenders, NeverHoldsMoreThanItsCapacity) {
  RecentSenders senders;
  const Clock::time_point start{};
  for (int i = 0; i < 1000; ++i)
    senders.note("198.51.100." + std::to_string(i), 10min, 50, start + std::chrono::seconds(i));
  EXPECT_LE(senders.size(), 50u);
  // The newest is always remembered.
  EXPECT_TRUE(senders.contains("198.51.100.999", 10min, start + 1000s));
}

TEST(RecentSenders, ExpiredClientsMakeRoomFirst) {
  RecentSenders senders;
  const Clock::time_point start{};
  senders.note("192.0.2.1", 1min, 2, start);
  senders.note("192.0.2.2", 1min, 2, start + 50s);
  // Full; 192.0.2.1 has expired by now, so it is the one that goes.
  senders.note("192.0.2.3", 1min, 2, start + 90s);
  EXPECT_EQ(senders.size(), 2u);
  EXPECT_TRUE(senders.contains("192.0.2.2", 1min, start + 90s));
  EXPECT_TRUE(senders.contains("192.0.2.3", 1min, start + 90s));
}

}  // namespace
}  // namespace mxgate::proxy

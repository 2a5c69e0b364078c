// Process-wide Prometheus metrics: counters, gauges and histograms registered by name
// and labels once, then updated lock-free on the hot path through the returned handle.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace mxgate::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

class Gauge {
 public:
  void add(std::int64_t n) { value_.fetch_add(n, std::memory_order_relaxed); }
  void set(std::int64_t n) { value_.store(n, std::memory_order_relaxed); }
  std::int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> value_{0};
};

// Fixed buckets (upper bounds in seconds); observe() is lock-free.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double seconds);
  const std::vector<double>& bounds() const { return bounds_; }
  std::vector<std::uint64_t> bucket_counts() const;   // cumulative, +Inf last
  double sum() const;
  std::uint64_t count() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_micros_{0};
};

// Default latency buckets: 0.5 ms .. 60 s.
std::vector<double> latency_buckets();

class Registry {
 public:
  static Registry& global();
  // Returns the same object for the same name and labels (thread-safe, takes a lock:
  // call at start-up or cache the reference, not per event).
  Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& histogram(const std::string& name, const std::string& help, const Labels& labels = {},
                       std::vector<double> bounds = latency_buckets());
  // Prometheus text exposition format 0.0.4.
  std::string render() const;

 private:
  struct Family {
    std::string type;
    std::string help;
    std::map<std::string, Counter*> counters;      // key: rendered labels
    std::map<std::string, Gauge*> gauges;
    std::map<std::string, Histogram*> histograms;
  };
  mutable std::mutex mutex_;
  std::map<std::string, Family> families_;
  std::deque<Counter> counter_storage_;
  std::deque<Gauge> gauge_storage_;
  std::deque<Histogram> histogram_storage_;
};

}  // namespace mxgate::metrics

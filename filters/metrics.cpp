// Prometheus metric registry and text rendering.
#include "filters/metrics.hpp"

#include <fmt/format.h>

#include <cmath>

namespace mxgate::metrics {

namespace {
std::string escape_label(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string render_labels(const Labels& labels) {
  if (labels.empty()) return {};
  std::string out = "{";
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (i) out += ',';
    out += labels[i].first;
    out += "=\"";
    out += escape_label(labels[i].second);
    out += '"';
  }
  out += '}';
  return out;
}

std::string with_label(const std::string& rendered, const std::string& extra) {
  if (rendered.empty()) return "{" + extra + "}";
  return rendered.substr(0, rendered.size() - 1) + "," + extra + "}";
}

std::string format_double(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}
}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<std::uint64_t>[bounds_.size() + 1]) {
  for (std::size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double seconds) {
  std::size_t i = 0;
  while (i < bounds_.size() && seconds > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<std::uint64_t>(std::max(0.0, seconds) * 1e6),
                        std::memory_order_relaxed);
}

std::vector<std::uint64_t> Histogram::bucket_counts() const {
  std::vector<std::uint64_t> out(bounds_.size() + 1);
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    out[i] = running;
  }
  return out;
}

double Histogram::sum() const { return sum_micros_.load(std::memory_order_relaxed) / 1e6; }
std::uint64_t Histogram::count() const { return count_.load(std::memory_order_relaxed); }

std::vector<double> latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

Registry& Registry::global() {
  static Registry registry;
  return registry;
}

Counter& Registry::counter(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mutex_);
  auto& family = families_[name];
  family.type = "counter";
  family.help = help;
  auto key = render_labels(labels);
  auto it = family.counters.find(key);
  if (it != family.counters.end()) return *it->second;
  Counter& counter = counter_storage_.emplace_back();
  family.counters.emplace(key, &counter);
  return counter;
}

Gauge& Registry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mutex_);
  auto& family = families_[name];
  family.type = "gauge";
  family.help = help;
  auto key = render_labels(labels);
  auto it = family.gauges.find(key);
  if (it != family.gauges.end()) return *it->second;
  Gauge& gauge = gauge_storage_.emplace_back();
  family.gauges.emplace(key, &gauge);
  return gauge;
}

Histogram& Registry::histogram(const std::string& name, const std::string& help,
                               const Labels& labels, std::vector<double> bounds) {
  std::lock_guard lock(mutex_);
  auto& family = families_[name];
  family.type = "histogram";
  family.help = help;
  auto key = render_labels(labels);
  auto it = family.histograms.find(key);
  if (it != family.histograms.end()) return *it->second;
  Histogram& histogram = histogram_storage_.emplace_back(std::move(bounds));
  family.histograms.emplace(key, &histogram);
  return histogram;
}

std::string Registry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, family] : families_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, family.help, name, family.type);
    for (const auto& [labels, counter] : family.counters)
      out += fmt::format("{}{} {}\n", name, labels, counter->value());
    for (const auto& [labels, gauge] : family.gauges)
      out += fmt::format("{}{} {}\n", name, labels, gauge->value());
    for (const auto& [labels, histogram] : family.histograms) {
      auto counts = histogram->bucket_counts();
      const auto& bounds = histogram->bounds();
      for (std::size_t i = 0; i <= bounds.size(); ++i) {
        double bound = i < bounds.size() ? bounds[i] : INFINITY;
        out += fmt::format("{}_bucket{} {}\n", name,
                           with_label(labels, "le=\"" + format_double(bound) + "\""), counts[i]);
      }
      out += fmt::format("{}_sum{} {}\n", name, labels, format_double(histogram->sum()));
      out += fmt::format("{}_count{} {}\n", name, labels, histogram->count());
    }
  }
  return out;
}

}  // namespace mxgate::metrics

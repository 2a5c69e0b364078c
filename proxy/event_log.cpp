// JSON-lines event log with reopen for logrotate.
#include "proxy/event_log.hpp"

#include <syslog.h>

#include <boost/json/serialize.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <random>

namespace mxgate::proxy {

EventLog::EventLog(std::string path) : path_(std::move(path)) { reopen(); }

EventLog::~EventLog() {
  if (file_ && file_ != stderr) std::fclose(file_);
}

bool EventLog::reopen() {
  std::lock_guard lock(mutex_);
  if (path_.empty()) {
    file_ = stderr;
    return true;
  }
  std::FILE* fresh = std::fopen(path_.c_str(), "a");
  if (!fresh) {
    error_ = std::string("cannot open ") + path_ + ": " + std::strerror(errno);
    return false;   // keep writing to the old file rather than lose lines
  }
  if (file_ && file_ != stderr) std::fclose(file_);
  file_ = fresh;
  error_.clear();
  return true;
}

void EventLog::write(boost::json::object event) {
  if (!event.contains("time")) event["time"] = utc_timestamp();
  std::string line = boost::json::serialize(event);
  line += '\n';
  if (syslog_.load(std::memory_order_relaxed)) {
    // syslog() takes its own lock; refusals at notice, session summaries at info.
    const auto* type = event.if_contains("type");
    bool summary = type != nullptr && type->is_string() && type->get_string() == "session";
    int priority = summary ? LOG_INFO : LOG_NOTICE;
    ::syslog(LOG_MAIL | priority, "%.*s", static_cast<int>(line.size() - 1), line.data());
  }
  std::lock_guard lock(mutex_);
  if (!file_) return;
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

void EventLog::set_syslog(bool enabled) {
  std::lock_guard lock(mutex_);
  if (enabled && !syslog_) ::openlog("mxgate", LOG_PID | LOG_NDELAY, LOG_MAIL);
  syslog_ = enabled;
}

std::string utc_timestamp() {
  auto now = std::chrono::system_clock::now();
  auto seconds = std::chrono::system_clock::to_time_t(now);
  auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  char buffer[40];
  std::size_t n = std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%S", &parts);
  std::snprintf(buffer + n, sizeof buffer - n, ".%03dZ", static_cast<int>(millis));
  return buffer;
}

std::string make_reference() {
  static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  thread_local std::mt19937_64 generator{std::random_device{}()};
  std::uint64_t bits = generator();
  std::string out(8, '0');
  for (char& c : out) {
    c = alphabet[bits & 31];
    bits >>= 5;
  }
  return out;
}

}  // namespace mxgate::proxy

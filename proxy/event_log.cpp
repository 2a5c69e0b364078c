// JSON-lines event log with reopen for logrotate.
#include "proxy/event_log.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <random>

#include "filters/metrics.hpp"

namespace mxgate::proxy {

EventLog::EventLog(std::string path) : path_(std::move(path)) { reopen(); }

EventLog::~EventLog() {
  if (file_ && file_ != stderr) std::fclose(file_);
  if (syslog_fd_ >= 0) ::close(syslog_fd_);
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
  std::lock_guard lock(mutex_);
  if (syslog_) {
    // Refusals at notice, session summaries at info.
    const auto* type = event.if_contains("type");
    bool summary = type != nullptr && type->is_string() && type->get_string() == "session";
    send_syslog(summary ? LOG_INFO : LOG_NOTICE, std::string_view(line).substr(0, line.size() - 1));
  }
  if (!file_) return;
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

void EventLog::set_syslog(bool enabled, std::string socket_path) {
  std::lock_guard lock(mutex_);
  if (socket_path != syslog_path_ && syslog_fd_ >= 0) {
    ::close(syslog_fd_);
    syslog_fd_ = -1;
  }
  syslog_path_ = std::move(socket_path);
  syslog_ = enabled;
  syslog_retry_at_ = {};
  if (!enabled && syslog_fd_ >= 0) {
    ::close(syslog_fd_);
    syslog_fd_ = -1;
  }
}

bool EventLog::connect_syslog() {
  // A missing socket (syslog restarting) is retried at most once a second, not per line.
  auto now = std::chrono::steady_clock::now();
  if (now < syslog_retry_at_) return false;
  syslog_retry_at_ = now + std::chrono::seconds(1);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (syslog_path_.size() >= sizeof address.sun_path) return false;
  std::memcpy(address.sun_path, syslog_path_.data(), syslog_path_.size());
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return false;
  }
  syslog_fd_ = fd;
  return true;
}

void EventLog::send_syslog(int priority, std::string_view line) {
  static auto& dropped = metrics::Registry::global().counter(
      "mxgate_syslog_dropped_total",
      "Rejection-log lines not sent to syslog (socket missing or full); the file has them");
  if (syslog_fd_ < 0 && !connect_syslog()) {
    dropped.inc();
    return;
  }
  // RFC 3164 as the local syslog sockets take it: <PRI>Mmm dd hh:mm:ss ident[pid]: text
  std::time_t now = std::time(nullptr);
  std::tm parts{};
  localtime_r(&now, &parts);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%b %e %H:%M:%S", &parts);
  std::string datagram = "<" + std::to_string(LOG_MAIL | priority) + ">" + stamp + " mxgate[" +
                         std::to_string(::getpid()) + "]: ";
  datagram.append(line);
  ssize_t sent = ::send(syslog_fd_, datagram.data(), datagram.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (sent >= 0) return;
  if (errno != EAGAIN && errno != EWOULDBLOCK) {
    // The daemon went away (ECONNREFUSED, ENOTCONN): reconnect on a later line.
    ::close(syslog_fd_);
    syslog_fd_ = -1;
  }
  dropped.inc();
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

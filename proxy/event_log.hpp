// The rejection log support reads: one JSON object per line, one per reject/tempfail
// and one per session summary, each reject carrying the ref printed in the SMTP reply.
#pragma once

#include <boost/json/object.hpp>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>

namespace mxgate::proxy {

class EventLog {
 public:
  // Empty path: standard error.
  explicit EventLog(std::string path);
  ~EventLog();
  bool ok() const { return file_ != nullptr; }
  const std::string& path() const { return path_; }
  const std::string& error() const { return error_; }
  // Appends `time` when absent, serialises, writes and flushes one line.
  void write(boost::json::object event);
  // Reopens the file (logrotate moved it: SIGUSR1).
  bool reopen();
  // log.syslog: also send each line to syslog (facility mail, ident "mxgate"), so
  // journald or a central syslog gets the refusals without a log shipper. Not glibc's
  // syslog(3): it blocks the calling worker while the daemon is slow or its socket
  // buffer is full, and its socket path is fixed. These sends never block; a line
  // that cannot be sent is dropped (the file still has it) and counted.
  void set_syslog(bool enabled, std::string socket_path = "/dev/log");

 private:
  std::string path_;
  std::string error_;
  std::FILE* file_ = nullptr;
  std::mutex mutex_;
  void send_syslog(int priority, std::string_view line);  // with mutex_ held
  bool connect_syslog();                                   // with mutex_ held

  bool syslog_ = false;
  std::string syslog_path_;
  int syslog_fd_ = -1;
  std::chrono::steady_clock::time_point syslog_retry_at_{};
};

// "2026-11-22T10:04:11.123Z"
std::string utc_timestamp();
// A short reference for support: 8 characters of Crockford base32 (no I, L, O, U).
std::string make_reference();

}  // namespace mxgate::proxy

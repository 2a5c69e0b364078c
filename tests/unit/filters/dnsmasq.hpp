// Test helper: a real dnsmasq on a loopback ephemeral port serving only the records a
// test gives it, stopped by PID when the object dies (also when an assertion fails).
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "dns_blackhole.hpp"
#include "filters/dns_resolver.hpp"

namespace mxgate::filters::testing {

// A resolver asking only 127.0.0.1:port (a Dnsmasq or a DnsBlackhole).
inline std::shared_ptr<DnsResolver> loopback_resolver(const boost::asio::any_io_executor& executor,
                                                      std::uint16_t port,
                                                      std::chrono::milliseconds timeout, int retries) {
  DnsResolverOptions options;
  options.servers = {"127.0.0.1:" + std::to_string(port)};
  options.timeout = timeout;
  options.retries = retries;
  return DnsResolver::create(executor, options);
}

inline const char* dnsmasq_path() {
  for (const char* path : {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/usr/local/sbin/dnsmasq"})
    if (::access(path, X_OK) == 0) return path;
  return nullptr;
}

inline bool udp_port_bound(std::uint16_t port) {
  std::ifstream table("/proc/net/udp");
  std::string line;
  std::getline(table, line);
  char wanted[8];
  std::snprintf(wanted, sizeof wanted, ":%04X", port);
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot;
    std::string local;
    fields >> slot >> local;
    if (local.size() > 5 && local.substr(local.size() - 5) == wanted) return true;
  }
  return false;
}

// dnsmasq in the foreground on 127.0.0.1:<ephemeral> with only the records it is given
// (nothing from /etc/hosts or upstream; names under .test and the reverse zones that it
// does not know are NXDOMAIN); stopped by PID in the destructor, also on failure.
class Dnsmasq {
 public:
  explicit Dnsmasq(std::vector<std::string> records) : records_(std::move(records)) {
    char pattern[] = "/tmp/mxgate-dnsmasq-XXXXXX";
    directory_ = ::mkdtemp(pattern);
    for (int attempt = 0; attempt < 5 && pid_ <= 0; ++attempt) start();
  }
  ~Dnsmasq() {
    stop_child(pid_);
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }
  bool running() const { return pid_ > 0; }
  std::uint16_t port() const { return port_; }
  std::string log() const {
    std::ifstream file(directory_ + "/dnsmasq.log");
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
  }

 private:
  void start() {
    port_ = free_udp_port();
    std::vector<std::string> arguments{dnsmasq_path(),
                                       "--no-daemon",
                                       "--no-resolv",
                                       "--no-hosts",
                                       "--conf-file=/dev/null",
                                       "--pid-file=",
                                       "--port=" + std::to_string(port_),
                                       "--listen-address=127.0.0.1",
                                       "--bind-interfaces",
                                       "--local=/test/",
                                       "--local=/in-addr.arpa/",
                                       "--local=/ip6.arpa/"};
    arguments.insert(arguments.end(), records_.begin(), records_.end());
    const pid_t pid = spawn_child(std::move(arguments), directory_ + "/dnsmasq.log");
    if (pid <= 0) return;
    // Ready when its UDP socket is bound; gone when the port was taken meanwhile.
    for (int wait = 0; wait < 100; ++wait) {
      if (::waitpid(pid, nullptr, WNOHANG) == pid) return;
      if (udp_port_bound(port_)) {
        pid_ = pid;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    stop_child(pid);
  }

  std::vector<std::string> records_;
  std::string directory_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace mxgate::filters::testing

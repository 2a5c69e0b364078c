// The operators' HTTP endpoint on `metrics.listen`: Prometheus metrics, liveness,
// readiness (listening and the backend answers) and reload, kept small and bounded.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>

#include "policy/config.hpp"

namespace mxgate::proxy {

// What the endpoint asks of the daemon. Called on the io_context the endpoint runs on.
struct AdminHttpHooks {
  std::function<bool()> serving;                     // the SMTP listeners accept connections
  std::function<policy::Endpoint()> backend;         // where the backend is (current policy)
  std::function<bool(std::string& message)> reload;  // as SIGHUP: message or config errors
};

// Bounds: whoever reaches this port gets a small, predictable share of the process.
struct AdminHttpLimits {
  std::size_t max_connections = 32;
  std::size_t max_header_bytes = 8 * 1024;
  std::size_t max_body_bytes = 64 * 1024;
  // To receive a whole request, headers included (also the idle time of a kept-alive
  // connection): a client that trickles bytes is cut off, as Postfix's smtpd_timeout.
  std::chrono::milliseconds request_timeout{10'000};
  std::chrono::milliseconds probe_interval{3'000};
  std::chrono::milliseconds probe_timeout{2'000};
};

class AdminHttp {
 public:
  AdminHttp(boost::asio::io_context& io, AdminHttpHooks hooks, AdminHttpLimits limits = {});
  ~AdminHttp();
  AdminHttp(const AdminHttp&) = delete;
  AdminHttp& operator=(const AdminHttp&) = delete;

  // Binds (port 0: an ephemeral port, see port()). Errors: "127.0.0.1:9925: Address in use".
  bool listen(const policy::Endpoint& endpoint, std::string& error);
  // Starts accepting and probing the backend.
  void start();
  // Stops accepting, probing and closes open connections, so the io_context can return.
  // Call it (the destructor does) while the io_context still runs or before it is
  // destroyed: the coroutines it aborts still refer to this object when they resume.
  void stop();

  std::uint16_t port() const;
  bool backend_up() const { return backend_up_; }

 private:
  struct Connection;
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(std::shared_ptr<Connection> connection);
  boost::asio::awaitable<void> probe_loop();
  boost::asio::awaitable<bool> probe_backend(std::string& failure);

  boost::asio::io_context& io_;
  AdminHttpHooks hooks_;
  AdminHttpLimits limits_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer probe_timer_;
  std::list<std::weak_ptr<Connection>> connections_;
  std::size_t open_connections_ = 0;
  bool backend_up_ = false;
  bool stopped_ = false;
};

}  // namespace mxgate::proxy

// Admin HTTP endpoint: one coroutine per connection, as Beast's awaitable examples, with
// every read under a deadline and the number of connections capped.
#include "proxy/admin_http.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "filters/metrics.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::ip::tcp;

namespace mxgate::proxy {

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

struct AdminMetrics {
  metrics::Gauge& backend_up = metrics::Registry::global().gauge(
      "mxgate_backend_up", "1 when the backend answered the last readiness probe with a 220");
  metrics::Counter& probe_failures = metrics::Registry::global().counter(
      "mxgate_backend_probe_failures_total", "Readiness probes of the backend that failed");
  metrics::Counter& refused_connections = metrics::Registry::global().counter(
      "mxgate_admin_http_refused_connections_total",
      "Admin HTTP connections closed at once because max_connections were open");
};

AdminMetrics& admin_metrics() {
  static AdminMetrics instance;
  return instance;
}

metrics::Counter& request_counter(const std::string& route, unsigned status) {
  // A fixed set of routes, so a scanner cannot create label values at will.
  return metrics::Registry::global().counter("mxgate_admin_http_requests_total",
                                             "Admin HTTP requests by route and status",
                                             {{"route", route}, {"code", std::to_string(status)}});
}

http::response<http::string_body> make_response(
    const http::request<http::string_body>& request, http::status status, std::string body,
    std::string content_type = "text/plain; charset=utf-8") {
  http::response<http::string_body> response{status, request.version()};
  response.set(http::field::server, "mxgate");
  response.set(http::field::content_type, content_type);
  response.set(http::field::cache_control, "no-store");
  response.keep_alive(request.keep_alive());
  if (request.method() != http::verb::head) response.body() = std::move(body);
  response.prepare_payload();
  if (request.method() == http::verb::head) response.content_length(body.size());
  return response;
}

}  // namespace

struct AdminHttp::Connection {
  explicit Connection(tcp::socket socket) : stream(std::move(socket)) {}
  beast::tcp_stream stream;
};

AdminHttp::AdminHttp(asio::io_context& io, AdminHttpHooks hooks, AdminHttpLimits limits)
    : io_(io), hooks_(std::move(hooks)), limits_(limits), acceptor_(io), probe_timer_(io) {
  admin_metrics().backend_up.set(0);
}

AdminHttp::~AdminHttp() { stop(); }

bool AdminHttp::listen(const policy::Endpoint& endpoint, std::string& error) {
  boost::system::error_code code;
  auto address = asio::ip::make_address(endpoint.host, code);
  if (code) {
    error = "metrics.listen: " + endpoint.to_string() + ": not an IP address";
    return false;
  }
  tcp::endpoint local(address, endpoint.port);
  acceptor_.open(local.protocol(), code);
  if (!code) acceptor_.set_option(asio::socket_base::reuse_address(true), code);
  if (!code) acceptor_.bind(local, code);
  if (!code) acceptor_.listen(asio::socket_base::max_listen_connections, code);
  if (code) {
    error = "metrics.listen: " + endpoint.to_string() + ": " + code.message();
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    return false;
  }
  return true;
}

std::uint16_t AdminHttp::port() const {
  boost::system::error_code ignored;
  return acceptor_.is_open() ? acceptor_.local_endpoint(ignored).port() : 0;
}

void AdminHttp::start() {
  stopped_ = false;
  if (acceptor_.is_open()) asio::co_spawn(io_, accept_loop(), asio::detached);
  if (hooks_.backend) asio::co_spawn(io_, probe_loop(), asio::detached);
}

void AdminHttp::stop() {
  stopped_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  probe_timer_.cancel();
  for (auto& weak : connections_) {
    if (auto connection = weak.lock()) connection->stream.socket().close(ignored);
  }
  connections_.clear();
}

awaitable<void> AdminHttp::accept_loop() {
  while (!stopped_) {
    auto [error, socket] = co_await acceptor_.async_accept(use_tuple);
    if (error) {
      if (error == asio::error::operation_aborted || stopped_) co_return;
      spdlog::warn("admin http accept: {}", error.message());
      asio::steady_timer pause(io_, std::chrono::milliseconds(100));
      co_await pause.async_wait(use_tuple);
      continue;
    }
    if (open_connections_ >= limits_.max_connections) {
      // Over the bound: close at once rather than queue; a scraper retries next interval.
      admin_metrics().refused_connections.inc();
      boost::system::error_code ignored;
      socket.close(ignored);
      continue;
    }
    auto connection = std::make_shared<Connection>(std::move(socket));
    std::erase_if(connections_, [](const auto& weak) { return weak.expired(); });
    connections_.push_back(connection);
    ++open_connections_;
    asio::co_spawn(io_, serve(std::move(connection)), asio::detached);
  }
}

awaitable<void> AdminHttp::serve(std::shared_ptr<Connection> connection) {
  auto& stream = connection->stream;
  beast::flat_buffer buffer(limits_.max_header_bytes + limits_.max_body_bytes);
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits_.max_header_bytes));
    parser.body_limit(limits_.max_body_bytes);
    stream.expires_after(limits_.request_timeout);
    auto [read_error, ignored_bytes] = co_await http::async_read(stream, buffer, parser, use_tuple);
    if (read_error) {
      // Say why only when the client can act on it; timeouts and resets just close.
      http::status status =
          read_error == http::error::header_limit ? http::status::request_header_fields_too_large
          : read_error == http::error::body_limit ? http::status::payload_too_large
          : read_error == http::error::end_of_stream || read_error == beast::error::timeout ||
                  read_error == asio::error::operation_aborted
              ? http::status::unknown
              : http::status::bad_request;
      if (status != http::status::unknown && !stopped_) {
        http::request<http::string_body> none;
        auto response =
            make_response(none, status, std::string(http::obsolete_reason(status)) + "\n");
        response.keep_alive(false);
        stream.expires_after(limits_.request_timeout);
        co_await http::async_write(stream, response, use_tuple);
      }
      break;
    }
    const auto& request = parser.get();
    std::string_view target = request.target();
    target = target.substr(0, target.find('?'));
    const bool get = request.method() == http::verb::get || request.method() == http::verb::head;

    http::response<http::string_body> response;
    std::string route = "other";
    if (target == "/metrics" || target == "/healthz" || target == "/readyz") {
      route = std::string(target.substr(1));
      if (!get) {
        response = make_response(request, http::status::method_not_allowed, "use GET\n");
        response.set(http::field::allow, "GET, HEAD");
      } else if (target == "/metrics") {
        response = make_response(request, http::status::ok, metrics::Registry::global().render(),
                                 "text/plain; version=0.0.4; charset=utf-8");
      } else if (target == "/healthz") {
        response = make_response(request, http::status::ok, "ok\n");
      } else {
        bool serving = !hooks_.serving || hooks_.serving();
        if (serving && backend_up_) {
          response = make_response(request, http::status::ok, "ready\n");
        } else {
          std::string why = !serving ? "not ready: not accepting connections\n"
                                     : "not ready: backend " +
                                           (hooks_.backend ? hooks_.backend().to_string() : "") +
                                           " does not answer\n";
          response = make_response(request, http::status::service_unavailable, why);
        }
      }
    } else if (target == "/reload") {
      route = "reload";
      if (request.method() != http::verb::post) {
        // Not on GET: a crawler or a prefetching browser must not reload the policy.
        response = make_response(request, http::status::method_not_allowed, "use POST\n");
        response.set(http::field::allow, "POST");
      } else if (!hooks_.reload) {
        response = make_response(request, http::status::not_implemented, "reload not available\n");
      } else {
        std::string message;
        bool ok = hooks_.reload(message);
        if (!message.empty() && message.back() != '\n') message += '\n';
        response =
            make_response(request, ok ? http::status::ok : http::status::bad_request, message);
      }
    } else {
      response = make_response(request, http::status::not_found, "not found\n");
    }
    request_counter(route, response.result_int()).inc();
    stream.expires_after(limits_.request_timeout);
    auto [write_error, written] = co_await http::async_write(stream, response, use_tuple);
    if (write_error || !response.keep_alive() || stopped_) break;
  }
  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream.close();
  --open_connections_;
}

awaitable<void> AdminHttp::probe_loop() {
  while (!stopped_) {
    std::string failure;
    bool up = co_await probe_backend(failure);
    if (stopped_) co_return;
    if (!up) admin_metrics().probe_failures.inc();
    if (up != backend_up_) {
      if (up)
        spdlog::info("backend {} answers: ready", hooks_.backend().to_string());
      else
        spdlog::warn("backend {}: {}: not ready", hooks_.backend().to_string(), failure);
    }
    backend_up_ = up;
    admin_metrics().backend_up.set(up ? 1 : 0);
    probe_timer_.expires_after(limits_.probe_interval);
    co_await probe_timer_.async_wait(use_tuple);
  }
}

// Connect, read the greeting, QUIT: a listening port is not enough (a Postfix smtpd out
// of processes accepts and then says nothing), and a QUIT keeps Postfix's log clean of
// "lost connection after CONNECT".
awaitable<bool> AdminHttp::probe_backend(std::string& failure) {
  policy::Endpoint backend = hooks_.backend();
  tcp::resolver resolver(io_);
  beast::tcp_stream stream(io_);
  stream.expires_after(limits_.probe_timeout);
  auto [resolve_error, endpoints] =
      co_await resolver.async_resolve(backend.host, std::to_string(backend.port), use_tuple);
  if (resolve_error) {
    failure = "cannot resolve: " + resolve_error.message();
    co_return false;
  }
  auto [connect_error, connected] = co_await stream.async_connect(endpoints, use_tuple);
  if (connect_error) {
    failure = connect_error == beast::error::timeout ? "connect timeout" : connect_error.message();
    co_return false;
  }
  asio::streambuf greeting(4096);
  auto [read_error, length] = co_await asio::async_read_until(stream, greeting, "\r\n", use_tuple);
  if (read_error) {
    failure =
        read_error == beast::error::timeout ? "no greeting" : "greeting: " + read_error.message();
    co_return false;
  }
  std::string line(asio::buffers_begin(greeting.data()), asio::buffers_begin(greeting.data()) + 3);
  bool up = line == "220";
  if (!up) failure = "greeting is not 220";
  co_await asio::async_write(stream, asio::buffer("QUIT\r\n", 6), use_tuple);
  greeting.consume(greeting.size());
  co_await asio::async_read_until(stream, greeting, "\r\n", use_tuple);
  stream.close();
  co_return up;
}

}  // namespace mxgate::proxy

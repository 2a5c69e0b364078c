// The admin HTTP endpoint: routes, status codes, content type, readiness following the
// backend probe, reload through the hook, and the bounds (header size, connections).
#include "proxy/admin_http.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <future>
#include <thread>

#include "filters/metrics.hpp"

namespace mxgate::proxy {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

struct Response {
  unsigned status = 0;
  std::string content_type;
  std::string body;
};

// A fake backend that greets with 220, as Postfix's smtpd does, until stopped.
class GreetingServer {
 public:
  explicit GreetingServer(asio::io_context& io)
      : acceptor_(io, {asio::ip::make_address("127.0.0.1"), 0}) {
    asio::co_spawn(
        io,
        [this]() -> asio::awaitable<void> {
          for (;;) {
            auto socket = co_await acceptor_.async_accept(asio::use_awaitable);
            co_await asio::async_write(socket, asio::buffer("220 fake ESMTP\r\n", 16),
                                       asio::use_awaitable);
            asio::streambuf line;
            co_await asio::async_read_until(socket, line, "\r\n", asio::use_awaitable);
            co_await asio::async_write(socket, asio::buffer("221 bye\r\n", 9), asio::use_awaitable);
          }
        },
        asio::detached);
  }
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  void stop() { acceptor_.close(); }

 private:
  tcp::acceptor acceptor_;
};

class AdminHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A port nothing listens on: bind one, note it, close it.
    {
      tcp::acceptor probe(io_, {asio::ip::make_address("127.0.0.1"), 0});
      backend_port_ = probe.local_endpoint().port();
    }
    AdminHttpHooks hooks;
    hooks.serving = [this] { return serving_.load(); };
    hooks.backend = [this] { return policy::Endpoint{"127.0.0.1", backend_port_.load()}; };
    hooks.reload = [this](std::string& message) {
      ++reloads_;
      if (reload_ok_) {
        message = "generation 2";
        return true;
      }
      message = "mxgate.yaml:3:5: limits.max_recipients: not a number";
      return false;
    };
    AdminHttpLimits limits;
    limits.probe_interval = std::chrono::milliseconds(50);
    limits.probe_timeout = std::chrono::milliseconds(500);
    limits.max_connections = 2;
    limits.request_timeout = std::chrono::milliseconds(1000);
    admin_ = std::make_unique<AdminHttp>(io_, hooks, limits);
    std::string error;
    ASSERT_TRUE(admin_->listen({"127.0.0.1", 0}, error)) << error;
    admin_->start();
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    asio::post(io_, [this] {
      admin_->stop();
      if (backend_) backend_->stop();
    });
    thread_.join();  // returns once every coroutine has ended
    admin_.reset();
  }

  Response request(http::verb method, const std::string& target, std::string extra_header = {}) {
    asio::io_context client_io;
    tcp::socket socket(client_io);
    socket.connect({asio::ip::make_address("127.0.0.1"), admin_->port()});
    http::request<http::string_body> request{method, target, 11};
    request.set(http::field::host, "localhost");
    if (!extra_header.empty()) request.set("X-Padding", extra_header);
    request.prepare_payload();
    http::write(socket, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(socket, buffer, response);
    return {response.result_int(), std::string(response[http::field::content_type]),
            response.body()};
  }

  template <typename Predicate>
  bool eventually(Predicate predicate) {
    for (int i = 0; i < 100; ++i) {
      if (predicate()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  void start_backend() {
    std::promise<std::uint16_t> port;
    asio::post(io_, [&] {
      backend_ = std::make_unique<GreetingServer>(io_);
      port.set_value(backend_->port());
    });
    backend_port_ = port.get_future().get();
  }

  asio::io_context io_;
  std::unique_ptr<AdminHttp> admin_;
  std::unique_ptr<GreetingServer> backend_;
  std::thread thread_;
  std::atomic<bool> serving_{true};
  std::atomic<std::uint16_t> backend_port_{0};
  std::atomic<int> reloads_{0};
  std::atomic<bool> reload_ok_{true};
};

TEST_F(AdminHttpTest, HealthzAnswersWhileTheProcessServes) {
  auto response = request(http::verb::get, "/healthz");
  EXPECT_EQ(response.status, 200u);
  EXPECT_EQ(response.body, "ok\n");
}

TEST_F(AdminHttpTest, MetricsIsPrometheusTextWithTheBackendGauge) {
  metrics::Registry::global().counter("mxgate_admin_test_total", "A counter for this test").inc(3);
  auto response = request(http::verb::get, "/metrics");
  EXPECT_EQ(response.status, 200u);
  EXPECT_EQ(response.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(
      response.body.find("# TYPE mxgate_admin_test_total counter\nmxgate_admin_test_total 3\n"),
      std::string::npos);
  EXPECT_NE(response.body.find("# TYPE mxgate_backend_up gauge\n"), std::string::npos);
}

TEST_F(AdminHttpTest, ReadyzFollowsTheBackendAndTheListeners) {
  // No backend yet: the probe fails.
  EXPECT_TRUE(eventually([&] { return request(http::verb::get, "/readyz").status == 503; }));
  EXPECT_NE(request(http::verb::get, "/readyz").body.find("does not answer"), std::string::npos);
  start_backend();
  EXPECT_TRUE(eventually([&] { return request(http::verb::get, "/readyz").status == 200; }));
  EXPECT_TRUE(admin_->backend_up());
  EXPECT_NE(metrics::Registry::global().render().find("mxgate_backend_up 1\n"), std::string::npos);
  serving_ = false;  // SIGTERM: listeners closed
  auto response = request(http::verb::get, "/readyz");
  EXPECT_EQ(response.status, 503u);
  EXPECT_EQ(response.body, "not ready: not accepting connections\n");
}

TEST_F(AdminHttpTest, ReloadNeedsPostAndReportsTheOutcome) {
  EXPECT_EQ(request(http::verb::get, "/reload").status, 405u);
  EXPECT_EQ(reloads_, 0);
  auto good = request(http::verb::post, "/reload");
  EXPECT_EQ(good.status, 200u);
  EXPECT_EQ(good.body, "generation 2\n");
  reload_ok_ = false;
  auto bad = request(http::verb::post, "/reload");
  EXPECT_EQ(bad.status, 400u);
  EXPECT_EQ(bad.body, "mxgate.yaml:3:5: limits.max_recipients: not a number\n");
  EXPECT_EQ(reloads_, 2);
}

TEST_F(AdminHttpTest, UnknownRoutesAndWrongMethods) {
  EXPECT_EQ(request(http::verb::get, "/nope").status, 404u);
  EXPECT_EQ(request(http::verb::post, "/metrics").status, 405u);
  EXPECT_EQ(request(http::verb::get, "/metrics?name=x").status, 200u);
}

TEST_F(AdminHttpTest, OversizedHeadersAreRefused) {
  auto response = request(http::verb::get, "/healthz", std::string(16 * 1024, 'x'));
  EXPECT_EQ(response.status, 431u);
}

TEST_F(AdminHttpTest, ConnectionsBeyondTheLimitAreClosed) {
  asio::io_context client_io;
  std::vector<tcp::socket> idle;
  for (int i = 0; i < 2; ++i) {
    idle.emplace_back(client_io);
    idle.back().connect({asio::ip::make_address("127.0.0.1"), admin_->port()});
  }
  // Let the server accept the two idle ones before the third arrives.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  tcp::socket third(client_io);
  third.connect({asio::ip::make_address("127.0.0.1"), admin_->port()});
  char byte;
  boost::system::error_code error;
  third.read_some(asio::buffer(&byte, 1), error);
  EXPECT_TRUE(error == asio::error::eof || error == asio::error::connection_reset)
      << error.message();
  // The idle ones time out (request_timeout), and the endpoint serves again.
  for (auto& socket : idle) {
    socket.read_some(asio::buffer(&byte, 1), error);
    EXPECT_TRUE(error);
  }
  EXPECT_TRUE(eventually([&] {
    try {
      return request(http::verb::get, "/healthz").status == 200;
    } catch (const std::exception&) {
      return false;
    }
  }));
}

}  // namespace
}  // namespace mxgate::proxy

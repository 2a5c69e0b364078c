// Workers, listeners, signals, reload and graceful shutdown.
#include "proxy/server.hpp"

#include <grp.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/ip/v6_only.hpp>

#include "filters/metrics.hpp"
#include "policy/loader.hpp"
#include "proxy/admin_http.hpp"
#include "proxy/session.hpp"
#include "proxy/tls.hpp"

namespace asio = boost::asio;
using asio::awaitable;

namespace mxgate::proxy {

ConnectionTable::Admit ConnectionTable::add(const std::string& client_ip, std::size_t max_total,
                                            std::size_t max_per_ip) {
  std::lock_guard lock(mutex_);
  if (total_.load(std::memory_order_relaxed) >= max_total) return Admit::too_many;
  auto& count = per_ip_[client_ip];
  if (count >= max_per_ip) {
    if (count == 0) per_ip_.erase(client_ip);
    return Admit::too_many_from_ip;
  }
  ++count;
  total_.fetch_add(1, std::memory_order_relaxed);
  return Admit::ok;
}

void ConnectionTable::remove(const std::string& client_ip) {
  std::lock_guard lock(mutex_);
  auto it = per_ip_.find(client_ip);
  if (it == per_ip_.end()) return;
  if (--it->second == 0) per_ip_.erase(it);
  total_.fetch_sub(1, std::memory_order_relaxed);
}

Server::Server(std::shared_ptr<const policy::Config> config) : config_path_(config->path) {
  std::size_t threads = config->threads > 0 ? static_cast<std::size_t>(config->threads)
                                            : std::max(1u, std::thread::hardware_concurrency());
  for (std::size_t i = 0; i < threads; ++i) workers_.push_back(std::make_unique<Worker>());
  shared_.event_log = std::make_unique<EventLog>(config->log.rejections);
  shared_.event_log->set_syslog(config->log.syslog, config->log.syslog_socket);
  if (!shared_.event_log->ok()) spdlog::error("{}", shared_.event_log->error());
  install(std::move(config));
}

Server::~Server() {
  for (auto& worker : workers_) {
    worker->io.stop();
    if (worker->thread.joinable()) worker->thread.join();
  }
}

std::shared_ptr<const Generation> Server::build_generation(std::shared_ptr<const policy::Config> config) {
  auto generation = std::make_shared<Generation>();
  generation->number = ++generation_counter_;
  generation->config = config;
  generation->pipeline = filters::Pipeline::build(*config);
  generation->relay.relay_domains = config->relay_domains;
  generation->relay.allow_address_literals = config->smtp.allow_address_literals;
  generation->address_limits.max_local_part = config->limits.max_local_part;
  generation->address_limits.max_domain = config->limits.max_domain;
  generation->address_limits.max_path = config->limits.max_path;
  generation->address_limits.smtputf8 = config->smtp.smtputf8;
  generation->data_limits.max_message_size = config->limits.max_message_size;
  generation->data_limits.max_text_line = config->limits.max_text_line;
  generation->data_limits.bare_newline = config->smtp.bare_newline;
  for (const auto& network : config->proxy_protocol.trusted_networks) {
    std::string error;   // the loader validated every entry
    if (auto parsed = policy::parse_cidr(network, error)) generation->proxy_trusted.push_back(*parsed);
  }
  if (!config->tls.cert_file.empty()) generation->tls_server = make_server_tls_context(config->tls);
  if (config->backend.starttls != policy::BackendConfig::Tls::none)
    generation->tls_client = make_client_tls_context(config->backend);
  // One DNS answer cache and one client-name cache per generation, shared by the workers.
  auto dns_cache = filters::make_dns_cache(*config);
  auto client_name_cache = filters::make_client_name_cache(*config);
  for (auto& worker : workers_) {
    generation->services.push_back(std::make_unique<filters::Services>(filters::make_services(
        worker->io.get_executor(), *config, dns_cache, client_name_cache)));
  }
  return generation;
}

void Server::install(std::shared_ptr<const policy::Config> config) {
  auto generation = build_generation(std::move(config));
  std::lock_guard lock(generation_mutex_);
  generation_ = std::move(generation);
  metrics::Registry::global()
      .gauge("mxgate_config_generation", "Policy generation in force (1 at start, +1 per reload)")
      .set(static_cast<std::int64_t>(generation_->number));
}

std::shared_ptr<const Generation> Server::current() const {
  std::lock_guard lock(generation_mutex_);
  return generation_;
}

bool Server::bind(std::string& error) {
  auto generation = current();
  for (auto& worker : workers_) {
    for (const auto& endpoint_config : generation->config->listen) {
      boost::system::error_code code;
      auto address = asio::ip::make_address(endpoint_config.host, code);
      if (code) {
        error = endpoint_config.to_string() + ": not an IP address";
        return false;
      }
      asio::ip::tcp::endpoint endpoint(address, endpoint_config.port);
      auto acceptor = std::make_unique<asio::ip::tcp::acceptor>(worker->io);
      acceptor->open(endpoint.protocol(), code);
      if (!code) acceptor->set_option(asio::socket_base::reuse_address(true), code);
      if (!code) {
        // One listening socket per worker on the same port: the kernel spreads the
        // connections over the workers, no accept lock shared between threads.
        int one = 1;
        if (::setsockopt(acceptor->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
          code = boost::system::error_code(errno, boost::system::system_category());
      }
      if (!code && address.is_v6()) acceptor->set_option(asio::ip::v6_only(true), code);
      if (!code) acceptor->bind(endpoint, code);
      if (!code) acceptor->listen(asio::socket_base::max_listen_connections, code);
      if (code) {
        error = endpoint_config.to_string() + ": " + code.message();
        return false;
      }
      worker->acceptors.push_back(std::move(acceptor));
    }
  }
  return true;
}

void Server::start_accepting(std::size_t worker_index) {
  Worker& worker = *workers_[worker_index];
  for (auto& acceptor : worker.acceptors) {
    asio::co_spawn(
        worker.io,
        [this, worker_index, acceptor = acceptor.get()]() -> awaitable<void> {
          for (;;) {
            auto [error, socket] =
                co_await acceptor->async_accept(asio::as_tuple(asio::use_awaitable));
            if (error) {
              if (error == asio::error::operation_aborted || !acceptor->is_open()) co_return;
              // EMFILE and friends: back off instead of spinning.
              spdlog::warn("accept: {}", error.message());
              asio::steady_timer pause(acceptor->get_executor(), std::chrono::milliseconds(100));
              co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
              continue;
            }
            auto session = std::make_shared<Session>(std::move(socket), current(), shared_, worker_index);
            {
              std::lock_guard lock(shared_.sessions_mutex);
              auto& sessions = shared_.sessions;
              if (sessions.size() > 1024 && sessions.size() % 1024 == 0) {
                std::erase_if(sessions, [](const auto& weak) { return weak.expired(); });
              }
              sessions.push_back(session);
            }
            asio::co_spawn(acceptor->get_executor(),
                           [session]() -> awaitable<void> { co_await session->run(); },
                           asio::detached);
          }
        },
        asio::detached);
  }
}

void Server::stop_accepting() {
  for (auto& worker : workers_) {
    asio::post(worker->io, [&worker = *worker] {
      for (auto& acceptor : worker.acceptors) {
        boost::system::error_code ignored;
        acceptor->close(ignored);
      }
    });
  }
}

void Server::shutdown_sessions() {
  std::lock_guard lock(shared_.sessions_mutex);
  for (auto& weak : shared_.sessions) {
    if (auto session = weak.lock()) {
      auto executor = session->executor();
      asio::post(executor, [session] { session->shutdown_now(); });
    }
  }
}

bool Server::reload(const std::vector<std::string>& overrides, std::string& message) {
  auto& failures = metrics::Registry::global().counter("mxgate_config_reload_failures_total",
                                                       "Reloads refused because of config errors");
  auto result = policy::load_config(config_path_, overrides);
  if (!result.ok()) {
    failures.inc();
    message.clear();
    for (const auto& config_error : result.errors) {
      spdlog::error("reload refused: {}", config_error.to_string());
      message += config_error.to_string() + "\n";
    }
    return false;
  }
  try {
    install(result.config);  // throws when a TLS file or dns.servers cannot be used
  } catch (const std::exception& failure) {
    failures.inc();
    spdlog::error("reload refused: {}: {}", config_path_, failure.what());
    message = config_path_ + ": " + failure.what() + "\n";
    return false;
  }
  shared_.event_log->set_syslog(result.config->log.syslog, result.config->log.syslog_socket);
  message = "generation " + std::to_string(current()->number);
  spdlog::info("reloaded {} ({})", config_path_, message);
  return true;
}

int Server::run(const std::vector<std::string>& overrides) {
  for (std::size_t i = 0; i < workers_.size(); ++i) start_accepting(i);
  for (auto& worker : workers_) {
    worker->thread = std::thread([&io = worker->io] {
      auto guard = asio::make_work_guard(io);
      io.run();
    });
  }
  auto generation = current();
  std::string listening;
  for (const auto& endpoint : generation->config->listen) listening += " " + endpoint.to_string();
  spdlog::info("mxgate listening on{} with {} workers, backend {}", listening, workers_.size(),
               generation->config->backend.address.to_string());

  asio::io_context control;
  asio::signal_set stop_signals(control, SIGTERM, SIGINT);
  asio::signal_set hup(control, SIGHUP);
  asio::signal_set usr1(control, SIGUSR1);
  std::function<void()> wait_hup = [&] {
    hup.async_wait([&](boost::system::error_code error, int) {
      if (error) return;
      std::string message;
      reload(overrides, message);
      wait_hup();
    });
  };
  wait_hup();
  std::function<void()> wait_usr1 = [&] {
    usr1.async_wait([&](boost::system::error_code error, int) {
      if (error) return;
      if (!shared_.event_log->reopen()) spdlog::error("{}", shared_.event_log->error());
      wait_usr1();
    });
  };
  wait_usr1();
  // metrics.listen: /metrics, /healthz, /readyz, POST /reload, on this control thread
  // (so a reload never races SIGHUP's). Its address is read at start only.
  std::unique_ptr<AdminHttp> admin;
  if (generation->config->metrics.listen) {
    admin = std::make_unique<AdminHttp>(
        control, AdminHttpHooks{[this] { return !shared_.shutting_down.load(); },
                                [this] { return current()->config->backend.address; },
                                [this, &overrides](std::string& message) {
                                  return reload(overrides, message);
                                }});
    std::string admin_error;
    if (!admin->listen(*generation->config->metrics.listen, admin_error)) {
      spdlog::error("{}", admin_error);
      return 1;
    }
    admin->start();
  }

  asio::steady_timer deadline(control);
  std::chrono::steady_clock::time_point stop_started;
  std::function<void()> poll = [&] {
    deadline.expires_after(std::chrono::milliseconds(50));
    deadline.async_wait([&](boost::system::error_code wait_error) {
      if (wait_error) return;
      if (shared_.connections.total() == 0) return;   // every session has ended
      if (std::chrono::steady_clock::now() - stop_started >= current()->config->limits.shutdown_timeout) {
        shutdown_sessions();   // 421 4.3.2 for the rest
        deadline.expires_after(std::chrono::seconds(2));
        deadline.async_wait([](boost::system::error_code) {});
        return;
      }
      poll();
    });
  };
  stop_signals.async_wait([&](boost::system::error_code error, int signal_number) {
    if (error) return;
    spdlog::info("signal {}: no new connections, waiting up to {} ms for sessions", signal_number,
                 current()->config->limits.shutdown_timeout.count());
    shared_.shutting_down = true;
    stop_accepting();
    hup.cancel();
    usr1.cancel();
    if (admin) admin->stop();
    stop_started = std::chrono::steady_clock::now();
    poll();
  });
  control.run();

  for (auto& worker : workers_) worker->io.stop();
  for (auto& worker : workers_) {
    if (worker->thread.joinable()) worker->thread.join();
  }
  spdlog::info("mxgate stopped");
  return 0;
}

}  // namespace mxgate::proxy

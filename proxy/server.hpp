// The daemon: one io_context per worker thread, SO_REUSEPORT listeners on each, the
// current policy generation (swapped on reload), and the limits shared by all sessions.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "filters/pipeline.hpp"
#include "filters/relay.hpp"
#include "policy/cidr.hpp"
#include "policy/config.hpp"
#include "proxy/event_log.hpp"
#include "proxy/recent_senders.hpp"
#include "proxy/smtp/address.hpp"
#include "proxy/smtp/data_reader.hpp"

namespace mxgate::proxy {

// Everything a session needs from one policy generation. Sessions keep the generation
// they started with, so a reload never changes the rules under a session in flight.
struct Generation {
  std::uint64_t number = 0;
  std::shared_ptr<const policy::Config> config;
  std::shared_ptr<const filters::Pipeline> pipeline;
  filters::RelayPolicy relay;
  smtp::AddressLimits address_limits;
  smtp::DataLimits data_limits;
  std::vector<policy::Cidr> proxy_trusted;   // proxy_protocol.trusted_networks, parsed once
  std::shared_ptr<boost::asio::ssl::context> tls_server;   // null: STARTTLS not offered
  std::shared_ptr<boost::asio::ssl::context> tls_client;   // toward the backend
  std::vector<std::unique_ptr<filters::Services>> services;  // one per worker
};

// Connections in total and per client IP, across all workers.
class ConnectionTable {
 public:
  enum class Admit { ok, too_many, too_many_from_ip };
  Admit add(const std::string& client_ip, std::size_t max_total, std::size_t max_per_ip);
  void remove(const std::string& client_ip);
  std::size_t total() const { return total_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::size_t> total_{0};
  std::mutex mutex_;
  std::unordered_map<std::string, std::size_t> per_ip_;
};

class Session;

// State every session shares, owned by the server.
struct SharedState {
  ConnectionTable connections;
  std::atomic<std::uint64_t> bytes_in_flight{0};
  std::atomic<bool> shutting_down{false};
  std::unique_ptr<EventLog> event_log;
  RecentSenders recent_senders;   // backend.early_connect
  // Live sessions, so a shutdown deadline can 421 the rest.
  std::mutex sessions_mutex;
  std::vector<std::weak_ptr<Session>> sessions;
};

class Server {
 public:
  explicit Server(std::shared_ptr<const policy::Config> config);
  ~Server();

  // Binds the listeners (errors are returned, e.g. "127.0.0.1:25: Address already in use").
  bool bind(std::string& error);
  // Serves until SIGTERM/SIGINT; SIGHUP reloads, SIGUSR1 reopens the log.
  int run(const std::vector<std::string>& overrides);

  std::shared_ptr<const Generation> current() const;
  // Builds and swaps in a new generation; the old one lives on in its sessions.
  void install(std::shared_ptr<const policy::Config> config);
  // SIGHUP and POST /reload: loads the config file again; true with "generation N" in
  // `message`, or false with the config errors (one per line) and the old policy kept.
  bool reload(const std::vector<std::string>& overrides, std::string& message);
  SharedState& shared() { return shared_; }

 private:
  struct Worker {
    boost::asio::io_context io{1};
    std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>> acceptors;
    std::thread thread;
  };
  std::shared_ptr<const Generation> build_generation(std::shared_ptr<const policy::Config> config);
  void start_accepting(std::size_t worker_index);
  void stop_accepting();
  void shutdown_sessions();

  std::vector<std::unique_ptr<Worker>> workers_;
  SharedState shared_;
  mutable std::mutex generation_mutex_;
  std::shared_ptr<const Generation> generation_;
  std::uint64_t generation_counter_ = 0;
  std::string config_path_;
};

}  // namespace mxgate::proxy

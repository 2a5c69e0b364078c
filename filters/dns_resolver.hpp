// An asynchronous DNS client for DNS lists and the client's name: c-ares driven by Asio
// (its sockets watched with async_wait, its retransmissions by a timer), one channel per
// worker thread.
#pragma once

#include <array>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mxgate::filters {

struct DnsAnswer {
  enum class Status {
    ok,         // at least one record of the asked type
    nxdomain,   // the name does not exist: for a DNS list, "not listed"
    nodata,     // the name exists without a record of that type: also "not listed"
    timeout,    // no answer within the resolver timeout (all tries)
    error,      // SERVFAIL, REFUSED, connection refused, malformed answer, ...
    cancelled,  // the caller stopped waiting (a pipeline deadline)
  };
  Status status = Status::error;
  std::vector<std::uint32_t> addresses;  // A records, host byte order
  std::vector<std::string> texts;        // TXT records, each record's strings joined
  std::vector<std::array<std::uint8_t, 16>> ipv6_addresses;  // AAAA records, network order
  std::vector<std::string> names;        // PTR records, as c-ares spells them (no final dot)
  std::chrono::seconds ttl{0};           // smallest TTL of the answer records
  std::string error;                     // c-ares' words, for the log

  bool not_found() const { return status == Status::nxdomain || status == Status::nodata; }
  bool failed() const { return !not_found() && status != Status::ok; }
};
const char* dns_status_name(DnsAnswer::Status status);

struct DnsResolverOptions {
  std::vector<std::string> servers;  // "127.0.0.1:53", "[::1]:5353"; empty: /etc/resolv.conf
  // The whole lookup, every try included: the awaitable completes within it.
  std::chrono::milliseconds timeout{2000};
  int retries = 1;  // tries after the first, each given timeout / (retries + 1)
};

// Lives on one executor (one io_context thread): create it there and call it only from
// coroutines running there. Nothing in it blocks.
class DnsResolver : public std::enable_shared_from_this<DnsResolver> {
 public:
  // Throws std::runtime_error when c-ares cannot start or a server address is malformed.
  static std::shared_ptr<DnsResolver> create(boost::asio::any_io_executor executor,
                                             DnsResolverOptions options);
  ~DnsResolver();
  DnsResolver(const DnsResolver&) = delete;
  DnsResolver& operator=(const DnsResolver&) = delete;

  boost::asio::awaitable<DnsAnswer> query_a(std::string name);
  boost::asio::awaitable<DnsAnswer> query_txt(std::string name);
  // `name` is the reverse name ("1.2.0.192.in-addr.arpa"); CNAMEs of RFC 2317 classless
  // delegations are followed by the server, their PTR records collected here.
  boost::asio::awaitable<DnsAnswer> query_ptr(std::string name);
  boost::asio::awaitable<DnsAnswer> query_aaaa(std::string name);

  const boost::asio::any_io_executor& executor() const;
  std::uint64_t queries_sent() const;  // for tests and the bench: cache hits send none
  std::size_t queries_in_flight() const;

  struct Impl;

 private:
  DnsResolver() = default;
  boost::asio::awaitable<DnsAnswer> query(std::string name, int type);
  std::shared_ptr<Impl> impl_;
};

}  // namespace mxgate::filters

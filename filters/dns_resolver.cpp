// c-ares under Asio: c-ares tells us (sock_state_cb) which sockets to watch, Asio waits on
// them and on the next retransmission time, and every answer resumes its coroutine.
#include "filters/dns_resolver.hpp"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <fmt/format.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>

#include "filters/metrics.hpp"

namespace mxgate::filters {

namespace asio = boost::asio;

const char* dns_status_name(DnsAnswer::Status status) {
  switch (status) {
    case DnsAnswer::Status::ok:
      return "ok";
    case DnsAnswer::Status::nxdomain:
      return "nxdomain";
    case DnsAnswer::Status::nodata:
      return "nodata";
    case DnsAnswer::Status::timeout:
      return "timeout";
    case DnsAnswer::Status::error:
      return "error";
    case DnsAnswer::Status::cancelled:
      return "cancelled";
  }
  return "unknown";
}

namespace {

// One lookup: the coroutine waits on `timer`, which doubles as the overall deadline and
// as the signal the c-ares callback cancels when the answer is in.
struct QueryState {
  explicit QueryState(const asio::any_io_executor& executor) : timer(executor) {}
  asio::steady_timer timer;
  int type = 0;
  bool done = false;
  DnsAnswer answer;
};

DnsAnswer malformed(const char* why) {
  DnsAnswer answer;
  answer.status = DnsAnswer::Status::error;
  answer.error = why;
  return answer;
}

// The PTR records of an answer, by hand: ares_parse_ptr_reply's hostent keeps no TTL,
// and which names it files as aliases has changed between c-ares versions.
DnsAnswer parse_ptr_answer(const unsigned char* buffer, int length) {
  auto read16 = [](const unsigned char* at) { return (at[0] << 8) | at[1]; };
  // The answer comes from the network: ares_expand_name bounds its own reads, and each
  // fixed-size part is checked against what is left before it is read.
  auto skip_name = [&](const unsigned char*& at) {
    char* name = nullptr;
    long used = 0;
    if (ares_expand_name(at, buffer, length, &name, &used) != ARES_SUCCESS) return false;
    ares_free_string(name);
    at += used;
    return true;
  };
  if (length < NS_HFIXEDSZ) return malformed("answer shorter than a DNS header");
  const unsigned char* const end = buffer + length;
  const unsigned char* at = buffer + NS_HFIXEDSZ;
  const int questions = read16(buffer + 4);
  const int records = read16(buffer + 6);
  for (int i = 0; i < questions; ++i) {
    if (!skip_name(at) || end - at < NS_QFIXEDSZ) return malformed("malformed question");
    at += NS_QFIXEDSZ;
  }
  DnsAnswer answer;
  std::uint32_t ttl = UINT32_MAX;
  for (int i = 0; i < records; ++i) {
    if (!skip_name(at) || end - at < NS_RRFIXEDSZ) return malformed("malformed record");
    const int type = read16(at);
    const int klass = read16(at + 2);
    const std::uint32_t record_ttl = (static_cast<std::uint32_t>(read16(at + 4)) << 16) |
                                     static_cast<std::uint32_t>(read16(at + 6));
    const int data_length = read16(at + 8);
    at += NS_RRFIXEDSZ;
    if (end - at < data_length) return malformed("record data past the end of the answer");
    // A CNAME (RFC 2317 classless delegation) comes first; its target's PTRs follow.
    if (type == ns_t_ptr && klass == ns_c_in) {
      char* name = nullptr;
      long used = 0;
      if (ares_expand_name(at, buffer, length, &name, &used) != ARES_SUCCESS)
        return malformed("malformed PTR name");
      answer.names.emplace_back(name);
      ares_free_string(name);
      ttl = std::min(ttl, record_ttl);
    }
    at += data_length;
  }
  if (answer.names.empty()) {
    answer.status = DnsAnswer::Status::nodata;
    return answer;
  }
  // RFC 2181 8: a TTL with the top bit set is read as 0.
  answer.ttl = std::chrono::seconds(ttl > INT32_MAX ? 0 : ttl);
  answer.status = DnsAnswer::Status::ok;
  return answer;
}

DnsAnswer parse_aaaa_answer(unsigned char* buffer, int length) {
  DnsAnswer answer;
  ares_addr6ttl records[32];
  int count = 32;
  int parsed = ares_parse_aaaa_reply(buffer, length, nullptr, records, &count);
  if (parsed == ARES_ENODATA || (parsed == ARES_SUCCESS && count == 0)) {
    answer.status = DnsAnswer::Status::nodata;
    return answer;
  }
  if (parsed != ARES_SUCCESS) return malformed(ares_strerror(parsed));
  int ttl = records[0].ttl;
  for (int i = 0; i < count; ++i) {
    std::array<std::uint8_t, 16> address;
    std::memcpy(address.data(), records[i].ip6addr._S6_un._S6_u8, address.size());
    answer.ipv6_addresses.push_back(address);
    ttl = std::min(ttl, records[i].ttl);
  }
  answer.ttl = std::chrono::seconds(std::max(ttl, 0));
  answer.status = DnsAnswer::Status::ok;
  return answer;
}

DnsAnswer parse_answer(int type, int status, unsigned char* buffer, int length) {
  DnsAnswer answer;
  switch (status) {
    case ARES_SUCCESS:
      break;
    case ARES_ENOTFOUND:
      answer.status = DnsAnswer::Status::nxdomain;
      return answer;
    case ARES_ENODATA:
      answer.status = DnsAnswer::Status::nodata;
      return answer;
    case ARES_ETIMEOUT:
      answer.status = DnsAnswer::Status::timeout;
      answer.error = "timeout";
      return answer;
    default:
      answer.status = DnsAnswer::Status::error;
      answer.error = ares_strerror(status);
      return answer;
  }
  if (type == ns_t_ptr) return parse_ptr_answer(buffer, length);
  if (type == ns_t_aaaa) return parse_aaaa_answer(buffer, length);
  if (type == ns_t_a) {
    ares_addrttl records[32];
    int count = 32;
    int parsed = ares_parse_a_reply(buffer, length, nullptr, records, &count);
    if (parsed == ARES_ENODATA || (parsed == ARES_SUCCESS && count == 0)) {
      answer.status = DnsAnswer::Status::nodata;
      return answer;
    }
    if (parsed != ARES_SUCCESS) {
      answer.status = DnsAnswer::Status::error;
      answer.error = ares_strerror(parsed);
      return answer;
    }
    int ttl = records[0].ttl;
    for (int i = 0; i < count; ++i) {
      answer.addresses.push_back(ntohl(records[i].ipaddr.s_addr));
      ttl = std::min(ttl, records[i].ttl);
    }
    answer.ttl = std::chrono::seconds(std::max(ttl, 0));
    answer.status = DnsAnswer::Status::ok;
    return answer;
  }
  ares_txt_ext* records = nullptr;
  int parsed = ares_parse_txt_reply_ext(buffer, length, &records);
  if (parsed == ARES_ENODATA) {
    answer.status = DnsAnswer::Status::nodata;
    return answer;
  }
  if (parsed != ARES_SUCCESS) {
    answer.status = DnsAnswer::Status::error;
    answer.error = ares_strerror(parsed);
    return answer;
  }
  for (ares_txt_ext* record = records; record != nullptr; record = record->next) {
    std::string_view piece(reinterpret_cast<const char*>(record->txt), record->length);
    if (record->record_start || answer.texts.empty())
      answer.texts.emplace_back(piece);
    else
      answer.texts.back().append(piece);
  }
  ares_free_data(records);
  answer.status = answer.texts.empty() ? DnsAnswer::Status::nodata : DnsAnswer::Status::ok;
  return answer;
}

void initialise_library() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (int status = ares_library_init(ARES_LIB_INIT_ALL); status != ARES_SUCCESS)
      throw std::runtime_error(fmt::format("c-ares: {}", ares_strerror(status)));
  });
}

}  // namespace

struct DnsResolver::Impl : std::enable_shared_from_this<DnsResolver::Impl> {
  // A socket c-ares opened; we only watch it, c-ares reads, writes and closes it.
  struct Watch {
    Watch(const asio::any_io_executor& executor, ares_socket_t socket)
        : descriptor(executor, socket), fd(socket) {}
    asio::posix::stream_descriptor descriptor;
    ares_socket_t fd;
    bool want_read = false;
    bool want_write = false;
    bool read_pending = false;
    bool write_pending = false;
    bool closed = false;
  };

  explicit Impl(asio::any_io_executor executor_in)
      : executor(std::move(executor_in)),
        timer(executor),
        sent(metrics::Registry::global().counter("mxgate_dns_queries_total",
                                                 "DNS queries sent by the resolver")) {}

  ~Impl() {
    // Completes every outstanding query with ARES_EDESTRUCTION and closes the sockets
    // (sock_state_cb releases each descriptor before c-ares closes it).
    if (channel != nullptr) ares_destroy(channel);
    for (auto& [fd, watch] : watches) release(*watch);
  }

  static void on_socket_state(void* data, ares_socket_t socket, int readable, int writable) {
    auto* self = static_cast<Impl*>(data);
    if (!readable && !writable) {
      auto found = self->watches.find(socket);
      if (found == self->watches.end()) return;
      release(*found->second);
      self->watches.erase(found);
      return;
    }
    auto& watch = self->watches[socket];
    if (!watch) {
      // Called from inside c-ares (C code): nothing may escape from here.
      try {
        watch = std::make_shared<Watch>(self->executor, socket);
      } catch (const std::exception& error) {
        self->watches.erase(socket);
        spdlog::error("dns resolver: cannot watch socket {}: {}", socket, error.what());
        return;  // the query times out through the timer instead
      }
    }
    watch->want_read = readable != 0;
    watch->want_write = writable != 0;
    self->arm(watch);
  }

  static void release(Watch& watch) {
    watch.closed = true;
    boost::system::error_code ignored;
    watch.descriptor.cancel(ignored);
    (void)watch.descriptor.release();  // c-ares owns and closes the fd
  }

  void arm(const std::shared_ptr<Watch>& watch) {
    std::weak_ptr<Impl> weak = weak_from_this();
    if (watch->want_read && !watch->read_pending) {
      watch->read_pending = true;
      watch->descriptor.async_wait(asio::posix::descriptor_base::wait_read,
                                   [weak, watch](const boost::system::error_code& error) {
                                     watch->read_pending = false;
                                     auto self = weak.lock();
                                     if (error || watch->closed || !self) return;
                                     self->on_readable(watch);
                                   });
    }
    if (watch->want_write && !watch->write_pending) {
      watch->write_pending = true;
      watch->descriptor.async_wait(asio::posix::descriptor_base::wait_write,
                                   [weak, watch](const boost::system::error_code& error) {
                                     watch->write_pending = false;
                                     auto self = weak.lock();
                                     if (error || watch->closed || !self) return;
                                     ares_process_fd(self->channel, ARES_SOCKET_BAD, watch->fd);
                                     if (!watch->closed) self->arm(watch);
                                     self->rearm_timer();
                                   });
    }
  }

  void on_readable(const std::shared_ptr<Watch>& watch) {
    // Asio's epoll reactor is edge-triggered: a second datagram already queued would not
    // wake us again, so drain what is readable now (poll with a zero timeout never blocks).
    for (int round = 0; round < 64 && !watch->closed; ++round) {
      ares_process_fd(channel, watch->fd, ARES_SOCKET_BAD);
      if (watch->closed) break;
      pollfd probe{watch->fd, POLLIN, 0};
      if (::poll(&probe, 1, 0) <= 0 || (probe.revents & POLLIN) == 0) break;
    }
    if (!watch->closed) arm(watch);
    rearm_timer();
  }

  void rearm_timer() {
    timeval delay{};
    if (ares_timeout(channel, nullptr, &delay) == nullptr) {
      timer.cancel();
      return;
    }
    timer.expires_after(std::chrono::seconds(delay.tv_sec) +
                        std::chrono::microseconds(delay.tv_usec));
    std::weak_ptr<Impl> weak = weak_from_this();
    timer.async_wait([weak](const boost::system::error_code& error) {
      auto self = weak.lock();
      if (error || !self) return;
      ares_process_fd(self->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      self->rearm_timer();
    });
  }

  static void on_answer(void* argument, int status, int /*timeouts*/, unsigned char* buffer,
                        int length) {
    std::unique_ptr<std::shared_ptr<QueryState>> holder(
        static_cast<std::shared_ptr<QueryState>*>(argument));
    QueryState& state = **holder;
    state.answer = parse_answer(state.type, status, buffer, length);
    state.done = true;
    state.timer.cancel();
  }

  asio::any_io_executor executor;
  asio::steady_timer timer;
  ares_channel channel = nullptr;
  DnsResolverOptions options;
  std::map<ares_socket_t, std::shared_ptr<Watch>> watches;
  std::uint64_t queries_sent = 0;
  std::size_t in_flight = 0;
  metrics::Counter& sent;
};

std::shared_ptr<DnsResolver> DnsResolver::create(asio::any_io_executor executor,
                                                 DnsResolverOptions options) {
  initialise_library();
  auto impl = std::make_shared<Impl>(std::move(executor));
  ares_options settings{};
  const int tries = std::max(1, options.retries + 1);
  settings.timeout = std::max<int>(1, static_cast<int>(options.timeout.count() / tries));
  settings.tries = tries;
  settings.sock_state_cb = &Impl::on_socket_state;
  settings.sock_state_cb_data = impl.get();
  int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
  if (int status = ares_init_options(&impl->channel, &settings, mask); status != ARES_SUCCESS)
    throw std::runtime_error(fmt::format("c-ares init: {}", ares_strerror(status)));
  if (!options.servers.empty()) {
    std::string csv;
    for (const auto& server : options.servers) {
      if (!csv.empty()) csv += ',';
      csv += server;
    }
    if (int status = ares_set_servers_ports_csv(impl->channel, csv.c_str()); status != ARES_SUCCESS)
      throw std::runtime_error(fmt::format("dns.servers \"{}\": {}", csv, ares_strerror(status)));
  }
  impl->options = std::move(options);
  std::shared_ptr<DnsResolver> resolver(new DnsResolver());
  resolver->impl_ = std::move(impl);
  return resolver;
}

DnsResolver::~DnsResolver() = default;

const asio::any_io_executor& DnsResolver::executor() const { return impl_->executor; }
std::uint64_t DnsResolver::queries_sent() const { return impl_->queries_sent; }
std::size_t DnsResolver::queries_in_flight() const { return impl_->in_flight; }

asio::awaitable<DnsAnswer> DnsResolver::query_a(std::string name) {
  return query(std::move(name), ns_t_a);
}

asio::awaitable<DnsAnswer> DnsResolver::query_txt(std::string name) {
  return query(std::move(name), ns_t_txt);
}

asio::awaitable<DnsAnswer> DnsResolver::query_ptr(std::string name) {
  return query(std::move(name), ns_t_ptr);
}

asio::awaitable<DnsAnswer> DnsResolver::query_aaaa(std::string name) {
  return query(std::move(name), ns_t_aaaa);
}

asio::awaitable<DnsAnswer> DnsResolver::query(std::string name, int type) {
  // Keep the channel alive while c-ares may still call back into this query.
  std::shared_ptr<Impl> impl = impl_;
  auto state = std::make_shared<QueryState>(impl->executor);
  state->type = type;
  state->timer.expires_after(impl->options.timeout);
  ++impl->queries_sent;
  ++impl->in_flight;
  impl->sent.inc();
  ares_query(impl->channel, name.c_str(), ns_c_in, type, &Impl::on_answer,
             new std::shared_ptr<QueryState>(state));
  impl->rearm_timer();
  boost::system::error_code error;
  // c-ares may answer synchronously (a malformed name, no servers): then do not wait.
  if (!state->done)
    co_await state->timer.async_wait(asio::redirect_error(asio::use_awaitable, error));
  --impl->in_flight;
  if (state->done) co_return std::move(state->answer);
  // Abandoned: the late c-ares callback only touches `state`, which it co-owns.
  DnsAnswer answer;
  answer.status = error ? DnsAnswer::Status::cancelled : DnsAnswer::Status::timeout;
  answer.error = error ? "cancelled" : "timeout";
  co_return answer;
}

}  // namespace mxgate::filters

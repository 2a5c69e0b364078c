// Backend SMTP client: the second half of every accepted transaction. Whatever goes
// wrong here turns into a 4xx for the client (invariants 1 and 2).
#include "proxy/backend.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cctype>

#include "filters/metrics.hpp"
#include "policy/names.hpp"
#include "proxy/smtp/data_reader.hpp"

namespace asio = boost::asio;
using asio::awaitable;
using mxgate::smtp::Reply;

namespace mxgate::proxy {

namespace {
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t max_reply_line = 4096;
constexpr std::size_t max_reply_lines = 100;
}  // namespace

std::string xtext_encode(std::string_view value) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size());
  for (unsigned char c : value) {
    if (c < 33 || c > 126 || c == '+' || c == '=') {
      out += '+';
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

Backend::Backend(asio::any_io_executor executor, const policy::BackendConfig& config,
                 std::string local_hostname, asio::ssl::context* tls_context)
    : executor_(std::move(executor)),
      config_(config),
      hostname_(std::move(local_hostname)),
      tls_context_(tls_context) {}

Backend::~Backend() { abort(); }

Reply Backend::fail(std::string_view why) {
  spdlog::warn("backend {}: {}", config_.address.to_string(), why);
  static metrics::Counter& errors = metrics::Registry::global().counter(
      "mxgate_backend_errors_total",
      "Backend connections lost, timed out or refused (client got 4xx)");
  errors.inc();
  failed_ = true;
  abort();
  return smtp::replies::backend_unavailable();
}

void Backend::abort() {
  if (stream_) stream_->close();
  open_ = false;
  data_sent_ = false;
}

bool Backend::alive() {
  if (!open_ || !stream_) return false;
  if (stream_->has_buffered()) {
    abort();
    return false;
  }
  // TLS records may arrive unasked, and a blocking peek would wait: neither is judged.
  if (stream_->tls_active() || !stream_->ensure_non_blocking()) return true;
  char byte;
  boost::system::error_code error;
  stream_->socket().receive(asio::buffer(&byte, 1), asio::socket_base::message_peek, error);
  if (error == asio::error::would_block || error == asio::error::try_again) return true;
  spdlog::debug("backend {}: connection closed or spoke unasked while idle", config_.address.to_string());
  abort();
  return false;
}

bool Backend::offers(std::string_view extension) const {
  // Asked several times per message (SIZE, DSN, PIPELINING, CHUNKING...): no allocation.
  // The EHLO lines were lower-cased once, when they arrived.
  return std::any_of(extensions_.begin(), extensions_.end(), [&](const std::string& line) {
    if (line.size() < extension.size()) return false;
    if (line.size() > extension.size() && line[extension.size()] != ' ') return false;
    for (std::size_t i = 0; i < extension.size(); ++i) {
      if (line[i] != std::tolower(static_cast<unsigned char>(extension[i]))) return false;
    }
    return true;
  });
}

awaitable<Reply> Backend::read_reply(std::chrono::milliseconds timeout) {
  std::string wire;
  for (std::size_t count = 0; count < max_reply_lines; ++count) {
    std::string_view line;
    ReadStatus status = co_await stream_->read_line(max_reply_line, timeout, line);
    if (status == ReadStatus::timeout) co_return fail("timeout waiting for a reply");
    if (status != ReadStatus::ok) co_return fail("connection lost or malformed reply");
    wire.append(line);
    wire.append("\r\n");
    if (line.size() < 4 || line[3] != '-') break;
  }
  Reply reply;
  if (!smtp::parse_reply(wire, reply)) co_return fail("malformed reply: " + wire);
  co_return reply;
}

awaitable<Reply> Backend::ehlo(std::string_view client_helo) {
  // After XCLIENT, Postfix takes the name of the next EHLO as the client's HELO, so
  // that EHLO carries the client's own name (Postfix's XCLIENT_README does the same).
  std::string name = !client_helo.empty() ? std::string(client_helo)
                     : config_.helo_name.empty() ? hostname_
                                                 : config_.helo_name;
  if (!co_await stream_->write("EHLO " + name + "\r\n", config_.command_timeout))
    co_return fail("write failed");
  Reply reply = co_await read_reply(config_.command_timeout);
  extensions_.clear();
  if (reply.code == 250) {
    for (std::size_t i = 1; i < reply.lines.size(); ++i)
      extensions_.push_back(policy::ascii_lower(reply.lines[i]));
  }
  co_return reply;
}

awaitable<Reply> Backend::open(const ClientIdentity& client) {
  // A numeric backend address (the usual loopback Postfix) needs no resolver: Asio's
  // resolver runs on one shared thread and cost a thread hop per session (bench/).
  std::vector<asio::ip::tcp::endpoint> endpoints;
  boost::system::error_code numeric_error;
  auto numeric = asio::ip::make_address(config_.address.host, numeric_error);
  if (!numeric_error) {
    endpoints.emplace_back(numeric, config_.address.port);
  } else {
    asio::ip::tcp::resolver resolver(executor_);
    auto [resolve_error, results] = co_await resolver.async_resolve(
        config_.address.host, std::to_string(config_.address.port), use_tuple);
    if (resolve_error) co_return fail("cannot resolve: " + resolve_error.message());
    for (const auto& entry : results) endpoints.push_back(entry.endpoint());
  }

  stream_ = std::make_unique<SmtpStream>(asio::ip::tcp::socket(executor_));
  {
    // Bound the connect by connect_timeout.
    asio::steady_timer timer(executor_);
    timer.expires_after(config_.connect_timeout);
    bool timed_out = false;
    timer.async_wait([&](boost::system::error_code error) {
      if (!error) {
        timed_out = true;
        boost::system::error_code ignored;
        stream_->socket().cancel(ignored);
      }
    });
    auto [connect_error, endpoint] =
        co_await asio::async_connect(stream_->socket(), endpoints, use_tuple);
    timer.cancel();
    if (connect_error) {
      co_return fail(timed_out ? std::string("connect timeout")
                               : "connect failed: " + connect_error.message());
    }
  }
  stream_->socket().set_option(asio::ip::tcp::no_delay(true));

  Reply greeting = co_await read_reply(config_.command_timeout);
  if (failed_) co_return greeting;
  if (greeting.code != 220) {
    abort();
    co_return smtp::Reply(421, "4.3.0", "backend refused the connection, try again later");
  }

  using Tls = policy::BackendConfig::Tls;
  bool use_tls = config_.starttls != Tls::none && tls_context_ != nullptr;
  if (config_.xclient && !use_tls) {
    // XCLIENT straight after the greeting: the EHLO before it would only tell whether
    // XCLIENT is offered, and Postfix takes XCLIENT before EHLO. That is a round trip
    // less per session. A backend without it (or not authorising us) answers 5xx:
    // carry on without it, as when it is not offered.
    std::optional<Reply> handed_over = co_await send_xclient(client);
    if (failed_) co_return *handed_over;
    xclient_used_ = handed_over.has_value();
    Reply reply = co_await ehlo(xclient_used_ ? helo_after_xclient(client) : std::string_view());
    if (failed_) co_return reply;
    if (reply.code != 250) {
      abort();
      co_return smtp::replies::backend_unavailable();
    }
    open_ = true;
    co_return smtp::replies::ok();
  }

  Reply reply = co_await ehlo();
  if (failed_) co_return reply;
  if (reply.code != 250) {
    abort();
    co_return smtp::replies::backend_unavailable();
  }

  if (use_tls) {
    if (offers("STARTTLS")) {
      if (!co_await stream_->write("STARTTLS\r\n", config_.command_timeout))
        co_return fail("write failed");
      Reply ready = co_await read_reply(config_.command_timeout);
      if (ready.code != 220) {
        if (config_.starttls == Tls::required) co_return fail("STARTTLS refused");
      } else {
        if (!co_await stream_->start_tls_client(*tls_context_, config_.address.host,
                                                config_.command_timeout))
          co_return fail("TLS handshake failed");
        reply = co_await ehlo();
        if (reply.code != 250) co_return fail("EHLO after STARTTLS failed");
      }
    } else if (config_.starttls == Tls::required) {
      co_return fail("STARTTLS required but not offered");
    }
  }

  if (config_.xclient && offers("XCLIENT")) {
    std::optional<Reply> handed_over = co_await send_xclient(client);
    if (failed_) co_return *handed_over;
    if (!handed_over) co_return fail("XCLIENT refused");
    xclient_used_ = true;
    reply = co_await ehlo(helo_after_xclient(client));
    if (reply.code != 250) co_return fail("EHLO after XCLIENT failed");
  }
  open_ = true;
  co_return smtp::replies::ok();
}

std::string_view Backend::helo_after_xclient(const ClientIdentity& client) {
  return client.helo.empty() ? std::string_view("[UNAVAILABLE]") : std::string_view(client.helo);
}

awaitable<std::optional<Reply>> Backend::send_xclient(const ClientIdentity& client) {
  // Postfix's XCLIENT: each attribute xtext-encoded; a command line is at most 512
  // octets, so HELO (which can be long) goes in a second command when needed.
  std::string addr = client.ipv6 ? "IPV6:" + client.address : client.address;
  std::string first = "XCLIENT ADDR=" + xtext_encode(addr) +
                      " PORT=" + std::to_string(client.port) + " NAME=" +
                      (!client.name.empty() ? xtext_encode(client.name)
                       : client.name_tempfail ? std::string("[TEMPUNAVAIL]")
                                              : std::string("[UNAVAILABLE]")) +
                      " PROTO=" + (client.esmtp ? "ESMTP" : "SMTP");
  std::vector<std::string> commands;
  std::string helo_attribute =
      client.helo.empty() ? std::string() : " HELO=" + xtext_encode(client.helo);
  if (first.size() + helo_attribute.size() + 2 <= 512) {
    commands.push_back(first + helo_attribute);
  } else {
    commands.push_back(first);
    if (!helo_attribute.empty() && helo_attribute.size() + 9 <= 512)
      commands.push_back("XCLIENT" + helo_attribute);
  }
  for (const auto& command : commands) {
    if (!co_await stream_->write(command + "\r\n", config_.command_timeout))
      co_return fail("write failed");
    Reply xreply = co_await read_reply(config_.command_timeout);
    if (failed_) co_return xreply;
    // Postfix answers 220 (a new greeting); smtp-sink answers 250. Both mean done.
    if (!xreply.positive()) {
      // Postfix sees mxgate as the client then: say so once, not per session.
      static std::atomic<bool> warned{false};
      if (!warned.exchange(true)) {
        spdlog::warn("backend {}: XCLIENT refused ({}): the backend sees mxgate as the client; "
                     "list mxgate in smtpd_authorized_xclient_hosts or set backend.xclient: false",
                     config_.address.to_string(), xreply.text());
      }
      co_return std::nullopt;
    }
  }
  co_return smtp::replies::ok();
}

awaitable<Reply> Backend::command(std::string_view line) {
  if (!open_) co_return smtp::replies::backend_unavailable();
  std::string wire(line);
  wire += "\r\n";
  if (!co_await stream_->write(wire, config_.command_timeout)) co_return fail("write failed");
  co_return co_await read_reply(config_.command_timeout);
}

awaitable<std::vector<Reply>> Backend::commands(std::vector<std::string> lines) {
  std::vector<Reply> replies;
  replies.reserve(lines.size());
  // (Each co_await result goes to a local first: g++ 12 mishandles co_await inside a
  // function argument such as push_back(co_await ...).)
  if (!open_ || !offers("PIPELINING")) {
    for (const auto& line : lines) {
      Reply reply = co_await command(line);
      replies.push_back(std::move(reply));
    }
    co_return replies;
  }
  std::string wire;
  for (const auto& line : lines) {
    wire += line;
    wire += "\r\n";
  }
  if (!co_await stream_->write(wire, config_.command_timeout)) {
    Reply failure = fail("write failed");
    replies.assign(lines.size(), failure);
    co_return replies;
  }
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (!open_) {
      replies.push_back(smtp::replies::backend_unavailable());
      continue;
    }
    Reply reply = co_await read_reply(config_.command_timeout);
    replies.push_back(std::move(reply));
  }
  co_return replies;
}

bool Backend::wants_early_data() const { return open_ && !data_sent_ && !offers("CHUNKING"); }

awaitable<void> Backend::begin_data() {
  // Straight-line on purpose (no co_return ahead of the await): see session.cpp on g++ 12.
  bool written = co_await stream_->write("DATA\r\n", config_.command_timeout);
  if (written)
    data_sent_ = true;
  else
    fail("write failed");
}

awaitable<void> Backend::reset() {
  if (data_sent_) {
    // The backend waits for a message after its 354: an RSET now would be message
    // text. Closing is the one way out; the partial message is discarded.
    abort();
  } else if (open_) {
    Reply ignored = co_await command("RSET");
  }
}

awaitable<Reply> Backend::send_message(std::string_view headers_to_add, const std::string& content) {
  if (!open_) co_return smtp::replies::backend_unavailable();
  if (!data_sent_ && offers("CHUNKING")) {
    // RFC 3030: the message as it is, counted, no dot-stuffing, one round trip.
    std::string wire = "BDAT " + std::to_string(headers_to_add.size() + content.size()) + " LAST\r\n";
    wire.reserve(wire.size() + headers_to_add.size() + content.size());
    wire.append(headers_to_add);
    wire.append(content);
    if (!co_await stream_->write(wire, config_.data_timeout)) co_return fail("write failed during BDAT");
    co_return co_await read_reply(config_.data_timeout);
  }
  Reply reply;
  if (data_sent_) {
    data_sent_ = false;
    reply = co_await read_reply(config_.command_timeout);
  } else {
    reply = co_await command("DATA");
  }
  if (reply.code != 354) {
    if (reply.code >= 200 && reply.code < 400) {
      // Anything but 354 here is a protocol error by the backend; never pass it as success.
      co_return fail("unexpected reply to DATA: " + reply.text());
    }
    co_return reply;
  }
  std::string wire;
  wire.reserve(headers_to_add.size() + content.size() + content.size() / 64 + 8);
  // Headers we add are already CRLF-terminated lines; they never start with a dot.
  wire.append(headers_to_add);
  smtp::stuff_for_data(content, wire);
  if (!co_await stream_->write(wire, config_.data_timeout)) co_return fail("write failed during DATA");
  Reply final_reply = co_await read_reply(config_.data_timeout);
  co_return final_reply;
}

awaitable<void> Backend::quit() {
  if (data_sent_) abort();   // a QUIT would be message text
  if (!open_) co_return;
  if (co_await stream_->write("QUIT\r\n", std::chrono::seconds(5))) {
    std::string_view line;
    co_await stream_->read_line(max_reply_line, std::chrono::seconds(5), line);
  }
  abort();
}

}  // namespace mxgate::proxy

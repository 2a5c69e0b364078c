// The SMTP client toward Postfix: one connection per client session, opened at the
// first recipient, XCLIENT to hand over the real client, one command at a time.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "policy/config.hpp"
#include "proxy/smtp/reply.hpp"
#include "proxy/smtp_stream.hpp"

namespace mxgate::proxy {

// What the backend needs to know about the real client (XCLIENT attributes).
struct ClientIdentity {
  std::string address;     // textual IP
  bool ipv6 = false;
  std::uint16_t port = 0;
  std::string name;        // verified PTR, empty = unknown
  bool name_tempfail = false;  // name unknown as DNS failed: NAME=[TEMPUNAVAIL]
  std::string helo;
  bool esmtp = true;
};

class Backend {
 public:
  Backend(boost::asio::any_io_executor executor, const policy::BackendConfig& config,
          std::string local_hostname, boost::asio::ssl::context* tls_context);
  ~Backend();

  // Connects, reads the greeting, EHLO, optional STARTTLS, XCLIENT (+ EHLO again).
  // On failure returns the reply the client should see (4xx) and is_open() is false.
  boost::asio::awaitable<smtp::Reply> open(const ClientIdentity& client);
  bool is_open() const { return open_; }
  bool xclient_used() const { return xclient_used_; }

  // One command, one reply. A transport failure or timeout yields a 4xx reply
  // (421 4.4.2) and closes the backend.
  boost::asio::awaitable<smtp::Reply> command(std::string_view line);
  // DATA, the 354, the stuffed content and the final dot; returns the backend's reply
  // to the dot (or a 4xx when it fails: never a 2xx it did not send).
  boost::asio::awaitable<smtp::Reply> send_message(std::string_view headers_to_add,
                                                   const std::string& content);
  // QUIT and close (best effort, bounded by the command timeout).
  boost::asio::awaitable<void> quit();
  void abort();

  bool offers(std::string_view extension) const;

 private:
  boost::asio::awaitable<smtp::Reply> read_reply(std::chrono::milliseconds timeout);
  boost::asio::awaitable<smtp::Reply> ehlo(std::string_view client_helo = {});
  smtp::Reply fail(std::string_view why);

  boost::asio::any_io_executor executor_;
  const policy::BackendConfig& config_;
  std::string hostname_;
  boost::asio::ssl::context* tls_context_;
  std::unique_ptr<SmtpStream> stream_;
  std::vector<std::string> extensions_;   // upper-case EHLO keywords with parameters
  bool open_ = false;
  bool xclient_used_ = false;
  bool failed_ = false;   // a transport failure closed the connection
};

// RFC 1891 xtext, as XCLIENT attribute values require.
std::string xtext_encode(std::string_view value);

}  // namespace mxgate::proxy

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
  std::string helo;
  bool esmtp = true;
  bool name_tempfail = false;  // name unknown as DNS failed: NAME=[TEMPUNAVAIL]
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
  // Between transactions: false (and closed) when the backend has hung up or said
  // something unasked, such as Postfix's 421 after smtpd_timeout on a connection opened
  // early or kept from an earlier message. One non-blocking peek, no round trip.
  bool alive();
  bool xclient_used() const { return xclient_used_; }

  // One command, one reply. A transport failure or timeout yields a 4xx reply
  // (421 4.4.2) and closes the backend.
  boost::asio::awaitable<smtp::Reply> command(std::string_view line);
  // Several commands, one reply each, in order. Sent in one write when the backend
  // offers PIPELINING (RFC 2920: MAIL and RCPT may share a group), else one by one.
  // After a transport failure the remaining replies are that failure's 4xx.
  boost::asio::awaitable<std::vector<smtp::Reply>> commands(std::vector<std::string> lines);

  // Sends DATA without waiting for the 354, so its round trip overlaps the client's
  // upload of the message; send_message() collects the 354. Only when
  // wants_early_data(): open, in a transaction, and without CHUNKING (send_message()
  // then uses one BDAT LAST, which needs no early start).
  bool wants_early_data() const;
  boost::asio::awaitable<void> begin_data();
  // The message: BDAT LAST when CHUNKING is offered; else DATA (unless begin_data()
  // sent it), the 354, the stuffed content and the final dot. Returns the backend's
  // reply to the message (or a 4xx when it fails: never a 2xx it did not send).
  boost::asio::awaitable<smtp::Reply> send_message(std::string_view headers_to_add,
                                                   const std::string& content);
  // Ends the transaction without a message: RSET, or, after begin_data(), closing the
  // connection, the only way to abandon DATA (the backend discards the partial message).
  boost::asio::awaitable<void> reset();
  // QUIT and close (best effort, bounded by the command timeout).
  boost::asio::awaitable<void> quit();
  void abort();

  bool offers(std::string_view extension) const;

 private:
  boost::asio::awaitable<smtp::Reply> read_reply(std::chrono::milliseconds timeout);
  boost::asio::awaitable<smtp::Reply> ehlo(std::string_view client_helo = {});
  // XCLIENT with the client's attributes: the positive reply, nullopt when the
  // backend refused it (5xx/4xx), or a failure reply with failed_ set.
  boost::asio::awaitable<std::optional<smtp::Reply>> send_xclient(const ClientIdentity& client);
  static std::string_view helo_after_xclient(const ClientIdentity& client);
  smtp::Reply fail(std::string_view why);

  boost::asio::any_io_executor executor_;
  const policy::BackendConfig& config_;
  std::string hostname_;
  boost::asio::ssl::context* tls_context_;
  std::unique_ptr<SmtpStream> stream_;
  std::vector<std::string> extensions_;   // lower-case EHLO keywords with parameters
  bool open_ = false;
  bool xclient_used_ = false;
  bool failed_ = false;   // a transport failure closed the connection
  bool data_sent_ = false;   // begin_data() wrote DATA; its 354 is still to be read
};

// RFC 1891 xtext, as XCLIENT attribute values require.
std::string xtext_encode(std::string_view value);

}  // namespace mxgate::proxy

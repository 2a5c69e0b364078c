// A client or backend connection as SMTP sees it: TCP or TLS after STARTTLS, an input
// buffer read in bounded lines, batched output, and one deadline per operation
// enforced by a watchdog timer (the Asio timeouts pattern, no per-read timer churn).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

namespace mxgate::proxy {

enum class ReadStatus {
  ok,
  closed,         // peer closed or connection error
  timeout,        // the deadline passed
  too_long,       // no CRLF within the limit; the line was discarded up to its end
  bare_newline,   // a bare CR or LF or a NUL inside the line
};

class SmtpStream {
 public:
  using Clock = std::chrono::steady_clock;

  explicit SmtpStream(boost::asio::ip::tcp::socket socket);
  ~SmtpStream();
  SmtpStream(const SmtpStream&) = delete;
  SmtpStream& operator=(const SmtpStream&) = delete;

  boost::asio::ip::tcp::socket& socket() { return socket_; }
  boost::asio::any_io_executor executor() { return socket_.get_executor(); }

  // Reads one line ending in CRLF, at most `max_length` bytes including the CRLF.
  // The returned view (without CRLF) stays valid until the next read call.
  boost::asio::awaitable<ReadStatus> read_line(std::size_t max_length,
                                               std::chrono::milliseconds timeout,
                                               std::string_view& line);
  // Makes sure at least one byte is buffered (reads when empty).
  boost::asio::awaitable<ReadStatus> fill(std::chrono::milliseconds timeout);
  // Reads once more, whatever is buffered (binary headers that need more bytes).
  boost::asio::awaitable<ReadStatus> read_more(std::chrono::milliseconds timeout);
  // Reads until `count` more bytes are buffered beyond what is there (BDAT chunks are
  // consumed piecewise through buffered()/consume()).
  std::string_view buffered() const {
    return std::string_view(input_).substr(input_start_);
  }
  void consume(std::size_t count);
  // Throws away everything buffered (after STARTTLS: CVE-2011-0411).
  void discard_buffered();
  bool has_buffered() const { return input_start_ < input_.size(); }

  // Queues output; flush() writes it in one go (replies to pipelined commands are batched).
  void queue(std::string_view bytes) { output_.append(bytes); }
  std::string& output() { return output_; }
  boost::asio::awaitable<bool> flush(std::chrono::milliseconds timeout);
  boost::asio::awaitable<bool> write(std::string_view bytes, std::chrono::milliseconds timeout);

  // STARTTLS, server side or client side. Returns false on failure/timeout.
  boost::asio::awaitable<bool> start_tls_server(boost::asio::ssl::context& context,
                                                std::chrono::milliseconds timeout);
  boost::asio::awaitable<bool> start_tls_client(boost::asio::ssl::context& context,
                                                const std::string& server_name,
                                                std::chrono::milliseconds timeout);
  bool tls_active() const { return tls_ != nullptr; }
  std::string tls_description() const;   // "TLSv1.3 TLS_AES_256_GCM_SHA384"

  // Puts the socket in non-blocking mode once (reads do it themselves); false on failure.
  bool ensure_non_blocking();

  bool timed_out() const { return timed_out_; }
  // After a deliberate wait that timed out (the greet pause), reads work again.
  void clear_timeout() { timed_out_ = false; }
  void close();

 private:
  boost::asio::awaitable<std::size_t> read_some(std::chrono::milliseconds timeout);
  // A non-blocking read of whatever is queued, appended to the input.
  std::size_t read_now(boost::system::error_code& error);
  void arm(std::chrono::milliseconds timeout);
  void disarm();
  boost::asio::awaitable<void> watchdog();

  boost::asio::ip::tcp::socket socket_;
  std::unique_ptr<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>> tls_;
  std::string input_;
  std::size_t input_start_ = 0;
  std::string output_;
  boost::asio::steady_timer timer_;
  Clock::time_point deadline_ = Clock::time_point::max();
  bool watchdog_running_ = false;
  bool timed_out_ = false;
  bool closed_ = false;
  bool non_blocking_ = false;
  std::shared_ptr<bool> alive_;
};

}  // namespace mxgate::proxy

// SmtpStream: bounded line reads, batched writes, TLS upgrade, one watchdog deadline.
#include "proxy/smtp_stream.hpp"

#include <openssl/ssl.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <algorithm>
#include <cstring>

namespace asio = boost::asio;
using asio::awaitable;

namespace mxgate::proxy {

namespace {
constexpr std::size_t read_chunk = 16 * 1024;
constexpr std::size_t idle_capacity = 1024;   // kept by a session between commands
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
}  // namespace

SmtpStream::SmtpStream(asio::ip::tcp::socket socket)
    : socket_(std::move(socket)), timer_(socket_.get_executor()), alive_(std::make_shared<bool>(true)) {
  if (socket_.is_open()) ensure_non_blocking();
}

bool SmtpStream::ensure_non_blocking() {
  // Set once, before Asio's first operation: Asio then skips its own FIONBIO, and the
  // synchronous reads and peeks below never block.
  if (!non_blocking_) {
    boost::system::error_code error;
    socket_.non_blocking(true, error);
    non_blocking_ = !error;
  }
  return non_blocking_;
}

SmtpStream::~SmtpStream() {
  *alive_ = false;
  timer_.cancel();
}

void SmtpStream::arm(std::chrono::milliseconds timeout) {
  deadline_ = Clock::now() + timeout;
  if (!watchdog_running_) {
    watchdog_running_ = true;
    timer_.expires_at(deadline_);
    asio::co_spawn(socket_.get_executor(), watchdog(), asio::detached);
  } else if (deadline_ < timer_.expiry()) {
    // Wakes the watchdog (its wait is cancelled) so it re-arms on the earlier deadline.
    timer_.expires_at(deadline_);
  }
}

void SmtpStream::disarm() { deadline_ = Clock::time_point::max(); }

awaitable<void> SmtpStream::watchdog() {
  auto alive = alive_;
  for (;;) {
    co_await timer_.async_wait(use_tuple);
    if (!*alive) co_return;
    if (closed_) break;
    auto now = Clock::now();
    if (deadline_ <= now) {
      timed_out_ = true;
      boost::system::error_code ignored;
      socket_.cancel(ignored);
      deadline_ = Clock::time_point::max();
    }
    timer_.expires_at(deadline_ == Clock::time_point::max() ? now + std::chrono::hours(24)
                                                            : deadline_);
  }
  watchdog_running_ = false;
}

std::size_t SmtpStream::read_now(boost::system::error_code& error) {
  // One receive buffer per thread: a session holds only the bytes it has not consumed
  // (commands are short), so 10,000 idle sessions fit in little memory (bench/idle.py),
  // and no read needs an ioctl(FIONREAD) to size its buffer first.
  thread_local std::unique_ptr<char[]> scratch(new char[read_chunk]);
  std::size_t count = socket_.read_some(asio::buffer(scratch.get(), read_chunk), error);
  if (!error) input_.append(scratch.get(), count);
  return count;
}

awaitable<std::size_t> SmtpStream::read_some(std::chrono::milliseconds timeout) {
  if (closed_ || timed_out_) co_return 0;
  // Compact: drop consumed bytes so the buffer does not grow with the session.
  if (input_start_ == input_.size()) {
    input_.clear();
    input_start_ = 0;
  } else if (input_start_ > 0) {
    input_.erase(0, input_start_);
    input_start_ = 0;
  }
  boost::system::error_code error;
  std::size_t count = 0;
  if (tls_) {
    // TLS keeps decrypted bytes inside OpenSSL, so it always reads.
    arm(timeout);
    std::size_t old_size = input_.size();
    input_.resize(old_size + read_chunk);
    std::tie(error, count) = co_await tls_->async_read_some(
        asio::buffer(input_.data() + old_size, read_chunk), use_tuple);
    disarm();
    input_.resize(old_size + count);
    co_return error ? 0 : count;
  }
  if (!ensure_non_blocking()) error = asio::error::operation_not_supported;
  // Bytes already queued (pipelined commands, DATA streaming) are read at once; else
  // wait for readability and read synchronously, which saves the scheduler round a
  // completed async read costs before its handler runs.
  if (!error) count = read_now(error);
  if (error == asio::error::would_block) {
    // A session about to wait holds no big buffer.
    if (input_.empty() && input_.capacity() > idle_capacity) input_.shrink_to_fit();
    arm(timeout);
    std::tie(error) = co_await socket_.async_wait(asio::socket_base::wait_read, use_tuple);
    disarm();
    if (!error) count = read_now(error);
    // A spurious wake-up: wait again.
    if (error == asio::error::would_block) count = co_await read_some(timeout);
    if (error == asio::error::would_block) error.clear();
  }
  co_return error ? 0 : count;
}

awaitable<ReadStatus> SmtpStream::fill(std::chrono::milliseconds timeout) {
  if (has_buffered()) co_return ReadStatus::ok;
  std::size_t count = co_await read_some(timeout);
  if (count == 0) co_return timed_out_ ? ReadStatus::timeout : ReadStatus::closed;
  co_return ReadStatus::ok;
}

awaitable<ReadStatus> SmtpStream::read_more(std::chrono::milliseconds timeout) {
  std::size_t count = co_await read_some(timeout);
  if (count == 0) co_return timed_out_ ? ReadStatus::timeout : ReadStatus::closed;
  co_return ReadStatus::ok;
}

awaitable<ReadStatus> SmtpStream::read_line(std::size_t max_length,
                                            std::chrono::milliseconds timeout,
                                            std::string_view& line) {
  std::size_t scanned = 0;
  bool discarding = false;
  for (;;) {
    std::string_view view = buffered();
    std::size_t newline = view.find('\n', scanned);
    if (newline != std::string_view::npos) {
      std::size_t length = newline + 1;
      if (discarding || length > max_length) {
        consume(length);
        co_return ReadStatus::too_long;
      }
      bool bare = newline == 0 || view[newline - 1] != '\r';
      std::string_view content = view.substr(0, bare ? newline : newline - 1);
      if (!bare && (content.find('\r') != std::string_view::npos ||
                    std::memchr(content.data(), '\0', content.size()) != nullptr)) {
        bare = true;
      }
      line = content;
      consume(length);
      co_return bare ? ReadStatus::bare_newline : ReadStatus::ok;
    }
    if (view.size() >= max_length) {
      // RFC 5321 4.5.3.1.4: the line is too long; discard it up to its end.
      discarding = true;
      consume(view.size());
      scanned = 0;
    } else {
      scanned = view.size();
    }
    std::size_t count = co_await read_some(timeout);
    if (count == 0) co_return timed_out_ ? ReadStatus::timeout : ReadStatus::closed;
  }
}

void SmtpStream::consume(std::size_t count) {
  // The buffer is compacted by the next read, not here: views returned by read_line
  // must stay intact until then (clear() would write a NUL over their first byte).
  input_start_ = std::min(input_start_ + count, input_.size());
}

void SmtpStream::discard_buffered() {
  input_.clear();
  input_start_ = 0;
}

awaitable<bool> SmtpStream::flush(std::chrono::milliseconds timeout) {
  if (output_.empty()) co_return true;
  bool ok = co_await write(output_, timeout);
  output_.clear();
  co_return ok;
}

awaitable<bool> SmtpStream::write(std::string_view bytes, std::chrono::milliseconds timeout) {
  if (closed_) co_return false;
  // A read that timed out still lets the 421 that says so be written.
  timed_out_ = false;
  arm(timeout);
  boost::system::error_code error;
  if (tls_) {
    std::tie(error, std::ignore) =
        co_await asio::async_write(*tls_, asio::buffer(bytes.data(), bytes.size()), use_tuple);
  } else {
    std::tie(error, std::ignore) =
        co_await asio::async_write(socket_, asio::buffer(bytes.data(), bytes.size()), use_tuple);
  }
  disarm();
  co_return !error;
}

awaitable<bool> SmtpStream::start_tls_server(asio::ssl::context& context,
                                             std::chrono::milliseconds timeout) {
  discard_buffered();
  tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket&>>(socket_, context);
  arm(timeout);
  auto [error] = co_await tls_->async_handshake(asio::ssl::stream_base::server, use_tuple);
  disarm();
  co_return !error;
}

awaitable<bool> SmtpStream::start_tls_client(asio::ssl::context& context,
                                             const std::string& server_name,
                                             std::chrono::milliseconds timeout) {
  discard_buffered();
  tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket&>>(socket_, context);
  if (!server_name.empty()) SSL_set_tlsext_host_name(tls_->native_handle(), server_name.c_str());
  arm(timeout);
  auto [error] = co_await tls_->async_handshake(asio::ssl::stream_base::client, use_tuple);
  disarm();
  co_return !error;
}

std::string SmtpStream::tls_description() const {
  if (!tls_) return {};
  SSL* ssl = tls_->native_handle();
  std::string out = SSL_get_version(ssl);
  if (const char* cipher = SSL_get_cipher_name(ssl)) {
    out += ' ';
    out += cipher;
  }
  return out;
}

void SmtpStream::close() {
  if (closed_) return;
  closed_ = true;
  // close() alone sends the FIN (shutdown first only cost a syscall, often ENOTCONN).
  boost::system::error_code ignored;
  socket_.close(ignored);
  timer_.cancel();
}

}  // namespace mxgate::proxy

// One client SMTP session as a coroutine that reads like RFC 5321's dialogue: greeting,
// EHLO, MAIL, RCPT, DATA/BDAT, QUIT, with a table of commands and one reply path.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "filters/completion.hpp"
#include "filters/pipeline.hpp"
#include "filters/reverse_dns.hpp"
#include "proxy/backend.hpp"
#include "proxy/server.hpp"
#include "proxy/smtp/address.hpp"
#include "proxy/smtp/command.hpp"
#include "proxy/smtp/data_reader.hpp"
#include "proxy/smtp/reply.hpp"
#include "proxy/smtp_stream.hpp"

namespace mxgate::proxy {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(boost::asio::ip::tcp::socket socket, std::shared_ptr<const Generation> generation,
          SharedState& shared, std::size_t worker_index);
  ~Session();

  boost::asio::awaitable<void> run();
  // Called from the session's own executor at the shutdown deadline.
  void shutdown_now();
  boost::asio::any_io_executor executor() { return stream_.executor(); }

 private:
  enum class Flow { next, close };
  boost::asio::awaitable<Flow> dispatch(const smtp::Command& command);
  // Runs one pipeline stage; dry-run verdicts are written to the rejection log.
  boost::asio::awaitable<filters::Decision> run_stage(filters::Stage stage);
  void log_dry_run(const filters::Decision& decision, filters::Stage stage);

  boost::asio::awaitable<bool> read_proxy_header();
  boost::asio::awaitable<bool> admit_and_greet();
  boost::asio::awaitable<void> command_loop();

  boost::asio::awaitable<Flow> on_helo(std::string_view argument);
  boost::asio::awaitable<Flow> on_ehlo(std::string_view argument);
  boost::asio::awaitable<Flow> on_mail(std::string_view argument);
  boost::asio::awaitable<Flow> on_rcpt(std::string_view argument);
  boost::asio::awaitable<Flow> on_data(std::string_view argument);
  boost::asio::awaitable<Flow> on_bdat(std::string_view argument);
  boost::asio::awaitable<Flow> on_rset(std::string_view argument);
  boost::asio::awaitable<Flow> on_noop(std::string_view argument);
  boost::asio::awaitable<Flow> on_quit(std::string_view argument);
  boost::asio::awaitable<Flow> on_help(std::string_view argument);
  boost::asio::awaitable<Flow> on_vrfy(std::string_view argument);
  boost::asio::awaitable<Flow> on_starttls(std::string_view argument);
  std::optional<Flow> refuse_starttls(std::string_view argument);
  std::optional<Flow> refuse_data(std::string_view argument);
  Flow on_expn();
  Flow on_auth();

  boost::asio::awaitable<Flow> greet_helo(std::string_view argument, bool esmtp);
  // End of message content (DATA or last BDAT): judge, filter, forward, reply.
  boost::asio::awaitable<Flow> finish_message(smtp::DataProblem problem);
  // Opens the backend if needed and starts its transaction (MAIL). With `rcpt`, the
  // RCPT goes in the same write as that MAIL when the backend pipelines, and its reply
  // lands in *rcpt_reply (left empty when the RCPT is still to be sent).
  boost::asio::awaitable<bool> ensure_backend_transaction(smtp::Reply& failure,
                                                          const smtp::PathResult* rcpt = nullptr,
                                                          std::optional<smtp::Reply>* rcpt_reply = nullptr);
  // backend_ made and opened (XCLIENT with the settled client name); false with the
  // client's 4xx in `failure` and backend_ reset.
  boost::asio::awaitable<bool> open_backend(smtp::Reply& failure);
  // backend.early_connect: at MAIL, for a client the backend accepted mail from lately,
  // open_backend() runs beside the session; the first RCPT (or the end) waits for it.
  void start_early_backend_open();
  static boost::asio::awaitable<void> open_backend_early(std::shared_ptr<Session> self);
  boost::asio::awaitable<void> settle_backend_open();
  // "RCPT TO:<path>", with the client's DSN parameters when the backend offers DSN.
  std::string backend_rcpt_command(const smtp::PathResult& rcpt) const;
  boost::asio::awaitable<void> reset_transaction();
  boost::asio::awaitable<Flow> apply_decision(const filters::Decision& decision, filters::Stage stage);

  // The one reply path for refusals: adds [ref], writes the JSON log line, counts the
  // error. Returns Flow::close when the reply closes the session (421) or the error
  // limit is reached.
  Flow refuse(smtp::Reply reply, const char* stage, std::string_view reason,
              std::string_view filter = {}, std::string_view rule = {},
              const filters::Decision* decision = nullptr);
  void reply(const smtp::Reply& reply);
  void log_event(boost::json::object event);
  boost::json::object session_fields() const;
  bool count_error();
  std::string client_label() const;   // "name[addr]" as Postfix logs it
  // The client's name is looked up beside the session (the greeting does not wait) and
  // settled, within dns.timeout, before the first RCPT verdict and before XCLIENT.
  void start_client_name_lookup();
  boost::asio::awaitable<void> settle_client_name();
  void take_client_name(const filters::ReverseDnsResult& result);
  void release_in_flight();

  std::shared_ptr<const Generation> generation_;
  const policy::Config& config_;
  SharedState& shared_;
  std::size_t worker_index_;
  SmtpStream stream_;
  std::unique_ptr<filters::PipelineSession> pipeline_;
  std::unique_ptr<Backend> backend_;
  // Set while an early open runs: backend_ must not be used or reset until it is done.
  std::unique_ptr<filters::Completion> backend_opening_;
  smtp::Reply early_open_failure_;   // why the early open failed (backend_ is null then)
  filters::SessionContext context_;
  std::shared_ptr<filters::ReverseDnsLookup> client_name_lookup_;

  bool admitted_ = false;
  bool helo_seen_ = false;
  bool pipelining_offered_ = false;
  bool in_transaction_ = false;       // MAIL accepted
  bool backend_transaction_ = false;  // MAIL sent to the backend
  bool first_rcpt_done_ = false;
  bool shutdown_requested_ = false;
  smtp::Address sender_;
  smtp::MailParameters mail_parameters_;
  std::vector<std::string> forwarded_recipients_;
  std::string message_;
  std::uint64_t in_flight_ = 0;       // bytes counted in SharedState::bytes_in_flight
  std::optional<smtp::ChunkReader> chunk_reader_;  // during BDAT
  bool bdat_failed_ = false;
  std::size_t errors_ = 0;
  std::size_t messages_ = 0;
  std::vector<std::string> queue_ids_;
  boost::json::array accepted_messages_;   // {from, rcpts, size, queue_id} per message
  std::string last_stage_ = "connect";
  std::chrono::steady_clock::time_point started_;
};

}  // namespace mxgate::proxy

// The client session: RFC 5321 server side, the relay gate, the filter stages and the
// forwarding of each accepted transaction to the backend. Invariants 1-6 of DESIGN.md
// are kept here: no 250 without the backend's 250, 4xx when in doubt, no open relay,
// canonical content only, every bound enforced, every refusal logged with its ref.
#include "proxy/session.hpp"
#include "policy/cidr.hpp"
#include "policy/names.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/array.hpp>
#include <cctype>
#include <charconv>

#include "filters/metrics.hpp"
#include "filters/relay.hpp"
#include "policy/units.hpp"
#include "proxy/smtp/proxy_header.hpp"

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;
using mxgate::filters::Decision;
using mxgate::filters::Stage;
using mxgate::smtp::Reply;
using mxgate::smtp::Verb;
namespace replies = mxgate::smtp::replies;

namespace mxgate::proxy {

namespace {

struct SessionMetrics {
  metrics::Gauge& active = metrics::Registry::global().gauge(
      "mxgate_sessions_active", "Client sessions open now");
  metrics::Counter& total = metrics::Registry::global().counter(
      "mxgate_sessions_total", "Client sessions accepted since start");
  metrics::Counter& accepted = metrics::Registry::global().counter(
      "mxgate_messages_total", "Messages by outcome", {{"outcome", "accepted"}});
  metrics::Counter& rejected = metrics::Registry::global().counter(
      "mxgate_messages_total", "Messages by outcome", {{"outcome", "rejected"}});
  metrics::Counter& tempfailed = metrics::Registry::global().counter(
      "mxgate_messages_total", "Messages by outcome", {{"outcome", "tempfailed"}});
  metrics::Gauge& in_flight = metrics::Registry::global().gauge(
      "mxgate_bytes_in_flight", "Bytes of message content buffered now");
  metrics::Histogram& session_seconds = metrics::Registry::global().histogram(
      "mxgate_session_duration_seconds", "Client session duration");
  metrics::Histogram& backend_seconds = metrics::Registry::global().histogram(
      "mxgate_backend_data_seconds", "Time for the backend to answer the end of data");
  metrics::Counter& early_connects = metrics::Registry::global().counter(
      "mxgate_backend_early_connects_total",
      "Backend connections opened at MAIL for a recent sender (backend.early_connect)");
};

SessionMetrics& session_metrics() {
  static SessionMetrics instance;
  return instance;
}

metrics::Counter& refusal_counter(const char* stage, int code) {
  // Few distinct label sets: looked up per refusal, which is not the hot path.
  return metrics::Registry::global().counter(
      "mxgate_refusals_total", "Replies refusing a command or message, by stage and class",
      {{"stage", stage}, {"class", code >= 500 ? "5xx" : "4xx"}});
}

// Postfix's queue id is the word after "queued as" in its reply to the dot.
std::string queue_id_of(const Reply& reply) {
  std::string text = reply.text();
  auto at = text.find("queued as ");
  if (at == std::string::npos) return {};
  at += 10;
  auto end = text.find_first_of(" ;\r\n", at);
  return text.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

// A reply as one log field: "550 5.7.1 text [ref X]".
std::string reply_line(const Reply& reply) {
  std::string line = std::to_string(reply.code);
  if (!reply.enhanced.empty()) line += " " + reply.enhanced;
  std::string text = reply.text();
  if (!text.empty()) line += " " + text;
  return line;
}

// The score sheet support reads: every (filter, rule, score, detail) that added up.
json::array contributions_json(const Decision& decision) {
  json::array contributions;
  for (const auto& line : decision.contributions) {
    json::object item;
    item["filter"] = line.filter;
    item["rule"] = line.rule;
    item["score"] = line.score;
    item["detail"] = line.detail;
    item["stage"] = line.stage;
    if (line.dry_run) item["dry_run"] = true;
    contributions.emplace_back(std::move(item));
  }
  return contributions;
}

std::string forwarded_path(const smtp::Address& address) {
  return "<" + address.full() + ">";
}

}  // namespace


Session::Session(asio::ip::tcp::socket socket, std::shared_ptr<const Generation> generation,
                 SharedState& shared, std::size_t worker_index)
    : generation_(std::move(generation)),
      config_(*generation_->config),
      shared_(shared),
      worker_index_(worker_index),
      stream_(std::move(socket)),
      started_(std::chrono::steady_clock::now()) {
  boost::system::error_code error;
  auto remote = stream_.socket().remote_endpoint(error);
  if (!error) {
    auto address = remote.address();
    if (address.is_v6() && address.to_v6().is_v4_mapped())
      address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
    context_.client_ip = address.to_string();
    context_.client_is_ipv6 = address.is_v6();
    context_.client_port = remote.port();
  }
  static std::atomic<std::uint64_t> counter{0};
  context_.session_id = make_reference();
  (void)counter;
  session_metrics().active.add(1);
  session_metrics().total.inc();
}

Session::~Session() {
  if (admitted_) shared_.connections.remove(context_.client_ip);
  release_in_flight();
  session_metrics().active.add(-1);
}

void Session::shutdown_now() {
  shutdown_requested_ = true;
  boost::system::error_code ignored;
  stream_.socket().cancel(ignored);
}

std::string Session::client_label() const {
  return (context_.client_name.empty() ? std::string("unknown") : context_.client_name) + "[" +
         context_.client_ip + "]";
}

void Session::reply(const Reply& reply) { reply.append_to(stream_.output()); }

void Session::start_client_name_lookup() {
  const auto& resolver = generation_->services[worker_index_]->resolver;
  if (!config_.dns.reverse_lookup || !resolver || !filters::reverse_lookup_name(context_.client_ip))
    return;
  // The lookup may outlive the session (bounded by dns.timeout): it holds no reference.
  std::weak_ptr<Session> weak = weak_from_this();
  client_name_lookup_ = filters::ReverseDnsLookup::start(
      resolver, generation_->services[worker_index_]->client_name_cache, context_.client_ip,
      config_.dns.timeout,
      [weak](const filters::ReverseDnsResult& result) {
        std::shared_ptr<Session> self = weak.lock();
        if (!self) return;
        self->take_client_name(result);
        if (result.status != filters::ClientNameStatus::verified)
          spdlog::debug("{} {}: client name {}: {}", self->context_.session_id,
                        self->client_label(), filters::client_name_status_name(result.status),
                        result.detail);
      });
}

awaitable<void> Session::settle_client_name() {
  if (client_name_lookup_ && !client_name_lookup_->done()) co_await client_name_lookup_->wait();
  // A cache hit is done at once but reports through a posted callback: take the result
  // here too, so nothing depends on that callback having run first.
  if (client_name_lookup_ && client_name_lookup_->done()) take_client_name(client_name_lookup_->result());
}

void Session::take_client_name(const filters::ReverseDnsResult& result) {
  context_.client_name = result.name;
  context_.client_ptr = result.ptr;
  context_.client_name_status = result.status;
}

json::object Session::session_fields() const {
  json::object event;
  event["session"] = context_.session_id;
  event["client_ip"] = context_.client_ip;
  event["client_port"] = context_.client_port;
  event["client_name"] = context_.client_name;
  // The PTR name when it was not verified (or another PTR name was): support sees what
  // the address owner claims even when Postfix would say "unknown".
  if (!context_.client_ptr.empty() && context_.client_ptr != context_.client_name)
    event["client_ptr"] = context_.client_ptr;
  event["helo"] = context_.helo;
  event["tls"] = context_.tls ? stream_.tls_description() : std::string();
  event["from"] = in_transaction_ ? json::value(context_.sender) : json::value(nullptr);
  json::array recipients;
  for (const auto& recipient : context_.recipients) recipients.emplace_back(recipient);
  event["rcpts"] = std::move(recipients);
  return event;
}

void Session::log_event(json::object event) {
  if (shared_.event_log) shared_.event_log->write(std::move(event));
}

bool Session::count_error() {
  ++errors_;
  ++context_.protocol_errors;
  return errors_ >= config_.limits.max_errors;
}

Session::Flow Session::refuse(Reply refusal, const char* stage, std::string_view reason,
                              std::string_view filter, std::string_view rule,
                              const Decision* decision) {
  std::string ref = make_reference();
  refusal.add_reference(ref);
  reply(refusal);
  refusal_counter(stage, refusal.code).inc();

  json::object event = session_fields();
  event["type"] = refusal.code >= 500 ? "reject" : "tempfail";
  event["ref"] = ref;
  event["stage"] = stage;
  event["reason"] = reason;
  if (!filter.empty()) event["filter"] = filter;
  if (!rule.empty()) event["rule"] = rule;
  if (std::string_view(stage) == "rcpt" && !context_.recipient.empty())
    event["rcpt"] = context_.recipient;
  if (decision != nullptr) {
    event["score"] = decision->total_score;
    if (decision->filter == "scoring") {
      // The threshold that fired, so support reads "total 9 >= reject 6".
      const auto& scoring = config_.scoring;
      event["threshold"] = refusal.code >= 500 ? scoring.reject : scoring.tempfail;
    }
    event["contributions"] = contributions_json(*decision);
  }
  event["reply"] = reply_line(refusal);
  log_event(std::move(event));
  spdlog::info("{} {}: {} {}: {} [ref {}]", context_.session_id, client_label(), stage,
               refusal.code >= 500 ? "reject" : "tempfail", reason, ref);

  if (refusal.code == 421) return Flow::close;
  if (count_error()) {
    reply(replies::too_many_errors(config_.hostname));
    return Flow::close;
  }
  return Flow::next;
}

void Session::release_in_flight() {
  if (in_flight_ > 0) {
    shared_.bytes_in_flight.fetch_sub(in_flight_, std::memory_order_relaxed);
    session_metrics().in_flight.add(-static_cast<std::int64_t>(in_flight_));
    in_flight_ = 0;
  }
}

awaitable<Decision> Session::run_stage(Stage stage) {
  Decision decision = co_await pipeline_->run(stage, context_);
  if (decision.dry_run && decision.action == Decision::Action::proceed) log_dry_run(decision, stage);
  co_return decision;
}

// A dry-run verdict (global dry_run or a rule's `action: log`) is logged like the
// refusal it would have been, without a ref: the client saw no refusal.
void Session::log_dry_run(const Decision& decision, Stage stage) {
  json::object event = session_fields();
  event["type"] = "dry_run";
  event["stage"] = filters::stage_name(stage);
  event["would"] = filters::action_name(decision.would_action);
  if (!decision.filter.empty()) event["filter"] = decision.filter;
  if (!decision.rule.empty()) event["rule"] = decision.rule;
  if (stage == Stage::rcpt && !context_.recipient.empty()) event["rcpt"] = context_.recipient;
  event["score"] = decision.total_score;
  event["contributions"] = contributions_json(decision);
  event["reply"] = reply_line(decision.would_reply);
  log_event(std::move(event));
}

// --- the session, top to bottom ------------------------------------------------

awaitable<void> Session::run() {
  bool internal_error = false;
  try {
    if (config_.proxy_protocol.enabled && !co_await read_proxy_header()) {
      stream_.close();
      co_return;
    }
    if (co_await admit_and_greet()) co_await command_loop();
  } catch (const std::exception& error) {
    // The truly unexpected: the client gets a 421, the operator a log line.
    spdlog::error("{} {}: internal error: {}", context_.session_id, client_label(), error.what());
    internal_error = true;
  }
  if (internal_error) {
    stream_.output().clear();
    refuse(replies::internal_error(config_.hostname), last_stage_.c_str(), "internal error");
    co_await stream_.flush(std::chrono::seconds(5));
  }
  // The client is done: let it go before the backend QUIT and the close stage (which
  // may talk to Redis), so neither adds to what the client waits for.
  co_await stream_.flush(std::chrono::seconds(5));
  stream_.close();
  co_await settle_backend_open();
  if (backend_) co_await backend_->quit();
  if (pipeline_) {
    try {
      co_await pipeline_->run(Stage::close, context_);
    } catch (const std::exception& error) {
      spdlog::warn("{} close stage failed: {}", context_.session_id, error.what());
    }
  }
  auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  session_metrics().session_seconds.observe(elapsed);
  if (admitted_) {
    json::object summary = session_fields();
    summary["type"] = "session";
    summary["ref"] = context_.session_id;
    summary["duration"] = elapsed;
    summary["messages_accepted"] = context_.messages_accepted;
    summary["messages_rejected"] = context_.messages_rejected;
    summary["errors"] = errors_;
    json::array ids;
    for (const auto& id : queue_ids_) ids.emplace_back(id);
    summary["queue_ids"] = std::move(ids);
    summary["messages"] = std::move(accepted_messages_);
    summary["last_stage"] = last_stage_;
    log_event(std::move(summary));
  }
  stream_.close();
}

awaitable<bool> Session::read_proxy_header() {
  const auto& proxy = config_.proxy_protocol;
  bool trusted = generation_->proxy_trusted.empty();
  std::string error;
  if (auto peer = policy::parse_cidr(context_.client_ip, error)) {
    for (const auto& network : generation_->proxy_trusted) {
      if (network.contains(*peer)) trusted = true;
    }
  }
  if (!trusted) {
    spdlog::warn("{}: PROXY header expected but peer {} is not in proxy_protocol.trusted_networks",
                 context_.session_id, context_.client_ip);
    co_return false;
  }
  for (;;) {
    auto header = smtp::parse_proxy_header(stream_.buffered());
    if (header.status == smtp::ProxyHeader::Status::ok) {
      stream_.consume(header.length);
      if (!header.local) {
        context_.client_ip = header.source_address;
        context_.client_port = header.source_port;
        context_.client_is_ipv6 = header.source_address.find(':') != std::string::npos;
      }
      co_return true;
    }
    if (header.status == smtp::ProxyHeader::Status::invalid) {
      spdlog::warn("{}: invalid PROXY header from {}, closing", context_.session_id,
                   context_.client_ip);
      co_return false;
    }
    if (co_await stream_.read_more(proxy.timeout) != ReadStatus::ok) co_return false;
  }
}

awaitable<bool> Session::admit_and_greet() {
  const auto& limits = config_.limits;
  if (shared_.shutting_down.load()) {
    reply(replies::shutting_down(config_.hostname));
    co_await stream_.flush(std::chrono::seconds(5));
    co_return false;
  }
  auto admit = shared_.connections.add(context_.client_ip, limits.max_connections,
                                       limits.max_connections_per_ip);
  if (admit != ConnectionTable::Admit::ok) {
    Reply refusal = admit == ConnectionTable::Admit::too_many
                        ? replies::too_many_connections(config_.hostname)
                        : replies::too_many_connections_from_ip(config_.hostname);
    refuse(refusal, "connect",
           admit == ConnectionTable::Admit::too_many ? "max_connections" : "max_connections_per_ip");
    co_await stream_.flush(std::chrono::seconds(5));
    co_return false;
  }
  admitted_ = true;
  boost::system::error_code ignored;
  stream_.socket().set_option(asio::ip::tcp::no_delay(true), ignored);

  pipeline_ = generation_->pipeline->start(*generation_->services[worker_index_]);
  start_client_name_lookup();
  context_.score_sheet = &pipeline_->contributions();
  Decision decision = co_await run_stage(Stage::connect);
  if (decision.action == Decision::Action::drop) {
    Reply drop = decision.reply.code ? decision.reply : replies::too_many_connections(config_.hostname);
    refuse(drop, "connect", "dropped by filter", decision.filter, decision.rule, &decision);
    co_await stream_.flush(std::chrono::seconds(5));
    co_return false;
  }
  // The pregreet test (postscreen): the first line of a multi-line banner, then silence
  // for greet_pause. A client that talks before the last line is an early talker; the
  // DNS lookups started by the connect stage run meanwhile. The early_talker filter
  // judges the flag at HELO.
  if (config_.early_talker.greet_pause.count() > 0) {
    stream_.queue("220-" + config_.hostname + " " + config_.smtp.banner + "\r\n");
    if (!co_await stream_.flush(limits.command_timeout)) co_return false;
    ReadStatus status = co_await stream_.read_more(config_.early_talker.greet_pause);
    if (status == ReadStatus::ok) {
      context_.early_talker = true;
      spdlog::info("{} {}: early talker (spoke within greet_pause)", context_.session_id,
                   client_label());
    } else if (status == ReadStatus::closed) {
      co_return false;
    }
    stream_.clear_timeout();
  }
  reply(replies::greeting(config_.hostname, config_.smtp.banner));
  co_return co_await stream_.flush(limits.command_timeout);
}

awaitable<void> Session::command_loop() {
  const auto& limits = config_.limits;
  for (;;) {
    if (!stream_.has_buffered() && !co_await stream_.flush(limits.command_timeout)) co_return;
    if (shutdown_requested_ || shared_.shutting_down.load(std::memory_order_relaxed)) {
      if (!stream_.has_buffered()) {
        refuse(replies::shutting_down(config_.hostname), last_stage_.c_str(), "shutdown");
        co_await stream_.flush(std::chrono::seconds(5));
        co_return;
      }
    }
    std::string_view line;
    ReadStatus status = co_await stream_.read_line(limits.max_command_line, limits.command_timeout, line);
    switch (status) {
      case ReadStatus::ok:
        break;
      case ReadStatus::closed:
        if (shutdown_requested_) {
          refuse(replies::shutting_down(config_.hostname), last_stage_.c_str(), "shutdown");
          co_await stream_.flush(std::chrono::seconds(5));
        }
        co_return;
      case ReadStatus::timeout:
        refuse(replies::timeout(config_.hostname), last_stage_.c_str(), "command_timeout");
        co_await stream_.flush(std::chrono::seconds(5));
        co_return;
      case ReadStatus::too_long:
        if (refuse(replies::line_too_long(), last_stage_.c_str(), "max_command_line") == Flow::close) {
          co_await stream_.flush(std::chrono::seconds(5));
          co_return;
        }
        continue;
      case ReadStatus::bare_newline:
        // Lines end only at CRLF (invariant 4); a client that cannot say so is cut off.
        refuse(replies::bare_newline_command(), last_stage_.c_str(), "bare CR, LF or NUL in command");
        co_await stream_.flush(std::chrono::seconds(5));
        co_return;
    }

    smtp::Command command = smtp::parse_command(line);
    if (command.verb != Verb::starttls && !pipelining_offered_ && stream_.has_buffered()) {
      // RFC 2920: without PIPELINING the client must wait for each reply (Postfix's
      // "improper command pipelining"; spam engines do not wait).
      refuse(replies::pipelining_violation(), last_stage_.c_str(), "pipelining before it was offered");
      co_await stream_.flush(std::chrono::seconds(5));
      co_return;
    }
    Flow flow = co_await dispatch(command);
    if (flow == Flow::close) {
      co_await stream_.flush(std::chrono::seconds(5));
      co_return;
    }
  }
}

// The command table (OpenSMTPD style): one line per verb. A switch rather than an array
// of member pointers: g++ 12 miscompiles calls of coroutines through member pointers
// (the callee received a wrong `this`).
awaitable<Session::Flow> Session::dispatch(const smtp::Command& command) {
  std::string_view argument = command.argument;
  switch (command.verb) {
    case Verb::helo: co_return co_await on_helo(argument);
    case Verb::ehlo: co_return co_await on_ehlo(argument);
    case Verb::mail: co_return co_await on_mail(argument);
    case Verb::rcpt: co_return co_await on_rcpt(argument);
    case Verb::data: co_return co_await on_data(argument);
    case Verb::bdat: co_return co_await on_bdat(argument);
    case Verb::rset: co_return co_await on_rset(argument);
    case Verb::noop: co_return co_await on_noop(argument);
    case Verb::quit: co_return co_await on_quit(argument);
    case Verb::help: co_return co_await on_help(argument);
    case Verb::vrfy: co_return co_await on_vrfy(argument);
    case Verb::starttls: co_return co_await on_starttls(argument);
    case Verb::expn: co_return on_expn();
    case Verb::auth: co_return on_auth();
    case Verb::unknown: break;
  }
  co_return refuse(replies::unknown_command(), last_stage_.c_str(), "unknown command");
}

// --- HELO / EHLO ---------------------------------------------------------------

awaitable<Session::Flow> Session::on_helo(std::string_view argument) {
  co_return co_await greet_helo(argument, false);
}

awaitable<Session::Flow> Session::on_ehlo(std::string_view argument) {
  co_return co_await greet_helo(argument, true);
}

awaitable<Session::Flow> Session::greet_helo(std::string_view argument, bool esmtp) {
  last_stage_ = "helo";
  if (argument.empty())
    co_return refuse(replies::syntax(esmtp ? "EHLO hostname" : "HELO hostname"), "helo", "missing hostname");
  co_await reset_transaction();
  context_.helo = std::string(argument);
  context_.esmtp = esmtp;
  helo_seen_ = true;
  Decision decision = co_await run_stage(Stage::helo);
  if (decision.action != Decision::Action::proceed) {
    Flow flow = co_await apply_decision(decision, Stage::helo);
    if (flow == Flow::close || decision.action != Decision::Action::proceed) co_return flow;
  }
  if (!esmtp) {
    reply(Reply(250, "", config_.hostname));
    co_return Flow::next;
  }
  Reply ehlo(250, "", config_.hostname);
  const auto& smtp_config = config_.smtp;
  if (smtp_config.pipelining) ehlo.lines.push_back("PIPELINING");
  ehlo.lines.push_back("SIZE " + std::to_string(config_.limits.max_message_size));
  if (generation_->tls_server && !stream_.tls_active()) ehlo.lines.push_back("STARTTLS");
  ehlo.lines.push_back("ENHANCEDSTATUSCODES");
  ehlo.lines.push_back("8BITMIME");
  if (smtp_config.smtputf8) ehlo.lines.push_back("SMTPUTF8");
  if (smtp_config.chunking) ehlo.lines.push_back("CHUNKING");
  reply(ehlo);
  pipelining_offered_ = smtp_config.pipelining;
  co_return Flow::next;
}

// --- MAIL ------------------------------------------------------------------------

awaitable<Session::Flow> Session::on_mail(std::string_view argument) {
  last_stage_ = "mail";
  if (!helo_seen_) co_return refuse(replies::bad_sequence("send HELO/EHLO first"), "mail", "MAIL before HELO");
  if (in_transaction_) co_return refuse(replies::bad_sequence("nested MAIL command"), "mail", "nested MAIL");
  if (messages_ >= config_.limits.max_messages_per_session)
    co_return refuse(replies::message_limit_reached(), "mail", "max_messages_per_session");
  auto parsed = smtp::parse_mail_from(argument, generation_->address_limits);
  if (!parsed.ok) co_return refuse(parsed.error, "mail", "bad MAIL syntax");
  if (parsed.parameters.size && *parsed.parameters.size > config_.limits.max_message_size)
    co_return refuse(replies::message_too_big(), "mail", "SIZE above max_message_size");
  if (parsed.parameters.smtputf8 && !config_.smtp.smtputf8)
    co_return refuse(replies::parameter_unknown("SMTPUTF8"), "mail", "SMTPUTF8 not offered");
  if (parsed.parameters.body == smtp::MailParameters::Body::binary_mime)
    co_return refuse(replies::parameter_unknown("BODY=BINARYMIME"), "mail", "BINARYMIME not offered");

  sender_ = parsed.address;
  mail_parameters_ = parsed.parameters;
  context_.sender = sender_.null_path ? std::string() : sender_.full();
  context_.sender_domain = sender_.null_path ? std::string() : policy::ascii_lower(sender_.domain);
  in_transaction_ = true;
  Decision decision = co_await run_stage(Stage::mail);
  if (decision.action != Decision::Action::proceed) {
    Flow flow = co_await apply_decision(decision, Stage::mail);
    if (decision.action != Decision::Action::proceed) {
      in_transaction_ = false;
      context_.sender.clear();
      co_return flow;
    }
  }
  reply(replies::sender_ok());
  start_early_backend_open();
  co_return Flow::next;
}

// --- RCPT ------------------------------------------------------------------------

awaitable<Session::Flow> Session::on_rcpt(std::string_view argument) {
  last_stage_ = "rcpt";
  if (!in_transaction_) co_return refuse(replies::bad_sequence("need MAIL command"), "rcpt", "RCPT before MAIL");
  auto parsed = smtp::parse_rcpt_to(argument, generation_->address_limits);
  if (!parsed.ok) co_return refuse(parsed.error, "rcpt", "bad RCPT syntax");
  context_.recipient = parsed.address.full();
  if (context_.recipients.size() >= config_.limits.max_recipients) {
    ++context_.recipients_rejected;
    co_return refuse(replies::too_many_recipients(), "rcpt", "max_recipients");
  }
  auto relay = filters::check_relay(parsed.address, generation_->relay);
  if (!relay.allowed) {
    ++context_.recipients_rejected;
    co_return refuse(replies::relay_denied(parsed.address.full()), "rcpt",
                     "relay access denied: " + relay.reason, "relay", relay.reason);
  }
  co_await settle_client_name();
  Decision decision = co_await run_stage(Stage::rcpt);
  first_rcpt_done_ = true;
  if (decision.action != Decision::Action::proceed) {
    ++context_.recipients_rejected;
    co_return co_await apply_decision(decision, Stage::rcpt);
  }

  Reply failure;
  std::optional<Reply> pipelined;
  if (!co_await ensure_backend_transaction(failure, &parsed, &pipelined)) {
    ++context_.recipients_rejected;
    co_return refuse(failure, "rcpt", "backend refused or unavailable", "backend");
  }
  Reply backend_reply;
  if (pipelined) {
    backend_reply = *pipelined;
  } else {
    std::string command = backend_rcpt_command(parsed);
    backend_reply = co_await backend_->command(command);
  }
  if (backend_reply.positive()) {
    context_.recipients.push_back(parsed.address.full());
    forwarded_recipients_.push_back(parsed.address.full());
    reply(backend_reply);
    co_return Flow::next;
  }
  ++context_.recipients_rejected;
  if (!backend_->is_open()) backend_transaction_ = false;
  co_return refuse(backend_reply, "rcpt", "backend refused recipient", "backend");
}

std::string Session::backend_rcpt_command(const smtp::PathResult& rcpt) const {
  std::string command = "RCPT TO:" + forwarded_path(rcpt.address);
  if (backend_->offers("DSN")) {
    for (const auto& parameter : rcpt.parameters.passthrough) command += " " + parameter;
  }
  return command;
}

awaitable<bool> Session::open_backend(Reply& failure) {
  co_await settle_client_name();
  backend_ = std::make_unique<Backend>(stream_.executor(), config_.backend, config_.hostname,
                                       generation_->tls_client.get());
  ClientIdentity identity{context_.client_ip, context_.client_is_ipv6, context_.client_port,
                          context_.client_name, context_.helo, context_.esmtp};
  identity.name_tempfail = context_.client_name_status == filters::ClientNameStatus::tempfail;
  Reply opened = co_await backend_->open(identity);
  bool open = backend_->is_open();
  if (!open) {
    failure = opened;
    backend_.reset();
  }
  co_return open;
}

void Session::start_early_backend_open() {
  const auto& backend = config_.backend;
  if (!backend.early_connect || backend_ || backend_opening_ ||
      !shared_.recent_senders.contains(context_.client_ip, backend.early_connect_window))
    return;
  backend_opening_ = std::make_unique<filters::Completion>(stream_.executor());
  session_metrics().early_connects.inc();
  asio::co_spawn(stream_.executor(), open_backend_early(shared_from_this()), asio::detached);
}

awaitable<void> Session::open_backend_early(std::shared_ptr<Session> self) {
  // `self` keeps the session (and so backend_) alive until the open is done. The
  // connect waits for the session's next write, so the 250 to MAIL goes out first.
  co_await asio::post(self->stream_.executor(), asio::use_awaitable);
  Reply failure;
  bool opened = false;
  try {
    opened = co_await self->open_backend(failure);
  } catch (const std::exception& error) {
    spdlog::error("{} early backend open: {}", self->context_.session_id, error.what());
    self->backend_.reset();
    failure = smtp::replies::backend_unavailable();
  }
  if (!opened) self->early_open_failure_ = failure;
  self->backend_opening_->set();
}

awaitable<void> Session::settle_backend_open() {
  if (backend_opening_) {
    co_await backend_opening_->wait();
    backend_opening_.reset();
  }
}

awaitable<bool> Session::ensure_backend_transaction(Reply& failure, const smtp::PathResult* rcpt,
                                                    std::optional<Reply>* rcpt_reply) {
  bool early = backend_opening_ != nullptr;
  co_await settle_backend_open();
  if (early && !backend_) {
    // The early open failed: its reply, rather than a second wait for a dead backend.
    failure = early_open_failure_;
    co_return false;
  }
  // Between transactions a kept connection must still be there (Backend::alive).
  if (backend_ && (!backend_->is_open() || (!backend_transaction_ && !backend_->alive()))) {
    backend_.reset();
    backend_transaction_ = false;
  }
  if (!backend_ && !co_await open_backend(failure)) co_return false;
  if (backend_transaction_) co_return true;
  std::string command = "MAIL FROM:" + forwarded_path(sender_);
  const auto& parameters = mail_parameters_;
  if (parameters.size && backend_->offers("SIZE")) command += " SIZE=" + std::to_string(*parameters.size);
  if (parameters.body == smtp::MailParameters::Body::eight_bit_mime && backend_->offers("8BITMIME"))
    command += " BODY=8BITMIME";
  if (parameters.body == smtp::MailParameters::Body::seven_bit) command += " BODY=7BIT";
  if (parameters.smtputf8) {
    if (!backend_->offers("SMTPUTF8")) {
      failure = Reply(451, "4.3.0", "backend does not support SMTPUTF8, try again later");
      co_return false;
    }
    command += " SMTPUTF8";
  }
  if (backend_->offers("DSN")) {
    for (const auto& parameter : parameters.passthrough) command += " " + parameter;
  }
  std::vector<std::string> lines;
  lines.push_back(std::move(command));
  if (rcpt != nullptr && backend_->offers("PIPELINING")) lines.push_back(backend_rcpt_command(*rcpt));
  std::vector<Reply> backend_replies = co_await backend_->commands(std::move(lines));
  const Reply& mail_reply = backend_replies.front();
  if (!mail_reply.positive()) {
    // A pipelined RCPT after a refused MAIL was refused too (no transaction): drop it.
    failure = mail_reply;
    if (backend_->is_open()) co_await backend_->reset();
    co_return false;
  }
  backend_transaction_ = true;
  if (backend_replies.size() > 1) *rcpt_reply = backend_replies[1];
  co_return true;
}

// --- DATA and BDAT ---------------------------------------------------------------

std::optional<Session::Flow> Session::refuse_data(std::string_view argument) {
  if (!argument.empty()) return refuse(replies::syntax("DATA"), "data", "DATA with argument");
  if (chunk_reader_) return refuse(replies::bad_sequence("DATA after BDAT"), "data", "DATA during BDAT");
  if (!in_transaction_) return refuse(replies::bad_sequence("need MAIL command"), "data", "DATA before MAIL");
  if (forwarded_recipients_.empty())
    return refuse(Reply(554, "5.5.1", "Error: no valid recipients"), "data", "no valid recipients");
  if (shared_.bytes_in_flight.load(std::memory_order_relaxed) >= config_.limits.max_bytes_in_flight)
    return refuse(replies::insufficient_resources(), "data", "max_bytes_in_flight");
  return std::nullopt;
}

awaitable<Session::Flow> Session::on_data(std::string_view argument) {
  last_stage_ = "data";
  // The checks live in a plain function, as for STARTTLS: g++ 12 has miscompiled
  // coroutines with `co_return` statements ahead of their first await (here a stale
  // frame was resumed, SIGSEGV, until Backend::begin_data lost its early co_return).
  std::optional<Flow> refused = refuse_data(argument);
  if (refused) co_return *refused;
  const auto& limits = config_.limits;

  // The backend's DATA round trip runs while the client uploads the message.
  bool early_data = backend_transaction_ && backend_ && backend_->wants_early_data();
  if (early_data) co_await backend_->begin_data();
  reply(replies::start_data());
  bool flushed = co_await stream_.flush(limits.command_timeout);
  if (!flushed) co_return Flow::close;

  smtp::DataReader reader(generation_->data_limits);
  message_.clear();
  bool over_flight = false;
  for (;;) {
    ReadStatus status = co_await stream_.fill(limits.data_timeout);
    if (status == ReadStatus::timeout) {
      refuse(replies::timeout(config_.hostname), "data", "data_timeout");
      co_return Flow::close;
    }
    if (status != ReadStatus::ok) co_return Flow::close;
    std::size_t before = message_.size();
    auto result = reader.feed(stream_.buffered(), message_);
    stream_.consume(result.consumed);
    std::size_t added = message_.size() - before;
    if (added > 0 && !over_flight) {
      in_flight_ += added;
      session_metrics().in_flight.add(static_cast<std::int64_t>(added));
      if (shared_.bytes_in_flight.fetch_add(added, std::memory_order_relaxed) + added >
          limits.max_bytes_in_flight) {
        // Past the global cap: stop buffering, read to the end, then 452 4.3.1.
        over_flight = true;
        release_in_flight();
        message_.clear();
        message_.shrink_to_fit();
      }
    }
    if (over_flight) message_.clear();
    if (result.done) break;
  }
  if (over_flight) {
    Flow flow = refuse(replies::insufficient_resources(), "data", "max_bytes_in_flight");
    co_await reset_transaction();
    co_return flow;
  }
  co_return co_await finish_message(reader.problem());
}

awaitable<Session::Flow> Session::on_bdat(std::string_view argument) {
  last_stage_ = "data";
  // BDAT <size> [LAST] (RFC 3030). The chunk is read whatever the verdict, so the
  // byte stream stays in sync with the client.
  std::string_view size_text = argument.substr(0, argument.find(' '));
  std::string_view rest = size_text.size() < argument.size() ? argument.substr(size_text.size() + 1) : "";
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  std::uint64_t size = 0;
  auto [end, error] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
  bool last = false;
  if (!rest.empty()) {
    std::string keyword = policy::ascii_lower(rest);
    if (keyword != "last") error = std::errc::invalid_argument;
    last = true;
  }
  if (!config_.smtp.chunking || size_text.empty() || error != std::errc() ||
      end != size_text.data() + size_text.size()) {
    // Without a valid size the stream cannot be resynchronised: close.
    refuse(Reply(501, "5.5.4", "Syntax: BDAT size [LAST]"), "data", "bad BDAT syntax");
    reply(replies::too_many_errors(config_.hostname));
    co_return Flow::close;
  }

  bool sequence_ok = in_transaction_ && !forwarded_recipients_.empty();
  const auto& limits = config_.limits;
  if (sequence_ok && !chunk_reader_) {
    chunk_reader_.emplace(generation_->data_limits);
    message_.clear();
    bdat_failed_ = false;
  }
  // Read exactly `size` bytes.
  std::uint64_t remaining = size;
  while (remaining > 0) {
    ReadStatus status = co_await stream_.fill(limits.data_timeout);
    if (status == ReadStatus::timeout) {
      refuse(replies::timeout(config_.hostname), "data", "data_timeout");
      co_return Flow::close;
    }
    if (status != ReadStatus::ok) co_return Flow::close;
    std::string_view available = stream_.buffered();
    std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, available.size()));
    if (chunk_reader_ && !bdat_failed_) {
      std::size_t before = message_.size();
      chunk_reader_->feed(available.substr(0, take), message_);
      std::size_t added = message_.size() - before;
      in_flight_ += added;
      session_metrics().in_flight.add(static_cast<std::int64_t>(added));
      if (shared_.bytes_in_flight.fetch_add(added, std::memory_order_relaxed) + added >
          limits.max_bytes_in_flight) {
        bdat_failed_ = true;
        release_in_flight();
        message_.clear();
      }
    }
    stream_.consume(take);
    remaining -= take;
  }
  if (!sequence_ok) {
    if (!in_transaction_)
      co_return refuse(replies::bad_sequence("need MAIL command"), "data", "BDAT before MAIL");
    co_return refuse(Reply(554, "5.5.1", "Error: no valid recipients"), "data", "no valid recipients");
  }
  if (!last) {
    if (!bdat_failed_ && chunk_reader_->problem() == smtp::DataProblem::too_big) {
      // Refuse the rest of this message at once (RFC 3030 4.2); the transaction ends.
      chunk_reader_.reset();
      {
        Flow flow = refuse(replies::message_too_big(), "data", "max_message_size");
        co_await reset_transaction();
        co_return flow;
      }
    }
    reply(Reply(250, "2.0.0", "Ok: " + std::to_string(size) + " bytes"));
    co_return Flow::next;
  }
  chunk_reader_->finish(message_);
  auto problem = chunk_reader_->problem();
  chunk_reader_.reset();
  if (bdat_failed_) {
    Flow flow = refuse(replies::insufficient_resources(), "data", "max_bytes_in_flight");
    co_await reset_transaction();
    co_return flow;
  }
  co_return co_await finish_message(problem);
}

awaitable<Session::Flow> Session::finish_message(smtp::DataProblem problem) {
  ++messages_;
  switch (problem) {
    case smtp::DataProblem::none:
      break;
    case smtp::DataProblem::bare_newline:
      ++context_.messages_rejected;
      session_metrics().rejected.inc();
      {
        Flow flow = refuse(replies::bare_newline_data(), "data", "bare CR, LF or NUL in message content");
        co_await reset_transaction();
        co_return flow;
      }
    case smtp::DataProblem::too_big:
      ++context_.messages_rejected;
      session_metrics().rejected.inc();
      {
        Flow flow = refuse(replies::message_too_big(), "data", "max_message_size");
        co_await reset_transaction();
        co_return flow;
      }
    case smtp::DataProblem::line_too_long:
      ++context_.messages_rejected;
      session_metrics().rejected.inc();
      {
        Flow flow = refuse(replies::line_too_long_data(), "data", "max_text_line");
        co_await reset_transaction();
        co_return flow;
      }
  }

  context_.message = &message_;
  Decision decision = co_await run_stage(Stage::data);
  context_.message = nullptr;
  if (decision.action != Decision::Action::proceed) {
    ++context_.messages_rejected;
    (decision.action == Decision::Action::tempfail ? session_metrics().tempfailed
                                                   : session_metrics().rejected)
        .inc();
    Flow flow = co_await apply_decision(decision, Stage::data);
    co_await reset_transaction();
    co_return flow;
  }
  std::string headers;
  for (const auto& [name, value] : decision.add_headers) {
    headers += name;
    headers += ": ";
    headers += value;
    headers += "\r\n";
  }

  Reply failure;
  Reply backend_reply;
  if (!co_await ensure_backend_transaction(failure)) {
    backend_reply = failure;
  } else {
    auto started = std::chrono::steady_clock::now();
    backend_reply = co_await backend_->send_message(headers, message_);
    session_metrics().backend_seconds.observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }
  backend_transaction_ = false;   // the reply to the dot ends the backend's transaction
  if (backend_reply.positive()) {
    // Invariant 1: the client's 250 is the backend's own reply to this message.
    ++context_.messages_accepted;
    shared_.recent_senders.note(context_.client_ip, config_.backend.early_connect_window,
                                config_.backend.early_connect_clients);
    session_metrics().accepted.inc();
    std::string queue_id = queue_id_of(backend_reply);
    queue_ids_.push_back(queue_id);
    // The session summary keeps each accepted message's envelope beside its queue id,
    // so support can go from a sender's complaint to Postfix's log line.
    json::object accepted;
    accepted["from"] = context_.sender;
    json::array accepted_recipients;
    for (const auto& recipient : forwarded_recipients_) accepted_recipients.emplace_back(recipient);
    accepted["rcpts"] = std::move(accepted_recipients);
    accepted["size"] = message_.size();
    accepted["queue_id"] = queue_id;
    accepted_messages_.emplace_back(std::move(accepted));
    spdlog::info("{} {}: accepted from=<{}> rcpts={} size={} queue_id={}", context_.session_id,
                 client_label(), context_.sender, forwarded_recipients_.size(), message_.size(),
                 queue_id);
    reply(backend_reply);
    co_await reset_transaction();
    co_return Flow::next;
  }
  ++context_.messages_rejected;
  (backend_reply.transient() ? session_metrics().tempfailed : session_metrics().rejected).inc();
  Flow flow = refuse(backend_reply, "data", "backend refused message", "backend");
  co_await reset_transaction();
  co_return flow;
}

awaitable<Session::Flow> Session::apply_decision(const Decision& decision, Stage stage) {
  const char* stage_text = filters::stage_name(stage);
  switch (decision.action) {
    case Decision::Action::proceed:
      co_return Flow::next;
    case Decision::Action::tempfail: {
      Reply tempfail = decision.reply.code ? decision.reply
                                           : Reply(451, "4.7.1", "Service temporarily unavailable, try again later");
      co_return refuse(tempfail, stage_text, "filter tempfail", decision.filter, decision.rule, &decision);
    }
    case Decision::Action::reject: {
      Reply rejection = decision.reply.code ? decision.reply : Reply(550, "5.7.1", "Message rejected by policy");
      co_return refuse(rejection, stage_text, "filter reject", decision.filter, decision.rule, &decision);
    }
    case Decision::Action::drop: {
      Reply drop = decision.reply.code ? decision.reply
                                       : Reply(421, "4.7.0", config_.hostname + " Error: closing connection");
      refuse(drop, stage_text, "filter drop", decision.filter, decision.rule, &decision);
      co_return Flow::close;
    }
  }
  co_return Flow::next;
}

awaitable<void> Session::reset_transaction() {
  if (backend_transaction_ && backend_ && backend_->is_open()) co_await backend_->reset();
  backend_transaction_ = false;
  in_transaction_ = false;
  chunk_reader_.reset();
  forwarded_recipients_.clear();
  context_.recipients.clear();
  context_.recipient.clear();
  context_.sender.clear();
  context_.sender_domain.clear();
  sender_ = {};
  mail_parameters_ = {};
  message_.clear();
  if (message_.capacity() > 64 * 1024) message_.shrink_to_fit();
  release_in_flight();
  if (pipeline_) pipeline_->reset_transaction();
}

// --- the small commands ------------------------------------------------------------

awaitable<Session::Flow> Session::on_rset(std::string_view argument) {
  if (!argument.empty()) co_return refuse(replies::syntax("RSET"), last_stage_.c_str(), "RSET with argument");
  co_await reset_transaction();
  reply(replies::ok());
  co_return Flow::next;
}

awaitable<Session::Flow> Session::on_noop(std::string_view) {
  reply(replies::ok());
  co_return Flow::next;
}

awaitable<Session::Flow> Session::on_quit(std::string_view) {
  reply(replies::bye(config_.hostname));
  co_return Flow::close;
}

awaitable<Session::Flow> Session::on_help(std::string_view) {
  reply(replies::help());
  co_return Flow::next;
}

awaitable<Session::Flow> Session::on_vrfy(std::string_view argument) {
  if (argument.empty()) co_return refuse(replies::syntax("VRFY address"), last_stage_.c_str(), "VRFY without argument");
  reply(replies::vrfy());
  co_return Flow::next;
}

// RFC 5321 7.3: a site may refuse to expand lists; mxgate never discloses the
// backend's aliases or lists to the outside.
Session::Flow Session::on_expn() {
  return refuse(Reply(502, "5.5.1", "Error: EXPN is not supported"), last_stage_.c_str(),
                "EXPN refused");
}

// AUTH is not offered on port 25 (mail submission belongs on 587, not behind this
// filter); Postfix's wording when SASL is off.
Session::Flow Session::on_auth() {
  return refuse(Reply(503, "5.5.1", "Error: authentication not enabled"), last_stage_.c_str(),
                "AUTH without authentication offered");
}

std::optional<Session::Flow> Session::refuse_starttls(std::string_view argument) {
  if (!generation_->tls_server)
    return refuse(replies::tls_not_available(), "helo", "STARTTLS without certificate");
  if (stream_.tls_active()) return refuse(replies::tls_already_active(), "helo", "STARTTLS twice");
  if (!argument.empty()) return refuse(replies::syntax("STARTTLS"), "helo", "STARTTLS with argument");
  if (!helo_seen_)
    return refuse(replies::bad_sequence("send HELO/EHLO first"), "helo", "STARTTLS before EHLO");
  return std::nullopt;
}

awaitable<Session::Flow> Session::on_starttls(std::string_view argument) {
  // The checks live in a plain function: g++ 12 miscompiled this coroutine when they
  // were `co_return refuse(...)` statements ahead of the awaits (SIGILL on resume).
  std::optional<Flow> refused = refuse_starttls(argument);
  if (refused) co_return *refused;
  reply(replies::ready_to_start_tls());
  bool flushed = co_await stream_.flush(config_.limits.command_timeout);
  if (!flushed) co_return Flow::close;
  // CVE-2011-0411: whatever the client pipelined after STARTTLS was sent in clear and
  // must not be executed inside the TLS session. start_tls_server discards it.
  bool secured = co_await stream_.start_tls_server(*generation_->tls_server,
                                                   config_.limits.tls_handshake_timeout);
  if (!secured) {
    spdlog::info("{} {}: TLS handshake failed", context_.session_id, client_label());
    co_return Flow::close;
  }
  // RFC 3207 4.2: the session starts over; the client must EHLO again.
  co_await reset_transaction();
  helo_seen_ = false;
  pipelining_offered_ = false;
  context_.helo.clear();
  context_.tls = true;
  co_return Flow::next;
}

}  // namespace mxgate::proxy

// hiredis async driven by Asio: hiredis's event hooks (addRead, addWrite, ...) become
// async_wait calls on a stream_descriptor wrapping its socket; replies are copied out and
// wake the awaiting coroutine through a timer. Reconnects, deadlines, the breaker.
#include "filters/redis_connection.hpp"

#include <fmt/format.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "filters/metrics.hpp"

namespace mxgate::filters {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

RedisValue convert(const redisReply* reply) {
  RedisValue value;
  if (reply == nullptr) return value;
  switch (reply->type) {
    case REDIS_REPLY_STRING:
      value.type = RedisValue::Type::string;
      value.text.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_STATUS:
      value.type = RedisValue::Type::status;
      value.text.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_ERROR:
      value.type = RedisValue::Type::error;
      value.text.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_INTEGER:
      value.type = RedisValue::Type::integer;
      value.integer = reply->integer;
      break;
    case REDIS_REPLY_ARRAY:
      value.type = RedisValue::Type::array;
      value.elements.reserve(reply->elements);
      for (std::size_t i = 0; i < reply->elements; ++i) {
        value.elements.push_back(convert(reply->element[i]));
      }
      break;
    default:
      value.type = RedisValue::Type::nil;
      break;
  }
  return value;
}

// The replies of one batch of pipelined commands. Shared with hiredis's callbacks, so a
// call that timed out can go away while its replies are still in flight.
struct CallState {
  explicit CallState(const asio::any_io_executor& executor, std::size_t count)
      : replies(count), remaining(count), timer(executor) {}
  std::vector<RedisValue> replies;
  std::size_t remaining;
  asio::steady_timer timer;  // cancelled by the last reply: wakes the caller
};

struct Pending {
  std::shared_ptr<CallState> state;
  std::size_t index;
};

void on_reply(redisAsyncContext*, void* reply, void* privdata) {
  std::unique_ptr<Pending> pending(static_cast<Pending*>(privdata));
  CallState& state = *pending->state;
  state.replies[pending->index] = convert(static_cast<const redisReply*>(reply));
  if (--state.remaining == 0) state.timer.cancel();
}

}  // namespace

// One hiredis context and the Asio watch on its socket. Handlers hold it by shared_ptr;
// `context` becomes null when hiredis frees the context (its cleanup hook).
struct RedisLink : std::enable_shared_from_this<RedisLink> {
  redisAsyncContext* context = nullptr;
  std::unique_ptr<asio::posix::stream_descriptor> socket;
  bool want_read = false;
  bool want_write = false;
  bool read_waiting = false;
  bool write_waiting = false;
  enum class Phase { connecting, connected, failed, closed } phase = Phase::connecting;
  RedisConnection* owner = nullptr;  // null once the owner no longer listens
  std::string error;                 // hiredis's reason, when it failed
  // The owner died without close() on its thread: its io_context may be gone, so the
  // socket watch must not be touched (the fd itself is closed by hiredis).
  bool abandoned = false;
};

namespace {

void arm_read(RedisLink& link);
void arm_write(RedisLink& link);

void arm_read(RedisLink& link) {
  if (link.read_waiting || !link.socket || link.context == nullptr) return;
  link.read_waiting = true;
  // async_wait is queued with an epoll_ctl MOD, which reports data already buffered:
  // nothing hiredis left unread is missed although Asio registers edge-triggered.
  link.socket->async_wait(asio::posix::stream_descriptor::wait_read,
                          [link = link.shared_from_this()](const boost::system::error_code& error) {
                            link->read_waiting = false;
                            if (error || link->context == nullptr || !link->want_read) return;
                            redisAsyncHandleRead(link->context);
                            if (link->context != nullptr && link->want_read) arm_read(*link);
                          });
}

void arm_write(RedisLink& link) {
  if (link.write_waiting || !link.socket || link.context == nullptr) return;
  link.write_waiting = true;
  link.socket->async_wait(asio::posix::stream_descriptor::wait_write,
                          [link = link.shared_from_this()](const boost::system::error_code& error) {
                            link->write_waiting = false;
                            if (error || link->context == nullptr || !link->want_write) return;
                            redisAsyncHandleWrite(link->context);
                            if (link->context != nullptr && link->want_write) arm_write(*link);
                          });
}

RedisLink& link_of(void* data) { return *static_cast<RedisLink*>(data); }

void hook_add_read(void* data) {
  link_of(data).want_read = true;
  arm_read(link_of(data));
}
void hook_del_read(void* data) { link_of(data).want_read = false; }
void hook_add_write(void* data) {
  link_of(data).want_write = true;
  arm_write(link_of(data));
}
void hook_del_write(void* data) { link_of(data).want_write = false; }
void hook_cleanup(void* data) {
  // hiredis frees the context and then closes the socket itself: stop watching it and
  // give the descriptor back without closing it.
  RedisLink& link = link_of(data);
  link.context = nullptr;
  link.want_read = link.want_write = false;
  if (link.abandoned) {
    (void)link.socket.release();  // deliberately leaked: see RedisLink::abandoned
    return;
  }
  if (link.socket) {
    boost::system::error_code ignored;
    link.socket->cancel(ignored);
    link.socket->release();
  }
}

void on_connect(const redisAsyncContext* context, int status) {
  RedisLink& link = link_of(context->ev.data);
  link.phase = status == REDIS_OK ? RedisLink::Phase::connected : RedisLink::Phase::failed;
  if (context->c.err != 0) link.error = context->c.errstr;
  if (link.owner) link.owner->link_changed(link, false);
}

void on_disconnect(const redisAsyncContext* context, int) {
  RedisLink& link = link_of(context->ev.data);
  const bool lost = link.phase == RedisLink::Phase::connected;
  link.phase = RedisLink::Phase::closed;
  if (link.owner) link.owner->link_changed(link, lost);
}

}  // namespace

RedisConnection::RedisConnection(asio::any_io_executor executor, RedisStoreOptions options,
                                 std::vector<std::string> scripts)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      scripts_(std::move(scripts)),
      shas_(scripts_.size()),
      name_(fmt::format("redis {}:{}", options_.host, options_.port)),
      breaker_(options_.breaker),
      backoff_(options_.reconnect_min),
      calls_(metrics::Registry::global().counter("mxgate_store_calls_total", "State store calls",
                                                 {{"backend", "redis"}})),
      timeouts_(metrics::Registry::global().counter("mxgate_store_errors_total",
                                                    "State store calls that failed, by reason",
                                                    {{"backend", "redis"}, {"error", "timeout"}})),
      unavailable_(metrics::Registry::global().counter(
          "mxgate_store_errors_total", "State store calls that failed, by reason",
          {{"backend", "redis"}, {"error", "unavailable"}})),
      failed_(metrics::Registry::global().counter("mxgate_store_errors_total",
                                                  "State store calls that failed, by reason",
                                                  {{"backend", "redis"}, {"error", "failed"}})),
      latency_(metrics::Registry::global().histogram(
          "mxgate_store_call_seconds", "State store call latency", {{"backend", "redis"}})),
      breakers_open_(metrics::Registry::global().gauge(
          "mxgate_store_breakers_open",
          "Redis connections (one per worker thread) whose circuit breaker is open")),
      connections_(
          metrics::Registry::global().gauge("mxgate_store_connections", "Redis connections ready")),
      connects_ok_(metrics::Registry::global().counter(
          "mxgate_store_connects_total", "Redis connection attempts", {{"result", "ok"}})),
      connects_failed_(metrics::Registry::global().counter(
          "mxgate_store_connects_total", "Redis connection attempts", {{"result", "failed"}})) {}

RedisConnection::~RedisConnection() {
  if (reported_open_) breakers_open_.add(-1);
  if (state_ == State::ready) connections_.add(-1);
  if (link_) {
    // Only when close() never ran on the worker thread (the process is exiting).
    link_->owner = nullptr;
    link_->abandoned = true;
    if (link_->context != nullptr) redisAsyncFree(link_->context);
  }
}

void RedisConnection::notify() {
  for (asio::steady_timer* waiter : waiters_) waiter->cancel();
}

asio::awaitable<void> RedisConnection::wait_for_change(Clock::time_point deadline) {
  asio::steady_timer timer(executor_, deadline);
  auto position = waiters_.insert(waiters_.end(), &timer);
  boost::system::error_code ignored;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  waiters_.erase(position);
}

void RedisConnection::drop_link() {
  if (!link_) return;
  auto link = std::move(link_);
  link->owner = nullptr;
  if (state_ == State::ready) connections_.add(-1);
  // Pending callbacks run now with no reply: their callers see a lost connection.
  if (link->context != nullptr) redisAsyncFree(link->context);
}

void RedisConnection::close() {
  drop_link();
  state_ = State::closed;
  notify();
}

void RedisConnection::link_changed(RedisLink& link, bool lost) {
  if (&link != link_.get()) return;
  if (link.phase == RedisLink::Phase::connected) {
    notify();  // the connect coroutine continues with the handshake
    return;
  }
  // Failed to connect, or lost: hiredis frees the context after this callback.
  link.owner = nullptr;
  link_.reset();
  if (lost && state_ == State::ready) {
    connections_.add(-1);
    state_ = State::disconnected;
    last_error_ = "connection lost";
    next_attempt_ = Clock::now() + backoff_;
    spdlog::warn("{}: connection lost, reconnecting in {}ms", name_, backoff_.count());
  }
  notify();
}

void RedisConnection::connect_failed(const std::string& reason) {
  drop_link();
  state_ = State::disconnected;
  last_error_ = reason;
  connects_failed_.inc();
  ++connect_failures_;
  // A log line for the first failure and then every 10th: an outage must not flood the log.
  if (connect_failures_ == 1 || connect_failures_ % 10 == 0) {
    spdlog::warn("{}: cannot connect ({}), attempt {}, next in {}ms", name_, reason,
                 connect_failures_, backoff_.count());
  }
  next_attempt_ = Clock::now() + backoff_;
  backoff_ = std::min(backoff_ * 2, options_.reconnect_max);
  notify();
}

asio::awaitable<RedisConnection::SendResult> RedisConnection::send(
    const std::vector<RedisCommand>& commands, Clock::time_point deadline) {
  auto state = std::make_shared<CallState>(executor_, commands.size());
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (std::size_t i = 0; i < commands.size(); ++i) {
    argv.clear();
    lengths.clear();
    for (const std::string& argument : commands[i]) {
      argv.push_back(argument.data());
      lengths.push_back(argument.size());
    }
    auto* pending = new Pending{state, i};
    if (!link_ || link_->context == nullptr ||
        redisAsyncCommandArgv(link_->context, on_reply, pending, static_cast<int>(argv.size()),
                              argv.data(), lengths.data()) != REDIS_OK) {
      delete pending;  // not queued: hiredis will never call back
      --state->remaining;
    }
  }
  if (state->remaining > 0) {
    state->timer.expires_at(deadline);
    boost::system::error_code ignored;
    co_await state->timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
  SendResult result;
  // Timed out: the missing replies keep `state` alive until they come or the link dies.
  result.timed_out = state->remaining > 0;
  result.replies = state->replies;
  co_return result;
}

asio::awaitable<std::string> RedisConnection::handshake(Clock::time_point deadline) {
  std::vector<RedisCommand> commands;
  if (!options_.password.empty()) commands.push_back({"AUTH", options_.password});
  if (options_.database != 0) commands.push_back({"SELECT", std::to_string(options_.database)});
  for (const std::string& script : scripts_) commands.push_back({"SCRIPT", "LOAD", script});
  SendResult sent = co_await send(commands, deadline);
  const std::vector<RedisValue>& replies = sent.replies;
  if (sent.timed_out) co_return "no answer to the handshake (AUTH, SELECT, SCRIPT LOAD)";
  for (std::size_t i = 0; i < replies.size(); ++i) {
    const RedisValue& reply = replies[i];
    if (reply.type == RedisValue::Type::none) co_return "connection closed during the handshake";
    if (reply.type == RedisValue::Type::error) co_return commands[i][0] + ": " + reply.text;
  }
  const std::size_t first_script = replies.size() - shas_.size();
  for (std::size_t i = 0; i < shas_.size(); ++i) shas_[i] = replies[first_script + i].text;
  co_return std::string();
}

asio::awaitable<void> RedisConnection::connect() {
  auto self = shared_from_this();
  state_ = State::connecting;
  const auto deadline = Clock::now() + options_.connect_timeout;
  try {
    // hiredis 0.14 resolves names with a blocking getaddrinfo: hand it an address.
    boost::system::error_code error;
    asio::ip::address address = asio::ip::make_address(options_.host, error);
    if (error) {
      asio::ip::tcp::resolver resolver(executor_);
      asio::steady_timer guard(executor_, deadline);
      guard.async_wait([&resolver](const boost::system::error_code& code) {
        if (!code) resolver.cancel();
      });
      auto results =
          co_await resolver.async_resolve(options_.host, std::to_string(options_.port),
                                          asio::redirect_error(asio::use_awaitable, error));
      guard.cancel();
      if (error || results.empty()) {
        connect_failed("cannot resolve " + options_.host + ": " + error.message());
        co_return;
      }
      address = results.begin()->endpoint().address();
    }
    redisAsyncContext* context = redisAsyncConnect(address.to_string().c_str(), options_.port);
    if (context == nullptr) {
      connect_failed("out of memory");
      co_return;
    }
    if (context->err != 0) {
      std::string reason = context->errstr;
      redisAsyncFree(context);
      connect_failed(reason);
      co_return;
    }
    auto link = std::make_shared<RedisLink>();
    link->context = context;
    link->owner = this;
    link->socket = std::make_unique<asio::posix::stream_descriptor>(executor_, context->c.fd);
    context->ev.data = link.get();
    context->ev.addRead = hook_add_read;
    context->ev.delRead = hook_del_read;
    context->ev.addWrite = hook_add_write;
    context->ev.delWrite = hook_del_write;
    context->ev.cleanup = hook_cleanup;
    link_ = link;
    // Setting the connect callback asks for the first write event (connect completion).
    redisAsyncSetConnectCallback(context, on_connect);
    redisAsyncSetDisconnectCallback(context, on_disconnect);

    while (link->phase == RedisLink::Phase::connecting && state_ == State::connecting &&
           Clock::now() < deadline) {
      co_await wait_for_change(deadline);
    }
    if (state_ != State::connecting) co_return;  // closed meanwhile
    if (link->phase != RedisLink::Phase::connected || link_ != link) {
      connect_failed(link->phase == RedisLink::Phase::connecting
                         ? "connect timeout"
                         : (link->error.empty() ? "connection failed" : link->error));
      co_return;
    }
    const std::string failure = co_await handshake(deadline);
    if (state_ != State::connecting) co_return;
    if (!failure.empty() || link_ != link) {
      connect_failed(failure.empty() ? "connection closed during handshake" : failure);
      co_return;
    }
    state_ = State::ready;
    connections_.add(1);
    connects_ok_.inc();
    backoff_ = options_.reconnect_min;
    if (ever_connected_ || connect_failures_ > 0) {
      spdlog::info("{}: connected again ({} failed attempts)", name_, connect_failures_);
    } else {
      spdlog::info("{}: connected", name_);
    }
    ever_connected_ = true;
    connect_failures_ = 0;
    notify();
  } catch (const std::exception& failure) {
    connect_failed(failure.what());
  }
}

void RedisConnection::record(RedisOutcome& outcome, Clock::time_point started) {
  const auto now = Clock::now();
  latency_.observe(std::chrono::duration<double>(now - started).count());
  bool changed = false;
  switch (outcome.error) {
    case StoreError::none:
      changed = breaker_.record_success();
      break;
    case StoreError::failed:
      // The server answered: it is alive, whatever it thought of the command.
      failed_.inc();
      changed = breaker_.record_success();
      break;
    case StoreError::timeout:
      timeouts_.inc();
      changed = breaker_.record_failure(now);
      break;
    case StoreError::unavailable:
      unavailable_.inc();
      changed = breaker_.record_failure(now);
      break;
  }
  if (!changed) return;
  if (breaker_.state() == CircuitBreaker::State::open) {
    if (!reported_open_) breakers_open_.add(1);
    reported_open_ = true;
    spdlog::warn("{}: circuit breaker open for {}ms ({}: {}); calls fail at once", name_,
                 breaker_.open_for().count(), store_error_name(outcome.error), outcome.message);
    // A hung server keeps our commands forever: start afresh at the next probe.
    if (state_ == State::ready) {
      drop_link();
      state_ = State::disconnected;
    }
  } else if (breaker_.state() == CircuitBreaker::State::closed) {
    if (reported_open_) breakers_open_.add(-1);
    reported_open_ = false;
    spdlog::info("{}: circuit breaker closed, Redis answers again", name_);
  }
}

asio::awaitable<RedisOutcome> RedisConnection::run(std::vector<RedisCommand> commands,
                                                   std::optional<std::size_t> script) {
  auto self = shared_from_this();
  const auto started = Clock::now();
  const auto deadline = started + options_.timeout;
  calls_.inc();
  RedisOutcome outcome;
  if (state_ == State::closed) {
    outcome.error = StoreError::unavailable;
    outcome.message = "store closed";
    co_return outcome;
  }
  if (!breaker_.allow(started)) {
    unavailable_.inc();
    outcome.error = StoreError::unavailable;
    outcome.message = "circuit breaker open";
    co_return outcome;
  }
  const bool probe = breaker_.state() == CircuitBreaker::State::half_open;
  if (state_ == State::disconnected) {
    if (probe || started >= next_attempt_) {
      state_ = State::connecting;  // before co_spawn: the coroutine may start later
      asio::co_spawn(executor_, connect(), asio::detached);
    } else {
      outcome.error = StoreError::unavailable;
      outcome.message = "reconnecting (" + last_error_ + ")";
      record(outcome, started);
      co_return outcome;
    }
  }
  while (state_ == State::connecting && Clock::now() < deadline) {
    co_await wait_for_change(deadline);
  }
  if (state_ != State::ready) {
    outcome.error = state_ == State::connecting ? StoreError::timeout : StoreError::unavailable;
    outcome.message = state_ == State::connecting ? "still connecting" : last_error_;
    record(outcome, started);
    co_return outcome;
  }
  if (script) {
    for (RedisCommand& command : commands) {
      if (command[0] == "EVALSHA") command[1] = shas_[*script];
    }
  }
  SendResult sent = co_await send(commands, deadline);
  outcome.replies = std::move(sent.replies);
  if (sent.timed_out) {
    outcome.error = StoreError::timeout;
    outcome.message = fmt::format("no answer within {}ms", options_.timeout.count());
  } else {
    for (const RedisValue& reply : outcome.replies) {
      if (reply.type == RedisValue::Type::none) {
        outcome.error = StoreError::unavailable;
        outcome.message = "connection lost";
        break;
      }
    }
  }
  record(outcome, started);
  co_return outcome;
}

asio::awaitable<RedisOutcome> RedisConnection::evaluate(std::size_t script,
                                                        std::vector<RedisCommand> keys_and_args,
                                                        std::vector<std::size_t> key_counts) {
  const std::size_t index = script;
  std::vector<RedisCommand> commands;
  commands.reserve(keys_and_args.size());
  for (std::size_t i = 0; i < keys_and_args.size(); ++i) {
    // The digest is filled in by run(), once the handshake has loaded the scripts.
    RedisCommand command{"EVALSHA", "", std::to_string(key_counts[i])};
    command.insert(command.end(), keys_and_args[i].begin(), keys_and_args[i].end());
    commands.push_back(std::move(command));
  }
  RedisOutcome outcome = co_await run(commands, script);
  if (outcome.error != StoreError::none) co_return outcome;
  std::vector<std::size_t> missing;
  for (std::size_t i = 0; i < outcome.replies.size(); ++i) {
    const RedisValue& reply = outcome.replies[i];
    if (reply.type == RedisValue::Type::error && reply.text.starts_with("NOSCRIPT")) {
      missing.push_back(i);
    }
  }
  if (!missing.empty()) {
    // SCRIPT FLUSH, a restart or a failover to a replica lost the script. NOSCRIPT means
    // the call did not run, so load it again and rerun just those calls, pipelined
    // behind the load (a script's digest is the SHA-1 of its text: it does not change).
    spdlog::info("{}: script {} missing on the server (NOSCRIPT), loading it again", name_, index);
    std::vector<RedisCommand> retry{RedisCommand{"SCRIPT", "LOAD", scripts_[index]}};
    for (std::size_t i : missing) retry.push_back(commands[i]);
    RedisOutcome again = co_await run(std::move(retry), script);
    if (again.error != StoreError::none) co_return again;
    for (std::size_t j = 0; j < missing.size(); ++j) {
      outcome.replies[missing[j]] = std::move(again.replies[j + 1]);
    }
  }
  for (const RedisValue& reply : outcome.replies) {
    if (reply.type == RedisValue::Type::error) {
      outcome.error = StoreError::failed;
      outcome.message = reply.text;
      break;
    }
  }
  co_return outcome;
}

}  // namespace mxgate::filters

// Rate-limit keys and verdicts on the embedded store: exact counts, the reply the client
// sees, errors counted at close, concurrency slots released at close, on_error; connect,
// helo and mail rules checked in the background and reported at the first RCPT.
#include "filters/ratelimit.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>

#include "filters/memory_store.hpp"
#include "filters/metrics.hpp"
#include "filters/redis_store.hpp"
#include "tests/unit/filters/coroutine_support.hpp"
#include "tests/unit/filters/ratelimit_gated_store.hpp"

namespace mxgate::filters {
namespace {

using testing::GatedStore;
using testing::run_until_done;

TEST(ClientNet, MasksToConfiguredPrefixes) {
  const ClientNetOptions defaults;
  EXPECT_EQ(client_net("192.0.2.77", defaults), "192.0.2.0/24");
  EXPECT_EQ(client_net("2001:db8:1:2:3:4:5:6", defaults), "2001:db8:1:2::/64");
  EXPECT_EQ(client_net("::ffff:192.0.2.77", defaults), "192.0.2.0/24");
  EXPECT_EQ(client_net("198.51.100.200", {20, 48}), "198.51.96.0/20");
  EXPECT_EQ(client_net("2001:db8:1:2::1", {20, 48}), "2001:db8:1::/48");
  EXPECT_EQ(client_net("not-an-ip", defaults), "");
}

SessionContext session(std::string ip = "192.0.2.7") {
  SessionContext context;
  context.session_id = "S1";
  context.client_ip = std::move(ip);
  context.helo = "MX.Example.COM";
  context.sender = "Alice@Example.org";
  context.sender_domain = "example.org";
  context.recipient = "bob@Example.net";
  return context;
}

TEST(RateKey, JoinsPartsLowerCase) {
  RateRule rule;
  rule.name = "r";
  rule.key = {"client_net", "helo", "sender", "sender_domain", "recipient", "recipient_domain"};
  EXPECT_EQ(rate_key(rule, session(), {}),
            "r:192.0.2.0/24|mx.example.com|alice@example.org|example.org|bob@example.net|"
            "example.net");
  rule.key = {"client_ip"};
  EXPECT_EQ(rate_key(rule, session(), {}), "r:192.0.2.7");
  SessionContext no_helo = session();
  no_helo.helo.clear();
  rule.key = {"helo"};
  EXPECT_FALSE(rate_key(rule, no_helo, {}));  // not known: no check rather than one shared key
  SessionContext bounce = session();
  bounce.sender.clear();
  rule.key = {"sender"};
  EXPECT_EQ(rate_key(rule, bounce, {}), "r:<>");
}

class RateLimitFilterTest : public ::testing::Test {
 protected:
  RateLimitFilterTest() {
    services_.executor = io_.get_executor();
    services_.store = store_;
  }
  RateRule rule(std::string name, RateRule::Count count, double rate, double burst,
                Stage stage = Stage::connect) {
    RateRule rule;
    rule.name = std::move(name);
    rule.stage = stage;
    rule.key = {"client_ip"};
    rule.count = count;
    rule.rate = {rate, burst};
    rule.limit = static_cast<std::int64_t>(burst);
    return rule;
  }
  std::unique_ptr<RateLimitFilter> filter(std::vector<RateRule> rules) {
    RateLimitOptions options;
    options.rules = std::move(rules);
    options.instance_id = "test";
    return std::make_unique<RateLimitFilter>(std::move(options));
  }
  Verdict run(FilterInstance& instance, Stage stage, const SessionContext& context) {
    return run_until_done(io_, instance.on_stage(stage, context));
  }
  // The connect stage answers at once, whatever the store says; the first RCPT reports.
  Verdict connect_then_rcpt(FilterInstance& instance, const SessionContext& context) {
    Verdict connect = run(instance, Stage::connect, context);
    EXPECT_EQ(connect.kind, Verdict::Kind::next);
    EXPECT_TRUE(connect.contributions.empty());
    return run(instance, Stage::rcpt, context);
  }
  std::future<Verdict> start(FilterInstance& instance, Stage stage, const SessionContext& context) {
    return testing::start_stage(io_, instance, stage, context);
  }
  bool ready(std::future<Verdict>& verdict) { return testing::stage_ready(io_, verdict); }
  Verdict finish(std::future<Verdict>& verdict) { return testing::finish_stage(io_, verdict); }

  boost::asio::io_context io_;
  std::shared_ptr<MemoryStore> store_ = std::make_shared<MemoryStore>();
  Services services_;
};

TEST_F(RateLimitFilterTest, NConnectionsThenTheExactReply) {
  auto limit = filter({rule("conn", RateRule::Count::connections, 0.001, 3)});
  EXPECT_TRUE(limit->wants(Stage::rcpt));  // where the connect check is reported
  for (int i = 0; i < 3; ++i) {
    auto instance = limit->open(services_);
    EXPECT_EQ(connect_then_rcpt(*instance, session()).kind, Verdict::Kind::next) << i;
  }
  auto instance = limit->open(services_);
  Verdict refused = connect_then_rcpt(*instance, session());
  EXPECT_EQ(refused.kind, Verdict::Kind::tempfail);
  EXPECT_EQ(refused.rule, "conn");
  EXPECT_EQ(refused.reply.code, 451);
  EXPECT_EQ(refused.reply.enhanced, "4.7.1");
  EXPECT_EQ(refused.reply.text(), "rate limit exceeded, try again later");
  EXPECT_EQ(refused.origin, Stage::connect);  // holds for the session's later RCPTs
  EXPECT_TRUE(refused.detail.starts_with("conn:192.0.2.7: over 0.001/s burst 3, retry in "))
      << refused.detail;
  // Reported once: a later RCPT has nothing new to say (the pipeline keeps the verdict).
  EXPECT_EQ(run(*instance, Stage::rcpt, session()).kind, Verdict::Kind::next);
  // Another client has its own budget.
  auto other = limit->open(services_);
  EXPECT_EQ(connect_then_rcpt(*other, session("192.0.2.8")).kind, Verdict::Kind::next);
}

// Stages whose rules run in the background are called without a deadline (no timer,
// no parallel group): the reply to the client goes out before the store is asked.
TEST_F(RateLimitFilterTest, OnlyInLineRulesMakeAStageWait) {
  auto background = filter({rule("conn", RateRule::Count::connections, 1, 10)});
  for (Stage stage : {Stage::connect, Stage::helo, Stage::mail})
    EXPECT_FALSE(background->may_wait(stage)) << stage_name(stage);
  for (Stage stage : {Stage::rcpt, Stage::data, Stage::close})
    EXPECT_TRUE(background->may_wait(stage)) << stage_name(stage);
  RateRule drop = rule("conn-drop", RateRule::Count::connections, 1, 10);
  drop.action = policy::RuleAction::drop;  // a drop is enforced at its stage: in line
  auto in_line = filter({drop});
  EXPECT_TRUE(in_line->may_wait(Stage::connect));
  EXPECT_FALSE(in_line->may_wait(Stage::helo));
}

TEST_F(RateLimitFilterTest, RecipientsCountPerRcptAndExemptionsSkip) {
  RateRule recipients = rule("rcpts", RateRule::Count::recipients, 0.001, 2, Stage::mail);
  std::string error;
  recipients.exempt.push_back(*policy::parse_cidr("203.0.113.0/24", error));
  auto limit = filter({recipients});
  EXPECT_TRUE(limit->wants(Stage::rcpt));
  EXPECT_FALSE(limit->wants(Stage::mail));
  auto instance = limit->open(services_);
  EXPECT_EQ(run(*instance, Stage::rcpt, session()).kind, Verdict::Kind::next);
  EXPECT_EQ(run(*instance, Stage::rcpt, session()).kind, Verdict::Kind::next);
  EXPECT_EQ(run(*instance, Stage::rcpt, session()).kind, Verdict::Kind::tempfail);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(run(*instance, Stage::rcpt, session("203.0.113.9")).kind, Verdict::Kind::next);
  }
}

TEST_F(RateLimitFilterTest, MessagesCountOncePerTransaction) {
  auto limit = filter({rule("msgs", RateRule::Count::messages, 0.001, 2, Stage::rcpt)});
  auto instance = limit->open(services_);
  for (int recipient = 0; recipient < 5; ++recipient) {
    EXPECT_EQ(run(*instance, Stage::rcpt, session()).kind, Verdict::Kind::next);
  }
  instance->reset_transaction();
  EXPECT_EQ(run(*instance, Stage::rcpt, session()).kind, Verdict::Kind::next);
  instance->reset_transaction();
  EXPECT_EQ(run(*instance, Stage::rcpt, session()).kind, Verdict::Kind::tempfail);
}

TEST_F(RateLimitFilterTest, ErrorsAreCountedAtCloseAndRefuseTheNextSession) {
  auto limit = filter({rule("errs", RateRule::Count::errors, 0.001, 5)});
  auto first = limit->open(services_);
  EXPECT_EQ(connect_then_rcpt(*first, session()).kind, Verdict::Kind::next);
  SessionContext closing = session();
  closing.protocol_errors = 4;
  closing.recipients_rejected = 2;
  run(*first, Stage::close, closing);
  auto second = limit->open(services_);
  EXPECT_EQ(connect_then_rcpt(*second, session()).kind, Verdict::Kind::tempfail);
}

TEST_F(RateLimitFilterTest, ConcurrencySlotsAreReleasedAtClose) {
  RateRule concurrency = rule("conc", RateRule::Count::concurrency, 0, 2);
  concurrency.reply_code = 421;
  auto limit = filter({concurrency});
  EXPECT_TRUE(limit->wants(Stage::close));
  SessionContext a = session(), b = session(), c = session();
  a.session_id = "A";
  b.session_id = "B";
  c.session_id = "C";
  auto first = limit->open(services_);
  auto second = limit->open(services_);
  auto third = limit->open(services_);
  EXPECT_EQ(connect_then_rcpt(*first, a).kind, Verdict::Kind::next);
  EXPECT_EQ(connect_then_rcpt(*second, b).kind, Verdict::Kind::next);
  Verdict refused = connect_then_rcpt(*third, c);
  EXPECT_EQ(refused.kind, Verdict::Kind::tempfail);
  EXPECT_EQ(refused.reply.code, 421);
  EXPECT_EQ(refused.reply.enhanced, "4.7.0");
  EXPECT_EQ(refused.reply.text(), "too many concurrent sessions, try again later");
  run(*first, Stage::close, a);
  auto fourth = limit->open(services_);
  EXPECT_EQ(connect_then_rcpt(*fourth, c).kind, Verdict::Kind::next);
  // A session whose instance dies without close still gives its slot back.
  fourth.reset();
  io_.restart();
  io_.poll();
  auto fifth = limit->open(services_);
  SessionContext e = session();
  e.session_id = "E";
  EXPECT_EQ(connect_then_rcpt(*fifth, e).kind, Verdict::Kind::next);
}

TEST_F(RateLimitFilterTest, ScoreActionAddsAScoreLine) {
  RateRule scoring = rule("soft", RateRule::Count::connections, 0.001, 1);
  scoring.action = policy::RuleAction::score;
  scoring.score = 2.5;
  auto limit = filter({scoring});
  auto first = limit->open(services_);
  connect_then_rcpt(*first, session());
  auto second = limit->open(services_);
  Verdict verdict = connect_then_rcpt(*second, session());
  EXPECT_EQ(verdict.kind, Verdict::Kind::next);
  ASSERT_EQ(verdict.contributions.size(), 1u);
  EXPECT_EQ(verdict.contributions[0].score, 2.5);
  EXPECT_EQ(verdict.contributions[0].rule, "soft");
  // A connect-stage line: the pipeline keeps it over a reset_transaction().
  EXPECT_EQ(verdict.contributions[0].stage, "connect");
  EXPECT_EQ(verdict.contributions[0].reply_text, "rate limit exceeded");
}

TEST_F(RateLimitFilterTest, StoreDownFollowsOnError) {
  // A Redis store pointing at a closed port: every call fails fast.
  RedisStoreOptions options;
  options.port = 1;  // nothing listens on tcpmux
  options.timeout = std::chrono::milliseconds(100);
  services_.store = std::make_shared<RedisStore>(io_.get_executor(), options);
  RateRule allow = rule("open", RateRule::Count::connections, 1, 1);
  RateRule closed = rule("closed", RateRule::Count::connections, 1, 1);
  closed.on_error = policy::OnError::tempfail;
  auto lenient = filter({allow});
  auto strict = filter({closed});
  EXPECT_EQ(lenient->on_error(), policy::OnError::allow);
  EXPECT_EQ(strict->on_error(), policy::OnError::tempfail);
  auto& errors = metrics::Registry::global().counter(
      "mxgate_ratelimit_store_errors_total",
      "Rate limit checks the store could not answer (on_error applied)", {{"rule", "open"}});
  const auto errors_before = errors.value();
  auto instance = lenient->open(services_);
  Verdict allowed = connect_then_rcpt(*instance, session());
  EXPECT_EQ(allowed.kind, Verdict::Kind::next);
  ASSERT_EQ(allowed.contributions.size(), 1u);
  EXPECT_NE(allowed.contributions[0].detail.find("store failed"), std::string::npos);
  EXPECT_EQ(allowed.contributions[0].stage, "connect");
  EXPECT_EQ(errors.value(), errors_before + 1);
  auto strict_instance = strict->open(services_);
  Verdict tempfail = connect_then_rcpt(*strict_instance, session());
  EXPECT_EQ(tempfail.kind, Verdict::Kind::tempfail);
  EXPECT_EQ(tempfail.reply.code, 451);
  EXPECT_EQ(tempfail.reply.enhanced, "4.3.0");
  EXPECT_EQ(tempfail.origin, Stage::connect);
  services_.store.reset();
  io_.restart();
  io_.poll();
}

// The stages before RCPT only start their checks: a slow store costs the client nothing
// there, and the verdict comes at the first RCPT, when the store has answered.
TEST_F(RateLimitFilterTest, ConnectHeloAndMailDoNotWaitForTheStore) {
  auto gated = std::make_shared<GatedStore>(io_.get_executor(), store_);
  services_.store = gated;
  RateRule helo = rule("per-helo", RateRule::Count::events, 0.001, 5, Stage::helo);
  helo.key = {"helo"};
  RateRule messages = rule("msgs", RateRule::Count::messages, 0.001, 5, Stage::mail);
  auto limit = filter({rule("conn", RateRule::Count::connections, 0.001, 1), helo, messages});
  EXPECT_FALSE(limit->wants(Stage::data));
  // This client has used its connection already.
  store_->rate_limit_now(store_key("rl", "conn:192.0.2.7"), {0.001, 1}, 1, RateMode::consume,
                         store_now());
  auto instance = limit->open(services_);
  // start() only spawns: the context must outlive the io_context runs in ready().
  const SessionContext context = session();
  int stage_number = 0;
  for (Stage stage : {Stage::connect, Stage::helo, Stage::mail}) {
    ++stage_number;
    auto verdict = start(*instance, stage, context);
    ASSERT_TRUE(ready(verdict)) << stage_name(stage) << " waited for the store";
    EXPECT_EQ(verdict.get().kind, Verdict::Kind::next);
    EXPECT_EQ(gated->waiting(), stage_number);  // its check runs on in the background
  }
  auto rcpt = start(*instance, Stage::rcpt, context);
  EXPECT_FALSE(ready(rcpt));  // the first RCPT waits for the answers
  gated->open();
  Verdict refused = finish(rcpt);
  EXPECT_EQ(gated->waiting(), 0);
  EXPECT_EQ(refused.kind, Verdict::Kind::tempfail);
  EXPECT_EQ(refused.rule, "conn");
  EXPECT_EQ(refused.origin, Stage::connect);
  EXPECT_EQ(refused.reply.code, 451);
  // The helo and mail checks counted (as when each stage awaited its own).
  EXPECT_EQ(store_
                ->rate_limit_now(store_key("rl", "per-helo:mx.example.com"), {0.001, 5}, 0,
                                 RateMode::peek, store_now())
                .remaining,
            4);
  EXPECT_EQ(store_
                ->rate_limit_now(store_key("rl", "msgs:192.0.2.7"), {0.001, 5}, 0, RateMode::peek,
                                 store_now())
                .remaining,
            4);
}

TEST_F(RateLimitFilterTest, DropRulesAreStillCheckedAtTheirStage) {
  auto gated = std::make_shared<GatedStore>(io_.get_executor(), store_);
  services_.store = gated;
  RateRule dropping = rule("flood", RateRule::Count::connections, 0.001, 1);
  dropping.action = policy::RuleAction::drop;
  auto limit = filter({dropping});
  EXPECT_FALSE(limit->wants(Stage::rcpt));  // nothing left for RCPT to report
  store_->rate_limit_now(store_key("rl", "flood:192.0.2.7"), {0.001, 1}, 1, RateMode::consume,
                         store_now());
  auto instance = limit->open(services_);
  const SessionContext context = session();
  auto connect = start(*instance, Stage::connect, context);
  EXPECT_FALSE(ready(connect));  // a drop closes the session now: the stage waits
  gated->open();
  Verdict dropped = finish(connect);
  EXPECT_EQ(dropped.kind, Verdict::Kind::drop);
  EXPECT_EQ(dropped.reply.code, 421);
  EXPECT_FALSE(dropped.origin);
}

// A session may end before its first RCPT, even before the store answered: the slot the
// background check takes is given back, by close or by the instance's end.
TEST_F(RateLimitFilterTest, SessionEndingBeforeItsCheckAnswersGivesTheSlotBack) {
  auto gated = std::make_shared<GatedStore>(io_.get_executor(), store_);
  services_.store = gated;
  auto limit = filter({rule("conc", RateRule::Count::concurrency, 0, 1)});
  const std::string key = store_key("cc", "conc:192.0.2.7");
  const auto probe = [&] {
    const bool free =
        store_->acquire_slot_now(key, "probe", 1, std::chrono::seconds(900), store_now()).acquired;
    store_->release_slot_now(key, "probe");
    return free;
  };
  SessionContext a = session(), b = session(), c = session();
  a.session_id = "A";
  b.session_id = "B";
  c.session_id = "C";
  {
    auto closed = limit->open(services_);  // ends with the close stage
    EXPECT_EQ(run(*closed, Stage::connect, a).kind, Verdict::Kind::next);
    run(*closed, Stage::close, a);
    auto dropped = limit->open(services_);  // ends without it
    EXPECT_EQ(run(*dropped, Stage::connect, b).kind, Verdict::Kind::next);
    EXPECT_EQ(gated->waiting(), 2);
  }
  gated->open();
  io_.restart();
  io_.poll();
  EXPECT_EQ(gated->waiting(), 0);
  EXPECT_TRUE(probe());  // both took the slot in turn and gave it back
  // A session that reached RCPT holds its slot until close.
  auto third = limit->open(services_);
  EXPECT_EQ(connect_then_rcpt(*third, c).kind, Verdict::Kind::next);
  EXPECT_FALSE(probe());
  run(*third, Stage::close, c);
  EXPECT_TRUE(probe());
}

// Metrics count what the store answered, whether or not the session lived to see it.
TEST_F(RateLimitFilterTest, RefusalsAreCountedEvenWhenNeverReported) {
  auto gated = std::make_shared<GatedStore>(io_.get_executor(), store_);
  services_.store = gated;
  auto limit = filter({rule("conn-counted", RateRule::Count::connections, 0.001, 1)});
  auto& limited = metrics::Registry::global().counter(
      "mxgate_ratelimit_limited_total", "Events refused (or scored) by a rate or concurrency limit",
      {{"rule", "conn-counted"}});
  const auto before = limited.value();
  store_->rate_limit_now(store_key("rl", "conn-counted:192.0.2.7"), {0.001, 1}, 1,
                         RateMode::consume, store_now());
  {
    auto instance = limit->open(services_);
    EXPECT_EQ(run(*instance, Stage::connect, session()).kind, Verdict::Kind::next);
  }
  EXPECT_EQ(limited.value(), before);
  gated->open();
  io_.restart();
  io_.poll();
  EXPECT_EQ(limited.value(), before + 1);
}

// Through the pipeline, refusals found at connect and at mail are enforced as when each
// stage awaited its checks: the most severe at the first RCPT, the connect one for the
// session's later transactions.
TEST_F(RateLimitFilterTest, RefusalsOfSeveralStagesAreEnforcedAsBefore) {
  RateRule per_sender = rule("per-sender", RateRule::Count::events, 0.001, 1, Stage::mail);
  per_sender.key = {"sender"};
  per_sender.action = policy::RuleAction::reject;
  per_sender.reply_code = 550;
  std::vector<std::unique_ptr<Filter>> filters;
  filters.push_back(filter({rule("conn", RateRule::Count::connections, 0.001, 1), per_sender}));
  policy::Config config;
  auto pipeline = Pipeline::assemble(std::move(filters), config);
  store_->rate_limit_now(store_key("rl", "conn:192.0.2.7"), {0.001, 1}, 1, RateMode::consume,
                         store_now());
  store_->rate_limit_now(store_key("rl", "per-sender:alice@example.org"), {0.001, 1}, 1,
                         RateMode::consume, store_now());
  auto pipeline_session = pipeline->start(services_);
  SessionContext context = session();
  for (Stage stage : {Stage::connect, Stage::helo, Stage::mail}) {
    EXPECT_EQ(run_until_done(io_, pipeline_session->run(stage, context)).action,
              Decision::Action::proceed);
  }
  for (int recipient = 0; recipient < 2; ++recipient) {
    Decision decision = run_until_done(io_, pipeline_session->run(Stage::rcpt, context));
    EXPECT_EQ(decision.action, Decision::Action::reject) << recipient;
    EXPECT_EQ(decision.rule, "per-sender");
    EXPECT_EQ(decision.reply.code, 550);
  }
  pipeline_session->reset_transaction();
  context.sender = "carol@example.org";
  run_until_done(io_, pipeline_session->run(Stage::mail, context));
  Decision decision = run_until_done(io_, pipeline_session->run(Stage::rcpt, context));
  EXPECT_EQ(decision.action, Decision::Action::tempfail);
  EXPECT_EQ(decision.rule, "conn");
  EXPECT_EQ(decision.reply.code, 451);
}

// The pipeline's deadline also bounds the wait at RCPT: the rule's on_error applies, and
// the answer, once in, is reported at the next RCPT.
TEST_F(RateLimitFilterTest, DeadlineAtRcptFollowsOnError) {
  auto gated = std::make_shared<GatedStore>(io_.get_executor(), store_);
  services_.store = gated;
  RateRule strict = rule("conn", RateRule::Count::connections, 0.001, 1);
  strict.on_error = policy::OnError::tempfail;
  std::vector<std::unique_ptr<Filter>> filters;
  filters.push_back(filter({strict}));
  policy::Config config;
  auto pipeline = Pipeline::assemble(std::move(filters), config, std::chrono::milliseconds(50));
  store_->rate_limit_now(store_key("rl", "conn:192.0.2.7"), {0.001, 1}, 1, RateMode::consume,
                         store_now());
  auto pipeline_session = pipeline->start(services_);
  SessionContext context = session();
  run_until_done(io_, pipeline_session->run(Stage::connect, context));
  Decision timed_out = run_until_done(io_, pipeline_session->run(Stage::rcpt, context));
  EXPECT_EQ(timed_out.action, Decision::Action::tempfail);
  EXPECT_EQ(timed_out.rule, "on_error");
  EXPECT_EQ(timed_out.reply.enhanced, "4.3.0");
  gated->open();
  Decision decision = run_until_done(io_, pipeline_session->run(Stage::rcpt, context));
  EXPECT_EQ(decision.action, Decision::Action::tempfail);
  EXPECT_EQ(decision.rule, "conn");
  EXPECT_EQ(decision.reply.enhanced, "4.7.1");
}

}  // namespace
}  // namespace mxgate::filters

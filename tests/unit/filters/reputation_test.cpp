// Reputation scoring (bounded, negative for good) and its movement after good and bad
// sessions, read in the background and scored at the first RCPT; greylisting's defer,
// retry and skip for a good reputation.
#include "filters/reputation.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>

#include "filters/greylist.hpp"
#include "filters/memory_store.hpp"
#include "filters/metrics.hpp"
#include "tests/unit/filters/coroutine_support.hpp"
#include "tests/unit/filters/ratelimit_gated_store.hpp"

namespace mxgate::filters {
namespace {

using testing::GatedStore;
using testing::run_until_done;

TEST(ReputationScore, BoundedAndSigned) {
  ReputationOptions options;                           // min_events 3, max 5, min -3
  EXPECT_EQ(reputation_score({1, 1, 1}, options), 0);  // too few outcomes: no opinion
  EXPECT_GT(reputation_score({0, 10, 1}, options), 3.8);
  EXPECT_LE(reputation_score({0, 1e9, 1}, options), 5);
  EXPECT_LT(reputation_score({10, 0, 1}, options), -2.3);
  EXPECT_GE(reputation_score({1e9, 0, 1}, options), -3);
  EXPECT_NEAR(reputation_score({50, 50, 1}, options), 0, 1e-12);
  // More evidence, more weight.
  EXPECT_GT(reputation_score({0, 100, 1}, options), reputation_score({0, 4, 1}, options));
}

TEST(ReputationKeys, ForSupportArguments) {
  const ClientNetOptions net;
  EXPECT_EQ(reputation_keys_for("192.0.2.7", net),
            (std::vector<std::string>{"rep:{ip:192.0.2.7}", "rep:{net:192.0.2.0/24}"}));
  EXPECT_EQ(reputation_keys_for("192.0.2.0/24", net),
            (std::vector<std::string>{"rep:{net:192.0.2.0/24}"}));
  EXPECT_EQ(reputation_keys_for("helo:MX.Example.com", net),
            (std::vector<std::string>{"rep:{helo:mx.example.com}"}));
  EXPECT_EQ(reputation_keys_for("Example.org", net),
            (std::vector<std::string>{"rep:{helo:example.org}", "rep:{domain:example.org}"}));
}

TEST(SessionOutcome, GoodIsAcceptedMailBadIsEverythingRefused) {
  SessionContext context;
  context.messages_accepted = 2;
  context.messages_rejected = 1;
  context.recipients_rejected = 3;
  context.protocol_errors = 1;
  context.early_talker = true;
  const Outcome outcome = session_outcome(context);
  EXPECT_EQ(outcome.good, 2);
  EXPECT_EQ(outcome.bad, 6);
}

class ReputationFilterTest : public ::testing::Test {
 protected:
  ReputationFilterTest() {
    services_.executor = io_.get_executor();
    services_.store = store_;
  }
  SessionContext session(std::string ip) {
    SessionContext context;
    context.session_id = "S";
    context.client_ip = std::move(ip);
    context.helo = "mx.example.org";
    context.sender = "a@example.org";
    context.sender_domain = "example.org";
    return context;
  }
  // One whole session: connect, helo, mail, rcpt, close with the given outcome.
  double session_score(const ReputationFilter& filter, SessionContext context, int accepted,
                       int rejected) {
    auto instance = filter.open(services_);
    double score = 0;
    for (Stage stage : {Stage::connect, Stage::helo, Stage::mail, Stage::rcpt}) {
      Verdict verdict = run_until_done(io_, instance->on_stage(stage, context));
      for (const auto& line : verdict.contributions) score += line.score;
    }
    context.messages_accepted = accepted;
    context.messages_rejected = rejected;
    run_until_done(io_, instance->on_stage(Stage::close, context));
    return score;
  }

  boost::asio::io_context io_;
  std::shared_ptr<MemoryStore> store_ = std::make_shared<MemoryStore>();
  Services services_;
};

TEST_F(ReputationFilterTest, MovesAfterGoodAndBadSessions) {
  ReputationFilter filter({});
  EXPECT_EQ(session_score(filter, session("192.0.2.7"), 1, 0), 0);  // unknown
  for (int i = 0; i < 10; ++i) session_score(filter, session("192.0.2.7"), 1, 0);
  const double good = session_score(filter, session("192.0.2.7"), 0, 0);
  EXPECT_LT(good, -1);
  EXPECT_GE(good, -3);  // bounded over all four records

  for (int i = 0; i < 10; ++i) session_score(filter, session("198.51.100.9"), 0, 3);
  SessionContext bad = session("198.51.100.9");
  bad.helo = "other.example";
  bad.sender_domain = "other.example";
  const double score = session_score(filter, bad, 0, 0);
  EXPECT_GT(score, 3);
  EXPECT_LE(score, 5);
}

// Keys are collected and the read started before RCPT: only RCPT and close wait.
TEST_F(ReputationFilterTest, OnlyRcptAndCloseWait) {
  ReputationFilter filter({});
  for (Stage stage : {Stage::connect, Stage::helo, Stage::mail})
    EXPECT_FALSE(filter.may_wait(stage)) << stage_name(stage);
  EXPECT_TRUE(filter.may_wait(Stage::rcpt));
  EXPECT_TRUE(filter.may_wait(Stage::close));
}

TEST_F(ReputationFilterTest, TransactionScoreIsBoundedWithTheSession) {
  ReputationFilter filter({});
  for (int i = 0; i < 20; ++i) session_score(filter, session("203.0.113.1"), 0, 5);
  auto instance = filter.open(services_);
  SessionContext context = session("203.0.113.1");
  double total = 0;
  for (int transaction = 0; transaction < 3; ++transaction) {
    for (Stage stage : {Stage::connect, Stage::helo, Stage::mail, Stage::rcpt}) {
      if (transaction > 0 && stage != Stage::mail && stage != Stage::rcpt) continue;
      Verdict verdict = run_until_done(io_, instance->on_stage(stage, context));
      for (const auto& line : verdict.contributions) total += line.score;
    }
    EXPECT_LE(total, 5.0 + 1e-9);
    // The pipeline drops mail-stage lines at reset_transaction; the instance follows.
    instance->reset_transaction();
    total = std::min(total, 5.0);
  }
}

// What each stage added when it awaited its own read: the session part (IP and net at
// connect, HELO at helo) bounded once per session, the sender domain's per transaction.
struct Expected {
  double connect = 0;
  double helo = 0;
  double mail = 0;
};

class ReputationBackgroundTest : public ReputationFilterTest {
 protected:
  ReputationBackgroundTest() {
    services_.store = gated_;
    const StoreTime now = store_now();
    store_->reputation_update_now(reputation_key("ip", "192.0.2.7"), 0, 10, options_.half_life,
                                  now);
    store_->reputation_update_now(reputation_key("helo", "mx.example.org"), 0, 4,
                                  options_.half_life, now);
    store_->reputation_update_now(reputation_key("domain", "example.org"), 10, 0,
                                  options_.half_life, now);
    ip_ = reputation_score({0, 10, now}, options_);
    helo_ = reputation_score({0, 4, now}, options_);
    domain_ = reputation_score({10, 0, now}, options_);
    const double session = std::clamp(ip_ + helo_, options_.min_score, options_.max_score);
    expected_.connect = std::clamp(ip_, options_.min_score, options_.max_score);
    expected_.helo = session - expected_.connect;
    expected_.mail =
        std::clamp(ip_ + helo_ + domain_, options_.min_score, options_.max_score) - session;
  }
  std::future<Verdict> start(FilterInstance& instance, Stage stage, const SessionContext& context) {
    return testing::start_stage(io_, instance, stage, context);
  }
  bool ready(std::future<Verdict>& verdict) { return testing::stage_ready(io_, verdict); }

  ReputationOptions options_;
  std::shared_ptr<GatedStore> gated_ = std::make_shared<GatedStore>(io_.get_executor(), store_);
  double ip_ = 0;
  double helo_ = 0;
  double domain_ = 0;
  Expected expected_;
};

TEST_F(ReputationBackgroundTest, StagesDoNotWaitAndTheFirstRcptScoresAsTheyDid) {
  ASSERT_GT(ip_ + helo_, options_.max_score);  // the session part is bounded
  ReputationFilter filter(options_);
  EXPECT_TRUE(filter.wants(Stage::rcpt));
  auto instance = filter.open(services_);
  const SessionContext context = session("192.0.2.7");
  int reads = 0;
  for (Stage stage : {Stage::connect, Stage::helo, Stage::mail}) {
    auto verdict = start(*instance, stage, context);
    ASSERT_TRUE(ready(verdict)) << stage_name(stage) << " waited for the store";
    const Verdict answered = verdict.get();
    EXPECT_EQ(answered.kind, Verdict::Kind::next);
    EXPECT_TRUE(answered.contributions.empty());
    if (stage == Stage::mail) ++reads;  // every key known so far, in one call
    EXPECT_EQ(gated_->calls(), reads) << stage_name(stage);
  }
  EXPECT_EQ(gated_->last_keys(),
            (std::vector<std::string>{"rep:{ip:192.0.2.7}", "rep:{net:192.0.2.0/24}",
                                      "rep:{helo:mx.example.org}", "rep:{domain:example.org}"}));
  auto rcpt = start(*instance, Stage::rcpt, context);
  EXPECT_FALSE(ready(rcpt));  // the first RCPT waits for the read
  gated_->open();
  while (!ready(rcpt)) {
  }
  const Verdict verdict = rcpt.get();
  EXPECT_EQ(verdict.kind, Verdict::Kind::next);
  EXPECT_EQ(verdict.filter, "reputation");
  ASSERT_EQ(verdict.contributions.size(), 3u);
  const Contribution& connect = verdict.contributions[0];
  EXPECT_EQ(connect.stage, "connect");
  EXPECT_EQ(connect.rule, "reputation");
  EXPECT_NEAR(connect.score, expected_.connect, 1e-6);
  EXPECT_EQ(connect.detail, fmt::format("ip 192.0.2.7 good 0.0 bad 10.0 score {:.2f}", ip_));
  EXPECT_EQ(connect.reply_text, "client [192.0.2.7] has a poor reputation");
  const Contribution& helo = verdict.contributions[1];
  EXPECT_EQ(helo.stage, "helo");
  EXPECT_NEAR(helo.score, expected_.helo, 1e-6);
  EXPECT_EQ(helo.detail, fmt::format("helo mx.example.org good 0.0 bad 4.0 score {:.2f}", helo_));
  const Contribution& mail = verdict.contributions[2];
  EXPECT_EQ(mail.stage, "mail");
  EXPECT_NEAR(mail.score, expected_.mail, 1e-6);
  EXPECT_LT(mail.score, 0);
  EXPECT_EQ(mail.reply_text, "");  // good evidence is not quoted to the client
  EXPECT_EQ(mail.detail, fmt::format("domain example.org good 10.0 bad 0.0 score {:.2f}", domain_));
  // Later RCPTs of the transaction add nothing.
  EXPECT_TRUE(run_until_done(io_, instance->on_stage(Stage::rcpt, context)).contributions.empty());

  // The next transaction reads only its sender domain and scores it afresh.
  instance->reset_transaction();
  run_until_done(io_, instance->on_stage(Stage::mail, context));
  EXPECT_EQ(gated_->last_keys(), (std::vector<std::string>{"rep:{domain:example.org}"}));
  const Verdict next = run_until_done(io_, instance->on_stage(Stage::rcpt, context));
  ASSERT_EQ(next.contributions.size(), 1u);
  EXPECT_EQ(next.contributions[0].stage, "mail");
  EXPECT_NEAR(next.contributions[0].score, expected_.mail, 1e-6);
  EXPECT_EQ(gated_->calls(), 2);
}

// ready(rcpt) tells the pipeline whether the first RCPT would wait for the read.
TEST_F(ReputationBackgroundTest, ReadyOnceTheReadIsIn) {
  ReputationFilter filter(options_);
  auto instance = filter.open(services_);
  const SessionContext context = session("192.0.2.7");
  run_until_done(io_, instance->on_stage(Stage::connect, context));
  EXPECT_FALSE(instance->ready(Stage::rcpt));  // the read is not even started
  for (Stage stage : {Stage::helo, Stage::mail}) run_until_done(io_, instance->on_stage(stage, context));
  io_.restart();
  io_.poll();
  EXPECT_EQ(gated_->waiting(), 1);
  EXPECT_FALSE(instance->ready(Stage::rcpt));  // in flight
  gated_->open();
  io_.restart();
  io_.poll();
  EXPECT_EQ(gated_->waiting(), 0);
  EXPECT_TRUE(instance->ready(Stage::rcpt));
  EXPECT_FALSE(instance->ready(Stage::close));  // the update always goes to the store
  EXPECT_EQ(run_until_done(io_, instance->on_stage(Stage::rcpt, context)).contributions.size(), 3u);
}

TEST_F(ReputationBackgroundTest, ASessionEndingBeforeRcptLeavesNothingBehind) {
  ReputationFilter filter(options_);
  {
    auto instance = filter.open(services_);
    const SessionContext context = session("192.0.2.7");
    for (Stage stage : {Stage::connect, Stage::helo, Stage::mail})
      run_until_done(io_, instance->on_stage(stage, context));
    io_.restart();
    io_.poll();
    EXPECT_EQ(gated_->waiting(), 1);
  }
  // The read answers after its session is gone (ASan checks nothing touches it).
  gated_->open();
  io_.restart();
  io_.poll();
  EXPECT_EQ(gated_->waiting(), 0);
}

// Through the pipeline: the deadline bounds the wait at RCPT (on_error allow: no score),
// the read is scored at the next RCPT, and a reset drops only the transaction's line.
TEST_F(ReputationBackgroundTest, DeadlineAtRcptThenTheNextRcptScores) {
  std::vector<std::unique_ptr<Filter>> filters;
  filters.push_back(std::make_unique<ReputationFilter>(options_));
  policy::Config config;
  config.scoring = {0, 0, 0};
  auto pipeline = Pipeline::assemble(std::move(filters), config, std::chrono::milliseconds(50));
  auto pipeline_session = pipeline->start(services_);
  SessionContext context = session("192.0.2.7");
  for (Stage stage : {Stage::connect, Stage::helo, Stage::mail}) {
    EXPECT_EQ(run_until_done(io_, pipeline_session->run(stage, context)).total_score, 0);
  }
  Decision timed_out = run_until_done(io_, pipeline_session->run(Stage::rcpt, context));
  EXPECT_EQ(timed_out.action, Decision::Action::proceed);
  ASSERT_EQ(timed_out.contributions.size(), 1u);
  EXPECT_EQ(timed_out.contributions[0].rule, "on_error");
  gated_->open();
  Decision scored = run_until_done(io_, pipeline_session->run(Stage::rcpt, context));
  EXPECT_NEAR(scored.total_score, expected_.connect + expected_.helo + expected_.mail, 1e-6);
  pipeline_session->reset_transaction();
  EXPECT_NEAR(pipeline_session->total_score(), options_.max_score, 1e-6);
}

// Advisory evidence: a failed read is counted (once for its one call) and scores nothing.
TEST_F(ReputationBackgroundTest, AStoreFailureIsCountedOnceAndScoresNothing) {
  auto& errors = metrics::Registry::global().counter(
      "mxgate_reputation_store_errors_total",
      "Reputation reads and updates the store could not answer (no score given)");
  const auto before = errors.value();
  gated_->fail();
  gated_->open();
  ReputationFilter filter(options_);
  auto instance = filter.open(services_);
  const SessionContext context = session("192.0.2.7");
  for (Stage stage : {Stage::connect, Stage::helo, Stage::mail})
    run_until_done(io_, instance->on_stage(stage, context));
  const Verdict verdict = run_until_done(io_, instance->on_stage(Stage::rcpt, context));
  EXPECT_EQ(verdict.kind, Verdict::Kind::next);
  EXPECT_TRUE(verdict.contributions.empty());
  EXPECT_EQ(errors.value(), before + 1);
}

TEST(Greylist, DefersRetriesAndSkipsGoodReputation) {
  boost::asio::io_context io;
  Services services;
  services.executor = io.get_executor();
  auto store = std::make_shared<MemoryStore>();
  services.store = store;
  GreylistOptions options;
  options.spec.delay = std::chrono::seconds(300);
  GreylistFilter filter(options);
  SessionContext context;
  context.client_ip = "198.51.100.20";
  context.sender = "a@example.org";
  context.recipient = "b@example.net";
  auto instance = filter.open(services);
  Verdict first = run_until_done(io, instance->on_stage(Stage::rcpt, context));
  EXPECT_EQ(first.kind, Verdict::Kind::tempfail);
  EXPECT_EQ(first.reply.code, 451);
  EXPECT_EQ(first.reply.enhanced, "4.7.1");
  EXPECT_EQ(first.reply.text(),
            "Greylisted: first message from this sender, please try again in 300 seconds");
  // The same triplet from another address of the net, 301 s later (as the store sees it).
  const GreylistKeys keys = greylist_keys(context, {});
  EXPECT_EQ(keys.net, "gl:{198.51.100.0/24}");
  EXPECT_EQ(
      store->greylist_now(keys.triplet, keys.net, options.spec, store_now() + 301'000'000).state,
      GreylistResult::State::retried);

  // A client with a good reputation is never delayed.
  for (int i = 0; i < 20; ++i) {
    store->reputation_update_now(reputation_key("ip", "192.0.2.50"), 1, 0,
                                 options.reputation.half_life, store_now());
  }
  SessionContext trusted = context;
  trusted.client_ip = "192.0.2.50";
  trusted.recipient = "c@example.net";
  auto trusted_instance = filter.open(services);
  EXPECT_EQ(run_until_done(io, trusted_instance->on_stage(Stage::rcpt, trusted)).kind,
            Verdict::Kind::next);
}

TEST(Greylist, SkipsClientsADnsAllowlistVouchedFor) {
  boost::asio::io_context io;
  Services services;
  services.executor = io.get_executor();
  services.store = std::make_shared<MemoryStore>();
  GreylistOptions options;
  options.spec.delay = std::chrono::seconds(300);
  GreylistFilter filter(options);
  SessionContext context;
  context.client_ip = "203.0.113.9";
  context.sender = "a@example.org";
  context.recipient = "b@example.net";
  // A DNSWL line (negative weight) on the score sheet: not greylisted.
  Contribution dnswl;
  dnswl.filter = "dnsbl";
  dnswl.rule = "list.dnswl.test";
  dnswl.score = -5;
  dnswl.stage = "connect";
  std::vector<Contribution> sheet{dnswl};
  context.score_sheet = &sheet;
  auto vouched = filter.open(services);
  EXPECT_EQ(run_until_done(io, vouched->on_stage(Stage::rcpt, context)).kind, Verdict::Kind::next);
  // The same client without it, or with the line only in dry run, is greylisted.
  sheet[0].dry_run = true;
  auto dry = filter.open(services);
  EXPECT_EQ(run_until_done(io, dry->on_stage(Stage::rcpt, context)).kind, Verdict::Kind::tempfail);
}

}  // namespace
}  // namespace mxgate::filters

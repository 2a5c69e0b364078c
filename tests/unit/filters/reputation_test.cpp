// Reputation scoring (bounded, negative for good) and its movement after good and bad
// sessions; greylisting's defer, retry and skip for a good reputation.
#include "filters/reputation.hpp"

#include <gtest/gtest.h>

#include "filters/greylist.hpp"
#include "filters/memory_store.hpp"
#include "tests/unit/filters/coroutine_support.hpp"

namespace mxgate::filters {
namespace {

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
  // One whole session: connect, helo, mail, close with the given outcome.
  double session_score(const ReputationFilter& filter, SessionContext context, int accepted,
                       int rejected) {
    auto instance = filter.open(services_);
    double score = 0;
    for (Stage stage : {Stage::connect, Stage::helo, Stage::mail}) {
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

TEST_F(ReputationFilterTest, TransactionScoreIsBoundedWithTheSession) {
  ReputationFilter filter({});
  for (int i = 0; i < 20; ++i) session_score(filter, session("203.0.113.1"), 0, 5);
  auto instance = filter.open(services_);
  SessionContext context = session("203.0.113.1");
  double total = 0;
  for (int transaction = 0; transaction < 3; ++transaction) {
    for (Stage stage : {Stage::connect, Stage::helo, Stage::mail}) {
      if (transaction > 0 && stage != Stage::mail) continue;
      Verdict verdict = run_until_done(io_, instance->on_stage(stage, context));
      for (const auto& line : verdict.contributions) total += line.score;
    }
    EXPECT_LE(total, 5.0 + 1e-9);
    // The pipeline drops mail-stage lines at reset_transaction; the instance follows.
    instance->reset_transaction();
    total = std::min(total, 5.0);
  }
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
  EXPECT_EQ(run_until_done(io, vouched->on_stage(Stage::rcpt, context)).kind,
            Verdict::Kind::next);
  // The same client without it, or with the line only in dry run, is greylisted.
  sheet[0].dry_run = true;
  auto dry = filter.open(services);
  EXPECT_EQ(run_until_done(io, dry->on_stage(Stage::rcpt, context)).kind,
            Verdict::Kind::tempfail);
}

}  // namespace
}  // namespace mxgate::filters

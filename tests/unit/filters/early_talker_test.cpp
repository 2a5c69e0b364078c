// The pregreet verdict: an early talker is dropped at once or scored, a polite client is
// not touched, and the verdict counts once per session.
#include "filters/early_talker.hpp"

#include <gtest/gtest.h>

#include "coroutine_support.hpp"

namespace mxgate::filters {
namespace {

using Action = Decision::Action;

EarlyTalkerOptions options(policy::RuleAction action, double score) {
  EarlyTalkerOptions options;
  options.greet_pause = std::chrono::seconds(2);
  options.action = action;
  options.score = score;
  return options;
}

class EarlyTalkerTest : public ::testing::Test {
 protected:
  EarlyTalkerTest() {
    config.hostname = "mx.example.org";
    services.executor = io.get_executor();
    context.client_ip = "192.0.2.7";
  }
  void start(EarlyTalkerOptions options) {
    options.hostname = config.hostname;
    std::vector<std::unique_ptr<Filter>> filters;
    filters.push_back(std::make_unique<EarlyTalkerFilter>(options));
    pipeline = Pipeline::assemble(std::move(filters), config);
    session = pipeline->start(services);
  }
  Decision run(Stage stage) { return testing::run_until_done(io, session->run(stage, context)); }

  boost::asio::io_context io;
  policy::Config config;
  Services services;
  SessionContext context;
  std::shared_ptr<const Pipeline> pipeline;
  std::unique_ptr<PipelineSession> session;
};

TEST_F(EarlyTalkerTest, DropIsImmediate) {
  start(options(policy::RuleAction::drop, 0));
  context.early_talker = true;
  Decision decision = run(Stage::connect);
  EXPECT_EQ(decision.action, Action::drop);
  EXPECT_EQ(decision.reply.render(),
            "421 4.7.0 mx.example.org Error: SMTP protocol synchronization: you talked before "
            "the greeting\r\n");
  EXPECT_EQ(decision.filter, "early_talker");
  EXPECT_EQ(decision.rule, "pregreet");
}

TEST_F(EarlyTalkerTest, ScoreWhenFlagArrivesByHelo) {
  start(options(policy::RuleAction::score, 3));
  EXPECT_EQ(run(Stage::connect).total_score, 0);
  context.early_talker = true;  // the session noticed during the greet pause
  Decision decision = run(Stage::helo);
  EXPECT_EQ(decision.action, Action::proceed);
  EXPECT_EQ(decision.total_score, 3);
  ASSERT_EQ(decision.contributions.size(), 1u);
  EXPECT_EQ(decision.contributions[0].rule, "pregreet");
  EXPECT_EQ(run(Stage::helo).total_score, 3) << "counted once";
}

TEST_F(EarlyTalkerTest, PoliteClientUntouched) {
  start(options(policy::RuleAction::drop, 0));
  EXPECT_EQ(run(Stage::connect).action, Action::proceed);
  EXPECT_EQ(run(Stage::helo).action, Action::proceed);
  EXPECT_TRUE(session->contributions().empty());
}

TEST_F(EarlyTalkerTest, LogActionIsADryRun) {
  start(options(policy::RuleAction::log, 20));
  context.early_talker = true;
  run(Stage::connect);
  Decision decision = run(Stage::rcpt);
  EXPECT_EQ(decision.action, Action::proceed);
  EXPECT_TRUE(decision.dry_run);
  EXPECT_EQ(decision.would_action, Action::reject);
}

}  // namespace
}  // namespace mxgate::filters

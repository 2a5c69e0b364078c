// The pipeline's promises: scores add up, thresholds bite at >=, connection-level
// verdicts wait for RCPT unless they drop, accept stops scoring, dry run changes nothing
// but the log, and a slow or failing filter never stalls a session.
#include "filters/pipeline.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>

#include "coroutine_support.hpp"

namespace mxgate::filters {
namespace {

using testing::run_until_done;
using testing::ScriptedFilter;
using Action = Decision::Action;

Verdict score(double value, std::string rule = "r") {
  return Verdict::add(value, "", std::move(rule), "detail");
}

Verdict decisive(Verdict::Kind kind, std::string rule, smtp::Reply reply = {}) {
  Verdict verdict;
  verdict.kind = kind;
  verdict.rule = std::move(rule);
  verdict.reply = std::move(reply);
  return verdict;
}

class PipelineTest : public ::testing::Test {
 protected:
  PipelineTest() {
    config.hostname = "mx.example.org";
    config.scoring = {4, 6, 10};
    services.executor = io.get_executor();
    context.session_id = "s1";
    context.client_ip = "192.0.2.1";
  }

  // Builds the pipeline and a session over it; `filters` keep their order.
  PipelineSession& start(std::vector<std::unique_ptr<Filter>> filters,
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    pipeline = Pipeline::assemble(std::move(filters), config, timeout);
    session = pipeline->start(services);
    return *session;
  }

  Decision run(Stage stage) { return run_until_done(io, session->run(stage, context)); }

  boost::asio::io_context io;
  policy::Config config;
  Services services;
  SessionContext context;
  std::shared_ptr<const Pipeline> pipeline;
  std::unique_ptr<PipelineSession> session;
};

std::vector<std::unique_ptr<Filter>> filters_of(std::unique_ptr<Filter> first,
                                                std::unique_ptr<Filter> second = nullptr) {
  std::vector<std::unique_ptr<Filter>> filters;
  filters.push_back(std::move(first));
  if (second) filters.push_back(std::move(second));
  return filters;
}

TEST_F(PipelineTest, ScoresAddUpAcrossFiltersAndStages) {
  start(filters_of(
      std::make_unique<ScriptedFilter>(
          "a", std::map<Stage, Verdict>{{Stage::connect, score(1.5)}, {Stage::rcpt, score(0)}}),
      std::make_unique<ScriptedFilter>("b", std::map<Stage, Verdict>{{Stage::helo, score(2)}})));
  EXPECT_EQ(run(Stage::connect).total_score, 1.5);
  Decision decision = run(Stage::helo);
  EXPECT_EQ(decision.total_score, 3.5);
  ASSERT_EQ(decision.contributions.size(), 2u);
  EXPECT_EQ(decision.contributions[0].filter, "a");
  EXPECT_EQ(decision.contributions[0].stage, "connect");
  EXPECT_EQ(decision.contributions[1].filter, "b");
  EXPECT_EQ(decision.contributions[1].stage, "helo");
  EXPECT_EQ(run(Stage::rcpt).action, Action::proceed);  // 3.5 < tempfail 6
}

// Thresholds are ">=": exactly the threshold triggers, a hair below does not.
TEST_F(PipelineTest, ThresholdEdges) {
  struct Case {
    double total;
    Action expected;
  };
  for (const Case& c :
       {Case{5.99, Action::proceed}, Case{6, Action::tempfail}, Case{9.99, Action::tempfail},
        Case{10, Action::reject}, Case{-3, Action::proceed}}) {
    start(filters_of(std::make_unique<ScriptedFilter>(
        "a", std::map<Stage, Verdict>{{Stage::connect, score(c.total)}})));
    run(Stage::connect);
    Decision decision = run(Stage::rcpt);
    EXPECT_EQ(decision.action, c.expected) << "total " << c.total;
    if (c.expected == Action::reject) {
      EXPECT_EQ(decision.reply.code, 550);
      EXPECT_EQ(decision.reply.enhanced, "5.7.1");
      EXPECT_EQ(decision.filter, "scoring");
    }
    if (c.expected == Action::tempfail) {
      EXPECT_EQ(decision.reply.code, 450);
    }
  }
}

TEST_F(PipelineTest, ThresholdReplyNamesTheHeaviestEvidence) {
  Verdict verdict;
  verdict.contributions.push_back({"dnsbl", "small", 3, "small.example 127.0.0.2", "connect", false,
                                   "client [192.0.2.1] blocked using small.example"});
  verdict.contributions.push_back({"dnsbl", "big", 8, "big.example 127.0.0.2", "connect", false,
                                   "client [192.0.2.1] blocked using big.example"});
  start(filters_of(std::make_unique<ScriptedFilter>(
      "dnsbl", std::map<Stage, Verdict>{{Stage::connect, verdict}})));
  run(Stage::connect);
  Decision decision = run(Stage::rcpt);
  EXPECT_EQ(decision.total_score, 11);
  EXPECT_EQ(decision.action, Action::reject);
  EXPECT_EQ(decision.reply.render(),
            "550 5.7.1 Service unavailable; client [192.0.2.1] blocked using big.example\r\n");
}

// Postfix smtpd_delay_reject: a verdict at connect/helo/mail waits for RCPT, so the log
// has the sender and recipients; a connect-level one holds for every RCPT.
TEST_F(PipelineTest, ConnectionVerdictIsHeldUntilRcpt) {
  start(filters_of(std::make_unique<ScriptedFilter>(
      "deny",
      std::map<Stage, Verdict>{{Stage::connect, decisive(Verdict::Kind::reject, "listed",
                                                         smtp::Reply(554, "5.7.1", "go away"))}})));
  Decision at_connect = run(Stage::connect);
  EXPECT_EQ(at_connect.action, Action::proceed);
  EXPECT_TRUE(at_connect.held);
  EXPECT_EQ(run(Stage::helo).action, Action::proceed);
  EXPECT_EQ(run(Stage::mail).action, Action::proceed);
  Decision first = run(Stage::rcpt);
  EXPECT_EQ(first.action, Action::reject);
  EXPECT_EQ(first.filter, "deny");
  EXPECT_EQ(first.rule, "listed");
  EXPECT_EQ(first.reply.render(), "554 5.7.1 go away\r\n");
  EXPECT_EQ(run(Stage::rcpt).action, Action::reject);
  session->reset_transaction();
  EXPECT_EQ(run(Stage::rcpt).action, Action::reject) << "a connect verdict outlives RSET";
}

// A DNS list on the client IP is judged at the first RCPT, once; its reject must hold
// for every later RCPT of the session, and a DNSWL accept for the whole session.
TEST_F(PipelineTest, ConnectionEvidenceJudgedAtRcptHoldsForLaterRcpts) {
  Verdict listed = decisive(Verdict::Kind::reject, "bl", smtp::Reply(554, "5.7.1", "listed"));
  listed.origin = Stage::connect;
  auto once =
      std::make_unique<ScriptedFilter>("dnsbl", std::map<Stage, Verdict>{{Stage::rcpt, listed}});
  start(filters_of(std::move(once)));
  EXPECT_EQ(run(Stage::rcpt).action, Action::reject);
  session->reset_transaction();
  // The scripted filter answers the same again; what matters is that a filter which
  // reports once (dnsbl) would still see the client rejected: check with a fresh one.
  start(filters_of(std::make_unique<ScriptedFilter>(
      "dnsbl", std::map<Stage, Verdict>{{Stage::rcpt, listed}, {Stage::data, score(0)}})));
  EXPECT_EQ(run(Stage::rcpt).action, Action::reject);
  EXPECT_EQ(run(Stage::data).action, Action::reject) << "held, like a connect verdict";

  Verdict allowlisted = decisive(Verdict::Kind::accept, "wl");
  allowlisted.origin = Stage::connect;
  auto later =
      std::make_unique<ScriptedFilter>("later", std::map<Stage, Verdict>{{Stage::rcpt, score(50)}});
  auto later_state = later->state();
  start(filters_of(std::make_unique<ScriptedFilter>(
                       "dnsbl", std::map<Stage, Verdict>{{Stage::rcpt, allowlisted}}),
                   std::move(later)));
  EXPECT_EQ(run(Stage::rcpt).action, Action::proceed);
  EXPECT_EQ(run(Stage::rcpt).action, Action::proceed);
  EXPECT_EQ(later_state->calls, 0) << "accepted for the session, not one recipient";
}

TEST_F(PipelineTest, MailStageVerdictEndsWithTheTransaction) {
  start(filters_of(std::make_unique<ScriptedFilter>(
      "sender", std::map<Stage, Verdict>{{Stage::mail, decisive(Verdict::Kind::tempfail, "t")},
                                         {Stage::rcpt, score(0)}})));
  EXPECT_EQ(run(Stage::mail).action, Action::proceed);
  Decision decision = run(Stage::rcpt);
  EXPECT_EQ(decision.action, Action::tempfail);
  EXPECT_EQ(decision.reply.code, 451);  // the pipeline's default tempfail reply
  session->reset_transaction();
  EXPECT_EQ(run(Stage::rcpt).action, Action::proceed);
}

TEST_F(PipelineTest, ResetTransactionDropsPerMessageScores) {
  start(filters_of(std::make_unique<ScriptedFilter>(
      "a", std::map<Stage, Verdict>{{Stage::connect, score(1)}, {Stage::mail, score(2)}})));
  run(Stage::connect);
  EXPECT_EQ(run(Stage::mail).total_score, 3);
  session->reset_transaction();
  EXPECT_EQ(session->total_score(), 1);
  EXPECT_EQ(session->contributions().size(), 1u);
}

TEST_F(PipelineTest, DropIsImmediateAndStopsTheChain) {
  auto second = std::make_unique<ScriptedFilter>(
      "second", std::map<Stage, Verdict>{{Stage::connect, score(1)}});
  auto second_state = second->state();
  start(filters_of(
      std::make_unique<ScriptedFilter>(
          "pregreet",
          std::map<Stage, Verdict>{{Stage::connect, decisive(Verdict::Kind::drop, "early")}}),
      std::move(second)));
  Decision decision = run(Stage::connect);
  EXPECT_EQ(decision.action, Action::drop);
  EXPECT_EQ(decision.reply.code, 421);
  EXPECT_EQ(decision.rule, "early");
  EXPECT_EQ(second_state->calls, 0);
}

TEST_F(PipelineTest, AcceptStopsScoringForTheSession) {
  auto later = std::make_unique<ScriptedFilter>(
      "later", std::map<Stage, Verdict>{{Stage::connect, score(50)}, {Stage::rcpt, score(50)}});
  auto later_state = later->state();
  start(filters_of(
      std::make_unique<ScriptedFilter>(
          "allow",
          std::map<Stage, Verdict>{{Stage::connect, decisive(Verdict::Kind::accept, "trusted")}}),
      std::move(later)));
  run(Stage::connect);
  EXPECT_EQ(run(Stage::rcpt).action, Action::proceed);
  EXPECT_EQ(later_state->calls, 0);
}

TEST_F(PipelineTest, RecipientAcceptCoversOnlyThatRecipient) {
  auto allow = std::make_unique<ScriptedFilter>(
      "allow",
      std::map<Stage, Verdict>{{Stage::rcpt, decisive(Verdict::Kind::accept, "postmaster")}});
  start(filters_of(std::make_unique<ScriptedFilter>(
                       "deny", std::map<Stage, Verdict>{{Stage::connect, score(12)}}),
                   std::move(allow)));
  run(Stage::connect);
  EXPECT_EQ(run(Stage::rcpt).action, Action::proceed);  // postmaster@ always gets through
  session.reset();
  start(filters_of(std::make_unique<ScriptedFilter>(
      "deny", std::map<Stage, Verdict>{{Stage::connect, score(12)}, {Stage::rcpt, score(0)}})));
  run(Stage::connect);
  EXPECT_EQ(run(Stage::rcpt).action, Action::reject);
}

TEST_F(PipelineTest, GlobalDryRunComputesButProceeds) {
  config.dry_run = true;
  start(filters_of(std::make_unique<ScriptedFilter>(
      "deny",
      std::map<Stage, Verdict>{{Stage::connect, decisive(Verdict::Kind::reject, "listed",
                                                         smtp::Reply(554, "5.7.1", "go away"))}})));
  run(Stage::connect);
  Decision decision = run(Stage::rcpt);
  EXPECT_EQ(decision.action, Action::proceed);
  EXPECT_TRUE(decision.dry_run);
  EXPECT_EQ(decision.would_action, Action::reject);
  EXPECT_EQ(decision.would_reply.render(), "554 5.7.1 go away\r\n");
  EXPECT_EQ(decision.filter, "deny");
  EXPECT_EQ(decision.rule, "listed");
}

TEST_F(PipelineTest, GlobalDryRunDoesNotDrop) {
  config.dry_run = true;
  start(filters_of(std::make_unique<ScriptedFilter>(
      "pregreet",
      std::map<Stage, Verdict>{{Stage::connect, decisive(Verdict::Kind::drop, "early")}})));
  Decision decision = run(Stage::connect);
  EXPECT_EQ(decision.action, Action::proceed);
  EXPECT_TRUE(decision.dry_run);
  EXPECT_EQ(decision.would_action, Action::drop);
}

// Per rule `action: log`: its score shows on the sheet, marked, but is not enforced.
TEST_F(PipelineTest, LogRuleScoresOnlyTheWouldBeDecision) {
  Verdict logged = score(12, "new-rule");
  logged.dry_run = true;
  start(filters_of(std::make_unique<ScriptedFilter>(
      "content", std::map<Stage, Verdict>{{Stage::connect, logged}, {Stage::rcpt, score(0)}})));
  run(Stage::connect);
  Decision decision = run(Stage::rcpt);
  EXPECT_EQ(decision.action, Action::proceed);
  EXPECT_EQ(decision.total_score, 0);
  EXPECT_TRUE(decision.dry_run);
  EXPECT_EQ(decision.would_action, Action::reject);
  ASSERT_EQ(decision.contributions.size(), 1u);
  EXPECT_TRUE(decision.contributions[0].dry_run);
  EXPECT_EQ(decision.contributions[0].score, 12);
}

TEST_F(PipelineTest, SlowFilterMissesItsDeadlineAndIsAllowed) {
  auto slow = std::make_unique<ScriptedFilter>(
      "slow", std::map<Stage, Verdict>{{Stage::connect, score(50)}}, std::chrono::seconds(30));
  start(filters_of(std::move(slow),
                   std::make_unique<ScriptedFilter>(
                       "fast", std::map<Stage, Verdict>{{Stage::connect, score(1)}})),
        std::chrono::milliseconds(100));
  const auto started = std::chrono::steady_clock::now();
  Decision decision = run(Stage::connect);
  const auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_LT(elapsed, std::chrono::seconds(1));
  EXPECT_GE(elapsed, std::chrono::milliseconds(100));
  EXPECT_EQ(decision.action, Action::proceed);
  EXPECT_EQ(decision.total_score, 1);  // the slow filter's 50 never landed
  ASSERT_EQ(decision.contributions.size(), 2u);
  EXPECT_EQ(decision.contributions[0].filter, "slow");
  EXPECT_EQ(decision.contributions[0].rule, "on_error");
  EXPECT_EQ(run(Stage::rcpt).action, Action::proceed);
}

// A filter that never waits (content, access, helo) is called without a deadline timer:
// a timer could not interrupt its computation anyway, and it cost a timer and a parallel
// group per call. Its verdict always lands; a throw still follows on_error.
// `ready`: a filter that may wait in general but says its background work is done
// (FilterInstance::ready) is called the same way, without the deadline.
class ComputingFilter final : public Filter {
 public:
  ComputingFilter(std::chrono::milliseconds work, bool throws, bool ready = false)
      : work_(work), throws_(throws), ready_(ready) {}
  const std::string& name() const override { return name_; }
  bool wants(Stage stage) const override { return stage == Stage::rcpt; }
  bool may_wait(Stage) const override { return ready_; }
  std::unique_ptr<FilterInstance> open(Services&) const override {
    return std::make_unique<Instance>(*this);
  }

 private:
  class Instance final : public FilterInstance {
   public:
    explicit Instance(const ComputingFilter& filter) : filter_(filter) {}
    bool ready(Stage) const override { return filter_.ready_; }
    boost::asio::awaitable<Verdict> on_stage(Stage, const SessionContext&) override {
      std::this_thread::sleep_for(filter_.work_);  // stands for a long synchronous scan
      if (filter_.throws_) throw std::runtime_error("computation failed");
      co_return score(2, "computed");
    }

   private:
    const ComputingFilter& filter_;
  };
  std::string name_ = "computing";
  std::chrono::milliseconds work_;
  bool throws_;
  bool ready_;
};

TEST_F(PipelineTest, NonWaitingFilterVerdictLandsPastTheDeadline) {
  start(filters_of(std::make_unique<ComputingFilter>(std::chrono::milliseconds(150), false)),
        std::chrono::milliseconds(50));
  Decision decision = run(Stage::rcpt);
  EXPECT_EQ(decision.total_score, 2);
  ASSERT_EQ(decision.contributions.size(), 1u);
  EXPECT_EQ(decision.contributions[0].rule, "computed");
}

TEST_F(PipelineTest, ReadyInstanceIsCalledWithoutTheDeadline) {
  start(filters_of(std::make_unique<ComputingFilter>(std::chrono::milliseconds(150), false, true)),
        std::chrono::milliseconds(50));
  Decision decision = run(Stage::rcpt);
  EXPECT_EQ(decision.total_score, 2);
  ASSERT_EQ(decision.contributions.size(), 1u);
  EXPECT_EQ(decision.contributions[0].rule, "computed");
}

TEST_F(PipelineTest, NonWaitingFilterThatThrowsFollowsOnError) {
  start(filters_of(std::make_unique<ComputingFilter>(std::chrono::milliseconds(0), true)),
        std::chrono::milliseconds(50));
  Decision decision = run(Stage::rcpt);
  EXPECT_EQ(decision.action, Action::proceed);
  ASSERT_EQ(decision.contributions.size(), 1u);
  EXPECT_EQ(decision.contributions[0].rule, "on_error");
  EXPECT_NE(decision.contributions[0].detail.find("computation failed"), std::string::npos);
}

TEST_F(PipelineTest, FailClosedFilterTempfailsAtRcpt) {
  start(filters_of(std::make_unique<ScriptedFilter>(
            "strict", std::map<Stage, Verdict>{{Stage::connect, score(0)}, {Stage::rcpt, score(0)}},
            std::chrono::milliseconds(0), true, policy::OnError::tempfail)),
        std::chrono::milliseconds(100));
  Decision at_connect = run(Stage::connect);
  EXPECT_EQ(at_connect.action, Action::proceed);
  EXPECT_TRUE(at_connect.held);
  Decision decision = run(Stage::rcpt);
  EXPECT_EQ(decision.action, Action::tempfail);
  EXPECT_EQ(decision.reply.code, 451);
  EXPECT_EQ(decision.rule, "on_error");
}

TEST_F(PipelineTest, ThrowingFilterIsAllowedByDefault) {
  start(filters_of(
      std::make_unique<ScriptedFilter>("broken", std::map<Stage, Verdict>{{Stage::rcpt, score(0)}},
                                       std::chrono::milliseconds(0), true)));
  Decision decision = run(Stage::rcpt);
  EXPECT_EQ(decision.action, Action::proceed);
  ASSERT_EQ(decision.contributions.size(), 1u);
  EXPECT_NE(decision.contributions[0].detail.find("scripted failure"), std::string::npos);
}

TEST_F(PipelineTest, ScoreHeaderAtData) {
  start(filters_of(std::make_unique<ScriptedFilter>(
      "a", std::map<Stage, Verdict>{{Stage::connect, score(4.5)}, {Stage::data, score(0)}})));
  run(Stage::connect);
  Decision decision = run(Stage::data);
  ASSERT_EQ(decision.add_headers.size(), 1u);
  EXPECT_EQ(decision.add_headers[0].first, "X-Mxgate-Score");
  EXPECT_EQ(decision.add_headers[0].second, "4.5 (tag)");
  config.smtp.score_header.clear();
  start(filters_of(
      std::make_unique<ScriptedFilter>("a", std::map<Stage, Verdict>{{Stage::data, score(1)}})));
  EXPECT_TRUE(run(Stage::data).add_headers.empty());
}

TEST_F(PipelineTest, DataStageVerdictIsImmediate) {
  start(filters_of(std::make_unique<ScriptedFilter>(
      "content",
      std::map<Stage, Verdict>{{Stage::data, decisive(Verdict::Kind::reject, "virus")}})));
  EXPECT_EQ(run(Stage::data).action, Action::reject);
}

TEST(PipelineBuild, FiltersInOrderFromConfig) {
  policy::Config config;
  config.limits.filter_timeout = std::chrono::milliseconds(1500);
  policy::AccessRule trusted;
  trusted.name = "trusted";
  trusted.kind = policy::AccessRule::Kind::client_ip;
  trusted.values = {"192.0.2.0/24"};
  trusted.action = policy::RuleAction::accept;
  config.access.push_back(trusted);
  config.early_talker.greet_pause = std::chrono::seconds(2);
  config.early_talker.action = policy::RuleAction::drop;
  config.helo_checks.invalid = 3;
  policy::DnsblRule list;
  list.zone = "bl.example";
  config.dnsbl.push_back(list);
  auto pipeline = Pipeline::build(config);
  std::vector<std::string> names;
  for (const auto& filter : pipeline->filters()) names.push_back(filter->name());
  EXPECT_EQ(names, (std::vector<std::string>{"access", "early_talker", "helo", "dnsbl"}));
  EXPECT_EQ(pipeline->filter_timeout(), std::chrono::milliseconds(1500));

  policy::Config quiet;  // nothing configured: no filter at all
  EXPECT_TRUE(Pipeline::build(quiet)->filters().empty());
}

}  // namespace
}  // namespace mxgate::filters

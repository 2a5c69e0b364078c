// Rate-limit keys and verdicts on the embedded store: exact counts, the reply the client
// sees, errors counted at close, concurrency slots released at close, on_error.
#include "filters/ratelimit.hpp"

#include <gtest/gtest.h>

#include "filters/memory_store.hpp"
#include "filters/redis_store.hpp"
#include "tests/unit/filters/coroutine_support.hpp"

namespace mxgate::filters {
namespace {

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

  boost::asio::io_context io_;
  std::shared_ptr<MemoryStore> store_ = std::make_shared<MemoryStore>();
  Services services_;
};

TEST_F(RateLimitFilterTest, NConnectionsThenTheExactReply) {
  auto limit = filter({rule("conn", RateRule::Count::connections, 0.001, 3)});
  for (int i = 0; i < 3; ++i) {
    auto instance = limit->open(services_);
    EXPECT_EQ(run(*instance, Stage::connect, session()).kind, Verdict::Kind::next) << i;
  }
  auto instance = limit->open(services_);
  Verdict refused = run(*instance, Stage::connect, session());
  EXPECT_EQ(refused.kind, Verdict::Kind::tempfail);
  EXPECT_EQ(refused.rule, "conn");
  EXPECT_EQ(refused.reply.code, 451);
  EXPECT_EQ(refused.reply.enhanced, "4.7.1");
  EXPECT_EQ(refused.reply.text(), "rate limit exceeded, try again later");
  // Another client has its own budget.
  auto other = limit->open(services_);
  EXPECT_EQ(run(*other, Stage::connect, session("192.0.2.8")).kind, Verdict::Kind::next);
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
  EXPECT_EQ(run(*first, Stage::connect, session()).kind, Verdict::Kind::next);
  SessionContext closing = session();
  closing.protocol_errors = 4;
  closing.recipients_rejected = 2;
  run(*first, Stage::close, closing);
  auto second = limit->open(services_);
  EXPECT_EQ(run(*second, Stage::connect, session()).kind, Verdict::Kind::tempfail);
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
  EXPECT_EQ(run(*first, Stage::connect, a).kind, Verdict::Kind::next);
  EXPECT_EQ(run(*second, Stage::connect, b).kind, Verdict::Kind::next);
  Verdict refused = run(*third, Stage::connect, c);
  EXPECT_EQ(refused.kind, Verdict::Kind::tempfail);
  EXPECT_EQ(refused.reply.code, 421);
  EXPECT_EQ(refused.reply.enhanced, "4.7.0");
  EXPECT_EQ(refused.reply.text(), "too many concurrent sessions, try again later");
  run(*first, Stage::close, a);
  auto fourth = limit->open(services_);
  EXPECT_EQ(run(*fourth, Stage::connect, c).kind, Verdict::Kind::next);
  // A session whose instance dies without close still gives its slot back.
  fourth.reset();
  io_.restart();
  io_.poll();
  auto fifth = limit->open(services_);
  SessionContext e = session();
  e.session_id = "E";
  EXPECT_EQ(run(*fifth, Stage::connect, e).kind, Verdict::Kind::next);
}

TEST_F(RateLimitFilterTest, ScoreActionAddsAScoreLine) {
  RateRule scoring = rule("soft", RateRule::Count::connections, 0.001, 1);
  scoring.action = policy::RuleAction::score;
  scoring.score = 2.5;
  auto limit = filter({scoring});
  auto first = limit->open(services_);
  run(*first, Stage::connect, session());
  auto second = limit->open(services_);
  Verdict verdict = run(*second, Stage::connect, session());
  EXPECT_EQ(verdict.kind, Verdict::Kind::next);
  ASSERT_EQ(verdict.contributions.size(), 1u);
  EXPECT_EQ(verdict.contributions[0].score, 2.5);
  EXPECT_EQ(verdict.contributions[0].rule, "soft");
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
  auto instance = lenient->open(services_);
  Verdict allowed = run(*instance, Stage::connect, session());
  EXPECT_EQ(allowed.kind, Verdict::Kind::next);
  ASSERT_EQ(allowed.contributions.size(), 1u);
  EXPECT_NE(allowed.contributions[0].detail.find("store failed"), std::string::npos);
  auto strict_instance = strict->open(services_);
  Verdict tempfail = run(*strict_instance, Stage::connect, session());
  EXPECT_EQ(tempfail.kind, Verdict::Kind::tempfail);
  EXPECT_EQ(tempfail.reply.code, 451);
  services_.store.reset();
  io_.restart();
  io_.poll();
}

}  // namespace
}  // namespace mxgate::filters

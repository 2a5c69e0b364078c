// DNS lists against a real rbldnsd (what list mirrors run) on a loopback port: listings,
// weights, DNSWL, error codes, RHSBL, IPv6, the cache, health probes and a dead resolver.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "child_process.hpp"
#include "coroutine_support.hpp"
#include "dns_blackhole.hpp"
#include "filters/dns_resolver.hpp"
#include "filters/dnsbl.hpp"
#include "filters/metrics.hpp"

namespace mxgate::filters {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using Action = Decision::Action;
using testing::free_udp_port;
using testing::run_until_done;
using testing::spawn_child;
using testing::stop_child;

const char* rbldnsd_path() {
  for (const char* path : {"/usr/sbin/rbldnsd", "/usr/bin/rbldnsd", "/usr/local/sbin/rbldnsd"})
    if (::access(path, X_OK) == 0) return path;
  return nullptr;
}

// rbldnsd in the foreground on 127.0.0.1:<ephemeral>, serving files written to a temp
// dir; stopped by PID in the destructor (also when an assertion failed).
class Rbldnsd {
 public:
  // zones: "name:type:file" as rbldnsd's command line wants them.
  Rbldnsd(const std::map<std::string, std::string>& files, const std::vector<std::string>& zones) {
    char pattern[] = "/tmp/mxgate-rbldnsd-XXXXXX";
    directory_ = ::mkdtemp(pattern);
    ::chmod(directory_.c_str(), 0755);  // rbldnsd drops to nobody: it must read the files
    for (const auto& [name, content] : files) {
      std::ofstream(directory_ + "/" + name) << content;
      ::chmod((directory_ + "/" + name).c_str(), 0644);
    }
    for (int attempt = 0; attempt < 5 && pid_ <= 0; ++attempt) start(zones);
  }
  ~Rbldnsd() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }
  bool running() const { return pid_ > 0; }
  std::uint16_t port() const { return port_; }
  void stop() {
    stop_child(pid_);
    pid_ = -1;
  }

 private:
  void start(const std::vector<std::string>& zones) {
    port_ = free_udp_port();
    const std::string log = directory_ + "/rbldnsd.log";
    std::vector<std::string> arguments{
        rbldnsd_path(), "-n",       "-b", "127.0.0.1/" + std::to_string(port_),
        "-r",           directory_, "-t", "300"};
    if (::geteuid() == 0) arguments.insert(arguments.end(), {"-u", "nobody"});
    arguments.insert(arguments.end(), zones.begin(), zones.end());
    const pid_t pid = spawn_child(std::move(arguments), log);
    if (pid <= 0) return;
    // Ready when it says "started"; gone when the port was taken meanwhile.
    for (int wait = 0; wait < 100; ++wait) {
      std::ifstream file(log);
      std::stringstream text;
      text << file.rdbuf();
      if (text.str().find("started") != std::string::npos) {
        pid_ = pid;
        return;
      }
      if (::waitpid(pid, nullptr, WNOHANG) == pid) return;
      std::this_thread::sleep_for(50ms);
    }
    stop_child(pid);
  }

  std::string directory_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

const std::map<std::string, std::string> kFiles{
    {"bl",
     ":127.0.0.2:Listed in bl.test, see http://bl.test/$\n"
     "127.0.0.2\n"
     "192.0.2.1\n"
     "192.0.2.3 :127.0.0.4:Policy listing for $\n"
     "192.0.2.5\n"
     "192.0.2.98 :10.0.0.1:Hijacked\n"
     "192.0.2.99 :127.255.255.254:Queried through a public resolver\n"},
    {"bl2", ":127.0.0.2:listed\n127.0.0.2\n192.0.2.3\n"},
    {"wl", ":127.0.10.2:allowlisted\n127.0.0.2 :127.0.10.2\n192.0.2.5\n"},
    {"all", "0-255\n"},        // answers for everything: RFC 5782 says it is broken
    {"empty", "192.0.2.1\n"},  // no 127.0.0.2 test point
    {"v6", "2001:db8:1:2\n"},
    {"dbl", ":127.0.1.2:spam domain\nspam.example\n*.spammer.example\ntest\n"}};

const std::vector<std::string> kZones{
    "key123.bl.test:ip4set:bl", "bl2.test:ip4set:bl2", "wl.test:ip4set:wl", "all.test:ip4set:all",
    "empty.test:ip4set:empty",  "v6.test:ip6tset:v6",  "dbl.test:dnset:dbl"};

policy::DnsblRule list(std::string zone, double weight,
                       policy::RuleAction action = policy::RuleAction::score,
                       std::string match = "127.0.0.0/8",
                       policy::DnsblRule::Kind kind = policy::DnsblRule::Kind::ip) {
  policy::DnsblRule rule;
  rule.zone = zone;
  rule.name = zone;
  rule.weight = weight;
  rule.action = action;
  rule.match = std::move(match);
  rule.kind = kind;
  return rule;
}

// The hidden-key list: queried as key123.bl.test, shown as bl.test.
policy::DnsblRule keyed_bl(double weight, policy::RuleAction action = policy::RuleAction::score) {
  policy::DnsblRule rule = list("key123.bl.test", weight, action);
  rule.reply_name = "bl.test";
  return rule;
}

SessionContext client(std::string ip, std::string helo = "mail.sender.example",
                      std::string sender = "someone@sender.example") {
  SessionContext context;
  context.session_id = "test";
  context.client_ip = std::move(ip);
  context.client_is_ipv6 = context.client_ip.find(':') != std::string::npos;
  context.helo = std::move(helo);
  context.sender = std::move(sender);
  context.sender_domain = context.sender.substr(context.sender.find('@') + 1);
  context.recipient = "user@example.org";
  return context;
}

class DnsblRbldnsdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (rbldnsd_path() != nullptr) server_ = new Rbldnsd(kFiles, kZones);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    if (rbldnsd_path() == nullptr) GTEST_SKIP() << "rbldnsd is not installed";
    ASSERT_TRUE(server_->running()) << "rbldnsd did not start";
    config.hostname = "mx.example.org";
    config.scoring = {4, 6, 10};
    use_server(server_->port());
  }

  void use_server(std::uint16_t port, std::chrono::milliseconds timeout = 2000ms) {
    config.dns.servers = {{"127.0.0.1", port}};
    config.dns.timeout = timeout;
    config.dns.retries = 1;
    services = make_services(io.get_executor(), config);
  }

  void rules(std::vector<policy::DnsblRule> lists, DnsblOptions options = {.probe = false}) {
    std::vector<std::unique_ptr<Filter>> filters;
    auto filter = std::make_unique<DnsblFilter>(lists, options);
    dnsbl = filter.get();
    filters.push_back(std::move(filter));
    pipeline = Pipeline::assemble(std::move(filters), config);
  }

  // connect, helo, mail, rcpt: the decision at RCPT (where held verdicts land).
  static asio::awaitable<Decision> dialogue(const Pipeline& pipeline, Services& services,
                                            SessionContext context) {
    auto session = pipeline.start(services);
    for (Stage stage : {Stage::connect, Stage::helo, Stage::mail}) {
      Decision early = co_await session->run(stage, context);
      if (early.action == Action::drop) co_return early;
    }
    Decision decision = co_await session->run(Stage::rcpt, context);
    co_return decision;
  }

  Decision at_rcpt(SessionContext context) {
    return run_until_done(io, dialogue(*pipeline, services, std::move(context)));
  }

  static Rbldnsd* server_;
  asio::io_context io;
  policy::Config config;
  Services services;
  std::shared_ptr<const Pipeline> pipeline;
  const DnsblFilter* dnsbl = nullptr;
};

Rbldnsd* DnsblRbldnsdTest::server_ = nullptr;

TEST_F(DnsblRbldnsdTest, ListedClientIsRejectedAtRcptNamingTheListNotItsKey) {
  rules({keyed_bl(1, policy::RuleAction::reject)});
  auto session = pipeline->start(services);
  SessionContext context = client("192.0.2.1");
  EXPECT_EQ(run_until_done(io, session->run(Stage::connect, context)).action, Action::proceed);
  Decision decision = run_until_done(io, session->run(Stage::rcpt, context));
  EXPECT_EQ(decision.action, Action::reject);
  EXPECT_EQ(decision.reply.render(),
            "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using bl.test\r\n");
  EXPECT_EQ(decision.filter, "dnsbl");
  EXPECT_EQ(decision.rule, "bl.test");
  ASSERT_EQ(decision.contributions.size(), 1u);
  EXPECT_EQ(decision.contributions[0].detail, "bl.test 127.0.0.2");
  EXPECT_EQ(decision.contributions[0].stage, "connect");
  EXPECT_EQ(decision.contributions[0].rule.find("key123"), std::string::npos);
  // The list answered once; the next RCPT, even after RSET, is refused all the same.
  session->reset_transaction();
  EXPECT_EQ(run_until_done(io, session->run(Stage::rcpt, context)).action, Action::reject);
}

// ready(rcpt) tells the pipeline whether the first RCPT would wait for an answer.
TEST_F(DnsblRbldnsdTest, ReadyOnceEveryAnswerIsIn) {
  rules({keyed_bl(1, policy::RuleAction::reject)});
  auto instance = dnsbl->open(services);
  SessionContext context = client("192.0.2.1");
  run_until_done(io, instance->on_stage(Stage::connect, context));
  EXPECT_FALSE(instance->ready(Stage::rcpt));  // asked, not answered
  auto deadline = std::chrono::steady_clock::now() + 2s;
  while (!instance->ready(Stage::rcpt) && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(5ms);
  }
  EXPECT_TRUE(instance->ready(Stage::rcpt));
  EXPECT_FALSE(instance->ready(Stage::connect));
  EXPECT_EQ(run_until_done(io, instance->on_stage(Stage::rcpt, context)).kind, Verdict::Kind::reject);
}

TEST_F(DnsblRbldnsdTest, UnlistedClientProceeds) {
  rules({keyed_bl(8, policy::RuleAction::reject), list("bl2.test", 8)});
  Decision decision = at_rcpt(client("192.0.2.200"));
  EXPECT_EQ(decision.action, Action::proceed);
  EXPECT_TRUE(decision.contributions.empty());
  EXPECT_EQ(decision.total_score, 0);
}

TEST_F(DnsblRbldnsdTest, WeightsAddUpAcrossListsAndCrossThresholds) {
  rules({keyed_bl(4), list("bl2.test", 7)});
  Decision both = at_rcpt(client("192.0.2.3"));  // on bl (127.0.0.4) and bl2
  EXPECT_EQ(both.total_score, 11);
  EXPECT_EQ(both.action, Action::reject);
  EXPECT_EQ(both.filter, "scoring");
  EXPECT_EQ(both.reply.render(),
            "550 5.7.1 Service unavailable; client [192.0.2.3] blocked using bl2.test\r\n");
  Decision one = at_rcpt(client("192.0.2.1"));  // on bl only: 4 is tag, not tempfail
  EXPECT_EQ(one.total_score, 4);
  EXPECT_EQ(one.action, Action::proceed);
}

TEST_F(DnsblRbldnsdTest, ReplyFilterSelectsCodes) {
  rules({[] {
    auto rule = keyed_bl(8);
    rule.match = "127.0.0.2";  // 192.0.2.3 answers 127.0.0.4: not this rule's business
    return rule;
  }()});
  EXPECT_EQ(at_rcpt(client("192.0.2.3")).total_score, 0);
  EXPECT_EQ(at_rcpt(client("192.0.2.1")).total_score, 8);
}

TEST_F(DnsblRbldnsdTest, DnswlNegativeWeightOverrides) {
  auto allowlist = list("wl.test", -5, policy::RuleAction::score, "127.0.[0..255].[1..3]");
  rules({keyed_bl(8), allowlist});
  Decision decision = at_rcpt(client("192.0.2.5"));
  EXPECT_EQ(decision.total_score, 3);
  EXPECT_EQ(decision.action, Action::proceed);
  rules({keyed_bl(8)});
  EXPECT_EQ(at_rcpt(client("192.0.2.5")).action, Action::tempfail);  // 8 >= 6 without it
}

TEST_F(DnsblRbldnsdTest, ErrorCodesAndForeignAnswersAreNotListings) {
  rules({keyed_bl(20, policy::RuleAction::reject)});
  auto& registry = metrics::Registry::global();
  auto& error_codes = registry.counter("mxgate_dnsbl_errors_total", "",
                                       {{"list", "bl.test"}, {"reason", "error_code"}});
  auto& outside = registry.counter("mxgate_dnsbl_errors_total", "",
                                   {{"list", "bl.test"}, {"reason", "outside_127"}});
  const auto error_codes_before = error_codes.value();
  const auto outside_before = outside.value();

  Decision spamhaus_error = at_rcpt(client("192.0.2.99"));  // 127.255.255.254
  EXPECT_EQ(spamhaus_error.action, Action::proceed);
  EXPECT_EQ(spamhaus_error.total_score, 0);
  ASSERT_EQ(spamhaus_error.contributions.size(), 1u);
  EXPECT_NE(spamhaus_error.contributions[0].detail.find("127.255.255.254"), std::string::npos);
  EXPECT_EQ(error_codes.value(), error_codes_before + 1);

  Decision hijacked = at_rcpt(client("192.0.2.98"));  // 10.0.0.1
  EXPECT_EQ(hijacked.action, Action::proceed);
  EXPECT_EQ(outside.value(), outside_before + 1);
}

TEST_F(DnsblRbldnsdTest, TxtReasonInTheReplyWhenAsked) {
  auto rule = keyed_bl(1, policy::RuleAction::reject);
  rule.fetch_txt = true;
  rules({rule});
  Decision decision = at_rcpt(client("192.0.2.1"));
  EXPECT_EQ(decision.reply.render(),
            "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using bl.test; "
            "Listed in bl.test, see http://bl.test/192.0.2.1\r\n");
}

TEST_F(DnsblRbldnsdTest, Ipv6ClientOnIp6tset) {
  rules({list("v6.test", 7)});
  EXPECT_EQ(at_rcpt(client("2001:db8:1:2::25")).total_score, 7);
  EXPECT_EQ(at_rcpt(client("2001:db8:1:3::25")).total_score, 0);
}

TEST_F(DnsblRbldnsdTest, RhsblOnSenderDomainAndHelo) {
  auto sender_list = list("dbl.test", 3, policy::RuleAction::reject, "127.0.1.2",
                          policy::DnsblRule::Kind::sender_domain);
  sender_list.name = "dbl-sender";
  auto helo_list =
      list("dbl.test", 2, policy::RuleAction::score, "127.0.1.2", policy::DnsblRule::Kind::helo);
  helo_list.name = "dbl-helo";
  rules({helo_list, sender_list});
  Decision decision = at_rcpt(client("192.0.2.200", "host.spammer.example", "x@spam.example"));
  EXPECT_EQ(decision.action, Action::reject);
  EXPECT_EQ(decision.rule, "dbl-sender");
  EXPECT_EQ(decision.reply.render(),
            "554 5.7.1 Service unavailable; Sender address [x@spam.example] blocked using "
            "dbl.test\r\n");
  ASSERT_EQ(decision.contributions.size(), 2u);
  EXPECT_EQ(decision.contributions[0].rule, "dbl-helo");
  EXPECT_EQ(decision.contributions[0].stage, "helo");
  EXPECT_EQ(decision.contributions[1].stage, "mail");
  Decision clean = at_rcpt(client("192.0.2.200", "spammer.example", "x@sub.spam.example"));
  EXPECT_EQ(clean.action, Action::proceed);  // exact entry and "*." wildcard: neither matches
  EXPECT_TRUE(clean.contributions.empty());
  // A bare IP or a literal HELO is no domain: no RHSBL query.
  EXPECT_EQ(at_rcpt(client("192.0.2.200", "[192.0.2.200]", "x@ok.example")).action,
            Action::proceed);
}

TEST_F(DnsblRbldnsdTest, HealthProbesSuspendBrokenLists) {
  std::vector<policy::DnsblRule> lists{keyed_bl(5),
                                       list("all.test", 20, policy::RuleAction::reject),
                                       list("empty.test", 20, policy::RuleAction::reject),
                                       list("dbl.test", 1, policy::RuleAction::score, "127.0.0.0/8",
                                            policy::DnsblRule::Kind::sender_domain)};
  rules(lists);
  run_until_done(io, dnsbl->probe_all(services));
  EXPECT_FALSE(dnsbl->suspended("bl.test"));
  EXPECT_TRUE(dnsbl->suspended("all.test")) << "lists 127.0.0.1: answers for everything";
  EXPECT_TRUE(dnsbl->suspended("empty.test")) << "does not list 127.0.0.2";
  EXPECT_FALSE(dnsbl->suspended("dbl.test"));
  EXPECT_EQ(metrics::Registry::global()
                .gauge("mxgate_dnsbl_list_suspended", "", {{"list", "all.test"}})
                .value(),
            1);
  // The broken list would reject everyone; suspended, it is not even asked.
  Decision decision = at_rcpt(client("192.0.2.1"));
  EXPECT_EQ(decision.action, Action::proceed);
  EXPECT_EQ(decision.total_score, 5);
}

TEST_F(DnsblRbldnsdTest, CacheHitDoesNotQueryAgain) {
  Rbldnsd own(kFiles, kZones);
  ASSERT_TRUE(own.running());
  use_server(own.port(), 500ms);
  rules({keyed_bl(8)});
  const auto before = services.resolver->queries_sent();
  EXPECT_EQ(at_rcpt(client("192.0.2.1")).total_score, 8);
  EXPECT_EQ(at_rcpt(client("192.0.2.200")).total_score, 0);
  EXPECT_EQ(services.resolver->queries_sent(), before + 2);
  own.stop();  // from now on, only the cache can answer
  EXPECT_EQ(at_rcpt(client("192.0.2.1")).total_score, 8);
  Decision negative = at_rcpt(client("192.0.2.200"));
  EXPECT_EQ(negative.total_score, 0);
  EXPECT_TRUE(negative.contributions.empty()) << "a cached NXDOMAIN, not a lookup failure";
  EXPECT_EQ(services.resolver->queries_sent(), before + 2);
}

using testing::Blackhole;

TEST_F(DnsblRbldnsdTest, DeadResolverTimeoutIsHonoured) {
  Blackhole blackhole;
  use_server(blackhole.port, 400ms);
  rules({keyed_bl(20, policy::RuleAction::reject)});
  auto started = std::chrono::steady_clock::now();
  Decision allowed = at_rcpt(client("192.0.2.1"));
  auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(allowed.action, Action::proceed);  // on_error: allow
  EXPECT_GE(elapsed, 350ms);
  EXPECT_LT(elapsed, 800ms);
  ASSERT_EQ(allowed.contributions.size(), 1u);
  EXPECT_NE(allowed.contributions[0].detail.find("lookup failed"), std::string::npos);

  auto strict = keyed_bl(20, policy::RuleAction::reject);
  strict.on_error = policy::OnError::tempfail;
  rules({strict});
  Decision tempfailed = at_rcpt(client("192.0.2.2"));
  EXPECT_EQ(tempfailed.action, Action::tempfail);  // when in doubt, 4xx
  EXPECT_EQ(tempfailed.reply.code, 451);
}

TEST_F(DnsblRbldnsdTest, ClosedPortFailsFast) {
  use_server(free_udp_port(), 2000ms);
  rules({keyed_bl(20, policy::RuleAction::reject)});
  auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(at_rcpt(client("192.0.2.1")).action, Action::proceed);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2500ms);
}

// Sessions share one resolver; a dead list costs each of them one timeout, in parallel.
TEST_F(DnsblRbldnsdTest, DeadResolverDoesNotSerialiseSessions) {
  Blackhole blackhole;
  use_server(blackhole.port, 300ms);
  rules({keyed_bl(20, policy::RuleAction::reject)});
  auto many = [&]() -> asio::awaitable<int> {
    using namespace asio::experimental::awaitable_operators;
    auto executor = co_await asio::this_coro::executor;
    std::vector<std::future<Decision>> results;
    for (int i = 0; i < 20; ++i)
      results.push_back(asio::co_spawn(
          executor, dialogue(*pipeline, services, client("192.0.2." + std::to_string(100 + i))),
          asio::use_future));
    asio::steady_timer timer(executor);
    int done = 0;
    for (int round = 0; round < 200 && done < 20; ++round) {
      timer.expires_after(10ms);
      co_await timer.async_wait(asio::use_awaitable);
      done = 0;
      for (auto& result : results)
        if (result.wait_for(0s) == std::future_status::ready) ++done;
    }
    co_return done;
  };
  auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(run_until_done(io, many()), 20);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 900ms);
}

// The figures for bench/README.md: what 4 lists on a loopback rbldnsd add to a session
// (cold: every lookup goes to rbldnsd) and how fast sessions run on a warm cache.
TEST_F(DnsblRbldnsdTest, LatencyWithFourLists) {
  rules({keyed_bl(1), list("bl2.test", 1), list("wl.test", -1),
         list("dbl.test", 1, policy::RuleAction::score, "127.0.0.0/8",
              policy::DnsblRule::Kind::sender_domain)});
  constexpr int kSessions = 300;
  std::vector<double> cold;
  for (int i = 0; i < kSessions; ++i) {
    const std::string ip = fmt::format("198.51.{}.{}", i / 250, i % 250 + 1);
    const auto started = std::chrono::steady_clock::now();
    at_rcpt(client(ip, "mail.sender.example", fmt::format("a@d{}.example", i)));
    cold.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
            .count());
  }
  std::sort(cold.begin(), cold.end());
  std::vector<double> warm;
  const auto warm_started = std::chrono::steady_clock::now();
  for (int i = 0; i < kSessions; ++i) {
    const std::string ip = fmt::format("198.51.{}.{}", i / 250, i % 250 + 1);
    const auto started = std::chrono::steady_clock::now();
    at_rcpt(client(ip, "mail.sender.example", fmt::format("a@d{}.example", i)));
    warm.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
            .count());
  }
  const double warm_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - warm_started).count();
  std::sort(warm.begin(), warm.end());
  const double p50 = cold[cold.size() / 2];
  const double p99 = cold[cold.size() * 99 / 100];
  std::printf(
      "4 lists, loopback rbldnsd: cold session p50 %.3f ms, p99 %.3f ms; warm p50 %.3f "
      "ms, p99 %.3f ms, %.0f sessions/s (connect..rcpt, one thread)\n",
      p50, p99, warm[warm.size() / 2], warm[warm.size() * 99 / 100], kSessions / warm_seconds);
  RecordProperty("cold_p50_ms", std::to_string(p50));
  RecordProperty("warm_sessions_per_second", std::to_string(kSessions / warm_seconds));
  EXPECT_LT(p50, 50.0);
}

}  // namespace
}  // namespace mxgate::filters

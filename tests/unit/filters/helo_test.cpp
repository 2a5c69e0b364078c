// HELO checks: which names fail which checks, and that each check counts once.
#include "filters/helo.hpp"

#include <gtest/gtest.h>

#include "coroutine_support.hpp"

namespace mxgate::filters {
namespace {

using Problems = std::vector<std::string>;

HeloCheckOptions options() {
  HeloCheckOptions options;
  options.hostname = "mx.example.org";
  options.our_names = {"mail.example.org"};
  options.our_addresses = {"192.0.2.25", "2001:db8::25"};
  options.missing = 1;
  options.bare_ip = 2;
  options.invalid = 3;
  options.not_fqdn = 0.5;
  options.our_hostname = 5;
  options.our_address = 5;
  return options;
}

TEST(HeloProblems, GoodNamesPass) {
  EXPECT_EQ(helo_problems("mail.sender.example", options()), Problems{});
  EXPECT_EQ(helo_problems("MAIL.Sender.Example.", options()), Problems{});
  EXPECT_EQ(helo_problems("[198.51.100.1]", options()), Problems{});
  EXPECT_EQ(helo_problems("[IPv6:2001:db8::1]", options()), Problems{});
  EXPECT_EQ(helo_problems("host_1.example", options()), Problems{});
}

TEST(HeloProblems, BareIpWithoutBrackets) {
  EXPECT_EQ(helo_problems("198.51.100.1", options()), Problems{"bare_ip"});
  EXPECT_EQ(helo_problems("2001:db8::1", options()), Problems{"bare_ip"});
}

TEST(HeloProblems, InvalidSyntax) {
  for (const char* bad :
       {"exa mple.org", "-bad.example", "bad-.example", "a..b", "[1.2.3]", "[IPv6:192.0.2.1]",
        "[2001:db8::1]", "1.2.3.999", "a@b.example", "[192.0.2.1"})
    EXPECT_EQ(helo_problems(bad, options()), Problems{"invalid"}) << bad;
}

TEST(HeloProblems, SingleLabel) {
  EXPECT_EQ(helo_problems("localhost", options()), Problems{"not_fqdn"});
}

TEST(HeloProblems, ClaimsToBeUs) {
  EXPECT_EQ(helo_problems("MX.example.org", options()), Problems{"our_hostname"});
  EXPECT_EQ(helo_problems("mail.example.org", options()), Problems{"our_hostname"});
  EXPECT_EQ(helo_problems("[192.0.2.25]", options()), Problems{"our_address"});
  EXPECT_EQ(helo_problems("192.0.2.25", options()), (Problems{"bare_ip", "our_address"}));
  EXPECT_EQ(helo_problems("[IPv6:2001:DB8:0::25]", options()), Problems{"our_address"});
}

TEST(HeloFilter, ScoresEachCheckOnceAndMissingAtMail) {
  boost::asio::io_context io;
  Services services;
  services.executor = io.get_executor();
  HeloFilter filter(options());
  auto instance = filter.open(services);
  SessionContext context;
  context.helo = "192.0.2.25";
  Verdict first = testing::run_until_done(io, instance->on_stage(Stage::helo, context));
  ASSERT_EQ(first.contributions.size(), 2u);
  EXPECT_EQ(first.contributions[0].rule, "bare_ip");
  EXPECT_EQ(first.contributions[0].score, 2);
  EXPECT_EQ(first.contributions[1].rule, "our_address");
  Verdict again = testing::run_until_done(io, instance->on_stage(Stage::helo, context));
  EXPECT_TRUE(again.contributions.empty());

  auto fresh = filter.open(services);
  SessionContext no_helo;
  Verdict missing = testing::run_until_done(io, fresh->on_stage(Stage::mail, no_helo));
  ASSERT_EQ(missing.contributions.size(), 1u);
  EXPECT_EQ(missing.contributions[0].rule, "missing");
  EXPECT_EQ(missing.contributions[0].stage, "helo");  // session-level: survives RSET
}

}  // namespace
}  // namespace mxgate::filters

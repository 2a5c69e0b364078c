// `mxgate logs`: the searches support runs (ref, IP/CIDR, sender, recipient, domain,
// filter, time range) over plain and gzip-rotated files, the explanation, the exit codes.
#include "proxy/logs_command.hpp"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <boost/json/parse.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace mxgate::proxy {
namespace {

namespace fs = std::filesystem;

// A dnsbl rejection decided by the score, with the whole score sheet.
const char* const dnsbl_line =
    R"({"session":"S1AAAAAA","client_ip":"192.0.2.7","client_port":40000,"client_name":"mail.spam.test",)"
    R"("helo":"spam.test","tls":"","from":"Bob@Spam.Test","rcpts":[],"type":"reject","ref":"7Q3XK2PA",)"
    R"("stage":"rcpt","reason":"filter reject","filter":"dnsbl","rule":"zen.spamhaus.org",)"
    R"("rcpt":"alice@example.org","score":9,"contributions":[{"filter":"dnsbl","rule":"zen.spamhaus.org",)"
    R"("score":8,"detail":"zen.spamhaus.org 127.0.0.4","stage":"connect"},{"filter":"helo",)"
    R"("rule":"dynamic","score":1,"detail":"helo looks dynamic","stage":"helo"}],"threshold":6,)"
    R"("reply":"554 5.7.1 blocked using zen.spamhaus.org [ref 7Q3XK2PA]","time":"2026-11-22T10:04:11.123Z"})";

// A relay refusal: no score, the reason is the rule.
const char* const relay_line =
    R"({"session":"S2BBBBBB","client_ip":"198.51.100.9","client_port":1234,"client_name":"",)"
    R"("helo":"client.test","tls":"","from":"spammer@client.test","rcpts":["<ok@example.org>"],)"
    R"("type":"reject","ref":"ABCDEFGH","stage":"rcpt","reason":"relay access denied: not a relay domain",)"
    R"("filter":"relay","rule":"not a relay domain","rcpt":"<victim@evil.test>",)"
    R"("reply":"550 5.7.1 <victim@evil.test>: Relay access denied [ref ABCDEFGH]",)"
    R"("time":"2026-11-22T11:00:00.000Z"})";

// A backend tempfail over IPv6, null sender, at DATA.
const char* const tempfail_line =
    R"({"session":"S3CCCCCC","client_ip":"2001:db8::25","client_port":5555,"client_name":"",)"
    R"("helo":"v6.test","tls":"TLSv1.3","from":"","rcpts":["<postmaster@example.net>"],)"
    R"("type":"tempfail","ref":"TEMP0001","stage":"data","reason":"backend refused or unavailable",)"
    R"("filter":"backend","reply":"451 4.3.0 Backend unavailable [ref TEMP0001]",)"
    R"("time":"2026-11-22T12:30:00.000Z"})";

const char* const session_line =
    R"({"session":"S2BBBBBB","client_ip":"198.51.100.9","client_port":1234,"client_name":"",)"
    R"("helo":"client.test","tls":"","from":null,"rcpts":[],"type":"session","ref":"S2BBBBBB",)"
    R"("duration":1.25,"messages_accepted":0,"messages_rejected":0,"errors":1,"queue_ids":[],)"
    R"("last_stage":"rcpt","time":"2026-11-22T11:00:01.000Z"})";

class LogsCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = fs::temp_directory_path() /
                 ("mxgate-logs-test-" + std::to_string(::getpid()) + "-" +
                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(directory_);
    plain_ = (directory_ / "rejections.jsonl").string();
    gzip_ = (directory_ / "rejections.jsonl.1.gz").string();
    // The live file: relay, a malformed line (a crash mid-write), the session summary,
    // and the tempfail without a final newline (being written).
    std::ofstream(plain_) << relay_line << "\n{\"truncated\":\n"
                          << session_line << "\n"
                          << tempfail_line;
    // The rotated, compressed file holds the older dnsbl rejection.
    gzFile file = gzopen(gzip_.c_str(), "wb");
    ASSERT_NE(file, nullptr);
    std::string text = std::string(dnsbl_line) + "\n";
    gzwrite(file, text.data(), static_cast<unsigned>(text.size()));
    gzclose(file);
  }
  void TearDown() override { fs::remove_all(directory_); }

  // Runs the command over both files; returns the exit code, fills out_ and errors_.
  int run(LogsOptions options) {
    if (options.files.empty()) options.files = {gzip_, plain_};
    std::ostringstream out, errors;
    int code = run_logs_command(options, out, errors);
    out_ = out.str();
    errors_ = errors.str();
    return code;
  }
  int count_hits() const {
    int hits = 0;
    for (std::size_t at = out_.find("[ref "); at != std::string::npos;
         at = out_.find("[ref ", at + 1))
      ++hits;
    return hits - count_occurrences("reply: ");  // the reply line repeats the ref
  }
  int count_occurrences(const std::string& needle) const {
    int n = 0;
    for (std::size_t at = out_.find(needle); at != std::string::npos;
         at = out_.find(needle, at + 1))
      ++n;
    return n;
  }

  fs::path directory_;
  std::string plain_, gzip_, out_, errors_;
};

TEST_F(LogsCommandTest, RefFindsTheLineInTheGzipFileAndExplainsIt) {
  LogsOptions options;
  options.ref = "7Q3XK2PA";
  EXPECT_EQ(run(options), 0) << errors_;
  EXPECT_EQ(out_,
            "2026-11-22 10:04:11  192.0.2.7 -> alice@example.org  REJECTED at RCPT by dnsbl "
            "(zen.spamhaus.org 127.0.0.4, +8) total 9 >= reject 6  [ref 7Q3XK2PA]\n"
            "    reply: 554 5.7.1 blocked using zen.spamhaus.org [ref 7Q3XK2PA]\n"
            "    client mail.spam.test[192.0.2.7]:40000 helo spam.test from <Bob@Spam.Test> "
            "session S1AAAAAA\n"
            "    score: dnsbl/zen.spamhaus.org +8 (zen.spamhaus.org 127.0.0.4); helo/dynamic +1 "
            "(helo looks dynamic)\n\n");
}

TEST_F(LogsCommandTest, RefAsTypedByAPersonIsNormalised) {
  LogsOptions options;
  options.ref = "[ref 7q3xk2pa]";
  EXPECT_EQ(run(options), 0);
  EXPECT_NE(out_.find("[ref 7Q3XK2PA]"), std::string::npos);
  options.ref = "TEMPOOO1";  // letter O read for the digit 0
  EXPECT_EQ(run(options), 0);
  EXPECT_NE(out_.find("[ref TEMP0001]"), std::string::npos);
}

TEST_F(LogsCommandTest, SessionIdFindsTheSessionsRefusalsAndItsSummary) {
  LogsOptions options;
  options.ref = "S2BBBBBB";
  EXPECT_EQ(run(options), 0);
  EXPECT_NE(out_.find("REJECTED at RCPT by relay (not a relay domain)  [ref ABCDEFGH]"),
            std::string::npos)
      << out_;
  EXPECT_NE(out_.find("SESSION 1.2 s, 0 accepted, 0 rejected, 1 errors, last stage RCPT  "
                      "[session S2BBBBBB]"),
            std::string::npos)
      << out_;
}

TEST_F(LogsCommandTest, NothingMatchingExitsOne) {
  LogsOptions options;
  options.ref = "ZZZZZZZZ";
  EXPECT_EQ(run(options), 1);
  EXPECT_EQ(out_, "");
}

TEST_F(LogsCommandTest, UnreadableFileOrBadQueryExitsTwo) {
  LogsOptions options;
  options.files = {(directory_ / "missing.jsonl").string()};
  EXPECT_EQ(run(options), 2);
  EXPECT_NE(errors_.find("missing.jsonl"), std::string::npos);

  LogsOptions bad_cidr;
  bad_cidr.ip = "10.0.0.1/8";
  EXPECT_EQ(run(bad_cidr), 2);
  EXPECT_NE(errors_.find("did you mean 10.0.0.0/8"), std::string::npos) << errors_;

  LogsOptions bad_time;
  bad_time.since = "yesterday-ish";
  EXPECT_EQ(run(bad_time), 2);
}

TEST_F(LogsCommandTest, WithoutFiltersEveryRefusalButNoSummaryAndMalformedLinesCounted) {
  EXPECT_EQ(run({}), 0);
  EXPECT_EQ(count_hits(), 3) << out_;
  EXPECT_EQ(out_.find("SESSION"), std::string::npos);
  EXPECT_NE(errors_.find("1 line was not JSON"), std::string::npos) << errors_;
  LogsOptions sessions;
  sessions.sessions = true;
  EXPECT_EQ(run(sessions), 0);
  EXPECT_NE(out_.find("SESSION"), std::string::npos);
}

TEST_F(LogsCommandTest, IpMatchesAddressesAndNetworksOfBothFamilies) {
  LogsOptions options;
  options.ip = "192.0.2.7";
  EXPECT_EQ(run(options), 0);
  EXPECT_EQ(count_hits(), 1);
  options.ip = "198.51.100.0/24";
  EXPECT_EQ(run(options), 0);
  EXPECT_NE(out_.find("ABCDEFGH"), std::string::npos);
  options.ip = "2001:db8::/32";
  EXPECT_EQ(run(options), 0);
  EXPECT_NE(out_.find("TEMPFAILED at DATA by backend (backend refused or unavailable)"),
            std::string::npos)
      << out_;
  options.ip = "192.0.2.8";
  EXPECT_EQ(run(options), 1);
}

TEST_F(LogsCommandTest, SenderRecipientAndDomainIgnoreCaseAndBrackets) {
  LogsOptions from;
  from.from = "bob@spam.test";
  EXPECT_EQ(run(from), 0);
  EXPECT_NE(out_.find("7Q3XK2PA"), std::string::npos);
  from.from = "SPAM.test";
  EXPECT_EQ(run(from), 0);
  from.from = "<>";
  EXPECT_EQ(run(from), 0);
  EXPECT_NE(out_.find("TEMP0001"), std::string::npos);
  EXPECT_EQ(count_hits(), 1);

  LogsOptions rcpt;
  rcpt.rcpt = "victim@evil.test";
  EXPECT_EQ(run(rcpt), 0);
  EXPECT_EQ(count_hits(), 1);
  rcpt.rcpt = "example.org";  // an accepted recipient (rcpts) counts too
  EXPECT_EQ(run(rcpt), 0);
  EXPECT_EQ(count_hits(), 2) << out_;

  LogsOptions domain;
  domain.domain = "test";  // a parent domain matches its subdomains
  EXPECT_EQ(run(domain), 0);
  EXPECT_EQ(count_hits(), 2) << out_;
  domain.domain = "evil.test";
  EXPECT_EQ(run(domain), 0);
  EXPECT_EQ(count_hits(), 1);
}

TEST_F(LogsCommandTest, FilterMatchesTheDecidingFilterOrAContribution) {
  LogsOptions options;
  options.filter = "helo";
  EXPECT_EQ(run(options), 0);
  EXPECT_NE(out_.find("7Q3XK2PA"), std::string::npos);
  options.filter = "dnsbl/zen.spamhaus.org";
  EXPECT_EQ(run(options), 0);
  options.filter = "dnsbl/other";
  EXPECT_EQ(run(options), 1);
  options.filter = "relay";
  EXPECT_EQ(run(options), 0);
  EXPECT_EQ(count_hits(), 1);
}

TEST_F(LogsCommandTest, TimeRangeIsInclusiveAndUtc) {
  LogsOptions options;
  options.since = "2026-11-22 11:00";
  options.until = "2026-11-22T12:30:00Z";
  EXPECT_EQ(run(options), 0);
  EXPECT_EQ(count_hits(), 2) << out_;
  options.until = "2026-11-22 12:29:59";
  EXPECT_EQ(run(options), 0);
  EXPECT_EQ(count_hits(), 1);
}

TEST_F(LogsCommandTest, JsonPrintsTheLinesUnchanged) {
  LogsOptions options;
  options.ref = "ABCDEFGH";
  options.json = true;
  EXPECT_EQ(run(options), 0);
  EXPECT_EQ(out_, std::string(relay_line) + "\n");
}

TEST_F(LogsCommandTest, StatsCountRefusalsByRuleStageAndHour) {
  LogsOptions options;
  options.stats = true;
  EXPECT_EQ(run(options), 0);
  EXPECT_NE(out_.find("3 refusals (2 rejected, 1 tempfailed) from 2026-11-22 10:04:11 to "
                      "2026-11-22 12:30:00 UTC"),
            std::string::npos)
      << out_;
  EXPECT_NE(out_.find("        1  dnsbl/zen.spamhaus.org\n"), std::string::npos) << out_;
  EXPECT_NE(out_.find("        2  rcpt\n"), std::string::npos) << out_;
  EXPECT_NE(out_.find("  2026-11-22 12:00          1  #"), std::string::npos) << out_;

  options.json = true;
  EXPECT_EQ(run(options), 0);
  auto summary = boost::json::parse(out_).as_object();
  EXPECT_EQ(summary.at("refusals").to_number<std::uint64_t>(), 3u);
  EXPECT_EQ(summary.at("by_rule").at("relay/not a relay domain").to_number<std::uint64_t>(), 1u);
  EXPECT_EQ(summary.at("by_hour").at("2026-11-22 10:00").to_number<std::uint64_t>(), 1u);
}

TEST(LogTimeTest, ParsesTheFormsSupportTypes) {
  const std::int64_t base = 1795342451000;  // 2026-11-22T10:14:11Z
  EXPECT_EQ(parse_log_time("2026-11-22T10:14:11Z", 0), base);
  EXPECT_EQ(parse_log_time("2026-11-22T10:14:11.123Z", 0), base + 123);
  EXPECT_EQ(parse_log_time("2026-11-22 10:14:11", 0), base);
  EXPECT_EQ(parse_log_time("2026-11-22T11:14:11+01:00", 0), base);
  EXPECT_EQ(parse_log_time("2026-11-22", 0), base - (10 * 3600 + 14 * 60 + 11) * 1000LL);
  EXPECT_EQ(parse_log_time("2h", base), base - 2 * 3600 * 1000LL);
  EXPECT_EQ(parse_log_time("30m", base), base - 30 * 60 * 1000LL);
  EXPECT_EQ(parse_log_time("now", base), base);
  EXPECT_FALSE(parse_log_time("2026-13-01", 0));
  EXPECT_FALSE(parse_log_time("22/11/2026", 0));
  EXPECT_FALSE(parse_log_time("2x", 0));
}

}  // namespace
}  // namespace mxgate::proxy

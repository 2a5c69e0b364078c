// Tests for the content filter: targets, RE2 sets, line caps, composites, and the
// verdict (score sheet, decisive actions).
#include "filters/content.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace mxgate::filters {
namespace {

policy::ContentRule rule(std::string name, std::string where, std::string pattern,
                         double score = 1) {
  policy::ContentRule r;
  r.name = std::move(name);
  r.where = std::move(where);
  r.pattern = std::move(pattern);
  r.score = score;
  return r;
}

policy::ContentRule composite(std::string name, std::string expression, double score = 1) {
  policy::ContentRule r;
  r.name = std::move(name);
  r.expression = std::move(expression);
  r.score = score;
  return r;
}

std::shared_ptr<const ContentScanner> build(const std::vector<policy::ContentRule>& rules,
                                            ContentOptions options = {}) {
  std::vector<std::string> errors;
  auto scanner = ContentScanner::build(rules, options, errors);
  for (const auto& error : errors) ADD_FAILURE() << error;
  return scanner;
}

// The names of the rules that hit, in config order.
std::vector<std::string> hits(const ContentScanner& scanner, const std::string& message) {
  std::vector<std::string> names;
  const ContentScanResult result = scanner.scan(message);
  for (std::size_t i = 0; i < result.hits.size(); ++i)
    if (result.hits[i]) names.push_back(scanner.rules()[i].config.name);
  return names;
}

using Names = std::vector<std::string>;

constexpr const char* kMessage =
    "Received: from mx.example.net\r\n"
    "From: \"Prize Team\" <win@lottery.example>\r\n"
    "To: victim@example.org\r\n"
    "Subject: =?UTF-8?B?WW91IGhhdmUgd29uIQ==?=\r\n"
    "X-Mailer: Bulk\r\n"
    " Sender 3.1\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "<p>Dear friend, contact the next of=\r\n"
    " kin &amp; <a href=3D\"http://claim.bad.example/now\">claim</a></p>\r\n"
    "--b1\r\n"
    "Content-Type: application/octet-stream; name=\"prize.exe\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "TVqQAAMAAAAEAAAA\r\n"
    "--b1--\r\n";

TEST(ContentTargets, EachTargetSeesItsOwnText) {
  auto scanner = build({
      rule("subject", "subject", "^You have won!$"),
      rule("from", "from", "lottery\\.example"),
      rule("to", "to", "victim@"),
      rule("mailer", "header:x-mailer", "^Bulk Sender 3\\.1$"),
      rule("all-headers", "all-headers", "^X-Mailer: Bulk Sender"),
      rule("headers-alias", "headers", "^Received: from mx"),
      rule("body", "body", "(?i)next of kin & claim"),
      rule("raw", "raw", "of=$"),
      rule("message", "message", "^Subject: =\\?UTF-8"),
      rule("url", "url", "^http://claim\\.bad\\.example/"),
      rule("attachment-name", "attachment", "(?i)\\.exe$"),
      rule("attachment-type", "attachment", "^application/octet-stream$"),
      rule("body-not-raw", "body", "of=$"),
      rule("subject-raw-form", "subject", "UTF-8"),
  });
  EXPECT_EQ(hits(*scanner, kMessage),
            (Names{"subject", "from", "to", "mailer", "all-headers", "headers-alias", "body", "raw",
                   "message", "url", "attachment-name", "attachment-type"}));
}

TEST(ContentTargets, MimeFindingsAreATarget) {
  auto scanner = build({rule("broken", "mime", "^(missing_boundary|bad_base64)$", 2)});
  EXPECT_EQ(hits(*scanner, "Content-Type: multipart/mixed\r\n\r\nx\r\n"), (Names{"broken"}));
  EXPECT_EQ(hits(*scanner, "Subject: fine\r\n\r\nx\r\n"), (Names{}));
}

TEST(ContentSets, OneSetPerTarget) {
  auto scanner = build({rule("a", "body", "a"), rule("b", "body", "b"), rule("c", "subject", "c"),
                        rule("d", "body", "d")});
  EXPECT_EQ(scanner->set_count(), 2u);
  EXPECT_EQ(hits(*scanner, "Subject: c\r\n\r\nd b\r\n"), (Names{"b", "c", "d"}));
}

TEST(ContentSets, InvalidPatternsAreReportedAndSkipped) {
  std::vector<std::string> errors;
  auto scanner =
      ContentScanner::build({rule("good", "body", "spam"), rule("bad", "body", "(unclosed"),
                             rule("where", "nowhere", "x")},
                            {}, errors);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_NE(errors[0].find("content rule 'where': unknown target 'nowhere'"), std::string::npos);
  EXPECT_NE(errors[1].find("content rule 'bad': invalid pattern: missing )"), std::string::npos);
  EXPECT_EQ(hits(*scanner, "\r\nspam (unclosed\r\n"), (Names{"good"}));
}

TEST(ContentSets, SetsSplitWhenOverTheMemoryBudget) {
  std::vector<policy::ContentRule> rules;
  for (int i = 0; i < 200; ++i)
    rules.push_back(
        rule("r" + std::to_string(i), "body", "word" + std::to_string(i) + "[a-z]{3,9}x"));
  ContentOptions options;
  options.re2_max_mem = 256 << 10;
  auto scanner = build(rules, options);
  EXPECT_GT(scanner->set_count(), 1u);
  EXPECT_EQ(hits(*scanner, "\r\nword7abcx word199zzzzx\r\n"), (Names{"r7", "r199"}));
}

TEST(ContentSets, PatternTooBigForAnyBudgetIsDisabled) {
  std::vector<std::string> errors;
  ContentOptions options;
  options.re2_max_mem = 64 << 10;
  auto scanner = ContentScanner::build(
      {rule("huge", "body", "(?:[a-z]{1,50}[0-9]{1,50}){20}"), rule("small", "body", "ok")},
      options, errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("'huge'"), std::string::npos);
  EXPECT_NE(errors[0].find("re2_max_mem"), std::string::npos);
  EXPECT_EQ(hits(*scanner, "\r\nok\r\n"), (Names{"small"}));
}

TEST(ContentCaps, LongLinesAreScannedInOverlappingWindows) {
  ContentOptions options;
  options.max_line_scan = 1000;  // windows of 1000, overlap 256
  auto scanner =
      build({rule("needle", "body", "needle-in-haystack"), rule("line", "body", "^a+$")}, options);
  // The needle straddles the first window boundary (at 1000) and the last window.
  std::string line(990, 'x');
  line += "needle-in-haystack";
  line += std::string(5000, 'y');
  EXPECT_EQ(hits(*scanner, "\r\n" + line + "\r\n"), (Names{"needle"}));
  // '^a+$' cannot match a 5000-character line: windows are fields of their own, but a
  // line made of a's matches in every window.
  EXPECT_EQ(hits(*scanner, "\r\n" + std::string(5000, 'a') + "\r\n"), (Names{"line"}));
}

TEST(ContentCaps, TotalWorkIsBounded) {
  ContentOptions options;
  options.max_scan_bytes = 100;
  auto scanner = build({rule("late", "body", "late")}, options);
  std::string body;
  for (int i = 0; i < 50; ++i) body += "filler line\r\n";
  body += "late\r\n";
  const ContentScanResult result = scanner->scan("\r\n" + body);
  EXPECT_TRUE(result.incomplete);
  EXPECT_LE(result.bytes_scanned, 100u);
  EXPECT_FALSE(result.hits[0]);
}

// A text's lines are matched many at a time (one RE2 pass, never_nl and (?m)) and only
// where the pattern's literals occur: what matches must stay what a line-by-line scan
// matched.
TEST(ContentLines, NothingMatchesAcrossALineBreak) {
  auto scanner = build({
      rule("spaces", "body", "(?i)next\\s+of\\s+kin"),
      rule("negated-class", "body", "of[^x]kin"),
      rule("dot-all", "body", "(?s)of.kin"),
      rule("anchored", "body", "^kin$"),
      rule("blank-line", "body", "^$"),
  });
  EXPECT_EQ(hits(*scanner, "\r\nnext of\r\nkin\r\n"), (Names{"anchored"}));
  EXPECT_EQ(hits(*scanner, "\r\nNext Of\tKin\r\n\r\nthe end\r\n"), (Names{"spaces", "blank-line"}));
  // The line break that ends a text does not start an empty line.
  EXPECT_EQ(hits(*scanner, "\r\nof kin\r\n"), (Names{"negated-class", "dot-all"}));
}

TEST(ContentLines, TextAnchorsAnchorToEachLine) {
  // \A and \z keep meaning the start and end of a line, as when lines were matched one
  // by one; so does '^' after (?-m).
  auto scanner = build({
      rule("start", "body", "\\Asecond line"),
      rule("end", "body", "first line\\z"),
      rule("single-line-mode", "body", "(?-m)^second"),
      rule("raw-end", "raw", "line\\z"),
  });
  EXPECT_EQ(hits(*scanner, "\r\nfirst line\r\nsecond line\r\n"),
            (Names{"start", "end", "single-line-mode", "raw-end"}));
}

TEST(ContentLines, RawLinesAreMatchedWithoutTheirCarriageReturn) {
  auto scanner = build({rule("boundary", "raw", "^--b1--$"), rule("soft-break", "raw", "of=$"),
                        rule("cr", "raw", "\\r")});
  EXPECT_EQ(hits(*scanner, kMessage), (Names{"boundary", "soft-break"}));
}

TEST(ContentAtoms, CaseFoldingFollowsRe2) {
  auto scanner = build({
      rule("folded", "body", "(?i)free money"), rule("exact", "body", "Free money"),
      rule("kelvin", "body", "(?i)kiss"),            // U+212A KELVIN SIGN matches k
      rule("long-s", "body", "(?i)pass"),            // U+017F LATIN SMALL LETTER LONG S matches s
      rule("cyrillic", "body", "(?i)скидка \\d+%"),  // non-ASCII literals fold too
  });
  EXPECT_EQ(hits(*scanner, "\r\nFREE MONEY\r\n"), (Names{"folded"}));
  EXPECT_EQ(hits(*scanner, "\r\n\u212Aiss and pa\u017F\u017F, СКИДКА 50%\r\n"),
            (Names{"kelvin", "long-s", "cyrillic"}));
}

TEST(ContentAtoms, EncodedPartsAreSearchedDecoded) {
  auto scanner = build({rule("kin", "body", "(?i)next of kin"),
                        rule("wire", "body", "(?i)\\burgent wire transfer\\b")});
  // "Dear friend, I am the next of kin of a late client. Urgent wire transfer needed."
  const std::string base64 =
      "Content-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\n"
      "RGVhciBmcmllbmQsIEkgYW0gdGhlIG5leHQgb2Yga2luIG9mIGEgbGF0ZSBjbGllbnQuIFVyZ2Vu\r\n"
      "dCB3aXJlIHRyYW5zZmVyIG5lZWRlZC4=\r\n";
  EXPECT_EQ(hits(*scanner, base64), (Names{"kin", "wire"}));
  const std::string quoted_printable =
      "Content-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
      "I am the next of k=\r\nin. Urgent wire=20transfer!\r\n";
  EXPECT_EQ(hits(*scanner, quoted_printable), (Names{"kin", "wire"}));
}

TEST(ContentAtoms, LiteralsOnDifferentLinesDoNotMakeAMatch) {
  auto scanner = build({rule("pair", "body", "alpha.*beta"), rule("digits", "body", "^\\d{5}$")});
  // Long enough for the table and block paths; the literals of "pair" are on two lines.
  std::string filler;
  for (int i = 0; i < 400; ++i) filler += "some ordinary words on a line of text\r\n";
  EXPECT_EQ(hits(*scanner, "\r\n" + filler + "alpha\r\nbeta\r\n" + filler), (Names{}));
  EXPECT_EQ(hits(*scanner, "\r\n" + filler + "alpha and beta\r\n12345\r\n" + filler),
            (Names{"pair", "digits"}));
}

TEST(ContentAtoms, ManyCandidatesAreMatchedThroughTheSets) {
  // Every rule's literal occurs, so all are candidates (more than are run one by one);
  // only those whose whole pattern matches hit.
  std::vector<policy::ContentRule> rules;
  std::string text = "\r\n";
  Names expected;
  for (int i = 0; i < 30; ++i) {
    const std::string word = "keyword" + std::to_string(i);
    rules.push_back(rule(word, "body", "\\b" + word + "\\b"));
    text += (i % 3 == 0 ? word : word + "x") + " ";
    if (i % 3 == 0) expected.push_back(word);
  }
  auto scanner = build(rules);
  EXPECT_EQ(hits(*scanner, text + "\r\n"), expected);
}

TEST(ContentComposite, ExpressionsOverHits) {
  auto scanner = build({
      rule("money", "body", "(?i)million"),
      rule("urgent", "subject", "(?i)urgent"),
      rule("kin", "body", "(?i)next of kin"),
      composite("fee-scam", "money && (urgent || !kin)"),
      composite("two-of-three", "money + urgent + kin >= 2"),
      composite("on-composite", "fee-scam && two-of-three"),
  });
  EXPECT_EQ(hits(*scanner, "Subject: URGENT\r\n\r\n5 million\r\n"),
            (Names{"money", "urgent", "fee-scam", "two-of-three", "on-composite"}));
  EXPECT_EQ(hits(*scanner, "Subject: hi\r\n\r\n5 million to the next of kin\r\n"),
            (Names{"money", "kin", "two-of-three"}));
  EXPECT_EQ(hits(*scanner, "Subject: hi\r\n\r\n5 million\r\n"), (Names{"money", "fee-scam"}));
}

TEST(ContentComposite, UnknownNamesAndCyclesAreDisabled) {
  std::vector<std::string> errors;
  auto scanner = ContentScanner::build({rule("a", "body", "a"), composite("x", "a && nothere"),
                                        composite("p", "a && q"), composite("q", "p")},
                                       {}, errors);
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0], "content rule 'x': expression names unknown rule 'nothere'");
  EXPECT_NE(errors[1].find("cycle"), std::string::npos);
  EXPECT_EQ(hits(*scanner, "\r\na\r\n"), (Names{"a"}));
}

TEST(ContentFilterVerdict, ScoresAreContributionsNamingEachRule) {
  policy::ContentRule logged = rule("logged", "body", "bad", 3);
  logged.action = policy::RuleAction::log;
  policy::ContentRule described = rule("kin", "body", "next of kin", 5);
  described.description = "advance fee";
  ContentFilter filter({described, rule("won", "subject", "won", 2.5), logged}, {});
  const Verdict verdict = filter.judge(kMessage);
  EXPECT_EQ(verdict.kind, Verdict::Kind::next);
  ASSERT_EQ(verdict.contributions.size(), 2u);
  EXPECT_EQ(verdict.contributions[0].filter, "content");
  EXPECT_EQ(verdict.contributions[0].rule, "kin");
  EXPECT_EQ(verdict.contributions[0].score, 5);
  EXPECT_EQ(verdict.contributions[0].detail, "body: advance fee");
  EXPECT_EQ(verdict.contributions[0].stage, "data");
  EXPECT_EQ(verdict.contributions[1].rule, "won");
  EXPECT_EQ(verdict.contributions[1].score, 2.5);

  const Verdict dry = filter.judge("\r\nbad\r\n");
  ASSERT_EQ(dry.contributions.size(), 1u);
  EXPECT_TRUE(dry.contributions[0].dry_run);
}

TEST(ContentFilterVerdict, FirstDecisiveRuleInConfigOrderDecides) {
  policy::ContentRule exe = rule("exe", "attachment", "\\.exe$", 0);
  exe.action = policy::RuleAction::reject;
  policy::ContentRule slow = rule("later", "body", "kin", 0);
  slow.action = policy::RuleAction::tempfail;
  ContentFilter filter({slow, exe, rule("score", "body", "friend", 1)}, {});
  const Verdict verdict = filter.judge(kMessage);
  EXPECT_EQ(verdict.kind, Verdict::Kind::tempfail);
  EXPECT_EQ(verdict.rule, "later");
  EXPECT_EQ(verdict.reply.code, 451);
  ASSERT_EQ(verdict.contributions.size(), 3u);  // every hit is on the sheet

  ContentFilter rejecting({exe}, {});
  const Verdict rejected = rejecting.judge(kMessage);
  EXPECT_EQ(rejected.kind, Verdict::Kind::reject);
  EXPECT_EQ(rejected.filter, "content");
  EXPECT_EQ(rejected.rule, "exe");
  EXPECT_EQ(rejected.reply.code, 550);
  EXPECT_EQ(rejected.reply.enhanced, "5.7.1");
}

TEST(ContentMemo, SameBufferIsParsedOnce) {
  const std::string message = kMessage;
  auto first = parse_message_shared(message, {});
  auto second = parse_message_shared(message, {});
  EXPECT_EQ(first.get(), second.get());
  const std::string other = std::string(kMessage) + "x";
  EXPECT_NE(parse_message_shared(other, {}).get(), first.get());
}

}  // namespace
}  // namespace mxgate::filters

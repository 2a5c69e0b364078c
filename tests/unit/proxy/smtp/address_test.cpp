// Tests for RFC 5321 path parsing and the MAIL/RCPT ESMTP parameters.
#include "proxy/smtp/address.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mxgate::smtp {
namespace {

const AddressLimits kLimits{};

// The reply a failed parse would send, for exact comparisons.
std::string error_of(const PathResult& result) {
  EXPECT_FALSE(result.ok);
  return result.error.render();
}

const std::string kMailSyntax = "501 5.5.4 Syntax: MAIL FROM:<address>\r\n";
const std::string kRcptSyntax = "501 5.5.4 Syntax: RCPT TO:<address>\r\n";
const std::string kBadAddress = "501 5.1.3 Bad address syntax\r\n";

TEST(AddressTest, PlainMailbox) {
  const PathResult result = parse_mail_from("FROM:<user@example.org>", kLimits);
  ASSERT_TRUE(result.ok) << result.error.render();
  EXPECT_FALSE(result.address.null_path);
  EXPECT_EQ(result.address.local_part, "user");
  EXPECT_EQ(result.address.domain, "example.org");
  EXPECT_FALSE(result.address.local_part_quoted);
  EXPECT_FALSE(result.address.domain_literal);
  EXPECT_FALSE(result.address.had_trailing_dot);
  EXPECT_FALSE(result.address.had_source_route);
  EXPECT_EQ(result.address.full(), "user@example.org");
  EXPECT_FALSE(result.parameters.size.has_value());
  EXPECT_EQ(result.parameters.body, MailParameters::Body::unspecified);
}

TEST(AddressTest, PrefixIsCaseInsensitiveAndCaseIsKept) {
  PathResult result = parse_mail_from("from:<User@Example.ORG>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.address.full(), "User@Example.ORG");
  result = parse_rcpt_to("tO:<u@example.org>", kLimits);
  ASSERT_TRUE(result.ok);
}

TEST(AddressTest, NullPathOnlyForMail) {
  PathResult result = parse_mail_from("FROM:<>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_TRUE(result.address.null_path);
  EXPECT_EQ(result.address.full(), "");
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<>", kLimits)),
            "501 5.1.3 Bad address syntax (empty recipient)\r\n");
}

TEST(AddressTest, SpaceAfterColonIsTolerated) {
  PathResult result = parse_mail_from("FROM: <a@example.org>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.address.full(), "a@example.org");
  result = parse_rcpt_to("TO: <b@example.org>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.address.full(), "b@example.org");
  result = parse_mail_from("FROM: <>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_TRUE(result.address.null_path);
}

TEST(AddressTest, AngleBracketsAreRequired) {
  EXPECT_EQ(error_of(parse_mail_from("FROM:a@example.org", kLimits)), kMailSyntax);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:b@example.org", kLimits)), kRcptSyntax);
  EXPECT_EQ(error_of(parse_mail_from("FROM:<a@example.org", kLimits)), kMailSyntax);
  EXPECT_EQ(error_of(parse_mail_from("FROM:", kLimits)), kMailSyntax);
  EXPECT_EQ(error_of(parse_mail_from("", kLimits)), kMailSyntax);
  EXPECT_EQ(error_of(parse_mail_from("TO:<a@example.org>", kLimits)), kMailSyntax);
  EXPECT_EQ(error_of(parse_rcpt_to("FROM:<a@example.org>", kLimits)), kRcptSyntax);
  EXPECT_EQ(error_of(parse_mail_from("FROM <a@example.org>", kLimits)), kMailSyntax);
  // Something glued to the closing bracket is not a parameter.
  EXPECT_EQ(error_of(parse_mail_from("FROM:<a@example.org>x", kLimits)), kMailSyntax);
}

TEST(AddressTest, DotStringRules) {
  EXPECT_TRUE(parse_rcpt_to("TO:<first.last+tag@example.org>", kLimits).ok);
  EXPECT_TRUE(parse_rcpt_to("TO:<a!#$%&'*+-/=?^_`{|}~@example.org>", kLimits).ok);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<.a@example.org>", kLimits)), kBadAddress);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<a.@example.org>", kLimits)), kBadAddress);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<a..b@example.org>", kLimits)), kBadAddress);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<a b@example.org>", kLimits)), kBadAddress);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<a(b)@example.org>", kLimits)), kBadAddress);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<a\"b\"@example.org>", kLimits)), kBadAddress);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<a@b@example.org>", kLimits)),
            "501 5.1.3 Bad address syntax (bad domain)\r\n");
}

TEST(AddressTest, QuotedLocalPartIsUnescaped) {
  const PathResult result = parse_rcpt_to("TO:<\"john \\\"j\\\" doe\"@example.org>", kLimits);
  ASSERT_TRUE(result.ok) << result.error.render();
  EXPECT_TRUE(result.address.local_part_quoted);
  EXPECT_EQ(result.address.local_part, "john \"j\" doe");
  EXPECT_EQ(result.address.full(), "\"john \\\"j\\\" doe\"@example.org");
}

TEST(AddressTest, QuotedLocalPartMayHoldSpecials) {
  PathResult result = parse_rcpt_to("TO:<\"u@evil.com\"@example.org>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.address.local_part, "u@evil.com");
  EXPECT_EQ(result.address.domain, "example.org");
  // A '>' inside quotes does not close the path.
  result = parse_rcpt_to("TO:<\"a>b\"@example.org> NOTIFY=NEVER", kLimits);
  ASSERT_TRUE(result.ok) << result.error.render();
  EXPECT_EQ(result.address.local_part, "a>b");
  EXPECT_EQ(result.parameters.passthrough, std::vector<std::string>{"NOTIFY=NEVER"});
  result = parse_rcpt_to("TO:<\"\"@example.org>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.address.local_part, "");
  EXPECT_EQ(result.address.full(), "\"\"@example.org");
  result = parse_rcpt_to("TO:<\"a\\\\b\"@example.org>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.address.local_part, "a\\b");
  EXPECT_EQ(result.address.full(), "\"a\\\\b\"@example.org");
}

TEST(AddressTest, BadQuotedLocalParts) {
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<\"abc@example.org>", kLimits)), kRcptSyntax);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<\"abc\"x@example.org>", kLimits)), kBadAddress);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<\"a\tb\"@example.org>", kLimits)), kBadAddress);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<\"a\\\tb\"@example.org>", kLimits)), kBadAddress);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<\"abc\">", kLimits)),
            "501 5.1.3 Bad address syntax (missing domain)\r\n");
}

TEST(AddressTest, TrailingDotIsFlaggedAndStripped) {
  const PathResult result = parse_rcpt_to("TO:<u@example.org.>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_TRUE(result.address.had_trailing_dot);
  EXPECT_EQ(result.address.domain, "example.org");
  EXPECT_EQ(result.address.full(), "u@example.org");
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<u@example.org..>", kLimits)),
            "501 5.1.3 Bad address syntax (bad domain)\r\n");
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<u@.>", kLimits)),
            "501 5.1.3 Bad address syntax (bad domain)\r\n");
}

TEST(AddressTest, DomainSyntax) {
  EXPECT_TRUE(parse_rcpt_to("TO:<u@a-b.example.org>", kLimits).ok);
  EXPECT_TRUE(parse_rcpt_to("TO:<u@123.example>", kLimits).ok);
  EXPECT_TRUE(parse_rcpt_to("TO:<u@localhost>", kLimits).ok);
  const std::string bad_domain = "501 5.1.3 Bad address syntax (bad domain)\r\n";
  for (const char* argument :
       {"TO:<u@-a.example.org>", "TO:<u@a-.example.org>", "TO:<u@a..example.org>",
        "TO:<u@.example.org>", "TO:<u@exa_mple.org>", "TO:<u@exa mple.org>", "TO:<u@>",
        "TO:<u@example.org:25>"}) {
    EXPECT_EQ(error_of(parse_rcpt_to(argument, kLimits)), bad_domain) << argument;
  }
  const std::string label(63, 'a');
  EXPECT_TRUE(parse_rcpt_to("TO:<u@" + label + ".org>", kLimits).ok);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<u@" + label + "a.org>", kLimits)), bad_domain);
}

TEST(AddressTest, Utf8WhenAllowed) {
  PathResult result = parse_rcpt_to(
      "TO:<j\xc3\xb6rg@b\xc3\xbc"
      "cher.example>",
      kLimits);
  ASSERT_TRUE(result.ok) << result.error.render();
  EXPECT_EQ(result.address.local_part, "j\xc3\xb6rg");
  EXPECT_EQ(result.address.domain,
            "b\xc3\xbc"
            "cher.example");

  AddressLimits ascii_only;
  ascii_only.smtputf8 = false;
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<j\xc3\xb6rg@example.org>", ascii_only)),
            "553 5.6.7 Non-ASCII address not permitted\r\n");
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<u@b\xc3\xbc"
                                   "cher.example>",
                                   ascii_only)),
            "553 5.6.7 Non-ASCII address not permitted\r\n");
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<\"j\xc3\xb6rg\"@example.org>", ascii_only)),
            "553 5.6.7 Non-ASCII address not permitted\r\n");
  EXPECT_TRUE(parse_rcpt_to("TO:<\"j\xc3\xb6rg\"@example.org>", kLimits).ok);
  // Malformed UTF-8 is never accepted: overlong, surrogate, truncated, stray continuation.
  for (const char* argument :
       {"TO:<\xc0\xaf@example.org>", "TO:<\xed\xa0\x80@example.org>", "TO:<\xe2\x82@example.org>",
        "TO:<\x80@example.org>", "TO:<\xf5\x80\x80\x80@example.org>"}) {
    EXPECT_FALSE(parse_rcpt_to(argument, kLimits).ok) << argument;
  }
}

TEST(AddressTest, AddressLiterals) {
  PathResult result = parse_rcpt_to("TO:<u@[192.0.2.1]>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_TRUE(result.address.domain_literal);
  EXPECT_EQ(result.address.domain, "[192.0.2.1]");
  EXPECT_EQ(result.address.full(), "u@[192.0.2.1]");

  result = parse_rcpt_to("TO:<u@[IPv6:2001:db8::1]>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.address.domain, "[IPv6:2001:db8::1]");
  result = parse_rcpt_to("TO:<u@[ipv6:::ffff:192.0.2.1]>", kLimits);
  ASSERT_TRUE(result.ok);

  const std::string bad_literal = "501 5.1.3 Bad address syntax (bad address literal)\r\n";
  for (const char* argument :
       {"TO:<u@[192.0.2.256]>", "TO:<u@[192.0.2]>", "TO:<u@[]>", "TO:<u@[2001:db8::1]>",
        "TO:<u@[IPv6:192.0.2.1]>", "TO:<u@[IPv6:2001:db8::1%eth0]>", "TO:<u@[192.0.2.1>",
        "TO:<u@[192.0.2.1]x>", "TO:<u@[x-tag:foo]>", "TO:<u@[ 192.0.2.1]>"}) {
    EXPECT_EQ(error_of(parse_rcpt_to(argument, kLimits)), bad_literal) << argument;
  }
}

TEST(AddressTest, SourceRouteIsParsedAndFlagged) {
  PathResult result = parse_rcpt_to("TO:<@a.example,@b.example:u@example.org>", kLimits);
  ASSERT_TRUE(result.ok) << result.error.render();
  EXPECT_TRUE(result.address.had_source_route);
  EXPECT_EQ(result.address.source_route, "@a.example,@b.example");
  EXPECT_EQ(result.address.local_part, "u");
  EXPECT_EQ(result.address.domain, "example.org");
  EXPECT_EQ(result.address.full(), "u@example.org");

  result = parse_mail_from("FROM:<@relay.example:sender@example.net>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_TRUE(result.address.had_source_route);

  const std::string bad_route = "501 5.1.3 Bad address syntax (source route)\r\n";
  for (const char* argument :
       {"TO:<@a.example>", "TO:<@a.example,u@example.org>", "TO:<@:u@example.org>",
        "TO:<@a.example,:u@example.org>", "TO:<@a_b:u@example.org>",
        "TO:<@a.example,b.example:u@example.org>"}) {
    EXPECT_EQ(error_of(parse_rcpt_to(argument, kLimits)), bad_route) << argument;
  }
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<@a.example:>", kLimits)), kBadAddress);
}

TEST(AddressTest, PostmasterWithoutDomainForRcptOnly) {
  PathResult result = parse_rcpt_to("TO:<Postmaster>", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.address.local_part, "Postmaster");
  EXPECT_EQ(result.address.domain, "");
  EXPECT_EQ(result.address.full(), "Postmaster");
  EXPECT_TRUE(parse_rcpt_to("TO:<postmaster>", kLimits).ok);
  const std::string missing = "501 5.1.3 Bad address syntax (missing domain)\r\n";
  EXPECT_EQ(error_of(parse_mail_from("FROM:<postmaster>", kLimits)), missing);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<user>", kLimits)), missing);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<\"postmaster\">", kLimits)), missing);
}

TEST(AddressTest, LengthLimits) {
  const std::string local64(64, 'l');
  const std::string local65(65, 'l');
  EXPECT_TRUE(parse_rcpt_to("TO:<" + local64 + "@example.org>", kLimits).ok);
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<" + local65 + "@example.org>", kLimits)),
            "501 5.1.3 Bad address syntax (local part too long)\r\n");
  // Quotes count: 62 characters quoted are 64 octets on the wire.
  EXPECT_TRUE(parse_rcpt_to("TO:<\"" + std::string(62, 'q') + "\"@example.org>", kLimits).ok);
  EXPECT_FALSE(parse_rcpt_to("TO:<\"" + std::string(63, 'q') + "\"@example.org>", kLimits).ok);

  AddressLimits limits;
  limits.max_domain = 20;
  EXPECT_TRUE(parse_rcpt_to("TO:<u@aaaaaaaaaaaa.example>", limits).ok);   // exactly 20
  EXPECT_TRUE(parse_rcpt_to("TO:<u@aaaaaaaaaaaa.example.>", limits).ok);  // the dot is stripped
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<u@aaaaaaaaaaaaa.example>", limits)),
            "501 5.1.3 Bad address syntax (domain too long)\r\n");
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<u@[IPv6:2001:db8::1:2:3]>", limits)),
            "501 5.1.3 Bad address syntax (domain too long)\r\n");

  // Path: 256 octets including the angle brackets.
  const std::string label = std::string(62, 'd') + ".";
  const std::string domain = label + label + label + std::string(63, 'e');  // 252 octets
  const std::string path256 = "<u@" + domain + ">";
  ASSERT_EQ(path256.size(), 256u);
  EXPECT_TRUE(parse_rcpt_to("TO:" + path256, kLimits).ok) << path256;
  const std::string path257 = "<u@" + domain + "e>";
  EXPECT_EQ(error_of(parse_rcpt_to("TO:" + path257, kLimits)),
            "501 5.1.3 Bad address syntax (path too long)\r\n");
}

TEST(MailParametersTest, SizeBodySmtputf8) {
  const PathResult result =
      parse_mail_from("FROM:<a@example.org> SIZE=12345 BODY=8BITMIME SMTPUTF8", kLimits);
  ASSERT_TRUE(result.ok) << result.error.render();
  EXPECT_EQ(result.parameters.size, 12345u);
  EXPECT_EQ(result.parameters.body, MailParameters::Body::eight_bit_mime);
  EXPECT_TRUE(result.parameters.smtputf8);
  EXPECT_TRUE(result.parameters.passthrough.empty());
}

TEST(MailParametersTest, KeywordsAreCaseInsensitive) {
  PathResult result = parse_mail_from("FROM:<a@example.org> size=1 body=7bit smtputf8", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.parameters.size, 1u);
  EXPECT_EQ(result.parameters.body, MailParameters::Body::seven_bit);
  result = parse_mail_from("FROM:<a@example.org> BODY=BinaryMIME", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.parameters.body, MailParameters::Body::binary_mime);
}

TEST(MailParametersTest, ExtraSpacesBetweenParameters) {
  const PathResult result = parse_mail_from("FROM:<a@example.org>   SIZE=5  ", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.parameters.size, 5u);
}

TEST(MailParametersTest, SizeLimits) {
  PathResult result = parse_mail_from("FROM:<> SIZE=18446744073709551615", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.parameters.size, UINT64_MAX);
  result = parse_mail_from("FROM:<> SIZE=0", kLimits);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.parameters.size, 0u);
  const std::string bad_size = "501 5.5.4 Syntax: bad SIZE parameter\r\n";
  for (const char* argument :
       {"FROM:<> SIZE=18446744073709551616", "FROM:<> SIZE=99999999999999999999",
        "FROM:<> SIZE=000000000000000000001", "FROM:<> SIZE=12a", "FROM:<> SIZE=-1",
        "FROM:<> SIZE"}) {
    EXPECT_EQ(error_of(parse_mail_from(argument, kLimits)), bad_size) << argument;
  }
  EXPECT_EQ(error_of(parse_mail_from("FROM:<> SIZE=", kLimits)),
            "501 5.5.4 Syntax: bad parameter SIZE=\r\n");
}

TEST(MailParametersTest, BadBodyAndSmtputf8Values) {
  EXPECT_EQ(error_of(parse_mail_from("FROM:<> BODY=8BIT", kLimits)),
            "501 5.5.4 Syntax: bad BODY parameter\r\n");
  EXPECT_EQ(error_of(parse_mail_from("FROM:<> SMTPUTF8=yes", kLimits)),
            "501 5.5.4 Syntax: bad SMTPUTF8 parameter\r\n");
  AddressLimits ascii_only;
  ascii_only.smtputf8 = false;
  EXPECT_EQ(error_of(parse_mail_from("FROM:<> SMTPUTF8", ascii_only)),
            "555 5.5.4 Unsupported option: SMTPUTF8\r\n");
}

TEST(MailParametersTest, PassThroughParameters) {
  const PathResult result =
      parse_mail_from("FROM:<a@example.org> ENVID=QQ314159 RET=HDRS AUTH=<> SIZE=10", kLimits);
  ASSERT_TRUE(result.ok) << result.error.render();
  EXPECT_EQ(result.parameters.passthrough,
            (std::vector<std::string>{"ENVID=QQ314159", "RET=HDRS", "AUTH=<>"}));
  EXPECT_EQ(error_of(parse_mail_from("FROM:<> RET", kLimits)),
            "501 5.5.4 Syntax: bad parameter RET\r\n");
}

TEST(MailParametersTest, UnknownParameters) {
  EXPECT_EQ(error_of(parse_mail_from("FROM:<> FOO=bar", kLimits)),
            "555 5.5.4 Unsupported option: FOO=bar\r\n");
  EXPECT_EQ(error_of(parse_mail_from("FROM:<> XYZ", kLimits)),
            "555 5.5.4 Unsupported option: XYZ\r\n");
  // RCPT parameters are not MAIL parameters, and the reverse.
  EXPECT_EQ(error_of(parse_mail_from("FROM:<> NOTIFY=NEVER", kLimits)),
            "555 5.5.4 Unsupported option: NOTIFY=NEVER\r\n");
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<u@example.org> SIZE=10", kLimits)),
            "555 5.5.4 Unsupported option: SIZE=10\r\n");
}

TEST(MailParametersTest, MalformedParameters) {
  for (const char* argument :
       {"FROM:<> =x", "FROM:<> -A=1", "FROM:<> A=b=c", "FROM:<> A\x01=1", "FROM:<> ENVID=a\x7f"}) {
    const PathResult result = parse_mail_from(argument, kLimits);
    EXPECT_FALSE(result.ok) << argument;
    EXPECT_EQ(result.error.code, 501) << argument;
    EXPECT_EQ(result.error.enhanced, "5.5.4") << argument;
  }
}

TEST(MailParametersTest, DuplicateParameters) {
  EXPECT_EQ(error_of(parse_mail_from("FROM:<> SIZE=1 SIZE=2", kLimits)),
            "501 5.5.4 Syntax: duplicate parameter SIZE\r\n");
  EXPECT_EQ(error_of(parse_mail_from("FROM:<> BODY=7BIT body=8bitmime", kLimits)),
            "501 5.5.4 Syntax: duplicate parameter BODY\r\n");
  EXPECT_EQ(error_of(parse_rcpt_to("TO:<u@example.org> NOTIFY=NEVER NOTIFY=NEVER", kLimits)),
            "501 5.5.4 Syntax: duplicate parameter NOTIFY\r\n");
}

TEST(RcptParametersTest, NotifyAndOrcptPassThrough) {
  const PathResult result = parse_rcpt_to(
      "TO:<u@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40example.org", kLimits);
  ASSERT_TRUE(result.ok) << result.error.render();
  EXPECT_EQ(result.parameters.passthrough,
            (std::vector<std::string>{"NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;u+40example.org"}));
}

TEST(AddressTest, FailedParseLeavesNoPartialAddress) {
  const PathResult result = parse_rcpt_to("TO:<u@example.org> FOO", kLimits);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.address.local_part, "");
  EXPECT_EQ(result.address.domain, "");
}

}  // namespace
}  // namespace mxgate::smtp

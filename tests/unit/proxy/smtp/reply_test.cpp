// Tests for SMTP reply rendering, backend reply parsing and the canonical wording.
#include "proxy/smtp/reply.hpp"

#include <gtest/gtest.h>

namespace mxgate::smtp {
namespace {

TEST(ReplyTest, RendersSingleLineWithEnhancedCode) {
  EXPECT_EQ(Reply(250, "2.0.0", "Ok").render(), "250 2.0.0 Ok\r\n");
}

TEST(ReplyTest, RendersWithoutEnhancedCode) {
  EXPECT_EQ(Reply(220, "", "mx.example.org ESMTP").render(), "220 mx.example.org ESMTP\r\n");
}

TEST(ReplyTest, RendersMultiLineRepeatingEnhancedCode) {
  Reply reply(550, "5.7.1", "first");
  reply.lines.push_back("second");
  reply.lines.push_back("third");
  EXPECT_EQ(reply.render(), "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n");
}

TEST(ReplyTest, RendersMultiLineWithoutEnhancedCode) {
  Reply reply(250, "", "mx.example.org");
  reply.lines.push_back("PIPELINING");
  reply.lines.push_back("8BITMIME");
  EXPECT_EQ(reply.render(), "250-mx.example.org\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
}

TEST(ReplyTest, RendersEmptyText) {
  Reply reply;
  reply.code = 250;
  EXPECT_EQ(reply.render(), "250\r\n");
  reply.enhanced = "2.0.0";
  EXPECT_EQ(reply.render(), "250 2.0.0\r\n");
}

TEST(ReplyTest, AppendToAppends) {
  std::string out = "prefix";
  Reply(221, "2.0.0", "Bye").append_to(out);
  EXPECT_EQ(out, "prefix221 2.0.0 Bye\r\n");
}

TEST(ReplyTest, RenderNeverEmitsLineBreaksFromText) {
  // A reply that echoes client text must not become two reply lines on the wire.
  Reply reply(501, "5.1.3", "bad\r\n250 Ok\nx\0y");
  reply.lines[0] = std::string("bad\r\n250 Ok\nx\0y", 15);
  EXPECT_EQ(reply.render(), std::string("501 5.1.3 bad  250 Ok x y\r\n"));
}

TEST(ReplyTest, TextJoinsLines) {
  Reply reply(550, "5.7.1", "one");
  reply.lines.push_back("two");
  EXPECT_EQ(reply.text(), "one; two");
  EXPECT_EQ(Reply(250, "2.0.0", "Ok").text(), "Ok");
}

TEST(ReplyTest, AddReferenceGoesOnLastLine) {
  Reply reply(550, "5.7.1", "one");
  reply.lines.push_back("two");
  reply.add_reference("7Q3XK2PA");
  EXPECT_EQ(reply.render(), "550-5.7.1 one\r\n550 5.7.1 two [ref 7Q3XK2PA]\r\n");
}

TEST(ReplyTest, AddReferenceOnEmptyReply) {
  Reply reply;
  reply.code = 451;
  reply.enhanced = "4.3.0";
  reply.add_reference("ABC");
  EXPECT_EQ(reply.render(), "451 4.3.0 [ref ABC]\r\n");
}

TEST(ReplyTest, Classification) {
  EXPECT_TRUE(Reply(250, "", "").positive());
  EXPECT_TRUE(Reply(354, "", "").positive());
  EXPECT_TRUE(Reply(421, "", "").transient());
  EXPECT_FALSE(Reply(421, "", "").permanent());
  EXPECT_TRUE(Reply(550, "", "").permanent());
  EXPECT_FALSE(Reply(550, "", "").positive());
}

TEST(ParseReplyTest, SingleLineWithEnhancedCode) {
  Reply reply;
  ASSERT_TRUE(parse_reply("250 2.0.0 Ok: queued as 4Xyz\r\n", reply));
  EXPECT_EQ(reply.code, 250);
  EXPECT_EQ(reply.enhanced, "2.0.0");
  ASSERT_EQ(reply.lines.size(), 1u);
  EXPECT_EQ(reply.lines[0], "Ok: queued as 4Xyz");
}

TEST(ParseReplyTest, SingleLineWithoutEnhancedCode) {
  Reply reply;
  ASSERT_TRUE(parse_reply("354 End data with <CR><LF>.<CR><LF>\r\n", reply));
  EXPECT_EQ(reply.code, 354);
  EXPECT_EQ(reply.enhanced, "");
  EXPECT_EQ(reply.lines, std::vector<std::string>{"End data with <CR><LF>.<CR><LF>"});
}

TEST(ParseReplyTest, MultiLineStripsRepeatedEnhancedCode) {
  Reply reply;
  ASSERT_TRUE(parse_reply("550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n", reply));
  EXPECT_EQ(reply.code, 550);
  EXPECT_EQ(reply.enhanced, "5.7.1");
  EXPECT_EQ(reply.lines, (std::vector<std::string>{"first", "second", "third"}));
  EXPECT_EQ(reply.render(), "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n");
}

TEST(ParseReplyTest, MultiLineEhloWithoutEnhancedCode) {
  Reply reply;
  ASSERT_TRUE(
      parse_reply("250-mx.example.org\r\n250-PIPELINING\r\n250 XCLIENT NAME ADDR\r\n", reply));
  EXPECT_EQ(reply.enhanced, "");
  EXPECT_EQ(reply.lines,
            (std::vector<std::string>{"mx.example.org", "PIPELINING", "XCLIENT NAME ADDR"}));
}

TEST(ParseReplyTest, EnhancedCodeClassMustMatchReplyCode) {
  Reply reply;
  ASSERT_TRUE(parse_reply("250 5.0.0 odd\r\n", reply));
  EXPECT_EQ(reply.enhanced, "");
  EXPECT_EQ(reply.lines[0], "5.0.0 odd");
}

TEST(ParseReplyTest, EnhancedCodeOnly) {
  Reply reply;
  ASSERT_TRUE(parse_reply("250 2.0.0\r\n", reply));
  EXPECT_EQ(reply.enhanced, "2.0.0");
  EXPECT_EQ(reply.lines, std::vector<std::string>{""});
  EXPECT_EQ(reply.render(), "250 2.0.0\r\n");
}

TEST(ParseReplyTest, ThreeDigitSubjectAndDetail) {
  Reply reply;
  ASSERT_TRUE(parse_reply("550 5.123.456 text\r\n", reply));
  EXPECT_EQ(reply.enhanced, "5.123.456");
  EXPECT_EQ(reply.lines[0], "text");
  ASSERT_TRUE(parse_reply("550 5.1234.4 text\r\n", reply));
  EXPECT_EQ(reply.enhanced, "");
  ASSERT_TRUE(parse_reply("550 5.1.1text\r\n", reply));
  EXPECT_EQ(reply.enhanced, "");
}

TEST(ParseReplyTest, CodeOnlyLine) {
  Reply reply;
  ASSERT_TRUE(parse_reply("250\r\n", reply));
  EXPECT_EQ(reply.code, 250);
  EXPECT_EQ(reply.lines, std::vector<std::string>{""});
}

TEST(ParseReplyTest, RejectsMalformed) {
  Reply reply;
  EXPECT_FALSE(parse_reply("", reply));
  EXPECT_FALSE(parse_reply("250 Ok", reply));      // no CRLF
  EXPECT_FALSE(parse_reply("250 Ok\n", reply));    // bare LF
  EXPECT_FALSE(parse_reply("25 Ok\r\n", reply));   // short code
  EXPECT_FALSE(parse_reply("2x0 Ok\r\n", reply));  // not digits
  EXPECT_FALSE(parse_reply("650 Ok\r\n", reply));  // no such class
  EXPECT_FALSE(parse_reply("150 Ok\r\n", reply));
  EXPECT_FALSE(parse_reply("250_Ok\r\n", reply));                         // bad separator
  EXPECT_FALSE(parse_reply("250-Ok\r\n", reply));                         // no last line
  EXPECT_FALSE(parse_reply("250-a\r\n251 b\r\n", reply));                 // code changes
  EXPECT_FALSE(parse_reply("250 a\r\n250 b\r\n", reply));                 // two replies
  EXPECT_FALSE(parse_reply("250 a\rb\r\n", reply));                       // bare CR inside
  EXPECT_FALSE(parse_reply(std::string_view("250 a\0b\r\n", 9), reply));  // NUL
}

TEST(ParseReplyTest, FailureLeavesOutputUntouched) {
  Reply reply(421, "4.4.2", "keep");
  EXPECT_FALSE(parse_reply("garbage\r\n", reply));
  EXPECT_EQ(reply.render(), "421 4.4.2 keep\r\n");
}

TEST(RepliesTest, ExactWording) {
  using namespace replies;
  EXPECT_EQ(greeting("mx.example.org", "ESMTP").render(), "220 mx.example.org ESMTP\r\n");
  EXPECT_EQ(greeting("mx.example.org", "").render(), "220 mx.example.org\r\n");
  EXPECT_EQ(ok().render(), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(sender_ok().render(), "250 2.1.0 Ok\r\n");
  EXPECT_EQ(recipient_ok().render(), "250 2.1.5 Ok\r\n");
  EXPECT_EQ(start_data().render(), "354 End data with <CR><LF>.<CR><LF>\r\n");
  EXPECT_EQ(bye("mx.example.org").render(), "221 2.0.0 Bye\r\n");
  EXPECT_EQ(ready_to_start_tls().render(), "220 2.0.0 Ready to start TLS\r\n");
  EXPECT_EQ(vrfy().render(), "252 2.5.2 Cannot VRFY user, but will accept message\r\n");
  EXPECT_EQ(help().render(),
            "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP\r\n");
  EXPECT_EQ(unknown_command().render(), "500 5.5.2 Error: command not recognized\r\n");
  EXPECT_EQ(line_too_long().render(), "500 5.5.2 Error: line too long\r\n");
  EXPECT_EQ(bad_sequence("need MAIL command").render(), "503 5.5.1 Error: need MAIL command\r\n");
  EXPECT_EQ(syntax("MAIL FROM:<address>").render(), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
  EXPECT_EQ(bad_address_syntax("domain too long").render(),
            "501 5.1.3 Bad address syntax (domain too long)\r\n");
  EXPECT_EQ(bad_address_syntax("").render(), "501 5.1.3 Bad address syntax\r\n");
  EXPECT_EQ(parameter_unknown("FOO=bar").render(), "555 5.5.4 Unsupported option: FOO=bar\r\n");
  EXPECT_EQ(bare_newline_command().render(),
            "500 5.5.2 Error: bare <CR> or <LF> or NUL in command\r\n");
  EXPECT_EQ(bare_newline_data().render(),
            "550 5.5.2 Error: bare <CR> or <LF> or NUL in message\r\n");
  EXPECT_EQ(relay_denied("u@evil.com").render(), "550 5.7.1 <u@evil.com>: Relay access denied\r\n");
  EXPECT_EQ(too_many_recipients().render(), "452 4.5.3 Error: too many recipients\r\n");
  EXPECT_EQ(message_too_big().render(), "552 5.3.4 Error: message file too big\r\n");
  EXPECT_EQ(insufficient_resources().render(), "452 4.3.1 Insufficient system storage\r\n");
  EXPECT_EQ(too_many_errors("mx.example.org").render(),
            "421 4.7.0 mx.example.org Error: too many errors\r\n");
  EXPECT_EQ(timeout("mx.example.org").render(),
            "421 4.4.2 mx.example.org Error: timeout exceeded\r\n");
  EXPECT_EQ(too_many_connections("mx.example.org").render(),
            "421 4.7.0 mx.example.org Error: too many connections\r\n");
  EXPECT_EQ(too_many_connections_from_ip("mx.example.org").render(),
            "421 4.7.0 mx.example.org Error: too many connections from your address\r\n");
  EXPECT_EQ(pipelining_violation().render(), "554 5.5.0 Error: SMTP protocol synchronization\r\n");
  EXPECT_EQ(backend_unavailable().render(),
            "451 4.3.0 Error: queue file write error, try again later\r\n");
  EXPECT_EQ(backend_lost().render(),
            "421 4.4.2 Error: backend connection lost, try again later\r\n");
  EXPECT_EQ(shutting_down("mx.example.org").render(),
            "421 4.3.2 mx.example.org Service shutting down\r\n");
  EXPECT_EQ(internal_error("mx.example.org").render(),
            "421 4.3.0 mx.example.org Error: internal error\r\n");
  EXPECT_EQ(tls_not_available().render(), "454 4.7.0 TLS not available\r\n");
  EXPECT_EQ(tls_already_active().render(), "503 5.5.1 Error: TLS already active\r\n");
  EXPECT_EQ(line_too_long_data().render(), "550 5.6.0 Error: message line too long\r\n");
  EXPECT_EQ(message_limit_reached().render(),
            "452 4.5.3 Error: too many messages in this session\r\n");
}

TEST(RepliesTest, EveryTempfailIsFourAndEveryRejectIsFive) {
  // Invariant 2: the "when in doubt" replies are all 4xx.
  for (const Reply& reply :
       {replies::backend_unavailable(), replies::backend_lost(), replies::insufficient_resources(),
        replies::timeout("h"), replies::internal_error("h"), replies::shutting_down("h"),
        replies::too_many_connections("h"), replies::tls_not_available()}) {
    EXPECT_TRUE(reply.transient()) << reply.render();
    EXPECT_EQ(reply.enhanced.front(), '4') << reply.render();
  }
}

TEST(RepliesTest, ReplyWithReferenceRoundTripsThroughParse) {
  Reply reply = replies::relay_denied("u@evil.com");
  reply.add_reference("7Q3XK2PA");
  Reply parsed;
  ASSERT_TRUE(parse_reply(reply.render(), parsed));
  EXPECT_EQ(parsed.code, 550);
  EXPECT_EQ(parsed.enhanced, "5.7.1");
  EXPECT_EQ(parsed.text(), "<u@evil.com>: Relay access denied [ref 7Q3XK2PA]");
}

}  // namespace
}  // namespace mxgate::smtp

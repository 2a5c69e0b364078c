// Tests for splitting SMTP command lines into verb and argument.
#include "proxy/smtp/command.hpp"

#include <gtest/gtest.h>

namespace mxgate::smtp {
namespace {

TEST(CommandTest, MailKeepsFromInArgument) {
  const Command command = parse_command("MAIL FROM:<a@example.org> SIZE=100");
  EXPECT_EQ(command.verb, Verb::mail);
  EXPECT_EQ(command.argument, "FROM:<a@example.org> SIZE=100");
  EXPECT_EQ(command.verb_text, "MAIL");
}

TEST(CommandTest, RcptKeepsToInArgument) {
  const Command command = parse_command("RCPT TO:<b@example.org>");
  EXPECT_EQ(command.verb, Verb::rcpt);
  EXPECT_EQ(command.argument, "TO:<b@example.org>");
}

TEST(CommandTest, VerbsAreCaseInsensitive) {
  EXPECT_EQ(parse_command("ehlo client.example").verb, Verb::ehlo);
  EXPECT_EQ(parse_command("EhLo client.example").verb, Verb::ehlo);
  EXPECT_EQ(parse_command("starttls").verb, Verb::starttls);
  EXPECT_EQ(parse_command("mail from:<>").argument, "from:<>");
}

TEST(CommandTest, EveryVerb) {
  const std::pair<const char*, Verb> cases[] = {
      {"HELO", Verb::helo},         {"EHLO", Verb::ehlo}, {"MAIL", Verb::mail},
      {"RCPT", Verb::rcpt},         {"DATA", Verb::data}, {"BDAT", Verb::bdat},
      {"RSET", Verb::rset},         {"NOOP", Verb::noop}, {"QUIT", Verb::quit},
      {"HELP", Verb::help},         {"VRFY", Verb::vrfy}, {"EXPN", Verb::expn},
      {"STARTTLS", Verb::starttls}, {"AUTH", Verb::auth},
  };
  for (const auto& [text, verb] : cases) {
    const Command command = parse_command(text);
    EXPECT_EQ(command.verb, verb) << text;
    EXPECT_EQ(command.argument, "") << text;
    EXPECT_EQ(verb_name(verb), text);
  }
  EXPECT_EQ(verb_name(Verb::unknown), "unknown");
}

TEST(CommandTest, SeparatorsAndTrailingSpacesAreTrimmed) {
  Command command = parse_command("HELO   client.example   ");
  EXPECT_EQ(command.verb, Verb::helo);
  EXPECT_EQ(command.argument, "client.example");
  command = parse_command("DATA ");
  EXPECT_EQ(command.verb, Verb::data);
  EXPECT_EQ(command.argument, "");
  command = parse_command("NOOP\tfoo\t");
  EXPECT_EQ(command.verb, Verb::noop);
  EXPECT_EQ(command.argument, "foo");
}

TEST(CommandTest, InnerSpacesOfArgumentAreKept) {
  const Command command = parse_command("BDAT 1000  LAST");
  EXPECT_EQ(command.verb, Verb::bdat);
  EXPECT_EQ(command.argument, "1000  LAST");
}

TEST(CommandTest, UnknownVerbsKeepTheirText) {
  Command command = parse_command("XCLIENT ADDR=1.2.3.4");
  EXPECT_EQ(command.verb, Verb::unknown);
  EXPECT_EQ(command.verb_text, "XCLIENT");
  EXPECT_EQ(command.argument, "ADDR=1.2.3.4");

  command = parse_command("MAILFROM:<a@b>");  // no separator: not MAIL
  EXPECT_EQ(command.verb, Verb::unknown);
  EXPECT_EQ(command.verb_text, "MAILFROM:<a@b>");

  command = parse_command("DAT");
  EXPECT_EQ(command.verb, Verb::unknown);
  command = parse_command("DATAX");
  EXPECT_EQ(command.verb, Verb::unknown);
}

TEST(CommandTest, EmptyAndBlankLines) {
  Command command = parse_command("");
  EXPECT_EQ(command.verb, Verb::unknown);
  EXPECT_EQ(command.verb_text, "");
  EXPECT_EQ(command.argument, "");

  command = parse_command("   ");
  EXPECT_EQ(command.verb, Verb::unknown);
  EXPECT_EQ(command.argument, "");

  // A leading space is not a verb separator: " HELO x" is not HELO.
  command = parse_command(" HELO x");
  EXPECT_EQ(command.verb, Verb::unknown);
}

TEST(CommandTest, ViewsPointIntoTheLine) {
  const std::string line = "RCPT TO:<x@example.org>";
  const Command command = parse_command(line);
  EXPECT_EQ(command.verb_text.data(), line.data());
  EXPECT_EQ(command.argument.data(), line.data() + 5);
}

TEST(CommandTest, NonAsciiVerbIsUnknown) {
  const Command command = parse_command("\xc3\xa9HLO x");
  EXPECT_EQ(command.verb, Verb::unknown);
  EXPECT_EQ(command.argument, "x");
}

}  // namespace
}  // namespace mxgate::smtp

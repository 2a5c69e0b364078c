// Splits one SMTP command line into its verb and argument (RFC 5321 4.1.1), with the
// one table of verbs mxgate knows.
#include "proxy/smtp/command.hpp"

#include <array>
#include <utility>

namespace mxgate::smtp {

namespace {

constexpr std::array<std::pair<std::string_view, Verb>, 14> kVerbs{{
    {"HELO", Verb::helo},
    {"EHLO", Verb::ehlo},
    {"MAIL", Verb::mail},
    {"RCPT", Verb::rcpt},
    {"DATA", Verb::data},
    {"BDAT", Verb::bdat},
    {"RSET", Verb::rset},
    {"NOOP", Verb::noop},
    {"QUIT", Verb::quit},
    {"HELP", Verb::help},
    {"VRFY", Verb::vrfy},
    {"EXPN", Verb::expn},
    {"STARTTLS", Verb::starttls},
    {"AUTH", Verb::auth},
}};

// RFC 5321 4.1.1 says SP separates verb and argument; Postfix also accepts tabs and
// runs of blanks, and so do we (being stricter here only produces 500s for real MTAs).
bool is_blank(char c) { return c == ' ' || c == '\t'; }

char to_upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

bool equals_ignoring_case(std::string_view text, std::string_view upper) {
  if (text.size() != upper.size()) {
    return false;
  }
  for (std::size_t index = 0; index < text.size(); ++index) {
    if (to_upper(text[index]) != upper[index]) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string_view verb_name(Verb verb) {
  for (const auto& [name, value] : kVerbs) {
    if (value == verb) {
      return name;
    }
  }
  return "unknown";
}

Command parse_command(std::string_view line) {
  Command command;
  std::size_t verb_end = 0;
  while (verb_end < line.size() && !is_blank(line[verb_end])) {
    ++verb_end;
  }
  command.verb_text = line.substr(0, verb_end);
  for (const auto& [name, value] : kVerbs) {
    if (equals_ignoring_case(command.verb_text, name)) {
      command.verb = value;
      break;
    }
  }
  std::size_t argument_start = verb_end;
  while (argument_start < line.size() && is_blank(line[argument_start])) {
    ++argument_start;
  }
  std::size_t argument_end = line.size();
  while (argument_end > argument_start && is_blank(line[argument_end - 1])) {
    --argument_end;
  }
  command.argument = line.substr(argument_start, argument_end - argument_start);
  return command;
}

}  // namespace mxgate::smtp

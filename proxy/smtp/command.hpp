// Parsing of one SMTP command line (RFC 5321 4.1) into a verb and its argument.
#pragma once

#include <string_view>

namespace mxgate::smtp {

enum class Verb {
  helo, ehlo, mail, rcpt, data, bdat, rset, noop, quit, help, vrfy, expn, starttls, auth, unknown
};

std::string_view verb_name(Verb verb);   // "EHLO", ... "unknown"

struct Command {
  Verb verb = Verb::unknown;
  std::string_view argument;   // text after the verb and its separating space(s), trailing spaces trimmed
  std::string_view verb_text;  // the verb as sent (for logs of unknown commands)
};

// `line` is the command line WITHOUT its CRLF. Verbs are case-insensitive.
// "MAIL FROM:<a>" -> {mail, "FROM:<a>"}; "RCPT TO:<b>" -> {rcpt, "TO:<b>"}.
// Never fails: an unrecognised verb gives Verb::unknown.
Command parse_command(std::string_view line);

}  // namespace mxgate::smtp

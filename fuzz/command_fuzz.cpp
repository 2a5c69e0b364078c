// libFuzzer target for SMTP command line parsing, and for the MAIL/RCPT argument
// parsers reached through it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "proxy/smtp/address.hpp"
#include "proxy/smtp/command.hpp"
#include "proxy/smtp/reply.hpp"

namespace {
void check(bool condition) {
  if (!condition) {
    std::abort();
  }
}
bool is_blank(char c) { return c == ' ' || c == '\t'; }
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  const mxgate::smtp::Command command = mxgate::smtp::parse_command(line);
  // The views point into the line, and the argument is trimmed.
  check(command.verb_text.data() == line.data());
  check(command.argument.empty() ||
        (command.argument.data() >= line.data() &&
         command.argument.data() + command.argument.size() <= line.data() + line.size()));
  check(command.argument.empty() ||
        (!is_blank(command.argument.front()) && !is_blank(command.argument.back())));
  if (command.verb != mxgate::smtp::Verb::unknown) {
    check(command.verb_text.size() == mxgate::smtp::verb_name(command.verb).size());
  }

  mxgate::smtp::PathResult result;
  if (command.verb == mxgate::smtp::Verb::mail) {
    result = mxgate::smtp::parse_mail_from(command.argument, {});
  } else if (command.verb == mxgate::smtp::Verb::rcpt) {
    result = mxgate::smtp::parse_rcpt_to(command.argument, {});
  } else {
    return 0;
  }
  if (!result.ok) {
    // Every error is a well-formed single reply.
    mxgate::smtp::Reply parsed;
    check(mxgate::smtp::parse_reply(result.error.render(), parsed));
    check(parsed.code == result.error.code);
  }
  return 0;
}

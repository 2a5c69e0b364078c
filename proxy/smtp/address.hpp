// RFC 5321 path parsing for MAIL FROM and RCPT TO, with the ESMTP parameters mxgate
// supports. Parsing is strict about syntax and bounds but keeps enough of every odd
// form (source routes, % and ! forms, quoted local parts, literals) for the relay
// check to refuse them explicitly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/smtp/reply.hpp"

namespace mxgate::smtp {

struct AddressLimits {
  std::size_t max_local_part = 64;
  std::size_t max_domain = 255;
  std::size_t max_path = 256;
  bool smtputf8 = true;   // allow UTF-8 in local part and domain (RFC 6531)
};

struct Address {
  bool null_path = false;          // "<>"
  std::string local_part;          // as sent, quotes removed for quoted strings (unescaped)
  bool local_part_quoted = false;
  std::string domain;              // as sent (not lower-cased), without trailing dot
  bool domain_literal = false;     // "[192.0.2.1]" / "[IPv6:...]"; domain holds the brackets
  bool had_trailing_dot = false;
  bool had_source_route = false;   // "@a,@b:u@c"
  std::string source_route;        // "@a,@b" as sent
  std::string full() const;        // "local@domain" as it will be forwarded ("" for null path)
};

struct MailParameters {
  std::optional<std::uint64_t> size;    // SIZE=
  enum class Body { unspecified, seven_bit, eight_bit_mime, binary_mime } body = Body::unspecified;
  bool smtputf8 = false;
  // Others we pass through to the backend (e.g. ENVID=, RET=, NOTIFY=, ORCPT=), as sent.
  std::vector<std::string> passthrough;
};

struct PathResult {
  bool ok = false;
  Address address;
  MailParameters parameters;
  Reply error;   // set when !ok: 501 5.1.3 / 501 5.5.4 / 555 5.5.4 / 553 5.1.x
};

// `argument` is the text after the verb: "FROM:<a@b> SIZE=100", "TO:<u@d>".
// The "FROM:"/"TO:" prefix is case-insensitive; a space after ':' is tolerated
// (as Postfix does). RCPT accepts only NOTIFY= and ORCPT= parameters.
PathResult parse_mail_from(std::string_view argument, const AddressLimits& limits);
PathResult parse_rcpt_to(std::string_view argument, const AddressLimits& limits);

}  // namespace mxgate::smtp

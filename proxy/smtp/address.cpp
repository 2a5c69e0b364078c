// RFC 5321 4.1.2 path syntax (with RFC 6531 UTF-8 and 4.5.3.1 size limits) and the
// MAIL/RCPT ESMTP parameters. Odd but legal forms are parsed and flagged, not judged:
// the relay check decides what to do with them.
#include "proxy/smtp/address.hpp"

#include <arpa/inet.h>

#include <array>
#include <cstring>
#include <utility>

namespace mxgate::smtp {

namespace {

enum class PathKind { mail, rcpt };

constexpr std::string_view kMailUsage = "MAIL FROM:<address>";
constexpr std::string_view kRcptUsage = "RCPT TO:<address>";

bool is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
char to_upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

bool starts_with_ignoring_case(std::string_view text, std::string_view upper_prefix) {
  if (text.size() < upper_prefix.size()) {
    return false;
  }
  for (std::size_t index = 0; index < upper_prefix.size(); ++index) {
    if (to_upper(text[index]) != upper_prefix[index]) {
      return false;
    }
  }
  return true;
}

bool equals_ignoring_case(std::string_view text, std::string_view upper) {
  return text.size() == upper.size() && starts_with_ignoring_case(text, upper);
}

// RFC 5322 3.2.3 atext, used by RFC 5321's Atom.
bool is_atext(unsigned char c) {
  if (is_alpha(c) || is_digit(c)) {
    return true;
  }
  static constexpr std::string_view specials = "!#$%&'*+-/=?^_`{|}~";
  return c != 0 && specials.find(static_cast<char>(c)) != std::string_view::npos;
}

// Length of the well-formed UTF-8 sequence (RFC 3629 4, no overlongs, no surrogates)
// starting at text[position], which is a non-ASCII byte; 0 when malformed.
std::size_t utf8_sequence_length(std::string_view text, std::size_t position) {
  const auto byte = [&](std::size_t offset) -> unsigned {
    return static_cast<unsigned char>(text[position + offset]);
  };
  const std::size_t available = text.size() - position;
  const unsigned first = byte(0);
  std::size_t length = 0;
  unsigned low = 0x80;
  unsigned high = 0xBF;
  if (first >= 0xC2 && first <= 0xDF) {
    length = 2;
  } else if (first >= 0xE0 && first <= 0xEF) {
    length = 3;
    if (first == 0xE0) {
      low = 0xA0;
    } else if (first == 0xED) {
      high = 0x9F;
    }
  } else if (first >= 0xF0 && first <= 0xF4) {
    length = 4;
    if (first == 0xF0) {
      low = 0x90;
    } else if (first == 0xF4) {
      high = 0x8F;
    }
  } else {
    return 0;
  }
  if (available < length) {
    return 0;
  }
  if (byte(1) < low || byte(1) > high) {
    return 0;
  }
  for (std::size_t offset = 2; offset < length; ++offset) {
    if (byte(offset) < 0x80 || byte(offset) > 0xBF) {
      return 0;
    }
  }
  return length;
}

// Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str] (RFC 5321
// 4.1.2), or a U-label when SMTPUTF8 is allowed (RFC 6531 3.3). Labels are at most
// 63 octets (RFC 1035 2.3.4). `domain` has no trailing dot.
bool valid_domain(std::string_view domain, bool allow_utf8) {
  if (domain.empty()) {
    return false;
  }
  std::size_t label_start = 0;
  std::size_t position = 0;
  while (true) {
    if (position == domain.size() || domain[position] == '.') {
      const std::size_t label_length = position - label_start;
      if (label_length == 0 || label_length > 63 || domain[label_start] == '-' ||
          domain[position - 1] == '-') {
        return false;
      }
      if (position == domain.size()) {
        return true;
      }
      ++position;
      label_start = position;
      continue;
    }
    const auto c = static_cast<unsigned char>(domain[position]);
    if (is_alpha(c) || is_digit(c) || c == '-') {
      ++position;
    } else if (c >= 0x80 && allow_utf8) {
      const std::size_t length = utf8_sequence_length(domain, position);
      if (length == 0) {
        return false;
      }
      position += length;
    } else {
      return false;
    }
  }
}

// address-literal = "[" ( IPv4-address-literal / IPv6-address-literal ) "]" (RFC 5321
// 4.1.3). General-address-literal tags are not accepted: nothing could route them.
bool valid_address_literal(std::string_view literal) {
  if (literal.size() < 3 || literal.front() != '[' || literal.back() != ']') {
    return false;
  }
  std::string_view inner = literal.substr(1, literal.size() - 2);
  int family = AF_INET;
  if (starts_with_ignoring_case(inner, "IPV6:")) {
    family = AF_INET6;
    inner.remove_prefix(5);
  }
  std::array<char, 64> text{};
  if (inner.empty() || inner.size() >= text.size()) {
    return false;
  }
  std::memcpy(text.data(), inner.data(), inner.size());
  std::array<unsigned char, 16> binary{};
  return inet_pton(family, text.data(), binary.data()) == 1;
}

// The '>' that closes the path, skipping quoted strings (a quoted local part may hold
// '>' and escaped quotes); npos when there is none.
std::size_t find_path_end(std::string_view text) {
  bool quoted = false;
  for (std::size_t position = 1; position < text.size(); ++position) {
    const char c = text[position];
    if (quoted && c == '\\') {
      ++position;
    } else if (c == '"') {
      quoted = !quoted;
    } else if (c == '>' && !quoted) {
      return position;
    }
  }
  return std::string_view::npos;
}

// Fills `address` from the text between '<' and '>' (not empty). Returns an empty
// optional on success.
std::optional<Reply> parse_mailbox(std::string_view inner, PathKind kind,
                                   const AddressLimits& limits, Address& address) {
  // A-d-l (source route, RFC 5321 4.1.2 and appendix C): kept as sent and flagged; the
  // relay check refuses it, a sender route is simply ignored downstream.
  if (inner.front() == '@') {
    const std::size_t colon = inner.find(':');
    if (colon == std::string_view::npos) {
      return replies::bad_address_syntax("source route");
    }
    std::string_view route = inner.substr(0, colon);
    std::string_view rest = route;
    while (!rest.empty()) {
      const std::size_t comma = rest.find(',');
      std::string_view hop = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
      if (comma != std::string_view::npos && rest.empty()) {
        return replies::bad_address_syntax("source route");
      }
      if (hop.size() < 2 || hop.front() != '@') {
        return replies::bad_address_syntax("source route");
      }
      hop.remove_prefix(1);
      if (hop.back() == '.') {
        hop.remove_suffix(1);
      }
      if (!valid_domain(hop, limits.smtputf8)) {
        return replies::bad_address_syntax("source route");
      }
    }
    address.had_source_route = true;
    address.source_route = std::string(route);
    inner.remove_prefix(colon + 1);
    if (inner.empty()) {
      return replies::bad_address_syntax("");
    }
  }

  bool non_ascii = false;
  std::size_t position = 0;
  if (inner.front() == '"') {
    // Quoted-string = DQUOTE *QcontentSMTP DQUOTE; quoted-pairSMTP = "\" %d32-126.
    position = 1;
    bool closed = false;
    while (position < inner.size()) {
      const auto c = static_cast<unsigned char>(inner[position]);
      if (c == '"') {
        closed = true;
        ++position;
        break;
      }
      if (c == '\\') {
        if (position + 1 >= inner.size()) {
          break;
        }
        const auto escaped = static_cast<unsigned char>(inner[position + 1]);
        if (escaped < 32 || escaped > 126) {
          return replies::bad_address_syntax("");
        }
        address.local_part.push_back(static_cast<char>(escaped));
        position += 2;
      } else if (c >= 32 && c <= 126) {
        address.local_part.push_back(static_cast<char>(c));
        ++position;
      } else if (c >= 0x80) {
        const std::size_t length = utf8_sequence_length(inner, position);
        if (length == 0) {
          return replies::bad_address_syntax("");
        }
        non_ascii = true;
        address.local_part.append(inner.substr(position, length));
        position += length;
      } else {
        return replies::bad_address_syntax("");
      }
    }
    if (!closed) {
      return replies::bad_address_syntax("");
    }
    address.local_part_quoted = true;
  } else {
    // Dot-string = Atom *("." Atom).
    bool previous_dot = true;  // a leading dot is as wrong as a doubled one
    while (position < inner.size() && inner[position] != '@') {
      const auto c = static_cast<unsigned char>(inner[position]);
      if (c == '.') {
        if (previous_dot) {
          return replies::bad_address_syntax("");
        }
        previous_dot = true;
        ++position;
        continue;
      }
      if (is_atext(c)) {
        ++position;
      } else if (c >= 0x80) {
        const std::size_t length = utf8_sequence_length(inner, position);
        if (length == 0) {
          return replies::bad_address_syntax("");
        }
        non_ascii = true;
        position += length;
      } else {
        return replies::bad_address_syntax("");
      }
      previous_dot = false;
    }
    if (position == 0 || previous_dot) {
      return replies::bad_address_syntax("");
    }
    address.local_part = std::string(inner.substr(0, position));
  }
  // RFC 5321 4.5.3.1.1 counts the local part as sent (quotes and escapes included).
  if (position > limits.max_local_part) {
    return replies::bad_address_syntax("local part too long");
  }

  if (position == inner.size()) {
    // RFC 5321 4.1.1.3: "<Postmaster>" without a domain is a valid recipient. The
    // relay check decides what to do with a recipient without domain.
    if (kind == PathKind::rcpt && !address.had_source_route && !address.local_part_quoted &&
        equals_ignoring_case(address.local_part, "POSTMASTER")) {
      return std::nullopt;
    }
    return replies::bad_address_syntax("missing domain");
  }
  if (inner[position] != '@') {
    return replies::bad_address_syntax("");
  }
  std::string_view domain = inner.substr(position + 1);
  if (!domain.empty() && domain.front() == '[') {
    if (domain.size() > limits.max_domain) {
      return replies::bad_address_syntax("domain too long");
    }
    if (!valid_address_literal(domain)) {
      return replies::bad_address_syntax("bad address literal");
    }
    address.domain_literal = true;
  } else {
    // A trailing dot names the same (absolute) domain; strip it so that every later
    // comparison sees one spelling (invariant 3).
    if (!domain.empty() && domain.back() == '.') {
      address.had_trailing_dot = true;
      domain.remove_suffix(1);
    }
    if (domain.size() > limits.max_domain) {
      return replies::bad_address_syntax("domain too long");
    }
    for (char c : domain) {
      if (static_cast<unsigned char>(c) >= 0x80) {
        non_ascii = true;
        break;
      }
    }
    // UTF-8 is judged once, below, so that it gets the same reply wherever it is.
    if (!valid_domain(domain, /*allow_utf8=*/true)) {
      return replies::bad_address_syntax("bad domain");
    }
  }
  if (non_ascii && !limits.smtputf8) {
    // RFC 6531 3.7.4.1 names this status for addresses that need SMTPUTF8.
    return Reply(553, "5.6.7", "Non-ASCII address not permitted");
  }
  address.domain = std::string(domain);
  return std::nullopt;
}

// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") (RFC 5321 4.1.2).
bool valid_keyword(std::string_view keyword) {
  if (keyword.empty()) {
    return false;
  }
  for (std::size_t index = 0; index < keyword.size(); ++index) {
    const auto c = static_cast<unsigned char>(keyword[index]);
    if (!is_alpha(c) && !is_digit(c) && !(c == '-' && index > 0)) {
      return false;
    }
  }
  return true;
}

// esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 under RFC 6531 3.3.
bool valid_value(std::string_view value, bool allow_utf8) {
  if (value.empty()) {
    return false;
  }
  for (std::size_t position = 0; position < value.size();) {
    const auto c = static_cast<unsigned char>(value[position]);
    if (c >= 33 && c <= 126 && c != '=') {
      ++position;
    } else if (c >= 0x80 && allow_utf8) {
      const std::size_t length = utf8_sequence_length(value, position);
      if (length == 0) {
        return false;
      }
      position += length;
    } else {
      return false;
    }
  }
  return true;
}

std::string joined(std::string_view first, std::string_view second) {
  std::string text(first);
  text += second;
  return text;
}

std::optional<Reply> parse_parameters(std::string_view text, PathKind kind,
                                      const AddressLimits& limits, MailParameters& parameters) {
  // Which known keywords were seen, to refuse a repeated one (RFC 1870 and RFC 3461
  // give each parameter once).
  std::array<std::string_view, 8> seen{};
  std::size_t seen_count = 0;
  while (!text.empty()) {
    if (text.front() == ' ') {
      text.remove_prefix(1);
      continue;
    }
    const std::size_t end = text.find(' ');
    const std::string_view token = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end);
    const std::size_t equals = token.find('=');
    const std::string_view keyword = token.substr(0, equals);
    const bool has_value = equals != std::string_view::npos;
    const std::string_view value = has_value ? token.substr(equals + 1) : std::string_view{};
    if (!valid_keyword(keyword) || (has_value && !valid_value(value, limits.smtputf8))) {
      return replies::syntax(joined("bad parameter ", token));
    }

    std::string_view known;
    if (kind == PathKind::mail) {
      for (std::string_view name : {"SIZE", "BODY", "SMTPUTF8", "ENVID", "RET", "AUTH"}) {
        if (equals_ignoring_case(keyword, name)) {
          known = name;
        }
      }
      if (known == "SMTPUTF8" && !limits.smtputf8) {
        known = {};  // not advertised, so not a parameter we know (RFC 6531 3.4)
      }
    } else {
      for (std::string_view name : {"NOTIFY", "ORCPT"}) {
        if (equals_ignoring_case(keyword, name)) {
          known = name;
        }
      }
    }
    if (known.empty()) {
      return replies::parameter_unknown(token);
    }
    for (std::size_t index = 0; index < seen_count; ++index) {
      if (seen[index] == known) {
        return replies::syntax(joined("duplicate parameter ", known));
      }
    }
    seen[seen_count++] = known;

    if (known == "SIZE") {
      // RFC 1870 4: size-value = 1*20DIGIT; a value that does not fit is not a size.
      std::uint64_t size = 0;
      bool valid = has_value && value.size() <= 20;
      for (char c : value) {
        if (!valid) {
          break;
        }
        const auto digit = static_cast<unsigned char>(c);
        if (!is_digit(digit) || size > (UINT64_MAX - (digit - '0')) / 10) {
          valid = false;
        } else {
          size = size * 10 + (digit - '0');
        }
      }
      if (!valid) {
        return replies::syntax("bad SIZE parameter");
      }
      parameters.size = size;
    } else if (known == "BODY") {
      // RFC 6152 (8BITMIME) and RFC 3030 (BINARYMIME).
      if (equals_ignoring_case(value, "7BIT")) {
        parameters.body = MailParameters::Body::seven_bit;
      } else if (equals_ignoring_case(value, "8BITMIME")) {
        parameters.body = MailParameters::Body::eight_bit_mime;
      } else if (equals_ignoring_case(value, "BINARYMIME")) {
        parameters.body = MailParameters::Body::binary_mime;
      } else {
        return replies::syntax("bad BODY parameter");
      }
    } else if (known == "SMTPUTF8") {
      if (has_value) {  // RFC 6531 3.4: the parameter takes no value
        return replies::syntax("bad SMTPUTF8 parameter");
      }
      parameters.smtputf8 = true;
    } else {
      // ENVID, RET, AUTH, NOTIFY, ORCPT: the backend judges their values.
      if (!has_value) {
        return replies::syntax(joined("bad parameter ", token));
      }
      parameters.passthrough.emplace_back(token);
    }
  }
  return std::nullopt;
}

PathResult parse_path(std::string_view argument, PathKind kind, const AddressLimits& limits) {
  PathResult result;
  const std::string_view usage = kind == PathKind::mail ? kMailUsage : kRcptUsage;
  const std::string_view prefix = kind == PathKind::mail ? "FROM:" : "TO:";
  if (!starts_with_ignoring_case(argument, prefix)) {
    result.error = replies::syntax(usage);
    return result;
  }
  argument.remove_prefix(prefix.size());
  // "MAIL FROM: <a@b>" is common (Postfix tolerates it unless strict_rfc821_envelopes).
  while (!argument.empty() && argument.front() == ' ') {
    argument.remove_prefix(1);
  }
  if (argument.empty() || argument.front() != '<') {
    result.error = replies::syntax(usage);
    return result;
  }
  const std::size_t close = find_path_end(argument);
  if (close == std::string_view::npos) {
    result.error = replies::syntax(usage);
    return result;
  }
  // RFC 5321 4.5.3.1.3: the path, with its angle brackets.
  if (close + 1 > limits.max_path) {
    result.error = replies::bad_address_syntax("path too long");
    return result;
  }
  const std::string_view inner = argument.substr(1, close - 1);
  const std::string_view rest = argument.substr(close + 1);
  if (!rest.empty() && rest.front() != ' ') {
    result.error = replies::syntax(usage);
    return result;
  }

  if (inner.empty()) {
    if (kind == PathKind::rcpt) {
      result.error = replies::bad_address_syntax("empty recipient");
      return result;
    }
    result.address.null_path = true;
  } else if (auto error = parse_mailbox(inner, kind, limits, result.address)) {
    result.error = std::move(*error);
    result.address = Address{};
    return result;
  }
  if (auto error = parse_parameters(rest, kind, limits, result.parameters)) {
    result.error = std::move(*error);
    result.address = Address{};
    result.parameters = MailParameters{};
    return result;
  }
  result.ok = true;
  return result;
}

}  // namespace

std::string Address::full() const {
  if (null_path) {
    return {};
  }
  std::string text;
  if (local_part_quoted) {
    // Re-quote exactly as RFC 5321 4.1.2 allows: only '"' and '\' need escaping.
    text.push_back('"');
    for (char c : local_part) {
      if (c == '"' || c == '\\') {
        text.push_back('\\');
      }
      text.push_back(c);
    }
    text.push_back('"');
  } else {
    text = local_part;
  }
  if (!domain.empty()) {
    text.push_back('@');
    text += domain;
  }
  return text;
}

PathResult parse_mail_from(std::string_view argument, const AddressLimits& limits) {
  return parse_path(argument, PathKind::mail, limits);
}

PathResult parse_rcpt_to(std::string_view argument, const AddressLimits& limits) {
  return parse_path(argument, PathKind::rcpt, limits);
}

}  // namespace mxgate::smtp

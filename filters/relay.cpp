// The relay gate (invariant 3): decides whether a parsed RCPT address may be accepted,
// refusing every address form that could route mail to a domain we do not serve.
#include "filters/relay.hpp"

namespace mxgate::filters {

namespace {

char to_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool equals_ignoring_case(std::string_view left, std::string_view right) {
  if (left.size() != right.size()) {
    return false;
  }
  for (std::size_t index = 0; index < left.size(); ++index) {
    if (to_lower(left[index]) != to_lower(right[index])) {
      return false;
    }
  }
  return true;
}

// Letters, digits, '-' and UTF-8 bytes in non-empty dot-separated labels. The parser
// already checked the full syntax; this guards against an Address built elsewhere.
bool plausible_domain(std::string_view domain) {
  if (domain.empty() || domain.front() == '.' || domain.back() == '.') {
    return false;
  }
  char previous = '.';
  for (char c : domain) {
    const auto byte = static_cast<unsigned char>(c);
    const bool label_char = (byte >= 'a' && byte <= 'z') || (byte >= 'A' && byte <= 'Z') ||
                            (byte >= '0' && byte <= '9') || byte == '-' || byte >= 0x80;
    if (c == '.') {
      if (previous == '.') {
        return false;
      }
    } else if (!label_char) {
      return false;
    }
    previous = c;
  }
  return true;
}

bool matches_relay_domain(std::string_view domain, std::string_view entry) {
  if (!entry.empty() && entry.back() == '.') {
    entry.remove_suffix(1);
  }
  if (entry.empty()) {
    return false;
  }
  if (entry.front() == '.') {
    // ".example.org": any subdomain, never the parent itself.
    return domain.size() > entry.size() &&
           equals_ignoring_case(domain.substr(domain.size() - entry.size()), entry);
  }
  return equals_ignoring_case(domain, entry);
}

RelayDecision refuse(std::string reason) { return RelayDecision{false, std::move(reason)}; }

}  // namespace

RelayDecision check_relay(const smtp::Address& recipient, const RelayPolicy& policy) {
  if (recipient.null_path) {
    return refuse("null recipient");
  }
  // RFC 5321 appendix C: a receiver may ignore the route, but a later hop might not.
  if (recipient.had_source_route || !recipient.source_route.empty()) {
    return refuse("source route");
  }
  // "u%other@ours" and "other!u@ours" are routing syntaxes (sendmail's percent hack,
  // UUCP bang paths) that some backends still honour; RFC 5321 3.6.1 leaves them to
  // local policy, and ours is no.
  const std::string_view local_part = recipient.local_part;
  if (local_part.find('%') != std::string_view::npos) {
    return refuse("percent hack");
  }
  if (local_part.find('!') != std::string_view::npos) {
    return refuse("bang path");
  }
  if (local_part.find('@') != std::string_view::npos) {
    return refuse("quoted local part with @");
  }

  std::string_view domain = recipient.domain;
  if (recipient.domain_literal || (!domain.empty() && domain.front() == '[')) {
    if (policy.allow_address_literals) {
      for (const std::string& entry : policy.relay_domains) {
        if (equals_ignoring_case(domain, entry)) {
          return RelayDecision{true, "relay domain"};
        }
      }
    }
    return refuse("address literal");
  }
  if (!domain.empty() && domain.back() == '.') {
    domain.remove_suffix(1);
  }
  if (domain.empty()) {
    return refuse("empty domain");
  }
  if (!plausible_domain(domain)) {
    return refuse("bad domain");
  }
  for (const std::string& entry : policy.relay_domains) {
    if (matches_relay_domain(domain, entry)) {
      return RelayDecision{true, "relay domain"};
    }
  }
  return refuse("unknown domain");
}

}  // namespace mxgate::filters

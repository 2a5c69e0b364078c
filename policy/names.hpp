// Validation and normalisation of the names admins write in policy: domains, mail
// addresses, rule names; and the "did you mean" suggestion for typos. Pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mxgate::policy {

// ASCII case folding (domains, keywords, SMTP verbs): the one copy every part uses.
std::string ascii_lower(std::string_view text);

// Lower-cases `domain` and removes one trailing dot. On failure returns false and sets
// `error` to a full sentence naming the input ("'exa mple.org' is not a valid domain
// name: invalid character ' '"). IDN domains must be given in their xn-- form.
bool normalize_domain(std::string& domain, std::string& error);

// A domain as a list entry: "example.org", or ".example.org" for its subdomains only (as
// in Postfix lookup tables); normalised as above, the leading dot kept.
bool normalize_domain_entry(std::string& entry, std::string& error);

// An address literal as written after '@' (RFC 5321 4.1.3): "[192.0.2.1]" or
// "[IPv6:2001:db8::1]".
bool valid_address_literal(std::string_view text, std::string& error);

// "local@domain" with the domain normalised as above (the local part keeps its case:
// RFC 5321 2.4 lets the receiving host decide). "<>" (the null sender) is accepted.
bool normalize_address(std::string& address, std::string& error);

// Rule names appear in logs and in `mxgate logs` queries: 1-64 characters of
// [A-Za-z0-9._:-], so a grep or a shell never needs quoting.
bool valid_rule_name(std::string_view name, std::string& error);

// Optimal-string-alignment distance (a transposition counts as one edit).
std::size_t edit_distance(std::string_view first, std::string_view second);

// The candidate that `word` is most likely a typo of, if any is close enough.
std::optional<std::string> nearest_word(std::string_view word,
                                        const std::vector<std::string>& candidates);

}  // namespace mxgate::policy

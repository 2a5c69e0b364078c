// The relay gate (invariant 3: no open relay): a recipient is accepted only for a
// configured relay domain, whatever form the address takes.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "proxy/smtp/address.hpp"

namespace mxgate::filters {

struct RelayPolicy {
  std::vector<std::string> relay_domains;  // lower-case, no trailing dot
  bool allow_address_literals = false;
};

struct RelayDecision {
  bool allowed = false;
  std::string reason;  // for the log: "source route", "percent hack", "unknown domain", ...
};

// Refuses, each with its own reason for the log:
// - the null path as a recipient ("null recipient");
// - source routes "@a,@b:u@c" ("source route"), whatever the final domain;
// - '%' ("percent hack") or '!' ("bang path") anywhere in the local part, quoted or
//   not, and '@' inside a quoted local part ("quoted local part with @"): a later hop
//   could turn any of them into a new destination;
// - address literals "[192.0.2.1]" ("address literal"), unless allow_address_literals
//   is true AND the literal appears verbatim (compared case-insensitively, brackets
//   included, "[IPv6:...]" not normalised) in relay_domains;
// - an empty domain ("empty domain"), a domain with characters other than letters,
//   digits, '-', '.' and UTF-8 label bytes or with an empty label ("bad domain");
// - a domain not in relay_domains ("unknown domain").
// Matching is case-insensitive (ASCII) and ignores one trailing dot. An entry matches
// only that exact domain, except an entry starting with '.' (".example.org"), which
// matches every subdomain (a.example.org, a.b.example.org) but not example.org itself
// (Postfix's ".domain" form, with parent_domain_matches_subdomains off).
// An allowed recipient gets reason "relay domain".
RelayDecision check_relay(const smtp::Address& recipient, const RelayPolicy& policy);

}  // namespace mxgate::filters

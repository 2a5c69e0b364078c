// libFuzzer target for RFC 5321 path parsing and the relay gate: parsed addresses
// must re-parse to themselves, and the relay gate never lets an odd form through.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "filters/relay.hpp"
#include "proxy/smtp/address.hpp"
#include "proxy/smtp/reply.hpp"

namespace {
void check(bool condition) {
  if (!condition) {
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  mxgate::smtp::AddressLimits limits;
  limits.smtputf8 = (data[0] & 1) != 0;
  const bool rcpt = (data[0] & 2) != 0;
  const std::string_view argument(reinterpret_cast<const char*>(data) + 1, size - 1);
  const mxgate::smtp::PathResult result = rcpt ? mxgate::smtp::parse_rcpt_to(argument, limits)
                                               : mxgate::smtp::parse_mail_from(argument, limits);
  if (!result.ok) {
    mxgate::smtp::Reply parsed;
    check(mxgate::smtp::parse_reply(result.error.render(), parsed));
    check(result.error.code == 501 || result.error.code == 553 || result.error.code == 555);
    return 0;
  }
  const mxgate::smtp::Address& address = result.address;
  check(address.domain.size() <= limits.max_domain);
  check(address.domain.empty() || address.domain.back() != '.' || address.domain_literal);
  check(!address.null_path || !rcpt);

  // What we forward parses back to the same address.
  const std::string full = address.full();
  if (!address.null_path) {
    const std::string again_argument = "TO:<" + full + ">";
    const mxgate::smtp::PathResult again = mxgate::smtp::parse_rcpt_to(again_argument, limits);
    check(again.ok);
    check(again.address.full() == full);
    check(again.address.local_part == address.local_part);
    check(again.address.domain == address.domain);
    check(!again.address.had_source_route);
  }

  if (rcpt) {
    mxgate::filters::RelayPolicy policy;
    policy.relay_domains = {"example.org", ".example.net"};
    const mxgate::filters::RelayDecision decision = mxgate::filters::check_relay(address, policy);
    if (decision.allowed) {
      // Invariant 3: only plain local parts at our domains get through.
      check(!address.had_source_route && !address.domain_literal);
      check(address.local_part.find_first_of("%!@") == std::string::npos);
      std::string domain;
      for (char c : address.domain) {
        domain.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
      }
      check(domain == "example.org" || (domain.size() > 12 && domain.ends_with(".example.net")));
    }
  }
  return 0;
}

// What a filter may know about the SMTP session: a read-only snapshot kept up to
// date by the proxy. Filters never see sockets or the state machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "filters/verdict.hpp"

namespace mxgate::filters {

// How the client's name was settled: reverse DNS with forward confirmation, Postfix's
// "unknown" client split into its causes.
enum class ClientNameStatus {
  unknown,     // not looked up (dns.reverse_lookup off, not an IP) or not finished yet
  verified,    // a PTR name that resolves back to the client's address
  no_ptr,      // the address has no PTR record
  unverified,  // PTR names, none resolving back to the address
  tempfail,    // a DNS error or timeout (XCLIENT NAME=[TEMPUNAVAIL])
};

struct SessionContext {
  std::string session_id;        // also the prefix of log refs
  std::string client_ip;         // textual, after PROXY protocol
  std::uint16_t client_port = 0;
  bool client_is_ipv6 = false;
  std::string client_name;       // verified PTR name, empty when unknown
  std::string client_ptr;        // the first PTR name, verified or not (for the log)
  ClientNameStatus client_name_status = ClientNameStatus::unknown;
  std::string helo;              // as sent (EHLO/HELO argument)
  bool esmtp = false;
  bool tls = false;
  std::string sender;            // "local@domain", "" for the null sender
  std::string sender_domain;     // lower-case
  std::vector<std::string> recipients;   // accepted so far
  std::string recipient;         // the one being judged at the rcpt stage
  const std::string* message = nullptr;  // canonical content at the data stage
  // Outcome counters, final at the close stage.
  int messages_accepted = 0;     // backend said 2xx to the dot
  int messages_rejected = 0;     // by a filter or the backend
  int recipients_rejected = 0;
  int protocol_errors = 0;
  bool early_talker = false;
  // The pipeline's score sheet so far (set by the proxy): lets a filter see what earlier
  // filters found, e.g. greylisting skips clients a DNS allowlist vouched for.
  const std::vector<Contribution>* score_sheet = nullptr;
};

}  // namespace mxgate::filters

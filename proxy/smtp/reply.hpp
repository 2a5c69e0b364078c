// SMTP replies as values: code, RFC 3463 enhanced status code, text. Every reply
// mxgate sends is built here or relayed verbatim from the backend.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mxgate::smtp {

struct Reply {
  int code = 0;               // 220, 250, 421, 550, ...
  std::string enhanced;       // "5.7.1"; empty for 220/221 greeting-style replies without one
  std::vector<std::string> lines;  // text lines, without code/enhanced prefix, no CRLF

  Reply() = default;
  Reply(int code, std::string enhanced, std::string text);

  bool positive() const { return code >= 200 && code < 400; }
  bool transient() const { return code >= 400 && code < 500; }
  bool permanent() const { return code >= 500; }
  // Wire form: "250-first\r\n250 last\r\n"; the enhanced code is repeated on every line.
  std::string render() const;
  void append_to(std::string& out) const;
  // The first line's text joined with the rest by "; " (for logs).
  std::string text() const;
  // Adds " [ref XXXX]" to the last line.
  void add_reference(std::string_view ref);
};

// Parses the backend's (multi-line) reply text; false when malformed.
// `wire` holds complete lines each ending in CRLF; `enhanced` is split off when present.
bool parse_reply(std::string_view wire, Reply& out);

// Canonical replies, one place for their wording.
namespace replies {
Reply greeting(std::string_view hostname, std::string_view banner);    // 220 host ESMTP
Reply ok();                                   // 250 2.0.0 Ok
Reply sender_ok();                            // 250 2.1.0 Ok
Reply recipient_ok();                         // 250 2.1.5 Ok
Reply start_data();                           // 354 End data with <CR><LF>.<CR><LF>
Reply bye(std::string_view hostname);         // 221 2.0.0 Bye
Reply ready_to_start_tls();                   // 220 2.0.0 Ready to start TLS
Reply vrfy();                                 // 252 2.5.2 Cannot VRFY user, but will accept message
Reply help();                                 // 214 2.0.0 ...
Reply unknown_command();                      // 500 5.5.2 Error: command not recognized
Reply line_too_long();                        // 500 5.5.2 Error: line too long
Reply bad_sequence(std::string_view what);    // 503 5.5.1 Error: <what>
Reply syntax(std::string_view what);          // 501 5.5.4 Syntax: <what>
Reply bad_address_syntax(std::string_view w); // 501 5.1.3 Bad address syntax (<w>)
Reply parameter_unknown(std::string_view p);  // 555 5.5.4 Unsupported option: <p>
Reply bare_newline_command();                 // 500 5.5.2 Error: bare <CR> or <LF> or NUL in command
Reply bare_newline_data();                    // 550 5.5.2 Error: bare <CR> or <LF> or NUL in message
Reply relay_denied(std::string_view rcpt);    // 550 5.7.1 <rcpt>: Relay access denied
Reply too_many_recipients();                  // 452 4.5.3 Error: too many recipients
Reply message_too_big();                      // 552 5.3.4 Error: message file too big
Reply insufficient_resources();               // 452 4.3.1 Insufficient system storage
Reply too_many_errors(std::string_view host); // 421 4.7.0 <host> Error: too many errors
Reply timeout(std::string_view host);         // 421 4.4.2 <host> Error: timeout exceeded
Reply too_many_connections(std::string_view host);       // 421 4.7.0 <host> Error: too many connections
Reply too_many_connections_from_ip(std::string_view host); // 421 4.7.0 ... from your address
Reply pipelining_violation();                 // 554 5.5.0 Error: SMTP protocol synchronization
Reply backend_unavailable();                  // 451 4.3.0 Error: queue file write error / try again later
Reply backend_lost();                         // 421 4.4.2 ... backend connection lost
Reply shutting_down(std::string_view host);   // 421 4.3.2 <host> Service shutting down
Reply internal_error(std::string_view host);  // 421 4.3.0 <host> Error: internal error
Reply tls_not_available();                    // 454 4.7.0 TLS not available
Reply tls_already_active();                   // 503 5.5.1 Error: TLS already active
Reply line_too_long_data();                   // 550 5.6.0 Error: message line too long
Reply message_limit_reached();                // 452 4.5.3 Error: too many messages in this session
}  // namespace replies

}  // namespace mxgate::smtp

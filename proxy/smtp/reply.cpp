// SMTP reply values: rendering to the wire (RFC 5321 4.2), parsing the backend's
// replies, and the one table of wording for every reply mxgate itself sends.
#include "proxy/smtp/reply.hpp"

#include <string>
#include <utility>

namespace mxgate::smtp {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Reply text is sent inside one reply line: a CR or LF in it (from a client-supplied
// address echoed back, say) must not start a new line on the wire.
void append_sanitized(std::string& out, std::string_view text) {
  for (char c : text) {
    out.push_back(c == '\r' || c == '\n' || c == '\0' ? ' ' : c);
  }
}

// RFC 3463 2: class "." subject "." detail, subject and detail 1-3 digits, class
// 2, 4 or 5. RFC 2034 3 requires the class to match the reply code's first digit.
// Returns the length of the code at the start of `text` (0 when there is none); the
// code must be followed by a space or the end of the text.
std::size_t enhanced_code_length(std::string_view text, char reply_class) {
  if (text.size() < 5 || text[0] != reply_class || text[1] != '.') {
    return 0;
  }
  std::size_t position = 2;
  for (int part = 0; part < 2; ++part) {
    std::size_t digits = 0;
    while (position < text.size() && is_digit(text[position]) && digits < 4) {
      ++position;
      ++digits;
    }
    if (digits == 0 || digits > 3) {
      return 0;
    }
    if (part == 0) {
      if (position >= text.size() || text[position] != '.') {
        return 0;
      }
      ++position;
    }
  }
  if (position < text.size() && text[position] != ' ') {
    return 0;
  }
  return position;
}

}  // namespace

Reply::Reply(int code_value, std::string enhanced_value, std::string text)
    : code(code_value), enhanced(std::move(enhanced_value)) {
  lines.push_back(std::move(text));
}

void Reply::append_to(std::string& out) const {
  const std::string code_text = std::to_string(code);
  const std::size_t count = lines.empty() ? 1 : lines.size();
  for (std::size_t index = 0; index < count; ++index) {
    const bool last = index + 1 == count;
    out += code_text;
    out.push_back(last ? ' ' : '-');
    std::string_view text = lines.empty() ? std::string_view{} : std::string_view{lines[index]};
    if (!enhanced.empty()) {
      out += enhanced;
      if (!text.empty()) {
        out.push_back(' ');
      }
    }
    append_sanitized(out, text);
    // "250 \r\n" is legal but odd; drop the space when a last line has no text at all.
    if (last && enhanced.empty() && text.empty()) {
      out.pop_back();
    }
    out += "\r\n";
  }
}

std::string Reply::render() const {
  std::string out;
  append_to(out);
  return out;
}

std::string Reply::text() const {
  std::string joined;
  for (std::size_t index = 0; index < lines.size(); ++index) {
    if (index > 0) {
      joined += "; ";
    }
    joined += lines[index];
  }
  return joined;
}

void Reply::add_reference(std::string_view ref) {
  if (lines.empty()) {
    lines.emplace_back();
  }
  std::string& last = lines.back();
  if (!last.empty()) {
    last.push_back(' ');
  }
  last += "[ref ";
  last += ref;
  last.push_back(']');
}

bool parse_reply(std::string_view wire, Reply& out) {
  Reply reply;
  bool finished = false;
  bool first = true;
  while (!wire.empty()) {
    if (finished) {
      return false;  // bytes after the last line ("250 ...") belong to no reply
    }
    const std::size_t end = wire.find("\r\n");
    if (end == std::string_view::npos) {
      return false;
    }
    std::string_view line = wire.substr(0, end);
    wire.remove_prefix(end + 2);
    // RFC 5321 4.2: Reply-code [ ("-" / SP) textstring ] CRLF.
    if (line.size() < 3 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]) ||
        line[0] < '2' || line[0] > '5') {
      return false;
    }
    for (char c : line) {
      if (c == '\r' || c == '\n' || c == '\0') {
        return false;
      }
    }
    const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (!first && code != reply.code) {
      return false;
    }
    std::string_view text;
    if (line.size() == 3) {
      finished = true;
    } else if (line[3] == ' ') {
      finished = true;
      text = line.substr(4);
    } else if (line[3] == '-') {
      text = line.substr(4);
    } else {
      return false;
    }
    if (first) {
      reply.code = code;
      const std::size_t length = enhanced_code_length(text, line[0]);
      if (length > 0) {
        reply.enhanced = std::string(text.substr(0, length));
      }
      first = false;
    }
    // Strip the enhanced code from every line that repeats it (RFC 2034 requires it
    // on each line, but some servers only put it on the first).
    if (!reply.enhanced.empty() && text.substr(0, reply.enhanced.size()) == reply.enhanced &&
        enhanced_code_length(text, line[0]) == reply.enhanced.size()) {
      text.remove_prefix(reply.enhanced.size());
      if (!text.empty()) {
        text.remove_prefix(1);
      }
    }
    reply.lines.emplace_back(text);
  }
  if (!finished) {
    return false;
  }
  out = std::move(reply);
  return true;
}

namespace replies {

namespace {
std::string join(std::string_view first, std::string_view second) {
  std::string text(first);
  text += second;
  return text;
}
std::string host_text(std::string_view host, std::string_view text) {
  std::string joined(host);
  if (!joined.empty() && !text.empty()) {
    joined.push_back(' ');
  }
  joined += text;
  return joined;
}
}  // namespace

Reply greeting(std::string_view hostname, std::string_view banner) {
  return Reply(220, "", host_text(hostname, banner));
}
Reply ok() { return Reply(250, "2.0.0", "Ok"); }
Reply sender_ok() { return Reply(250, "2.1.0", "Ok"); }
Reply recipient_ok() { return Reply(250, "2.1.5", "Ok"); }
// RFC 5321 4.2.2 and Postfix: the 354 intermediate reply carries no enhanced code.
Reply start_data() { return Reply(354, "", "End data with <CR><LF>.<CR><LF>"); }
// Postfix says "221 2.0.0 Bye"; the host name is not needed in the text.
Reply bye(std::string_view /*hostname*/) { return Reply(221, "2.0.0", "Bye"); }
Reply ready_to_start_tls() { return Reply(220, "2.0.0", "Ready to start TLS"); }
Reply vrfy() { return Reply(252, "2.5.2", "Cannot VRFY user, but will accept message"); }
Reply help() {
  return Reply(214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
}
Reply unknown_command() { return Reply(500, "5.5.2", "Error: command not recognized"); }
Reply line_too_long() { return Reply(500, "5.5.2", "Error: line too long"); }
Reply bad_sequence(std::string_view what) { return Reply(503, "5.5.1", join("Error: ", what)); }
Reply syntax(std::string_view what) { return Reply(501, "5.5.4", join("Syntax: ", what)); }
Reply bad_address_syntax(std::string_view what) {
  if (what.empty()) {
    return Reply(501, "5.1.3", "Bad address syntax");
  }
  std::string text = "Bad address syntax (";
  text += what;
  text += ')';
  return Reply(501, "5.1.3", std::move(text));
}
Reply parameter_unknown(std::string_view parameter) {
  return Reply(555, "5.5.4", join("Unsupported option: ", parameter));
}
Reply bare_newline_command() {
  return Reply(500, "5.5.2", "Error: bare <CR> or <LF> or NUL in command");
}
Reply bare_newline_data() {
  return Reply(550, "5.5.2", "Error: bare <CR> or <LF> or NUL in message");
}
Reply relay_denied(std::string_view recipient) {
  std::string text = "<";
  text += recipient;
  text += ">: Relay access denied";
  return Reply(550, "5.7.1", std::move(text));
}
Reply too_many_recipients() { return Reply(452, "4.5.3", "Error: too many recipients"); }
Reply message_too_big() { return Reply(552, "5.3.4", "Error: message file too big"); }
Reply insufficient_resources() { return Reply(452, "4.3.1", "Insufficient system storage"); }
Reply too_many_errors(std::string_view host) {
  return Reply(421, "4.7.0", host_text(host, "Error: too many errors"));
}
Reply timeout(std::string_view host) {
  return Reply(421, "4.4.2", host_text(host, "Error: timeout exceeded"));
}
Reply too_many_connections(std::string_view host) {
  return Reply(421, "4.7.0", host_text(host, "Error: too many connections"));
}
Reply too_many_connections_from_ip(std::string_view host) {
  return Reply(421, "4.7.0", host_text(host, "Error: too many connections from your address"));
}
Reply pipelining_violation() { return Reply(554, "5.5.0", "Error: SMTP protocol synchronization"); }
Reply backend_unavailable() {
  return Reply(451, "4.3.0", "Error: queue file write error, try again later");
}
Reply backend_lost() {
  return Reply(421, "4.4.2", "Error: backend connection lost, try again later");
}
Reply shutting_down(std::string_view host) {
  return Reply(421, "4.3.2", host_text(host, "Service shutting down"));
}
Reply internal_error(std::string_view host) {
  return Reply(421, "4.3.0", host_text(host, "Error: internal error"));
}
Reply tls_not_available() { return Reply(454, "4.7.0", "TLS not available"); }
Reply tls_already_active() { return Reply(503, "5.5.1", "Error: TLS already active"); }
Reply line_too_long_data() { return Reply(550, "5.6.0", "Error: message line too long"); }
Reply message_limit_reached() {
  return Reply(452, "4.5.3", "Error: too many messages in this session");
}

}  // namespace replies

}  // namespace mxgate::smtp

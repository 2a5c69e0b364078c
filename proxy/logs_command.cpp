// `mxgate logs`: reads plain or gzip-rotated JSON-lines logs and explains each hit.
// Logs reach hundreds of MB, so each line is first tested with cheap byte searches and
// field peeks (ref, IP, time); only lines that can still match are parsed as JSON.
#include "proxy/logs_command.hpp"

#include <fmt/format.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cctype>
#include <chrono>
#include <cstring>
#include <ctime>
#include <iostream>
#include <map>

#include "policy/cidr.hpp"

namespace json = boost::json;

namespace mxgate::proxy {

namespace {

// --- small text helpers ----------------------------------------------------------------

char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

std::string to_lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = lower(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

std::string_view string_field(const json::object& event, std::string_view key) {
  auto it = event.find(key);
  if (it == event.end() || !it->value().is_string()) return {};
  return it->value().get_string();
}

std::optional<double> number_field(const json::object& event, std::string_view key) {
  auto it = event.find(key);
  if (it == event.end()) return std::nullopt;
  const json::value& value = it->value();
  if (value.is_double()) return value.get_double();
  if (value.is_int64()) return static_cast<double>(value.get_int64());
  if (value.is_uint64()) return static_cast<double>(value.get_uint64());
  return std::nullopt;
}

// "+8", "-5", "+0.5": a contribution to the score.
std::string signed_score(double score) { return fmt::format("{}{}", score >= 0 ? "+" : "", score); }

std::string_view strip_brackets(std::string_view address) {
  if (address.size() >= 2 && address.front() == '<' && address.back() == '>')
    return address.substr(1, address.size() - 2);
  return address;
}

// The value of a top-level string field, read from the raw line without parsing it.
// Safe for keys that only occur at the top level: inside a JSON string every quote is
// escaped, so the byte sequence `"key":"` cannot occur there. Empty optional when the
// key is absent or its value is not a plain string (then the caller parses the line).
std::optional<std::string_view> peek_string_field(std::string_view line, std::string_view pattern) {
  auto at = line.find(pattern);
  if (at == std::string_view::npos) return std::nullopt;
  std::size_t start = at + pattern.size();
  for (std::size_t i = start; i < line.size(); ++i) {
    if (line[i] == '"') return line.substr(start, i - start);
    if (line[i] == '\\') return std::nullopt;
  }
  return std::nullopt;
}

// --- time --------------------------------------------------------------------------------

bool read_digits(std::string_view text, std::size_t& at, std::size_t count, int& value) {
  if (at + count > text.size()) return false;
  value = 0;
  for (std::size_t i = 0; i < count; ++i) {
    char c = text[at + i];
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  at += count;
  return true;
}

std::int64_t now_milliseconds() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "2026-11-22T10:04:11" from "2026-11-22T10:04:11.123Z": how support reads a time.
std::string display_time(std::string_view iso) {
  std::string out(iso.substr(0, 19));
  if (out.size() > 10 && out[10] == 'T') out[10] = ' ';
  return out;
}

// --- the query -------------------------------------------------------------------------

// Crockford base32 as make_reference() writes it: upper case, and the letters a person
// reading a ref aloud may type instead of digits (O for 0, I and L for 1).
std::string normalize_reference(std::string_view text) {
  std::string out;
  for (char c : text) {
    char upper = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (upper == 'O') upper = '0';
    if (upper == 'I' || upper == 'L') upper = '1';
    if (upper != ' ' && upper != '[' && upper != ']') out += upper;
  }
  if (out.rfind("REF", 0) == 0) out.erase(0, 3);  // pasted "[ref 7Q3XK2PA]"
  return out;
}

// An address query: a full address, a domain (matching its subdomains too) or the null
// sender "<>".
struct AddressQuery {
  enum class Kind { none, address, domain, null_sender } kind = Kind::none;
  std::string text;  // lower case, no brackets, no leading '@'

  static AddressQuery make(std::string_view raw) {
    AddressQuery query;
    if (raw.empty()) return query;
    if (raw == "<>") {
      query.kind = Kind::null_sender;
      return query;
    }
    std::string text = to_lower(strip_brackets(raw));
    if (!text.empty() && text.front() == '@') text.erase(0, 1);
    while (!text.empty() && text.back() == '.') text.pop_back();
    query.kind = text.find('@') != std::string::npos ? Kind::address : Kind::domain;
    query.text = std::move(text);
    return query;
  }
  bool active() const { return kind != Kind::none; }

  bool matches(std::string_view address) const {
    address = strip_brackets(address);
    switch (kind) {
      case Kind::none:
        return true;
      case Kind::null_sender:
        return address.empty();
      case Kind::address:
        return iequals(address, text);
      case Kind::domain: {
        auto at = address.rfind('@');
        if (at == std::string_view::npos) return false;
        std::string_view domain = address.substr(at + 1);
        while (!domain.empty() && domain.back() == '.') domain.remove_suffix(1);
        if (iequals(domain, text)) return true;
        return domain.size() > text.size() && domain[domain.size() - text.size() - 1] == '.' &&
               iequals(domain.substr(domain.size() - text.size()), text);
      }
    }
    return false;
  }
  // Bytes every matching line contains (any case), or empty when there are none that
  // are safe to look for (characters JSON would escape).
  std::string needle() const {
    if (kind != Kind::address && kind != Kind::domain) return {};
    for (char c : text) {
      if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) return {};
    }
    return text;
  }
};

struct Query {
  std::string ref;
  std::optional<policy::Cidr> network;
  AddressQuery from, rcpt, domain;
  std::string filter, rule;  // rule empty: any rule of the filter
  std::optional<std::int64_t> since, until;
  bool sessions = false;

  // Cheap tests on the raw line.
  std::vector<std::string> needles;         // each must occur as is
  std::vector<std::string> folded_needles;  // lower case; each must occur in any case
  mutable std::string folded_line;          // reused: no allocation per line

  bool compile(const LogsOptions& options, std::ostream& errors) {
    bool ok = true;
    std::int64_t now = now_milliseconds();
    if (!options.ref.empty()) {
      ref = normalize_reference(options.ref);
      needles.push_back(ref);
    }
    if (!options.ip.empty()) {
      std::string error;
      network = policy::parse_cidr(options.ip, error);
      if (!network) {
        errors << "--ip " << options.ip << ": " << error << "\n";
        ok = false;
      }
    }
    from = AddressQuery::make(options.from);
    rcpt = AddressQuery::make(options.rcpt);
    domain = AddressQuery::make(options.domain);
    if (domain.kind == AddressQuery::Kind::address ||
        domain.kind == AddressQuery::Kind::null_sender) {
      errors << "--domain " << options.domain << ": a domain, not an address\n";
      ok = false;
    }
    for (const AddressQuery* query : {&from, &rcpt, &domain}) {
      std::string needle = query->needle();
      if (!needle.empty()) folded_needles.push_back(std::move(needle));
    }
    if (!options.filter.empty()) {
      auto slash = options.filter.find('/');
      filter = options.filter.substr(0, slash);
      if (slash != std::string::npos) rule = options.filter.substr(slash + 1);
      needles.push_back("\"" + filter + "\"");
    }
    for (auto [text, bound, name] : {std::tuple{&options.since, &since, "--since"},
                                     std::tuple{&options.until, &until, "--until"}}) {
      if (text->empty()) continue;
      *bound = parse_log_time(*text, now);
      if (!*bound) {
        errors << name << " " << *text
               << ": not a time (2026-11-22, 2026-11-22 10:04:11, or 2h / 30m / 3d ago)\n";
        ok = false;
      }
    }
    sessions = options.sessions;
    return ok;
  }

  // False when the line cannot match; true means "parse it and look closer".
  bool may_match(std::string_view line) const {
    for (const auto& needle : needles) {
      if (::memmem(line.data(), line.size(), needle.data(), needle.size()) == nullptr) return false;
    }
    if (network) {
      auto address = peek_string_field(line, "\"client_ip\":\"");
      if (address && !address_matches(*address)) return false;
    }
    if (since || until) {
      auto time = peek_string_field(line, "\"time\":\"");
      if (time && !time_matches(*time)) return false;
    }
    if (!sessions && ref.empty()) {
      auto type = peek_string_field(line, "\"type\":\"");
      if (type && *type == "session") return false;
    }
    if (!folded_needles.empty()) {
      // Lower-casing a copy then memmem is several times faster than a case-folding
      // search, and addresses in the log keep the case the client used.
      folded_line.resize(line.size());
      std::transform(line.begin(), line.end(), folded_line.begin(), [](char c) {
        return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c;
      });
      for (const auto& needle : folded_needles) {
        if (::memmem(folded_line.data(), folded_line.size(), needle.data(), needle.size()) ==
            nullptr)
          return false;
      }
    }
    return true;
  }

  bool address_matches(std::string_view client_ip) const {
    std::string ignored;
    auto address = policy::parse_cidr(client_ip, ignored);
    return address && network->contains(*address);
  }

  bool time_matches(std::string_view text) const {
    auto time = parse_log_time(text, 0);
    if (!time) return false;
    return (!since || *time >= *since) && (!until || *time <= *until);
  }

  bool matches(const json::object& event) const {
    std::string_view type = string_field(event, "type");
    if (type == "session" && !sessions && ref.empty()) return false;
    if (!ref.empty() && string_field(event, "ref") != ref && string_field(event, "session") != ref)
      return false;
    if (network && !address_matches(string_field(event, "client_ip"))) return false;
    if ((since || until) && !time_matches(string_field(event, "time"))) return false;
    std::string_view sender;
    bool has_sender = false;
    if (auto it = event.find("from"); it != event.end() && it->value().is_string()) {
      sender = it->value().get_string();
      has_sender = true;
    }
    if (from.active() && !(has_sender && from.matches(sender))) return false;
    auto any_recipient = [&](const AddressQuery& query) {
      if (auto it = event.find("rcpts"); it != event.end() && it->value().is_array()) {
        for (const auto& item : it->value().get_array()) {
          if (item.is_string() && query.matches(item.get_string())) return true;
        }
      }
      std::string_view single = string_field(event, "rcpt");
      return !single.empty() && query.matches(single);
    };
    if (rcpt.active() && !any_recipient(rcpt)) return false;
    if (domain.active() && !(has_sender && domain.matches(sender)) && !any_recipient(domain))
      return false;
    if (!filter.empty() && !filter_matches(event)) return false;
    return true;
  }

  bool filter_matches(const json::object& event) const {
    auto same = [&](std::string_view event_filter, std::string_view event_rule) {
      return event_filter == filter && (rule.empty() || event_rule == rule);
    };
    if (same(string_field(event, "filter"), string_field(event, "rule"))) return true;
    if (auto it = event.find("contributions"); it != event.end() && it->value().is_array()) {
      for (const auto& item : it->value().get_array()) {
        if (item.is_object() && same(string_field(item.get_object(), "filter"),
                                     string_field(item.get_object(), "rule")))
          return true;
      }
    }
    return false;
  }
};

// --- statistics ------------------------------------------------------------------------

struct Statistics {
  std::uint64_t refusals = 0, rejected = 0, tempfailed = 0;
  std::string first, last;  // times
  std::map<std::string, std::uint64_t> by_rule, by_stage, by_hour, by_client;

  void add(const json::object& event) {
    std::string_view type = string_field(event, "type");
    if (type != "reject" && type != "tempfail") return;
    ++refusals;
    ++(type == "reject" ? rejected : tempfailed);
    std::string time(string_field(event, "time"));
    if (!time.empty()) {
      if (first.empty() || time < first) first = time;
      if (last.empty() || time > last) last = time;
      if (time.size() >= 13) ++by_hour[display_time(time).substr(0, 13) + ":00"];
    }
    std::string_view filter = string_field(event, "filter");
    std::string_view rule = string_field(event, "rule");
    std::string key;
    if (!filter.empty()) {
      key = std::string(filter) + (rule.empty() ? "" : "/" + std::string(rule));
    } else {
      key = "(" + std::string(string_field(event, "reason")) + ")";
    }
    ++by_rule[key];
    ++by_stage[std::string(string_field(event, "stage"))];
    ++by_client[std::string(string_field(event, "client_ip"))];
  }

  static std::vector<std::pair<std::string, std::uint64_t>> by_count(
      const std::map<std::string, std::uint64_t>& counts, std::size_t limit) {
    std::vector<std::pair<std::string, std::uint64_t>> sorted(counts.begin(), counts.end());
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    if (sorted.size() > limit) sorted.resize(limit);
    return sorted;
  }

  void print(std::ostream& out) const {
    out << refusals << (refusals == 1 ? " refusal" : " refusals") << " (" << rejected
        << " rejected, " << tempfailed << " tempfailed)";
    if (!first.empty())
      out << " from " << display_time(first) << " to " << display_time(last) << " UTC";
    out << "\n";
    auto section = [&](const char* title, const std::map<std::string, std::uint64_t>& counts,
                       std::size_t limit) {
      if (counts.empty()) return;
      out << "\n" << title << ":\n";
      for (const auto& [key, count] : by_count(counts, limit))
        out << fmt::format("  {:>9}  {}\n", count, key.empty() ? "-" : key);
      if (counts.size() > limit) out << "  (" << counts.size() - limit << " more)\n";
    };
    section("by filter/rule", by_rule, 50);
    section("by stage", by_stage, 50);
    section("top clients", by_client, 20);
    if (!by_hour.empty()) {
      // Chronological, with a bar, so a spike shows at a glance.
      std::uint64_t peak = 0;
      for (const auto& [hour, count] : by_hour) peak = std::max(peak, count);
      out << "\nby hour (UTC):\n";
      for (const auto& [hour, count] : by_hour) {
        std::size_t bar = peak == 0 ? 0 : static_cast<std::size_t>((count * 40 + peak - 1) / peak);
        out << fmt::format("  {}  {:>9}  {}\n", hour, count, std::string(bar, '#'));
      }
    }
  }

  void print_json(std::ostream& out) const {
    json::object summary;
    summary["refusals"] = refusals;
    summary["rejected"] = rejected;
    summary["tempfailed"] = tempfailed;
    summary["first"] = first;
    summary["last"] = last;
    auto to_object = [](const std::map<std::string, std::uint64_t>& counts) {
      json::object object;
      for (const auto& [key, count] : counts) object[key] = count;
      return object;
    };
    summary["by_rule"] = to_object(by_rule);
    summary["by_stage"] = to_object(by_stage);
    summary["by_hour"] = to_object(by_hour);
    summary["by_client"] = to_object(by_client);
    out << json::serialize(summary) << "\n";
  }
};

// --- reading ---------------------------------------------------------------------------

class LineReader {
 public:
  // gzopen reads gzip and plain files alike, so rotated and live logs need no flag.
  bool open(const std::string& path, std::string& error) {
    file_ = path == "-" ? gzdopen(::dup(STDIN_FILENO), "rb") : gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      error = path + ": " + (errno != 0 ? std::strerror(errno) : "cannot open");
      return false;
    }
    gzbuffer(file_, 1 << 20);
    buffer_.resize(4 << 20);
    return true;
  }
  ~LineReader() {
    if (file_ != nullptr) gzclose(file_);
  }

  // Calls `on_line` with each line (without its newline). False on a read error.
  template <typename OnLine>
  bool for_each_line(OnLine&& on_line, std::string& error) {
    std::size_t filled = 0;
    for (;;) {
      if (filled == buffer_.size()) buffer_.resize(buffer_.size() * 2);  // a giant line
      int got =
          gzread(file_, buffer_.data() + filled, static_cast<unsigned>(buffer_.size() - filled));
      if (got < 0) {
        int code = 0;
        error = gzerror(file_, &code);
        return false;
      }
      if (got == 0) {
        if (filled > 0) on_line(std::string_view(buffer_.data(), filled));  // no final newline
        return true;
      }
      filled += static_cast<std::size_t>(got);
      const char* begin = buffer_.data();
      const char* end = begin + filled;
      const char* line = begin;
      while (const char* newline = static_cast<const char*>(std::memchr(line, '\n', end - line))) {
        on_line(std::string_view(line, newline - line));
        line = newline + 1;
      }
      filled = static_cast<std::size_t>(end - line);
      std::memmove(buffer_.data(), line, filled);
    }
  }

 private:
  gzFile file_ = nullptr;
  std::vector<char> buffer_;
};

}  // namespace

// --- explanations ----------------------------------------------------------------------

namespace {

std::string recipients_text(const json::object& event) {
  std::string_view single = string_field(event, "rcpt");
  if (!single.empty()) return std::string(strip_brackets(single));
  std::vector<std::string_view> names;
  if (auto it = event.find("rcpts"); it != event.end() && it->value().is_array()) {
    for (const auto& item : it->value().get_array()) {
      if (item.is_string()) names.push_back(strip_brackets(item.get_string()));
    }
  }
  if (names.empty()) return "-";
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < 3; ++i) {
    if (i) out += ", ";
    out += names[i];
  }
  if (names.size() > 3) out += fmt::format(" +{} more", names.size() - 3);
  return out;
}

struct ContributionView {
  std::string_view filter, rule, detail;
  double score = 0;
  bool dry_run = false;
};

std::vector<ContributionView> contributions_of(const json::object& event) {
  std::vector<ContributionView> out;
  auto it = event.find("contributions");
  if (it == event.end() || !it->value().is_array()) return out;
  for (const auto& item : it->value().get_array()) {
    if (!item.is_object()) continue;
    const auto& object = item.get_object();
    ContributionView view{string_field(object, "filter"), string_field(object, "rule"),
                          string_field(object, "detail"), number_field(object, "score").value_or(0),
                          false};
    if (auto dry = object.find("dry_run"); dry != object.end() && dry->value().is_bool())
      view.dry_run = dry->value().get_bool();
    out.push_back(view);
  }
  return out;
}

// "dnsbl (zen.spamhaus.org 127.0.0.4, +8)"
std::string contribution_text(const ContributionView& c) {
  std::string what(c.detail.empty() ? c.rule : c.detail);
  std::string out(c.filter);
  out += " (";
  if (!what.empty()) out += what + ", ";
  out += signed_score(c.score);
  if (c.dry_run) out += ", dry run";
  out += ")";
  return out;
}

std::string upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string explain_session(const json::object& event) {
  std::string out = display_time(string_field(event, "time"));
  out += "  ";
  out += string_field(event, "client_ip");
  out += "  SESSION";
  if (auto duration = number_field(event, "duration")) out += fmt::format(" {:.1f} s,", *duration);
  out += fmt::format(" {} accepted, {} rejected, {} errors",
                     number_field(event, "messages_accepted").value_or(0),
                     number_field(event, "messages_rejected").value_or(0),
                     number_field(event, "errors").value_or(0));
  std::string_view stage = string_field(event, "last_stage");
  if (!stage.empty()) out += ", last stage " + upper(stage);
  out += fmt::format("  [session {}]\n", string_field(event, "ref"));
  if (auto it = event.find("queue_ids");
      it != event.end() && it->value().is_array() && !it->value().get_array().empty()) {
    out += "    queued as";
    for (const auto& id : it->value().get_array()) {
      if (id.is_string()) out += " " + std::string(id.get_string());
    }
    out += "\n";
  }
  return out;
}

}  // namespace

std::string explain_event(const json::object& event) {
  std::string_view type = string_field(event, "type");
  if (type == "session") return explain_session(event);

  std::string out = display_time(string_field(event, "time"));
  out += "  ";
  out += string_field(event, "client_ip");
  out += " -> " + recipients_text(event) + "  ";
  out += type == "reject" ? "REJECTED" : type == "tempfail" ? "TEMPFAILED" : upper(type);
  out += " at " + upper(string_field(event, "stage"));

  std::string_view filter = string_field(event, "filter");
  std::string_view rule = string_field(event, "rule");
  std::string_view reason = string_field(event, "reason");
  auto contributions = contributions_of(event);
  auto deciding = std::find_if(contributions.begin(), contributions.end(),
                               [&](const auto& c) { return c.filter == filter && c.rule == rule; });
  if (!filter.empty() && deciding != contributions.end()) {
    out += " by " + contribution_text(*deciding);
  } else if (!filter.empty() && !contributions.empty() && rule.empty()) {
    out += " by " + std::string(filter);
  } else if (!contributions.empty()) {
    // A threshold decided: name the biggest contributors, as the score sheet would.
    std::vector<ContributionView> sorted = contributions;
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const auto& a, const auto& b) { return a.score > b.score; });
    std::string by;
    std::size_t shown = 0;
    for (const auto& c : sorted) {
      if (c.score <= 0 || shown == 3) continue;
      by += (shown++ ? ", " : "") + contribution_text(c);
    }
    if (!by.empty())
      out += " by " + by;
    else if (!filter.empty())
      out += " by " + std::string(filter) + (rule.empty() ? "" : " (" + std::string(rule) + ")");
  } else if (!filter.empty()) {
    out += " by " + std::string(filter);
    std::string_view what = rule.empty() ? reason : rule;
    if (!what.empty()) out += " (" + std::string(what) + ")";
  } else if (!reason.empty()) {
    out += ": " + std::string(reason);
  }
  if (auto score = number_field(event, "score")) {
    out += fmt::format(" total {}", *score);
    if (auto threshold = number_field(event, "threshold"))
      out += fmt::format(" >= {} {}", type == "tempfail" ? "tempfail" : "reject", *threshold);
  }
  out += fmt::format("  [ref {}]\n", string_field(event, "ref"));

  std::string_view reply = string_field(event, "reply");
  if (!reply.empty()) out += "    reply: " + std::string(reply) + "\n";

  // Who, as Postfix names a client: name[address]:port, then what it said.
  std::string client = "    client ";
  std::string_view name = string_field(event, "client_name");
  client += std::string(name.empty() ? "unknown" : name) + "[" +
            std::string(string_field(event, "client_ip")) + "]";
  if (auto port = number_field(event, "client_port")) client += fmt::format(":{}", *port);
  std::string_view helo = string_field(event, "helo");
  if (!helo.empty()) client += " helo " + std::string(helo);
  if (auto it = event.find("from"); it != event.end() && it->value().is_string())
    client += " from <" + std::string(strip_brackets(it->value().get_string())) + ">";
  std::string_view tls = string_field(event, "tls");
  if (!tls.empty()) client += " tls " + std::string(tls);
  std::string_view session = string_field(event, "session");
  if (!session.empty()) client += " session " + std::string(session);
  out += client + "\n";

  // The whole score sheet, so support sees more than the last straw.
  if (contributions.size() > 1 || (contributions.size() == 1 && deciding == contributions.end())) {
    out += "    score:";
    for (const auto& c : contributions) {
      out += fmt::format(" {}/{} {}", c.filter, c.rule, signed_score(c.score));
      if (!c.detail.empty()) out += fmt::format(" ({})", c.detail);
      if (c.dry_run) out += " [dry run]";
      out += ";";
    }
    out.back() = '\n';
  }
  return out;
}

std::optional<std::int64_t> parse_log_time(std::string_view text, std::int64_t now_ms) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  if (text.empty()) return std::nullopt;
  if (text == "now") return now_ms;
  // Relative: "90s", "15m", "2h", "3d" ago.
  if (text.size() >= 2 && std::isdigit(static_cast<unsigned char>(text.front())) &&
      std::string_view("smhd").find(text.back()) != std::string_view::npos &&
      text.find_first_not_of("0123456789", 0) == text.size() - 1) {
    std::int64_t amount = std::stoll(std::string(text.substr(0, text.size() - 1)));
    static const std::map<char, std::int64_t> unit{
        {'s', 1000}, {'m', 60'000}, {'h', 3'600'000}, {'d', 86'400'000}};
    return now_ms - amount * unit.at(text.back());
  }
  std::size_t at = 0;
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0, millis = 0;
  if (!read_digits(text, at, 4, year) || at >= text.size() || text[at++] != '-' ||
      !read_digits(text, at, 2, month) || at >= text.size() || text[at++] != '-' ||
      !read_digits(text, at, 2, day))
    return std::nullopt;
  if (at < text.size() && (text[at] == 'T' || text[at] == ' ')) {
    ++at;
    if (!read_digits(text, at, 2, hour) || at >= text.size() || text[at++] != ':' ||
        !read_digits(text, at, 2, minute))
      return std::nullopt;
    if (at < text.size() && text[at] == ':') {
      ++at;
      if (!read_digits(text, at, 2, second)) return std::nullopt;
      if (at < text.size() && text[at] == '.') {
        ++at;
        std::size_t digits = 0;
        while (at < text.size() && std::isdigit(static_cast<unsigned char>(text[at]))) {
          if (digits < 3) millis = millis * 10 + (text[at] - '0');
          ++digits;
          ++at;
        }
        if (digits == 0) return std::nullopt;
        for (; digits < 3; ++digits) millis *= 10;
      }
    }
  }
  std::int64_t offset_minutes = 0;
  if (at < text.size() && text[at] == 'Z') {
    ++at;
  } else if (at < text.size() && (text[at] == '+' || text[at] == '-')) {
    int sign = text[at++] == '+' ? 1 : -1, offset_hour = 0, offset_minute = 0;
    if (!read_digits(text, at, 2, offset_hour)) return std::nullopt;
    if (at < text.size() && text[at] == ':') ++at;
    if (!read_digits(text, at, 2, offset_minute)) return std::nullopt;
    offset_minutes = sign * (offset_hour * 60 + offset_minute);
  }
  if (at != text.size() || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 ||
      minute > 59 || second > 60)
    return std::nullopt;
  std::tm parts{};
  parts.tm_year = year - 1900;
  parts.tm_mon = month - 1;
  parts.tm_mday = day;
  parts.tm_hour = hour;
  parts.tm_min = minute;
  parts.tm_sec = second;
  std::int64_t seconds = ::timegm(&parts);
  return (seconds - offset_minutes * 60) * 1000 + millis;
}

void add_logs_options(CLI::App& command, LogsOptions& options) {
  command.add_option("--ref", options.ref,
                     "Reference quoted by the sender ([ref 7Q3XK2PA]), or a session id");
  command.add_option("--ip", options.ip, "Client IP address or CIDR (192.0.2.0/24)");
  command.add_option("--from", options.from, "Sender address, or domain; '<>' = null sender");
  command.add_option("--rcpt", options.rcpt, "Recipient address, or domain");
  command.add_option("--domain", options.domain, "Sender or recipient domain");
  command.add_option("--filter", options.filter,
                     "Deciding or contributing filter: dnsbl or dnsbl/RULE");
  command.add_option("--since", options.since,
                     "From this UTC time: 2026-11-22, '2026-11-22 10:04', or 2h (ago)");
  command.add_option("--until", options.until, "Up to this UTC time (same forms)");
  command.add_flag("--json", options.json, "Print matching lines as they are (JSON)");
  command.add_flag("--stats", options.stats,
                   "Summarise matching refusals by filter/rule, stage, hour");
  command.add_flag("--sessions", options.sessions, "Include session summary lines");
  command.add_option("files", options.files, "Log files, plain or gzip-rotated (.gz); - for stdin")
      ->required();
}

int run_logs_command(const LogsOptions& options) {
  std::ios::sync_with_stdio(false);
  return run_logs_command(options, std::cout, std::cerr);
}

int run_logs_command(const LogsOptions& options, std::ostream& out, std::ostream& errors) {
  Query query;
  if (!query.compile(options, errors)) return 2;

  std::uint64_t matched = 0, malformed = 0;
  bool failed = false;
  Statistics statistics;
  // Parsed values live in this buffer, reset per line: no allocation per line.
  std::vector<unsigned char> parse_buffer(64 * 1024);

  for (const auto& path : options.files) {
    LineReader reader;
    std::string error;
    if (!reader.open(path, error)) {
      errors << error << "\n";
      failed = true;
      continue;
    }
    bool ok = reader.for_each_line(
        [&](std::string_view line) {
          if (line.empty() || !query.may_match(line)) return;
          json::monotonic_resource resource(parse_buffer.data(), parse_buffer.size());
          boost::system::error_code parse_error;
          json::value value = json::parse(line, parse_error, &resource);
          if (parse_error || !value.is_object()) {
            ++malformed;
            return;
          }
          const json::object& event = value.get_object();
          if (!query.matches(event)) return;
          ++matched;
          if (options.stats) {
            statistics.add(event);
          } else if (options.json) {
            out.write(line.data(), static_cast<std::streamsize>(line.size()));
            out.put('\n');
          } else {
            out << explain_event(event) << "\n";
          }
        },
        error);
    if (!ok) {
      // A truncated .gz (rotation in progress, a full disk) still gave its lines.
      errors << path << ": " << error << "\n";
      failed = true;
    }
  }
  if (options.stats) {
    if (options.json)
      statistics.print_json(out);
    else
      statistics.print(out);
  }
  out.flush();
  if (malformed > 0)
    errors << malformed << (malformed == 1 ? " line was" : " lines were") << " not JSON, skipped\n";
  if (failed) return 2;
  return matched > 0 ? 0 : 1;
}

}  // namespace mxgate::proxy

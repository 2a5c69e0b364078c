// HELO checks: cheap evidence about bots, which rarely announce themselves correctly.
#include "filters/helo.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <set>

namespace mxgate::filters {

namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

// Canonical text of an IP address, or empty when `text` is not one.
std::string canonical_address(std::string_view text) {
  std::string input(text);
  unsigned char bytes[16];
  char out[INET6_ADDRSTRLEN] = {};
  if (inet_pton(AF_INET, input.c_str(), bytes) == 1) {
    inet_ntop(AF_INET, bytes, out, sizeof out);
    return out;
  }
  if (inet_pton(AF_INET6, input.c_str(), bytes) == 1) {
    inet_ntop(AF_INET6, bytes, out, sizeof out);
    return out;
  }
  return {};
}

// RFC 1123 host name: LDH labels of 1..63 (underscores tolerated, as Postfix does),
// no label starting or ending with '-', at most 255 characters.
bool valid_hostname(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    const std::string_view label = name.substr(start, dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
      return false;
    for (char c : label)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
    start = dot + 1;
  }
  // All-numeric top label: an IP-like string ("1.2.3.999"), not a host name.
  const std::size_t last_dot = name.rfind('.');
  const std::string_view top =
      last_dot == std::string_view::npos ? name : name.substr(last_dot + 1);
  return !std::all_of(top.begin(), top.end(),
                      [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

class HeloInstance final : public FilterInstance {
 public:
  explicit HeloInstance(const HeloFilter& filter) : filter_(filter) {}

  boost::asio::awaitable<Verdict> on_stage(Stage stage, const SessionContext& context) override {
    Verdict verdict;
    if (stage == Stage::mail) {
      if (context.helo.empty() && filter_.options().missing != 0 &&
          reported_.insert("missing").second)
        verdict.contributions.push_back({"helo", "missing", filter_.options().missing,
                                         "MAIL without HELO/EHLO", "helo", false, ""});
      co_return verdict;
    }
    // A re-EHLO (after STARTTLS) is judged again, but each check counts once.
    for (const auto& problem : helo_problems(context.helo, filter_.options())) {
      const double score = filter_.score_of(problem);
      if (score == 0 || !reported_.insert(problem).second) continue;
      verdict.contributions.push_back({"helo", problem, score,
                                       fmt::format("HELO {} ({})", context.helo, problem), "helo",
                                       false, ""});
    }
    co_return verdict;
  }

 private:
  const HeloFilter& filter_;
  std::set<std::string> reported_;
};

}  // namespace

std::vector<std::string> helo_problems(std::string_view helo, const HeloCheckOptions& options) {
  std::vector<std::string> problems;
  if (helo.empty()) return problems;  // "missing" is judged at MAIL
  std::string claimed_address;
  if (helo.front() == '[') {
    // Address literal (RFC 5321 4.1.3): [192.0.2.1] or [IPv6:2001:db8::1].
    std::string_view inside = helo.size() >= 2 && helo.back() == ']'
                                  ? helo.substr(1, helo.size() - 2)
                                  : std::string_view();
    const bool ipv6 = inside.size() > 5 && lower(inside.substr(0, 5)) == "ipv6:";
    if (ipv6) inside.remove_prefix(5);
    claimed_address = canonical_address(inside);
    const bool family_ok =
        claimed_address.empty() || (claimed_address.find(':') != std::string::npos) == ipv6;
    if (claimed_address.empty() || !family_ok) problems.push_back("invalid");
  } else if (!(claimed_address = canonical_address(helo)).empty()) {
    problems.push_back("bare_ip");
  } else {
    const std::string name = lower(helo);
    if (!valid_hostname(name)) {
      problems.push_back("invalid");
    } else {
      if (name.find('.') == std::string::npos) problems.push_back("not_fqdn");
      const bool ours = name == lower(options.hostname) ||
                        std::any_of(options.our_names.begin(), options.our_names.end(),
                                    [&](const std::string& our) { return lower(our) == name; });
      if (ours) problems.push_back("our_hostname");
    }
  }
  if (!claimed_address.empty()) {
    const bool ours = std::any_of(
        options.our_addresses.begin(), options.our_addresses.end(),
        [&](const std::string& our) { return canonical_address(our) == claimed_address; });
    if (ours) problems.push_back("our_address");
  }
  return problems;
}

HeloFilter::HeloFilter(HeloCheckOptions options) : options_(std::move(options)) {}

std::unique_ptr<FilterInstance> HeloFilter::open(Services&) const {
  return std::make_unique<HeloInstance>(*this);
}

double HeloFilter::score_of(std::string_view check) const {
  if (check == "missing") return options_.missing;
  if (check == "bare_ip") return options_.bare_ip;
  if (check == "invalid") return options_.invalid;
  if (check == "not_fqdn") return options_.not_fqdn;
  if (check == "our_hostname") return options_.our_hostname;
  if (check == "our_address") return options_.our_address;
  return 0;
}

}  // namespace mxgate::filters

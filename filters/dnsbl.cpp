// DNS-list lookups started at connect (in parallel, one per list), awaited only at the
// first RCPT, and judged by reply code and weight the way postscreen_dnsbl_sites does.
#include "filters/dnsbl.hpp"
#include "policy/names.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>
#include <cctype>

#include "filters/completion.hpp"
#include "filters/dns_cache.hpp"
#include "filters/dns_resolver.hpp"
#include "filters/metrics.hpp"
#include "filters/store.hpp"

namespace mxgate::filters {

namespace asio = boost::asio;

std::optional<std::string> reverse_address(std::string_view address) {
  std::string text(address);
  unsigned char bytes[16];
  if (inet_pton(AF_INET, text.c_str(), bytes) == 1)
    return fmt::format("{}.{}.{}.{}", bytes[3], bytes[2], bytes[1], bytes[0]);
  if (inet_pton(AF_INET6, text.c_str(), bytes) != 1) return std::nullopt;
  static constexpr unsigned char mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(std::begin(mapped_prefix), std::end(mapped_prefix), bytes))
    return fmt::format("{}.{}.{}.{}", bytes[15], bytes[14], bytes[13], bytes[12]);
  static constexpr char hex[] = "0123456789abcdef";
  std::string reversed;
  reversed.reserve(63);
  for (int i = 15; i >= 0; --i) {
    if (!reversed.empty()) reversed += '.';
    reversed += hex[bytes[i] & 0x0f];
    reversed += '.';
    reversed += hex[bytes[i] >> 4];
  }
  return reversed;
}

std::string format_ipv4(std::uint32_t address) {
  return fmt::format("{}.{}.{}.{}", address >> 24, (address >> 16) & 0xff, (address >> 8) & 0xff,
                     address & 0xff);
}

ListReply classify_list_reply(std::uint32_t address, const policy::ReplyFilter& filter) {
  if ((address >> 24) != 127) return ListReply::outside_loopback;
  if (address >= 0x7ffffffc) return ListReply::error_code;
  const std::array<std::uint8_t, 4> octets{
      static_cast<std::uint8_t>(address >> 24), static_cast<std::uint8_t>(address >> 16),
      static_cast<std::uint8_t>(address >> 8), static_cast<std::uint8_t>(address)};
  return filter.matches(octets) ? ListReply::listed : ListReply::not_matched;
}

// The shared store's form of a cached answer: "0" (not listed) or
// "1;127.0.0.2,127.0.0.4;TXT text".
std::string encode_list_answer(const CachedAnswer& answer) {
  if (!answer.exists) return "0";
  std::string out = "1;";
  for (std::size_t i = 0; i < answer.addresses.size(); ++i)
    out += (i ? "," : "") + format_ipv4(answer.addresses[i]);
  return out + ";" + answer.text;
}

std::optional<CachedAnswer> decode_list_answer(std::string_view text) {
  CachedAnswer answer;
  if (text == "0") return answer;
  if (!text.starts_with("1;")) return std::nullopt;
  text.remove_prefix(2);
  const std::size_t semicolon = text.find(';');
  if (semicolon == std::string_view::npos) return std::nullopt;
  std::string_view addresses = text.substr(0, semicolon);
  answer.text = std::string(text.substr(semicolon + 1));
  answer.exists = true;
  while (!addresses.empty()) {
    const std::size_t comma = addresses.find(',');
    std::string address(addresses.substr(0, comma));
    in_addr parsed{};
    if (inet_pton(AF_INET, address.c_str(), &parsed) != 1) return std::nullopt;
    answer.addresses.push_back(ntohl(parsed.s_addr));
    addresses = comma == std::string_view::npos ? std::string_view() : addresses.substr(comma + 1);
  }
  return answer;
}

namespace {

std::int64_t now_nanoseconds() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string strip_dot(std::string name) {
  if (!name.empty() && name.back() == '.') name.pop_back();
  return name;
}

// RHSBL keys must be real host names: no address literals, no bare IPs, LDH labels.
bool looks_like_domain(std::string_view name) {
  if (name.empty() || name.size() > 253 || name.find('.') == std::string_view::npos) return false;
  bool all_numeric = true;
  std::size_t label = 0;
  for (char c : name) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
    if (!std::isdigit(static_cast<unsigned char>(c))) all_numeric = false;
    if (++label > 63) return false;
  }
  return label > 0 && !all_numeric;
}

// TXT comes from the list operator: it goes into our SMTP reply, so only printable
// ASCII passes (a CR or LF there would let a list inject reply lines), and not much.
std::string sanitize_text(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (out.size() >= 200) break;
    out += (c >= 0x20 && c < 0x7f) ? c : ' ';
  }
  return out;
}

const char* action_word(policy::OnError on_error) {
  return on_error == policy::OnError::tempfail ? "tempfail" : "allow";
}

}  // namespace

struct DnsblFilter::List {
  policy::DnsblRule rule;
  policy::ReplyFilter filter;
  std::size_t index = 0;
  std::string zone;       // the query suffix; may carry a query key (Spamhaus DQS)
  std::string display;    // reply_name, else zone: all that replies, logs and metrics show
  std::string rule_name;  // for contributions and `mxgate logs`
  std::atomic<bool> suspended{false};
  std::atomic<std::int64_t> next_probe{0};  // steady clock, nanoseconds
  metrics::Histogram* latency = nullptr;
  metrics::Counter* listed = nullptr;
  metrics::Counter* not_listed = nullptr;
  metrics::Counter* cached = nullptr;
  metrics::Counter* suspensions = nullptr;
  metrics::Gauge* suspended_gauge = nullptr;

  metrics::Counter& errors(const std::string& reason) const {
    // Error paths only: the registry lock is fine there.
    return metrics::Registry::global().counter(
        "mxgate_dnsbl_errors_total", "DNS list lookups that failed or answered an error code",
        {{"list", display}, {"reason", reason}});
  }
};

namespace {

using List = DnsblFilter::List;

// One list asked about one subject (client IP, HELO name, sender domain).
struct Lookup {
  explicit Lookup(const asio::any_io_executor& executor) : completion(executor) {}
  std::shared_ptr<List> list;
  Stage origin = Stage::connect;
  std::string subject;  // "client [192.0.2.1]", "Helo command [x.example]", ...
  std::string qname;    // holds the zone, so its key: never logged
  bool reported = false;
  DnsAnswer::Status status = DnsAnswer::Status::error;
  std::string error;
  CachedAnswer answer;
  Completion completion;  // set when the answer is in: wakes the waiting session
};

// Redis only: with the embedded store the process-wide LRU already is the shared cache.
std::shared_ptr<Store> fleet_store(const std::shared_ptr<Store>& store) {
  return store && std::string_view(store->backend()) == "redis" ? store : nullptr;
}

asio::awaitable<void> run_lookup(std::shared_ptr<Lookup> lookup,
                                 std::shared_ptr<DnsResolver> resolver,
                                 std::shared_ptr<DnsCache> cache, std::shared_ptr<Store> store) {
  const List& list = *lookup->list;
  const auto started = std::chrono::steady_clock::now();
  const std::string store_key_text = store ? store_key("dnsbl", lookup->qname) : std::string();
  std::chrono::seconds ttl{0};
  bool publish = false;
  try {
    // A fleet asks each list once per name per TTL: another instance may have asked.
    if (store) {
      auto shared = co_await store->get(store_key_text);
      if (shared.ok() && shared.value->has_value()) {
        if (auto answer = decode_list_answer(**shared.value)) {
          list.cached->inc();
          lookup->answer = std::move(*answer);
          lookup->status =
              lookup->answer.exists ? DnsAnswer::Status::ok : DnsAnswer::Status::nxdomain;
          if (cache) cache->put(lookup->qname, lookup->answer, std::chrono::seconds(0));
          lookup->completion.set();
          co_return;
        }
      }
    }
    DnsAnswer reply = co_await resolver->query_a(lookup->qname);
    list.latency->observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    lookup->status = reply.status;
    lookup->error = reply.error;
    if (reply.status == DnsAnswer::Status::ok) {
      lookup->answer.exists = true;
      lookup->answer.addresses = reply.addresses;
      const bool any_listed =
          std::any_of(reply.addresses.begin(), reply.addresses.end(), [&](std::uint32_t address) {
            return classify_list_reply(address, list.filter) == ListReply::listed;
          });
      if (any_listed && list.rule.fetch_txt) {
        DnsAnswer text = co_await resolver->query_txt(lookup->qname);
        std::string joined;
        for (const auto& piece : text.texts) joined += (joined.empty() ? "" : " ") + piece;
        lookup->answer.text = sanitize_text(joined);
      }
      ttl = reply.ttl;
      publish = true;
    } else if (reply.not_found()) {
      // Negative answers are cached too (for min_ttl): most clients are not listed.
      publish = true;
    }
    if (publish && cache) cache->put(lookup->qname, lookup->answer, ttl);
  } catch (const std::exception& error) {
    lookup->status = DnsAnswer::Status::error;
    lookup->error = error.what();
    publish = false;
  }
  lookup->completion.set();  // the session goes on; sharing the answer is not its business
  if (publish && store) {
    const auto kept = cache ? cache->clamp_ttl(ttl) : std::max(ttl, std::chrono::seconds(60));
    try {
      co_await store->set(store_key_text, encode_list_answer(lookup->answer), kept);
    } catch (const std::exception&) {
      // The store counts and logs its own failures; a cache write is best effort.
    }
  }
}

struct ProbeOutcome {
  bool conclusive = false;
  std::string problem;  // empty: healthy
};

// RFC 5782 section 5: an IP list MUST list 127.0.0.2 and MUST NOT list 127.0.0.1; a
// domain list MUST list TEST and MUST NOT list INVALID. A list that answers for
// 127.0.0.1 answers for everything (a dead list's wildcard): it would reject the world.
asio::awaitable<ProbeOutcome> probe_list(const List& list, DnsResolver& resolver) {
  const bool ip_list = list.rule.kind == policy::DnsblRule::Kind::ip;
  const std::string listed_name = (ip_list ? "2.0.0.127." : "test.") + list.zone;
  const std::string clean_name = (ip_list ? "1.0.0.127." : "invalid.") + list.zone;
  const std::string listed_point = ip_list ? "127.0.0.2" : "TEST";
  const std::string clean_point = ip_list ? "127.0.0.1" : "INVALID";
  DnsAnswer listed = co_await resolver.query_a(listed_name);
  DnsAnswer clean = co_await resolver.query_a(clean_name);
  ProbeOutcome outcome;
  if (listed.failed() || clean.failed()) co_return outcome;  // a DNS outage, not a bad list
  outcome.conclusive = true;
  auto real_listing = [](const DnsAnswer& answer) {
    return std::any_of(answer.addresses.begin(), answer.addresses.end(),
                       [](std::uint32_t a) { return (a >> 24) == 127 && a < 0x7ffffffc; });
  };
  if (clean.status == DnsAnswer::Status::ok && real_listing(clean)) {
    outcome.problem = fmt::format(
        "it lists the test point {} (answer {}), which must never be "
        "listed: it answers for everything (RFC 5782)",
        clean_point, format_ipv4(clean.addresses.front()));
  } else if (listed.status != DnsAnswer::Status::ok) {
    outcome.problem = fmt::format("it does not list the test point {} (answer: {}) (RFC 5782)",
                                  listed_point, dns_status_name(listed.status));
  } else if (!real_listing(listed)) {
    outcome.problem = fmt::format("it answers {} for the test point {}, not a listing",
                                  format_ipv4(listed.addresses.front()), listed_point);
  }
  co_return outcome;
}

asio::awaitable<void> probe_and_record(std::shared_ptr<List> list,
                                       std::shared_ptr<DnsResolver> resolver,
                                       DnsblOptions options) {
  ProbeOutcome outcome;
  try {
    outcome = co_await probe_list(*list, *resolver);
  } catch (const std::exception& error) {
    spdlog::warn("dnsbl {}: health probe failed: {}", list->display, error.what());
  }
  if (!outcome.conclusive) {
    list->next_probe.store(now_nanoseconds() +
                           std::chrono::nanoseconds(options.probe_retry).count());
    co_return;
  }
  if (!outcome.problem.empty()) {
    if (!list->suspended.exchange(true)) {
      list->suspended_gauge->set(1);
      list->suspensions->inc();
      spdlog::error("dnsbl {}: LIST SUSPENDED, its answers are ignored: {}; probing again in {}s",
                    list->display, outcome.problem, options.probe_interval.count());
    }
  } else if (list->suspended.exchange(false)) {
    list->suspended_gauge->set(0);
    spdlog::warn("dnsbl {}: list resumed, its RFC 5782 test points answer correctly",
                 list->display);
  }
}

void maybe_probe(const std::shared_ptr<List>& list, Services& services,
                 const DnsblOptions& options) {
  if (!options.probe || !services.resolver) return;
  const std::int64_t now = now_nanoseconds();
  std::int64_t due = list->next_probe.load();
  if (now < due) return;
  // One thread wins the probe; the others see the new due time.
  const std::int64_t next = now + std::chrono::nanoseconds(options.probe_interval).count();
  if (!list->next_probe.compare_exchange_strong(due, next)) return;
  asio::co_spawn(services.executor, probe_and_record(list, services.resolver, options),
                 asio::detached);
}

class DnsblInstance final : public FilterInstance {
 public:
  DnsblInstance(const std::vector<std::shared_ptr<List>>& lists, Services& services)
      : lists_(lists), services_(services) {}

  asio::awaitable<Verdict> on_stage(Stage stage, const SessionContext& context) override {
    switch (stage) {
      case Stage::connect:
        start_client_lookups(context);
        break;
      case Stage::helo:
        start_helo_lookups(context);
        break;
      case Stage::mail:
        start_sender_lookups(context);
        break;
      case Stage::rcpt:
        co_return co_await judge();
      default:
        break;
    }
    co_return Verdict::next();
  }

  // The first RCPT only waits for lookups still in flight.
  bool ready(Stage stage) const override {
    return stage == Stage::rcpt &&
           std::all_of(lookups_.begin(), lookups_.end(),
                       [](const auto& lookup) { return lookup->reported || lookup->completion.done(); });
  }

  void reset_transaction() override {
    std::erase_if(lookups_, [](const auto& lookup) { return lookup->origin == Stage::mail; });
  }

 private:
  void start(const std::shared_ptr<List>& list, const std::string& key, std::string subject,
             Stage origin) {
    auto lookup = std::make_shared<Lookup>(services_.executor);
    lookup->list = list;
    lookup->origin = origin;
    lookup->subject = std::move(subject);
    lookup->qname = key + "." + list->zone;
    lookups_.push_back(lookup);
    if (services_.dns_cache) {
      if (auto cached = services_.dns_cache->get(lookup->qname)) {
        list->cached->inc();
        lookup->answer = std::move(*cached);
        lookup->status =
            lookup->answer.exists ? DnsAnswer::Status::ok : DnsAnswer::Status::nxdomain;
        lookup->completion.set();
        return;
      }
    }
    if (!services_.resolver) {
      lookup->error = "no resolver";
      lookup->completion.set();
      return;
    }
    asio::co_spawn(
        services_.executor,
        run_lookup(lookup, services_.resolver, services_.dns_cache, fleet_store(services_.store)),
        asio::detached);
  }

  void start_client_lookups(const SessionContext& context) {
    if (client_started_) return;
    client_started_ = true;
    const std::optional<std::string> key = reverse_address(context.client_ip);
    if (!key) return;  // not an IP (a test harness, a unix socket)
    for (const auto& list : lists_) {
      if (list->rule.kind != policy::DnsblRule::Kind::ip || list->suspended.load()) continue;
      start(list, *key, fmt::format("client [{}]", context.client_ip), Stage::connect);
    }
  }

  void start_helo_lookups(const SessionContext& context) {
    std::string name = strip_dot(policy::ascii_lower(context.helo));
    if (helo_started_ || !looks_like_domain(name)) return;
    helo_started_ = true;
    for (const auto& list : lists_) {
      if (list->rule.kind != policy::DnsblRule::Kind::helo || list->suspended.load()) continue;
      start(list, name, fmt::format("Helo command [{}]", name), Stage::helo);
    }
  }

  void start_sender_lookups(const SessionContext& context) {
    reset_transaction();
    std::string domain = strip_dot(policy::ascii_lower(context.sender_domain));
    if (!looks_like_domain(domain)) return;
    for (const auto& list : lists_) {
      if (list->rule.kind != policy::DnsblRule::Kind::sender_domain || list->suspended.load())
        continue;
      start(list, domain, fmt::format("Sender address [{}]", context.sender), Stage::mail);
    }
  }

  asio::awaitable<Verdict> judge() {
    std::vector<std::shared_ptr<Lookup>> due;
    for (const auto& lookup : lookups_)
      if (!lookup->reported) due.push_back(lookup);
    // Decisive actions go by config order, as Postfix applies restrictions in order.
    std::stable_sort(due.begin(), due.end(),
                     [](const auto& a, const auto& b) { return a->list->index < b->list->index; });
    for (const auto& lookup : due) co_await lookup->completion.wait();
    Verdict verdict;
    for (const auto& lookup : due) {
      lookup->reported = true;
      if (lookup->list->suspended.load()) continue;
      judge_one(*lookup, verdict);
    }
    co_return verdict;
  }

  static void decide(Verdict& verdict, Verdict::Kind kind, const Lookup& lookup, smtp::Reply reply,
                     std::string detail) {
    const List& list = *lookup.list;
    if (verdict.kind != Verdict::Kind::next) return;  // an earlier list already decided
    verdict.kind = kind;
    verdict.filter = "dnsbl";
    verdict.rule = list.rule_name;
    verdict.reply = std::move(reply);
    verdict.detail = std::move(detail);
    verdict.dry_run = list.rule.action == policy::RuleAction::log;
    verdict.origin = lookup.origin;
  }

  void judge_one(const Lookup& lookup, Verdict& verdict) {
    const List& list = *lookup.list;
    std::string failure;
    std::string reason;
    std::vector<std::string> listed_codes;
    if (lookup.status == DnsAnswer::Status::nxdomain ||
        lookup.status == DnsAnswer::Status::nodata) {
      list.not_listed->inc();
      return;
    }
    if (lookup.status != DnsAnswer::Status::ok) {
      reason = dns_status_name(lookup.status);
      failure = lookup.error.empty() ? reason : lookup.error;
    } else {
      std::string bad_code;
      std::string outside;
      for (std::uint32_t address : lookup.answer.addresses) {
        switch (classify_list_reply(address, list.filter)) {
          case ListReply::listed:
            listed_codes.push_back(format_ipv4(address));
            break;
          case ListReply::not_matched:
            break;
          case ListReply::error_code:
            bad_code = format_ipv4(address);
            break;
          case ListReply::outside_loopback:
            outside = format_ipv4(address);
            break;
        }
      }
      if (listed_codes.empty() && !bad_code.empty()) {
        reason = "error_code";
        failure = fmt::format("the list answered the error code {}, not a listing", bad_code);
      } else if (listed_codes.empty() && !outside.empty()) {
        reason = "outside_127";
        failure = fmt::format("the answer {} is outside 127.0.0.0/8, not a listing", outside);
      }
    }
    if (!failure.empty()) {
      list.errors(reason).inc();
      spdlog::warn("dnsbl {}: lookup for {} failed: {}; on_error {}", list.display, lookup.subject,
                   failure, action_word(list.rule.on_error));
      verdict.contributions.push_back({"dnsbl", list.rule_name, 0,
                                       fmt::format("{} lookup failed: {}", list.display, failure),
                                       stage_name(lookup.origin), false, ""});
      if (list.rule.on_error == policy::OnError::tempfail)
        decide(verdict, Verdict::Kind::tempfail, lookup,
               smtp::Reply(451, "4.3.0",
                           fmt::format("Temporary lookup failure; {} could not be checked "
                                       "against {}",
                                       lookup.subject, list.display)),
               fmt::format("{} lookup failed", list.display));
      return;
    }
    if (listed_codes.empty()) {
      list.not_listed->inc();  // listed, but with codes this rule does not count
      return;
    }
    list.listed->inc();
    std::string codes;
    for (const auto& code : listed_codes) codes += (codes.empty() ? "" : ",") + code;
    std::string detail = fmt::format("{} {}", list.display, codes);
    std::string reply_text = fmt::format("{} blocked using {}", lookup.subject, list.display);
    if (!lookup.answer.text.empty()) {
      detail += fmt::format(" \"{}\"", lookup.answer.text);
      reply_text += "; " + lookup.answer.text;
    }
    const bool dry_run = list.rule.action == policy::RuleAction::log;
    verdict.contributions.push_back({"dnsbl", list.rule_name, list.rule.weight, detail,
                                     stage_name(lookup.origin), dry_run, reply_text});
    switch (list.rule.action) {
      case policy::RuleAction::score:
      case policy::RuleAction::log:
      case policy::RuleAction::tag:  // content rules only (policy/ refuses it here)
        break;
      case policy::RuleAction::reject:
        decide(verdict, Verdict::Kind::reject, lookup,
               smtp::Reply(554, "5.7.1", "Service unavailable; " + reply_text), detail);
        break;
      case policy::RuleAction::tempfail:
        decide(verdict, Verdict::Kind::tempfail, lookup,
               smtp::Reply(450, "4.7.1", "Service temporarily unavailable; " + reply_text), detail);
        break;
      case policy::RuleAction::drop:
        decide(verdict, Verdict::Kind::drop, lookup,
               smtp::Reply(421, "4.7.0", "Service unavailable; " + reply_text), detail);
        break;
      case policy::RuleAction::accept:
        decide(verdict, Verdict::Kind::accept, lookup, smtp::Reply(), detail);
        break;
    }
  }

  const std::vector<std::shared_ptr<List>>& lists_;
  Services& services_;
  std::vector<std::shared_ptr<Lookup>> lookups_;
  bool client_started_ = false;
  bool helo_started_ = false;
};

}  // namespace

DnsblFilter::DnsblFilter(const std::vector<policy::DnsblRule>& rules, DnsblOptions options)
    : options_(options) {
  auto& registry = metrics::Registry::global();
  for (const auto& rule : rules) {
    auto list = std::make_shared<List>();
    list->rule = rule;
    list->index = lists_.size();
    list->zone = strip_dot(policy::ascii_lower(rule.zone));
    list->display = rule.reply_name.empty() ? list->zone : rule.reply_name;
    list->rule_name = (rule.name.empty() || rule.name == rule.zone) ? list->display : rule.name;
    std::string error;
    auto filter = policy::parse_reply_filter(rule.match, error);
    // The loader validated it; an unparsable one here means "anything in 127/8".
    list->filter = filter ? *filter : *policy::parse_reply_filter("127.0.0.0/8", error);
    const metrics::Labels labels{{"list", list->display}};
    list->latency = &registry.histogram("mxgate_dnsbl_lookup_seconds",
                                        "DNS list lookup latency (cache misses)", labels);
    list->listed = &registry.counter("mxgate_dnsbl_lookups_total", "DNS list lookups by result",
                                     {{"list", list->display}, {"result", "listed"}});
    list->not_listed = &registry.counter("mxgate_dnsbl_lookups_total", "DNS list lookups by result",
                                         {{"list", list->display}, {"result", "not_listed"}});
    list->cached = &registry.counter("mxgate_dnsbl_cache_hits_total",
                                     "DNS list lookups answered from the cache", labels);
    list->suspensions =
        &registry.counter("mxgate_dnsbl_suspensions_total",
                          "DNS lists suspended after failing RFC 5782 probes", labels);
    list->suspended_gauge =
        &registry.gauge("mxgate_dnsbl_list_suspended",
                        "1 while a DNS list is suspended (failed its probes)", labels);
    lists_.push_back(std::move(list));
  }
}

DnsblFilter::~DnsblFilter() = default;

bool DnsblFilter::wants(Stage stage) const {
  return stage == Stage::connect || stage == Stage::helo || stage == Stage::mail ||
         stage == Stage::rcpt;
}

std::unique_ptr<FilterInstance> DnsblFilter::open(Services& services) const {
  for (const auto& list : lists_) maybe_probe(list, services, options_);
  return std::make_unique<DnsblInstance>(lists_, services);
}

policy::OnError DnsblFilter::on_error() const {
  // One fail-closed list makes the filter fail closed when it misses its deadline.
  for (const auto& list : lists_)
    if (list->rule.on_error == policy::OnError::tempfail) return policy::OnError::tempfail;
  return policy::OnError::allow;
}

asio::awaitable<void> DnsblFilter::probe_all(Services& services) const {
  if (!services.resolver) co_return;
  for (const auto& list : lists_) {
    list->next_probe.store(now_nanoseconds() +
                           std::chrono::nanoseconds(options_.probe_interval).count());
    co_await probe_and_record(list, services.resolver, options_);
  }
}

bool DnsblFilter::suspended(std::string_view name) const {
  for (const auto& list : lists_)
    if (list->rule_name == name || list->display == name) return list->suspended.load();
  return false;
}

}  // namespace mxgate::filters

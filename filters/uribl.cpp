// URL domain-list lookups at end of data: domains from the shared MIME walk, keys by
// libpsl and libidn2, queries in parallel through the thread's resolver and the DNS cache.
#include "filters/uribl.hpp"
#include "policy/names.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <idn2.h>
#include <libpsl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>
#include <cctype>
#include <cstdlib>
#include <unordered_set>

#include "filters/content.hpp"
#include "filters/dns_cache.hpp"
#include "filters/dns_resolver.hpp"
#include "filters/dnsbl.hpp"
#include "filters/metrics.hpp"
#include "filters/mime.hpp"

namespace mxgate::filters {

namespace asio = boost::asio;

const psl_ctx_st* public_suffix_list() {
  // psl_latest() picks the newest of the system file and the built-in data; a process
  // lifetime object (never freed: threads may still read it at exit).
  static const psl_ctx_t* list = [] {
    const psl_ctx_t* loaded = psl_latest(nullptr);
    return loaded ? loaded : psl_builtin();
  }();
  return list;
}

namespace {

bool valid_ldh_domain(std::string_view name) {
  if (name.empty() || name.size() > 253 || name.find('.') == std::string_view::npos) return false;
  std::size_t label = 0;
  for (char c : name) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
    if (++label > 63) return false;
  }
  return label > 0;
}

}  // namespace

std::optional<std::string> url_list_domain(std::string_view url, const psl_ctx_st* psl) {
  const std::string host = mime::url_host(url);
  if (host.empty()) return std::nullopt;
  unsigned char address[4];
  if (inet_pton(AF_INET, host.c_str(), address) == 1) return std::nullopt;
  std::string ascii = host;
  const bool needs_idna = std::any_of(host.begin(), host.end(),
                                      [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
  if (needs_idna) {
    char* converted = nullptr;
    // UTS #46 non-transitional (IDNA2008 as browsers do it): "ß" stays "ß".
    int status = idn2_to_ascii_8z(host.c_str(), &converted, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (status != IDN2_OK) {
      std::free(converted);
      converted = nullptr;
      status = idn2_to_ascii_8z(host.c_str(), &converted, IDN2_NFC_INPUT | IDN2_TRANSITIONAL);
    }
    if (status != IDN2_OK || !converted) {
      std::free(converted);
      return std::nullopt;
    }
    ascii = converted;
    std::free(converted);
  }
  if (!valid_ldh_domain(ascii)) return std::nullopt;
  const char* registrable = psl_registrable_domain(psl ? psl : public_suffix_list(), ascii.c_str());
  if (!registrable) return std::nullopt;
  return std::string(registrable);
}

struct UriblFilter::List {
  policy::DnsblRule rule;
  policy::ReplyFilter filter;
  std::size_t index = 0;
  std::string zone;
  std::string display;
  std::string rule_name;
  metrics::Counter* listed = nullptr;
  metrics::Counter* not_listed = nullptr;
  metrics::Counter* cached = nullptr;
  metrics::Counter* errors = nullptr;
};

namespace {

using List = UriblFilter::List;

struct Lookup {
  std::shared_ptr<List> list;
  std::string domain;
  std::string qname;
  DnsAnswer::Status status = DnsAnswer::Status::error;
  std::string error;
  CachedAnswer answer;
};

// Every lookup of one message; `signal` is cancelled when the last one completes.
struct Batch {
  explicit Batch(const asio::any_io_executor& executor) : signal(executor) {
    signal.expires_at(asio::steady_timer::time_point::max());
  }
  std::vector<Lookup> lookups;
  std::size_t remaining = 0;
  asio::steady_timer signal;
};

asio::awaitable<void> run_lookup(std::shared_ptr<Batch> batch, std::size_t index,
                                 std::shared_ptr<DnsResolver> resolver,
                                 std::shared_ptr<DnsCache> cache) {
  Lookup& lookup = batch->lookups[index];
  try {
    DnsAnswer reply = co_await resolver->query_a(lookup.qname);
    lookup.status = reply.status;
    lookup.error = reply.error;
    if (reply.status == DnsAnswer::Status::ok) {
      lookup.answer.exists = true;
      lookup.answer.addresses = reply.addresses;
      if (cache) cache->put(lookup.qname, lookup.answer, reply.ttl);
    } else if (reply.not_found() && cache) {
      cache->put(lookup.qname, CachedAnswer{}, std::chrono::seconds(0));
    }
  } catch (const std::exception& error) {
    lookup.status = DnsAnswer::Status::error;
    lookup.error = error.what();
  }
  if (--batch->remaining == 0) batch->signal.cancel();
}

class UriblInstance final : public FilterInstance {
 public:
  UriblInstance(const std::vector<std::shared_ptr<List>>& lists, const UriblOptions& options,
                Services& services)
      : lists_(lists), options_(options), services_(services) {}

  asio::awaitable<Verdict> on_stage(Stage stage, const SessionContext& context) override {
    if (stage != Stage::data || !context.message || lists_.empty()) co_return Verdict::next();
    const auto parsed = parse_message_shared(*context.message, options_.mime);
    std::vector<std::string> domains;
    std::unordered_set<std::string> seen;
    for (const std::string& url : parsed->urls) {
      if (domains.size() >= options_.max_url_lookups) break;
      if (auto domain = url_list_domain(url, public_suffix_list()))
        if (seen.insert(*domain).second) domains.push_back(std::move(*domain));
    }
    if (domains.empty()) co_return Verdict::next();

    auto batch = std::make_shared<Batch>(services_.executor);
    for (const auto& list : lists_)
      for (const auto& domain : domains)
        batch->lookups.push_back(
            {list, domain, domain + "." + list->zone, DnsAnswer::Status::error, {}, {}});
    std::vector<std::size_t> to_ask;
    for (std::size_t i = 0; i < batch->lookups.size(); ++i) {
      Lookup& lookup = batch->lookups[i];
      if (services_.dns_cache) {
        if (auto cached = services_.dns_cache->get(lookup.qname)) {
          lookup.list->cached->inc();
          lookup.answer = std::move(*cached);
          lookup.status =
              lookup.answer.exists ? DnsAnswer::Status::ok : DnsAnswer::Status::nxdomain;
          continue;
        }
      }
      if (!services_.resolver) {
        lookup.error = "no resolver";
        continue;
      }
      to_ask.push_back(i);
    }
    batch->remaining = to_ask.size();
    for (std::size_t i : to_ask)
      asio::co_spawn(services_.executor,
                     run_lookup(batch, i, services_.resolver, services_.dns_cache), asio::detached);
    while (batch->remaining > 0) {
      boost::system::error_code error;
      co_await batch->signal.async_wait(asio::redirect_error(asio::use_awaitable, error));
      // Only the last lookup cancels the timer; anything else is the pipeline's deadline.
      if (batch->remaining > 0) throw boost::system::system_error(asio::error::operation_aborted);
    }
    co_return judge(*batch);
  }

 private:
  static void decide(Verdict& verdict, Verdict::Kind kind, const List& list, smtp::Reply reply,
                     std::string detail) {
    if (verdict.kind != Verdict::Kind::next) return;  // an earlier list already decided
    verdict.kind = kind;
    verdict.filter = "uribl";
    verdict.rule = list.rule_name;
    verdict.reply = std::move(reply);
    verdict.detail = std::move(detail);
    verdict.dry_run = list.rule.action == policy::RuleAction::log;
  }

  Verdict judge(const Batch& batch) {
    Verdict verdict;
    for (const auto& list : lists_) {
      std::string listed;  // "bad.example 127.0.1.2, worse.example 127.0.1.4"
      std::string first_domain;
      std::string failure;
      for (const Lookup& lookup : batch.lookups) {
        if (lookup.list != list) continue;
        if (lookup.status == DnsAnswer::Status::nxdomain ||
            lookup.status == DnsAnswer::Status::nodata) {
          list->not_listed->inc();
          continue;
        }
        if (lookup.status != DnsAnswer::Status::ok) {
          list->errors->inc();
          if (failure.empty())
            failure =
                fmt::format("{}: {}", lookup.domain,
                            lookup.error.empty() ? dns_status_name(lookup.status) : lookup.error);
          continue;
        }
        std::string codes;
        for (std::uint32_t address : lookup.answer.addresses) {
          const ListReply reply = classify_list_reply(address, list->filter);
          if (reply == ListReply::listed) {
            codes += (codes.empty() ? "" : ",") + format_ipv4(address);
          } else if (reply != ListReply::not_matched && failure.empty()) {
            list->errors->inc();
            failure = fmt::format("{}: the list answered {}, not a listing", lookup.domain,
                                  format_ipv4(address));
          }
        }
        if (codes.empty()) continue;
        list->listed->inc();
        if (first_domain.empty()) first_domain = lookup.domain;
        listed += fmt::format("{}{} {}", listed.empty() ? "" : ", ", lookup.domain, codes);
      }
      if (!failure.empty()) {
        spdlog::warn("uribl {}: lookup failed: {}; on_error {}", list->display, failure,
                     list->rule.on_error == policy::OnError::tempfail ? "tempfail" : "allow");
        verdict.contributions.push_back(
            {"uribl", list->rule_name, 0,
             fmt::format("{} lookup failed: {}", list->display, failure), "data", false, ""});
        if (list->rule.on_error == policy::OnError::tempfail)
          decide(verdict, Verdict::Kind::tempfail, *list,
                 smtp::Reply(451, "4.3.0",
                             fmt::format("Temporary lookup failure; message URLs could not be "
                                         "checked against {}",
                                         list->display)),
                 fmt::format("{} lookup failed", list->display));
      }
      if (listed.empty()) continue;
      // One contribution per list however many of its domains are listed: a message
      // with ten links to one spammer is not ten times the evidence.
      const std::string detail = fmt::format("{} {}", list->display, listed);
      const std::string reply_text =
          fmt::format("message links to {}, listed by {}", first_domain, list->display);
      const bool dry_run = list->rule.action == policy::RuleAction::log;
      verdict.contributions.push_back(
          {"uribl", list->rule_name, list->rule.weight, detail, "data", dry_run, reply_text});
      switch (list->rule.action) {
        case policy::RuleAction::reject:
          decide(verdict, Verdict::Kind::reject, *list,
                 smtp::Reply(554, "5.7.1", "Message content rejected; " + reply_text), detail);
          break;
        case policy::RuleAction::tempfail:
          decide(verdict, Verdict::Kind::tempfail, *list,
                 smtp::Reply(450, "4.7.1", "Message content deferred; " + reply_text), detail);
          break;
        case policy::RuleAction::drop:
          decide(verdict, Verdict::Kind::drop, *list,
                 smtp::Reply(421, "4.7.0", "Service unavailable; " + reply_text), detail);
          break;
        case policy::RuleAction::accept:
          decide(verdict, Verdict::Kind::accept, *list, smtp::Reply(), detail);
          break;
        default:
          break;
      }
    }
    return verdict;
  }

  const std::vector<std::shared_ptr<List>>& lists_;
  const UriblOptions& options_;
  Services& services_;
};

}  // namespace

UriblOptions uribl_options(const policy::Config& config) {
  UriblOptions options;
  options.max_url_lookups = config.content_limits.max_url_lookups;
  options.mime = content_options(config).mime;
  return options;
}

UriblFilter::UriblFilter(const std::vector<policy::DnsblRule>& rules, UriblOptions options)
    : options_(options) {
  auto& registry = metrics::Registry::global();
  (void)public_suffix_list();  // load it now, not in the first session
  for (const auto& rule : rules) {
    auto list = std::make_shared<List>();
    list->rule = rule;
    list->index = lists_.size();
    list->zone = policy::ascii_lower(rule.zone);
    if (!list->zone.empty() && list->zone.back() == '.') list->zone.pop_back();
    list->display = rule.reply_name.empty() ? list->zone : rule.reply_name;
    list->rule_name = (rule.name.empty() || rule.name == rule.zone) ? list->display : rule.name;
    std::string error;
    auto filter = policy::parse_reply_filter(rule.match, error);
    // The loader validated it; an unparsable one here means "anything in 127/8".
    list->filter = filter ? *filter : *policy::parse_reply_filter("127.0.0.0/8", error);
    list->listed =
        &registry.counter("mxgate_uribl_lookups_total", "URL domain list lookups by result",
                          {{"list", list->display}, {"result", "listed"}});
    list->not_listed =
        &registry.counter("mxgate_uribl_lookups_total", "URL domain list lookups by result",
                          {{"list", list->display}, {"result", "not_listed"}});
    list->cached = &registry.counter("mxgate_uribl_cache_hits_total",
                                     "URL domain list lookups answered from the cache",
                                     {{"list", list->display}});
    list->errors = &registry.counter(
        "mxgate_uribl_errors_total",
        "URL domain list lookups that failed or answered an error code", {{"list", list->display}});
    lists_.push_back(std::move(list));
  }
}

UriblFilter::~UriblFilter() = default;

std::unique_ptr<FilterInstance> UriblFilter::open(Services& services) const {
  return std::make_unique<UriblInstance>(lists_, options_, services);
}

policy::OnError UriblFilter::on_error() const {
  for (const auto& list : lists_)
    if (list->rule.on_error == policy::OnError::tempfail) return policy::OnError::tempfail;
  return policy::OnError::allow;
}

}  // namespace mxgate::filters

// Forward-confirmed reverse DNS for the client, bounded by dns.timeout and run beside the
// session (the greeting never waits), and the rdns_checks scores built on its answer.
#include "filters/reverse_dns.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cctype>
#include <cstdint>
#include <cstring>

#include "filters/client_name_cache.hpp"
#include "filters/dns_resolver.hpp"
#include "filters/metrics.hpp"
#include "policy/names.hpp"

namespace mxgate::filters {

namespace asio = boost::asio;

namespace {

struct ClientAddress {
  bool ipv4 = true;
  std::array<std::uint8_t, 16> bytes{};  // IPv4 in the first 4, network order
};

std::optional<ClientAddress> parse_client_address(std::string_view address) {
  const std::string text(address);
  ClientAddress client;
  if (inet_pton(AF_INET, text.c_str(), client.bytes.data()) == 1) return client;
  if (inet_pton(AF_INET6, text.c_str(), client.bytes.data()) != 1) return std::nullopt;
  static constexpr std::array<std::uint8_t, 12> mapped_prefix{0, 0, 0, 0, 0,    0,
                                                              0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(mapped_prefix.begin(), mapped_prefix.end(), client.bytes.begin())) {
    std::memmove(client.bytes.data(), client.bytes.data() + 12, 4);
    std::fill(client.bytes.begin() + 4, client.bytes.end(), 0);
    return client;
  }
  client.ipv4 = false;
  return client;
}

std::string reverse_name_of(const ClientAddress& client) {
  const auto& b = client.bytes;
  if (client.ipv4) return fmt::format("{}.{}.{}.{}.in-addr.arpa", b[3], b[2], b[1], b[0]);
  static constexpr char hex[] = "0123456789abcdef";
  std::string name;
  name.reserve(72);
  for (int i = 15; i >= 0; --i) {
    name += hex[b[i] & 0x0f];
    name += '.';
    name += hex[b[i] >> 4];
    name += '.';
  }
  return name + "ip6.arpa";
}

std::string address_text(const ClientAddress& client) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(client.ipv4 ? AF_INET : AF_INET6, client.bytes.data(), text, sizeof text);
  return text;
}

bool confirms(const DnsAnswer& answer, const ClientAddress& client) {
  if (client.ipv4) {
    const std::uint32_t wanted = (std::uint32_t{client.bytes[0]} << 24) |
                                 (std::uint32_t{client.bytes[1]} << 16) |
                                 (std::uint32_t{client.bytes[2]} << 8) | client.bytes[3];
    return std::find(answer.addresses.begin(), answer.addresses.end(), wanted) !=
           answer.addresses.end();
  }
  return std::find(answer.ipv6_addresses.begin(), answer.ipv6_addresses.end(), client.bytes) !=
         answer.ipv6_addresses.end();
}

std::string first_address(const DnsAnswer& answer, bool ipv4) {
  ClientAddress shown;
  shown.ipv4 = ipv4;
  if (ipv4 && !answer.addresses.empty()) {
    const std::uint32_t address = answer.addresses.front();
    shown.bytes = {static_cast<std::uint8_t>(address >> 24),
                   static_cast<std::uint8_t>(address >> 16),
                   static_cast<std::uint8_t>(address >> 8), static_cast<std::uint8_t>(address)};
  } else if (!ipv4 && !answer.ipv6_addresses.empty()) {
    shown.bytes = answer.ipv6_addresses.front();
  }
  return address_text(shown);
}

std::string failure_text(const DnsAnswer& answer) {
  return answer.error.empty() ? dns_status_name(answer.status) : answer.error;
}

// The lookups themselves; `result` belongs to verify_client_name, which bounds this in
// time and keeps what was learnt (the PTR name) when the deadline cuts it short.
asio::awaitable<void> resolve(std::shared_ptr<DnsResolver> resolver, ClientAddress client,
                              ReverseDnsResult& result) {
  try {
    const DnsAnswer ptr = co_await resolver->query_ptr(reverse_name_of(client));
    if (ptr.status == DnsAnswer::Status::cancelled) co_return;
    if (ptr.not_found()) {
      result.status = ClientNameStatus::no_ptr;
      result.detail = fmt::format("no PTR record ({})", dns_status_name(ptr.status));
      result.ttl = ptr.ttl;
      co_return;
    }
    if (ptr.status != DnsAnswer::Status::ok) {
      result.status = ClientNameStatus::tempfail;
      result.detail = "PTR lookup failed: " + failure_text(ptr);
      co_return;
    }
    std::vector<std::string> names;
    std::string malformed;
    for (const auto& raw : ptr.names) {
      if (result.ptr.empty()) result.ptr = policy::ascii_lower(raw);
      // Postfix treats a PTR that is not a host name (or looks like an address) as unknown.
      std::string name = raw;
      std::string error;
      if (!policy::normalize_domain(name, error)) {
        if (malformed.empty()) malformed = "PTR " + error;
        continue;
      }
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
      if (names.size() == kMaxPtrNames) break;
    }
    std::string failure;
    std::string mismatch;
    // Every answer read decides the outcome (an earlier name could confirm once its
    // records change): the result stands for the shortest of their TTLs.
    std::chrono::seconds ttl = ptr.ttl;
    for (const auto& name : names) {
      DnsAnswer forward;
      if (client.ipv4)
        forward = co_await resolver->query_a(name);
      else
        forward = co_await resolver->query_aaaa(name);
      if (forward.status == DnsAnswer::Status::cancelled) co_return;
      if (forward.failed()) {
        if (failure.empty())
          failure = fmt::format("lookup of {} failed: {}", name, failure_text(forward));
        continue;
      }
      ttl = std::min(ttl, forward.ttl);
      if (confirms(forward, client)) {
        result.status = ClientNameStatus::verified;
        result.name = name;
        result.detail.clear();
        result.ttl = ttl;
        co_return;
      }
      if (mismatch.empty())
        mismatch = forward.not_found()
                       ? fmt::format("PTR {} has no {} record", name, client.ipv4 ? "A" : "AAAA")
                       : fmt::format("PTR {} resolves to {}, not to the client", name,
                                     first_address(forward, client.ipv4));
    }
    // A name that might still confirm once DNS answers is not a verdict (Postfix's
    // temporary "unknown": 450, never 550).
    if (!failure.empty()) {
      result.status = ClientNameStatus::tempfail;
      result.detail = std::move(failure);
      co_return;
    }
    result.status = ClientNameStatus::unverified;
    result.detail = !mismatch.empty() ? std::move(mismatch) : std::move(malformed);
    result.ttl = ttl;
  } catch (const std::exception& error) {
    // A deadline's cancellation may surface as an exception: verify_client_name reports it.
    result.status = ClientNameStatus::tempfail;
    result.detail = error.what();
  }
}

struct LookupMetrics {
  metrics::Counter& result(ClientNameStatus status) {
    switch (status) {
      case ClientNameStatus::verified:
        return verified;
      case ClientNameStatus::no_ptr:
        return no_ptr;
      case ClientNameStatus::unverified:
        return unverified;
      default:
        return tempfail;
    }
  }
  static metrics::Counter& counter(const char* result) {
    return metrics::Registry::global().counter(
        "mxgate_reverse_dns_lookups_total",
        "Client name lookups sent to DNS, by result (cache hits: mxgate_client_name_cache_total)",
        {{"result", result}});
  }
  metrics::Counter& verified = counter("verified");
  metrics::Counter& no_ptr = counter("no_ptr");
  metrics::Counter& unverified = counter("unverified");
  metrics::Counter& tempfail = counter("tempfail");
  metrics::Histogram& seconds = metrics::Registry::global().histogram(
      "mxgate_reverse_dns_seconds", "Time to settle a client's name (PTR and forward lookups)");
};

LookupMetrics& lookup_metrics() {
  static LookupMetrics instance;
  return instance;
}

// Decimal octets in a row with one separator between them (192-0-2-1, 1.2.0.192), in
// either order; or zero-padded (192000002001) or in hex (c0000201).
bool embeds_address(const std::string& name, std::string_view address) {
  const std::optional<ClientAddress> client = parse_client_address(address);
  if (!client || !client->ipv4) return false;
  const auto& b = client->bytes;
  struct Number {
    unsigned value;
    std::size_t begin;
    std::size_t end;
  };
  std::vector<Number> numbers;
  for (std::size_t i = 0; i < name.size();) {
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) {
      ++i;
      continue;
    }
    std::size_t end = i;
    unsigned value = 0;
    while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) {
      if (end - i < 3) value = value * 10 + static_cast<unsigned>(name[end] - '0');
      ++end;
    }
    numbers.push_back({end - i <= 3 ? value : 1000u, i, end});  // 1000: no octet
    i = end;
  }
  for (std::size_t k = 0; k + 4 <= numbers.size(); ++k) {
    bool in_a_row = true;
    bool forward = true;
    bool backward = true;
    for (std::size_t m = 0; m < 4; ++m) {
      if (m > 0 && numbers[k + m].begin != numbers[k + m - 1].end + 1) in_a_row = false;
      forward = forward && numbers[k + m].value == b[m];
      backward = backward && numbers[k + m].value == b[3 - m];
    }
    if (in_a_row && (forward || backward)) return true;
  }
  const std::string padded = fmt::format("{:03}{:03}{:03}{:03}", b[0], b[1], b[2], b[3]);
  const std::string padded_backward = fmt::format("{:03}{:03}{:03}{:03}", b[3], b[2], b[1], b[0]);
  const std::string hex = fmt::format("{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3]);
  return name.find(padded) != std::string::npos ||
         name.find(padded_backward) != std::string::npos || name.find(hex) != std::string::npos;
}

class RdnsInstance final : public FilterInstance {
 public:
  explicit RdnsInstance(const RdnsFilter& filter) : filter_(filter) {}

  asio::awaitable<Verdict> on_stage(Stage, const SessionContext& context) override {
    Verdict verdict;
    // Judged once, when the session has settled the name (it does before the first RCPT).
    if (reported_ || context.client_name_status == ClientNameStatus::unknown) co_return verdict;
    reported_ = true;
    const RdnsCheckOptions& options = filter_.options();
    const std::string& ip = context.client_ip;
    auto add = [&](const char* rule, double score, std::string detail, std::string reply_text) {
      verdict.contributions.push_back(
          {"rdns", rule, score, std::move(detail), "connect", false, std::move(reply_text)});
    };
    switch (context.client_name_status) {
      case ClientNameStatus::no_ptr:
        // Postfix's words (reject_unknown_reverse_client_hostname), which senders know.
        if (options.missing != 0)
          add("missing", options.missing, fmt::format("client [{}] has no PTR record", ip),
              fmt::format("cannot find your reverse hostname, [{}]", ip));
        break;
      case ClientNameStatus::unverified:
        if (options.unverified != 0)
          add("unverified", options.unverified,
              fmt::format("PTR {} of [{}] does not resolve back to it", context.client_ptr, ip),
              fmt::format("cannot find your hostname, [{}]", ip));
        break;
      case ClientNameStatus::tempfail:
        // Not evidence against the client: shown on the score sheet, never scored.
        add("tempfail", 0, fmt::format("the name of [{}] could not be looked up", ip), "");
        break;
      default:
        break;
    }
    // An unverified PTR still says what the address owner calls it.
    const std::string& name =
        context.client_name.empty() ? context.client_ptr : context.client_name;
    if (options.dynamic != 0 && !name.empty()) {
      if (auto reason = dynamic_name_reason(name, ip, filter_.patterns()))
        add("dynamic", options.dynamic,
            fmt::format("client name {} looks dynamic: {}", name, *reason),
            fmt::format("client {}[{}] looks like a dynamic address", name, ip));
    }
    co_return verdict;
  }

 private:
  const RdnsFilter& filter_;
  bool reported_ = false;
};

}  // namespace

std::optional<std::string> reverse_lookup_name(std::string_view address) {
  const std::optional<ClientAddress> client = parse_client_address(address);
  if (!client) return std::nullopt;
  return reverse_name_of(*client);
}

const char* client_name_status_name(ClientNameStatus status) {
  switch (status) {
    case ClientNameStatus::unknown:
      return "unknown";
    case ClientNameStatus::verified:
      return "verified";
    case ClientNameStatus::no_ptr:
      return "no_ptr";
    case ClientNameStatus::unverified:
      return "unverified";
    case ClientNameStatus::tempfail:
      return "tempfail";
  }
  return "unknown";
}

asio::awaitable<ReverseDnsResult> verify_client_name(std::shared_ptr<DnsResolver> resolver,
                                                     std::string address,
                                                     std::chrono::milliseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  ReverseDnsResult result;
  const std::optional<ClientAddress> client = parse_client_address(address);
  if (!client || !resolver) {
    result.detail = client ? "no resolver" : "not an IP address";
    co_return result;
  }
  // One deadline for the PTR and every forward lookup: each query alone may take the
  // whole resolver timeout. The loser of || is cancelled (DnsResolver queries are).
  asio::steady_timer deadline(resolver->executor());
  deadline.expires_after(timeout);
  auto outcome = co_await (resolve(resolver, *client, result) ||
                           deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
  if (outcome.index() == 1) {
    result.status = ClientNameStatus::tempfail;
    result.name.clear();
    result.ttl = std::chrono::seconds(0);
    result.detail = fmt::format("no answer within {}ms", timeout.count());
  }
  co_return result;
}

ReverseDnsLookup::ReverseDnsLookup(const asio::any_io_executor& executor) : signal_(executor) {
  signal_.expires_at(asio::steady_timer::time_point::max());
}

std::shared_ptr<ReverseDnsLookup> ReverseDnsLookup::start(std::shared_ptr<DnsResolver> resolver,
                                                          std::shared_ptr<ClientNameCache> cache,
                                                          std::string address,
                                                          std::chrono::milliseconds timeout,
                                                          Callback on_done) {
  const asio::any_io_executor executor = resolver->executor();
  auto lookup = std::make_shared<ReverseDnsLookup>(executor);
  lookup->on_done_ = std::move(on_done);
  if (cache) {
    if (std::optional<ReverseDnsResult> cached = cache->get(address)) {
      // Done now, so a session that checks done() reads the result without waiting; the
      // callback keeps its contract: later, on the executor, once.
      lookup->result_ = std::move(*cached);
      lookup->done_ = true;
      asio::post(executor, [lookup] { lookup->finish(); });
      return lookup;
    }
  }
  asio::co_spawn(executor,
                 run(lookup, std::move(resolver), std::move(cache), std::move(address), timeout),
                 asio::detached);
  return lookup;
}

asio::awaitable<void> ReverseDnsLookup::run(std::shared_ptr<ReverseDnsLookup> lookup,
                                            std::shared_ptr<DnsResolver> resolver,
                                            std::shared_ptr<ClientNameCache> cache,
                                            std::string address,
                                            std::chrono::milliseconds timeout) {
  const auto started = std::chrono::steady_clock::now();
  ReverseDnsResult result;
  try {
    result = co_await verify_client_name(std::move(resolver), address, timeout);
  } catch (const std::exception& error) {
    result.status = ClientNameStatus::tempfail;
    result.detail = error.what();
  }
  LookupMetrics& counted = lookup_metrics();
  counted.result(result.status).inc();
  counted.seconds.observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  if (cache) cache->put(address, result);
  lookup->result_ = std::move(result);
  lookup->finish();
}

void ReverseDnsLookup::finish() {
  done_ = true;
  signal_.cancel();
  if (on_done_) {
    Callback callback = std::move(on_done_);
    on_done_ = nullptr;
    callback(result_);
  }
}

asio::awaitable<void> ReverseDnsLookup::wait() {
  std::shared_ptr<ReverseDnsLookup> self = shared_from_this();
  if (done_) co_return;
  boost::system::error_code ignored;
  // run() cancels the signal when done; it always finishes within its timeout.
  co_await signal_.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
}

std::optional<std::string> dynamic_name_reason(std::string_view name_in, std::string_view address,
                                               const std::vector<std::unique_ptr<RE2>>& patterns) {
  std::string name = policy::ascii_lower(name_in);
  if (!name.empty() && name.back() == '.') name.pop_back();
  if (embeds_address(name, address)) return "it embeds the address";
  for (const auto& pattern : patterns)
    if (pattern->ok() && RE2::PartialMatch(name, *pattern))
      return fmt::format("it matches '{}'", pattern->pattern());
  return std::nullopt;
}

RdnsFilter::RdnsFilter(RdnsCheckOptions options) : options_(std::move(options)) {
  RE2::Options compile;
  compile.set_log_errors(false);
  compile.set_case_sensitive(false);
  for (const auto& pattern : options_.dynamic_patterns)
    patterns_.push_back(std::make_unique<RE2>(pattern, compile));
}

std::unique_ptr<FilterInstance> RdnsFilter::open(Services&) const {
  return std::make_unique<RdnsInstance>(*this);
}

}  // namespace mxgate::filters

// The config loader: YAML text plus -o overrides to an immutable Config, or every error
// found, each with its file:line:column; and the summary `mxgate check` prints.
#include "policy/loader.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <memory>

#include "policy/cidr.hpp"
#include "policy/names.hpp"
#include "policy/overrides.hpp"
#include "policy/rules.hpp"
#include "policy/units.hpp"
#include "policy/yaml_reader.hpp"

namespace mxgate::policy {
namespace {

using namespace std::chrono_literals;
using detail::Context;
using detail::EnumNames;
using detail::Fields;
using detail::ListItem;

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;
constexpr std::uint64_t kGiB = 1024 * kMiB;
constexpr std::uint64_t kTiB = 1024 * kGiB;

const EnumNames<BackendConfig::Tls> kStartTlsModes{
    {"none", BackendConfig::Tls::none},
    {"opportunistic", BackendConfig::Tls::opportunistic},
    {"required", BackendConfig::Tls::required},
};
const EnumNames<BareNewline> kBareNewlines{{"reject", BareNewline::reject},
                                           {"normalize", BareNewline::normalize}};
const std::vector<std::string> kTlsVersions{"TLSv1.2", "TLSv1.3"};
const std::vector<std::string> kLogLevels{"trace", "debug", "info", "warn", "error"};

// Text that ends up inside an SMTP reply or a header must not carry a line break
// (reply injection) or other control characters.
bool has_control_character(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char character) {
    const auto byte = static_cast<unsigned char>(character);
    return byte < 0x20 || byte == 0x7f;
  });
}

void read_host_name(Fields& fields, std::string_view key, std::string& out, bool allow_empty) {
  std::string name;
  if (!fields.read_string(key, name)) return;
  if (name.empty() && allow_empty) {
    out.clear();
    return;
  }
  std::string error;
  if (!normalize_domain(name, error)) {
    fields.error(key, error);
    return;
  }
  out = name;
}

void parse_listen(Fields& root, std::vector<Endpoint>& listen) {
  const YAML::Node* node = root.find("listen");
  if (!node) return;
  Context& context = root.context();
  std::optional<std::vector<ListItem>> items =
      detail::read_scalar_list(context, *node, "listen", false);
  if (!items) return;
  if (items->empty()) {
    root.error("listen", "no address to listen on");
    return;
  }
  std::vector<Endpoint> endpoints;
  for (const ListItem& item : *items) {
    std::string error;
    std::optional<Endpoint> endpoint = parse_endpoint(item.value, 25, error);
    if (!endpoint) {
      context.error(item.mark, item.path, error);
      continue;
    }
    const bool duplicate =
        std::any_of(endpoints.begin(), endpoints.end(), [&](const Endpoint& seen) {
          return seen.host == endpoint->host && seen.port == endpoint->port && endpoint->port != 0;
        });
    if (duplicate) {
      context.error(item.mark, item.path, "'" + endpoint->to_string() + "' is listed twice");
      continue;
    }
    endpoints.push_back(*endpoint);
  }
  listen = endpoints;
}

// Entries as filters/relay.cpp matches them: "example.org" (exactly), ".example.org" (its
// subdomains), "[192.0.2.1]" (an address literal, with smtp.allow_address_literals).
void parse_relay_domains(Fields& root, std::vector<std::string>& relay_domains,
                         bool allow_address_literals) {
  std::optional<std::vector<ListItem>> items = root.read_list("relay_domains", true);
  if (!items) return;
  relay_domains.clear();
  for (const ListItem& item : *items) {
    std::string domain = item.value;
    std::string error;
    if (domain.starts_with("[")) {
      if (!valid_address_literal(domain, error)) {
        root.context().error(item.mark, item.path, error);
        continue;
      }
      if (!allow_address_literals) {
        root.context().error(item.mark, item.path,
                             "address literal '" + domain +
                                 "' is only matched with smtp.allow_address_literals: true");
        continue;
      }
    } else if (!normalize_domain_entry(domain, error)) {
      root.context().error(item.mark, item.path, error);
      continue;
    }
    // The same domain in the config and in a file is common and harmless.
    if (std::find(relay_domains.begin(), relay_domains.end(), domain) == relay_domains.end()) {
      relay_domains.push_back(domain);
    }
  }
}

void parse_backend(Context& context, const YAML::Node& node, BackendConfig& backend) {
  Fields fields(context, node, "backend");
  fields.read_endpoint("address", backend.address, 25);
  fields.read_bool("xclient", backend.xclient);
  read_host_name(fields, "helo_name", backend.helo_name, true);
  fields.read_duration("connect_timeout", backend.connect_timeout, 100ms, 5min);
  fields.read_duration("command_timeout", backend.command_timeout, 1s, 1h);
  fields.read_duration("data_timeout", backend.data_timeout, 1s, 1h);
  fields.read_enum("starttls", backend.starttls, kStartTlsModes);
  fields.read_bool("tls_verify", backend.tls_verify);
  fields.read_string("tls_ca_file", backend.tls_ca_file);
  fields.read_bool("early_connect", backend.early_connect);
  fields.read_duration("early_connect_window", backend.early_connect_window, 1s, 24h);
  fields.read_integer("early_connect_clients", backend.early_connect_clients, 1, 10000000);
  if (backend.tls_verify && backend.starttls == BackendConfig::Tls::none) {
    fields.error("tls_verify", "tls_verify needs starttls: opportunistic or required");
  }
  if (!backend.tls_ca_file.empty() && !backend.tls_verify) {
    fields.error("tls_ca_file", "tls_ca_file is only used with tls_verify: true");
  }
}

void parse_limits(Context& context, const YAML::Node& node, Limits& limits) {
  Fields fields(context, node, "limits");
  // Lower bounds are the RFC 5321 4.5.3 minimums: below them, compliant clients fail.
  fields.read_integer("max_command_line", limits.max_command_line, 512, 65536);
  fields.read_integer("max_text_line", limits.max_text_line, 1000, 1048576);
  fields.read_integer("max_local_part", limits.max_local_part, 64, 1024);
  fields.read_integer("max_domain", limits.max_domain, 255, 1024);
  fields.read_integer("max_path", limits.max_path, 256, 2048);
  fields.read_size("max_message_size", limits.max_message_size, kKiB, 64 * kGiB);
  fields.read_integer("max_recipients", limits.max_recipients, 1, 100000);
  fields.read_integer("max_errors", limits.max_errors, 1, 10000);
  fields.read_integer("max_messages_per_session", limits.max_messages_per_session, 1, 1000000);
  fields.read_duration("command_timeout", limits.command_timeout, 1s, 1h);
  fields.read_duration("data_timeout", limits.data_timeout, 1s, 1h);
  fields.read_duration("tls_handshake_timeout", limits.tls_handshake_timeout, 1s, 10min);
  fields.read_integer("max_connections", limits.max_connections, 1, 10000000);
  fields.read_integer("max_connections_per_ip", limits.max_connections_per_ip, 1, 10000000);
  fields.read_size("max_bytes_in_flight", limits.max_bytes_in_flight, kMiB, kTiB);
  fields.read_duration("shutdown_timeout", limits.shutdown_timeout, 0s, 1h);
  fields.read_duration("filter_timeout", limits.filter_timeout, 10ms, 1min);
  if (limits.max_connections_per_ip > limits.max_connections) {
    fields.error("max_connections_per_ip",
                 fmt::format("max_connections_per_ip ({}) exceeds max_connections ({})",
                             limits.max_connections_per_ip, limits.max_connections));
  }
  if (limits.max_bytes_in_flight < limits.max_message_size) {
    fields.error("max_bytes_in_flight",
                 "max_bytes_in_flight (" + format_size(limits.max_bytes_in_flight) +
                     ") is below max_message_size (" + format_size(limits.max_message_size) +
                     "): a message of the maximum size could never be accepted");
  }
}

void parse_tls(Context& context, const YAML::Node& node, TlsConfig& tls) {
  Fields fields(context, node, "tls");
  fields.read_string("cert_file", tls.cert_file);
  fields.read_string("key_file", tls.key_file);
  fields.read_choice("min_version", tls.min_version, kTlsVersions);
  if (!tls.cert_file.empty() && tls.key_file.empty()) {
    fields.error("cert_file", "cert_file needs key_file");
  } else if (tls.cert_file.empty() && !tls.key_file.empty()) {
    fields.error("key_file", "key_file needs cert_file");
  }
}

void parse_smtp(Context& context, const YAML::Node& node, SmtpConfig& smtp) {
  Fields fields(context, node, "smtp");
  fields.read_enum("bare_newline", smtp.bare_newline, kBareNewlines);
  fields.read_bool("allow_address_literals", smtp.allow_address_literals);
  fields.read_bool("chunking", smtp.chunking);
  fields.read_bool("smtputf8", smtp.smtputf8);
  fields.read_bool("pipelining", smtp.pipelining);
  if (fields.read_string("banner", smtp.banner)) {
    if (has_control_character(smtp.banner)) {
      fields.error("banner", "must not contain line breaks or control characters");
    } else if (smtp.banner.size() > 200) {
      fields.error("banner", "longer than 200 characters");
    }
  }
  if (fields.read_string("score_header", smtp.score_header)) {
    // RFC 5322 2.2: a field name is printable ASCII without ':' or space.
    const bool valid = std::all_of(
        smtp.score_header.begin(), smtp.score_header.end(),
        [](char character) { return character > ' ' && character < 0x7f && character != ':'; });
    if (!valid)
      fields.error("score_header", "'" + smtp.score_header + "' is not a header field name");
  }
}

void parse_proxy_protocol(Context& context, const YAML::Node& node, ProxyProtocolConfig& proxy) {
  Fields fields(context, node, "proxy_protocol");
  fields.read_bool("enabled", proxy.enabled);
  bool networks_valid = true;
  if (fields.find("trusted_networks")) {
    std::optional<std::vector<ListItem>> items = fields.read_list("trusted_networks", true);
    networks_valid = items.has_value();
    proxy.trusted_networks.clear();
    for (const ListItem& item : items.value_or(std::vector<ListItem>{})) {
      std::string error;
      if (std::optional<Cidr> cidr = parse_cidr(item.value, error)) {
        proxy.trusted_networks.push_back(cidr->to_string());
      } else {
        context.error(item.mark, item.path, error);
        networks_valid = false;
      }
    }
  }
  fields.read_duration("timeout", proxy.timeout, 100ms, 5min);
  if (proxy.enabled && proxy.trusted_networks.empty() && networks_valid) {
    // A PROXY header from anyone lets anyone choose the client address every filter sees.
    fields.error("enabled",
                 "PROXY protocol needs trusted_networks (the load balancers' "
                 "addresses); otherwise any client could forge its address");
  }
}

void parse_log(Context& context, const YAML::Node& node, LogConfig& log) {
  Fields fields(context, node, "log");
  fields.read_string("rejections", log.rejections);
  fields.read_choice("level", log.level, kLogLevels);
  fields.read_bool("syslog", log.syslog);
  if (fields.read_string("syslog_socket", log.syslog_socket)) {
    // sockaddr_un's sun_path holds 108 bytes with the terminating NUL.
    if (log.syslog_socket.empty() || log.syslog_socket.front() != '/') {
      fields.error("syslog_socket", "must be an absolute path");
    } else if (log.syslog_socket.size() > 107) {
      fields.error("syslog_socket", "longer than a Unix socket path may be (107 bytes)");
    }
  }
}

void parse_metrics(Context& context, const YAML::Node& node, MetricsConfig& metrics) {
  Fields fields(context, node, "metrics");
  const YAML::Node* listen = fields.find("listen");
  // Empty or null: no HTTP endpoint, so `-o metrics.listen=` turns it off.
  if (!listen || listen->IsNull() || (listen->IsScalar() && listen->Scalar().empty())) {
    metrics.listen.reset();
    return;
  }
  Endpoint endpoint;
  if (fields.read_endpoint("listen", endpoint, 9925, true)) metrics.listen = endpoint;
}

void parse_redis(Context& context, const YAML::Node& node, RedisConfig& redis) {
  Fields fields(context, node, "redis");
  fields.read_endpoint("address", redis.address, 6379);
  fields.read_string("password", redis.password);
  fields.read_integer("database", redis.database, 0, 1024);
  fields.read_duration("timeout", redis.timeout, 1ms, 1min);
  fields.read_duration("connect_timeout", redis.connect_timeout, 1ms, 1min);
  if (fields.read_string("key_prefix", redis.key_prefix)) {
    // Keys carry {hash tags} for Redis Cluster; a brace in the prefix would move the tag.
    if (redis.key_prefix.find_first_of("{} \t\r\n") != std::string::npos) {
      fields.error("key_prefix",
                   "must not contain '{', '}' or whitespace (keys use Redis "
                   "Cluster hash tags)");
    }
  }
}

void parse_client_net(Context& context, const YAML::Node& node, ClientNetConfig& client_net) {
  Fields fields(context, node, "client_net");
  // Narrower than /8 or /16 would lump unrelated clients into one limit.
  fields.read_integer("ipv4_prefix", client_net.ipv4_prefix, 8, 32);
  fields.read_integer("ipv6_prefix", client_net.ipv6_prefix, 16, 128);
}

void parse_reputation(Context& context, const YAML::Node& node, ReputationConfig& reputation) {
  Fields fields(context, node, "reputation");
  reputation.enabled = true;  // a present section enables it, unless `enabled: false`
  fields.read_bool("enabled", reputation.enabled);
  if (std::optional<std::vector<ListItem>> items = fields.read_list("keys", false)) {
    static const std::vector<std::string> kKeys{"client_ip", "client_net", "helo",
                                                "sender_domain"};
    reputation.keys.clear();
    for (const ListItem& item : *items) {
      if (std::find(kKeys.begin(), kKeys.end(), item.value) == kKeys.end()) {
        context.error(item.mark, item.path, detail::choice_error(item.value, kKeys));
      } else {
        reputation.keys.push_back(item.value);
      }
    }
  }
  fields.read_duration("half_life", reputation.half_life, 1min, 24h * 365);
  fields.read_number("min_events", reputation.min_events, 0, 1e6);
  fields.read_number("max_score", reputation.max_score, 0, detail::kMaxScore);
  fields.read_number("min_score", reputation.min_score, -detail::kMaxScore, 0);
}

void parse_greylist(Context& context, const YAML::Node& node, GreylistConfig& greylist) {
  static const EnumNames<OnError> kOnErrors{{"allow", OnError::allow},
                                            {"tempfail", OnError::tempfail}};
  Fields fields(context, node, "greylist");
  greylist.enabled = true;  // a present section enables it, unless `enabled: false`
  fields.read_bool("enabled", greylist.enabled);
  fields.read_duration("delay", greylist.delay, 1s, 24h);
  fields.read_duration("retry_window", greylist.retry_window, 1min, 24h * 30);
  fields.read_duration("lifetime", greylist.lifetime, 1h, 24h * 365);
  fields.read_integer("auto_allowlist", greylist.auto_allowlist, 0, 1000);
  fields.read_bool("skip_good_reputation", greylist.skip_good_reputation);
  fields.read_enum("on_error", greylist.on_error, kOnErrors);
  if (greylist.retry_window <= greylist.delay) {
    fields.error("retry_window", "must be longer than delay, or no retry could ever pass");
  }
  if (std::optional<std::vector<ListItem>> items = fields.read_list("exempt", true)) {
    for (const ListItem& item : *items) {
      std::string error;
      if (std::optional<Cidr> cidr = parse_cidr(item.value, error)) {
        greylist.exempt.push_back(cidr->to_string());
      } else {
        context.error(item.mark, item.path, error);
      }
    }
  }
}

void parse_dns(Context& context, const YAML::Node& node, DnsConfig& dns) {
  Fields fields(context, node, "dns");
  if (std::optional<std::vector<ListItem>> items = fields.read_list("servers", false)) {
    dns.servers.clear();
    for (const ListItem& item : *items) {
      std::string error;
      std::optional<Endpoint> server = parse_endpoint(item.value, 53, error);
      if (server && server->port == 0) error = "'" + item.value + "': port 0 is not a DNS server";
      if (!server || server->port == 0) {
        context.error(item.mark, item.path, error);
        continue;
      }
      dns.servers.push_back(*server);
    }
  }
  fields.read_duration("timeout", dns.timeout, 100ms, 1min);
  fields.read_integer("retries", dns.retries, 0, 10);
  fields.read_duration("min_ttl", dns.min_ttl, 0s, 24h);
  fields.read_duration("max_ttl", dns.max_ttl, 1s, 7 * 24h);
  fields.read_integer("cache_size", dns.cache_size, 0, 100000000);
  // RFC 2308 section 7: a server failure may be cached for at most five minutes.
  fields.read_duration("tempfail_ttl", dns.tempfail_ttl, 0s, 5min);
  fields.read_bool("probe", dns.probe);
  fields.read_duration("probe_interval", dns.probe_interval, 1min, 24h);
  fields.read_bool("reverse_lookup", dns.reverse_lookup);
  if (dns.min_ttl > dns.max_ttl) {
    fields.error("min_ttl", "min_ttl (" + format_duration(dns.min_ttl) + ") exceeds max_ttl (" +
                                format_duration(dns.max_ttl) + ")");
  }
}

void parse_scoring(Context& context, const YAML::Node& node, ScoringConfig& scoring) {
  Fields fields(context, node, "scoring");
  fields.read_number("tag", scoring.tag, -1e6, 1e6);
  fields.read_number("tempfail", scoring.tempfail, -1e6, 1e6);
  fields.read_number("reject", scoring.reject, -1e6, 1e6);
  // The pipeline tests reject, then tempfail, then tag: out of order, a threshold is dead.
  if (scoring.tag > scoring.tempfail) {
    fields.error("tag", fmt::format("thresholds must be ordered tag <= tempfail <= reject; tag "
                                    "({}) is above tempfail ({})",
                                    scoring.tag, scoring.tempfail));
  }
  if (scoring.tempfail > scoring.reject) {
    fields.error("tempfail", fmt::format("thresholds must be ordered tag <= tempfail <= reject; "
                                         "tempfail ({}) is above reject ({})",
                                         scoring.tempfail, scoring.reject));
  }
}

void parse_content_limits(Context& context, const YAML::Node& node, ContentLimits& limits) {
  Fields fields(context, node, "content_limits");
  fields.read_size("max_line_scan", limits.max_line_scan, 64, kMiB);
  // Below 1 MiB even a few hundred patterns do not compile; above 4 GiB is a typo.
  fields.read_size("re2_max_mem", limits.re2_max_mem, kMiB, 4 * kGiB);
  fields.read_integer("max_url_lookups", limits.max_url_lookups, 0, 1000);
}

void parse_early_talker(Context& context, const YAML::Node& node, EarlyTalkerConfig& early) {
  Fields fields(context, node, "early_talker");
  // postscreen_greet_wait defaults to 6s; more only delays every honest client.
  fields.read_duration("greet_pause", early.greet_pause, 0s, 30s);
  if (early.greet_pause == 0s && !fields.find("action") && !fields.find("score")) return;
  detail::read_action_and_score(fields, early.action, "score", early.score);
  if (early.action == RuleAction::accept) {
    fields.error("action",
                 "accept makes no sense for a client that talked before the "
                 "greeting: use score, reject, tempfail, drop or log");
  }
}

void parse_helo_checks(Context& context, const YAML::Node& node, HeloChecksConfig& helo) {
  Fields fields(context, node, "helo_checks");
  using detail::kMaxScore;
  fields.read_number("missing", helo.missing, -kMaxScore, kMaxScore);
  fields.read_number("bare_ip", helo.bare_ip, -kMaxScore, kMaxScore);
  fields.read_number("invalid", helo.invalid, -kMaxScore, kMaxScore);
  fields.read_number("not_fqdn", helo.not_fqdn, -kMaxScore, kMaxScore);
  fields.read_number("our_hostname", helo.our_hostname, -kMaxScore, kMaxScore);
  fields.read_number("our_address", helo.our_address, -kMaxScore, kMaxScore);
  if (auto items = fields.read_list("our_names", true)) {
    for (const ListItem& item : *items) {
      std::string name = item.value;
      std::string error;
      if (normalize_domain(name, error))
        helo.our_names.push_back(name);
      else
        context.error(item.mark, item.path, error);
    }
  }
  if (auto items = fields.read_list("our_addresses", true)) {
    for (const ListItem& item : *items) {
      std::string error;
      std::optional<Cidr> address = parse_cidr(item.value, error);
      const bool single =
          address && address->prefix_length == (address->family == Cidr::Family::ipv4 ? 32 : 128);
      if (!address || !single) {
        context.error(item.mark, item.path,
                      error.empty() ? "'" + item.value + "' is not a single IP address" : error);
        continue;
      }
      helo.our_addresses.push_back(address->to_string());
    }
  }
}

void parse_rdns_checks(Context& context, const YAML::Node& node, RdnsChecksConfig& rdns) {
  Fields fields(context, node, "rdns_checks");
  using detail::kMaxScore;
  fields.read_number("missing", rdns.missing, -kMaxScore, kMaxScore);
  fields.read_number("unverified", rdns.unverified, -kMaxScore, kMaxScore);
  fields.read_number("dynamic", rdns.dynamic, -kMaxScore, kMaxScore);
  // Not list files: their '#' comments and trimming would change a pattern.
  if (auto items = fields.read_list("dynamic_patterns", false)) {
    rdns.dynamic_patterns.clear();
    for (const ListItem& item : *items) {
      if (std::string error = detail::regex_error(item.value); !error.empty())
        context.error(item.mark, item.path, error);
      else
        rdns.dynamic_patterns.push_back(item.value);
    }
  }
}

template <typename Section, typename Parse>
void parse_section(Fields& root, std::string_view key, Section& section, Parse parse) {
  if (const YAML::Node* node = root.find(key)) parse(root.context(), *node, section);
}

void parse_config(Context& context, const YAML::Node& node, Config& config) {
  Fields root(context, node, "");
  if (!root.is_mapping()) return;
  read_host_name(root, "hostname", config.hostname, false);
  parse_listen(root, config.listen);
  root.read_integer("threads", config.threads, 0, 1024);
  root.read_string("user", config.user);
  parse_section(root, "backend", config.backend, parse_backend);
  parse_section(root, "limits", config.limits, parse_limits);
  parse_section(root, "tls", config.tls, parse_tls);
  parse_section(root, "smtp", config.smtp, parse_smtp);
  parse_relay_domains(root, config.relay_domains, config.smtp.allow_address_literals);
  parse_section(root, "proxy_protocol", config.proxy_protocol, parse_proxy_protocol);
  parse_section(root, "log", config.log, parse_log);
  parse_section(root, "metrics", config.metrics, parse_metrics);
  // A present redis section (even `redis: {}`) selects Redis; absent or empty: embedded.
  if (const YAML::Node* redis = root.find("redis"); redis && !redis->IsNull()) {
    config.redis.emplace();
    parse_redis(context, *redis, *config.redis);
  }
  parse_section(root, "dns", config.dns, parse_dns);
  parse_section(root, "client_net", config.client_net, parse_client_net);
  // As for redis: a present, non-empty section enables reputation or greylisting.
  if (const YAML::Node* reputation = root.find("reputation"); reputation && !reputation->IsNull())
    parse_reputation(context, *reputation, config.reputation);
  if (const YAML::Node* greylist = root.find("greylist"); greylist && !greylist->IsNull())
    parse_greylist(context, *greylist, config.greylist);
  parse_section(root, "scoring", config.scoring, parse_scoring);
  parse_section(root, "content_limits", config.content_limits, parse_content_limits);
  root.read_bool("dry_run", config.dry_run);
  parse_section(root, "early_talker", config.early_talker, parse_early_talker);
  parse_section(root, "helo_checks", config.helo_checks, parse_helo_checks);
  parse_section(root, "rdns_checks", config.rdns_checks, parse_rdns_checks);
  if (config.rdns_checks.enabled() && !config.dns.reverse_lookup) {
    // The checks judge the reverse lookup's answer: without it they could never fire.
    context.error(root.mark_of("rdns_checks"), "rdns_checks",
                  "needs dns.reverse_lookup: true (the checks judge its answer)");
  }
  detail::parse_rule_sections(root, config);
}

LoadResult load(const std::string& yaml_text, const std::string& name,
                const std::vector<std::string>& overrides) {
  Context context(name, std::filesystem::path(name).parent_path());
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& exception) {
    const SourceMark mark = exception.mark.is_null() ? SourceMark{name, 0, 0}
                                                     : SourceMark{name, exception.mark.line + 1,
                                                                  exception.mark.column + 1};
    return {nullptr, {{mark, "", exception.msg}}};
  }
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) {
    context.error(
        root, "",
        "expected a mapping of keys at the top level, got " + detail::describe_node(root));
    return {nullptr, context.sorted_errors()};
  }
  for (std::size_t index = 0; index < overrides.size(); ++index) {
    detail::apply_override(context, root, overrides[index], static_cast<int>(index + 1));
  }
  auto config = std::make_shared<Config>();
  config->path = name;
  try {
    parse_config(context, root, *config);
  } catch (const YAML::Exception& exception) {
    // yaml-cpp throws on trees it cannot walk; report rather than crash `mxgate check`.
    context.error(SourceMark{name, 0, 0}, "",
                  "internal error reading the YAML tree: " + exception.msg);
  }
  if (context.has_errors()) return {nullptr, context.sorted_errors()};
  config->list_files = context.files_read();
  return {std::move(config), {}};
}

std::string format_number(double value) { return fmt::format("{}", value); }

template <typename Rules>
std::string rule_count(std::string_view name, const Rules& rules) {
  return fmt::format("{} ({} rule{})", name, rules.size(), rules.size() == 1 ? "" : "s");
}

}  // namespace

std::string ConfigError::to_string() const {
  std::string text = mark.file.empty() ? "<config>" : mark.file;
  if (mark.line > 0) {
    text += ":" + std::to_string(mark.line);
    if (mark.column > 0) text += ":" + std::to_string(mark.column);
  }
  text += ": ";
  if (!key.empty()) text += key + ": ";
  return text + message;
}

LoadResult load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::string text;
  std::string error;
  if (!detail::read_whole_file(path, text, error)) {
    return {nullptr, {{{path, 0, 0}, "", "cannot read: " + error}}};
  }
  return load(text, path, overrides);
}

LoadResult load_config_text(const std::string& yaml_text, const std::string& name,
                            const std::vector<std::string>& overrides) {
  return load(yaml_text, name, overrides);
}

std::string summarize(const Config& config) {
  std::string listen;
  for (const Endpoint& endpoint : config.listen) {
    if (!listen.empty()) listen += ", ";
    listen += endpoint.to_string();
  }
  const Limits& limits = config.limits;
  std::string text;
  text += fmt::format("config: {}\n", config.path);
  text += fmt::format("hostname: {}\n", config.hostname);
  text += fmt::format("listen: {}{}\n", listen,
                      config.proxy_protocol.enabled ? " (PROXY protocol)" : "");
  text += fmt::format("backend: {}{}\n", config.backend.address.to_string(),
                      config.backend.xclient ? " (XCLIENT)" : "");
  text += fmt::format("relay domains: {}{}\n", config.relay_domains.size(),
                      config.relay_domains.empty() ? " (every recipient will be refused)" : "");
  text += fmt::format(
      "limits: message size {}, recipients {}, errors {}, command timeout {}, data timeout {}, "
      "connections {} ({} per client)\n",
      format_size(limits.max_message_size), limits.max_recipients, limits.max_errors,
      format_duration(limits.command_timeout), format_duration(limits.data_timeout),
      limits.max_connections, limits.max_connections_per_ip);
  text += fmt::format("starttls: {}\n", config.tls.cert_file.empty() ? "not offered" : "offered");
  if (config.redis) {
    text += fmt::format("store: redis {} (prefix {})\n", config.redis->address.to_string(),
                        config.redis->key_prefix);
  } else {
    text += "store: embedded (single instance)\n";
  }
  std::string servers;
  for (const Endpoint& server : config.dns.servers) {
    if (!servers.empty()) servers += ", ";
    servers += server.to_string();
  }
  text += fmt::format("dns: {}\n", servers.empty() ? "system resolver" : servers);
  // In pipeline order: access lists first (an allowlist hit stops scoring), content last.
  text += fmt::format("filters: {}, {}, {}, {}\n", rule_count("access", config.access),
                      rule_count("dnsbl", config.dnsbl), rule_count("ratelimit", config.ratelimit),
                      rule_count("content", config.content));
  text +=
      fmt::format("scoring: tag {}, tempfail {}, reject {}\n", format_number(config.scoring.tag),
                  format_number(config.scoring.tempfail), format_number(config.scoring.reject));
  if (config.dry_run) text += "dry run: verdicts are logged, none enforced\n";
  return text;
}

}  // namespace mxgate::policy

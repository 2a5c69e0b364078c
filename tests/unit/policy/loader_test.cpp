// The config loader as `mxgate check` users see it: every broken config gives its exact
// `file:line:column: key: message`, all errors are collected, list files blame their own
// lines, -o overrides win and are blamed as -o:N, and the shipped example loads clean.
#include "policy/loader.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "policy/units.hpp"

namespace mxgate::policy {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> error_strings(const LoadResult& result) {
  std::vector<std::string> lines;
  for (const ConfigError& error : result.errors) lines.push_back(error.to_string());
  return lines;
}

std::vector<std::string> errors_of(const std::string& yaml,
                                   const std::vector<std::string>& overrides = {}) {
  return error_strings(load_config_text(yaml, "test.yaml", overrides));
}

std::shared_ptr<const Config> load_ok(const std::string& yaml,
                                      const std::vector<std::string>& overrides = {}) {
  LoadResult result = load_config_text(yaml, "test.yaml", overrides);
  EXPECT_TRUE(result.ok()) << ::testing::PrintToString(error_strings(result));
  return result.config;
}

// ---------------------------------------------------------------------------------------
// The table: one broken config, its one exact error.
// ---------------------------------------------------------------------------------------
struct BrokenConfig {
  const char* name;
  const char* yaml;
  const char* error;
};

class BrokenConfigTest : public ::testing::TestWithParam<BrokenConfig> {};

TEST_P(BrokenConfigTest, ReportsExactError) {
  const BrokenConfig& broken = GetParam();
  LoadResult result = load_config_text(broken.yaml, "test.yaml");
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(error_strings(result), std::vector<std::string>{broken.error});
}

const BrokenConfig kBrokenConfigs[] = {
    // Keys and types.
    {"UnknownKeyWithSuggestion", "limits:\n  max_recipient: 5\n",
     "test.yaml:2:3: limits.max_recipient: unknown key 'max_recipient' (did you mean "
     "'max_recipients'?)"},
    {"UnknownTopLevelKey", "frobnicate: 1\n",
     "test.yaml:1:1: frobnicate: unknown key 'frobnicate'"},
    {"UnknownSectionSuggestion", "limtis:\n  max_recipients: 5\n",
     "test.yaml:1:1: limtis: unknown key 'limtis' (did you mean 'limits'?)"},
    {"UnknownRuleKey", "dnsbl:\n  - zone: zen.spamhaus.org\n    wieght: 3\n",
     "test.yaml:3:5: dnsbl[0].wieght: unknown key 'wieght' (did you mean 'weight'?)"},
    {"DuplicateKey", "hostname: a.example\nhostname: b.example\n",
     "test.yaml:2:1: hostname: duplicate key 'hostname' (first at line 1)"},
    {"IntegerExpected", "limits:\n  max_recipients: many\n",
     "test.yaml:2:19: limits.max_recipients: expected an integer, got 'many'"},
    {"IntegerOutOfRange", "limits:\n  max_recipients: 0\n",
     "test.yaml:2:19: limits.max_recipients: 0 is out of range 1..100000"},
    {"BelowRfcMinimum", "limits: { max_command_line: 100 }\n",
     "test.yaml:1:29: limits.max_command_line: 100 is out of range 512..65536"},
    {"StringExpected", "hostname: {a: 1}\n",
     "test.yaml:1:11: hostname: expected a string, got a mapping"},
    {"SectionNotMapping", "limits: 5\n", "test.yaml:1:9: limits: expected a mapping, got '5'"},
    {"EmptyValueForInteger", "limits:\n  max_errors:\n",
     "test.yaml:2:3: limits.max_errors: expected an integer, got an empty value"},
    {"BadBool", "dry_run: maybe\n", "test.yaml:1:10: dry_run: expected true or false, got 'maybe'"},
    {"NotAList", "dnsbl: zen.spamhaus.org\n",
     "test.yaml:1:8: dnsbl: expected a list of rules, got 'zen.spamhaus.org'"},
    {"TopLevelNotMapping", "- a\n- b\n",
     "test.yaml:1:1: expected a mapping of keys at the top level, got a list"},
    {"YamlSyntax", "limits: [1, 2\nhostname: x\n", "test.yaml:2:9: end of sequence flow not found"},
    // Units.
    {"BadDuration", "limits:\n  command_timeout: 5x\n",
     "test.yaml:2:20: limits.command_timeout: invalid duration '5x' (examples: 250ms, 30s, 5m, "
     "1h30m, 1d)"},
    {"DurationOutOfRange", "limits:\n  data_timeout: 2h\n",
     "test.yaml:2:17: limits.data_timeout: 2h is out of range 1s..1h"},
    {"BadSize", "limits:\n  max_message_size: 25 parsecs\n",
     "test.yaml:2:21: limits.max_message_size: invalid size '25 parsecs' (examples: 512, 64KiB, "
     "25MiB, 1GiB)"},
    {"SizeOutOfRange", "limits:\n  max_message_size: 512\n",
     "test.yaml:2:21: limits.max_message_size: 512 is out of range 1KiB..64GiB"},
    {"BadRate", "ratelimit:\n  - { name: r, key: client_ip, rate: often }\n",
     "test.yaml:2:38: ratelimit[0].rate: invalid rate 'often' (examples: 60/min, 10/s, 100/h, "
     "5000/day, 2/5min)"},
    {"ZeroRate", "ratelimit:\n  - { name: r, key: client_ip, rate: 0/min }\n",
     "test.yaml:2:38: ratelimit[0].rate: rate '0/min' must be greater than zero"},
    {"BadPort", "backend:\n  address: 127.0.0.1:99999\n",
     "test.yaml:2:12: backend.address: '127.0.0.1:99999': invalid port '99999' (expected "
     "0..65535)"},
    {"PortZeroForBackend", "backend: { address: \"127.0.0.1:0\" }\n",
     "test.yaml:1:21: backend.address: '127.0.0.1:0': port 0 is only valid for a listening "
     "address"},
    {"UnbracketedIpv6", "listen: \"::1\"\n",
     "test.yaml:1:9: listen: '::1': write IPv6 addresses in brackets, e.g. [::1]:25"},
    {"DuplicateListen", "listen: [\"127.0.0.1:25\", 127.0.0.1]\n",
     "test.yaml:1:26: listen[1]: '127.0.0.1:25' is listed twice"},
    {"EmptyListen", "listen: []\n", "test.yaml:1:9: listen: no address to listen on"},
    {"BadDnsServer", "dns: { servers: \"127.0.0.1:53, 10.0.0.300\" }\n",
     "test.yaml:1:17: dns.servers: '10.0.0.300': '10.0.0.300' is not an IPv4 address"},
    // Enums.
    {"BadEnum", "dnsbl:\n  - { zone: zen.spamhaus.org, on_error: maybe }\n",
     "test.yaml:2:41: dnsbl[0].on_error: expected one of allow, tempfail; got 'maybe'"},
    {"EnumSuggestion", "smtp:\n  bare_newline: normalise\n",
     "test.yaml:2:17: smtp.bare_newline: expected one of reject, normalize; got 'normalise' (did "
     "you mean 'normalize'?)"},
    {"BadContentTarget", "content:\n  - { name: c, where: bdoy, pattern: x, score: 1 }\n",
     "test.yaml:2:23: content[0].where: expected one of body, headers, all-headers, subject, "
     "from, to, message, raw, url, attachment, mime, header:<Name>; got 'bdoy' (did you mean "
     "'body'?)"},
    {"BadHeaderTarget", "content:\n  - { name: c, where: \"header:\", pattern: x, score: 1 }\n",
     "test.yaml:2:23: content[0].where: 'header:': invalid header field name"},
    {"BadAction", "content:\n  - { name: c, pattern: x, action: bounce }\n",
     "test.yaml:2:36: content[0].action: expected one of score, reject, tempfail, accept, drop, "
     "log, tag; got 'bounce'"},
    {"TagOutsideContent", "dnsbl:\n  - { zone: bl.test, action: tag }\n",
     "test.yaml:2:30: dnsbl[0].action: action 'tag' is only for content rules"},
    {"BadLogLevel", "log: { level: verbose }\n",
     "test.yaml:1:15: log.level: expected one of trace, debug, info, warn, error; got 'verbose'"},
    // Names, networks, patterns, filters.
    {"BadHostname", "hostname: mx_1 .example\n",
     "test.yaml:1:11: hostname: 'mx_1 .example' is not a valid domain name: invalid character ' '"},
    {"BadRelayDomain", "relay_domains: [example.org, exa mple.org]\n",
     "test.yaml:1:30: relay_domains[1]: 'exa mple.org' is not a valid domain name: invalid "
     "character ' '"},
    {"CidrHostBits",
     "access:\n  - { name: lan, kind: client_ip, values: [10.0.0.1/8], action: accept }\n",
     "test.yaml:2:44: access[0].values[0]: '10.0.0.1/8' has host bits set beyond /8 (did you "
     "mean 10.0.0.0/8?)"},
    {"BadIpv4", "proxy_protocol: { enabled: true, trusted_networks: [10.0.0.300] }\n",
     "test.yaml:1:53: proxy_protocol.trusted_networks[0]: '10.0.0.300' is not an IP address or "
     "network"},
    {"BadSenderAddress",
     "access:\n  - { name: s, kind: sender, values: [nobody], action: reject }\n",
     "test.yaml:2:39: access[0].values[0]: 'nobody' is not a mail address (expected "
     "local@domain)"},
    {"BadRegex", "content:\n  - { name: c, pattern: \"(abc\", score: 1 }\n",
     "test.yaml:2:25: content[0].pattern: invalid regular expression '(abc': missing ): (abc"},
    {"BadReplyFilter", "dnsbl:\n  - { zone: zen.spamhaus.org, match: \"127.0.0.[2..\" }\n",
     "test.yaml:2:38: dnsbl[0].match: invalid reply filter '127.0.0.[2..': octet 4: '[2..': "
     "missing ']'"},
    {"BadRuleName", "content:\n  - { name: two words, pattern: x, score: 1 }\n",
     "test.yaml:2:13: content[0].name: rule name 'two words' has invalid character ' ' (use "
     "letters, digits, '.', '_', ':', '-')"},
    {"MissingRequiredKey", "access:\n  - { kind: helo, values: [x.example], action: reject }\n",
     "test.yaml:2:5: access[0]: missing required key 'name'"},
    {"RuleNotMapping", "content:\n  - just a pattern\n",
     "test.yaml:2:5: content[0]: expected a mapping, got 'just a pattern'"},
    // Combinations that could never take effect.
    {"ThresholdsOutOfOrder", "scoring: { tag: 4, tempfail: 12, reject: 10 }\n",
     "test.yaml:1:30: scoring.tempfail: thresholds must be ordered tag <= tempfail <= reject; "
     "tempfail (12) is above reject (10)"},
    {"TagAboveDefaultTempfail", "scoring:\n  tag: 7\n",
     "test.yaml:2:8: scoring.tag: thresholds must be ordered tag <= tempfail <= reject; tag (7) "
     "is above tempfail (6)"},
    {"ContentWithoutPattern", "content:\n  - { name: c, score: 2 }\n",
     "test.yaml:2:5: content[0]: needs a 'pattern' or an 'expression'"},
    {"BadExpression",
     "content:\n  - { name: a, pattern: x, score: 1 }\n"
     "  - { name: c, expression: \"a && (a\", score: 2 }\n",
     "test.yaml:3:28: content[1].expression: invalid expression 'a && (a': column 8: expected "
     "')', found the end"},
    {"ExpressionUnknownRule",
     "content:\n  - { name: fee, pattern: x, score: 1 }\n"
     "  - { name: c, expression: \"fe || fee\", score: 2 }\n",
     "test.yaml:3:28: content[1].expression: expression names unknown content rule 'fe' (did you "
     "mean 'fee'?)"},
    {"ExpressionCycle",
     "content:\n  - { name: a, expression: b, score: 1 }\n"
     "  - { name: b, expression: \"!a\", score: 1 }\n",
     "test.yaml:2:28: content[0].expression: rule 'a' depends on itself (a -> b -> a)"},
    {"ExpressionSelfReference", "content:\n  - { name: a, expression: a, score: 1 }\n",
     "test.yaml:2:28: content[0].expression: rule 'a' depends on itself (a -> a)"},
    {"ContentWithBoth",
     "content:\n  - { name: c, pattern: x, expression: a && b, score: 2 }\n"
     "  - { name: a, pattern: y, score: 1 }\n  - { name: b, pattern: z, score: 1 }\n",
     "test.yaml:2:40: content[0].expression: a rule has either a 'pattern' or an 'expression', "
     "not both"},
    {"ScoreActionWithoutScore", "content:\n  - { name: c, pattern: x }\n",
     "test.yaml:2:5: content[0].score: score 0 with action 'score' has no effect; set a non-zero "
     "score or another action"},
    {"ScoreNeverCounted", "content:\n  - { name: c, pattern: x, score: 5, action: reject }\n",
     "test.yaml:2:35: content[0].score: score 5 is never counted with action 'reject' (only with "
     "action 'score' or 'log')"},
    {"CertWithoutKey", "tls:\n  cert_file: /etc/ssl/mx.pem\n",
     "test.yaml:2:14: tls.cert_file: cert_file needs key_file"},
    {"TlsVerifyWithoutStarttls", "backend: { tls_verify: true }\n",
     "test.yaml:1:24: backend.tls_verify: tls_verify needs starttls: opportunistic or required"},
    {"KeyUnknownAtStage",
     "ratelimit:\n  - { name: r, stage: connect, key: [client_ip, sender], rate: 10/min }\n",
     "test.yaml:2:49: ratelimit[0].key[1]: key 'sender' is not known yet at stage 'connect' "
     "(earliest stage: mail)"},
    {"RecipientKeyAtData",
     "ratelimit:\n  - { name: r, stage: data, key: recipient, rate: 10/min }\n",
     "test.yaml:2:34: ratelimit[0].key: key 'recipient' is per recipient: use stage 'rcpt'"},
    {"ReplyCodeClass",
     "ratelimit:\n  - { name: r, key: client_ip, rate: 10/min, reply_code: 550 }\n",
     "test.yaml:2:58: ratelimit[0].reply_code: 550 is a permanent failure but action is "
     "'tempfail' (use 4xx)"},
    {"FractionalBurst", "ratelimit:\n  - { name: r, key: client_ip, rate: 10/min, burst: 0.5 }\n",
     "test.yaml:2:53: ratelimit[0].burst: burst 0.5 is below 1: no event could ever pass"},
    {"InFlightBelowMessageSize",
     "limits: { max_message_size: 50MiB, max_bytes_in_flight: 10MiB }\n",
     "test.yaml:1:57: limits.max_bytes_in_flight: max_bytes_in_flight (10MiB) is below "
     "max_message_size (50MiB): a message of the maximum size could never be accepted"},
    {"PerIpAboveTotal", "limits: { max_connections: 10, max_connections_per_ip: 20 }\n",
     "test.yaml:1:56: limits.max_connections_per_ip: max_connections_per_ip (20) exceeds "
     "max_connections (10)"},
    {"ProxyWithoutTrustedNetworks", "proxy_protocol: { enabled: true }\n",
     "test.yaml:1:28: proxy_protocol.enabled: PROXY protocol needs trusted_networks (the load "
     "balancers' addresses); otherwise any client could forge its address"},
    {"ProxyWithEmptyTrustedNetworks", "proxy_protocol:\n  enabled: true\n  trusted_networks: []\n",
     "test.yaml:2:12: proxy_protocol.enabled: PROXY protocol needs trusted_networks (the load "
     "balancers' addresses); otherwise any client could forge its address"},
    {"RedisPrefixBraces", "redis: { key_prefix: \"mx{a}\" }\n",
     "test.yaml:1:22: redis.key_prefix: must not contain '{', '}' or whitespace (keys use Redis "
     "Cluster hash tags)"},
    {"TtlOrder", "dns: { min_ttl: 2h }\n",
     "test.yaml:1:17: dns.min_ttl: min_ttl (2h) exceeds max_ttl (1h)"},
    // RFC 2308 section 7: a server failure is cached for five minutes at most.
    {"TempfailTtlPastRfc2308", "dns:\n  tempfail_ttl: 6m\n",
     "test.yaml:2:17: dns.tempfail_ttl: 6m is out of range 0s..5m"},
    {"TempfailTtlNegative", "dns:\n  tempfail_ttl: -1s\n",
     "test.yaml:2:17: dns.tempfail_ttl: invalid duration '-1s' (examples: 250ms, 30s, 5m, "
     "1h30m, 1d)"},
    {"EarlyConnectWindowZero", "backend:\n  early_connect_window: 0s\n",
     "test.yaml:2:25: backend.early_connect_window: 0s is out of range 1s..1d"},
    {"EarlyConnectClientsZero", "backend:\n  early_connect_clients: 0\n",
     "test.yaml:2:26: backend.early_connect_clients: 0 is out of range 1..10000000"},
    {"BannerInjection", "smtp: { banner: \"ESMTP\\r\\n250 fake\" }\n",
     "test.yaml:1:17: smtp.banner: must not contain line breaks or control characters"},
    {"EmptyAccessValues", "access:\n  - { name: a, kind: helo, values: [], action: reject }\n",
     "test.yaml:2:36: access[0].values: empty list: the rule can never match"},
    {"DuplicateRuleName",
     "content:\n  - { name: c, pattern: x, score: 1 }\n  - { name: c, pattern: y, score: 1 }\n",
     "test.yaml:3:5: content[1].name: duplicate rule name 'c' (first at test.yaml:2)"},
    {"DuplicateDefaultDnsblName",
     "dnsbl:\n  - { zone: zen.spamhaus.org, match: 127.0.0.2 }\n"
     "  - { zone: zen.spamhaus.org, match: 127.0.0.4 }\n",
     "test.yaml:3:5: dnsbl[1].name: duplicate rule name 'zen.spamhaus.org' (first at "
     "test.yaml:2)"},
};

INSTANTIATE_TEST_SUITE_P(Loader, BrokenConfigTest, ::testing::ValuesIn(kBrokenConfigs),
                         [](const ::testing::TestParamInfo<BrokenConfig>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------------------------------
// Collecting, ordering, defaults.
// ---------------------------------------------------------------------------------------
TEST(Loader, CollectsAllErrorsInFileOrder) {
  const std::string yaml =
      "dnsbl:\n"
      "  - { zone: zen.spamhaus.org, weight: heavy }\n"
      "limits:\n"
      "  max_recipient: 5\n"
      "  command_timeout: soon\n"
      "scoring: { tag: 11 }\n"
      "hostname: a b\n";
  EXPECT_EQ(errors_of(yaml),
            (std::vector<std::string>{
                "test.yaml:2:39: dnsbl[0].weight: expected a number, got 'heavy'",
                "test.yaml:4:3: limits.max_recipient: unknown key 'max_recipient' (did you mean "
                "'max_recipients'?)",
                "test.yaml:5:20: limits.command_timeout: invalid duration 'soon' (examples: "
                "250ms, 30s, 5m, 1h30m, 1d)",
                "test.yaml:6:17: scoring.tag: thresholds must be ordered tag <= tempfail <= "
                "reject; tag (11) is above tempfail (6)",
                "test.yaml:7:11: hostname: 'a b' is not a valid domain name: invalid character "
                "' '",
            }));
}

TEST(Loader, ErrorsInOneRuleDoNotHideErrorsInTheNext) {
  const std::string yaml =
      "content:\n"
      "  - { name: a, pattern: \"[\", score: 1 }\n"
      "  - { name: b, score: 1 }\n"
      "  - { name: a, pattern: ok, score: 1 }\n";
  EXPECT_EQ(errors_of(yaml),
            (std::vector<std::string>{
                "test.yaml:2:25: content[0].pattern: invalid regular expression '[': missing ]: [",
                "test.yaml:3:5: content[1]: needs a 'pattern' or an 'expression'",
                "test.yaml:4:5: content[2].name: duplicate rule name 'a' (first at test.yaml:2)",
            }));
}

TEST(Loader, DefaultsWhenKeysAbsent) {
  std::shared_ptr<const Config> config = load_ok("");
  ASSERT_TRUE(config);
  const Config defaults;
  EXPECT_EQ(config->path, "test.yaml");
  EXPECT_EQ(config->hostname, "localhost");
  ASSERT_EQ(config->listen.size(), 1u);
  EXPECT_EQ(config->listen[0].to_string(), "127.0.0.1:2525");
  EXPECT_EQ(config->backend.address.to_string(), "127.0.0.1:10025");
  EXPECT_TRUE(config->backend.xclient);
  EXPECT_EQ(config->limits.max_recipients, 100u);
  EXPECT_EQ(config->limits.max_message_size, 25ull * 1024 * 1024);
  EXPECT_EQ(config->limits.command_timeout, Duration(5min));
  EXPECT_EQ(config->smtp.bare_newline, BareNewline::reject);
  EXPECT_FALSE(config->redis.has_value());
  EXPECT_FALSE(config->metrics.listen.has_value());
  EXPECT_TRUE(config->dns.servers.empty());
  EXPECT_EQ(config->scoring.tag, 4);
  EXPECT_EQ(config->scoring.tempfail, 6);
  EXPECT_EQ(config->scoring.reject, 10);
  EXPECT_FALSE(config->dry_run);
  EXPECT_TRUE(config->relay_domains.empty());
  EXPECT_TRUE(config->dnsbl.empty() && config->access.empty() && config->ratelimit.empty() &&
              config->content.empty());
}

// How long a failed client-name lookup is cached: 5s by default, 0s turns it off, 5m at most.
TEST(Loader, DnsTempfailTtl) {
  std::shared_ptr<const Config> defaults = load_ok("");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->dns.tempfail_ttl, Duration(5s));
  const std::pair<const char*, Duration> accepted[] = {
      {"30s", 30s}, {"0s", 0s}, {"0", 0s}, {"5m", 5min}, {"1500ms", 1500ms}};
  for (const auto& [text, expected] : accepted) {
    std::shared_ptr<const Config> config =
        load_ok(std::string("dns: { tempfail_ttl: ") + text + " }\n");
    ASSERT_TRUE(config) << text;
    EXPECT_EQ(config->dns.tempfail_ttl, expected) << text;
  }
  std::shared_ptr<const Config> overridden = load_ok("", {"dns.tempfail_ttl=10s"});
  ASSERT_TRUE(overridden);
  EXPECT_EQ(overridden->dns.tempfail_ttl, Duration(10s));
  EXPECT_EQ(errors_of("", {"dns.tempfail_ttl=1h"}),
            std::vector<std::string>{"-o:1: dns.tempfail_ttl: 1h is out of range 0s..5m"});
}

TEST(Loader, RuleDefaults) {
  std::shared_ptr<const Config> config = load_ok(
      "dnsbl:\n  - zone: Zen.Spamhaus.ORG.\n"
      "ratelimit:\n  - { name: r, key: client_ip, rate: 60/min }\n"
      "  - { name: hard, key: client_ip, rate: 60/min, action: reject }\n"
      "content:\n  - { name: c, pattern: x, score: 1 }\n");
  ASSERT_TRUE(config);
  const DnsblRule& dnsbl = config->dnsbl.at(0);
  EXPECT_EQ(dnsbl.zone, "zen.spamhaus.org");
  EXPECT_EQ(dnsbl.name, "zen.spamhaus.org");
  EXPECT_EQ(dnsbl.reply_name, "zen.spamhaus.org");
  EXPECT_EQ(dnsbl.match, "127.0.0.0/8");
  EXPECT_EQ(dnsbl.weight, 1);
  EXPECT_EQ(dnsbl.action, RuleAction::score);
  EXPECT_EQ(dnsbl.on_error, OnError::allow);
  EXPECT_EQ(dnsbl.mark.file, "test.yaml");
  EXPECT_EQ(dnsbl.mark.line, 2);
  const RateLimitRule& rate = config->ratelimit.at(0);
  EXPECT_DOUBLE_EQ(rate.rate, 1.0);
  EXPECT_EQ(rate.stage, "connect");
  EXPECT_EQ(rate.key, std::vector<std::string>{"client_ip"});
  EXPECT_EQ(rate.action, RuleAction::tempfail);
  EXPECT_EQ(rate.reply_code, 451);
  EXPECT_EQ(config->ratelimit.at(1).reply_code, 550);
  EXPECT_EQ(config->content.at(0).where, "body");
}

TEST(Loader, ParsesEveryRuleKey) {
  std::shared_ptr<const Config> config = load_ok(
      "dnsbl:\n"
      "  - { name: dbl, zone: key123.dbl.dq.spamhaus.net, reply_name: dbl.spamhaus.org,\n"
      "      kind: sender_domain, match: \"127.0.1.[2..99]\", weight: 6, action: log,\n"
      "      fetch_txt: true, on_error: tempfail }\n"
      "access:\n"
      "  - { name: vip, kind: client_ip, values: [\"2001:DB8::/32\", 192.0.2.7], action: accept }\n"
      "  - { name: bad, kind: sender, values: Boss@Example.COM, score: 3 }\n"
      "ratelimit:\n"
      "  - { name: r, stage: rcpt, key: [sender, recipient_domain], rate: 2/5min, burst: 10,\n"
      "      count: recipients, action: score, score: 2.5, on_error: tempfail,\n"
      "      exempt: [10.0.0.0/8] }\n"
      "content:\n"
      "  - { name: subj, where: \"header:Subject\", expression: \"a && b\", action: drop,\n"
      "      description: composite }\n"
      "  - { name: a, pattern: x, score: 1 }\n"
      "  - { name: b, pattern: y, score: 1 }\n");
  ASSERT_TRUE(config);
  const DnsblRule& dnsbl = config->dnsbl.at(0);
  EXPECT_EQ(dnsbl.name, "dbl");
  EXPECT_EQ(dnsbl.reply_name, "dbl.spamhaus.org");
  EXPECT_EQ(dnsbl.kind, DnsblRule::Kind::sender_domain);
  EXPECT_EQ(dnsbl.action, RuleAction::log);
  EXPECT_TRUE(dnsbl.fetch_txt);
  EXPECT_EQ(dnsbl.on_error, OnError::tempfail);
  EXPECT_EQ(config->access.at(0).values, (std::vector<std::string>{"2001:db8::/32", "192.0.2.7"}));
  EXPECT_EQ(config->access.at(1).values, std::vector<std::string>{"Boss@example.com"});
  EXPECT_EQ(config->access.at(1).kind, AccessRule::Kind::sender);
  const RateLimitRule& rate = config->ratelimit.at(0);
  EXPECT_EQ(rate.key, (std::vector<std::string>{"sender", "recipient_domain"}));
  EXPECT_DOUBLE_EQ(rate.rate, 2.0 / 300);
  EXPECT_EQ(rate.burst, 10);
  EXPECT_EQ(rate.count, "recipients");
  EXPECT_EQ(rate.exempt, std::vector<std::string>{"10.0.0.0/8"});
  const ContentRule& content = config->content.at(0);
  EXPECT_EQ(content.where, "header:Subject");
  EXPECT_EQ(content.expression, "a && b");
  EXPECT_EQ(content.action, RuleAction::drop);
}

TEST(Loader, ListenAcceptsStringOrList) {
  EXPECT_EQ(load_ok("listen: \"[::1]:2525\"\n")->listen.at(0).to_string(), "[::1]:2525");
  std::shared_ptr<const Config> config = load_ok("listen: [\"0.0.0.0:25\", \"[::]\"]\n");
  ASSERT_EQ(config->listen.size(), 2u);
  EXPECT_EQ(config->listen[1].to_string(), "[::]:25");
}

TEST(Loader, RedisSectionPresenceSelectsRedis) {
  EXPECT_TRUE(load_ok("redis: {}\n")->redis.has_value());
  EXPECT_FALSE(load_ok("redis:\n")->redis.has_value());
  EXPECT_EQ(load_ok("redis: { address: 10.0.0.5 }\n")->redis->address.to_string(), "10.0.0.5:6379");
}

TEST(Loader, RelayDomainsNormalised) {
  std::shared_ptr<const Config> config =
      load_ok("relay_domains: [Example.ORG., example.org, \"sub.example.net\"]\n");
  EXPECT_EQ(config->relay_domains, (std::vector<std::string>{"example.org", "sub.example.net"}));
  EXPECT_EQ(load_ok("relay_domains: \"a.example, b.example\"\n")->relay_domains,
            (std::vector<std::string>{"a.example", "b.example"}));
}

TEST(Loader, RelayDomainEntriesAsTheRelayFilterMatchesThem) {
  EXPECT_EQ(load_ok("relay_domains: [.Example.ORG, example.org]\n")->relay_domains,
            (std::vector<std::string>{".example.org", "example.org"}));
  EXPECT_EQ(load_ok("smtp: { allow_address_literals: true }\n"
                    "relay_domains: [\"[192.0.2.1]\", \"[IPv6:2001:db8::1]\"]\n")
                ->relay_domains,
            (std::vector<std::string>{"[192.0.2.1]", "[IPv6:2001:db8::1]"}));
  EXPECT_EQ(errors_of("relay_domains: [\"[192.0.2.1]\"]\n"),
            std::vector<std::string>{
                "test.yaml:1:17: relay_domains[0]: address literal '[192.0.2.1]' is only matched "
                "with smtp.allow_address_literals: true"});
  EXPECT_EQ(errors_of("relay_domains: [..example.org, \"[300.1.1.1]\"]\n"),
            (std::vector<std::string>{
                "test.yaml:1:17: relay_domains[0]: '..example.org' is not a valid domain name: "
                "empty label",
                "test.yaml:1:32: relay_domains[1]: '[300.1.1.1]' is not an address literal "
                "(expected [192.0.2.1] or [IPv6:2001:db8::1])"}));
}

TEST(Loader, AccessDomainEntries) {
  std::shared_ptr<const Config> config = load_ok(
      "access:\n  - { name: h, kind: helo, values: [\"[192.0.2.1]\", .Example.COM], "
      "action: reject }\n");
  EXPECT_EQ(config->access.at(0).values, (std::vector<std::string>{"[192.0.2.1]", ".example.com"}));
}

TEST(Loader, CannotReadFile) {
  LoadResult result = load_config("/nonexistent/mxgate.yaml");
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(error_strings(result),
            std::vector<std::string>{"/nonexistent/mxgate.yaml: cannot read: No such file or "
                                     "directory"});
}

TEST(Loader, CannotReadDirectory) {
  LoadResult result = load_config("/");
  EXPECT_EQ(error_strings(result), std::vector<std::string>{"/: cannot read: Is a directory"});
}

// ---------------------------------------------------------------------------------------
// -o overrides.
// ---------------------------------------------------------------------------------------
TEST(Overrides, BeatTheFile) {
  std::shared_ptr<const Config> config =
      load_ok("limits: { max_recipients: 50 }\nlisten: [\"0.0.0.0:25\", \"[::]:25\"]\n",
              {"limits.max_recipients=5", "listen=127.0.0.1:2525", "backend.address=127.0.0.1:2526",
               "dry_run=true"});
  ASSERT_TRUE(config);
  EXPECT_EQ(config->limits.max_recipients, 5u);
  ASSERT_EQ(config->listen.size(), 1u);
  EXPECT_EQ(config->listen[0].to_string(), "127.0.0.1:2525");
  EXPECT_EQ(config->backend.address.to_string(), "127.0.0.1:2526");
  EXPECT_TRUE(config->dry_run);
}

TEST(Overrides, CreateSectionsAndLists) {
  std::shared_ptr<const Config> config =
      load_ok("", {"redis.address=127.0.0.1:6379", "dns.servers=127.0.0.1:5353,[::1]:5353"});
  ASSERT_TRUE(config);
  ASSERT_TRUE(config->redis.has_value());
  EXPECT_EQ(config->redis->address.to_string(), "127.0.0.1:6379");
  ASSERT_EQ(config->dns.servers.size(), 2u);
  EXPECT_EQ(config->dns.servers[1].to_string(), "[::1]:5353");
}

TEST(Overrides, LaterOverrideWins) {
  EXPECT_EQ(load_ok("", {"limits.max_errors=3", "limits.max_errors=4"})->limits.max_errors, 4u);
}

TEST(Overrides, IndexedRuleKeysAndListItems) {
  std::shared_ptr<const Config> config =
      load_ok("dnsbl:\n  - { zone: zen.spamhaus.org }\nrelay_domains: [a.example, b.example]\n",
              {"dnsbl[0].weight=3", "relay_domains[1]=c.example"});
  ASSERT_TRUE(config);
  EXPECT_EQ(config->dnsbl.at(0).weight, 3);
  EXPECT_EQ(config->relay_domains, (std::vector<std::string>{"a.example", "c.example"}));
}

TEST(Overrides, ValueSyntax) {
  std::shared_ptr<const Config> config =
      load_ok("metrics: { listen: 127.0.0.1:9925 }\n",
              {"metrics.listen=", "smtp.banner=ESMTP #1: ready", "log.rejections='/var/log/x y'",
               "listen=[127.0.0.1:25, 127.0.0.1:26]"});
  ASSERT_TRUE(config);
  EXPECT_FALSE(config->metrics.listen.has_value());
  EXPECT_EQ(config->smtp.banner, "ESMTP #1: ready");
  EXPECT_EQ(config->log.rejections, "/var/log/x y");
  EXPECT_EQ(config->listen.size(), 2u);
}

TEST(Overrides, BadOverridesAreBlamedOnTheirPosition) {
  const std::string yaml = "dnsbl:\n  - { zone: zen.spamhaus.org }\n";
  EXPECT_EQ(
      errors_of(yaml, {"dry_run=true", "limits.max_recipients=lots"}),
      std::vector<std::string>{"-o:2: limits.max_recipients: expected an integer, got 'lots'"});
  EXPECT_EQ(errors_of(yaml, {"limits.max_recipent=5"}),
            std::vector<std::string>{
                "-o:1: limits.max_recipent: unknown key 'max_recipent' (did you mean "
                "'max_recipients'?)"});
  EXPECT_EQ(errors_of(yaml, {"limit.max_recipients=5"}),
            std::vector<std::string>{"-o:1: limit: unknown key 'limit' (did you mean 'limits'?)"});
  EXPECT_EQ(errors_of(yaml, {"dry_run"}),
            std::vector<std::string>{"-o:1: dry_run: expected key=value"});
  EXPECT_EQ(errors_of(yaml, {"limits..x=1"}),
            std::vector<std::string>{"-o:1: limits..x: invalid key (expected a dotted path such as "
                                     "limits.max_recipients)"});
  EXPECT_EQ(errors_of("hostname: mx.example\n", {"hostname.name=x"}),
            std::vector<std::string>{"-o:1: hostname.name: 'hostname' is a value, not a section"});
  EXPECT_EQ(errors_of(yaml, {"dnsbl[3].weight=1"}),
            std::vector<std::string>{
                "-o:1: dnsbl[3].weight: no entry [3] in 'dnsbl' (it has 1 entries)"});
  EXPECT_EQ(errors_of(yaml, {"redis.timeout=fast"}),
            std::vector<std::string>{
                "-o:1: redis.timeout: invalid duration 'fast' (examples: 250ms, 30s, 5m, 1h30m, "
                "1d)"});
  EXPECT_EQ(errors_of(yaml, {"dns.servers=127.0.0.1:53,,10.0.0.1"}),
            std::vector<std::string>{
                "-o:1: dns.servers: empty item in comma-separated list '127.0.0.1:53,,10.0.0.1'"});
  EXPECT_EQ(errors_of(yaml, {"scoring.tag=20"}),
            std::vector<std::string>{
                "-o:1: scoring.tag: thresholds must be ordered tag <= tempfail <= reject; tag "
                "(20) is above tempfail (6)"});
}

TEST(Overrides, FileErrorsAndOverrideErrorsTogether) {
  EXPECT_EQ(errors_of("limits: { max_errors: x }\n", {"limits.max_recipients=0"}),
            (std::vector<std::string>{
                "test.yaml:1:23: limits.max_errors: expected an integer, got 'x'",
                "-o:1: limits.max_recipients: 0 is out of range 1..100000",
            }));
}

// ---------------------------------------------------------------------------------------
// List files and content files, in a temporary directory.
// ---------------------------------------------------------------------------------------
class ListFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = std::filesystem::temp_directory_path() /
                 ("mxgate-policy-test-" + std::to_string(::getpid()) + "-" +
                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(directory_);
    std::filesystem::create_directories(directory_ / "lists");
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }

  std::string write(const std::string& relative, const std::string& contents) {
    const std::filesystem::path path = directory_ / relative;
    std::ofstream(path) << contents;
    return path.string();
  }
  std::string path(const std::string& relative) const { return (directory_ / relative).string(); }

  LoadResult load(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
    return load_config(write("mxgate.yaml", yaml), overrides);
  }

  std::filesystem::path directory_;
};

TEST_F(ListFileTest, RelayDomainsFromFileRelativeToConfig) {
  write("lists/domains", "# our domains\n\nExample.COM.\n  example.net   # trailing comment\n");
  LoadResult result = load("relay_domains: [example.org, \"file:lists/domains\"]\n");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(error_strings(result));
  EXPECT_EQ(result.config->relay_domains,
            (std::vector<std::string>{"example.org", "example.com", "example.net"}));
  EXPECT_EQ(result.config->list_files, std::vector<std::string>{path("lists/domains")});
}

TEST_F(ListFileTest, ListFileAsTheWholeValueAndAbsolutePath) {
  const std::string domains = write("lists/domains", "a.example\n");
  LoadResult result = load("relay_domains: file:" + domains + "\n");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(error_strings(result));
  EXPECT_EQ(result.config->relay_domains, std::vector<std::string>{"a.example"});
}

TEST_F(ListFileTest, ErrorsPointIntoTheListFile) {
  write("lists/domains", "good.example\n# comment\nexa mple.org\n\n-bad.example\n");
  LoadResult result =
      load("hostname: mx.example\nrelay_domains: [x.example, \"file:lists/domains\"]\n");
  EXPECT_EQ(error_strings(result),
            (std::vector<std::string>{
                path("lists/domains") +
                    ":3: relay_domains[1]: 'exa mple.org' is not a valid domain name: invalid "
                    "character ' '",
                path("lists/domains") +
                    ":5: relay_domains[1]: '-bad.example' is not a valid domain name: label "
                    "starts or ends with '-'",
            }));
}

TEST_F(ListFileTest, MissingListFileIsBlamedOnTheReference) {
  LoadResult result = load("relay_domains:\n  - file:lists/missing\n");
  EXPECT_EQ(error_strings(result),
            std::vector<std::string>{path("mxgate.yaml") + ":2:5: relay_domains[0]: cannot read '" +
                                     path("lists/missing") + "': No such file or directory"});
}

TEST_F(ListFileTest, DevicesAreRefusedNotRead) {
  LoadResult result = load("relay_domains: file:/dev/zero\n");
  EXPECT_EQ(error_strings(result),
            std::vector<std::string>{path("mxgate.yaml") +
                                     ":1:16: relay_domains: cannot read '/dev/zero': not a "
                                     "regular file"});
}

TEST_F(ListFileTest, ContentExpressionsMayNameRulesFromFiles) {
  write("lists/fee.rules", "where=body score=1 name=fee\nnext of kin\n");
  LoadResult result = load(
      "content:\n  - { name: combo, expression: \"fee:2 && not fee:2\", score: 4 }\n"
      "content_files: [lists/fee.rules]\n");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(error_strings(result));
  EXPECT_EQ(result.config->content.at(1).name, "fee:2");
}

TEST_F(ListFileTest, ListFilesCannotNest) {
  write("lists/a", "file:lists/b\n");
  LoadResult result = load("relay_domains: file:lists/a\n");
  EXPECT_EQ(error_strings(result),
            std::vector<std::string>{path("lists/a") +
                                     ":1: relay_domains: a list file cannot name another list "
                                     "file"});
}

TEST_F(ListFileTest, AccessValuesFromFile) {
  write("lists/clients", "192.0.2.0/24\n2001:DB8::/32\n10.1.1.1/16   # typo\n");
  LoadResult result = load(
      "access:\n  - { name: ok, kind: client_ip, values: \"file:lists/clients\", action: accept "
      "}\n");
  EXPECT_EQ(error_strings(result),
            std::vector<std::string>{path("lists/clients") +
                                     ":3: access[0].values: '10.1.1.1/16' has host bits set "
                                     "beyond /16 (did you mean 10.1.0.0/16?)"});
  write("lists/clients", "192.0.2.0/24\n2001:DB8::/32\n");
  result = load(
      "access:\n  - { name: ok, kind: client_ip, values: \"file:lists/clients\", action: accept "
      "}\n");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(error_strings(result));
  EXPECT_EQ(result.config->access.at(0).values,
            (std::vector<std::string>{"192.0.2.0/24", "2001:db8::/32"}));
}

TEST_F(ListFileTest, OverrideCanPointAtAListFile) {
  write("lists/domains", "from-file.example\n");
  LoadResult result = load("relay_domains: [a.example]\n", {"relay_domains=file:lists/domains"});
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(error_strings(result));
  EXPECT_EQ(result.config->relay_domains, std::vector<std::string>{"from-file.example"});
}

TEST_F(ListFileTest, ContentFiles) {
  write("lists/phrases.rules",
        "# advance fee\nwhere=body score=2.5\n(?i)next of kin\n\n# inline # is literal\n"
        "^#hashtag$\n");
  LoadResult result = load(
      "content:\n  - { name: other, pattern: x, score: 1 }\ncontent_files: "
      "[lists/phrases.rules]\n");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(error_strings(result));
  const std::vector<ContentRule>& rules = result.config->content;
  ASSERT_EQ(rules.size(), 3u);
  EXPECT_EQ(rules[1].name, "phrases:3");
  EXPECT_EQ(rules[1].pattern, "(?i)next of kin");
  EXPECT_EQ(rules[1].where, "body");
  EXPECT_EQ(rules[1].score, 2.5);
  EXPECT_EQ(rules[1].mark.file, path("lists/phrases.rules"));
  EXPECT_EQ(rules[1].mark.line, 3);
  EXPECT_EQ(rules[2].name, "phrases:6");
  EXPECT_EQ(rules[2].pattern, "^#hashtag$");
}

TEST_F(ListFileTest, ContentFileErrors) {
  write("lists/bad.rules", "where=body score=2 name=fraud\nok\n(unclosed\n[z-a]\n");
  write("lists/noheader.rules", "# only a comment\n");
  write("lists/badheader.rules", "where=bdy scor=2\npattern\n");
  LoadResult result = load(
      "content_files:\n  - lists/bad.rules\n  - lists/noheader.rules\n"
      "  - lists/badheader.rules\n");
  EXPECT_EQ(
      error_strings(result),
      (std::vector<std::string>{
          path("lists/bad.rules") +
              ":3: content_files[0]: invalid regular expression '(unclosed': missing ): "
              "(unclosed",
          path("lists/bad.rules") +
              ":4: content_files[0]: invalid regular expression '[z-a]': invalid character class "
              "range: z-a",
          path("lists/noheader.rules") +
              ": content_files[1]: empty content file (expected a header line "
              "'where=<target> score=<number>' and patterns)",
          path("lists/badheader.rules") +
              ":1: content_files[2]: where: expected one of body, headers, all-headers, "
              "subject, from, to, message, raw, url, attachment, mime, header:<Name>; got 'bdy' "
              "(did you mean 'body'?)",
          path("lists/badheader.rules") +
              ":1: content_files[2]: unknown header key 'scor' (did you mean 'score'?)",
          path("lists/badheader.rules") +
              ":1: content_files[2]: expected a header line 'where=<target> score=<number> "
              "[action=<action>] [name=<prefix>]' before the patterns",
      }));
}

TEST_F(ListFileTest, LoadConfigTextResolvesRelativeToItsName) {
  write("lists/domains", "a.example\n");
  LoadResult result = load_config_text("relay_domains: file:lists/domains\n", path("virtual.yaml"));
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(error_strings(result));
  EXPECT_EQ(result.config->relay_domains, std::vector<std::string>{"a.example"});
}

// ---------------------------------------------------------------------------------------
// The shipped example.
// ---------------------------------------------------------------------------------------
const std::string kExamplePath = std::string(MXGATE_SOURCE_DIR) + "/conf/mxgate.yaml";

std::string read_text(const std::string& file_name) {
  std::ifstream input(file_name);
  std::stringstream buffer;
  buffer << input.rdbuf();
  return buffer.str();
}

TEST(ExampleConfig, LoadsCleanWithTheRunDefaults) {
  LoadResult result = load_config(kExamplePath);
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(error_strings(result));
  const Config& config = *result.config;
  ASSERT_EQ(config.listen.size(), 1u);
  EXPECT_EQ(config.listen[0].to_string(), "127.0.0.1:2525");
  EXPECT_EQ(config.backend.address.to_string(), "127.0.0.1:2526");
  EXPECT_EQ(config.relay_domains, (std::vector<std::string>{"example.org", "example.net"}));
  EXPECT_FALSE(config.redis.has_value());
  EXPECT_TRUE(config.dnsbl.empty());
  EXPECT_TRUE(config.content.empty());
  EXPECT_EQ(config.log.rejections, "");
}

// The example says "present keys are at their default": hold it to that.
TEST(ExampleConfig, DocumentsTheTrueDefaults) {
  LoadResult result = load_config(kExamplePath);
  ASSERT_TRUE(result.ok());
  const Config& loaded = *result.config;
  const Config defaults;
  const Limits& limits = loaded.limits;
  const Limits& expected = defaults.limits;
  EXPECT_EQ(limits.max_command_line, expected.max_command_line);
  EXPECT_EQ(limits.max_text_line, expected.max_text_line);
  EXPECT_EQ(limits.max_local_part, expected.max_local_part);
  EXPECT_EQ(limits.max_domain, expected.max_domain);
  EXPECT_EQ(limits.max_path, expected.max_path);
  EXPECT_EQ(limits.max_message_size, expected.max_message_size);
  EXPECT_EQ(limits.max_recipients, expected.max_recipients);
  EXPECT_EQ(limits.max_errors, expected.max_errors);
  EXPECT_EQ(limits.max_messages_per_session, expected.max_messages_per_session);
  EXPECT_EQ(limits.command_timeout, expected.command_timeout);
  EXPECT_EQ(limits.data_timeout, expected.data_timeout);
  EXPECT_EQ(limits.tls_handshake_timeout, expected.tls_handshake_timeout);
  EXPECT_EQ(limits.max_connections, expected.max_connections);
  EXPECT_EQ(limits.max_connections_per_ip, expected.max_connections_per_ip);
  EXPECT_EQ(limits.max_bytes_in_flight, expected.max_bytes_in_flight);
  EXPECT_EQ(limits.shutdown_timeout, expected.shutdown_timeout);
  EXPECT_EQ(loaded.hostname, defaults.hostname);
  EXPECT_EQ(loaded.threads, defaults.threads);
  EXPECT_EQ(loaded.backend.xclient, defaults.backend.xclient);
  EXPECT_EQ(loaded.backend.connect_timeout, defaults.backend.connect_timeout);
  EXPECT_EQ(loaded.backend.command_timeout, defaults.backend.command_timeout);
  EXPECT_EQ(loaded.backend.data_timeout, defaults.backend.data_timeout);
  EXPECT_EQ(loaded.backend.starttls, defaults.backend.starttls);
  EXPECT_EQ(loaded.tls.min_version, defaults.tls.min_version);
  EXPECT_EQ(loaded.smtp.bare_newline, defaults.smtp.bare_newline);
  EXPECT_EQ(loaded.smtp.allow_address_literals, defaults.smtp.allow_address_literals);
  EXPECT_EQ(loaded.smtp.chunking, defaults.smtp.chunking);
  EXPECT_EQ(loaded.smtp.smtputf8, defaults.smtp.smtputf8);
  EXPECT_EQ(loaded.smtp.pipelining, defaults.smtp.pipelining);
  EXPECT_EQ(loaded.smtp.banner, defaults.smtp.banner);
  EXPECT_EQ(loaded.smtp.score_header, defaults.smtp.score_header);
  EXPECT_EQ(loaded.proxy_protocol.enabled, defaults.proxy_protocol.enabled);
  EXPECT_EQ(loaded.proxy_protocol.timeout, defaults.proxy_protocol.timeout);
  EXPECT_EQ(loaded.log.level, defaults.log.level);
  EXPECT_EQ(loaded.log.syslog, defaults.log.syslog);
  EXPECT_EQ(loaded.metrics.listen.has_value(), defaults.metrics.listen.has_value());
  EXPECT_EQ(loaded.dns.timeout, defaults.dns.timeout);
  EXPECT_EQ(loaded.dns.retries, defaults.dns.retries);
  EXPECT_EQ(loaded.dns.min_ttl, defaults.dns.min_ttl);
  EXPECT_EQ(loaded.dns.max_ttl, defaults.dns.max_ttl);
  EXPECT_EQ(loaded.dns.cache_size, defaults.dns.cache_size);
  EXPECT_EQ(loaded.dns.tempfail_ttl, defaults.dns.tempfail_ttl);
  EXPECT_EQ(loaded.dns.reverse_lookup, defaults.dns.reverse_lookup);
  EXPECT_EQ(loaded.scoring.tag, defaults.scoring.tag);
  EXPECT_EQ(loaded.scoring.tempfail, defaults.scoring.tempfail);
  EXPECT_EQ(loaded.scoring.reject, defaults.scoring.reject);
  EXPECT_EQ(loaded.dry_run, defaults.dry_run);
}

// Uncomments the example blocks ("# dnsbl:" and the "#   ..." lines under it) so the
// documented examples, and the list files they name, are validated too.
std::string uncomment_examples(const std::string& text) {
  std::istringstream input(text);
  std::string output;
  std::string line;
  bool in_block = false;
  while (std::getline(input, line)) {
    const bool header = line == "# redis:" || line == "# dnsbl:" || line == "# access:" ||
                        line == "# ratelimit:" || line == "# content:" ||
                        line == "# rdns_checks:" || line.starts_with("# content_files: [");
    if (header || (in_block && line.starts_with("#   "))) {
      in_block = true;
      output += line.substr(2) + "\n";
      continue;
    }
    in_block = false;
    output += line + "\n";
  }
  return output;
}

TEST(ExampleConfig, CommentedExamplesAreValid) {
  const std::string text = uncomment_examples(read_text(kExamplePath));
  LoadResult result = load_config_text(text, kExamplePath);
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(error_strings(result));
  const Config& config = *result.config;
  EXPECT_TRUE(config.redis.has_value());
  EXPECT_EQ(config.dnsbl.size(), 4u);
  EXPECT_EQ(config.access.size(), 3u);
  EXPECT_EQ(config.ratelimit.size(), 2u);
  EXPECT_EQ(config.content.size(), 5u);  // 2 inline + 3 from lists/advance_fee.rules
  EXPECT_EQ(config.content.back().name, "advance-fee:11");
  EXPECT_EQ(config.access.at(1).values.size(), 2u);
  // The documented dynamic_patterns are the defaults, spelt out.
  EXPECT_EQ(config.rdns_checks.missing, 3);
  EXPECT_EQ(config.rdns_checks.dynamic_patterns, RdnsChecksConfig{}.dynamic_patterns);
}

TEST(ExampleConfig, RunScriptOverrides) {
  LoadResult result =
      load_config(kExamplePath, {"listen=127.0.0.1:12525", "backend.address=127.0.0.1:12526",
                                 "redis.address=127.0.0.1:6379", "dns.servers=127.0.0.1:5353"});
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(error_strings(result));
  EXPECT_EQ(result.config->listen.at(0).port, 12525);
  EXPECT_EQ(result.config->backend.address.port, 12526);
  EXPECT_TRUE(result.config->redis.has_value());
  EXPECT_EQ(result.config->dns.servers.at(0).to_string(), "127.0.0.1:5353");
}

// ---------------------------------------------------------------------------------------
// summarize
// ---------------------------------------------------------------------------------------
TEST(Summarize, NamesTheEffectivePolicy) {
  std::shared_ptr<const Config> config = load_ok(
      "relay_domains: [a.example, b.example]\n"
      "scoring: { tag: 3, tempfail: 7.5, reject: 12 }\n"
      "dnsbl:\n  - { zone: zen.spamhaus.org, weight: 8 }\n"
      "ratelimit:\n  - { name: r, key: client_ip, rate: 1/s }\n",
      {"redis.address=10.0.0.5"});
  ASSERT_TRUE(config);
  const std::string summary = summarize(*config);
  EXPECT_NE(summary.find("listen: 127.0.0.1:2525\n"), std::string::npos) << summary;
  EXPECT_NE(summary.find("backend: 127.0.0.1:10025 (XCLIENT)\n"), std::string::npos) << summary;
  EXPECT_NE(summary.find("relay domains: 2\n"), std::string::npos) << summary;
  EXPECT_NE(summary.find("limits: message size 25MiB, recipients 100"), std::string::npos)
      << summary;
  EXPECT_NE(summary.find("store: redis 10.0.0.5:6379 (prefix mxgate)\n"), std::string::npos)
      << summary;
  EXPECT_NE(summary.find("filters: access (0 rules), dnsbl (1 rule), ratelimit (1 rule), "
                         "content (0 rules)\n"),
            std::string::npos)
      << summary;
  EXPECT_NE(summary.find("scoring: tag 3, tempfail 7.5, reject 12\n"), std::string::npos)
      << summary;
}

TEST(Summarize, EmbeddedStoreAndNoRelayDomains) {
  const std::string summary = summarize(*load_ok(""));
  EXPECT_NE(summary.find("store: embedded"), std::string::npos) << summary;
  EXPECT_NE(summary.find("relay domains: 0 (every recipient will be refused)"), std::string::npos)
      << summary;
  EXPECT_NE(summary.find("scoring: tag 4, tempfail 6, reject 10"), std::string::npos) << summary;
}

}  // namespace
}  // namespace mxgate::policy

// The whole mxgate policy as plain, immutable structs: what the YAML loader produces
// and every other part reads. Member names are the config keys (see conf/mxgate.yaml).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mxgate::policy {

using Duration = std::chrono::milliseconds;

// Where a value came from, so later checks (and `mxgate check`) can point at it.
struct SourceMark {
  std::string file;
  int line = 0;    // 1-based; 0 = unknown (defaults, -o overrides)
  int column = 0;  // 1-based
};

// One `host:port` endpoint. IPv6 literal hosts are written `[::1]:25` in the file.
struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::string to_string() const;  // "127.0.0.1:25", "[::1]:25"
};

// Every bound on untrusted input, with its default, in one place (as Postfix's
// mail_params.h). Documented once in conf/mxgate.yaml.
struct Limits {
  std::size_t max_command_line = 512;      // RFC 5321 4.5.3.1.4, including CRLF
  std::size_t max_text_line = 1000;        // RFC 5321 4.5.3.1.6, including CRLF
  std::size_t max_local_part = 64;         // RFC 5321 4.5.3.1.1
  std::size_t max_domain = 255;            // RFC 5321 4.5.3.1.2
  std::size_t max_path = 256;              // RFC 5321 4.5.3.1.3, including <>
  std::uint64_t max_message_size = 25ull * 1024 * 1024;
  std::size_t max_recipients = 100;        // then 452 4.5.3
  std::size_t max_errors = 10;             // then 421 and close
  std::size_t max_messages_per_session = 1000;
  Duration command_timeout = std::chrono::minutes(5);
  Duration data_timeout = std::chrono::minutes(10);   // between DATA/BDAT reads
  Duration tls_handshake_timeout = std::chrono::seconds(30);
  std::size_t max_connections = 20000;
  std::size_t max_connections_per_ip = 20;
  std::uint64_t max_bytes_in_flight = 1024ull * 1024 * 1024;  // 452 4.3.1 past it
  Duration shutdown_timeout = std::chrono::seconds(30);
  // Each filter call at each stage; past it the filter's on_error applies (default allow).
  Duration filter_timeout = std::chrono::seconds(5);
};

struct BackendConfig {
  Endpoint address{"127.0.0.1", 10025};
  bool xclient = true;            // send XCLIENT when the backend offers it
  std::string helo_name;          // EHLO name toward the backend; empty = hostname
  Duration connect_timeout = std::chrono::seconds(5);
  Duration command_timeout = std::chrono::seconds(60);   // per command reply
  Duration data_timeout = std::chrono::seconds(100);     // reply to the final dot
  enum class Tls { none, opportunistic, required } starttls = Tls::none;
  bool tls_verify = false;
  std::string tls_ca_file;
  // A client whose message the backend accepted within early_connect_window gets its
  // backend connection opened at MAIL, so connect, greeting, XCLIENT and EHLO overlap
  // its next commands. Other clients' connections open at their first accepted RCPT:
  // a botnet never reaches the backend. At most early_connect_clients are remembered.
  bool early_connect = true;
  Duration early_connect_window = std::chrono::minutes(10);
  std::size_t early_connect_clients = 100000;
};

struct TlsConfig {
  std::string cert_file;  // empty: STARTTLS is not offered
  std::string key_file;
  std::string min_version = "TLSv1.2";
};

// What to do with a bare CR, bare LF or NUL inside message content.
enum class BareNewline { reject, normalize };

struct SmtpConfig {
  BareNewline bare_newline = BareNewline::reject;
  bool allow_address_literals = false;  // RCPT TO:<u@[192.0.2.1]>
  bool chunking = true;                 // advertise CHUNKING/BDAT
  bool smtputf8 = true;
  bool pipelining = true;
  std::string banner = "ESMTP";         // text after the hostname in the 220 greeting
  std::string score_header = "X-Mxgate-Score";  // empty: not added
};

struct ProxyProtocolConfig {
  bool enabled = false;          // expect a PROXY v1/v2 header (HAProxy in front)
  std::vector<std::string> trusted_networks;  // CIDRs allowed to send it
  Duration timeout = std::chrono::seconds(5);
};

struct LogConfig {
  std::string rejections;        // JSON lines file; empty = stderr
  std::string level = "info";    // trace, debug, info, warn, error
  bool syslog = false;
  // The local syslog socket (a Unix datagram socket): journald and rsyslog listen on
  // /dev/log; a chroot or a test points it elsewhere.
  std::string syslog_socket = "/dev/log";
};

struct MetricsConfig {
  std::optional<Endpoint> listen;  // absent: no HTTP endpoint
};

struct RedisConfig {
  Endpoint address{"127.0.0.1", 6379};
  std::string password;
  int database = 0;
  Duration timeout = std::chrono::milliseconds(50);
  Duration connect_timeout = std::chrono::seconds(1);
  std::string key_prefix = "mxgate";
};

struct DnsConfig {
  std::vector<Endpoint> servers;   // empty: /etc/resolv.conf
  Duration timeout = std::chrono::seconds(2);
  int retries = 1;
  Duration min_ttl = std::chrono::seconds(60);
  Duration max_ttl = std::chrono::hours(1);
  std::size_t cache_size = 100000;
  // How long a failed client-name lookup (timeout, SERVFAIL, REFUSED) is remembered for
  // its address, so that a dead resolver costs one query per address per tempfail_ttl,
  // not one per session. 0: failures are not cached. At most 5m (RFC 2308 section 7).
  Duration tempfail_ttl = std::chrono::seconds(5);
  // RFC 5782 health probes of every dnsbl list (127.0.0.2 listed, 127.0.0.1 not; TEST and
  // INVALID for domain lists): a failing list is suspended until a probe passes.
  bool probe = true;
  Duration probe_interval = std::chrono::minutes(10);
  // The client's name by reverse DNS with forward confirmation (Postfix's peer name
  // lookup): for logs, XCLIENT NAME and rdns_checks. Bounded by `timeout`, awaited at the
  // first RCPT, never before the greeting.
  bool reverse_lookup = true;
};

enum class OnError { allow, tempfail };
// tag: content rules only: deliver the message marked (the score header says which rule).
enum class RuleAction { score, reject, tempfail, accept, drop, log, tag };

// The pregreet test (postscreen_greet_wait / postscreen_greet_action): the session waits
// greet_pause before its banner; a client that talks first is scored, rejected or dropped.
struct EarlyTalkerConfig {
  Duration greet_pause{0};                // 0: no pause, no test
  RuleAction action = RuleAction::score;  // score | reject | tempfail | drop | log
  double score = 0;
};

// HELO/EHLO checks, each adding its score (0: the check is off).
struct HeloChecksConfig {
  double missing = 0;       // MAIL without HELO/EHLO
  double bare_ip = 0;       // "192.0.2.1" instead of the literal "[192.0.2.1]"
  double invalid = 0;       // neither a host name nor an address literal
  double not_fqdn = 0;      // a single label ("localhost")
  double our_hostname = 0;  // claims to be us: hostname or one of our_names
  double our_address = 0;   // claims one of our_addresses
  std::vector<std::string> our_names;      // besides hostname; lower-case
  std::vector<std::string> our_addresses;  // empty: the listen addresses
};

// Reverse DNS checks on the client, each adding its score (0: the check is off).
struct RdnsChecksConfig {
  double missing = 0;     // no PTR record (Postfix reject_unknown_reverse_client_hostname)
  double unverified = 0;  // no PTR name resolves back to the client
                          // (reject_unknown_client_hostname)
  double dynamic = 0;     // the name embeds the client's address or matches dynamic_patterns
  // RE2, searched in the lower-case name without its trailing dot: names ISPs give to
  // dial-up, DSL and cable pools, where infected home PCs send from.
  std::vector<std::string> dynamic_patterns{
      R"((^|[.-])(dyn|dynamic|dhcp|dialup|dial-?in|pool|ppp|pppoe|a?dsl|xdsl|vdsl|cable|catv|broadband|ftth|client|cust|customer|user|res|host)-?\d)",
      R"((^|[.-])(dynamic|dyn|dhcp|dialup|dial-?in|pool|ppp|pppoe|a?dsl|xdsl|vdsl|cable|catv|broadband|ftth|residential)([.-]|$))",
  };

  bool enabled() const { return missing != 0 || unverified != 0 || dynamic != 0; }
};

struct ScoringConfig {
  double tag = 4;
  double tempfail = 6;
  double reject = 10;
};

struct DnsblRule {
  SourceMark mark;
  std::string name;         // defaults to zone
  std::string zone;         // may contain a query key (hidden in replies)
  std::string reply_name;   // shown to clients/logs instead of zone; default zone
  enum class Kind { ip, helo, sender_domain } kind = Kind::ip;  // ip = DNSBL/DNSWL, others RHSBL
  std::string match = "127.0.0.0/8";   // postscreen syntax, parsed by filters/
  double weight = 1;
  RuleAction action = RuleAction::score;
  bool fetch_txt = false;
  OnError on_error = OnError::allow;
};

struct AccessRule {   // allowlist / denylist entries
  SourceMark mark;
  std::string name;
  enum class Kind { client_ip, helo, sender, sender_domain, recipient, recipient_domain } kind =
      Kind::client_ip;
  std::vector<std::string> values;   // CIDRs, names or addresses; files already expanded
  RuleAction action = RuleAction::score;
  double score = 0;
};

struct RateLimitRule {
  SourceMark mark;
  std::string name;
  std::string stage = "connect";       // connect, helo, mail, rcpt, data
  std::vector<std::string> key;        // client_ip, client_net, helo, sender, ...
  double rate = 0;                     // events per second
  double burst = 0;
  std::string count = "events";        // connections, messages, recipients, errors, concurrency
  RuleAction action = RuleAction::tempfail;
  int reply_code = 451;
  double score = 0;
  OnError on_error = OnError::allow;
  std::vector<std::string> exempt;     // CIDRs
  std::int64_t limit = 0;              // count concurrency: sessions at once per key
  Duration slot_ttl = std::chrono::minutes(15);  // concurrency: a crashed holder's slot expires
};

// How client addresses group into networks for client_net keys, reputation and greylisting.
struct ClientNetConfig {
  int ipv4_prefix = 24;
  int ipv6_prefix = 64;
};

// Decayed good/bad outcome counts per key, read as a bounded score (filters/reputation).
struct ReputationConfig {
  bool enabled = false;   // a present `reputation:` section enables it
  std::vector<std::string> keys{"client_ip", "client_net", "helo", "sender_domain"};
  Duration half_life = std::chrono::hours(24 * 7);
  double min_events = 3;  // fewer decayed outcomes: no opinion
  double max_score = 5;   // added for a record of only bad outcomes
  double min_score = -3;  // added for a record of only good outcomes
};

// Triplet greylisting (filters/greylist); off unless a `greylist:` section is present.
struct GreylistConfig {
  bool enabled = false;
  Duration delay = std::chrono::minutes(5);
  Duration retry_window = std::chrono::hours(24);
  Duration lifetime = std::chrono::hours(24 * 35);
  int auto_allowlist = 5;            // passed triplets after which the client net is allowlisted
  bool skip_good_reputation = true;  // clients the reputation records trust are not delayed
  std::vector<std::string> exempt;   // CIDRs
  OnError on_error = OnError::allow;
};

struct ContentRule {
  SourceMark mark;
  std::string name;
  std::string where = "body";
  std::string pattern;
  std::string expression;   // composite rule instead of a pattern
  double score = 0;
  RuleAction action = RuleAction::score;
  std::string description;
};

// Bounds of content scanning (content_limits:), read by filters/content and filters/uribl.
struct ContentLimits {
  std::size_t max_line_scan = 4096;         // window over a longer line or field, bytes
  std::uint64_t re2_max_mem = 64ull << 20;  // RE2 budget per compiled pattern set
  std::size_t max_url_lookups = 20;         // distinct URL domains looked up per message
};

struct Config {
  std::string path;       // the file this was loaded from
  std::vector<std::string> list_files;  // list and content files read, for reload and check
  std::string hostname = "localhost";
  std::vector<Endpoint> listen{{"127.0.0.1", 2525}};
  int threads = 0;        // 0 = one per core
  std::string user;       // drop privileges to this user after binding
  BackendConfig backend;
  std::vector<std::string> relay_domains;   // lower-case, no trailing dot; files expanded
  Limits limits;
  TlsConfig tls;
  SmtpConfig smtp;
  ProxyProtocolConfig proxy_protocol;
  LogConfig log;
  MetricsConfig metrics;
  std::optional<RedisConfig> redis;   // absent: embedded in-process store
  DnsConfig dns;
  ScoringConfig scoring;
  bool dry_run = false;               // compute and log verdicts, enforce none
  EarlyTalkerConfig early_talker;
  HeloChecksConfig helo_checks;
  RdnsChecksConfig rdns_checks;
  std::vector<DnsblRule> dnsbl;
  std::vector<AccessRule> access;
  std::vector<RateLimitRule> ratelimit;
  ClientNetConfig client_net;
  ReputationConfig reputation;
  GreylistConfig greylist;
  std::vector<ContentRule> content;
  ContentLimits content_limits;
  std::vector<DnsblRule> uribl;       // URL domain lists (DBL, SURBL): dnsbl entries
};

}  // namespace mxgate::policy

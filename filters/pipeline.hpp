// The filter chain: filters built once per policy generation from their typed config,
// one FilterInstance per session, run stage by stage; the pipeline sums scores and
// applies the scoring thresholds. It does not know what a filter does.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "filters/session_context.hpp"
#include "filters/verdict.hpp"
#include "policy/config.hpp"

namespace mxgate::filters {

class ClientNameCache;
class DnsResolver;
class DnsCache;
class Store;

// Per worker thread (one per io_context): the clients filters talk through.
// Filled by the proxy at start-up; filters must not block and must not share
// mutable state across threads without their own synchronisation.
struct Services {
  boost::asio::any_io_executor executor;
  // Clients added as filter families land (DNS resolver, store).
  std::shared_ptr<DnsResolver> resolver;  // this thread's c-ares channel (dns.servers)
  std::shared_ptr<DnsCache> dns_cache;    // shared by every thread (sharded locks)
  // The client's name per address (dns.reverse_lookup), shared by every thread alike.
  std::shared_ptr<ClientNameCache> client_name_cache;
  // Rate limits, reputation, greylisting: this thread's Redis connection, or the one
  // embedded store every thread shares (filters/store.hpp).
  std::shared_ptr<Store> store;
};

// The DNS-list answer cache sized by dns.cache_size, TTLs clamped to dns.min_ttl/max_ttl.
// Create one per process and hand it to every make_services call, so threads share hits.
std::shared_ptr<DnsCache> make_dns_cache(const policy::Config& config);
// The client-name cache: dns.cache_size entries, TTLs from dns.min_ttl, max_ttl and
// tempfail_ttl. One per process (per policy generation) as make_dns_cache.
std::shared_ptr<ClientNameCache> make_client_name_cache(const policy::Config& config);

// Services for the worker thread running `executor`: call it on that thread, once, at
// start-up. A null cache: one of its own (tests). Throws std::runtime_error when the
// resolver cannot start (malformed dns.servers).
Services make_services(boost::asio::any_io_executor executor, const policy::Config& config,
                       std::shared_ptr<DnsCache> dns_cache = nullptr,
                       std::shared_ptr<ClientNameCache> client_name_cache = nullptr);

// Per session state of one filter.
class FilterInstance {
 public:
  virtual ~FilterInstance() = default;
  virtual boost::asio::awaitable<Verdict> on_stage(Stage stage, const SessionContext& context) = 0;
  // The transaction ended (RSET, end of data): forget per-message state.
  virtual void reset_transaction() {}
  // True when on_stage(stage) would not wait now: the background work it reports has
  // finished. The pipeline then calls it without the deadline's timer and parallel
  // group (their CPU and scheduler rounds); false is always safe.
  virtual bool ready(Stage) const { return false; }
};

// Built from config, immutable, shared by all threads.
class Filter {
 public:
  virtual ~Filter() = default;
  virtual const std::string& name() const = 0;
  // Which stages this filter cares about (the pipeline skips the others).
  virtual bool wants(Stage stage) const = 0;
  virtual std::unique_ptr<FilterInstance> open(Services& services) const = 0;
  // What the pipeline does when this filter throws or misses its deadline: `allow`
  // (proceed as if it had said next) or `tempfail` (a held 451: when in doubt, 4xx).
  virtual policy::OnError on_error() const { return policy::OnError::allow; }
  // False for a stage whose calls complete without awaiting anything (pure functions of
  // the context, or work started in the background and reported at a later stage): the
  // pipeline then calls the filter without a deadline timer, which could not interrupt
  // it anyway. The timer and its parallel group cost CPU and, worse, posts that let the
  // background work just started (Redis, DNS) run ahead of the reply the client waits
  // for: +190 us on the greeting with the connect-stage rate limit (bench/steps.py).
  virtual bool may_wait(Stage) const { return true; }
};

class PipelineSession;

class Pipeline {
 public:
  // Builds every filter the config names. Config errors were caught by policy/.
  static std::shared_ptr<const Pipeline> build(const policy::Config& config);
  // A pipeline of exactly these filters, with the config's scoring, dry_run, score
  // header and filter deadline (tests, and filters families built elsewhere).
  // `filter_timeout` overrides the config's deadline when set.
  static std::shared_ptr<const Pipeline> assemble(
      std::vector<std::unique_ptr<Filter>> filters, const policy::Config& config,
      std::optional<std::chrono::milliseconds> filter_timeout = std::nullopt);

  std::unique_ptr<PipelineSession> start(Services& services) const;
  const std::vector<std::unique_ptr<Filter>>& filters() const { return filters_; }
  const policy::ScoringConfig& scoring() const { return scoring_; }
  bool dry_run() const { return dry_run_; }
  const std::string& score_header() const { return score_header_; }
  // Each filter call's deadline (limits.filter_timeout).
  std::chrono::milliseconds filter_timeout() const { return filter_timeout_; }

 private:
  std::vector<std::unique_ptr<Filter>> filters_;
  policy::ScoringConfig scoring_;
  bool dry_run_ = false;
  std::string score_header_;
  std::chrono::milliseconds filter_timeout_{5000};
  std::string hostname_;
  friend class PipelineSession;
};

class PipelineSession {
 public:
  PipelineSession(const Pipeline& pipeline, Services& services);
  ~PipelineSession();
  // Runs every filter that wants `stage`. Connection-level verdicts (connect, helo,
  // mail) are held and enforced at the first rcpt stage, unless they are `drop`.
  // Held connect/helo verdicts apply to every later RCPT of the session (as Postfix's
  // smtpd_delay_reject); mail-stage ones until reset_transaction().
  boost::asio::awaitable<Decision> run(Stage stage, const SessionContext& context);
  const std::vector<Contribution>& contributions() const { return contributions_; }
  double total_score() const { return total_; }
  // A transaction ends (RSET, end of data): per-message contributions are dropped.
  void reset_transaction();

 private:
  const Pipeline& pipeline_;
  Services& services_;
  std::vector<std::unique_ptr<FilterInstance>> instances_;
  std::vector<Contribution> contributions_;
  double total_ = 0;
  bool accepted_ = false;  // an allowlist said accept: stop scoring
  Decision held_;          // a connection-level verdict waiting for the first RCPT
  bool has_held_ = false;

  // A non-next verdict recorded at connect/helo/mail, enforced at RCPT.
  struct Pending {
    Verdict::Kind kind;
    std::string filter;
    std::string rule;
    smtp::Reply reply;
    bool dry_run = false;      // rule action `log`: only in the would-be decision
    bool transaction = false;  // from the mail stage: forgotten at reset_transaction
  };
  boost::asio::awaitable<Verdict> call_filter(std::size_t index, Stage stage,
                                              const SessionContext& context);
  std::vector<Pending> pending_;
  bool accepted_transaction_ = false;  // accept at the mail stage: this transaction only
  bool would_accept_ = false;          // a dry-run accept (session)
  bool would_accept_transaction_ = false;
  std::vector<std::string> tagged_by_;   // content rules with action tag, this message
};

}  // namespace mxgate::filters

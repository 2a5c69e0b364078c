// URL domain lists (Spamhaus DBL, SURBL style): the registrable domains of the URLs in a
// message, looked up in parallel at end of data, judged like the DNS-list filter.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "filters/mime.hpp"
#include "filters/pipeline.hpp"
#include "policy/config.hpp"

struct psl_ctx_st;

namespace mxgate::filters {

struct UriblOptions {
  // content_limits.max_url_lookups: distinct URL domains looked up per message (each in
  // every list). Spam carries hundreds of links to dilute a lookup budget; the first ones
  // in the message are the ones a reader sees.
  std::size_t max_url_lookups = 20;
  // The same MIME limits as the content filter's, so both share one parse per message.
  mime::Limits mime;
};

// The options the policy asks for (content_limits, limits.max_message_size).
UriblOptions uribl_options(const policy::Config& config);

// The list key of a URL: its host's registrable domain (public suffix list), IDN hosts as
// A-labels ("https://Bücher.Example.co.uk/x" -> "xn--bcher-kva.example.co.uk"). nullopt
// for relative links, IP literals (domain lists do not take them), a host that is itself
// a public suffix, or one that is not a valid domain name after IDNA.
std::optional<std::string> url_list_domain(std::string_view url, const psl_ctx_st* psl);

// The public suffix list: the system's copy when installed (publicsuffix package),
// else libpsl's built-in one. Loaded once per process, read-only, shared by threads.
const psl_ctx_st* public_suffix_list();

class UriblFilter final : public Filter {
 public:
  // `rules` are DNS-list rules (zone, match, weight, action, on_error, reply_name), as
  // validated by policy/ for dnsbl:, applied to URL domains; `kind` is ignored.
  UriblFilter(const std::vector<policy::DnsblRule>& rules, UriblOptions options);
  ~UriblFilter() override;

  const std::string& name() const override { return name_; }
  bool wants(Stage stage) const override { return stage == Stage::data; }
  std::unique_ptr<FilterInstance> open(Services& services) const override;
  policy::OnError on_error() const override;

  struct List;

 private:
  std::string name_ = "uribl";
  std::vector<std::shared_ptr<List>> lists_;
  UriblOptions options_;
};

}  // namespace mxgate::filters

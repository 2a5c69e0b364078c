// Allow and deny lists from policy: client IP/CIDR (IPv4 and IPv6), HELO name, sender
// address or domain, recipient address or domain; each rule accepts, rejects or scores.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "filters/pipeline.hpp"
#include "policy/cidr.hpp"

namespace mxgate::filters {

// Postfix access(5) domain semantics: "example.org" matches the domain and every
// subdomain (parent_domain_matches_subdomains); ".example.org" only the subdomains.
// Both sides lower-case, without a trailing dot.
bool domain_matches(std::string_view domain, std::string_view pattern);

class AccessFilter final : public Filter {
 public:
  explicit AccessFilter(const std::vector<policy::AccessRule>& rules);

  const std::string& name() const override { return name_; }
  bool wants(Stage stage) const override;
  bool may_wait(Stage) const override { return false; }
  std::unique_ptr<FilterInstance> open(Services& services) const override;

  // The verdict for one stage (pure; the instance just calls it).
  Verdict evaluate(Stage stage, const SessionContext& context) const;

 private:
  struct Rule {
    policy::AccessRule config;
    std::vector<policy::Cidr> networks;  // client_ip rules
    std::vector<std::string> names;      // lower-cased, no trailing dot
  };
  bool matches(const Rule& rule, const SessionContext& context) const;

  std::string name_ = "access";
  std::vector<Rule> rules_;
};

}  // namespace mxgate::filters

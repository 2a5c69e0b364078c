// HELO/EHLO checks, postscreen/smtpd style: missing, bare IP without brackets, invalid
// syntax, a single label, or claiming our own name or address. Each check adds a score.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "filters/pipeline.hpp"

namespace mxgate::filters {

struct HeloCheckOptions {
  // A score of 0 disables the check.
  double missing = 0;       // MAIL without HELO/EHLO first
  double bare_ip = 0;       // "192.0.2.1": RFC 5321 4.1.3 wants the literal "[192.0.2.1]"
  double invalid = 0;       // not a host name nor an address literal (Postfix
                            // reject_invalid_helo_hostname)
  double not_fqdn = 0;      // one label: "localhost", "PC-1234"
  double our_hostname = 0;  // claims to be us: hostname or one of our_names
  double our_address = 0;   // claims one of our addresses, bracketed or not
  std::vector<std::string> our_names;      // besides `hostname`
  std::vector<std::string> our_addresses;  // "192.0.2.25", "2001:db8::25"
  std::string hostname;                    // config.hostname

  bool enabled() const {
    return missing != 0 || bare_ip != 0 || invalid != 0 || not_fqdn != 0 || our_hostname != 0 ||
           our_address != 0;
  }
};

// Which checks a HELO argument fails (pure: unit-tested directly). Rule names are the
// option names: "bare_ip", "invalid", "not_fqdn", "our_hostname", "our_address".
std::vector<std::string> helo_problems(std::string_view helo, const HeloCheckOptions& options);

class HeloFilter final : public Filter {
 public:
  explicit HeloFilter(HeloCheckOptions options);
  const std::string& name() const override { return name_; }
  bool wants(Stage stage) const override { return stage == Stage::helo || stage == Stage::mail; }
  bool may_wait(Stage) const override { return false; }
  std::unique_ptr<FilterInstance> open(Services& services) const override;

  double score_of(std::string_view check) const;
  const HeloCheckOptions& options() const { return options_; }

 private:
  std::string name_ = "helo";
  HeloCheckOptions options_;
};

}  // namespace mxgate::filters

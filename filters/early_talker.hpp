// The pregreet test's verdict (postscreen_greet_action): the session waits greet_pause
// before its banner and sets context.early_talker when the client spoke first.
#pragma once

#include <chrono>
#include <string>

#include "filters/pipeline.hpp"

namespace mxgate::filters {

struct EarlyTalkerOptions {
  std::chrono::milliseconds greet_pause{0};               // 0: no pause, the test is off
  policy::RuleAction action = policy::RuleAction::score;  // score, drop, reject, log
  double score = 0;
  std::string hostname;  // for the 421 reply
};

class EarlyTalkerFilter final : public Filter {
 public:
  explicit EarlyTalkerFilter(EarlyTalkerOptions options);
  const std::string& name() const override { return name_; }
  // The session sets the flag before the connect stage; helo catches a late setter.
  bool wants(Stage stage) const override { return stage == Stage::connect || stage == Stage::helo; }
  bool may_wait(Stage) const override { return false; }
  std::unique_ptr<FilterInstance> open(Services& services) const override;

  Verdict verdict() const;  // what an early talker gets
  const EarlyTalkerOptions& options() const { return options_; }

 private:
  std::string name_ = "early_talker";
  EarlyTalkerOptions options_;
};

}  // namespace mxgate::filters

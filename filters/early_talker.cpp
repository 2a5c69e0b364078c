// Early talkers: spam bots often send their commands without waiting for the banner,
// which a real MTA never does (RFC 5321 4.3.1); postscreen calls this PREGREET.
#include "filters/early_talker.hpp"

#include <fmt/format.h>

namespace mxgate::filters {

namespace {

class EarlyTalkerInstance final : public FilterInstance {
 public:
  explicit EarlyTalkerInstance(const EarlyTalkerFilter& filter) : filter_(filter) {}

  boost::asio::awaitable<Verdict> on_stage(Stage, const SessionContext& context) override {
    if (!context.early_talker || reported_) co_return Verdict::next();
    reported_ = true;
    co_return filter_.verdict();
  }

 private:
  const EarlyTalkerFilter& filter_;
  bool reported_ = false;
};

}  // namespace

EarlyTalkerFilter::EarlyTalkerFilter(EarlyTalkerOptions options) : options_(std::move(options)) {}

std::unique_ptr<FilterInstance> EarlyTalkerFilter::open(Services&) const {
  return std::make_unique<EarlyTalkerInstance>(*this);
}

Verdict EarlyTalkerFilter::verdict() const {
  const std::string detail = fmt::format("client talked before the greeting (greet_pause {}ms)",
                                         options_.greet_pause.count());
  Verdict verdict;
  verdict.filter = name_;
  verdict.rule = "pregreet";
  verdict.detail = detail;
  verdict.origin = Stage::connect;  // noticed at connect or helo, it is about the connection
  verdict.contributions.push_back({name_, "pregreet", options_.score, detail, "connect",
                                   options_.action == policy::RuleAction::log, ""});
  switch (options_.action) {
    case policy::RuleAction::drop:
      verdict.kind = Verdict::Kind::drop;
      verdict.reply = smtp::Reply(421, "4.7.0",
                                  fmt::format("{} Error: SMTP protocol synchronization: you "
                                              "talked before the greeting",
                                              options_.hostname));
      break;
    case policy::RuleAction::reject:
      verdict.kind = Verdict::Kind::reject;
      verdict.reply = smtp::Reply(554, "5.5.1", "Error: SMTP protocol synchronization");
      break;
    case policy::RuleAction::tempfail:
      verdict.kind = Verdict::Kind::tempfail;
      verdict.reply = smtp::Reply(450, "4.5.1", "Error: SMTP protocol synchronization");
      break;
    default:
      break;  // score, log (dry run), accept makes no sense here
  }
  return verdict;
}

}  // namespace mxgate::filters

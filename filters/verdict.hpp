// The one verdict type filters answer with, and the pipeline's decision built from them.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "proxy/smtp/reply.hpp"

namespace mxgate::filters {

enum class Stage { connect, helo, mail, rcpt, data, close };
const char* stage_name(Stage stage);

// A line of the score sheet shown to support.
struct Contribution {
  std::string filter;
  std::string rule;
  double score = 0;
  std::string detail;
  std::string stage;
  bool dry_run = false;
  // How this evidence reads in a reply when the score total rejects the client:
  // "client [192.0.2.1] blocked using bl.example". Empty: not shown to the client.
  std::string reply_text;
};

// One filter's answer at one stage (Envoy's Continue/StopIteration, made explicit).
struct Verdict {
  enum class Kind { next, accept, tempfail, reject, drop };
  Kind kind = Kind::next;
  double score = 0;    // with next: added to the session's score
  std::string filter;  // every verdict but a plain next names its filter and rule
  std::string rule;
  std::string detail;    // "zen.spamhaus.org 127.0.0.4", for the log
  smtp::Reply reply;     // with tempfail/reject; empty code -> the pipeline's default
  bool dry_run = false;  // rule action `log`: computed and logged, not enforced
  // Several score lines from one call (one per DNS list, say). Each is recorded and
  // summed; an empty stage means the current one. Connection-level evidence carries
  // its own stage ("connect", "helo") so a reset_transaction() keeps it.
  std::vector<Contribution> contributions;
  // The stage the decisive evidence belongs to, when not the current one: a DNS list
  // on the client IP is judged at RCPT but is about the connection, so its reject holds
  // for every later RCPT and its accept for the session. Empty: the current stage.
  std::optional<Stage> origin;
  // Rules whose action is `tag`: the message passes, marked in the score header.
  std::vector<std::string> tags;

  static Verdict next() { return {}; }
  static Verdict add(double score, std::string filter, std::string rule, std::string detail) {
    Verdict v;
    v.score = score;
    v.filter = std::move(filter);
    v.rule = std::move(rule);
    v.detail = std::move(detail);
    return v;
  }
};

// What the proxy does after running a stage.
struct Decision {
  enum class Action { proceed, tempfail, reject, drop };
  Action action = Action::proceed;
  smtp::Reply reply;   // for tempfail/reject/drop
  std::string filter;  // who decided (empty for proceed)
  std::string rule;
  double total_score = 0;
  std::vector<Contribution> contributions;                       // the whole score sheet so far
  std::vector<std::pair<std::string, std::string>> add_headers;  // at the data stage
  bool dry_run = false;  // a verdict was computed but not enforced
  // With dry_run: what would have been done, and with which reply (for the log).
  Action would_action = Action::proceed;
  smtp::Reply would_reply;
  // A connection-level verdict is held (it will be enforced at RCPT).
  bool held = false;
};

const char* action_name(Decision::Action action);
const char* verdict_kind_name(Verdict::Kind kind);

}  // namespace mxgate::filters

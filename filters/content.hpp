// The content filter: admins' RE2 patterns over what the message says (headers, decoded
// text, URLs, attachment names, MIME findings) and composite rules over their hits.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "filters/mime.hpp"
#include "filters/pipeline.hpp"
#include "policy/config.hpp"
#include "policy/expression.hpp"

namespace re2 {
class RE2;
}

namespace mxgate::metrics {
class Counter;
}

namespace mxgate::filters {

// Where a content rule looks (`where:`). Each target is a sequence of fields or lines,
// and a pattern is matched against each one on its own: `^` and `$` anchor to a line.
enum class ContentTarget {
  header,  // header:<Name>: the unfolded value of every occurrence
  subject,
  from,
  to,
  all_headers,  // every top-level field as "Name: value" (alias: headers)
  body,         // decoded text of text/plain and text/html parts (HTML as rendered text)
  raw,          // undecoded body lines
  message,      // undecoded lines of the whole message, header included
  url,          // every URL in text (bare) and HTML (href)
  attachment,   // file names and declared content types of non-text or named parts
  mime,         // one line per MIME finding: "bad_base64", "missing_boundary", ...
};
struct TargetKey {
  ContentTarget target = ContentTarget::body;
  std::string header;  // lower-case field name, for ContentTarget::header
  bool operator==(const TargetKey&) const = default;
};
std::optional<TargetKey> parse_content_target(std::string_view where);
std::string target_name(const TargetKey& key);

struct ContentOptions {
  // content_limits.max_line_scan: a longer line or field is matched in windows of this
  // many bytes that overlap by min(256, max_line_scan / 2), so a match up to that long is
  // found wherever it sits and the DFA never runs over a megabyte-long line at once.
  std::size_t max_line_scan = 4096;
  // content_limits.re2_max_mem: RE2's memory budget per compiled set (program + DFA
  // cache). A target whose patterns do not fit is split over several sets.
  std::int64_t re2_max_mem = 64ll << 20;
  // Bytes of text scanned per target and message; a text that goes past it is cut after
  // its last whole line within it, the rest of the target is not scanned, and the
  // message is marked incomplete. Default: twice limits.max_message_size.
  std::uint64_t max_scan_bytes = 50ull << 20;
  mime::Limits mime;
};

// The options the policy asks for (limits.max_message_size, content_limits).
ContentOptions content_options(const policy::Config& config);

struct ContentScanResult {
  std::vector<bool> hits;  // indexed like ContentScanner::rules()
  std::uint64_t bytes_scanned = 0;
  bool incomplete = false;  // a scan budget was reached, or RE2 ran out of memory
};

// All rules compiled once per policy generation: per target, an RE2 per pattern and the
// literals each needs (FilteredRE2), and RE2::Sets of them all. A scan looks for the
// literals first and matches only the patterns that can match, where they can (see
// content.cpp). Immutable after build(); scan() is safe from any number of threads (its
// buffers are per thread).
class ContentScanner {
 public:
  struct Rule {
    policy::ContentRule config;
    TargetKey target;
    std::optional<policy::Expression> expression;  // composite rules
    std::vector<std::size_t> operands;             // rule indices of expression names
    bool enabled = true;  // false: it failed to compile (reported by build)
  };

  // Rules that cannot be used (a pattern RE2 rejects, a composite naming an unknown
  // rule or forming a cycle) are disabled and described in `errors`; the rest work.
  static std::shared_ptr<const ContentScanner> build(const std::vector<policy::ContentRule>& rules,
                                                     const ContentOptions& options,
                                                     std::vector<std::string>& errors);
  ~ContentScanner();

  ContentScanResult scan(std::string_view message) const;
  ContentScanResult scan(const mime::Message& parsed, std::string_view message) const;

  const std::vector<Rule>& rules() const { return rules_; }
  const ContentOptions& options() const { return options_; }
  std::size_t set_count() const;  // compiled RE2::Sets over all targets

  struct Group;

 private:
  ContentScanner() = default;
  void scan_group(const Group& group, const mime::Message& parsed, std::string_view message,
                  ContentScanResult& result) const;

  std::vector<Rule> rules_;
  std::vector<std::unique_ptr<Group>> groups_;
  std::vector<std::size_t> composite_order_;  // composites, operands before users
  ContentOptions options_;
};

// The parsed message for `message`: parsed once per thread even when the content and
// the URL-list filters both ask (a one-entry memo keyed by address, size and hash; both
// pass the limits of content_options(), so the memo need not key on them).
std::shared_ptr<const mime::Message> parse_message_shared(std::string_view message,
                                                          const mime::Limits& limits);

class ContentFilter final : public Filter {
 public:
  // Never throws for bad rules: those that cannot be used are logged and left out.
  ContentFilter(const std::vector<policy::ContentRule>& rules, const ContentOptions& options);
  ~ContentFilter() override;

  const std::string& name() const override { return name_; }
  bool wants(Stage stage) const override { return stage == Stage::data; }
  bool may_wait(Stage) const override { return false; }
  std::unique_ptr<FilterInstance> open(Services& services) const override;

  // The verdict for one message (what on_stage(data) returns); pure, for tests.
  Verdict judge(std::string_view message) const;
  const ContentScanner& scanner() const { return *scanner_; }

 private:
  std::string name_ = "content";
  std::shared_ptr<const ContentScanner> scanner_;
  std::vector<metrics::Counter*> hit_counters_;  // per rule
  metrics::Counter* incomplete_ = nullptr;
};

}  // namespace mxgate::filters

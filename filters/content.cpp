// Content scanning. Each target's patterns are compiled once per policy generation: an
// RE2 each (inside a FilteredRE2, which also gives the literals, "atoms", that a pattern
// cannot match without) and RE2::Sets of them all. A message's text is first searched
// for the atoms (LiteralScanner, literal_scan.hpp); only patterns whose atoms all occur
// are then matched, and only on the lines that hold one of their atoms, each by its own
// RE2, or by the sets when many are left.
// Why not one RE2::Set pass per line, as before: with hundreds of SpamAssassin-like
// patterns (gaps, counted classes, alternations) the set's DFA has so many states that
// nearly every byte is a cache miss (~16 ns per byte, bench/README.md), and ordinary
// mail paid that for patterns it could never match.
#include "filters/content.hpp"

#include <fmt/format.h>
#include <re2/filtered_re2.h>
#include <re2/re2.h>
#include <re2/set.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>

#include "filters/literal_scan.hpp"
#include "filters/metrics.hpp"
#include "policy/names.hpp"

namespace mxgate::filters {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

struct TargetName {
  std::string_view name;
  ContentTarget target;
};
constexpr TargetName kTargets[] = {
    {"subject", ContentTarget::subject},
    {"from", ContentTarget::from},
    {"to", ContentTarget::to},
    {"all-headers", ContentTarget::all_headers},
    {"headers", ContentTarget::all_headers},
    {"body", ContentTarget::body},
    {"raw", ContentTarget::raw},
    {"message", ContentTarget::message},
    {"url", ContentTarget::url},
    {"attachment", ContentTarget::attachment},
    {"mime", ContentTarget::mime},
};

bool text_target(ContentTarget target) {
  return target == ContentTarget::body || target == ContentTarget::raw ||
         target == ContentTarget::message;
}

// How a group's text is cut into the pieces one pattern is matched against.
enum class Unit {
  field,  // each field on its own: header values, URLs, names, findings
  line,   // each line of a text on its own: what a multi-line match would change
  run,    // runs of lines in one match, the patterns compiled never_nl and (?m)
};

// Patterns that a match over several lines at once would change (never_nl and (?m)
// keep '^', '$' and every class on one line, but not these): \A and \z (text anchors,
// where a line scan has line anchors), \C (any byte, '\n' too) and flag groups that
// turn multi-line mode off. Textual and cautious: \Q..\E quoting still counts.
bool needs_line_scan(std::string_view pattern) {
  for (std::size_t i = 0; i + 1 < pattern.size(); ++i) {
    if (pattern[i] == '\\') {
      const char next = pattern[i + 1];
      if (next == 'A' || next == 'z' || next == 'C') return true;
      ++i;
      continue;
    }
    if (pattern[i] == '(' && pattern[i + 1] == '?') {
      bool negated = false;
      for (std::size_t j = i + 2; j < pattern.size(); ++j) {
        const char flag = pattern[j];
        if (flag == '-') {
          negated = true;
        } else if (flag == 'm' && negated) {
          return true;
        } else if (flag != 'i' && flag != 'm' && flag != 's' && flag != 'U') {
          break;
        }
      }
    }
  }
  return false;
}

}  // namespace

std::optional<TargetKey> parse_content_target(std::string_view where) {
  constexpr std::string_view kHeaderPrefix = "header:";
  if (where.starts_with(kHeaderPrefix)) {
    const std::string_view name = where.substr(kHeaderPrefix.size());
    if (name.empty()) return std::nullopt;
    return TargetKey{ContentTarget::header, policy::ascii_lower(name)};
  }
  for (const auto& entry : kTargets)
    if (entry.name == where) return TargetKey{entry.target, {}};
  return std::nullopt;
}

std::string target_name(const TargetKey& key) {
  if (key.target == ContentTarget::header) return "header:" + key.header;
  for (const auto& entry : kTargets)
    if (entry.target == key.target) return std::string(entry.name);
  return "?";
}

struct CompiledSet {
  std::unique_ptr<RE2::Set> set;
  std::vector<std::size_t> rule_of;  // set index -> rule index
};

struct ContentScanner::Group {
  TargetKey key;
  Unit unit = Unit::field;
  // Patterns as compiled: "(?m)" before each one for Unit::run.
  std::string prefix;
  RE2::Options options;
  re2::FilteredRE2 filter{kMinAtomLength};
  std::vector<std::size_t> rule_of;  // filter id -> rule index
  std::vector<int> unfiltered;       // filter ids without atoms (sorted): always candidates
  LiteralScanner atoms;
  std::vector<CompiledSet> sets;  // the same patterns, for when many pass the atoms

  // Shorter atoms say little: FilteredRE2 leaves them out, so the patterns needing only
  // them are matched against every text.
  static constexpr int kMinAtomLength = 3;
};

namespace {

RE2::Options set_options(const ContentOptions& options) {
  RE2::Options re2_options;
  re2_options.set_log_errors(false);
  re2_options.set_max_mem(options.re2_max_mem);
  return re2_options;
}

// Compiles `members` into one set, or, when RE2's memory budget is too small for them,
// into halves (recursively). A single pattern over budget is disabled and reported.
void compile_sets(const std::vector<std::size_t>& members, const ContentScanner::Group& group,
                  std::vector<ContentScanner::Rule>& rules, const ContentOptions& options,
                  std::vector<CompiledSet>& out, std::vector<std::string>& errors) {
  if (members.empty()) return;
  CompiledSet compiled;
  compiled.set = std::make_unique<RE2::Set>(group.options, RE2::UNANCHORED);
  for (std::size_t index : members) {
    std::string error;
    if (compiled.set->Add(group.prefix + rules[index].config.pattern, &error) < 0) {
      rules[index].enabled = false;
      errors.push_back(
          fmt::format("content rule '{}': invalid pattern: {}", rules[index].config.name, error));
      continue;
    }
    compiled.rule_of.push_back(index);
  }
  if (compiled.rule_of.empty()) return;
  if (compiled.set->Compile()) {
    out.push_back(std::move(compiled));
    return;
  }
  if (compiled.rule_of.size() == 1) {
    auto& rule = rules[compiled.rule_of.front()];
    rule.enabled = false;
    errors.push_back(
        fmt::format("content rule '{}': the pattern needs more than "
                    "content_limits.re2_max_mem ({} bytes)",
                    rule.config.name, options.re2_max_mem));
    return;
  }
  const std::size_t half = compiled.rule_of.size() / 2;
  std::vector<std::size_t> first(compiled.rule_of.begin(), compiled.rule_of.begin() + half);
  std::vector<std::size_t> second(compiled.rule_of.begin() + half, compiled.rule_of.end());
  compile_sets(first, group, rules, options, out, errors);
  compile_sets(second, group, rules, options, out, errors);
}

// Compiles one group: each pattern into the filter (which reports the invalid and the
// oversized), then the atoms, then the sets of the patterns that compiled.
void compile_group(ContentScanner::Group& group, const std::vector<std::size_t>& members,
                   std::vector<ContentScanner::Rule>& rules, const ContentOptions& options,
                   std::vector<std::string>& errors) {
  std::vector<std::size_t> compiled;
  for (std::size_t index : members) {
    auto& rule = rules[index];
    int id = 0;
    const RE2::ErrorCode code =
        group.filter.Add(group.prefix + rule.config.pattern, group.options, &id);
    if (code == RE2::NoError) {
      group.rule_of.push_back(index);
      compiled.push_back(index);
      continue;
    }
    rule.enabled = false;
    if (code == RE2::ErrorPatternTooLarge) {
      errors.push_back(
          fmt::format("content rule '{}': the pattern needs more than "
                      "content_limits.re2_max_mem ({} bytes)",
                      rule.config.name, options.re2_max_mem));
    } else {
      // RE2's own words for it, on the pattern as the admin wrote it.
      const RE2 plain(rule.config.pattern, set_options(options));
      errors.push_back(
          fmt::format("content rule '{}': invalid pattern: {}", rule.config.name, plain.error()));
    }
  }
  if (compiled.empty()) return;
  std::vector<std::string> atoms;
  group.filter.Compile(&atoms);
  group.atoms.build(atoms);
  group.filter.AllPotentials({}, &group.unfiltered);
  std::sort(group.unfiltered.begin(), group.unfiltered.end());
  compile_sets(compiled, group, rules, options, group.sets, errors);
}

// Per-thread buffers of a scan, kept between messages so that scanning does not allocate
// once they have grown to the largest message seen.
struct Scratch {
  std::string storage;     // "Name: value" header lines
  std::string normalised;  // texts without the '\r' of their line ends
  struct Span {
    std::size_t unit, begin, size;
  };
  std::vector<Span> spans;  // units that live in storage or normalised
  std::vector<std::string_view> units;
  std::vector<std::string_view> pieces;  // what each pattern is matched against
  std::vector<std::uint8_t> found;       // per atom
  std::vector<std::size_t> starts;       // where found atoms start, unit after unit
  std::vector<std::size_t> unit_starts;  // end of each unit's entries in `starts`
  std::vector<int> found_atoms;
  std::vector<int> candidates;  // filter ids
  std::vector<int> filtered, unfiltered;
  std::vector<int> matched;
};

Scratch& scratch() {
  thread_local Scratch buffers;
  return buffers;
}

// A text as a line scan sees it, for Unit::run: a '\r' before a '\n' or at the end of
// the text goes, as the line scan strips it from each line. (Atoms are looked for in the
// text as it is: an atom has no '\n', so what a line holds after the cut, it held before.)
bool needs_normalising(std::string_view text) {
  return std::memchr(text.data(), '\r', text.size()) != nullptr;
}

void append_normalised(std::string_view text, std::string& storage) {
  while (!text.empty()) {
    const void* found = std::memchr(text.data(), '\r', text.size());
    if (!found) {
      storage.append(text);
      return;
    }
    const auto at = static_cast<std::size_t>(static_cast<const char*>(found) - text.data());
    storage.append(text.data(), at);
    if (at + 1 < text.size() && text[at + 1] != '\n') storage += '\r';
    text.remove_prefix(at + 1);
  }
}

// The units of one target: fields for field targets, texts for text targets. Views into
// the message, into `parsed` or into scratch storage.
void collect_units(const ContentScanner::Group& group, const mime::Message& parsed,
                   std::string_view message, Scratch& buffers) {
  auto& units = buffers.units;
  auto& storage = buffers.storage;
  auto& spans = buffers.spans;
  units.clear();
  storage.clear();
  spans.clear();
  auto headers_named = [&](std::string_view name) {
    for (const auto& field : parsed.headers)
      if (iequals(field.name, name)) units.push_back(field.value);
  };
  switch (group.key.target) {
    case ContentTarget::header:
      headers_named(group.key.header);
      break;
    case ContentTarget::subject:
      headers_named("subject");
      break;
    case ContentTarget::from:
      headers_named("from");
      break;
    case ContentTarget::to:
      headers_named("to");
      break;
    case ContentTarget::all_headers:
      // Views into storage are taken once it has stopped growing, at the end.
      for (const auto& field : parsed.headers) {
        const std::size_t begin = storage.size();
        storage += field.name;
        storage += ": ";
        storage += field.value;
        spans.push_back({units.size(), begin, storage.size() - begin});
        units.emplace_back();
      }
      break;
    case ContentTarget::body:
      for (const auto& part : parsed.texts) units.push_back(part.text);
      break;
    case ContentTarget::raw:
      units.push_back(message.substr(std::min(parsed.body_offset, message.size())));
      break;
    case ContentTarget::message:
      units.push_back(message);
      break;
    case ContentTarget::url:
      for (const auto& url : parsed.urls) units.push_back(url);
      break;
    case ContentTarget::attachment:
      for (const auto& attachment : parsed.attachments) {
        if (!attachment.file_name.empty()) units.push_back(attachment.file_name);
        units.push_back(attachment.content_type);
      }
      break;
    case ContentTarget::mime:
      for (std::size_t i = 0; i < mime::kFindingCount; ++i)
        if (parsed.finding_counts[i])
          units.push_back(mime::finding_name(static_cast<mime::Finding>(i)));
      break;
  }
  for (const auto& span : spans)
    units[span.unit] = std::string_view(storage).substr(span.begin, span.size);
}

// A line or field as the pieces a pattern is matched against (appended to `pieces`):
// when longer than `window`, windows that overlap by `overlap`, so that a match up to
// that long is found wherever it sits.
void add_windows(std::string_view line, std::size_t window, std::size_t overlap,
                 std::vector<std::string_view>& pieces) {
  if (line.size() <= window) {
    pieces.push_back(line);
    return;
  }
  for (std::size_t start = 0; start < line.size(); start += window - overlap) {
    pieces.push_back(line.substr(start, window));
    if (start + window >= line.size()) break;
  }
}

// A whole unit as pieces: the field; each line (Unit::line); runs of lines up to the
// next one longer than `window` (Unit::run, `text` normalised).
void add_pieces(Unit unit, std::string_view text, std::size_t window, std::size_t overlap,
                std::vector<std::string_view>& pieces) {
  if (unit == Unit::field) return add_windows(text, window, overlap, pieces);
  // Lines end at '\n'; a text's last '\n' ends its last line, it does not start one.
  if (unit == Unit::run && text.size() <= window) {
    if (text.empty()) return;
    if (text.back() == '\n') text.remove_suffix(1);
    pieces.push_back(text);
    return;
  }
  std::size_t run_start = 0, position = 0;
  bool in_run = false;
  auto close_run = [&](std::size_t end) {
    if (in_run) pieces.push_back(text.substr(run_start, end - run_start));
    in_run = false;
  };
  while (position < text.size()) {
    const void* found = std::memchr(text.data() + position, '\n', text.size() - position);
    const std::size_t end =
        found ? static_cast<std::size_t>(static_cast<const char*>(found) - text.data())
              : text.size();
    std::string_view line = text.substr(position, end - position);
    if (unit == Unit::line) {
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      add_windows(line, window, overlap, pieces);
    } else if (line.size() > window) {
      close_run(position == 0 ? 0 : position - 1);
      add_windows(line, window, overlap, pieces);
    } else if (!in_run) {
      run_start = position;
      in_run = true;
    }
    position = end + 1;
  }
  if (unit == Unit::run) close_run(text.back() == '\n' ? text.size() - 1 : text.size());
}

// The lines of `text` that hold the atom starts [begin, end) as pieces, each once, in
// order, without the '\r' of its line end.
void add_lines_at(std::string_view text, std::vector<std::size_t>::iterator begin,
                  std::vector<std::size_t>::iterator end, std::size_t window, std::size_t overlap,
                  std::vector<std::string_view>& pieces) {
  // Atoms of one position were appended in bucket order, not position order.
  std::sort(begin, end);
  std::size_t line_end = 0;
  bool any = false;
  for (auto at = begin; at != end; ++at) {
    if (any && *at <= line_end) continue;
    const std::size_t before = *at == 0 ? std::string_view::npos : text.rfind('\n', *at - 1);
    const std::size_t line_begin = before == std::string_view::npos ? 0 : before + 1;
    line_end = std::min(text.find('\n', *at), text.size());
    any = true;
    std::string_view line = text.substr(line_begin, line_end - line_begin);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    add_windows(line, window, overlap, pieces);
  }
}

// Unit::run texts without the '\r' of their line ends, in `buffers.normalised`.
void normalise(Scratch& buffers) {
  auto& normalised = buffers.normalised;
  auto& spans = buffers.spans;
  normalised.clear();
  spans.clear();
  for (std::size_t i = 0; i < buffers.units.size(); ++i) {
    if (!needs_normalising(buffers.units[i])) continue;
    const std::size_t begin = normalised.size();
    append_normalised(buffers.units[i], normalised);
    spans.push_back({i, begin, normalised.size() - begin});
  }
  for (const auto& span : spans)
    buffers.units[span.unit] = std::string_view(normalised).substr(span.begin, span.size);
}

}  // namespace

ContentOptions content_options(const policy::Config& config) {
  ContentOptions options;
  options.max_line_scan = config.content_limits.max_line_scan;
  options.re2_max_mem = static_cast<std::int64_t>(config.content_limits.re2_max_mem);
  options.max_scan_bytes = 2 * config.limits.max_message_size;
  // Decoded text cannot be larger than the message (base64 and QP only shrink it).
  options.mime.max_decoded = static_cast<std::size_t>(config.limits.max_message_size);
  return options;
}

ContentScanner::~ContentScanner() = default;

std::shared_ptr<const ContentScanner> ContentScanner::build(
    const std::vector<policy::ContentRule>& rules, const ContentOptions& options,
    std::vector<std::string>& errors) {
  std::shared_ptr<ContentScanner> scanner(new ContentScanner());
  scanner->options_ = options;
  if (scanner->options_.max_line_scan < 64) scanner->options_.max_line_scan = 64;
  std::map<std::string, std::size_t> by_name;
  for (const auto& config : rules) {
    Rule rule;
    rule.config = config;
    if (auto key = parse_content_target(config.where)) {
      rule.target = *key;
    } else {
      rule.enabled = false;
      errors.push_back(
          fmt::format("content rule '{}': unknown target '{}'", config.name, config.where));
    }
    if (!config.expression.empty()) {
      std::string error;
      rule.expression = policy::Expression::parse(config.expression, error);
      if (!rule.expression) {
        rule.enabled = false;
        errors.push_back(fmt::format("content rule '{}': expression: {}", config.name, error));
      }
    }
    by_name.emplace(config.name, scanner->rules_.size());
    scanner->rules_.push_back(std::move(rule));
  }

  // Pattern rules, grouped by target and unit in order of first appearance.
  struct Members {
    TargetKey key;
    Unit unit;
    std::vector<std::size_t> rules;
  };
  std::vector<Members> members;
  for (std::size_t i = 0; i < scanner->rules_.size(); ++i) {
    const Rule& rule = scanner->rules_[i];
    if (!rule.enabled || rule.expression) continue;
    Unit unit = Unit::field;
    if (text_target(rule.target.target))
      unit = needs_line_scan(rule.config.pattern) ? Unit::line : Unit::run;
    auto found = std::find_if(members.begin(), members.end(), [&](const Members& entry) {
      return entry.key == rule.target && entry.unit == unit;
    });
    if (found == members.end()) {
      members.push_back({rule.target, unit, {}});
      found = members.end() - 1;
    }
    found->rules.push_back(i);
  }
  for (auto& entry : members) {
    auto group = std::make_unique<Group>();
    group->key = entry.key;
    group->unit = entry.unit;
    group->options = set_options(scanner->options_);
    if (entry.unit == Unit::run) {
      // A run of lines is matched at once, as its lines were one by one: '^' and '$' at
      // each line, and nothing (not \s, not [^x]) matching the '\n' between two.
      group->prefix = "(?m)";
      group->options.set_never_nl(true);
    }
    compile_group(*group, entry.rules, scanner->rules_, scanner->options_, errors);
    if (!group->sets.empty()) scanner->groups_.push_back(std::move(group));
  }

  // Composites: resolve names, then order them so operands come first (depth-first,
  // a rule on the current path again is a cycle).
  for (auto& rule : scanner->rules_) {
    if (!rule.expression || !rule.enabled) continue;
    for (const auto& name : rule.expression->names()) {
      auto found = by_name.find(name);
      if (found == by_name.end()) {
        rule.enabled = false;
        errors.push_back(fmt::format("content rule '{}': expression names unknown rule '{}'",
                                     rule.config.name, name));
        break;
      }
      rule.operands.push_back(found->second);
    }
  }
  enum class Mark { none, visiting, done };
  std::vector<Mark> marks(scanner->rules_.size(), Mark::none);
  std::function<bool(std::size_t)> visit = [&](std::size_t index) -> bool {
    Rule& rule = scanner->rules_[index];
    if (marks[index] == Mark::done) return rule.enabled;
    if (marks[index] == Mark::visiting) return false;
    marks[index] = Mark::visiting;
    if (rule.expression && rule.enabled) {
      for (std::size_t operand : rule.operands) {
        if (!visit(operand)) {
          if (rule.enabled)
            errors.push_back(fmt::format(
                "content rule '{}': expression depends on '{}', which is disabled or part of a "
                "cycle",
                rule.config.name, scanner->rules_[operand].config.name));
          rule.enabled = false;
        }
      }
      if (rule.enabled) scanner->composite_order_.push_back(index);
    }
    marks[index] = Mark::done;
    return rule.enabled;
  };
  for (std::size_t i = 0; i < scanner->rules_.size(); ++i) visit(i);
  return scanner;
}

std::size_t ContentScanner::set_count() const {
  std::size_t count = 0;
  for (const auto& group : groups_) count += group->sets.size();
  return count;
}

void ContentScanner::scan_group(const Group& group, const mime::Message& parsed,
                                std::string_view message, ContentScanResult& result) const {
  Scratch& buffers = scratch();
  collect_units(group, parsed, message, buffers);
  auto& units = buffers.units;

  // The budget: units in order while they fit; a text that does not is cut after its
  // last whole line that does, a field is left out. Then the scan stops.
  std::uint64_t budget = options_.max_scan_bytes;
  for (std::size_t i = 0; i < units.size(); ++i) {
    std::string_view& unit = units[i];
    if (unit.size() <= budget) {
      budget -= unit.size();
      result.bytes_scanned += unit.size();
      continue;
    }
    result.incomplete = true;
    if (group.unit == Unit::field) {
      units.resize(i);
    } else {
      const std::size_t cut = unit.substr(0, static_cast<std::size_t>(budget) + 1).rfind('\n');
      unit = unit.substr(0, cut == std::string_view::npos ? 0 : cut);
      result.bytes_scanned += unit.size();
      units.resize(unit.empty() ? i : i + 1);
    }
    break;
  }

  // Which patterns can match at all: those whose atoms all occur somewhere.
  auto& found = buffers.found;
  found.assign(group.atoms.size(), 0);
  bool located = true;  // every found atom's occurrences are in `starts`
  auto& starts = buffers.starts;
  auto& unit_starts = buffers.unit_starts;
  starts.clear();
  unit_starts.clear();
  for (std::string_view unit : units) {
    if (group.atoms.size() > 0) located &= group.atoms.scan(unit, found, &starts);
    unit_starts.push_back(starts.size());
  }
  auto& found_atoms = buffers.found_atoms;
  found_atoms = group.atoms.always();
  for (std::size_t i = 0; i < found.size(); ++i)
    if (found[i]) found_atoms.push_back(static_cast<int>(i));
  auto& candidates = buffers.candidates;
  candidates.clear();
  if (!group.rule_of.empty()) group.filter.AllPotentials(found_atoms, &candidates);
  if (candidates.empty() || units.empty()) return;

  const std::size_t window = options_.max_line_scan;
  const std::size_t overlap = std::min<std::size_t>(256, window / 2);
  auto& pieces = buffers.pieces;
  pieces.clear();
  auto& matched = buffers.matched;
  // A few patterns: each one's own RE2, which stops at its first match. Many (a message
  // written to hit the atoms of every rule): the sets, one pass for them all, so that the
  // cost stays that of the sets whatever the message.
  auto confirm = [&](const std::vector<int>& ids) {
    constexpr std::size_t kMaxSingle = 8;
    if (ids.size() <= kMaxSingle) {
      for (int id : ids) {
        const std::size_t rule = group.rule_of[static_cast<std::size_t>(id)];
        if (!rules_[rule].enabled || result.hits[rule]) continue;
        const RE2& regex = group.filter.GetRE2(id);
        for (std::string_view piece : pieces) {
          if (regex.Match(piece, 0, piece.size(), RE2::UNANCHORED, nullptr, 0)) {
            result.hits[rule] = true;
            break;
          }
        }
      }
      return;
    }
    for (std::string_view piece : pieces) {
      for (const auto& compiled : group.sets) {
        matched.clear();
        RE2::Set::ErrorInfo info{RE2::Set::kNoError};
        if (compiled.set->Match(piece, &matched, &info)) {
          for (int index : matched)
            result.hits[compiled.rule_of[static_cast<std::size_t>(index)]] = true;
        } else if (info.kind != RE2::Set::kNoError) {
          result.incomplete = true;  // DFA out of memory: raise re2_max_mem
        }
      }
    }
  };

  // A pattern with atoms can only match on a line (a field) that holds one of them (an
  // atom has no '\n'), and those are few: such candidates are matched there only. The
  // others, and all when an atom was found without a place, over the whole text.
  auto& filtered = buffers.filtered;
  auto& unfiltered = buffers.unfiltered;
  filtered.clear();
  unfiltered.clear();
  for (int id : candidates)
    (std::binary_search(group.unfiltered.begin(), group.unfiltered.end(), id) ? unfiltered
                                                                              : filtered)
        .push_back(id);
  if (located && !filtered.empty()) {
    std::size_t first = 0;
    for (std::size_t u = 0; u < units.size(); ++u) {
      const auto begin = starts.begin() + static_cast<std::ptrdiff_t>(first);
      const auto end = starts.begin() + static_cast<std::ptrdiff_t>(unit_starts[u]);
      first = unit_starts[u];
      if (begin == end) continue;
      if (group.unit == Unit::field) {
        add_windows(units[u], window, overlap, pieces);
      } else {
        add_lines_at(units[u], begin, end, window, overlap, pieces);
      }
    }
    confirm(filtered);
    if (unfiltered.empty()) return;
    pieces.clear();
  } else {
    unfiltered.swap(candidates);  // all of them, over the whole text
  }
  if (group.unit == Unit::run) normalise(buffers);
  for (std::string_view unit : units) add_pieces(group.unit, unit, window, overlap, pieces);
  confirm(unfiltered);
}

ContentScanResult ContentScanner::scan(const mime::Message& parsed,
                                       std::string_view message) const {
  ContentScanResult result;
  result.hits.assign(rules_.size(), false);
  for (const auto& group : groups_) scan_group(*group, parsed, message, result);
  for (std::size_t index : composite_order_) {
    const Rule& rule = rules_[index];
    result.hits[index] = rule.expression->evaluate(
        [&](std::size_t operand) { return result.hits[rule.operands[operand]]; });
  }
  return result;
}

ContentScanResult ContentScanner::scan(std::string_view message) const {
  const mime::Message parsed = mime::parse(message, options_.mime);
  return scan(parsed, message);
}

std::shared_ptr<const mime::Message> parse_message_shared(std::string_view message,
                                                          const mime::Limits& limits) {
  struct Memo {
    const char* data = nullptr;
    std::size_t size = 0;
    std::size_t hash = 0;
    std::shared_ptr<const mime::Message> parsed;
  };
  thread_local Memo memo;
  const std::size_t hash = std::hash<std::string_view>{}(message);
  if (memo.parsed && memo.data == message.data() && memo.size == message.size() &&
      memo.hash == hash)
    return memo.parsed;
  auto parsed = std::make_shared<const mime::Message>(mime::parse(message, limits));
  memo = {message.data(), message.size(), hash, parsed};
  return parsed;
}

// --- the filter ---------------------------------------------------------------------

namespace {

class ContentInstance final : public FilterInstance {
 public:
  explicit ContentInstance(const ContentFilter& filter) : filter_(filter) {}

  boost::asio::awaitable<Verdict> on_stage(Stage stage, const SessionContext& context) override {
    if (stage != Stage::data || !context.message) co_return Verdict::next();
    co_return filter_.judge(*context.message);
  }

 private:
  const ContentFilter& filter_;
};

}  // namespace

ContentFilter::ContentFilter(const std::vector<policy::ContentRule>& rules,
                             const ContentOptions& options) {
  std::vector<std::string> errors;
  scanner_ = ContentScanner::build(rules, options, errors);
  // policy/ validated every pattern with RE2 already; what fails here is a budget, so
  // the daemon keeps running with the rules that work and says which do not.
  for (const auto& error : errors) spdlog::error("content: {}", error);
  auto& registry = metrics::Registry::global();
  for (const auto& rule : scanner_->rules())
    hit_counters_.push_back(&registry.counter("mxgate_content_rule_hits_total",
                                              "Messages that matched a content rule",
                                              {{"rule", rule.config.name}}));
  incomplete_ = &registry.counter("mxgate_content_scans_incomplete_total",
                                  "Messages only partly scanned (a scan budget was reached)");
  spdlog::info("content: {} rules in {} RE2 sets", scanner_->rules().size(), scanner_->set_count());
}

ContentFilter::~ContentFilter() = default;

std::unique_ptr<FilterInstance> ContentFilter::open(Services&) const {
  return std::make_unique<ContentInstance>(*this);
}

Verdict ContentFilter::judge(std::string_view message) const {
  const auto parsed = parse_message_shared(message, scanner_->options().mime);
  const ContentScanResult result = scanner_->scan(*parsed, message);
  if (result.incomplete) incomplete_->inc();
  Verdict verdict;
  const auto& rules = scanner_->rules();
  for (std::size_t i = 0; i < rules.size(); ++i) {
    if (!result.hits[i]) continue;
    const auto& rule = rules[i];
    hit_counters_[i]->inc();
    std::string detail =
        rule.expression ? "expression " + rule.config.expression : target_name(rule.target);
    if (!rule.config.description.empty()) detail += ": " + rule.config.description;
    const bool dry_run = rule.config.action == policy::RuleAction::log;
    using policy::RuleAction;
    if (rule.config.action == RuleAction::score || dry_run) {
      verdict.contributions.push_back(
          {name_, rule.config.name, rule.config.score, detail, "data", dry_run, ""});
      continue;
    }
    if (rule.config.action == RuleAction::tag) {
      verdict.contributions.push_back(
          {name_, rule.config.name, 0, detail + " (tag)", "data", false, ""});
      verdict.tags.push_back(rule.config.name);
      continue;
    }
    // Decisive actions: the first hit in config order decides, as Postfix restrictions.
    verdict.contributions.push_back({name_, rule.config.name, 0, detail, "data", false, ""});
    if (verdict.kind != Verdict::Kind::next) continue;
    verdict.filter = name_;
    verdict.rule = rule.config.name;
    verdict.detail = detail;
    switch (rule.config.action) {
      case RuleAction::reject:
        verdict.kind = Verdict::Kind::reject;
        verdict.reply = smtp::Reply(550, "5.7.1", "Message content rejected");
        break;
      case RuleAction::tempfail:
        verdict.kind = Verdict::Kind::tempfail;
        verdict.reply = smtp::Reply(451, "4.7.1", "Message content deferred, try again later");
        break;
      case RuleAction::drop:
        verdict.kind = Verdict::Kind::drop;
        verdict.reply = smtp::Reply(421, "4.7.0", "Message content rejected, closing connection");
        break;
      case RuleAction::accept:
        verdict.kind = Verdict::Kind::accept;
        break;
      default:
        break;
    }
  }
  return verdict;
}

}  // namespace mxgate::filters

// Content scanning. Each target's patterns are compiled once per policy generation: an
// RE2 each (inside a FilteredRE2, which also gives the literals, "atoms", that a pattern
// cannot match without) and RE2::Sets of them all. A message's text is first searched
// for the atoms (AtomScanner: a hashed 3-byte window per position, 8 at a time with
// AVX2); only patterns whose atoms all occur are then matched, and only on the lines
// that hold one of their atoms, each by its own RE2, or by the sets when many are left.
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
#include <array>
#include <bit>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>

#include "filters/metrics.hpp"
#include "policy/names.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MXGATE_ATOM_SCAN_AVX2 1
#endif

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

char lower_char(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

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

// Which of a group's atoms occur in a text, and where. Atoms are lower-case (FilteredRE2
// gives them so, to be found case-insensitively). Each atom is keyed on one of its 3-byte
// grams, the rarest in text and least shared with other atoms; every position of the text
// is hashed the same way (ASCII letters folded by setting bit 5) and looked up in a bit
// table (8 KiB for 1,000 atoms, stays in L1): a load, a multiply and a bit test per byte,
// or per 8 bytes with AVX2. Only hits compare atoms. (3 bytes, not 4: atoms as short as
// "kin" or "x14" are common, and a second table for them would double the work per byte.)
// What cannot be decided this way is reported found: atoms with non-ASCII bytes (RE2's
// case folding is Unicode's), and atoms with 'k' or 's' when the text holds U+212A KELVIN
// SIGN or U+017F LONG S, the only non-ASCII characters (?i) matches to ASCII letters.
class AtomScanner {
 public:
  void build(const std::vector<std::string>& atoms);
  // Sets found[i] for every atom i that occurs in `text` or cannot be ruled out, and
  // appends to `starts` (when given) where each occurrence starts. Returns false when
  // it marked atoms found that `starts` cannot point at (see below).
  bool scan(std::string_view text, std::vector<std::uint8_t>& found,
            std::vector<std::size_t>* starts) const;
  // Atoms reported found whatever the text: `starts` cannot point at them either.
  const std::vector<int>& always() const { return always_; }
  std::size_t size() const { return atoms_.size(); }

 private:
  struct Entry {
    std::uint32_t gram;    // folded bytes, little-endian
    std::uint32_t atom;    // index into atoms_
    std::uint32_t offset;  // where the gram sits in the atom
    std::uint32_t size;    // of the atom
    std::uint32_t padded;  // where the atom starts in padded_
  };
  // Table size: about 64 bits per atom, so that ~1.5 % of a text's positions hit by
  // chance (16 bits, 8 KiB, for 1,000 atoms), at most 2^18 bits (32 KiB, still in L1 or
  // L2). Buckets: 16 table bits each.
  static constexpr int kBucketShift = 4;
  int hash_bits_ = 16;
  std::uint32_t hash(std::uint32_t gram) const { return (gram * 0x9E3779B1u) >> (32 - hash_bits_); }
  void verify(std::uint32_t hashed, std::uint32_t gram, std::string_view text, std::size_t position,
              std::vector<std::uint8_t>& found, std::vector<std::size_t>* starts) const;
  // Calls on_hit(position, gram, hash) for each position whose gram's bit is set.
  template <class OnHit>
  void for_each_hit(std::string_view text, OnHit&& on_hit) const;
#ifdef MXGATE_ATOM_SCAN_AVX2
  // The same lookups 8 positions at a time (AVX2 gather), where the CPU has it; returns
  // the first position it did not look at.
  template <class OnHit>
  std::size_t hits_avx2(std::string_view text, OnHit& on_hit) const;
#endif

  std::vector<std::string> atoms_;
  std::string padded_;                  // the atoms, each zero-padded to a multiple of 8 bytes
  std::vector<std::uint32_t> bits_;     // 1 << hash_bits_ bits: a gram hash is present
  std::vector<std::uint32_t> buckets_;  // entries of bucket b: [buckets_[b], buckets_[b+1])
  std::vector<Entry> entries_;          // sorted by bucket
  std::vector<int> folded_;             // atoms holding 'k' or 's'
  std::vector<int> always_;
};

// 3 bytes as a little-endian integer (the first byte lowest), ASCII letters folded.
constexpr std::uint32_t kFold = 0x202020u;
std::uint32_t gram_at(const char* bytes) {
  return (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[0])) |
          static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[1])) << 8 |
          static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[2])) << 16) |
         kFold;
}

// The same with one 4-byte load, when a byte after the gram may be read: this runs for
// every byte of every text.
std::uint32_t gram_before(const char* bytes) {
  std::uint32_t word;
  std::memcpy(&word, bytes, sizeof word);
  if constexpr (std::endian::native == std::endian::big) word = __builtin_bswap32(word);
  return (word & 0xffffffu) | kFold;
}

// How rare a byte is in mail text: about -10 log2 of its frequency (English letters,
// spaces, digits, punctuation). A gram's rarity is the sum over its bytes.
int byte_rarity(unsigned char c) {
  static constexpr std::array<std::uint8_t, 26> kLetters = {39,  64, 55, 48, 33, 58, 60, 43,  41,
                                                            100, 74, 49, 56, 41, 39, 61, 100, 43,
                                                            42,  37, 54, 70, 57, 94, 60, 100};
  if (c >= 'a' && c <= 'z') return kLetters[c - 'a'];
  if (c == ' ') return 25;
  if (c >= '0' && c <= '9') return 76;
  if (c == '\n' || c == '.' || c == ',') return 61;
  return 90;
}

void AtomScanner::build(const std::vector<std::string>& atoms) {
  atoms_ = atoms;
  std::vector<Entry> entries;
  std::map<std::uint32_t, int> uses;  // atoms keyed on each gram so far
  for (std::size_t i = 0; i < atoms_.size(); ++i) {
    std::string& atom = atoms_[i];
    for (char& c : atom) c = lower_char(c);
    const auto index = static_cast<int>(i);
    const bool ascii = std::all_of(atom.begin(), atom.end(),
                                   [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (atom.size() < 3 || !ascii) {
      always_.push_back(index);
      continue;
    }
    if (atom.find_first_of("ks") != std::string::npos) folded_.push_back(index);
    std::size_t best = 0;
    int best_score = 0;
    for (std::size_t offset = 0; offset + 3 <= atom.size(); ++offset) {
      int score = 0;
      for (std::size_t k = 0; k < 3; ++k)
        score += byte_rarity(static_cast<unsigned char>(atom[offset + k]));
      // A gram other atoms use too makes every hit compare them all.
      if (auto found = uses.find(gram_at(atom.data() + offset)); found != uses.end())
        score -= 40 * found->second;
      if (offset == 0 || score > best_score) {
        best = offset;
        best_score = score;
      }
    }
    const std::uint32_t gram = gram_at(atom.data() + best);
    ++uses[gram];
    entries.push_back({gram, static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(best),
                       static_cast<std::uint32_t>(atom.size()),
                       static_cast<std::uint32_t>(padded_.size())});
    padded_ += atom;
    padded_.append((8 - atom.size() % 8) % 8, '\0');
  }
  hash_bits_ = std::clamp(static_cast<int>(std::bit_width(entries.size() * 64)), 14, 18);
  bits_.assign((std::size_t{1} << hash_bits_) / 32, 0);
  buckets_.assign((std::size_t{1} << (hash_bits_ - kBucketShift)) + 1, 0);
  auto bucket_of = [&](const Entry& entry) { return hash(entry.gram) >> kBucketShift; };
  std::stable_sort(entries.begin(), entries.end(),
                   [&](const Entry& a, const Entry& b) { return bucket_of(a) < bucket_of(b); });
  for (const Entry& entry : entries) {
    const std::uint32_t hashed = hash(entry.gram);
    bits_[hashed >> 5] |= std::uint32_t{1} << (hashed & 31);
    ++buckets_[bucket_of(entry) + 1];
  }
  for (std::size_t b = 1; b < buckets_.size(); ++b) buckets_[b] += buckets_[b - 1];
  entries_ = std::move(entries);
}

// 8 bytes as a little-endian integer.
std::uint64_t load8(const char* bytes) {
  std::uint64_t word;
  std::memcpy(&word, bytes, sizeof word);
  if constexpr (std::endian::native == std::endian::big) word = __builtin_bswap64(word);
  return word;
}

// ASCII upper-case letters of 8 bytes lowered at once (bytes over 0x7f kept).
std::uint64_t ascii_lower8(std::uint64_t bytes) {
  constexpr std::uint64_t kHigh = 0x8080808080808080ull;
  const std::uint64_t low7 = bytes & ~kHigh;                  // no carry between bytes below
  const std::uint64_t from_a = low7 + 0x3f3f3f3f3f3f3f3full;  // high bit: byte >= 'A'
  const std::uint64_t past_z = low7 + 0x2525252525252525ull;  // high bit: byte > 'Z'
  const std::uint64_t upper = from_a & ~past_z & ~bytes & kHigh;
  return bytes | (upper >> 2);
}

void AtomScanner::verify(std::uint32_t hashed, std::uint32_t gram, std::string_view text,
                         std::size_t position, std::vector<std::uint8_t>& found,
                         std::vector<std::size_t>* starts) const {
  const std::uint32_t bucket = hashed >> kBucketShift;
  for (std::uint32_t e = buckets_[bucket]; e < buckets_[bucket + 1]; ++e) {
    const Entry& entry = entries_[e];
    if (entry.gram != gram || position < entry.offset) continue;
    const std::size_t start = position - entry.offset;
    if (entry.size > text.size() - start) continue;
    const char* atom = padded_.data() + entry.padded;
    const char* at = text.data() + start;
    bool equal = true;
    if ((entry.size + 7) / 8 * 8 <= text.size() - start) {
      // 8 bytes a step; the last step masks what lies past the atom.
      for (std::size_t k = 0; k < entry.size && equal; k += 8) {
        const std::size_t left = entry.size - k;
        const std::uint64_t mask = left >= 8 ? ~0ull : (1ull << (8 * left)) - 1;
        equal = ((ascii_lower8(load8(at + k)) ^ load8(atom + k)) & mask) == 0;
      }
    } else {
      for (std::size_t k = 0; k < entry.size && equal; ++k) equal = lower_char(at[k]) == atom[k];
    }
    if (!equal) continue;
    found[entry.atom] = 1;
    if (starts) starts->push_back(start);
  }
}

#ifdef MXGATE_ATOM_SCAN_AVX2
template <class OnHit>
__attribute__((target("avx2"))) std::size_t AtomScanner::hits_avx2(std::string_view text,
                                                                   OnHit& on_hit) const {
  const char* data = text.data();
  const std::size_t size = text.size();
  // 16 bytes in, the grams at its first 8 positions out (a zero fourth byte each).
  const __m256i grams_of =
      _mm256_setr_epi8(0, 1, 2, -128, 1, 2, 3, -128, 2, 3, 4, -128, 3, 4, 5, -128, 4, 5, 6, -128, 5,
                       6, 7, -128, 6, 7, 8, -128, 7, 8, 9, -128);
  const __m256i fold = _mm256_set1_epi32(static_cast<int>(kFold));
  const __m256i multiplier = _mm256_set1_epi32(static_cast<int>(0x9E3779B1u));
  const __m256i low5 = _mm256_set1_epi32(31);
  const __m128i shift = _mm_cvtsi32_si128(32 - hash_bits_);
  const int* words = reinterpret_cast<const int*>(bits_.data());
  // Masks of a chunk first, hits after: a branch on each block's mask would mispredict
  // at every hit and throw away the gathers in flight.
  constexpr std::size_t kChunk = 128;  // blocks of 8 positions
  std::uint8_t masks[kChunk];
  std::size_t i = 0;
  while (i + 16 <= size) {
    const std::size_t blocks = std::min(kChunk, (size - i - 16) / 8 + 1);
    for (std::size_t b = 0; b < blocks; ++b) {
      const __m256i bytes = _mm256_broadcastsi128_si256(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + i + 8 * b)));
      const __m256i grams = _mm256_or_si256(_mm256_shuffle_epi8(bytes, grams_of), fold);
      const __m256i hashed = _mm256_srl_epi32(_mm256_mullo_epi32(grams, multiplier), shift);
      const __m256i word = _mm256_i32gather_epi32(words, _mm256_srli_epi32(hashed, 5), 4);
      // Each lane's bit moved up to the sign bit, which movemask collects.
      const __m256i bit =
          _mm256_sllv_epi32(word, _mm256_sub_epi32(low5, _mm256_and_si256(hashed, low5)));
      masks[b] = static_cast<std::uint8_t>(_mm256_movemask_ps(_mm256_castsi256_ps(bit)));
    }
    for (std::size_t b = 0; b < blocks; ++b) {
      for (unsigned mask = masks[b]; mask; mask &= mask - 1) {
        const std::size_t position = i + 8 * b + static_cast<std::size_t>(std::countr_zero(mask));
        const std::uint32_t gram = gram_before(data + position);
        on_hit(position, gram, hash(gram));
      }
    }
    i += 8 * blocks;
  }
  return i;
}
#endif

template <class OnHit>
void AtomScanner::for_each_hit(std::string_view text, OnHit&& on_hit) const {
  const char* data = text.data();
  const std::size_t size = text.size();
  if (size < 3 || entries_.empty()) return;
  // A local: writes through on_hit's byte vectors would otherwise make the compiler
  // reload the table's address at every position.
  const std::uint32_t* const bits = bits_.data();
  auto look = [&](std::size_t position, std::uint32_t gram) {
    const std::uint32_t hashed = hash(gram);
    if ((bits[hashed >> 5] >> (hashed & 31)) & 1) [[unlikely]]
      on_hit(position, gram, hashed);
  };
  std::size_t i = 0;
#ifdef MXGATE_ATOM_SCAN_AVX2
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) i = hits_avx2(text, on_hit);
#endif
  for (; i + 4 <= size; ++i) look(i, gram_before(data + i));
  look(i, gram_at(data + i));
}

bool AtomScanner::scan(std::string_view text, std::vector<std::uint8_t>& found,
                       std::vector<std::size_t>* starts) const {
  for_each_hit(text, [&](std::size_t position, std::uint32_t gram, std::uint32_t hashed) {
    verify(hashed, gram, text, position, found, starts);
  });
  if (!folded_.empty() && (text.find("\xE2\x84\xAA") != std::string_view::npos ||
                           text.find("\xC5\xBF") != std::string_view::npos)) {
    for (int atom : folded_) found[static_cast<std::size_t>(atom)] = 1;
    return false;
  }
  return always_.empty();
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
  AtomScanner atoms;
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

// The content filter's prefilter: which of a set of literals (FilteredRE2's "atoms")
// occur in a text, case-insensitively, and where. Knows nothing of rules or RE2.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mxgate::filters {

// How LiteralScanner::scan looks at the bytes: with AVX2 where the CPU has it (chosen at
// run time), or the portable loop everywhere. The results are the same; `portable` is
// for tests that prove it.
enum class LiteralScanPath { fastest, portable };

// Literals are matched ASCII-case-insensitively (FilteredRE2 gives them lower-case, to be
// found so). Each literal is keyed on one of its 3-byte grams, the rarest in text and
// least shared with other literals; every position of the text is hashed the same way
// and looked up in a bit table (8 KiB for 1,000 literals, stays in L1): a load, a
// multiply and a bit test per byte, or per 8 bytes with AVX2. Only hits compare literals.
// (3 bytes, not 4: literals as short as "kin" or "x14" are common, and a second table
// for them would double the work per byte.)
// What cannot be decided this way is reported found: literals shorter than 3 bytes or
// with non-ASCII bytes (RE2's case folding is Unicode's), and literals with 'k' or 's'
// when the text holds U+212A KELVIN SIGN or U+017F LONG S, the only non-ASCII characters
// (?i) matches to ASCII letters.
// Immutable after build(); scan() is safe from any number of threads.
class LiteralScanner {
 public:
  void build(const std::vector<std::string>& literals,
             LiteralScanPath path = LiteralScanPath::fastest);
  // Sets found[i] for every literal i that occurs in `text` or that the text cannot rule
  // out (`found` holds size() entries; the always() literals are not set: the caller
  // adds them), and appends to `starts` (when given) where each occurrence starts (not
  // sorted). Returns false when some literals count as found without a start there:
  // always() is not empty, or the text holds one of the two characters above.
  bool scan(std::string_view text, std::vector<std::uint8_t>& found,
            std::vector<std::size_t>* starts) const;
  // Literals reported found whatever the text: `starts` cannot point at them either.
  const std::vector<int>& always() const { return always_; }
  std::size_t size() const { return literals_.size(); }

  // Whether scan() can use AVX2 on this CPU (for tests and the log).
  static bool avx2_available();

 private:
  struct Entry {
    std::uint32_t gram;     // folded bytes, little-endian
    std::uint32_t literal;  // index into literals_
    std::uint32_t offset;   // where the gram sits in the literal
    std::uint32_t size;     // of the literal
    std::uint32_t padded;   // where the literal starts in padded_
  };
  // Table size: about 64 bits per literal, so that ~1.5 % of a text's positions hit by
  // chance (16 bits, 8 KiB, for 1,000 literals), at most 2^18 bits (32 KiB, still in L1
  // or L2). Buckets: 16 table bits each.
  static constexpr int kBucketShift = 4;
  int hash_bits_ = 16;
  std::uint32_t hash(std::uint32_t gram) const { return (gram * 0x9E3779B1u) >> (32 - hash_bits_); }
  void verify(std::uint32_t hashed, std::uint32_t gram, std::string_view text, std::size_t position,
              std::vector<std::uint8_t>& found, std::vector<std::size_t>* starts) const;
  // Calls on_hit(position, gram, hash) for each position whose gram's bit is set.
  template <class OnHit>
  void for_each_hit(std::string_view text, OnHit&& on_hit) const;
  // The same lookups 8 positions at a time (AVX2 gather), where the CPU has it; returns
  // the first position it did not look at.
  template <class OnHit>
  std::size_t hits_avx2(std::string_view text, OnHit& on_hit) const;

  bool use_avx2_ = false;
  std::vector<std::string> literals_;
  std::string padded_;                  // the literals, each zero-padded to a multiple of 8 bytes
  std::vector<std::uint32_t> bits_;     // 1 << hash_bits_ bits: a gram hash is present
  std::vector<std::uint32_t> buckets_;  // entries of bucket b: [buckets_[b], buckets_[b+1])
  std::vector<Entry> entries_;          // sorted by bucket
  std::vector<int> folded_;             // literals holding 'k' or 's'
  std::vector<int> always_;
};

}  // namespace mxgate::filters

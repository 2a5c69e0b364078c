// The content filter's prefilter (see literal_scan.hpp): a hashed 3-byte window per
// position of a text, 8 positions at a time with AVX2, then a compare on each hit.
#include "filters/literal_scan.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <map>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MXGATE_LITERAL_SCAN_AVX2 1
#endif

namespace mxgate::filters {

namespace {

char lower_char(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

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

}  // namespace

bool LiteralScanner::avx2_available() {
#ifdef MXGATE_LITERAL_SCAN_AVX2
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
#else
  return false;
#endif
}

void LiteralScanner::build(const std::vector<std::string>& literals, LiteralScanPath path) {
  use_avx2_ = path == LiteralScanPath::fastest && avx2_available();
  literals_ = literals;
  std::vector<Entry> entries;
  std::map<std::uint32_t, int> uses;  // literals keyed on each gram so far
  for (std::size_t i = 0; i < literals_.size(); ++i) {
    std::string& literal = literals_[i];
    for (char& c : literal) c = lower_char(c);
    const auto index = static_cast<int>(i);
    const bool ascii = std::all_of(literal.begin(), literal.end(),
                                   [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (literal.size() < 3 || !ascii) {
      always_.push_back(index);
      continue;
    }
    if (literal.find_first_of("ks") != std::string::npos) folded_.push_back(index);
    std::size_t best = 0;
    int best_score = 0;
    for (std::size_t offset = 0; offset + 3 <= literal.size(); ++offset) {
      int score = 0;
      for (std::size_t k = 0; k < 3; ++k)
        score += byte_rarity(static_cast<unsigned char>(literal[offset + k]));
      // A gram other literals use too makes every hit compare them all.
      if (auto found = uses.find(gram_at(literal.data() + offset)); found != uses.end())
        score -= 40 * found->second;
      if (offset == 0 || score > best_score) {
        best = offset;
        best_score = score;
      }
    }
    const std::uint32_t gram = gram_at(literal.data() + best);
    ++uses[gram];
    entries.push_back({gram, static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(best),
                       static_cast<std::uint32_t>(literal.size()),
                       static_cast<std::uint32_t>(padded_.size())});
    padded_ += literal;
    padded_.append((8 - literal.size() % 8) % 8, '\0');
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

void LiteralScanner::verify(std::uint32_t hashed, std::uint32_t gram, std::string_view text,
                            std::size_t position, std::vector<std::uint8_t>& found,
                            std::vector<std::size_t>* starts) const {
  const std::uint32_t bucket = hashed >> kBucketShift;
  for (std::uint32_t e = buckets_[bucket]; e < buckets_[bucket + 1]; ++e) {
    const Entry& entry = entries_[e];
    if (entry.gram != gram || position < entry.offset) continue;
    const std::size_t start = position - entry.offset;
    if (entry.size > text.size() - start) continue;
    const char* literal = padded_.data() + entry.padded;
    const char* at = text.data() + start;
    bool equal = true;
    if ((entry.size + 7) / 8 * 8 <= text.size() - start) {
      // 8 bytes a step; the last step masks what lies past the literal.
      for (std::size_t k = 0; k < entry.size && equal; k += 8) {
        const std::size_t left = entry.size - k;
        const std::uint64_t mask = left >= 8 ? ~0ull : (1ull << (8 * left)) - 1;
        equal = ((ascii_lower8(load8(at + k)) ^ load8(literal + k)) & mask) == 0;
      }
    } else {
      for (std::size_t k = 0; k < entry.size && equal; ++k) equal = lower_char(at[k]) == literal[k];
    }
    if (!equal) continue;
    found[entry.literal] = 1;
    if (starts) starts->push_back(start);
  }
}

#ifdef MXGATE_LITERAL_SCAN_AVX2
template <class OnHit>
__attribute__((target("avx2"))) std::size_t LiteralScanner::hits_avx2(std::string_view text,
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
void LiteralScanner::for_each_hit(std::string_view text, OnHit&& on_hit) const {
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
#ifdef MXGATE_LITERAL_SCAN_AVX2
  if (use_avx2_) i = hits_avx2(text, on_hit);
#endif
  for (; i + 4 <= size; ++i) look(i, gram_before(data + i));
  look(i, gram_at(data + i));
}

bool LiteralScanner::scan(std::string_view text, std::vector<std::uint8_t>& found,
                          std::vector<std::size_t>* starts) const {
  for_each_hit(text, [&](std::size_t position, std::uint32_t gram, std::uint32_t hashed) {
    verify(hashed, gram, text, position, found, starts);
  });
  if (!folded_.empty() && (text.find("\xE2\x84\xAA") != std::string_view::npos ||
                           text.find("\xC5\xBF") != std::string_view::npos)) {
    for (int literal : folded_) found[static_cast<std::size_t>(literal)] = 1;
    return false;
  }
  return always_.empty();
}

}  // namespace mxgate::filters

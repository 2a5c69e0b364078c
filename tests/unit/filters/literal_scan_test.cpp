// Tests for the content filter's literal prefilter: which literals it finds and where,
// what it cannot rule out, and that the AVX2 and the portable path agree with a plain
// search.
#include "filters/literal_scan.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace mxgate::filters {
namespace {

struct Scan {
  std::vector<std::uint8_t> found;
  std::vector<std::size_t> starts;
  bool located = false;
};

Scan scan(const LiteralScanner& scanner, std::string_view text) {
  Scan result;
  result.found.assign(scanner.size(), 0);
  result.located = scanner.scan(text, result.found, &result.starts);
  return result;
}

std::string ascii_lower(std::string text) {
  for (char& c : text)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return text;
}

// The answer by std::string::find: every literal's occurrences, ASCII-case-insensitive.
Scan reference(const std::vector<std::string>& literals, std::string_view text) {
  Scan result;
  result.found.assign(literals.size(), 0);
  result.located = true;
  const std::string lowered = ascii_lower(std::string(text));
  for (std::size_t i = 0; i < literals.size(); ++i) {
    const std::string literal = ascii_lower(literals[i]);
    for (std::size_t at = lowered.find(literal); at != std::string::npos;
         at = lowered.find(literal, at + 1)) {
      result.found[i] = 1;
      result.starts.push_back(at);
    }
  }
  return result;
}

TEST(LiteralScan, FindsLiteralsCaseInsensitivelyAndWhereTheyStart) {
  const std::vector<std::string> literals = {"next of kin", "viagra", "x14", "bank", "ViAgRa"};
  LiteralScanner scanner;
  scanner.build(literals);
  ASSERT_EQ(scanner.size(), 5u);
  EXPECT_TRUE(scanner.always().empty());

  const std::string text = "Dear friend, I am the NEXT OF KIN of a late client of the Bank.";
  const Scan result = scan(scanner, text);
  EXPECT_TRUE(result.located);
  EXPECT_EQ(result.found, (std::vector<std::uint8_t>{1, 0, 0, 1, 0}));
  std::vector<std::size_t> starts = result.starts;
  std::sort(starts.begin(), starts.end());
  EXPECT_EQ(starts, (std::vector<std::size_t>{text.find("NEXT"), text.find("Bank")}));

  const Scan upper = scan(scanner, "VIAGRA");  // literals are lowered at build
  EXPECT_EQ(upper.found, (std::vector<std::uint8_t>{0, 1, 0, 0, 1}));
  EXPECT_EQ(upper.starts, (std::vector<std::size_t>{0, 0}));
}

TEST(LiteralScan, FindsLiteralsAtTheEdgesOfShortTexts) {
  LiteralScanner scanner;
  scanner.build({"abc", "xyz"});
  EXPECT_EQ(scan(scanner, "abc").found, (std::vector<std::uint8_t>{1, 0}));
  EXPECT_EQ(scan(scanner, "..xyz").starts, (std::vector<std::size_t>{2}));
  EXPECT_EQ(scan(scanner, "ab").found, (std::vector<std::uint8_t>{0, 0}));
  EXPECT_EQ(scan(scanner, "").found, (std::vector<std::uint8_t>{0, 0}));
  // In the tail that the AVX2 path leaves to the portable loop.
  const std::string padded = std::string(29, '.') + "xyz";
  EXPECT_EQ(scan(scanner, padded).starts, (std::vector<std::size_t>{29}));
}

TEST(LiteralScan, ReportsFoundWhatItCannotRuleOut) {
  // Too short to hash, and non-ASCII (RE2 folds case by Unicode): found in every text,
  // and `starts` cannot say where, so scan() says so.
  LiteralScanner scanner;
  scanner.build({"ab", "caf\xC3\xA9", "money"});
  EXPECT_EQ(scanner.always(), (std::vector<int>{0, 1}));
  const Scan result = scan(scanner, "nothing to see");
  EXPECT_FALSE(result.located);
  EXPECT_EQ(result.found, (std::vector<std::uint8_t>{0, 0, 0}));  // always() is the caller's
  EXPECT_TRUE(result.starts.empty());
}

TEST(LiteralScan, KelvinSignAndLongSMarkLiteralsWithKOrSFound) {
  // (?i)k matches U+212A and (?i)s matches U+017F: literals holding either cannot be
  // ruled out by an ASCII comparison once the text has them.
  LiteralScanner scanner;
  scanner.build({"kin", "bank", "money"});
  const Scan plain = scan(scanner, "a text without them");
  EXPECT_TRUE(plain.located);
  EXPECT_EQ(plain.found, (std::vector<std::uint8_t>{0, 0, 0}));
  const Scan kelvin = scan(scanner, "next of \xE2\x84\xAAin");
  EXPECT_FALSE(kelvin.located);
  EXPECT_EQ(kelvin.found, (std::vector<std::uint8_t>{1, 1, 0}));
  const Scan long_s = scan(scanner, "\xC5\xBF");
  EXPECT_FALSE(long_s.located);
  EXPECT_EQ(long_s.found, (std::vector<std::uint8_t>{1, 1, 0}));
}

// Random texts seeded with the literals at random places, in random case, of every
// length around the AVX2 path's blocks (8 positions) and chunks (128 blocks).
TEST(LiteralScan, Avx2AndPortablePathsAgreeWithAPlainSearch) {
  // Without AVX2 on this CPU both take the portable path, and only the plain search
  // is a check.
  RecordProperty("avx2", LiteralScanner::avx2_available() ? "yes" : "no");
  std::mt19937 random(412);
  auto pick = [&](std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(random);
  };
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyzKS .,\n0123456789";
  std::vector<std::string> literals;
  for (int i = 0; i < 1000; ++i) {
    std::string literal;
    const std::size_t size = 3 + pick(10);
    for (std::size_t k = 0; k < size; ++k) literal += alphabet[pick(26)];
    literals.push_back(literal);
  }
  literals.insert(literals.end(), {"kin", "x14", "the", "and"});  // hit often

  LiteralScanner fastest, portable;
  fastest.build(literals, LiteralScanPath::fastest);
  portable.build(literals, LiteralScanPath::portable);
  for (int round = 0; round < 400; ++round) {
    const std::size_t size = round < 300 ? static_cast<std::size_t>(round) : 1000 + pick(4000);
    std::string text;
    while (text.size() < size) {
      if (pick(12) == 0) {
        std::string literal = literals[pick(literals.size())];
        if (pick(2))
          literal = std::string(1, static_cast<char>(literal[0] & ~0x20)) + literal.substr(1);
        text += literal;
      } else {
        text += alphabet[pick(alphabet.size())];
      }
    }
    text.resize(size);
    const Scan expected = reference(literals, text);
    const Scan fast = scan(fastest, text);
    const Scan slow = scan(portable, text);
    ASSERT_EQ(fast.found, slow.found) << "size " << size;
    ASSERT_EQ(fast.starts, slow.starts) << "size " << size;  // same order, too
    ASSERT_EQ(fast.located, slow.located);
    ASSERT_EQ(fast.found, expected.found) << "size " << size;
    std::vector<std::size_t> starts = fast.starts, expected_starts = expected.starts;
    std::sort(starts.begin(), starts.end());
    std::sort(expected_starts.begin(), expected_starts.end());
    ASSERT_EQ(starts, expected_starts) << "size " << size;
  }
}

}  // namespace
}  // namespace mxgate::filters

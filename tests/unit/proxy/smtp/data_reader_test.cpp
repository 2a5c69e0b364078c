// Tests for the DATA/BDAT content readers (invariant 4: no SMTP smuggling) and for
// dot-stuffing toward the backend. Every expectation is on the exact output bytes.
#include "proxy/smtp/data_reader.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace mxgate::smtp {
namespace {

using policy::BareNewline;

DataLimits limits_for(BareNewline mode) {
  DataLimits limits;
  limits.bare_newline = mode;
  return limits;
}

const DataLimits kReject = limits_for(BareNewline::reject);
const DataLimits kNormalize = limits_for(BareNewline::normalize);

struct Outcome {
  std::string out;
  DataProblem problem = DataProblem::none;
  std::size_t consumed = 0;  // of the whole input
  bool done = false;
  std::uint64_t size = 0;
  std::size_t stray = 0;

  bool operator==(const Outcome&) const = default;
};

std::ostream& operator<<(std::ostream& stream, const Outcome& outcome) {
  return stream << "out=" << ::testing::PrintToString(outcome.out)
                << " problem=" << static_cast<int>(outcome.problem)
                << " consumed=" << outcome.consumed << " done=" << outcome.done
                << " size=" << outcome.size << " stray=" << outcome.stray;
}

// Feeds `input` cut at `cuts` (increasing offsets), stopping at the end marker as a
// session would.
Outcome read_with_cuts(std::string_view input, const DataLimits& limits,
                       const std::vector<std::size_t>& cuts) {
  DataReader reader(limits);
  Outcome outcome;
  std::size_t start = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(input.size());
  for (std::size_t end : ends) {
    const DataReader::Result result = reader.feed(input.substr(start, end - start), outcome.out);
    outcome.consumed = start + result.consumed;
    if (result.done) {
      outcome.done = true;
      break;
    }
    EXPECT_EQ(result.consumed, end - start);
    start = end;
  }
  outcome.problem = reader.problem();
  outcome.size = reader.size();
  outcome.stray = reader.stray_bytes();
  return outcome;
}

Outcome read(std::string_view input, const DataLimits& limits) {
  return read_with_cuts(input, limits, {});
}

// The same outcome for one feed, byte-by-byte feeds, and every split in two and three.
void expect_split_independent(std::string_view input, const DataLimits& limits) {
  const Outcome whole = read(input, limits);
  std::vector<std::size_t> every_byte;
  for (std::size_t cut = 1; cut < input.size(); ++cut) {
    every_byte.push_back(cut);
  }
  EXPECT_EQ(read_with_cuts(input, limits, every_byte), whole)
      << "byte by byte: " << ::testing::PrintToString(std::string(input));
  for (std::size_t first = 0; first <= input.size(); ++first) {
    EXPECT_EQ(read_with_cuts(input, limits, {first}), whole)
        << "cut at " << first << ": " << ::testing::PrintToString(std::string(input));
    if (input.size() <= 40) {
      for (std::size_t second = first; second <= input.size(); ++second) {
        ASSERT_EQ(read_with_cuts(input, limits, {first, second}), whole)
            << "cuts at " << first << "," << second;
      }
    }
  }
}

TEST(DataReaderTest, SimpleMessage) {
  const Outcome outcome = read("Subject: hi\r\n\r\nbody\r\n.\r\n", kReject);
  EXPECT_EQ(outcome.out, "Subject: hi\r\n\r\nbody\r\n");
  EXPECT_TRUE(outcome.done);
  EXPECT_EQ(outcome.consumed, 24u);
  EXPECT_EQ(outcome.problem, DataProblem::none);
  EXPECT_EQ(outcome.size, 21u);
  EXPECT_EQ(outcome.stray, 0u);
}

TEST(DataReaderTest, EmptyMessage) {
  const Outcome outcome = read(".\r\n", kReject);
  EXPECT_EQ(outcome.out, "");
  EXPECT_TRUE(outcome.done);
  EXPECT_EQ(outcome.consumed, 3u);
  EXPECT_EQ(outcome.size, 0u);
}

TEST(DataReaderTest, EmptyLineThenMarker) {
  const Outcome outcome = read("\r\n.\r\n", kReject);
  EXPECT_EQ(outcome.out, "\r\n");
  EXPECT_TRUE(outcome.done);
  EXPECT_EQ(outcome.consumed, 5u);
}

TEST(DataReaderTest, ConsumedStopsAfterMarkerLeavingPipelinedBytes) {
  const std::string input = "a\r\n.\r\nQUIT\r\n";
  DataReader reader(kReject);
  std::string out;
  const DataReader::Result result = reader.feed(input, out);
  EXPECT_TRUE(result.done);
  EXPECT_EQ(result.consumed, 6u);
  EXPECT_EQ(input.substr(result.consumed), "QUIT\r\n");
  EXPECT_EQ(out, "a\r\n");
}

TEST(DataReaderTest, FeedAfterDoneConsumesNothing) {
  DataReader reader(kReject);
  std::string out;
  ASSERT_TRUE(reader.feed(".\r\n", out).done);
  const DataReader::Result again = reader.feed("MAIL FROM:<>\r\n", out);
  EXPECT_TRUE(again.done);
  EXPECT_EQ(again.consumed, 0u);
  EXPECT_EQ(out, "");
}

TEST(DataReaderTest, NotDoneWithoutMarker) {
  DataReader reader(kReject);
  std::string out;
  const DataReader::Result result = reader.feed("a\r\nb\r\n", out);
  EXPECT_FALSE(result.done);
  EXPECT_EQ(result.consumed, 6u);
  EXPECT_EQ(out, "a\r\nb\r\n");
}

TEST(DataReaderTest, DotUnstuffing) {
  EXPECT_EQ(read("..\r\n.\r\n", kReject).out, ".\r\n");
  EXPECT_EQ(read("...\r\n.\r\n", kReject).out, "..\r\n");
  EXPECT_EQ(read("..foo\r\n.\r\n", kReject).out, ".foo\r\n");
  EXPECT_EQ(read(".foo\r\n.\r\n", kReject).out, "foo\r\n");  // RFC 5321 4.5.2: drop it
  EXPECT_EQ(read("a.b\r\n.\r\n", kReject).out, "a.b\r\n");
  EXPECT_EQ(read("a\r\n. \r\n.\r\n", kReject).out, "a\r\n \r\n");
  EXPECT_EQ(read("a\r\n..\r\n..\r\n.\r\n", kReject).out, "a\r\n.\r\n.\r\n");
}

TEST(DataReaderTest, DotLineLookAlikesAreContent) {
  // ". \r\n" and ".x" are not markers; only a line that is exactly ".".
  const Outcome outcome = read(". \r\n.x\r\n.\r\n", kReject);
  EXPECT_EQ(outcome.out, " \r\nx\r\n");
  EXPECT_TRUE(outcome.done);
}

// Each smuggling form from the 2023 SMTP smuggling research, followed by a command an
// attacker would like us to run. None of them may end the data.
struct SmugglingCase {
  const char* name;
  std::string sequence;
  std::string normalized;  // the content for "x" + sequence + "y\r\n.\r\n" in normalize mode
};

std::vector<SmugglingCase> smuggling_cases() {
  return {
      {"lf_dot_lf", "\n.\n", "x . y\r\n"},
      {"cr_dot_cr", "\r.\r", "x . y\r\n"},
      {"lf_dot_crlf", "\n.\r\n", "x .\r\ny\r\n"},
      {"crlf_dot_lf", "\r\n.\n", "x\r\n y\r\n"},
      {"cr_crlf_dot_crlf", "\r\r\n.\r\n", "x   .\r\ny\r\n"},
      {"crlf_dot_cr_crlf", "\r\n.\r\r\n", "x\r\n   y\r\n"},
      {"crlf_dot_cr", "\r\n.\r", "x\r\n y\r\n"},
      {"cr_dot_crlf", "\r.\r\n", "x .\r\ny\r\n"},
      {"crlf_nul_dot_crlf", std::string("\r\n\0.\r\n", 6), "x\r\n .\r\ny\r\n"},
      {"crlf_dot_nul_crlf", std::string("\r\n.\0\r\n", 6), "x\r\n \r\ny\r\n"},
      {"cr_cr_crlf_dot_crlf", "\r\r\r\n.\r\n", "x    .\r\ny\r\n"},
      {"lf_lf_dot_lf_lf", "\n\n.\n\n", "x  .  y\r\n"},
  };
}

TEST(DataReaderTest, SmugglingSequencesDoNotEndDataInRejectMode) {
  for (const SmugglingCase& smuggling : smuggling_cases()) {
    const std::string input = "x" + smuggling.sequence + "MAIL FROM:<attacker@evil.com>\r\n";
    const Outcome outcome = read(input, kReject);
    EXPECT_FALSE(outcome.done) << smuggling.name;
    EXPECT_EQ(outcome.consumed, input.size()) << smuggling.name;
    EXPECT_EQ(outcome.problem, DataProblem::bare_newline) << smuggling.name;
  }
}

TEST(DataReaderTest, SmugglingSequencesInRejectModeFindTheGenuineMarker) {
  for (const SmugglingCase& smuggling : smuggling_cases()) {
    const std::string input = "x" + smuggling.sequence + "y\r\n.\r\nQUIT\r\n";
    const Outcome outcome = read(input, kReject);
    EXPECT_TRUE(outcome.done) << smuggling.name;
    EXPECT_EQ(outcome.consumed, input.size() - 6) << smuggling.name;
    EXPECT_EQ(outcome.problem, DataProblem::bare_newline) << smuggling.name;
    // Nothing past the first stray byte was written.
    EXPECT_TRUE(outcome.out == "x" || outcome.out == "x\r\n") << smuggling.name;
    expect_split_independent(input, kReject);
  }
}

TEST(DataReaderTest, SmugglingSequencesAreNormalizedToSpaces) {
  for (const SmugglingCase& smuggling : smuggling_cases()) {
    const std::string input = "x" + smuggling.sequence + "y\r\n.\r\nQUIT\r\n";
    const Outcome outcome = read(input, kNormalize);
    EXPECT_TRUE(outcome.done) << smuggling.name;
    EXPECT_EQ(outcome.consumed, input.size() - 6) << smuggling.name;
    EXPECT_EQ(outcome.problem, DataProblem::none) << smuggling.name;
    EXPECT_EQ(outcome.out, smuggling.normalized) << smuggling.name;
    expect_split_independent(input, kNormalize);
  }
}

TEST(DataReaderTest, EachStrayByteBecomesOneSpace) {
  const Outcome outcome = read(std::string("a\nb\rc\0d\n\n\r\r\n.\r\n", 15), kNormalize);
  // "\r\r\n" counts as three stray bytes: a CR right after a bare CR ends no line.
  EXPECT_EQ(outcome.out, "a b c d     .\r\n");
  EXPECT_FALSE(outcome.done);
  EXPECT_EQ(outcome.stray, 8u);
  EXPECT_EQ(outcome.problem, DataProblem::none);
}

TEST(DataReaderTest, BareLfBeforeGenuineCrlfEndsLine) {
  // A bare LF then CRLF: every reader (CRLF or LF based) sees a line end, then ".".
  Outcome outcome = read("x\n\r\n.\r\nQUIT\r\n", kNormalize);
  EXPECT_TRUE(outcome.done);
  EXPECT_EQ(outcome.out, "x \r\n");
  EXPECT_EQ(outcome.consumed, 7u);
  outcome = read("x\n\r\n.\r\n", kReject);
  EXPECT_TRUE(outcome.done);
  EXPECT_EQ(outcome.problem, DataProblem::bare_newline);
}

TEST(DataReaderTest, RejectModeStopsWritingAtFirstStrayByte) {
  const Outcome outcome = read("good\r\nba\nd\r\nmore\r\n.\r\n", kReject);
  EXPECT_EQ(outcome.problem, DataProblem::bare_newline);
  EXPECT_EQ(outcome.out, "good\r\nba");
  EXPECT_TRUE(outcome.done);
  EXPECT_EQ(outcome.stray, 1u);
}

TEST(DataReaderTest, NulIsStray) {
  const std::string input("a\0b\r\n.\r\n", 8);
  EXPECT_EQ(read(input, kNormalize).out, "a b\r\n");
  EXPECT_EQ(read(input, kReject).problem, DataProblem::bare_newline);
}

TEST(DataReaderTest, TooBig) {
  DataLimits limits = kReject;
  limits.max_message_size = 12;
  Outcome outcome = read("0123456789\r\n.\r\n", limits);  // 12 bytes: at the limit
  EXPECT_EQ(outcome.problem, DataProblem::none);
  EXPECT_EQ(outcome.out, "0123456789\r\n");

  limits.max_message_size = 11;
  outcome = read("0123456789\r\n.\r\n", limits);
  EXPECT_EQ(outcome.problem, DataProblem::too_big);
  EXPECT_EQ(outcome.out, "0123456789");
  EXPECT_TRUE(outcome.done);
  EXPECT_EQ(outcome.size, 12u);

  limits.max_message_size = 5;
  outcome = read("0123456789\r\nabc\r\n.\r\nQUIT\r\n", limits);
  EXPECT_EQ(outcome.problem, DataProblem::too_big);
  EXPECT_EQ(outcome.out, "01234");
  EXPECT_TRUE(outcome.done);
  EXPECT_EQ(outcome.consumed, 20u);
  EXPECT_EQ(outcome.size, 17u);
  expect_split_independent("0123456789\r\nabc\r\n.\r\nQUIT\r\n", limits);
}

TEST(DataReaderTest, SizeCountsUnstuffedBytes) {
  DataLimits limits = kReject;
  limits.max_message_size = 3;
  const Outcome outcome = read("..\r\n.\r\n", limits);  // content ".\r\n"
  EXPECT_EQ(outcome.problem, DataProblem::none);
  EXPECT_EQ(outcome.size, 3u);
}

TEST(DataReaderTest, LineTooLong) {
  DataLimits limits = kReject;
  limits.max_text_line = 10;  // including CRLF
  Outcome outcome = read("12345678\r\n.\r\n", limits);
  EXPECT_EQ(outcome.problem, DataProblem::none);
  outcome = read("123456789\r\nnext\r\n.\r\n", limits);
  EXPECT_EQ(outcome.problem, DataProblem::line_too_long);
  EXPECT_EQ(outcome.out, "12345678");
  EXPECT_TRUE(outcome.done);
  // Counted after unstuffing: "..2345678" is the 8-byte line ".2345678".
  outcome = read("..2345678\r\n.\r\n", limits);
  EXPECT_EQ(outcome.problem, DataProblem::none);
  EXPECT_EQ(outcome.out, ".2345678\r\n");
  // Many short lines never add up to a long one.
  std::string many;
  for (int index = 0; index < 100; ++index) {
    many += "1234567\r\n";
  }
  EXPECT_EQ(read(many + ".\r\n", limits).problem, DataProblem::none);
  expect_split_independent("1234\r\n123456789\r\nnext\r\n.\r\n", limits);
}

TEST(DataReaderTest, NormalizedSpacesCountTowardLineLength) {
  DataLimits limits = kNormalize;
  limits.max_text_line = 6;
  EXPECT_EQ(read("ab\ncd\r\n.\r\n", limits).problem, DataProblem::line_too_long);
}

TEST(DataReaderTest, FirstProblemWins) {
  DataLimits limits = kReject;
  limits.max_text_line = 10;
  limits.max_message_size = 1000;
  EXPECT_EQ(read("a\nb\r\n0123456789012\r\n.\r\n", limits).problem, DataProblem::bare_newline);
  EXPECT_EQ(read("0123456789012\r\na\nb\r\n.\r\n", limits).problem, DataProblem::line_too_long);
  limits.max_message_size = 5;
  EXPECT_EQ(read("0123456789012\r\n.\r\n", limits).problem, DataProblem::too_big);
}

TEST(DataReaderTest, ResetStartsANewMessage) {
  DataReader reader(kReject);
  std::string out;
  ASSERT_TRUE(reader.feed("a\nb\r\n.\r\n", out).done);
  EXPECT_EQ(reader.problem(), DataProblem::bare_newline);
  reader.reset();
  out.clear();
  const DataReader::Result result = reader.feed("c\r\n.\r\n", out);
  EXPECT_TRUE(result.done);
  EXPECT_EQ(out, "c\r\n");
  EXPECT_EQ(reader.problem(), DataProblem::none);
  EXPECT_EQ(reader.size(), 3u);
  EXPECT_EQ(reader.stray_bytes(), 0u);
}

TEST(DataReaderTest, SplitIndependence) {
  const std::vector<std::string> inputs = {
      "Subject: x\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n",
      ".\r\nRSET\r\n",
      "\r\n.\r\n",
      "a\r\n.\r\r\n.\r\n",
      "a\r.\r\n\r\n.\r\nX",
      std::string("\0\r\n.\r\n", 6),
      "..\r\n...\r\n.\r\n",
      "\r\r\r\n\n\n.\r\n",
      "x\r",
      ".",
      ".\r",
  };
  for (const std::string& input : inputs) {
    expect_split_independent(input, kReject);
    expect_split_independent(input, kNormalize);
  }
}

TEST(DataReaderTest, SplitIndependenceOnRandomInputs) {
  std::mt19937 random(12345);
  const char alphabet[] = {'\r', '\n', '.', 'a', '\0', ' '};
  for (int round = 0; round < 300; ++round) {
    std::string input;
    const int length = static_cast<int>(random() % 24);
    for (int index = 0; index < length; ++index) {
      input.push_back(alphabet[random() % sizeof(alphabet)]);
    }
    DataLimits limits = round % 2 == 0 ? kReject : kNormalize;
    limits.max_text_line = 4 + random() % 6;
    limits.max_message_size = 3 + random() % 20;
    expect_split_independent(input, limits);
    const Outcome outcome = read(input, limits);
    if (outcome.problem == DataProblem::none) {
      // Canonical output: every CR is followed by LF, every LF preceded by CR, no NUL.
      for (std::size_t index = 0; index < outcome.out.size(); ++index) {
        const char c = outcome.out[index];
        ASSERT_NE(c, '\0');
        if (c == '\r') {
          ASSERT_TRUE(index + 1 < outcome.out.size() && outcome.out[index + 1] == '\n');
        }
        if (c == '\n') {
          ASSERT_TRUE(index > 0 && outcome.out[index - 1] == '\r');
        }
      }
    }
  }
}

TEST(DataReaderTest, LongRunsOfBareCrAreLinear) {
  // Guards the scanner against rescanning to the end for every stray byte.
  std::string input;
  for (int index = 0; index < 200000; ++index) {
    input += "a\r";
  }
  input += "\r\n.\r\n";
  const Outcome outcome = read(input, kNormalize);
  EXPECT_EQ(outcome.stray, 200002u);  // 200000 bare CRs, then "\r\r\n" adds two more
  EXPECT_FALSE(outcome.done);         // "\r\r\n.\r\n" is not a marker
}

TEST(ChunkReaderTest, CopiesCanonicalContentWithoutDotHandling) {
  ChunkReader reader(kReject);
  std::string out;
  reader.feed("a\r\n.\r\n..b\r\n", out);
  reader.finish(out);
  EXPECT_EQ(out, "a\r\n.\r\n..b\r\n");
  EXPECT_EQ(reader.problem(), DataProblem::none);
  EXPECT_EQ(reader.size(), 11u);
}

TEST(ChunkReaderTest, CrAtEndOfChunkAndLfAtStartOfNext) {
  ChunkReader reader(kReject);
  std::string out;
  reader.feed("abc\r", out);
  reader.feed("\ndef\r\n", out);
  reader.finish(out);
  EXPECT_EQ(out, "abc\r\ndef\r\n");
  EXPECT_EQ(reader.problem(), DataProblem::none);
}

TEST(ChunkReaderTest, DanglingCrAtFinish) {
  ChunkReader reject(kReject);
  std::string out;
  reject.feed("abc\r", out);
  reject.finish(out);
  EXPECT_EQ(reject.problem(), DataProblem::bare_newline);

  ChunkReader normalize(kNormalize);
  out.clear();
  normalize.feed("abc\r", out);
  normalize.finish(out);
  EXPECT_EQ(out, "abc \r\n");
  EXPECT_EQ(normalize.stray_bytes(), 1u);
  EXPECT_EQ(normalize.problem(), DataProblem::none);
}

TEST(ChunkReaderTest, LastLineWithoutCrlfGetsOne) {
  ChunkReader reader(kReject);
  std::string out;
  reader.feed("a\r\nlast", out);
  reader.finish(out);
  EXPECT_EQ(out, "a\r\nlast\r\n");
  EXPECT_EQ(reader.problem(), DataProblem::none);
  EXPECT_EQ(reader.size(), 9u);
}

TEST(ChunkReaderTest, EmptyContent) {
  ChunkReader reader(kReject);
  std::string out;
  reader.feed("", out);
  reader.finish(out);
  EXPECT_EQ(out, "");
  EXPECT_EQ(reader.size(), 0u);
}

TEST(ChunkReaderTest, StrayBytes) {
  ChunkReader reject(kReject);
  std::string out;
  reject.feed("a\nb\r\n", out);
  reject.finish(out);
  EXPECT_EQ(reject.problem(), DataProblem::bare_newline);

  ChunkReader normalize(kNormalize);
  out.clear();
  normalize.feed(std::string("a\nb\rc\0d\r\r\ne\r\n", 13), out);
  normalize.finish(out);
  EXPECT_EQ(out, "a b c d   e\r\n");
  EXPECT_EQ(normalize.stray_bytes(), 6u);
}

TEST(ChunkReaderTest, LimitsApply) {
  DataLimits limits = kReject;
  limits.max_message_size = 4;
  ChunkReader big(limits);
  std::string out;
  big.feed("ab\r\ncd\r\n", out);
  big.finish(out);
  EXPECT_EQ(big.problem(), DataProblem::too_big);
  EXPECT_EQ(out, "ab\r\n");

  limits.max_message_size = 1000;
  limits.max_text_line = 5;
  ChunkReader long_line(limits);
  out.clear();
  long_line.feed("abc\r\nabcd\r\n", out);
  long_line.finish(out);
  EXPECT_EQ(long_line.problem(), DataProblem::line_too_long);
  EXPECT_EQ(out, "abc\r\nabc");
}

TEST(ChunkReaderTest, SplitIndependence) {
  const std::vector<std::string> inputs = {
      "a\r\nb\r\n", "a\r", "\r\r\n", std::string("x\0\r\n\n\r", 6), "abc", "a\r\n.\r\n",
  };
  for (const DataLimits& limits : {kReject, kNormalize}) {
    for (const std::string& input : inputs) {
      ChunkReader whole_reader(limits);
      std::string whole;
      whole_reader.feed(input, whole);
      whole_reader.finish(whole);
      for (std::size_t cut = 0; cut <= input.size(); ++cut) {
        ChunkReader reader(limits);
        std::string out;
        reader.feed(input.substr(0, cut), out);
        reader.feed(input.substr(cut), out);
        reader.finish(out);
        EXPECT_EQ(out, whole) << ::testing::PrintToString(input) << " cut " << cut;
        EXPECT_EQ(reader.problem(), whole_reader.problem());
        EXPECT_EQ(reader.stray_bytes(), whole_reader.stray_bytes());
      }
    }
  }
}

TEST(ChunkReaderTest, ResetStartsANewMessage) {
  ChunkReader reader(kReject);
  std::string out;
  reader.feed("a\r", out);
  reader.reset();
  out.clear();
  reader.feed("\nb", out);  // the old CR is forgotten: this LF is bare
  reader.finish(out);
  EXPECT_EQ(reader.problem(), DataProblem::bare_newline);
}

TEST(StuffForDataTest, StuffsLeadingDotsAndTerminates) {
  std::string out;
  stuff_for_data("a\r\n.b\r\n..\r\n.\r\n", out);
  EXPECT_EQ(out, "a\r\n..b\r\n...\r\n..\r\n.\r\n");
}

TEST(StuffForDataTest, EmptyContent) {
  std::string out;
  stuff_for_data("", out);
  EXPECT_EQ(out, ".\r\n");
}

TEST(StuffForDataTest, AddsMissingFinalCrlf) {
  std::string out = "DATA-prefix:";
  stuff_for_data("abc\r\n.x", out);
  EXPECT_EQ(out, "DATA-prefix:abc\r\n..x\r\n.\r\n");
}

TEST(StuffForDataTest, StuffsAfterEveryLfEvenNonCanonical) {
  std::string out;
  stuff_for_data("a\n.\r\n", out);
  EXPECT_EQ(out, "a\n..\r\n.\r\n");
}

TEST(StuffForDataTest, RoundTripsThroughDataReader) {
  std::mt19937 random(7);
  const char* pieces[] = {".", "..", "a", " ", "\r\n", ".\r\n", "From x", "\xc3\xa9"};
  for (int round = 0; round < 500; ++round) {
    std::string content;
    const int count = static_cast<int>(random() % 12);
    for (int index = 0; index < count; ++index) {
      content += pieces[random() % std::size(pieces)];
    }
    // Canonicalise: only CRLF line ends, ending with CRLF when not empty.
    if (!content.empty() && !content.ends_with("\r\n")) {
      content += "\r\n";
    }
    std::string wire;
    stuff_for_data(content, wire);
    wire += "NEXT";
    const Outcome outcome = read(wire, kReject);
    ASSERT_TRUE(outcome.done) << ::testing::PrintToString(content);
    EXPECT_EQ(outcome.out, content);
    EXPECT_EQ(outcome.problem, DataProblem::none);
    EXPECT_EQ(outcome.consumed, wire.size() - 4);
  }
}

}  // namespace
}  // namespace mxgate::smtp

// libFuzzer target for the DATA/BDAT readers (the SMTP smuggling surface): checks that
// output is canonical, that any split of the input gives the same result, and that
// stuff_for_data round-trips.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/smtp/data_reader.hpp"

using mxgate::smtp::ChunkReader;
using mxgate::smtp::DataLimits;
using mxgate::smtp::DataProblem;
using mxgate::smtp::DataReader;

namespace {

struct Outcome {
  std::string out;
  DataProblem problem = DataProblem::none;
  std::size_t consumed = 0;
  bool done = false;
  std::uint64_t size = 0;
  std::size_t stray = 0;
  bool operator==(const Outcome&) const = default;
};

void check(bool condition) {
  if (!condition) {
    std::abort();
  }
}

// Feeds `input` in pieces whose lengths come from `seed` (0: one feed).
Outcome read(std::string_view input, const DataLimits& limits, std::uint32_t seed) {
  DataReader reader(limits);
  Outcome outcome;
  std::size_t start = 0;
  while (true) {
    std::size_t length = input.size() - start;
    if (seed != 0) {
      seed = seed * 1103515245u + 12345u;
      length = std::min<std::size_t>(length, (seed >> 16) % 9);
    }
    const DataReader::Result result = reader.feed(input.substr(start, length), outcome.out);
    check(result.consumed <= length);
    outcome.consumed = start + result.consumed;
    if (result.done) {
      outcome.done = true;
      break;
    }
    check(result.consumed == length);
    start += length;
    if (start == input.size()) {
      break;
    }
  }
  outcome.problem = reader.problem();
  outcome.size = reader.size();
  outcome.stray = reader.stray_bytes();
  return outcome;
}

// Every CR is followed by LF, every LF preceded by CR, no NUL, lines within the limit.
void check_canonical(const std::string& out, const DataLimits& limits, bool complete) {
  std::size_t line_start = 0;
  for (std::size_t index = 0; index < out.size(); ++index) {
    const char c = out[index];
    check(c != '\0');
    if (c == '\r') {
      check(index + 1 < out.size() && out[index + 1] == '\n');
    } else if (c == '\n') {
      check(index > 0 && out[index - 1] == '\r');
      check(index + 1 - line_start <= limits.max_text_line);
      line_start = index + 1;
    }
  }
  check(out.size() <= limits.max_message_size);
  if (complete) {
    check(line_start == out.size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) {
    return 0;
  }
  DataLimits limits;
  limits.bare_newline = (data[0] & 1) != 0 ? mxgate::policy::BareNewline::normalize
                                           : mxgate::policy::BareNewline::reject;
  limits.max_text_line = 2 + data[1];
  limits.max_message_size = data[2] == 255 ? UINT64_MAX : 16u * data[2];
  const std::uint32_t seed = data[3] | 1u;
  const std::string_view input(reinterpret_cast<const char*>(data) + 4, size - 4);

  const Outcome whole = read(input, limits, 0);
  check(read(input, limits, seed) == whole);
  check(whole.consumed <= input.size());
  if (whole.done) {
    // The marker is exactly CRLF "." CRLF (or "." CRLF at the very start).
    check(whole.consumed >= 3 && input.substr(whole.consumed - 3, 3) == ".\r\n");
    check(whole.consumed == 3 || input.substr(whole.consumed - 5, 2) == "\r\n");
  } else {
    check(whole.consumed == input.size());
  }
  if (whole.problem == DataProblem::none) {
    check_canonical(whole.out, limits, whole.done);
    if (limits.bare_newline == mxgate::policy::BareNewline::reject) {
      check(whole.stray == 0);
    }
    if (whole.done) {
      // What we would send the backend reads back as the same content.
      std::string wire;
      mxgate::smtp::stuff_for_data(whole.out, wire);
      DataLimits unlimited;
      unlimited.max_text_line = limits.max_text_line;
      const Outcome again = read(wire, unlimited, 0);
      check(again.done && again.consumed == wire.size() && again.out == whole.out &&
            again.problem == DataProblem::none);
    }
  }

  // BDAT: the same bytes as one message split into chunks.
  ChunkReader whole_chunks(limits);
  std::string whole_out;
  whole_chunks.feed(input, whole_out);
  whole_chunks.finish(whole_out);
  ChunkReader split_chunks(limits);
  std::string split_out;
  const std::size_t cut = input.empty() ? 0 : seed % (input.size() + 1);
  split_chunks.feed(input.substr(0, cut), split_out);
  split_chunks.feed(input.substr(cut), split_out);
  split_chunks.finish(split_out);
  check(split_out == whole_out && split_chunks.problem() == whole_chunks.problem() &&
        split_chunks.size() == whole_chunks.size() &&
        split_chunks.stray_bytes() == whole_chunks.stray_bytes());
  if (whole_chunks.problem() == DataProblem::none) {
    check_canonical(whole_out, limits, true);
  }
  return 0;
}

// The DATA stream, every message byte's path through mxgate: DataReader::feed
// (dot-unstuffing, the bare CR/LF/NUL scan, limits), ChunkReader (BDAT), and
// stuff_for_data (re-stuffing toward the backend). Target: >= 1 GB/s per core.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/smtp/data_reader.hpp"

namespace {

using namespace mxgate::smtp;

constexpr std::size_t kFeedSize = 64 * 1024;  // what one socket read hands the reader

// A deterministic message of about `size` bytes of canonical content (CRLF lines):
// headers, a text part (60-78 character lines, one in 50 starting with '.'), and for
// large sizes a base64 attachment (76 character lines), as a real mail mix has.
// A non-zero `line_length`: text lines of exactly that length, no attachment.
std::string make_content(std::size_t size, std::size_t line_length = 0) {
  static constexpr std::string_view kWords[] = {
      "the",     "quick",  "brown", "fox",      "jumps",   "over",    "lazy",  "dog",
      "invoice", "please", "find",  "attached", "regards", "meeting", "about", "report"};
  static constexpr std::string_view kBase64 =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::uint32_t seed = 12345;
  auto next = [&seed] {
    seed = seed * 1664525u + 1013904223u;
    return seed >> 8;
  };
  std::string content =
      "Received: from client.example (client.example [192.0.2.1])\r\n"
      "\tby mx.example.org (mxgate) with ESMTP id 7Q3XK2PA\r\n"
      "From: Sender <sender@client.example>\r\n"
      "To: Alice <alice@example.org>\r\n"
      "Subject: Quarterly report and the minutes of the meeting\r\n"
      "Message-ID: <20240101120000.12345@client.example>\r\n"
      "MIME-Version: 1.0\r\n"
      "Content-Type: text/plain; charset=utf-8\r\n"
      "\r\n";
  const std::size_t text_end = (size > 16 * 1024 && line_length == 0) ? 8 * 1024 : size;
  std::size_t line_number = 0;
  while (content.size() < text_end) {
    std::string line;
    if (++line_number % 50 == 0) line = ".";  // a line that is dot-stuffed on the wire
    const std::size_t target = line_length != 0 ? line_length : 60 + next() % 19;
    while (line.size() < target) {
      if (!line.empty() && line != ".") line += ' ';
      line += kWords[next() % std::size(kWords)];
    }
    line.resize(target);
    content += line;
    content += "\r\n";
  }
  while (content.size() < size) {
    std::string line(76, 'A');
    for (char& character : line) character = kBase64[next() % kBase64.size()];
    content += line;
    content += "\r\n";
  }
  return content;
}

std::string wire_form(const std::string& content) {
  std::string wire;
  stuff_for_data(content, wire);
  return wire;
}

void BM_DataReaderFeed(benchmark::State& state) {
  const std::string wire = wire_form(make_content(static_cast<std::size_t>(state.range(0))));
  DataReader reader{DataLimits{}};
  std::string out;
  out.reserve(wire.size());
  for (auto _ : state) {
    reader.reset();
    out.clear();
    std::string_view rest = wire;
    bool done = false;
    while (!done && !rest.empty()) {
      const std::string_view feed = rest.substr(0, kFeedSize);
      const DataReader::Result result = reader.feed(feed, out);
      rest.remove_prefix(result.consumed);
      done = result.done;
    }
    if (!done || reader.problem() != DataProblem::none) state.SkipWithError("reader failed");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(wire.size()));
}
BENCHMARK(BM_DataReaderFeed)->Arg(4 * 1024)->Arg(1024 * 1024);

// Short lines: the per-line work (state changes, pending runs) dominates the scan.
void BM_DataReaderFeedShortLines(benchmark::State& state) {
  const std::string wire = wire_form(make_content(1024 * 1024, 8));
  DataReader reader{DataLimits{}};
  std::string out;
  out.reserve(wire.size());
  for (auto _ : state) {
    reader.reset();
    out.clear();
    std::string_view rest = wire;
    while (!rest.empty()) {
      const DataReader::Result result = reader.feed(rest.substr(0, kFeedSize), out);
      rest.remove_prefix(result.consumed);
      if (result.done) break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(wire.size()));
}
BENCHMARK(BM_DataReaderFeedShortLines);

// Worst case of the stray-byte scan: every line ends in a bare LF, normalize mode (each
// becomes one space, so the whole message is one long line: the line limit is raised).
void BM_DataReaderBareLfNormalize(benchmark::State& state) {
  std::string content = make_content(1024 * 1024);
  std::string wire;
  for (std::size_t i = 0; i < content.size(); ++i)
    if (content[i] != '\r') wire += content[i];
  wire += "\r\n.\r\n";
  DataLimits limits;
  limits.bare_newline = mxgate::policy::BareNewline::normalize;
  limits.max_text_line = 64 * 1024 * 1024;
  DataReader reader{limits};
  std::string out;
  out.reserve(wire.size());
  for (auto _ : state) {
    reader.reset();
    out.clear();
    std::string_view rest = wire;
    while (!rest.empty()) {
      const DataReader::Result result = reader.feed(rest.substr(0, kFeedSize), out);
      rest.remove_prefix(result.consumed);
      if (result.done) break;
    }
    if (reader.stray_bytes() == 0) state.SkipWithError("no stray bytes seen");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(wire.size()));
}
BENCHMARK(BM_DataReaderBareLfNormalize);

// BDAT: the same checks without dot-unstuffing, in 64 KiB chunks.
void BM_ChunkReaderFeed(benchmark::State& state) {
  const std::string content = make_content(static_cast<std::size_t>(state.range(0)));
  ChunkReader reader{DataLimits{}};
  std::string out;
  out.reserve(content.size() + 2);
  for (auto _ : state) {
    reader.reset();
    out.clear();
    std::string_view rest = content;
    while (!rest.empty()) {
      const std::string_view chunk = rest.substr(0, kFeedSize);
      reader.feed(chunk, out);
      rest.remove_prefix(chunk.size());
    }
    reader.finish(out);
    if (reader.problem() != DataProblem::none) state.SkipWithError("reader failed");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(content.size()));
}
BENCHMARK(BM_ChunkReaderFeed)->Arg(4 * 1024)->Arg(1024 * 1024);

// Toward the backend: canonical content to DATA wire form.
void BM_StuffForData(benchmark::State& state) {
  const std::string content = make_content(static_cast<std::size_t>(state.range(0)));
  std::string out;
  out.reserve(content.size() + content.size() / 32 + 8);
  for (auto _ : state) {
    out.clear();
    stuff_for_data(content, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(content.size()));
}
BENCHMARK(BM_StuffForData)->Arg(4 * 1024)->Arg(1024 * 1024);

// The floor: a plain copy of the same bytes (what any reader must at least do).
void BM_MemcpyFloor(benchmark::State& state) {
  const std::string content = make_content(static_cast<std::size_t>(state.range(0)));
  std::string out;
  out.reserve(content.size());
  for (auto _ : state) {
    out.assign(content);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(content.size()));
}
BENCHMARK(BM_MemcpyFloor)->Arg(4 * 1024)->Arg(1024 * 1024);

}  // namespace

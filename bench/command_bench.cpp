// SMTP command parsing, the per-line cost of every session: parse_command on a realistic
// mix of command lines, then the MAIL FROM / RCPT TO path parsers (proxy/smtp/).
#include <benchmark/benchmark.h>

#include <string>
#include <string_view>
#include <vector>

#include "proxy/smtp/address.hpp"
#include "proxy/smtp/command.hpp"

namespace {

using namespace mxgate::smtp;

// What one ordinary transaction sends, plus the odd commands a real client mix has.
const std::vector<std::string>& command_mix() {
  static const std::vector<std::string> lines{
      "EHLO mail-wr1-f54.google.com",
      "MAIL FROM:<bounces+1234567-abcd=example.org@em1234.news.example.com> SIZE=48213 "
      "BODY=8BITMIME",
      "RCPT TO:<alice@example.org>",
      "RCPT TO:<bob.smith@example.org> NOTIFY=SUCCESS,FAILURE",
      "DATA",
      "RSET",
      "NOOP",
      "QUIT",
      "ehlo [192.0.2.1]",
      "XYZZY something unknown",
  };
  return lines;
}

std::size_t total_bytes(const std::vector<std::string>& lines) {
  std::size_t bytes = 0;
  for (const auto& line : lines) bytes += line.size() + 2;  // the CRLF the reader removed
  return bytes;
}

void BM_ParseCommandMix(benchmark::State& state) {
  const auto& lines = command_mix();
  for (auto _ : state) {
    for (const auto& line : lines) {
      Command command = parse_command(line);
      benchmark::DoNotOptimize(command);
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(lines.size()));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(total_bytes(lines)));
}
BENCHMARK(BM_ParseCommandMix);

// One path argument per call, as the session hands it over (after the verb).
template <PathResult (*Parse)(std::string_view, const AddressLimits&)>
void path_bench(benchmark::State& state, const std::vector<std::string>& arguments) {
  const AddressLimits limits;
  std::size_t bytes = 0;
  for (const auto& argument : arguments) bytes += argument.size();
  for (auto _ : state) {
    for (const auto& argument : arguments) {
      PathResult result = Parse(argument, limits);
      if (!result.ok) state.SkipWithError("a benchmark path did not parse");
      benchmark::DoNotOptimize(result);
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(arguments.size()));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
}

void BM_ParseMailFrom(benchmark::State& state) {
  static const std::vector<std::string> arguments{
      "FROM:<sender@client.example>",
      "FROM:<bounces+1234567-abcd=example.org@em1234.news.example.com> SIZE=48213 BODY=8BITMIME",
      "FROM:<>",
      "FROM:<\"john smith\"@example.com> SMTPUTF8",
      "from: <user@[192.0.2.7]> ENVID=QQ314159 RET=HDRS",
  };
  path_bench<parse_mail_from>(state, arguments);
}
BENCHMARK(BM_ParseMailFrom);

void BM_ParseRcptTo(benchmark::State& state) {
  static const std::vector<std::string> arguments{
      "TO:<alice@example.org>",
      "TO:<bob.smith@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob.smith@example.org",
      "TO:<@relay.example:carol@example.org>",
      "TO:<dave%other.example@example.org>",
      "TO:<Postmaster@Example.ORG.>",
  };
  path_bench<parse_rcpt_to>(state, arguments);
}
BENCHMARK(BM_ParseRcptTo);

}  // namespace

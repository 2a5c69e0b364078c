// Content scanning throughput: RE2::Set per target vs a naive loop of single RE2 matches
// (10 to 5,000 rules), set compile time and memory, and the MIME walker vs GMime 3.
#include <benchmark/benchmark.h>
#include <gmime/gmime.h>
#include <malloc.h>
#include <re2/re2.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "filters/content.hpp"
#include "filters/mime.hpp"

namespace {

using mxgate::filters::ContentOptions;
using mxgate::filters::ContentScanner;
namespace mime = mxgate::filters::mime;

#ifndef MXGATE_SOURCE_DIR
#define MXGATE_SOURCE_DIR "."
#endif

// The message mix: the unit-test corpus (plain, newsletter, multipart/alternative, PDF
// attachment, forwarded message, malformed, Latin-1, KOI8-R, one 24 KB line, phishing).
const std::vector<std::string>& messages() {
  static const std::vector<std::string> loaded = [] {
    std::vector<std::string> out;
    std::string directory = std::string(MXGATE_SOURCE_DIR) + "/tests/corpus";
    if (const char* env = std::getenv("MXGATE_CORPUS")) directory = env;
    std::vector<std::filesystem::path> paths;
    for (const auto& entry : std::filesystem::directory_iterator(directory))
      if (entry.path().extension() == ".eml") paths.push_back(entry.path());
    std::sort(paths.begin(), paths.end());
    for (const auto& path : paths) {
      std::ifstream file(path, std::ios::binary);
      std::stringstream buffer;
      buffer << file.rdbuf();
      out.push_back(buffer.str());
    }
    return out;
  }();
  return loaded;
}

std::size_t mix_bytes() {
  std::size_t total = 0;
  for (const auto& message : messages()) total += message.size();
  return total;
}

// Rules shaped like real ones (SpamAssassin body/header/uri rules): case-insensitive
// phrases with word boundaries, alternations, character classes and counted repeats,
// spread over targets as admins do (mostly body).
std::vector<mxgate::policy::ContentRule> make_rules(int count) {
  static const char* words[] = {"prize",  "winner", "lottery", "viagra",   "casino",      "bitcoin",
                                "invest", "urgent", "account", "verify",   "refund",      "invoice",
                                "loan",   "credit", "offer",   "million",  "beneficiary", "kin",
                                "crypto", "wallet", "parcel",  "delivery", "password",    "bonus"};
  constexpr int word_count = sizeof(words) / sizeof(words[0]);
  std::vector<mxgate::policy::ContentRule> rules;
  for (int i = 0; i < count; ++i) {
    mxgate::policy::ContentRule rule;
    rule.name = "r" + std::to_string(i);
    rule.score = 1;
    const std::string a = words[i % word_count];
    const std::string b = words[(i / word_count + 7 * i) % word_count];
    const std::string tag = std::to_string(i);
    switch (i % 10) {
      case 0:
      case 1:
      case 2:
      case 3:
        rule.where = "body";
        rule.pattern = "(?i)\\b" + a + "\\s+" + b + tag + "\\b";
        break;
      case 4:
        rule.where = "body";
        rule.pattern = "(?i)(?:" + a + "|" + b + ")[-_ ]?(?:no|num)\\.?\\s*\\d{3," +
                       std::to_string(3 + i % 5) + "}x" + tag;
        break;
      case 5:
        rule.where = "body";
        rule.pattern = "(?i)" + a + ".{0,20}" + b + tag;
        break;
      case 6:
        rule.where = "subject";
        rule.pattern = "(?i)^(?:re: |fwd: )?" + a + " " + b + tag;
        break;
      case 7:
        rule.where = "url";
        rule.pattern = "(?i)^https?://[^/]*" + a + tag + "\\.";
        break;
      case 8:
        rule.where = "all-headers";
        rule.pattern = "^X-" + a + tag + ": ";
        break;
      default:
        rule.where = "raw";
        rule.pattern = "(?i)" + b + "=[0-9a-f]{2}" + tag;
        break;
    }
    rules.push_back(std::move(rule));
  }
  return rules;
}

std::shared_ptr<const ContentScanner> scanner_for(int count) {
  static std::map<int, std::shared_ptr<const ContentScanner>> cache;
  auto& scanner = cache[count];
  if (!scanner) {
    std::vector<std::string> errors;
    ContentOptions options;
    scanner = ContentScanner::build(make_rules(count), options, errors);
    if (!errors.empty()) throw std::runtime_error(errors.front());
  }
  return scanner;
}

// The whole content path per message: MIME walk + one RE2::Set pass per target.
void BM_ContentScan(benchmark::State& state) {
  const auto scanner = scanner_for(static_cast<int>(state.range(0)));
  std::size_t hits = 0;
  for (auto _ : state) {
    for (const auto& message : messages()) {
      const auto result = scanner->scan(message);
      hits += static_cast<std::size_t>(std::count(result.hits.begin(), result.hits.end(), true));
    }
  }
  benchmark::DoNotOptimize(hits);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * mix_bytes()));
  state.counters["sets"] = static_cast<double>(scanner->set_count());
}
BENCHMARK(BM_ContentScan)->Arg(10)->Arg(100)->Arg(1000)->Arg(5000)->Unit(benchmark::kMillisecond);

// The same rules as a loop of individual RE2 objects, each run over its target's lines.
struct NaiveRule {
  std::unique_ptr<RE2> regex;
  std::string where;
};

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> out;
  std::size_t position = 0;
  while (position < text.size()) {
    std::size_t end = text.find('\n', position);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(position, end - position);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out.push_back(line);
    position = end + 1;
  }
  return out;
}

void BM_NaiveLoop(benchmark::State& state) {
  std::vector<NaiveRule> rules;
  RE2::Options options;
  options.set_log_errors(false);
  for (const auto& rule : make_rules(static_cast<int>(state.range(0))))
    rules.push_back({std::make_unique<RE2>(rule.pattern, options), rule.where});
  std::size_t hits = 0;
  for (auto _ : state) {
    for (const auto& message : messages()) {
      const mime::Message parsed = mime::parse(message);
      std::map<std::string, std::vector<std::string_view>> targets;
      std::vector<std::string> header_lines;
      for (const auto& field : parsed.headers)
        header_lines.push_back(field.name + ": " + field.value);
      for (const auto& part : parsed.texts)
        for (auto line : lines_of(part.text)) targets["body"].push_back(line);
      for (const auto& line : header_lines) targets["all-headers"].push_back(line);
      if (const std::string* subject = parsed.header("subject"))
        targets["subject"].push_back(*subject);
      for (const auto& url : parsed.urls) targets["url"].push_back(url);
      targets["raw"] = lines_of(std::string_view(message).substr(parsed.body_offset));
      for (const auto& rule : rules) {
        for (std::string_view line : targets[rule.where]) {
          if (RE2::PartialMatch(line, *rule.regex)) {
            ++hits;
            break;
          }
        }
      }
    }
  }
  benchmark::DoNotOptimize(hits);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * mix_bytes()));
}
BENCHMARK(BM_NaiveLoop)->Arg(10)->Arg(100)->Arg(1000)->Arg(5000)->Unit(benchmark::kMillisecond);

// Compile time of the sets, and the heap they hold after a warm-up scan (the DFA cache
// fills lazily, so memory right after compiling understates it).
void BM_SetCompile(benchmark::State& state) {
  const auto rules = make_rules(static_cast<int>(state.range(0)));
  double heap = 0;
  for (auto _ : state) {
    const std::size_t before = mallinfo2().uordblks;
    std::vector<std::string> errors;
    auto scanner = ContentScanner::build(rules, ContentOptions{}, errors);
    state.PauseTiming();
    for (const auto& message : messages()) benchmark::DoNotOptimize(scanner->scan(message));
    heap = static_cast<double>(mallinfo2().uordblks - before);
    scanner.reset();
    state.ResumeTiming();
  }
  state.counters["heap_MiB"] = heap / (1 << 20);
}
BENCHMARK(BM_SetCompile)->Arg(10)->Arg(100)->Arg(1000)->Arg(5000)->Unit(benchmark::kMillisecond);

// MIME only: the hand-written walker (headers, decoding, charset, HTML to text, URLs)...
void BM_MimeWalk(benchmark::State& state) {
  std::size_t texts = 0;
  for (auto _ : state)
    for (const auto& message : messages()) texts += mime::parse(message).texts.size();
  benchmark::DoNotOptimize(texts);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * mix_bytes()));
}
BENCHMARK(BM_MimeWalk)->Unit(benchmark::kMicrosecond);

// ...vs GMime 3 doing less: parse, decoded header values, decoded UTF-8 text of text
// parts, attachment names (no HTML stripping, no URL search).
struct GmimeWalk {
  std::size_t bytes = 0;
};

void gmime_visit(GMimeObject*, GMimeObject* part, gpointer data) {
  auto* walk = static_cast<GmimeWalk*>(data);
  if (GMIME_IS_TEXT_PART(part)) {
    if (char* text = g_mime_text_part_get_text(GMIME_TEXT_PART(part))) {
      walk->bytes += std::strlen(text);
      g_free(text);
    }
  } else if (GMIME_IS_PART(part)) {
    if (const char* name = g_mime_part_get_filename(GMIME_PART(part)))
      walk->bytes += std::strlen(name);
  }
}

void BM_GmimeWalk(benchmark::State& state) {
  static const bool initialised = [] {
    g_mime_init();
    return true;
  }();
  benchmark::DoNotOptimize(initialised);
  GmimeWalk walk;
  for (auto _ : state) {
    for (const auto& message : messages()) {
      GMimeStream* stream = g_mime_stream_mem_new_with_buffer(message.data(), message.size());
      GMimeParser* parser = g_mime_parser_new_with_stream(stream);
      GMimeMessage* parsed = g_mime_parser_construct_message(parser, nullptr);
      if (parsed) {
        GMimeHeaderList* headers = g_mime_object_get_header_list(GMIME_OBJECT(parsed));
        const int count = g_mime_header_list_get_count(headers);
        for (int i = 0; i < count; ++i) {
          GMimeHeader* header = g_mime_header_list_get_header_at(headers, i);
          if (const char* value = g_mime_header_get_value(header)) walk.bytes += std::strlen(value);
        }
        g_mime_message_foreach(parsed, gmime_visit, &walk);
        g_object_unref(parsed);
      }
      g_object_unref(parser);
      g_object_unref(stream);
    }
  }
  benchmark::DoNotOptimize(walk.bytes);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * mix_bytes()));
}
BENCHMARK(BM_GmimeWalk)->Unit(benchmark::kMicrosecond);

}  // namespace

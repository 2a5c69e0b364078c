// Content scanning throughput: the scanner (literals first, then the patterns that can
// match) vs a naive loop of single RE2 matches (10 to 5,000 rules), build time and
// memory, and the MIME walker vs GMime 3, on two message mixes: generated ordinary mail
// (the figure issue 8's target is about) and the unit-test corpus (edge cases).
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

// Ordinary mail, generated the same way on every run: 12 messages of 4 to 100 KiB
// (~480 KiB), each with the dozen header fields a real one carries (Received, DKIM,
// Authentication-Results...). Text/plain in 7bit, quoted-printable and base64;
// multipart/alternative text + HTML (quoted-printable, or base64 as Gmail sends
// non-ASCII mail), HTML with tables, styles, links and entities; one multipart/mixed
// with a base64 PDF. The words include the ones the rules below are built on
// ("account", "verify", "invoice"...), so the scan meets the partial matches real text
// gives it.
class MixWriter {
 public:
  explicit MixWriter(std::uint32_t seed) : state_(seed) {}

  std::uint32_t next() {
    state_ = state_ * 1664525u + 1013904223u;
    return state_ >> 8;
  }
  // Everyday words, the short ones more often (the smaller of two draws); one word in 40
  // is one the rules are built on (each ~0.15 % of words, more than in most ham).
  std::string_view word() {
    static constexpr std::string_view kCommon[] = {
        "the",      "and",      "to",       "of",       "a",         "in",         "for",
        "is",       "on",       "that",     "with",     "you",       "this",       "we",
        "your",     "will",     "be",       "are",      "from",      "at",         "as",
        "have",     "our",      "not",      "can",      "it",        "by",         "or",
        "if",       "all",      "an",       "was",      "do",        "so",         "up",
        "out",      "any",      "there",    "here",     "when",      "which",      "what",
        "please",   "meeting",  "project",  "report",   "team",      "update",     "review",
        "schedule", "next",     "week",     "thanks",   "regards",   "attached",   "document",
        "customer", "service",  "order",    "payment",  "details",   "request",    "support",
        "question", "budget",   "quarter",  "results",  "Monday",    "Friday",     "office",
        "shipping", "product",  "price",    "discount", "new",       "more",       "information",
        "contact",  "today",    "time",     "about",    "would",     "could",      "should",
        "like",     "also",     "agenda",   "draft",    "version",   "slides",     "notes",
        "minutes",  "call",     "tomorrow", "morning",  "afternoon", "colleagues", "manager",
        "release",  "feature",  "issue",    "ticket",   "server",    "backup",     "training",
        "holiday",  "travel",   "expenses", "contract", "proposal",  "feedback",   "summary",
        "figures",  "forecast", "planning", "deadline", "available", "confirm",    "questions"};
    static constexpr std::string_view kRuleWords[] = {
        "account", "verify", "invoice", "delivery", "password", "offer",  "credit", "free",
        "Bitcoin", "Loan",   "bonus",   "refund",   "million",  "urgent", "winner"};
    constexpr std::uint32_t common = sizeof(kCommon) / sizeof(kCommon[0]);
    constexpr std::uint32_t rule_words = sizeof(kRuleWords) / sizeof(kRuleWords[0]);
    if (next() % 40 == 0) return kRuleWords[next() % rule_words];
    return kCommon[std::min(next() % common, next() % common)];
  }
  // Sentences of ordinary words, some capitalised, some with numbers and accents.
  std::string sentence() {
    std::string out;
    const int words = 6 + static_cast<int>(next() % 14);
    for (int i = 0; i < words; ++i) {
      if (i) out += next() % 23 == 0 ? ", " : " ";
      std::string_view w = word();
      if (next() % 29 == 0) out += std::to_string(next() % 10000) + " ";
      if (next() % 41 == 0) out += "caf\xc3\xa9 ";  // UTF-8 'é': QP/base64 escapes
      out += w;
    }
    out += next() % 5 == 0 ? "?" : ".";
    return out;
  }
  std::string url(bool html) {
    static constexpr std::string_view kHosts[] = {"www.example.com", "news.shop.example",
                                                  "links.mailer.example.net", "docs.example.org",
                                                  "click.tracking.example"};
    return "https://" + std::string(kHosts[next() % 5]) + "/c/" + std::to_string(next()) +
           "?utm_source=newsletter" + (html ? "&amp;" : "&") +
           "id=" + std::to_string(next() % 100000);
  }
  // Plain text wrapped at 72 columns, paragraphs separated by blank lines.
  std::string plain_text(std::size_t size) {
    std::string out;
    std::size_t column = 0;
    while (out.size() < size) {
      const std::string s = sentence();
      if (column + s.size() + 1 > 72) {
        out += "\n";
        column = 0;
        if (next() % 4 == 0) out += "\n";
        if (next() % 9 == 0) out += url(false) + "\n";
      } else if (column) {
        out += " ";
        ++column;
      }
      out += s;
      column += s.size();
    }
    out += "\n";
    return out;
  }
  // An HTML newsletter body: style block, layout tables, links, entities.
  std::string html_text(std::size_t size) {
    std::string out =
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Update</title>\n"
        "<style type=\"text/css\">body { font-family: Arial, sans-serif; } .btn { color: "
        "#ffffff; background: #0066cc; } td { padding: 8px; }</style></head>\n"
        "<body><table width=\"600\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\">\n";
    while (out.size() < size) {
      out += "<tr><td style=\"font-size:14px;line-height:20px;color:#333333\"><p>";
      const int sentences = 1 + static_cast<int>(next() % 4);
      for (int i = 0; i < sentences; ++i) {
        if (i) out += next() % 3 == 0 ? "<br>\n" : " ";
        out += sentence();
        if (next() % 7 == 0) out += " &nbsp;&amp; <b>" + std::string(word()) + "</b>";
      }
      out += "</p>";
      if (next() % 3 == 0)
        out += "\n<p><a class=\"btn\" href=\"" + url(true) + "\">" + std::string(word()) + " " +
               std::string(word()) + "</a></p>";
      out += "</td></tr>\n";
    }
    out += "</table></body></html>\n";
    return out;
  }
  static std::string quoted_printable(std::string_view text) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    std::size_t column = 0;
    for (char c : text) {
      if (c == '\n') {
        out += "\r\n";
        column = 0;
        continue;
      }
      const auto u = static_cast<unsigned char>(c);
      std::string piece;
      if (u >= 0x80 || c == '=') {
        piece = {'=', kHex[u >> 4], kHex[u & 15]};
      } else {
        piece = std::string(1, c);
      }
      if (column + piece.size() > 75) {
        out += "=\r\n";
        column = 0;
      }
      out += piece;
      column += piece.size();
    }
    return out;
  }
  static std::string base64(std::string_view bytes) {
    static constexpr char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::size_t column = 0;
    for (std::size_t i = 0; i < bytes.size(); i += 3) {
      std::uint32_t group = static_cast<unsigned char>(bytes[i]) << 16;
      if (i + 1 < bytes.size()) group |= static_cast<unsigned char>(bytes[i + 1]) << 8;
      if (i + 2 < bytes.size()) group |= static_cast<unsigned char>(bytes[i + 2]);
      out += kAlphabet[(group >> 18) & 63];
      out += kAlphabet[(group >> 12) & 63];
      out += i + 1 < bytes.size() ? kAlphabet[(group >> 6) & 63] : '=';
      out += i + 2 < bytes.size() ? kAlphabet[group & 63] : '=';
      column += 4;
      if (column == 76) {
        out += "\r\n";
        column = 0;
      }
    }
    if (column) out += "\r\n";
    return out;
  }
  static std::string crlf(std::string_view text) {
    std::string out;
    for (char c : text) {
      if (c == '\n') out += '\r';
      out += c;
    }
    return out;
  }
  std::string header(std::string_view content_type, bool newsletter) {
    const std::string id = std::to_string(next());
    std::string out =
        "Return-Path: <bounce-" + id +
        "@mailer.example.net>\r\n"
        "Received: from mail-" +
        std::to_string(next() % 200) + ".mailer.example.net (mail.mailer.example.net [192.0.2." +
        std::to_string(next() % 250) + "])\r\n\tby mx.example.org (Postfix) with ESMTPS id " + id +
        "\r\n\tfor <staff@example.org>; Tue, 14 Mar 2023 10:12:" +
        std::to_string(10 + next() % 50) +
        " +0000 (UTC)\r\n"
        "Received: by mail-" +
        std::to_string(next() % 200) + ".mailer.example.net with SMTP id " + id +
        "; Tue, 14 Mar 2023 03:12:10 -0700 (PDT)\r\n"
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=mailer.example.net;\r\n"
        " s=20210112; h=mime-version:from:date:message-id:subject:to;\r\n"
        " bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
        " b=" +
        base64(std::string(60, static_cast<char>(next()))).substr(0, 76) +
        "\r\n"
        "Authentication-Results: mx.example.org; dkim=pass header.d=mailer.example.net;\r\n"
        " spf=pass smtp.mailfrom=mailer.example.net\r\n"
        "From: \"" +
        std::string(word()) + " " + std::string(word()) + "\" <sender" +
        std::to_string(next() % 1000) +
        "@mailer.example.net>\r\n"
        "To: staff@example.org\r\n"
        "Subject: " +
        sentence() +
        "\r\n"
        "Date: Tue, 14 Mar 2023 10:12:10 +0000\r\n"
        "Message-ID: <" +
        id + ".mail@mailer.example.net>\r\n";
    if (newsletter)
      out += "List-Unsubscribe: <https://links.mailer.example.net/u/" + id +
             ">, <mailto:unsubscribe-" + id + "@mailer.example.net>\r\n";
    out += "MIME-Version: 1.0\r\nContent-Type: " + std::string(content_type) + "\r\n";
    return out;
  }

 private:
  std::uint32_t state_;
};

enum class MixKind {
  plain_7bit,
  plain_qp,
  plain_base64,
  alternative_qp,
  alternative_base64,
  mixed_pdf
};

std::string make_message(MixKind kind, std::size_t size, std::uint32_t seed) {
  MixWriter writer(seed);
  const std::string boundary =
      "----=_Part_" + std::to_string(seed) + "_" + std::to_string(writer.next());
  auto part = [&](std::string_view type, std::string_view encoding, const std::string& body) {
    return "--" + boundary + "\r\nContent-Type: " + std::string(type) +
           "\r\nContent-Transfer-Encoding: " + std::string(encoding) + "\r\n\r\n" + body;
  };
  const std::string multipart = "multipart/" +
                                std::string(kind == MixKind::mixed_pdf ? "mixed" : "alternative") +
                                "; boundary=\"" + boundary + "\"";
  switch (kind) {
    case MixKind::plain_7bit:
      return writer.header("text/plain; charset=us-ascii", false) +
             "Content-Transfer-Encoding: 7bit\r\n\r\n" + MixWriter::crlf(writer.plain_text(size));
    case MixKind::plain_qp:
      return writer.header("text/plain; charset=utf-8", false) +
             "Content-Transfer-Encoding: quoted-printable\r\n\r\n" +
             MixWriter::quoted_printable(writer.plain_text(size * 95 / 100));
    case MixKind::plain_base64:
      return writer.header("text/plain; charset=utf-8", false) +
             "Content-Transfer-Encoding: base64\r\n\r\n" +
             MixWriter::base64(writer.plain_text(size * 3 / 4));
    case MixKind::alternative_qp:
    case MixKind::alternative_base64: {
      const bool qp = kind == MixKind::alternative_qp;
      const std::string html = writer.html_text(size * (qp ? 60 : 45) / 100);
      const std::string text = writer.plain_text(size * (qp ? 35 : 27) / 100);
      auto encode = [&](const std::string& body) {
        return qp ? MixWriter::quoted_printable(body) : MixWriter::base64(body);
      };
      const std::string encoding = qp ? "quoted-printable" : "base64";
      return writer.header(multipart, true) + "\r\n" +
             part("text/plain; charset=utf-8", encoding, encode(text)) +
             part("text/html; charset=utf-8", encoding, encode(html)) + "--" + boundary + "--\r\n";
    }
    case MixKind::mixed_pdf: {
      std::string pdf = "%PDF-1.4\n";
      while (pdf.size() < size * 55 / 100) pdf += static_cast<char>(writer.next());
      return writer.header(multipart, false) + "\r\n" +
             part("text/plain; charset=utf-8", "quoted-printable",
                  MixWriter::quoted_printable(writer.plain_text(size * 25 / 100))) +
             "--" + boundary +
             "\r\nContent-Type: application/pdf; name=\"statement.pdf\"\r\n"
             "Content-Disposition: attachment; filename=\"statement.pdf\"\r\n"
             "Content-Transfer-Encoding: base64\r\n\r\n" +
             MixWriter::base64(pdf) + "--" + boundary + "--\r\n";
    }
  }
  return {};
}

const std::vector<std::string>& ordinary_mix() {
  static const std::vector<std::string> generated = [] {
    struct Entry {
      MixKind kind;
      std::size_t kib;
    };
    constexpr Entry kEntries[] = {
        {MixKind::plain_7bit, 4},
        {MixKind::alternative_qp, 6},
        {MixKind::plain_qp, 8},
        {MixKind::alternative_base64, 12},
        {MixKind::alternative_qp, 16},
        {MixKind::plain_7bit, 24},
        {MixKind::alternative_qp, 32},
        {MixKind::mixed_pdf, 40},
        {MixKind::alternative_base64, 56},
        {MixKind::alternative_qp, 72},
        {MixKind::plain_base64, 88},
        {MixKind::alternative_qp, 100},
    };
    std::vector<std::string> out;
    std::uint32_t seed = 1;
    for (const auto& entry : kEntries)
      out.push_back(make_message(entry.kind, entry.kib * 1024, seed++));
    return out;
  }();
  return generated;
}

const std::vector<std::string>& mix(int which) { return which == 0 ? ordinary_mix() : messages(); }

std::size_t mix_bytes(const std::vector<std::string>& mix) {
  std::size_t total = 0;
  for (const auto& message : mix) total += message.size();
  return total;
}

std::size_t mix_bytes() { return mix_bytes(messages()); }

// Google Benchmark's bytes_per_second is in binary units (MiB/s); the target is in MB/s,
// hence the "MB" rate counter (10^6 bytes per second).
void report_rate(benchmark::State& state, std::size_t bytes_per_iteration) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes_per_iteration));
  state.counters["MB"] =
      benchmark::Counter(static_cast<double>(state.iterations() * bytes_per_iteration) / 1e6,
                         benchmark::Counter::kIsRate);
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

// The whole content path per message: MIME walk + ContentScanner::scan.
// Arguments: rule count, then the mix (0: ordinary mail, 1: the test corpus).
void BM_ContentScan(benchmark::State& state) {
  const auto scanner = scanner_for(static_cast<int>(state.range(0)));
  const auto& messages = mix(static_cast<int>(state.range(1)));
  std::size_t hits = 0;
  for (auto _ : state) {
    for (const auto& message : messages) {
      const auto result = scanner->scan(message);
      hits += static_cast<std::size_t>(std::count(result.hits.begin(), result.hits.end(), true));
    }
  }
  benchmark::DoNotOptimize(hits);
  report_rate(state, mix_bytes(messages));
  state.counters["sets"] = static_cast<double>(scanner->set_count());
}
BENCHMARK(BM_ContentScan)
    ->ArgNames({"rules", "corpus"})
    ->ArgsProduct({{10, 100, 1000, 5000}, {0, 1}})
    ->Unit(benchmark::kMillisecond);

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

// Build time of the scanner (an RE2 per rule, the atoms, the sets), and the heap it holds
// after a warm-up scan (DFA caches fill lazily, so memory right after building
// understates it).
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
  const auto& messages = mix(static_cast<int>(state.range(0)));
  std::size_t texts = 0;
  for (auto _ : state)
    for (const auto& message : messages) texts += mime::parse(message).texts.size();
  benchmark::DoNotOptimize(texts);
  report_rate(state, mix_bytes(messages));
}
BENCHMARK(BM_MimeWalk)->ArgName("corpus")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

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

// A hand-written MIME walker over the buffered message (RFC 2045-2047, 2231, 5322).
//
// Why not GMime 3: measured in the same run on the corpus mix (bench/content_bench.cpp,
// BM_MimeWalk vs BM_GmimeWalk, figures in bench/README.md), GMime's parse plus text
// decoding is several times slower than this walker, allocates a GObject per part and
// copies the message into its stream, and it silently repairs what we want to report
// (bad base64, a missing closing boundary). The walker below needs no global init, no
// per-thread state besides an iconv cache, and one pass over the bytes.
#include "filters/mime.hpp"

#include <iconv.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <unordered_set>

namespace mxgate::filters::mime {

const char* finding_name(Finding finding) {
  switch (finding) {
    case Finding::missing_boundary:
      return "missing_boundary";
    case Finding::unterminated_multipart:
      return "unterminated_multipart";
    case Finding::no_parts:
      return "no_parts";
    case Finding::bad_base64:
      return "bad_base64";
    case Finding::bad_quoted_printable:
      return "bad_quoted_printable";
    case Finding::bad_header:
      return "bad_header";
    case Finding::bad_encoded_word:
      return "bad_encoded_word";
    case Finding::unknown_charset:
      return "unknown_charset";
    case Finding::unknown_encoding:
      return "unknown_encoding";
    case Finding::nesting_too_deep:
      return "nesting_too_deep";
    case Finding::too_many_parts:
      return "too_many_parts";
    case Finding::truncated:
      return "truncated";
  }
  return "unknown";
}

namespace {

char lower_char(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = lower_char(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower_char(a[i]) != lower_char(b[i])) return false;
  return true;
}

bool istarts_with(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && iequals(text.substr(0, prefix.size()), prefix);
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view text) {
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

// The first `c` in `text` at or after `from`, else text.size(). The decoders look for
// bytes that are often only a few characters apart ('=' in quoted-printable HTML, line
// ends, the "." of each sentence): the first 32 bytes are tested inline with SSE2,
// memchr (call, set-up) only takes over for longer distances.
std::size_t find_byte(std::string_view text, std::size_t from, char c) {
  const char* data = text.data();
  const std::size_t size = text.size();
#ifdef __SSE2__
  const __m128i wanted = _mm_set1_epi8(c);
  for (int block = 0; block < 2 && from + 16 <= size; ++block, from += 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + from));
    const auto mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, wanted)));
    if (mask) return from + static_cast<std::size_t>(std::countr_zero(mask));
  }
#endif
  if (from >= size) return size;
  const void* found = std::memchr(data + from, c, size - from);
  return found ? static_cast<std::size_t>(static_cast<const char*>(found) - data) : size;
}

// The first ':' or '.' at or after `position`, else text.size(): where find_urls looks.
std::size_t find_colon_or_dot(std::string_view text, std::size_t position) {
  const char* data = text.data();
  const std::size_t size = text.size();
#ifdef __SSE2__
  const __m128i colon = _mm_set1_epi8(':'), dot = _mm_set1_epi8('.');
  while (position + 16 <= size) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + position));
    const auto mask = static_cast<unsigned>(
        _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(bytes, colon), _mm_cmpeq_epi8(bytes, dot))));
    if (mask) return position + static_cast<std::size_t>(std::countr_zero(mask));
    position += 16;
  }
#endif
  while (position < size && data[position] != ':' && data[position] != '.') ++position;
  return position;
}

// Appends `in` without its '\r' bytes. 16 bytes are stored at a time and the write
// position moves past those kept, so a '\r' costs a step, not an append call.
void append_without_cr(std::string_view in, std::string& out) {
  const std::size_t start = out.size();
  out.resize(start + in.size() + 16);
  char* write = out.data() + start;
  const char* read = in.data();
  const char* const end = read + in.size();
#ifdef __SSE2__
  const __m128i carriage = _mm_set1_epi8('\r');
  while (end - read >= 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(read));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(write), bytes);
    const auto mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, carriage)));
    const int kept = mask ? std::countr_zero(mask) : 16;
    write += kept;
    read += kept + (mask ? 1 : 0);
  }
#endif
  for (; read < end; ++read)
    if (*read != '\r') *write++ = *read;
  out.resize(static_cast<std::size_t>(write - out.data()));
}

// One line of `text` from `position`, without its line ending; `position` moves past it.
std::string_view next_line(std::string_view text, std::size_t& position) {
  const std::size_t start = position;
  std::size_t end = find_byte(text, start, '\n');
  position = end < text.size() ? end + 1 : text.size();
  if (end > start && text[end - 1] == '\r') --end;
  return text.substr(start, end - start);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, std::uint32_t code_point) {
  if (code_point > 0x10ffff || (code_point >= 0xd800 && code_point <= 0xdfff)) code_point = 0xfffd;
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xc0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3f));
  } else if (code_point < 0x10000) {
    out += static_cast<char>(0xe0 | (code_point >> 12));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (code_point & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (code_point >> 18));
    out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (code_point & 0x3f));
  }
}

constexpr std::array<std::int8_t, 256> make_base64_table() {
  std::array<std::int8_t, 256> table{};
  for (auto& entry : table) entry = -1;
  const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (int i = 0; i < 64; ++i)
    table[static_cast<unsigned char>(alphabet[i])] = static_cast<std::int8_t>(i);
  return table;
}
constexpr std::array<std::int8_t, 256> kBase64 = make_base64_table();

// What a well-formed base64 body may hold: the alphabet, padding and line breaks.
constexpr std::array<bool, 256> make_base64_body_table() {
  std::array<bool, 256> table{};
  for (int c = 0; c < 256; ++c)
    table[c] = kBase64[c] >= 0 || c == '=' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
  return table;
}
constexpr std::array<bool, 256> kBase64Body = make_base64_body_table();

// Characters html_to_text copies as they are, in runs: all but markup starts ('<', '&')
// and the whitespace it collapses.
constexpr std::array<bool, 256> make_html_plain_table() {
  std::array<bool, 256> table{};
  for (int c = 0; c < 256; ++c)
    table[c] = c != '<' && c != '&' && c != ' ' && c != '\t' && c != '\r' && c != '\n';
  return table;
}
constexpr std::array<bool, 256> kHtmlPlain = make_html_plain_table();

// ...and what such a run may go on with: a single space between two words comes out as
// it went in, which is what collapsing gives.
constexpr std::array<bool, 256> make_html_run_table() {
  std::array<bool, 256> table = make_html_plain_table();
  table[' '] = true;
  return table;
}
constexpr std::array<bool, 256> kHtmlRun = make_html_run_table();

// Media type and parameters of Content-Type / Content-Disposition (RFC 2045 5.1, with
// RFC 2231 continuations and charset'language' prefixes).
struct FieldParameters {
  std::string value;  // lower-case: "multipart/mixed", "attachment"
  std::string boundary;
  std::string charset;
  std::string name;  // filename= or name=
};

std::string percent_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() + 0 && hex_value(text[i + 1]) >= 0 &&
        hex_value(text[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

FieldParameters parse_parameters(std::string_view field) {
  FieldParameters result;
  std::size_t position = 0;
  auto skip_space = [&] {
    while (position < field.size() && is_space(field[position])) ++position;
  };
  const std::size_t semicolon = field.find(';');
  result.value = lower(trim(field.substr(0, semicolon)));
  if (semicolon == std::string_view::npos) return result;
  position = semicolon + 1;
  // RFC 2231 pieces: name*0, name*1*, ... joined in order.
  std::map<std::string, std::map<int, std::pair<std::string, bool>>> pieces;
  while (position < field.size()) {
    skip_space();
    const std::size_t equals = field.find('=', position);
    if (equals == std::string_view::npos) break;
    std::string key = lower(trim(field.substr(position, equals - position)));
    position = equals + 1;
    skip_space();
    std::string value;
    if (position < field.size() && field[position] == '"') {
      ++position;
      while (position < field.size() && field[position] != '"') {
        if (field[position] == '\\' && position + 1 < field.size()) ++position;
        value += field[position++];
      }
      ++position;
    } else {
      const std::size_t end = std::min(field.find(';', position), field.size());
      value = std::string(trim(field.substr(position, end - position)));
      position = end;
    }
    const std::size_t next = field.find(';', std::min(position, field.size()));
    position = next == std::string_view::npos ? field.size() : next + 1;
    bool extended = false;
    if (!key.empty() && key.back() == '*') {
      extended = true;
      key.pop_back();
    }
    int index = -1;
    if (const std::size_t star = key.find('*'); star != std::string::npos) {
      index = 0;
      for (char c : key.substr(star + 1))
        index = (c >= '0' && c <= '9' && index < 1000) ? index * 10 + (c - '0') : index;
      key.resize(star);
    }
    pieces[key][index] = {std::move(value), extended};
  }
  for (auto& [key, parts] : pieces) {
    std::string joined;
    std::string charset;
    bool first = true;
    for (auto& [index, piece] : parts) {
      std::string text = piece.first;
      if (piece.second) {
        if (first) {
          // charset'language'encoded-text
          const std::size_t quote1 = text.find('\'');
          const std::size_t quote2 =
              quote1 == std::string::npos ? std::string::npos : text.find('\'', quote1 + 1);
          if (quote2 != std::string::npos) {
            charset = lower(text.substr(0, quote1));
            text = text.substr(quote2 + 1);
          }
        }
        text = percent_decode(text);
      }
      joined += text;
      first = false;
    }
    if (!charset.empty()) {
      std::string converted;
      convert_to_utf8(charset, joined, converted);
      joined = std::move(converted);
    } else if (joined.find("=?") != std::string::npos) {
      // Outlook and others put RFC 2047 words in quoted filenames, against RFC 2047 5.
      std::string decoded;
      decode_header_words(joined, decoded);
      joined = std::move(decoded);
    }
    if (key == "boundary") {
      result.boundary = std::move(joined);
    } else if (key == "charset") {
      result.charset = lower(trim(joined));
    } else if (key == "filename" || (key == "name" && result.name.empty())) {
      result.name = std::move(joined);
    }
  }
  return result;
}

// iconv descriptors are costly to open and not shareable between threads: one small
// cache per thread, reset before each use.
class IconvCache {
 public:
  ~IconvCache() {
    for (auto& [name, descriptor] : descriptors_)
      if (descriptor != reinterpret_cast<iconv_t>(-1)) iconv_close(descriptor);
  }
  iconv_t get(const std::string& charset) {
    auto found = descriptors_.find(charset);
    if (found != descriptors_.end()) return found->second;
    if (descriptors_.size() >= 64) return reinterpret_cast<iconv_t>(-1);  // hostile variety
    iconv_t descriptor = iconv_open("UTF-8", charset.c_str());
    descriptors_.emplace(charset, descriptor);
    return descriptor;
  }

 private:
  std::map<std::string, iconv_t> descriptors_;
};

bool is_utf8_alias(std::string_view charset) {
  return charset.empty() || charset == "utf-8" || charset == "utf8" || charset == "us-ascii" ||
         charset == "ascii" || charset == "ansi_x3.4-1968";
}

// Maps names mail clients use but iconv does not know.
std::string iconv_name(std::string_view charset) {
  if (charset == "ks_c_5601-1987") return "CP949";
  if (charset == "x-sjis" || charset == "shift-jis") return "SHIFT_JIS";
  if (charset == "x-gbk") return "GBK";
  return std::string(charset);
}

// RFC 2047 5(1): whitespace between two adjacent encoded words is not displayed.
bool only_space(std::string_view text) { return std::all_of(text.begin(), text.end(), is_space); }

struct NamedEntity {
  std::string_view name;
  std::uint32_t code_point;
};
// The entities spam uses to dodge plain-text patterns; the rest of HTML's 2,231 stay
// literal (no rule author writes &Cconint;).
constexpr NamedEntity kEntities[] = {
    {"amp", '&'},       {"lt", '<'},       {"gt", '>'},       {"quot", '"'},     {"apos", '\''},
    {"nbsp", ' '},      {"copy", 0xa9},    {"reg", 0xae},     {"trade", 0x2122}, {"euro", 0x20ac},
    {"pound", 0xa3},    {"yen", 0xa5},     {"cent", 0xa2},    {"dollar", '$'},   {"ndash", 0x2013},
    {"mdash", 0x2014},  {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201c}, {"rdquo", 0x201d},
    {"hellip", 0x2026}, {"bull", 0x2022},  {"middot", 0xb7},  {"laquo", 0xab},   {"raquo", 0xbb},
    {"shy", 0xad},      {"zwj", 0x200d},   {"zwnj", 0x200c},  {"eacute", 0xe9},  {"egrave", 0xe8},
    {"aacute", 0xe1},   {"agrave", 0xe0},  {"iacute", 0xed},  {"oacute", 0xf3},  {"uacute", 0xfa},
    {"ntilde", 0xf1},   {"auml", 0xe4},    {"ouml", 0xf6},    {"uuml", 0xfc},    {"szlig", 0xdf},
    {"Auml", 0xc4},     {"Ouml", 0xd6},    {"Uuml", 0xdc},    {"ccedil", 0xe7},  {"period", '.'},
    {"commat", '@'},    {"colon", ':'},    {"sol", '/'},
};

// Characters that render as nothing: dropped, or "fr&shy;ee" would dodge "free".
bool invisible(std::uint32_t code_point) {
  return code_point == 0xad || (code_point >= 0x200b && code_point <= 0x200d) ||
         code_point == 0x2060 || code_point == 0xfeff;
}

// Decodes the entity at `html[position]` ('&'); returns the characters consumed (0: not
// an entity, the '&' is literal).
std::size_t decode_entity(std::string_view html, std::size_t position, std::string& out) {
  std::size_t end = position + 1;
  const std::size_t limit = std::min(html.size(), position + 12);
  while (end < limit && html[end] != ';' && !is_space(html[end]) && html[end] != '&' &&
         html[end] != '<')
    ++end;
  const std::string_view body = html.substr(position + 1, end - position - 1);
  const bool terminated = end < html.size() && html[end] == ';';
  std::uint32_t code_point = 0;
  bool found = false;
  if (!body.empty() && body[0] == '#') {
    const bool hex = body.size() > 1 && (body[1] == 'x' || body[1] == 'X');
    std::size_t digits = 0;
    for (char c : body.substr(hex ? 2 : 1)) {
      const int value = hex ? hex_value(c) : (c >= '0' && c <= '9' ? c - '0' : -1);
      if (value < 0 || code_point > 0x10ffff) break;
      code_point = code_point * (hex ? 16 : 10) + static_cast<std::uint32_t>(value);
      ++digits;
    }
    found = digits > 0 && digits == body.size() - (hex ? 2 : 1);
  } else {
    for (const auto& entity : kEntities) {
      if (entity.name == body) {
        code_point = entity.code_point;
        found = true;
        break;
      }
    }
  }
  if (!found) return 0;
  if (code_point == 0xa0) code_point = ' ';
  if (!invisible(code_point)) append_utf8(out, code_point == 0 ? 0xfffd : code_point);
  return end - position + (terminated ? 1 : 0);
}

std::string decode_entities(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '&') {
      if (std::size_t used = decode_entity(text, i, out)) {
        i += used - 1;
        continue;
      }
    }
    out += text[i];
  }
  return out;
}

// Up to 8 characters packed into an integer, so that tag names can be switched on
// (html_to_text asks for every tag).
constexpr std::uint64_t pack_name(std::string_view name) {
  std::uint64_t packed = 0;
  for (std::size_t i = 0; i < name.size() && i < 8; ++i)
    packed |= static_cast<std::uint64_t>(static_cast<unsigned char>(name[i])) << (8 * i);
  return packed;
}

// Elements whose end starts a new rendered line.
bool block_element(std::string_view name) {
  if (name.size() == 10) return iequals(name, "blockquote");
  if (name.empty() || name.size() > 8) return false;
  std::uint64_t key = 0;
  for (std::size_t i = 0; i < name.size(); ++i)
    key |= static_cast<std::uint64_t>(static_cast<unsigned char>(lower_char(name[i]))) << (8 * i);
  // A switch: the compiler turns it into a few comparisons, not one per element.
  switch (key) {
    case pack_name("br"):
    case pack_name("p"):
    case pack_name("div"):
    case pack_name("tr"):
    case pack_name("li"):
    case pack_name("ul"):
    case pack_name("ol"):
    case pack_name("table"):
    case pack_name("h1"):
    case pack_name("h2"):
    case pack_name("h3"):
    case pack_name("h4"):
    case pack_name("h5"):
    case pack_name("h6"):
    case pack_name("pre"):
    case pack_name("hr"):
    case pack_name("title"):
    case pack_name("center"):
    case pack_name("dd"):
    case pack_name("dt"):
    case pack_name("section"):
    case pack_name("article"):
    case pack_name("header"):
    case pack_name("footer"):
    case pack_name("body"):
    case pack_name("html"):
    case pack_name("head"):
    case pack_name("form"):
      return true;
    default:
      return false;
  }
}

// The value of attribute `name` inside a tag's text, entities decoded.
bool tag_attribute(std::string_view tag, std::string_view name, std::string& value) {
  std::size_t position = 0;
  while (position < tag.size()) {
    // Attribute names start after whitespace.
    while (position < tag.size() && !is_space(tag[position])) {
      if (tag[position] == '"' || tag[position] == '\'') {
        const std::size_t close = tag.find(tag[position], position + 1);
        if (close == std::string_view::npos) return false;  // an unterminated quote
        position = close;
      }
      ++position;
    }
    while (position < tag.size() && is_space(tag[position])) ++position;
    const std::size_t start = position;
    while (position < tag.size() && !is_space(tag[position]) && tag[position] != '=') ++position;
    const std::string_view attribute = tag.substr(start, position - start);
    while (position < tag.size() && is_space(tag[position])) ++position;
    if (position >= tag.size() || tag[position] != '=') continue;
    ++position;
    while (position < tag.size() && is_space(tag[position])) ++position;
    std::string_view raw;
    if (position < tag.size() && (tag[position] == '"' || tag[position] == '\'')) {
      const char quote = tag[position];
      const std::size_t close = tag.find(quote, position + 1);
      const std::size_t end = close == std::string_view::npos ? tag.size() : close;
      raw = tag.substr(position + 1, end - position - 1);
      position = std::min(end + 1, tag.size());
    } else {
      const std::size_t begin = position;
      while (position < tag.size() && !is_space(tag[position])) ++position;
      raw = tag.substr(begin, position - begin);
    }
    if (iequals(attribute, name)) {
      value = std::string(trim(decode_entities(raw)));
      return true;
    }
  }
  return false;
}

bool url_character(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u > 0x20 && u != 0x7f && c != '<' && c != '>' && c != '"' && c != '\'' && c != '`' &&
         c != '{' && c != '}' && c != '|' && c != '\\' && c != '^';
}

class Walker {
 public:
  Walker(const Limits& limits, Message& out) : limits_(limits), out_(out) {}

  void entity(std::string_view text, std::size_t depth, bool top, bool digest_child,
              std::size_t base_offset) {
    if (++out_.parts > limits_.max_parts) {
      if (out_.parts == limits_.max_parts + 1) note(Finding::too_many_parts);
      return;
    }
    std::vector<HeaderField> local;
    std::vector<HeaderField>& headers = top ? out_.headers : local;
    const std::size_t body_start = parse_header(text, headers);
    if (top) out_.body_offset = base_offset + body_start;
    const std::string_view body = text.substr(body_start);

    FieldParameters type;
    FieldParameters disposition;
    std::string encoding;
    for (const HeaderField& field : headers) {
      if (iequals(field.name, "Content-Type") && type.value.empty()) {
        type = parse_parameters(field.value);
      } else if (iequals(field.name, "Content-Disposition") && disposition.value.empty()) {
        disposition = parse_parameters(field.value);
      } else if (iequals(field.name, "Content-Transfer-Encoding") && encoding.empty()) {
        encoding = lower(trim(field.value));
      }
    }
    // RFC 2045 5.2 / RFC 2046 5.1.5: the defaults when Content-Type is absent or bad.
    if (type.value.empty() || type.value.find('/') == std::string::npos)
      type.value = digest_child ? "message/rfc822" : "text/plain";

    if (type.value.starts_with("multipart/")) {
      if (depth >= limits_.max_depth) return note(Finding::nesting_too_deep);
      if (type.boundary.empty()) {
        note(Finding::missing_boundary);
        // Read it as text, so rules still see what the sender wrote.
        return text_part("text/plain", type.charset, "", body);
      }
      return multipart(body, type.boundary, depth, type.value == "multipart/digest",
                       base_offset + body_start);
    }
    const std::string name = disposition.name.empty() ? type.name : disposition.name;
    if (type.value == "message/rfc822" || type.value == "message/global") {
      if (!name.empty()) out_.attachments.push_back({name, type.value});
      if (depth >= limits_.max_depth) return note(Finding::nesting_too_deep);
      if (encoding == "base64" || encoding == "quoted-printable") {
        // RFC 2046 5.2.1 forbids it, but message/global (RFC 6532) allows it.
        std::string storage;
        const std::string_view decoded = decode_body(encoding, body, storage);
        if (decoded.size() > 0) return entity(decoded, depth + 1, false, false, 0);
        return;
      }
      return entity(body, depth + 1, false, false, base_offset + body_start);
    }
    const bool is_text = type.value == "text/plain" || type.value == "text/html";
    const bool attached = disposition.value == "attachment" || !name.empty();
    if (!is_text || attached) {
      out_.attachments.push_back({name, type.value});
      if (encoding == "base64") check_base64(body);
      return;
    }
    text_part(type.value, type.charset, encoding, body);
  }

  void note(Finding finding) { ++out_.finding_counts[static_cast<int>(finding)]; }

 private:
  // Fills `headers`; returns where the body starts. A line that is neither a field nor
  // a continuation ends the header (as Postfix's cleanup does), with a finding.
  std::size_t parse_header(std::string_view text, std::vector<HeaderField>& headers) {
    std::size_t position = 0;
    std::size_t finished = headers.size();
    bool first = true;
    bool dropping = false;
    auto finish = [&] {
      if (headers.size() > finished) finish_field(headers.back());
      finished = headers.size();
    };
    while (position < text.size()) {
      const std::size_t line_start = position;
      const std::string_view line = next_line(text, position);
      if (line.empty()) {
        finish();
        return position;
      }
      if (line[0] == ' ' || line[0] == '\t') {
        if (headers.empty() && !dropping) {
          note(Finding::bad_header);
          return line_start;
        }
        // RFC 5322 2.2.3: unfolding removes the CRLF, keeps the whitespace.
        if (!dropping && headers.back().value.size() < 65536) headers.back().value += line;
        first = false;
        continue;
      }
      const std::size_t colon = line.find(':');
      bool valid = colon != std::string_view::npos && colon > 0;
      std::string_view name;
      if (valid) {
        name = line.substr(0, colon);
        // Obsolete syntax (RFC 5322 4.5) allows whitespace before the colon.
        while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
        valid = !name.empty() &&
                std::all_of(name.begin(), name.end(), [](char c) { return c > ' ' && c < 0x7f; });
      }
      if (!valid) {
        // An mbox "From " line at the very top is not a malformation of the message.
        if (first && line.starts_with("From ")) {
          first = false;
          continue;
        }
        finish();
        note(Finding::bad_header);
        return line_start;
      }
      first = false;
      finish();
      if (headers.size() >= limits_.max_headers) {
        dropping = true;
        continue;
      }
      dropping = false;
      headers.push_back({std::string(name), std::string(line.substr(colon + 1))});
    }
    finish();
    return text.size();
  }

  // Trims and decodes a field once it is complete (all its continuation lines read).
  void finish_field(HeaderField& field) {
    std::string_view value = trim(field.value);
    if (value.find("=?") != std::string_view::npos) {
      std::string decoded;
      if (!decode_header_words(value, decoded)) note(Finding::bad_encoded_word);
      field.value = std::move(decoded);
    } else {
      field.value = std::string(value);
    }
  }

  void multipart(std::string_view body, const std::string& boundary, std::size_t depth, bool digest,
                 std::size_t base_offset) {
    std::size_t position = 0;
    std::size_t part_start = std::string_view::npos;
    bool closed = false;
    bool any = false;
    // Only lines that start with "--boundary" matter: jump to each occurrence rather
    // than visit every line of the parts (base64 attachments are thousands of lines).
    const std::string delimiter = "--" + boundary;
    while (position < body.size()) {
      const std::size_t found = body.find(delimiter, position);
      if (found == std::string_view::npos) break;
      if (found > 0 && body[found - 1] != '\n') {
        position = found + 1;
        continue;
      }
      const std::size_t line_start = found;
      position = found;
      const std::string_view line = next_line(body, position);
      std::string_view rest = line.substr(delimiter.size());
      const bool closing = rest.starts_with("--");
      if (closing) rest.remove_prefix(2);
      // RFC 2046 5.1.1: only transport padding may follow the boundary.
      if (!only_space(rest)) continue;
      if (part_start != std::string_view::npos) {
        // The CRLF before the delimiter belongs to the delimiter.
        std::size_t end = line_start;
        if (end > part_start && body[end - 1] == '\n') --end;
        if (end > part_start && body[end - 1] == '\r') --end;
        entity(body.substr(part_start, end - part_start), depth + 1, false, digest,
               base_offset + part_start);
        any = true;
      }
      if (closing) {
        closed = true;
        break;
      }
      part_start = position;
    }
    if (!closed) {
      if (part_start != std::string_view::npos) {
        note(Finding::unterminated_multipart);
        entity(body.substr(part_start), depth + 1, false, digest, base_offset + part_start);
        any = true;
      } else {
        note(Finding::no_parts);
        text_part("text/plain", "", "", body);
      }
    }
    (void)any;
  }

  // The decoded body: `body` itself for the identity encodings (no copy), else `storage`.
  std::string_view decode_body(const std::string& encoding, std::string_view body,
                               std::string& storage) {
    if (encoding == "base64") {
      if (!decode_base64(body, storage)) note(Finding::bad_base64);
      return storage;
    }
    if (encoding == "quoted-printable") {
      if (!decode_quoted_printable(body, storage)) note(Finding::bad_quoted_printable);
      return storage;
    }
    if (!encoding.empty() && encoding != "7bit" && encoding != "8bit" && encoding != "binary")
      note(Finding::unknown_encoding);
    return body;
  }

  void check_base64(std::string_view body) {
    for (char c : body) {
      if (!kBase64Body[static_cast<unsigned char>(c)]) {
        note(Finding::bad_base64);
        return;
      }
    }
  }

  void text_part(const std::string& content_type, const std::string& charset,
                 const std::string& encoding, std::string_view body) {
    if (decoded_ >= limits_.max_decoded) return note(Finding::truncated);
    if (body.size() > limits_.max_decoded - decoded_) {
      note(Finding::truncated);
      body = body.substr(0, limits_.max_decoded - decoded_);
    }
    std::string storage;
    std::string_view bytes = decode_body(encoding, body, storage);
    TextPart part;
    part.content_type = content_type;
    part.charset = charset;
    std::string utf8;
    if (!is_utf8_alias(charset)) {
      if (convert_to_utf8(charset, bytes, utf8)) {
        part.converted = true;
        bytes = utf8;
      } else {
        note(Finding::unknown_charset);
      }
    }
    if (content_type == "text/html") {
      std::vector<std::string> links;
      html_to_text(bytes, part.text, &links);
      for (std::string& link : links) add_url(std::move(link));
    } else {
      // Lines end in '\n' only: the scanner splits on it.
      append_without_cr(bytes, part.text);
    }
    std::vector<std::string> found;
    find_urls(part.text, found, limits_.max_url_length);
    for (std::string& url : found) add_url(std::move(url));
    decoded_ += part.text.size();
    out_.texts.push_back(std::move(part));
  }

  void add_url(std::string url) {
    if (url.empty() || url.size() > limits_.max_url_length) return;
    if (out_.urls.size() >= limits_.max_urls) return;
    if (seen_urls_.insert(url).second) out_.urls.push_back(std::move(url));
  }

  const Limits& limits_;
  Message& out_;
  std::size_t decoded_ = 0;
  std::unordered_set<std::string> seen_urls_;
};

}  // namespace

const std::string* Message::header(std::string_view name) const {
  for (const HeaderField& field : headers)
    if (iequals(field.name, name)) return &field.value;
  return nullptr;
}

bool decode_base64(std::string_view in, std::string& out) {
  bool valid = true;
  std::uint32_t accumulator = 0;
  int bits = 0;
  std::size_t quantum = 0;  // characters of the current 4-character group
  bool padding = false;
  // Written through a pointer into room for the most the input can give (6 bits a
  // character) plus one byte (see below), then cut to size: no per-byte append.
  const std::size_t start = out.size();
  out.resize(start + in.size() / 4 * 3 + 4);
  char* write = out.data() + start;
  const auto* read = reinterpret_cast<const unsigned char*>(in.data());
  const std::size_t size = in.size();
  std::size_t i = 0;
  while (i < size) {
    // Between quanta, whole groups of four alphabet characters (a line's bulk) decode
    // at once; anything else (line breaks, padding, junk) takes the path below.
    if (bits == 0 && !padding) {
      while (i + 4 <= size) {
        const int a = kBase64[read[i]], b = kBase64[read[i + 1]], c = kBase64[read[i + 2]],
                  d = kBase64[read[i + 3]];
        if ((a | b | c | d) < 0) break;
        // The 3 bytes in order as one 4-byte store (the 4th is overwritten next).
        std::uint32_t bytes = static_cast<std::uint32_t>(a << 18 | b << 12 | c << 6 | d) << 8;
        if constexpr (std::endian::native == std::endian::little) bytes = __builtin_bswap32(bytes);
        std::memcpy(write, &bytes, sizeof bytes);
        write += 3;
        i += 4;
        quantum += 4;
      }
      if (i >= size) break;
    }
    const char c = in[i++];
    const std::int8_t value = kBase64[static_cast<unsigned char>(c)];
    if (value < 0) {
      if (c == '=') {
        padding = true;
        ++quantum;
      } else if (!is_space(c)) {
        valid = false;  // skipped, as every decoder does, but reported
      }
      continue;
    }
    if (padding) {
      // Data after '=': a new stream glued on (some senders concatenate); keep going.
      if (quantum % 4 != 0) valid = false;
      padding = false;
      quantum = 0;
      accumulator = 0;
      bits = 0;
    }
    accumulator = (accumulator << 6) | static_cast<std::uint32_t>(value);
    bits += 6;
    ++quantum;
    if (bits >= 8) {
      bits -= 8;
      *write++ = static_cast<char>((accumulator >> bits) & 0xff);
    }
  }
  out.resize(static_cast<std::size_t>(write - out.data()));
  if (quantum % 4 == 1) valid = false;  // 6 bits cannot make a byte
  if (!padding && quantum % 4 != 0) valid = false;
  return valid;
}

bool decode_quoted_printable(std::string_view in, std::string& out) {
  bool valid = true;
  // Written through a pointer into room for the input (the output is never longer) plus
  // one 16-byte store: text between escapes is copied a block at a time.
  const std::size_t start = out.size();
  out.resize(start + in.size() + 16);
  char* write = out.data() + start;
  const char* data = in.data();
  const std::size_t size = in.size();
  std::size_t i = 0;
  while (i < size) {
#ifdef __SSE2__
    const __m128i equals = _mm_set1_epi8('=');
    while (i + 16 <= size) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + i));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(write), bytes);
      const auto mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, equals)));
      const int plain = mask ? std::countr_zero(mask) : 16;
      write += plain;
      i += static_cast<std::size_t>(plain);
      if (mask) break;
    }
#endif
    while (i < size && data[i] != '=') *write++ = data[i++];
    if (i == size) break;
    if (i + 2 < size && hex_value(in[i + 1]) >= 0 && hex_value(in[i + 2]) >= 0) {
      *write++ = static_cast<char>(hex_value(in[i + 1]) * 16 + hex_value(in[i + 2]));
      i += 3;
      continue;
    }
    // A soft line break: '=' then optional whitespace then the line ending (RFC 2045 6.7).
    std::size_t j = i + 1;
    while (j < size && (in[j] == ' ' || in[j] == '\t')) ++j;
    if (j == size) break;
    if (in[j] == '\r' && j + 1 < size && in[j + 1] == '\n') {
      i = j + 2;
      continue;
    }
    if (in[j] == '\n') {
      i = j + 1;
      continue;
    }
    valid = false;
    *write++ = '=';  // a literal '=': what mail readers show
    ++i;
  }
  out.resize(static_cast<std::size_t>(write - out.data()));
  return valid;
}

bool decode_header_words(std::string_view in, std::string& out) {
  bool valid = true;
  std::size_t position = 0;
  bool previous_was_word = false;
  std::size_t pending_space_start = 0;
  while (position < in.size()) {
    const std::size_t start = in.find("=?", position);
    if (start == std::string_view::npos) break;
    // =?charset?X?text?=
    const std::size_t question1 = in.find('?', start + 2);
    const std::size_t question2 =
        question1 == std::string_view::npos ? question1 : in.find('?', question1 + 1);
    const std::size_t end =
        question2 == std::string_view::npos ? question2 : in.find("?=", question2 + 1);
    if (end == std::string_view::npos || question2 != question1 + 2) {
      if (end == std::string_view::npos) {
        valid = false;
        break;
      }
      out.append(in.substr(position, start + 2 - position));
      position = start + 2;
      previous_was_word = false;
      continue;
    }
    const std::string_view between = in.substr(position, start - position);
    if (!(previous_was_word && only_space(between))) out.append(between);
    (void)pending_space_start;
    std::string charset = lower(in.substr(start + 2, question1 - start - 2));
    // RFC 2231 6: charset*language.
    if (const std::size_t star = charset.find('*'); star != std::string::npos) charset.resize(star);
    const char encoding = lower_char(in[question1 + 1]);
    const std::string_view text = in.substr(question2 + 1, end - question2 - 1);
    std::string bytes;
    bool word_valid = true;
    if (encoding == 'b') {
      word_valid = decode_base64(text, bytes);
    } else if (encoding == 'q') {
      std::string underscores(text);
      std::replace(underscores.begin(), underscores.end(), '_', ' ');
      word_valid = decode_quoted_printable(underscores, bytes);
    } else {
      word_valid = false;
      bytes.assign(in.substr(start, end + 2 - start));
    }
    if (!word_valid) valid = false;
    if (is_utf8_alias(charset)) {
      out += bytes;
    } else if (!convert_to_utf8(charset, bytes, out)) {
      valid = false;
    }
    position = end + 2;
    previous_was_word = true;
  }
  if (position < in.size()) out.append(in.substr(position));
  return valid;
}

bool convert_to_utf8(std::string_view charset_name, std::string_view in, std::string& out) {
  const std::string charset = lower(trim(charset_name));
  if (is_utf8_alias(charset)) {
    out.append(in);
    return true;
  }
  thread_local IconvCache cache;
  iconv_t descriptor = cache.get(iconv_name(charset));
  if (descriptor == reinterpret_cast<iconv_t>(-1)) {
    out.append(in);
    return false;
  }
  iconv(descriptor, nullptr, nullptr, nullptr, nullptr);  // reset the shift state
  char* input = const_cast<char*>(in.data());
  std::size_t input_left = in.size();
  std::array<char, 4096> buffer;
  while (input_left > 0) {
    char* output = buffer.data();
    std::size_t output_left = buffer.size();
    const std::size_t result = iconv(descriptor, &input, &input_left, &output, &output_left);
    out.append(buffer.data(), buffer.size() - output_left);
    if (result != static_cast<std::size_t>(-1)) continue;
    if (errno == E2BIG) continue;
    // EILSEQ or EINVAL (a truncated sequence at the end): U+FFFD, skip one byte.
    append_utf8(out, 0xfffd);
    ++input;
    --input_left;
    iconv(descriptor, nullptr, nullptr, nullptr, nullptr);
  }
  char* output = buffer.data();
  std::size_t output_left = buffer.size();
  iconv(descriptor, nullptr, nullptr, &output, &output_left);  // flush a shift sequence
  out.append(buffer.data(), buffer.size() - output_left);
  return true;
}

namespace {

// Where a run of text that html_to_text copies as it is ends, from `position` (one past
// its first character): at the first markup start, whitespace other than a single space,
// or second space in a row. 16 bytes at a time with SSE2 (every x86-64 has it), as
// most of a newsletter's bytes are in such runs.
std::size_t run_end(std::string_view html, std::size_t position) {
  const char* data = html.data();
  const std::size_t size = html.size();
#ifdef __SSE2__
  const __m128i less = _mm_set1_epi8('<'), ampersand = _mm_set1_epi8('&');
  const __m128i tab = _mm_set1_epi8('\t'), newline = _mm_set1_epi8('\n');
  const __m128i carriage = _mm_set1_epi8('\r'), space = _mm_set1_epi8(' ');
  while (position + 16 <= size) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + position));
    const __m128i before = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + position - 1));
    const __m128i stops = _mm_or_si128(
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(bytes, less), _mm_cmpeq_epi8(bytes, ampersand)),
                     _mm_or_si128(_mm_cmpeq_epi8(bytes, tab), _mm_cmpeq_epi8(bytes, newline))),
        _mm_or_si128(_mm_cmpeq_epi8(bytes, carriage),
                     _mm_and_si128(_mm_cmpeq_epi8(bytes, space), _mm_cmpeq_epi8(before, space))));
    const auto mask = static_cast<unsigned>(_mm_movemask_epi8(stops));
    if (mask) return position + static_cast<std::size_t>(std::countr_zero(mask));
    position += 16;
  }
#endif
  for (; position < size; ++position) {
    const char c = data[position];
    if (!kHtmlRun[static_cast<unsigned char>(c)] || (c == ' ' && data[position - 1] == ' ')) break;
  }
  return position;
}

}  // namespace

void html_to_text(std::string_view html, std::string& out, std::vector<std::string>* links) {
  out.reserve(out.size() + html.size() / 2);
  bool pending_space = false;
  auto emit = [&](char c) {
    if (pending_space && !out.empty() && out.back() != '\n') out += ' ';
    pending_space = false;
    out += c;
  };
  auto line_break = [&] {
    pending_space = false;
    if (!out.empty() && out.back() != '\n') out += '\n';
  };
  std::size_t i = 0;
  while (i < html.size()) {
    const char c = html[i];
    if (kHtmlPlain[static_cast<unsigned char>(c)]) {
      // Text up to the next tag, entity or other whitespace, in one append.
      std::size_t end = run_end(html, i + 1);
      if (html[end - 1] == ' ') --end;  // a trailing space is pending whitespace
      if (pending_space && !out.empty() && out.back() != '\n') out += ' ';
      pending_space = false;
      out.append(html.data() + i, end - i);
      i = end;
      continue;
    }
    if (c == '<') {
      if (i + 3 < html.size() && html[i + 1] == '!' && html[i + 2] == '-' && html[i + 3] == '-') {
        const std::size_t end = html.find("-->", i + 4);
        i = end == std::string_view::npos ? html.size() : end + 3;
        continue;
      }
      // A tag: up to the '>' outside quotes.
      std::size_t end = i + 1;
      char quote = 0;
      while (end < html.size()) {
        const char t = html[end];
        if (quote) {
          if (t == quote) quote = 0;
        } else if (t == '"' || t == '\'') {
          quote = t;
        } else if (t == '>') {
          break;
        }
        ++end;
      }
      const std::string_view tag = html.substr(i + 1, end - i - 1);
      std::size_t name_start = 0;
      if (!tag.empty() && tag[0] == '/') name_start = 1;
      std::size_t name_end = name_start;
      while (name_end < tag.size() && !is_space(tag[name_end]) && tag[name_end] != '/' &&
             tag[name_end] != '>')
        ++name_end;
      const std::string_view name = tag.substr(name_start, name_end - name_start);
      i = end < html.size() ? end + 1 : html.size();
      if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '!' ||
                            name[0] == '?')) {
        // "a < b": not a tag.
        emit('<');
        i = static_cast<std::size_t>(tag.data() - html.data());
        continue;
      }
      if (name_start == 0 && (iequals(name, "script") || iequals(name, "style"))) {
        const std::string close = name_start == 0 ? "</" + lower(name) : "";
        std::size_t search = i;
        std::size_t found = std::string_view::npos;
        while (search < html.size()) {
          const std::size_t candidate = html.find("</", search);
          if (candidate == std::string_view::npos) break;
          if (istarts_with(html.substr(candidate), close)) {
            found = candidate;
            break;
          }
          search = candidate + 2;
        }
        const std::size_t close_end =
            found == std::string_view::npos ? std::string_view::npos : html.find('>', found);
        i = close_end == std::string_view::npos ? html.size() : close_end + 1;
        continue;
      }
      if (links && name_start == 0 && (iequals(name, "a") || iequals(name, "area"))) {
        std::string target;
        if (tag_attribute(tag.substr(name_end), "href", target) && !target.empty() &&
            !istarts_with(target, "mailto:") && !istarts_with(target, "#") &&
            !istarts_with(target, "javascript:"))
          links->push_back(std::move(target));
      }
      if (block_element(name)) {
        line_break();
      } else if (iequals(name, "td") || iequals(name, "th")) {
        pending_space = true;
      }
      continue;
    }
    if (is_space(c)) {
      pending_space = true;
      ++i;
      continue;
    }
    if (c == '&') {
      std::string decoded;
      if (std::size_t used = decode_entity(html, i, decoded)) {
        i += used;
        for (char d : decoded) {
          if (d == ' ') {
            pending_space = true;
          } else {
            emit(d);
          }
        }
        continue;
      }
    }
    emit(c);
    ++i;
  }
}

void find_urls(std::string_view text, std::vector<std::string>& out, std::size_t max_length) {
  // A URL starts with "http://", "https://" or "www.", so each start has a ':' or a '.'
  // a few characters in: the walk jumps between those (16 bytes a test with SSE2)
  // instead of testing every position. The starts it accepts, and so the URLs, are the
  // ones a left-to-right scan for the three prefixes accepts.
  const std::size_t size = text.size();
  std::size_t resume = 0;  // URLs do not overlap: none starts before the previous end
  for (std::size_t at = find_colon_or_dot(text, 0); at < size;
       at = find_colon_or_dot(text, at + 1)) {
    std::size_t start = std::string_view::npos;
    std::size_t prefix = 0;
    if (text[at] == ':') {
      if (at + 2 < size && text[at + 1] == '/' && text[at + 2] == '/') {
        if (at >= 5 && iequals(text.substr(at - 5, 5), "https")) {
          start = at - 5;
          prefix = 8;
        } else if (at >= 4 && iequals(text.substr(at - 4, 4), "http")) {
          start = at - 4;
          prefix = 7;
        }
      }
      // "xhttp://" is not a URL start: a letter may not come before the scheme.
      if (start != std::string_view::npos && start > 0 &&
          std::isalpha(static_cast<unsigned char>(text[start - 1])))
        start = std::string_view::npos;
    } else if (at >= 3 && iequals(text.substr(at - 3, 3), "www")) {
      start = at - 3;
      prefix = 4;
      if (start > 0) {
        const char before = text[start - 1];
        if (std::isalnum(static_cast<unsigned char>(before)) || before == '/' || before == '.')
          start = std::string_view::npos;
      }
    }
    if (start == std::string_view::npos || start < resume) continue;
    std::size_t end = start + prefix;
    while (end < size && url_character(text[end])) ++end;
    // Sentence punctuation after a URL is not part of it.
    while (end > start + prefix && std::strchr(".,;:!?)]*'", text[end - 1])) --end;
    if (end > start + prefix && end - start <= max_length)
      out.emplace_back(text.substr(start, end - start));
    resume = end;
  }
}

std::string url_host(std::string_view url) {
  std::size_t start = 0;
  if (const std::size_t scheme = url.find("://"); scheme != std::string_view::npos && scheme < 16) {
    start = scheme + 3;
  } else if (url.starts_with("//")) {
    start = 2;
  } else if (!istarts_with(url, "www.")) {
    return {};  // relative links have no host
  }
  std::size_t end = url.find_first_of("/?#\\", start);
  if (end == std::string_view::npos) end = url.size();
  std::string_view authority = url.substr(start, end - start);
  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos)
    authority.remove_prefix(at + 1);
  if (!authority.empty() && authority.front() == '[') return {};  // IPv6 literal: no list takes it
  if (const std::size_t colon = authority.find(':'); colon != std::string_view::npos)
    authority = authority.substr(0, colon);
  std::string host = lower(percent_decode(authority));
  while (!host.empty() && host.back() == '.') host.pop_back();
  return host;
}

Message parse(std::string_view message, const Limits& limits) {
  Message out;
  Walker walker(limits, out);
  walker.entity(message, 0, true, false, 0);
  return out;
}

}  // namespace mxgate::filters::mime

// The MIME walker: turns a buffered message into what content rules look at (unfolded
// headers, decoded text, URLs, attachment names) and the malformations it met on the way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mxgate::filters::mime {

// Malformed input is never an error here: it is a fact about the message that rules
// can score (`where: mime`, pattern `^bad_base64$`). Spam tools emit broken MIME far more
// often than mail clients do.
enum class Finding : std::uint8_t {
  missing_boundary,        // multipart/* without a boundary parameter
  unterminated_multipart,  // the closing "--boundary--" never came
  no_parts,                // a multipart whose boundary never appears
  bad_base64,              // characters outside the alphabet, or a dangling quantum
  bad_quoted_printable,    // '=' not followed by two hex digits or a line break
  bad_header,              // a header line without a field name and colon
  bad_encoded_word,        // an RFC 2047 =?charset?X?...?= that does not decode
  unknown_charset,         // a charset iconv does not know: text kept as bytes
  unknown_encoding,        // a Content-Transfer-Encoding outside RFC 2045's five
  nesting_too_deep,        // more than Limits::max_depth nested entities
  too_many_parts,          // more than Limits::max_parts entities
  truncated,               // a decoding cap was reached: the rest was not scanned
};
constexpr std::size_t kFindingCount = 12;
const char* finding_name(Finding finding);

struct HeaderField {
  std::string name;   // as written ("Subject")
  std::string value;  // unfolded (RFC 5322 2.2.3), trimmed, RFC 2047 words decoded
};

// The text of one text/plain or text/html part.
struct TextPart {
  std::string content_type;  // "text/plain", "text/html"
  std::string charset;       // as declared, lower-case ("" when none): the tag is kept
  bool converted = false;    // the text was converted from `charset` to UTF-8
  // Lines separated by '\n'. HTML: tags stripped, entities decoded, whitespace runs
  // collapsed, a line break per block element, so phrases read as they render.
  std::string text;
};

struct Attachment {
  std::string file_name;     // Content-Disposition filename, else Content-Type name
  std::string content_type;  // declared, lower-case, without parameters
};

struct Limits {
  std::size_t max_depth = 16;           // nested multiparts and message/rfc822
  std::size_t max_parts = 500;          // entities in the whole message
  std::size_t max_headers = 1000;       // header fields kept per entity
  std::size_t max_decoded = 32u << 20;  // bytes of decoded text over all parts
  std::size_t max_urls = 1000;          // distinct URLs kept
  std::size_t max_url_length = 2048;
};

struct Message {
  std::vector<HeaderField> headers;  // the top-level header, in order
  std::size_t body_offset = 0;       // where the top-level body starts in the input
  std::vector<TextPart> texts;
  std::vector<std::string> urls;        // distinct, in order of appearance
  std::vector<Attachment> attachments;  // every non-text leaf part and named part
  std::uint32_t finding_counts[kFindingCount] = {};
  std::size_t parts = 0;

  bool has(Finding finding) const { return finding_counts[static_cast<int>(finding)] != 0; }
  // The first value of a header field, case-insensitive name; nullptr when absent.
  const std::string* header(std::string_view name) const;
};

// Walks `message` (CRLF or LF lines). Never throws on malformed input; never reads past
// the view; total work is linear in the input size and bounded by `limits`.
Message parse(std::string_view message, const Limits& limits = {});

// The building blocks, exposed for tests and the fuzzers. Each appends to `out` and
// returns false when the input was malformed (the output is then a best effort).
bool decode_base64(std::string_view in, std::string& out);
bool decode_quoted_printable(std::string_view in, std::string& out);
// RFC 2047 words in a header value, converted to UTF-8.
bool decode_header_words(std::string_view in, std::string& out);
// Converts `in` from `charset` to UTF-8 (invalid sequences become U+FFFD); false when
// the charset is unknown (then `in` is appended unchanged).
bool convert_to_utf8(std::string_view charset, std::string_view in, std::string& out);
// HTML to text: tags stripped, entities decoded, href targets added to `links`.
void html_to_text(std::string_view html, std::string& out, std::vector<std::string>* links);
// Bare http://, https:// and www. URLs in text.
void find_urls(std::string_view text, std::vector<std::string>& out, std::size_t max_length = 2048);
// The host of a URL ("https://User@Example.COM:8080/x" -> "example.com"), "" if none.
std::string url_host(std::string_view url);

}  // namespace mxgate::filters::mime

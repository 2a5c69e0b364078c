// libFuzzer target for the MIME walker and its decoders: arbitrary bytes as a message
// must never crash, hang or break the walker's own bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "filters/mime.hpp"

namespace mime = mxgate::filters::mime;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  mime::Limits limits;
  limits.max_decoded = 64 << 10;
  limits.max_urls = 50;
  const mime::Message message = mime::parse(input, limits);
  if (message.body_offset > input.size()) std::abort();
  if (message.urls.size() > limits.max_urls) std::abort();
  std::size_t decoded = 0;
  for (const auto& part : message.texts) decoded += part.text.size();
  // HTML to text never grows past the input; entities decode to at most 4 bytes for 3+.
  if (decoded > 2 * limits.max_decoded + 4 * size) std::abort();
  for (const auto& url : message.urls) {
    if (url.size() > limits.max_url_length) std::abort();
    (void)mime::url_host(url);
  }
  std::string out;
  mime::decode_base64(input, out);
  out.clear();
  mime::decode_quoted_printable(input, out);
  out.clear();
  mime::decode_header_words(input, out);
  out.clear();
  mime::html_to_text(input, out, nullptr);
  return 0;
}

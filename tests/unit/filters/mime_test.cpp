// Tests for the MIME walker: every target it extracts, on crafted messages, and the
// findings it reports for malformed ones.
#include "filters/mime.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mxgate::filters::mime {
namespace {

// Test messages are written with '\n'; the walker sees them as the proxy hands them over.
std::string crlf(std::string text) {
  std::string out;
  for (char c : text) {
    if (c == '\n') out += '\r';
    out += c;
  }
  return out;
}

TEST(MimeHeaders, FoldedHeadersAreUnfolded) {
  const Message message =
      parse(crlf("Subject: a long\n"
                 "  subject\n"
                 "\tcontinued\n"
                 "From: Someone <a@example.org>\n"
                 "\n"
                 "body\n"));
  ASSERT_EQ(message.headers.size(), 2u);
  EXPECT_EQ(message.headers[0].value, "a long  subject\tcontinued");
  EXPECT_EQ(*message.header("from"), "Someone <a@example.org>");
  EXPECT_EQ(message.texts.size(), 1u);
  EXPECT_EQ(message.texts[0].text, "body\n");
}

TEST(MimeHeaders, EncodedWordsAreDecoded) {
  const Message message =
      parse(crlf("Subject: =?UTF-8?B?R2V3aW5uc3BpZWw=?= =?ISO-8859-1?Q?f=FCr_Sie?=\n"
                 "To: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\n"
                 "\n"));
  EXPECT_EQ(*message.header("Subject"), "Gewinnspielfür Sie");
  EXPECT_EQ(*message.header("To"), "Jürgen <j@example.org>");
  EXPECT_FALSE(message.has(Finding::bad_encoded_word));
}

TEST(MimeHeaders, LineWithoutColonEndsTheHeaderWithAFinding) {
  const Message message = parse(crlf("Subject: x\nthis is not a header\nmore\n"));
  EXPECT_TRUE(message.has(Finding::bad_header));
  ASSERT_EQ(message.texts.size(), 1u);
  EXPECT_EQ(message.texts[0].text, "this is not a header\nmore\n");
}

TEST(MimeBody, QuotedPrintableSoftBreaksJoinLines) {
  const Message message =
      parse(crlf("Content-Type: text/plain; charset=utf-8\n"
                 "Content-Transfer-Encoding: quoted-printable\n"
                 "\n"
                 "next of =\n"
                 "kin =E2=82=AC 5000=\n"
                 "000\n"));
  ASSERT_EQ(message.texts.size(), 1u);
  EXPECT_EQ(message.texts[0].text, "next of kin € 5000000\n");
  EXPECT_FALSE(message.has(Finding::bad_quoted_printable));
}

TEST(MimeBody, Base64SplitAcrossLinesIsDecoded) {
  // "Claim your prize now" split mid-quantum over three lines.
  const Message message =
      parse(crlf("Content-Type: text/plain\n"
                 "Content-Transfer-Encoding: base64\n"
                 "\n"
                 "Q2xhaW0geW9\n"
                 "1ciBwcml6ZS\n"
                 "Bub3c=\n"));
  ASSERT_EQ(message.texts.size(), 1u);
  EXPECT_EQ(message.texts[0].text, "Claim your prize now");
  EXPECT_FALSE(message.has(Finding::bad_base64));
}

TEST(MimeBody, BadBase64IsAFinding) {
  const Message message =
      parse(crlf("Content-Type: text/plain\n"
                 "Content-Transfer-Encoding: base64\n"
                 "\n"
                 "SGVsbG8*gd29ybGQ\n"));
  EXPECT_TRUE(message.has(Finding::bad_base64));
  ASSERT_EQ(message.texts.size(), 1u);
  EXPECT_EQ(message.texts[0].text.substr(0, 5), "Hello");
}

TEST(MimeBody, CharsetIsConvertedAndTheTagKept) {
  const Message message = parse(
      "Content-Type: text/plain; charset=\"ISO-8859-1\"\r\n"
      "Content-Transfer-Encoding: 8bit\r\n"
      "\r\n"
      "Gr\xfc\xdf"
      "e\r\n");
  ASSERT_EQ(message.texts.size(), 1u);
  EXPECT_EQ(message.texts[0].charset, "iso-8859-1");
  EXPECT_TRUE(message.texts[0].converted);
  EXPECT_EQ(message.texts[0].text, "Grüße\n");
}

TEST(MimeBody, UnknownCharsetKeepsBytesWithAFinding) {
  const Message message = parse(crlf("Content-Type: text/plain; charset=x-klingon\n\nqapla\n"));
  EXPECT_TRUE(message.has(Finding::unknown_charset));
  EXPECT_EQ(message.texts.at(0).text, "qapla\n");
}

TEST(MimeHtml, TagsStrippedEntitiesDecodedLinksFound) {
  const Message message =
      parse(crlf("Content-Type: text/html; charset=utf-8\n"
                 "\n"
                 "<html><head><style>p { color: red }</style><title>Offer</title></head>\n"
                 "<body><p>Fr&shy;ee   <b>mo</b>ney &amp; &#x20AC;100&nbsp;now</p>\n"
                 "<!-- hidden --><a href=\"https://Click.Example.COM/x?a=1&amp;b=2\">here</a>\n"
                 "<script>var x = '<p>no</p>';</script><div>bye</div></body></html>\n"));
  ASSERT_EQ(message.texts.size(), 1u);
  EXPECT_EQ(message.texts[0].text, "Offer\nFree money & €100 now\nhere\nbye\n");
  ASSERT_EQ(message.urls.size(), 1u);
  EXPECT_EQ(message.urls[0], "https://Click.Example.COM/x?a=1&b=2");
}

TEST(MimeUrls, BareUrlsInText) {
  std::vector<std::string> urls;
  find_urls("see http://a.example/x, or (www.b.example/y). HTTPS://c.example!", urls);
  ASSERT_EQ(urls.size(), 3u);
  EXPECT_EQ(urls[0], "http://a.example/x");
  EXPECT_EQ(urls[1], "www.b.example/y");
  EXPECT_EQ(urls[2], "HTTPS://c.example");
  EXPECT_EQ(url_host("https://user:pw@Sub.Example.COM.:8080/path?q"), "sub.example.com");
  EXPECT_EQ(url_host("www.b.example/y"), "www.b.example");
  EXPECT_EQ(url_host("/relative"), "");
}

constexpr const char* kNested =
    "From: a@example.org\n"
    "Subject: nested\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\n"
    "\n"
    "preamble\n"
    "--outer\n"
    "Content-Type: multipart/alternative; boundary=outer-inner\n"
    "\n"
    "--outer-inner\n"
    "Content-Type: text/plain\n"
    "\n"
    "plain text\n"
    "--outer-inner\n"
    "Content-Type: text/html\n"
    "\n"
    "<p>html text</p>\n"
    "--outer-inner--\n"
    "--outer\n"
    "Content-Type: application/pdf; name=\"invoice.pdf\"\n"
    "Content-Disposition: attachment; filename*=UTF-8''R%C3%A9sum%C3%A9.pdf\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "JVBERi0xLjQK\n"
    "--outer\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "Subject: inner message\n"
    "Content-Type: text/plain\n"
    "\n"
    "forwarded text\n"
    "--outer--\n"
    "epilogue\n";

TEST(MimeMultipart, NestedPartsAndAttachments) {
  const Message message = parse(crlf(kNested));
  ASSERT_EQ(message.texts.size(), 3u);
  EXPECT_EQ(message.texts[0].text, "plain text");
  EXPECT_EQ(message.texts[1].text, "html text\n");
  EXPECT_EQ(message.texts[1].content_type, "text/html");
  EXPECT_EQ(message.texts[2].text, "forwarded text");
  ASSERT_EQ(message.attachments.size(), 1u);
  EXPECT_EQ(message.attachments[0].file_name, "Résumé.pdf");
  EXPECT_EQ(message.attachments[0].content_type, "application/pdf");
  EXPECT_EQ(*message.header("subject"), "nested");  // not the inner message's
  EXPECT_EQ(message.parts, 7u);
  for (std::size_t i = 0; i < kFindingCount; ++i)
    EXPECT_EQ(message.finding_counts[i], 0u) << finding_name(static_cast<Finding>(i));
}

TEST(MimeMultipart, MissingBoundaryIsReadAsText) {
  const Message message =
      parse(crlf("Content-Type: multipart/mixed\n\n--x\nContent-Type: text/plain\n\nhi\n--x--\n"));
  EXPECT_TRUE(message.has(Finding::missing_boundary));
  ASSERT_EQ(message.texts.size(), 1u);
  EXPECT_NE(message.texts[0].text.find("hi"), std::string::npos);
}

TEST(MimeMultipart, UnterminatedAndEmptyMultiparts) {
  const Message unterminated =
      parse(crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nlast part\n"));
  EXPECT_TRUE(unterminated.has(Finding::unterminated_multipart));
  EXPECT_EQ(unterminated.texts.at(0).text, "last part\n");
  const Message empty = parse(crlf("Content-Type: multipart/mixed; boundary=b\n\nno parts\n"));
  EXPECT_TRUE(empty.has(Finding::no_parts));
  EXPECT_EQ(empty.texts.at(0).text, "no parts\n");
}

TEST(MimeMultipart, NestingAndPartCountAreBounded) {
  std::string deep;
  for (int i = 0; i < 40; ++i)
    deep += "Content-Type: multipart/mixed; boundary=b" + std::to_string(i) + "\n\n--b" +
            std::to_string(i) + "\n";
  deep += "\nbottom\n";
  const Message message = parse(crlf(deep));
  EXPECT_TRUE(message.has(Finding::nesting_too_deep));
  EXPECT_LE(message.parts, 18u);

  std::string wide = "Content-Type: multipart/mixed; boundary=b\n\n";
  for (int i = 0; i < 20; ++i) wide += "--b\n\nx\n";
  wide += "--b--\n";
  Limits limits;
  limits.max_parts = 5;
  const Message many = parse(crlf(wide), limits);
  EXPECT_TRUE(many.has(Finding::too_many_parts));
  EXPECT_EQ(many.texts.size(), 4u);
}

TEST(MimeBody, DecodedTextIsCapped) {
  Limits limits;
  limits.max_decoded = 10;
  const Message message = parse(crlf("\n0123456789abcdefghij\n"), limits);
  EXPECT_TRUE(message.has(Finding::truncated));
  EXPECT_EQ(message.texts.at(0).text, "0123456789");
}

TEST(MimeDecoders, Primitives) {
  std::string out;
  EXPECT_TRUE(decode_base64("TWFu", out));
  EXPECT_EQ(out, "Man");
  out.clear();
  EXPECT_FALSE(decode_base64("TWF", out));  // no padding
  out.clear();
  EXPECT_FALSE(decode_quoted_printable("a=ZZb", out));
  EXPECT_EQ(out, "a=ZZb");
  out.clear();
  EXPECT_TRUE(decode_quoted_printable("a=3D=\r\nb", out));
  EXPECT_EQ(out, "a=b");
}

// The decoders copy and decode in blocks (16 bytes, 4 base64 characters); what they give
// must not depend on where a line break, an escape or a bad character falls.
TEST(MimeDecoders, BlocksGiveWhatCharacterByCharacterDecodingGives) {
  const std::string text = "Claim your prize now, dear friend: it waits for you at the bank.";
  const std::string encoded =  // the text in base64, broken every 4, 7 and 76 characters
      "Q2xhaW0geW91ciBwcml6ZSBub3csIGRlYXIgZnJpZW5kOiBpdCB3YWl0cyBmb3IgeW91IGF0IHRo"
      "ZSBiYW5rLg==";
  for (std::size_t width : {4u, 7u, 76u}) {
    std::string wrapped;
    for (std::size_t i = 0; i < encoded.size(); i += width)
      wrapped += encoded.substr(i, width) + "\r\n";
    std::string out = "kept:";
    EXPECT_TRUE(decode_base64(wrapped, out)) << width;
    EXPECT_EQ(out, "kept:" + text) << width;
  }
  // A bad character mid-block is skipped and reported; the rest still decodes.
  std::string out;
  EXPECT_FALSE(decode_base64("Q2xh*aW0geW91ciBwcml6ZSBub3cu", out));
  EXPECT_EQ(out, "Claim your prize now.");
  // Two streams glued together (padding, then more data).
  out.clear();
  EXPECT_TRUE(decode_base64("TWFu\r\nTQ==TWFuTWFuTWFuTWFuTWFu", out));
  EXPECT_EQ(out, "ManMManManManManMan");

  out.clear();
  EXPECT_TRUE(decode_quoted_printable(
      "a long line of plain text before an escape =E2=82=AC and a soft break=\t\r\n"
      "after it, then =3D3D and a final line\r\n",
      out));
  EXPECT_EQ(out,
            "a long line of plain text before an escape \xE2\x82\xAC and a soft break"
            "after it, then =3D and a final line\r\n");
  out.clear();
  EXPECT_FALSE(decode_quoted_printable("0123456789abcdef=G0123456789abcdef=", out));
  EXPECT_EQ(out, "0123456789abcdef=G0123456789abcdef");
}

TEST(MimeHtml, WhitespaceRunsCollapseInLongText) {
  std::string out;
  html_to_text(
      "<p>one two three four five six seven  eight\tnine\r\nten   eleven</p>"
      "<p>twelve thirteen fourteen fifteen sixteen </p> seventeen",
      out, nullptr);
  EXPECT_EQ(out,
            "one two three four five six seven eight nine ten eleven\n"
            "twelve thirteen fourteen fifteen sixteen\nseventeen");
}

TEST(MimeUrls, StartsAreTheOnesALeftToRightScanFinds) {
  std::vector<std::string> urls;
  find_urls(
      "xhttp://no.example 1http://yes.example/a wwww.no.example /www.no.example "
      "(https://s.example/b): https://overlap.example/http://inner.example "
      "www.last.example.",
      urls);
  EXPECT_EQ(urls, (std::vector<std::string>{"http://yes.example/a", "https://s.example/b",
                                            "https://overlap.example/http://inner.example",
                                            "www.last.example"}));
}

}  // namespace
}  // namespace mxgate::filters::mime

// The corpus (tests/corpus/*.eml, real-world-shaped messages written for this project)
// through the MIME walker and a realistic rule set: the targets and hits each must give.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "filters/content.hpp"

namespace mxgate::filters {
namespace {

std::string read_corpus(const std::string& name) {
  std::ifstream file(std::string(MXGATE_SOURCE_DIR) + "/tests/corpus/" + name, std::ios::binary);
  EXPECT_TRUE(file) << name;
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

std::string all_text(const mime::Message& message) {
  std::string text;
  for (const auto& part : message.texts) text += part.text + "\n";
  return text;
}

bool contains(const std::vector<std::string>& values, const std::string& value) {
  return std::find(values.begin(), values.end(), value) != values.end();
}

std::vector<std::string> findings(const mime::Message& message) {
  std::vector<std::string> names;
  for (std::size_t i = 0; i < mime::kFindingCount; ++i)
    if (message.finding_counts[i])
      names.push_back(mime::finding_name(static_cast<mime::Finding>(i)));
  return names;
}

policy::ContentRule rule(std::string name, std::string where, std::string pattern) {
  policy::ContentRule r;
  r.name = std::move(name);
  r.where = std::move(where);
  r.pattern = std::move(pattern);
  r.score = 1;
  return r;
}

// A rule set shaped like an admin's: each rule is meant for one corpus message.
std::shared_ptr<const ContentScanner> corpus_scanner() {
  std::vector<policy::ContentRule> rules{
      rule("advance-fee", "body", "(?i)next of kin"),
      rule("million", "body", "(?i)\\b\\d+(\\.\\d+)?\\s*million\\b"),
      rule("shouting-subject", "subject", "^[A-Z ]{20,}$"),
      rule("reply-to-freemail", "header:reply-to", "@othermail\\.example$"),
      rule("wire-transfer", "body", "(?i)urgent wire transfer"),
      rule("gewinn", "subject", "(?i)glückwunsch.*gewonnen"),
      rule("bank-details", "body", "(?i)bankverbindung"),
      rule("russian-discount", "body", "скидка \\d+%"),
      rule("quota-phish", "body", "(?i)mailbox is almost full"),
      rule("dear-user", "body", "^Dear user,$"),
      rule("zip-attachment", "attachment", "(?i)\\.zip$"),
      rule("pdf-type", "attachment", "^application/pdf$"),
      rule("idn-url", "url", "^https://xn--"),
      rule("broken-mime", "mime", "^(missing_boundary|bad_base64|unterminated_multipart)$"),
      rule("meds", "url", "cheap-meds"),
      rule("needle", "body", "needle-in-a-long-line"),
      rule("tracking", "all-headers", "^List-Unsubscribe: "),
      rule("euro-html", "body", "Free shipping on orders over €50 & easy returns"),
  };
  std::vector<std::string> errors;
  auto scanner = ContentScanner::build(rules, {}, errors);
  EXPECT_TRUE(errors.empty());
  return scanner;
}

std::vector<std::string> hits(const std::string& message) {
  static const auto scanner = corpus_scanner();
  const ContentScanResult result = scanner->scan(message);
  std::vector<std::string> names;
  for (std::size_t i = 0; i < result.hits.size(); ++i)
    if (result.hits[i]) names.push_back(scanner->rules()[i].config.name);
  return names;
}

using Names = std::vector<std::string>;

TEST(ContentCorpus, Plain) {
  const std::string raw = read_corpus("01_plain.eml");
  const mime::Message message = mime::parse(raw);
  EXPECT_EQ(*message.header("subject"), "Lunch on Thursday?");
  EXPECT_NE(message.header("received")->find("by mx1.example.org (Postfix)"), std::string::npos);
  EXPECT_EQ(message.urls, Names{"https://bistro.example.com/menu"});
  EXPECT_TRUE(findings(message).empty());
  EXPECT_EQ(hits(raw), Names{});
}

TEST(ContentCorpus, NewsletterHtml) {
  const std::string raw = read_corpus("02_newsletter_html.eml");
  const mime::Message message = mime::parse(raw);
  EXPECT_EQ(*message.header("subject"), "Spring sale – up to 50% off");
  const std::string text = all_text(message);
  EXPECT_NE(text.find("Hello \"Valued Customer\","), std::string::npos) << text;
  EXPECT_EQ(text.find("font-family"), std::string::npos);  // <style> is not text
  EXPECT_TRUE(contains(message.urls,
                       "https://shop.example.com/spring?utm_source=newsletter&utm_medium=email"));
  EXPECT_TRUE(contains(message.urls, "https://www.example.com/blog"));
  EXPECT_FALSE(contains(message.urls, "mailto:support@example.com"));
  EXPECT_EQ(hits(raw), (Names{"tracking", "euro-html"}));
}

TEST(ContentCorpus, Alternative) {
  const std::string raw = read_corpus("03_alternative.eml");
  const mime::Message message = mime::parse(raw);
  ASSERT_EQ(message.texts.size(), 2u);
  EXPECT_EQ(message.texts[1].text.substr(0, 40), "The mail server will be down on Saturday");
  EXPECT_EQ(message.urls, Names{"https://status.example.org/maintenance/42"});
  EXPECT_EQ(hits(raw), Names{});
}

TEST(ContentCorpus, Attachment) {
  const std::string raw = read_corpus("04_attachment.eml");
  const mime::Message message = mime::parse(raw);
  ASSERT_EQ(message.attachments.size(), 1u);
  EXPECT_EQ(message.attachments[0].file_name, "INV-2023-0311.pdf");
  EXPECT_NE(all_text(message).find("1 250,00 €"), std::string::npos);
  EXPECT_EQ(hits(raw), Names{"pdf-type"});
}

TEST(ContentCorpus, NestedForward) {
  const std::string raw = read_corpus("05_nested_forward.eml");
  const mime::Message message = mime::parse(raw);
  EXPECT_EQ(message.texts.size(), 3u);
  EXPECT_EQ(*message.header("subject"), "Fwd: Urgent wire transfer");
  ASSERT_EQ(message.attachments.size(), 1u);
  EXPECT_EQ(message.attachments[0].content_type, "message/rfc822");
  EXPECT_EQ(hits(raw), Names{"wire-transfer"});
}

TEST(ContentCorpus, MalformedNoBoundary) {
  const std::string raw = read_corpus("06_malformed_no_boundary.eml");
  const mime::Message message = mime::parse(raw);
  EXPECT_EQ(findings(message), Names{"missing_boundary"});
  EXPECT_EQ(hits(raw), (Names{"broken-mime", "meds"}));
}

TEST(ContentCorpus, MalformedBase64) {
  const std::string raw = read_corpus("07_malformed_base64.eml");
  const mime::Message message = mime::parse(raw);
  EXPECT_EQ(findings(message), (Names{"unterminated_multipart", "bad_base64"}));
  EXPECT_NE(all_text(message).find("Dear customer, your account has been suspend"),
            std::string::npos);
  EXPECT_EQ(hits(raw), (Names{"zip-attachment", "broken-mime"}));
}

TEST(ContentCorpus, Latin1) {
  const std::string raw = read_corpus("08_latin1.eml");
  const mime::Message message = mime::parse(raw);
  ASSERT_EQ(message.texts.size(), 1u);
  EXPECT_EQ(message.texts[0].charset, "iso-8859-1");
  EXPECT_EQ(*message.header("from"), "Gewinnspiel München <info@gewinn.example>");
  EXPECT_EQ(hits(raw), (Names{"gewinn", "bank-details"}));
}

TEST(ContentCorpus, Koi8r) {
  const std::string raw = read_corpus("09_koi8r.eml");
  const mime::Message message = mime::parse(raw);
  EXPECT_EQ(*message.header("subject"), "Скидка 70%");
  EXPECT_EQ(message.urls, Names{"http://skidki.example.ru/promo"});
  EXPECT_EQ(hits(raw), Names{"russian-discount"});
}

TEST(ContentCorpus, LongLines) {
  const std::string raw = read_corpus("10_long_lines.eml");
  const mime::Message message = mime::parse(raw);
  EXPECT_EQ(message.urls.size(), 400u);
  EXPECT_EQ(hits(raw), Names{"needle"});
}

TEST(ContentCorpus, AdvanceFee) {
  const std::string raw = read_corpus("11_advance_fee.eml");
  EXPECT_EQ(hits(raw), (Names{"advance-fee", "million", "shouting-subject", "reply-to-freemail"}));
}

TEST(ContentCorpus, PhishingIdn) {
  const std::string raw = read_corpus("12_phishing_idn.eml");
  const mime::Message message = mime::parse(raw);
  ASSERT_EQ(message.attachments.size(), 1u);
  EXPECT_EQ(message.attachments[0].file_name, "Quota Upgrade Instructions.zip");
  EXPECT_TRUE(contains(message.urls, "https://bücher-login.example/verify"));
  EXPECT_EQ(hits(raw), (Names{"quota-phish", "dear-user", "zip-attachment", "idn-url"}));
}

TEST(ContentCorpus, EveryFileIsCovered) {
  std::size_t files = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(MXGATE_SOURCE_DIR) + "/tests/corpus"))
    files += entry.path().extension() == ".eml";
  EXPECT_EQ(files, 12u);
}

}  // namespace
}  // namespace mxgate::filters

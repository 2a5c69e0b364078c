// DNS list keys and reply classification: what postscreen gets right and what we add
// (error codes and non-127/8 answers are never listings).
#include "filters/dnsbl.hpp"

#include <gtest/gtest.h>

namespace mxgate::filters {
namespace {

TEST(ReverseAddress, Ipv4ReversesOctets) {
  EXPECT_EQ(reverse_address("192.0.2.1"), "1.2.0.192");
  EXPECT_EQ(reverse_address("127.0.0.2"), "2.0.0.127");
}

// RFC 5782 2.4: 32 nibbles, least significant first.
TEST(ReverseAddress, Ipv6Nibbles) {
  EXPECT_EQ(reverse_address("2001:db8:1:2:3:4:567:89ab"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2");
  EXPECT_EQ(reverse_address("::1"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0");
  EXPECT_EQ(reverse_address("2001:DB8::"),
            "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2");
}

TEST(ReverseAddress, MappedIpv4IsAskedAsIpv4) {
  EXPECT_EQ(reverse_address("::ffff:192.0.2.1"), "1.2.0.192");
}

TEST(ReverseAddress, RejectsNonAddresses) {
  EXPECT_FALSE(reverse_address(""));
  EXPECT_FALSE(reverse_address("example.org"));
  EXPECT_FALSE(reverse_address("192.0.2"));
  EXPECT_FALSE(reverse_address("[192.0.2.1]"));
  EXPECT_FALSE(reverse_address("192.0.2.1; evil.example"));
}

std::uint32_t ip(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
  return (std::uint32_t(a) << 24) | (std::uint32_t(b) << 16) | (std::uint32_t(c) << 8) | d;
}

policy::ReplyFilter filter(const char* text) {
  std::string error;
  auto parsed = policy::parse_reply_filter(text, error);
  EXPECT_TRUE(parsed) << text << ": " << error;
  return parsed ? *parsed : policy::ReplyFilter{};
}

TEST(ClassifyListReply, ReplyFilterRanges) {
  auto zen = filter("127.0.0.[2..11]");
  EXPECT_EQ(classify_list_reply(ip(127, 0, 0, 2), zen), ListReply::listed);
  EXPECT_EQ(classify_list_reply(ip(127, 0, 0, 11), zen), ListReply::listed);
  EXPECT_EQ(classify_list_reply(ip(127, 0, 0, 1), zen), ListReply::not_matched);
  EXPECT_EQ(classify_list_reply(ip(127, 0, 0, 12), zen), ListReply::not_matched);
  auto sbl_only = filter("127.0.0.[1;3;5]");
  EXPECT_EQ(classify_list_reply(ip(127, 0, 0, 3), sbl_only), ListReply::listed);
  EXPECT_EQ(classify_list_reply(ip(127, 0, 0, 4), sbl_only), ListReply::not_matched);
  auto dnswl = filter("127.0.[0..255].[1..3]");
  EXPECT_EQ(classify_list_reply(ip(127, 0, 15, 2), dnswl), ListReply::listed);
  EXPECT_EQ(classify_list_reply(ip(127, 0, 15, 0), dnswl), ListReply::not_matched);
  auto any = filter("127.0.0.0/8");
  EXPECT_EQ(classify_list_reply(ip(127, 1, 2, 3), any), ListReply::listed);
}

// Spamhaus: 127.255.255.252 typo in the zone, .254 public resolver, .255 over the limit.
TEST(ClassifyListReply, ErrorCodesAreNotListingsEvenWhenTheFilterCoversThem) {
  auto any = filter("127.0.0.0/8");
  for (int last = 252; last <= 255; ++last)
    EXPECT_EQ(classify_list_reply(ip(127, 255, 255, static_cast<std::uint8_t>(last)), any),
              ListReply::error_code)
        << last;
  EXPECT_EQ(classify_list_reply(ip(127, 255, 255, 251), any), ListReply::listed);
}

TEST(ClassifyListReply, AnswersOutsideLoopbackAreErrors) {
  auto any = filter("127.0.0.0/8");
  EXPECT_EQ(classify_list_reply(ip(10, 0, 0, 1), any), ListReply::outside_loopback);
  EXPECT_EQ(classify_list_reply(ip(192, 0, 2, 1), filter("[0..255].0.2.1")),
            ListReply::outside_loopback);
}

TEST(ListAnswerEncoding, RoundTripsThroughTheStoreForm) {
  CachedAnswer listed{true, {ip(127, 0, 0, 2), ip(127, 0, 0, 4)}, "see http://x.test/?a;b"};
  EXPECT_EQ(encode_list_answer(listed), "1;127.0.0.2,127.0.0.4;see http://x.test/?a;b");
  auto decoded = decode_list_answer(encode_list_answer(listed));
  ASSERT_TRUE(decoded);
  EXPECT_TRUE(decoded->exists);
  EXPECT_EQ(decoded->addresses, listed.addresses);
  EXPECT_EQ(decoded->text, listed.text);
  auto negative = decode_list_answer(encode_list_answer(CachedAnswer{}));
  ASSERT_TRUE(negative);
  EXPECT_FALSE(negative->exists);
  EXPECT_FALSE(decode_list_answer("1;not-an-ip;"));
  EXPECT_FALSE(decode_list_answer("garbage"));
}

TEST(FormatIpv4, Dotted) { EXPECT_EQ(format_ipv4(ip(127, 0, 0, 2)), "127.0.0.2"); }

}  // namespace
}  // namespace mxgate::filters

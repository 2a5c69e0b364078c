// Tests for PROXY protocol v1 and v2 header parsing (mxgate behind HAProxy).
#include "proxy/smtp/proxy_header.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mxgate::smtp {
namespace {

using Status = ProxyHeader::Status;

const std::string kSignature("\r\n\r\n\0\r\nQUIT\n", 12);

std::string v2(unsigned char version_command, unsigned char family, const std::string& payload) {
  std::string header = kSignature;
  header.push_back(static_cast<char>(version_command));
  header.push_back(static_cast<char>(family));
  header.push_back(static_cast<char>(payload.size() >> 8));
  header.push_back(static_cast<char>(payload.size() & 0xFF));
  return header + payload;
}

std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (int value : values) {
    out.push_back(static_cast<char>(value));
  }
  return out;
}

TEST(ProxyHeaderV1Test, Tcp4) {
  const std::string input = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\nEHLO x\r\n";
  const ProxyHeader header = parse_proxy_header(input);
  ASSERT_EQ(header.status, Status::ok);
  EXPECT_EQ(header.length, 45u);
  EXPECT_EQ(input.substr(header.length), "EHLO x\r\n");
  EXPECT_FALSE(header.local);
  EXPECT_EQ(header.source_address, "192.0.2.10");
  EXPECT_EQ(header.source_port, 56324);
  EXPECT_EQ(header.destination_address, "198.51.100.1");
  EXPECT_EQ(header.destination_port, 25);
}

TEST(ProxyHeaderV1Test, Tcp6IsCanonicalised) {
  const ProxyHeader header = parse_proxy_header("PROXY TCP6 2001:DB8:0::1 ::1 65535 0\r\n");
  ASSERT_EQ(header.status, Status::ok);
  EXPECT_EQ(header.source_address, "2001:db8::1");
  EXPECT_EQ(header.destination_address, "::1");
  EXPECT_EQ(header.source_port, 65535);
  EXPECT_EQ(header.destination_port, 0);
}

TEST(ProxyHeaderV1Test, Unknown) {
  ProxyHeader header = parse_proxy_header("PROXY UNKNOWN\r\n");
  ASSERT_EQ(header.status, Status::ok);
  EXPECT_TRUE(header.local);
  EXPECT_EQ(header.length, 15u);
  header = parse_proxy_header("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nQUIT\r\n");
  ASSERT_EQ(header.status, Status::ok);
  EXPECT_TRUE(header.local);
  EXPECT_EQ(header.length, 35u);
}

TEST(ProxyHeaderV1Test, Incomplete) {
  const std::string full = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\n";
  for (std::size_t length = 0; length < full.size(); ++length) {
    EXPECT_EQ(parse_proxy_header(full.substr(0, length)).status, Status::incomplete) << length;
  }
}

TEST(ProxyHeaderV1Test, LongestValidLine) {
  const std::string longest =
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "65535 65535\r\n";
  ASSERT_EQ(longest.size(), 104u);
  EXPECT_EQ(parse_proxy_header(longest).status, Status::ok);
  // Without a line end within 107 bytes, it is not a PROXY line.
  EXPECT_EQ(parse_proxy_header("PROXY UNKNOWN " + std::string(92, 'x')).status, Status::incomplete);
  EXPECT_EQ(parse_proxy_header("PROXY UNKNOWN " + std::string(93, 'x')).status, Status::invalid);
  EXPECT_EQ(parse_proxy_header("PROXY UNKNOWN " + std::string(91, 'x') + "\r\n").status,
            Status::ok);
}

TEST(ProxyHeaderV1Test, Invalid) {
  for (const char* input : {
           "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\n",      // bare LF
           "PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n",       // missing port
           "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25 1\r\n",  // extra field
           "PROXY TCP4 192.0.2.10  198.51.100.1 56324 25\r\n",   // double space
           "PROXY TCP4 192.0.2.256 198.51.100.1 56324 25\r\n",   // bad address
           "PROXY TCP4 ::1 198.51.100.1 56324 25\r\n",           // family mismatch
           "PROXY TCP6 192.0.2.10 ::1 56324 25\r\n",
           "PROXY TCP4 192.0.2.10 198.51.100.1 65536 25\r\n",  // port range
           "PROXY TCP4 192.0.2.10 198.51.100.1 -1 25\r\n",
           "PROXY TCP4 192.0.2.10 198.51.100.1 025 25\r\n",  // leading zero
           "PROXY TCP4 192.0.2.10 198.51.100.1 25 \r\n",
           "PROXY UDP4 192.0.2.10 198.51.100.1 56324 25\r\n",
           "PROXY tcp4 192.0.2.10 198.51.100.1 56324 25\r\n",
           "PROXY \r\n",
           "PROXY\r\n",
           "proxy TCP4 192.0.2.10 198.51.100.1 1 2\r\n",
           "EHLO client.example\r\n",
           "X",
       }) {
    EXPECT_EQ(parse_proxy_header(input).status, Status::invalid)
        << ::testing::PrintToString(std::string(input));
  }
}

TEST(ProxyHeaderV2Test, Tcp4WithTlvsIgnored) {
  const std::string payload = bytes({192, 0, 2, 10, 198, 51, 100, 1, 0xDC, 0x04, 0, 25}) +
                              bytes({0x04, 0x00, 0x02, 'h', 'i'});  // a NOOP TLV
  const std::string input = v2(0x21, 0x11, payload) + "EHLO x\r\n";
  const ProxyHeader header = parse_proxy_header(input);
  ASSERT_EQ(header.status, Status::ok);
  EXPECT_EQ(header.length, 16u + 17u);
  EXPECT_FALSE(header.local);
  EXPECT_EQ(header.source_address, "192.0.2.10");
  EXPECT_EQ(header.source_port, 56324);
  EXPECT_EQ(header.destination_address, "198.51.100.1");
  EXPECT_EQ(header.destination_port, 25);
  EXPECT_EQ(input.substr(header.length), "EHLO x\r\n");
}

TEST(ProxyHeaderV2Test, Tcp6) {
  std::string payload = bytes({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1});
  payload += bytes({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2});
  payload += bytes({0xFF, 0xFF, 0x00, 0x19});
  const ProxyHeader header = parse_proxy_header(v2(0x21, 0x21, payload));
  ASSERT_EQ(header.status, Status::ok);
  EXPECT_EQ(header.length, 52u);
  EXPECT_EQ(header.source_address, "2001:db8::1");
  EXPECT_EQ(header.destination_address, "::2");
  EXPECT_EQ(header.source_port, 65535);
  EXPECT_EQ(header.destination_port, 25);
}

TEST(ProxyHeaderV2Test, LocalAndUnspec) {
  ProxyHeader header = parse_proxy_header(v2(0x20, 0x00, ""));
  ASSERT_EQ(header.status, Status::ok);
  EXPECT_TRUE(header.local);
  EXPECT_EQ(header.length, 16u);
  // LOCAL ignores whatever address block follows.
  header = parse_proxy_header(v2(0x20, 0x11, std::string(12, '\0')));
  ASSERT_EQ(header.status, Status::ok);
  EXPECT_TRUE(header.local);
  EXPECT_EQ(header.length, 28u);
  header = parse_proxy_header(v2(0x21, 0x00, ""));
  ASSERT_EQ(header.status, Status::ok);
  EXPECT_TRUE(header.local);
}

TEST(ProxyHeaderV2Test, Incomplete) {
  const std::string full = v2(0x21, 0x11, bytes({192, 0, 2, 10, 198, 51, 100, 1, 0, 1, 0, 25}));
  for (std::size_t length = 0; length < full.size(); ++length) {
    EXPECT_EQ(parse_proxy_header(full.substr(0, length)).status, Status::incomplete) << length;
  }
  EXPECT_EQ(parse_proxy_header(full).status, Status::ok);
}

TEST(ProxyHeaderV2Test, Invalid) {
  const std::string ipv4 = bytes({192, 0, 2, 10, 198, 51, 100, 1, 0, 1, 0, 25});
  EXPECT_EQ(parse_proxy_header(v2(0x11, 0x11, ipv4)).status, Status::invalid);  // version 1
  EXPECT_EQ(parse_proxy_header(v2(0x31, 0x11, ipv4)).status, Status::invalid);  // version 3
  EXPECT_EQ(parse_proxy_header(v2(0x22, 0x11, ipv4)).status, Status::invalid);  // command 2
  EXPECT_EQ(parse_proxy_header(v2(0x21, 0x12, ipv4)).status, Status::invalid);  // UDP
  EXPECT_EQ(parse_proxy_header(v2(0x21, 0x31, ipv4)).status, Status::invalid);  // UNIX
  EXPECT_EQ(parse_proxy_header(v2(0x21, 0x11, ipv4.substr(0, 11))).status, Status::invalid);
  EXPECT_EQ(parse_proxy_header(v2(0x21, 0x21, ipv4 + ipv4)).status, Status::invalid);  // 24 < 36
  std::string bad_signature = v2(0x21, 0x11, ipv4);
  bad_signature[7] = 'q';
  EXPECT_EQ(parse_proxy_header(bad_signature).status, Status::invalid);
  EXPECT_EQ(parse_proxy_header(bad_signature.substr(0, 8)).status, Status::invalid);
  EXPECT_EQ(parse_proxy_header("\r\nEHLO").status, Status::invalid);
}

}  // namespace
}  // namespace mxgate::smtp

// PROXY protocol header parsing (HAProxy's proxy-protocol.txt, versions 1 and 2),
// strict: a malformed header closes the connection rather than guessing a client.
#include "proxy/smtp/proxy_header.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <array>
#include <cstring>

namespace mxgate::smtp {

namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
// proxy-protocol.txt 2.1: the longest v1 line, CRLF included.
constexpr std::size_t kV1MaxLength = 107;
constexpr std::string_view kV2Signature{"\r\n\r\n\0\r\nQUIT\n", 12};
constexpr std::size_t kV2HeaderLength = 16;

ProxyHeader invalid() {
  ProxyHeader header;
  header.status = ProxyHeader::Status::invalid;
  return header;
}

// True when `bytes` could still become `expected` with more input.
bool is_prefix_of(std::string_view bytes, std::string_view expected) {
  return bytes.size() < expected.size() && expected.substr(0, bytes.size()) == bytes;
}

// Textual address in, canonical textual address out (so "2001:DB8::1" and
// "2001:db8:0::1" log and compare the same).
bool canonical_address(std::string_view text, int family, std::string& out) {
  std::array<char, INET6_ADDRSTRLEN + 1> buffer{};
  if (text.empty() || text.size() >= buffer.size()) {
    return false;
  }
  std::memcpy(buffer.data(), text.data(), text.size());
  std::array<unsigned char, 16> binary{};
  if (inet_pton(family, buffer.data(), binary.data()) != 1) {
    return false;
  }
  std::array<char, INET6_ADDRSTRLEN + 1> canonical{};
  if (inet_ntop(family, binary.data(), canonical.data(), canonical.size()) == nullptr) {
    return false;
  }
  out = canonical.data();
  return true;
}

// proxy-protocol.txt 2.1: a port is a decimal number 0..65535 without leading zeros.
bool parse_port(std::string_view text, std::uint16_t& port) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text.front() == '0')) {
    return false;
  }
  unsigned value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return false;
    }
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 65535) {
    return false;
  }
  port = static_cast<std::uint16_t>(value);
  return true;
}

ProxyHeader parse_v1(std::string_view bytes) {
  const std::size_t window = bytes.size() < kV1MaxLength ? bytes.size() : kV1MaxLength;
  const std::size_t newline = bytes.substr(0, window).find('\n');
  if (newline == std::string_view::npos) {
    if (bytes.size() >= kV1MaxLength) {
      return invalid();
    }
    ProxyHeader header;
    header.status = ProxyHeader::Status::incomplete;
    return header;
  }
  if (newline == 0 || bytes[newline - 1] != '\r') {
    return invalid();
  }
  std::string_view line = bytes.substr(kV1Prefix.size(), newline - 1 - kV1Prefix.size());

  std::array<std::string_view, 6> fields{};
  std::size_t count = 0;
  while (true) {
    const std::size_t space = line.find(' ');
    if (count == fields.size()) {
      return invalid();
    }
    fields[count++] = line.substr(0, space);
    if (space == std::string_view::npos) {
      break;
    }
    line.remove_prefix(space + 1);
    // "PROXY UNKNOWN" may be followed by anything (2.1); stop splitting there.
    if (count == 1 && fields[0] == "UNKNOWN") {
      break;
    }
  }

  ProxyHeader header;
  header.length = newline + 1;
  if (fields[0] == "UNKNOWN") {
    header.status = ProxyHeader::Status::ok;
    header.local = true;
    return header;
  }
  int family = 0;
  if (fields[0] == "TCP4") {
    family = AF_INET;
  } else if (fields[0] == "TCP6") {
    family = AF_INET6;
  } else {
    return invalid();
  }
  if (count != 5 || !canonical_address(fields[1], family, header.source_address) ||
      !canonical_address(fields[2], family, header.destination_address) ||
      !parse_port(fields[3], header.source_port) ||
      !parse_port(fields[4], header.destination_port)) {
    return invalid();
  }
  header.status = ProxyHeader::Status::ok;
  return header;
}

std::uint16_t read_u16(const unsigned char* bytes) {
  return static_cast<std::uint16_t>((bytes[0] << 8) | bytes[1]);
}

std::string binary_address(const unsigned char* bytes, int family) {
  std::array<char, INET6_ADDRSTRLEN + 1> text{};
  if (inet_ntop(family, bytes, text.data(), text.size()) == nullptr) {
    return {};
  }
  return text.data();
}

ProxyHeader parse_v2(std::string_view bytes) {
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const unsigned version = data[12] >> 4;
  const unsigned command = data[12] & 0x0F;
  if (version != 2 || command > 1) {
    return invalid();
  }
  const std::size_t payload = read_u16(data + 14);
  if (bytes.size() < kV2HeaderLength + payload) {
    ProxyHeader header;
    header.status = ProxyHeader::Status::incomplete;
    return header;
  }
  ProxyHeader header;
  header.length = kV2HeaderLength + payload;
  const unsigned char family_and_transport = data[13];
  const unsigned char* address = data + kV2HeaderLength;
  // 2.2: LOCAL is the proxy's own health check; UNSPEC means "use the real endpoints".
  if (command == 0 || family_and_transport == 0x00) {
    header.status = ProxyHeader::Status::ok;
    header.local = true;
    return header;
  }
  if (family_and_transport == 0x11) {  // TCP over IPv4
    if (payload < 12) {
      return invalid();
    }
    header.source_address = binary_address(address, AF_INET);
    header.destination_address = binary_address(address + 4, AF_INET);
    header.source_port = read_u16(address + 8);
    header.destination_port = read_u16(address + 10);
  } else if (family_and_transport == 0x21) {  // TCP over IPv6
    if (payload < 36) {
      return invalid();
    }
    header.source_address = binary_address(address, AF_INET6);
    header.destination_address = binary_address(address + 16, AF_INET6);
    header.source_port = read_u16(address + 32);
    header.destination_port = read_u16(address + 34);
  } else {
    return invalid();  // UDP and UNIX sockets cannot carry an SMTP client to us
  }
  // The rest of the payload is TLVs (2.2.7), which mxgate does not use.
  header.status = ProxyHeader::Status::ok;
  return header;
}

}  // namespace

ProxyHeader parse_proxy_header(std::string_view bytes) {
  ProxyHeader incomplete;
  if (bytes.empty()) {
    return incomplete;
  }
  if (bytes.front() == 'P') {
    if (bytes.size() < kV1Prefix.size()) {
      return is_prefix_of(bytes, kV1Prefix) ? incomplete : invalid();
    }
    if (bytes.substr(0, kV1Prefix.size()) != kV1Prefix) {
      return invalid();
    }
    return parse_v1(bytes);
  }
  if (bytes.size() < kV2HeaderLength) {
    if (bytes.size() < kV2Signature.size()) {
      return is_prefix_of(bytes, kV2Signature) ? incomplete : invalid();
    }
    return bytes.substr(0, kV2Signature.size()) == kV2Signature ? incomplete : invalid();
  }
  if (bytes.substr(0, kV2Signature.size()) != kV2Signature) {
    return invalid();
  }
  return parse_v2(bytes);
}

}  // namespace mxgate::smtp

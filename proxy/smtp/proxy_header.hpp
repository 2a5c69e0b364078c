// PROXY protocol v1 (text) and v2 (binary) header parsing, for mxgate behind HAProxy.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mxgate::smtp {

struct ProxyHeader {
  enum class Status { incomplete, ok, invalid } status = Status::incomplete;
  std::size_t length = 0;        // bytes of the header when ok
  bool local = false;            // v2 LOCAL / v1 UNKNOWN: keep the socket's addresses
  std::string source_address;    // textual IP
  std::uint16_t source_port = 0;
  std::string destination_address;
  std::uint16_t destination_port = 0;
};

// Looks at the first bytes of a connection. incomplete: read more (v1 needs <= 107
// bytes, v2 16 + length); invalid: close the connection.
ProxyHeader parse_proxy_header(std::string_view bytes);

}  // namespace mxgate::smtp

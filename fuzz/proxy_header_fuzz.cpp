// libFuzzer target for PROXY protocol v1/v2 header parsing: results are stable when
// more bytes arrive, and an accepted header is self-contained.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "proxy/smtp/proxy_header.hpp"

namespace {
void check(bool condition) {
  if (!condition) {
    std::abort();
  }
}
bool same(const mxgate::smtp::ProxyHeader& left, const mxgate::smtp::ProxyHeader& right) {
  return left.status == right.status && left.length == right.length && left.local == right.local &&
         left.source_address == right.source_address && left.source_port == right.source_port &&
         left.destination_address == right.destination_address &&
         left.destination_port == right.destination_port;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using Status = mxgate::smtp::ProxyHeader::Status;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const mxgate::smtp::ProxyHeader header = mxgate::smtp::parse_proxy_header(bytes);
  std::string longer(bytes);
  longer += "EHLO x\r\n";
  const mxgate::smtp::ProxyHeader extended = mxgate::smtp::parse_proxy_header(longer);
  if (header.status == Status::ok) {
    check(header.length > 0 && header.length <= size);
    check(same(mxgate::smtp::parse_proxy_header(bytes.substr(0, header.length)), header));
    check(same(extended, header));
    check(header.local || (!header.source_address.empty() && !header.destination_address.empty()));
  } else if (header.status == Status::invalid) {
    check(extended.status == Status::invalid);
  } else {
    check(size < 16 + 65535);
    // A shorter prefix of an incomplete header is incomplete too.
    if (size > 0) {
      check(mxgate::smtp::parse_proxy_header(bytes.substr(0, size - 1)).status ==
            Status::incomplete);
    }
  }
  return 0;
}

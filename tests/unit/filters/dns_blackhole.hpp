// A DNS server that swallows queries, for timeout tests: a bound loopback UDP socket
// nobody reads.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>

namespace mxgate::filters::testing {

struct Blackhole {
  Blackhole() {
    fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
    socklen_t length = sizeof address;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
    port = ntohs(address.sin_port);
  }
  ~Blackhole() { ::close(fd); }
  Blackhole(const Blackhole&) = delete;
  Blackhole& operator=(const Blackhole&) = delete;
  int fd;
  std::uint16_t port;
};

// A UDP port nobody uses right now (bound, read, released): queries to it are refused.
inline std::uint16_t free_udp_port() {
  Blackhole released;
  return released.port;
}

}  // namespace mxgate::filters::testing

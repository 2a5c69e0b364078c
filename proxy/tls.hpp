// OpenSSL 3 contexts for STARTTLS toward clients and toward the backend.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "policy/config.hpp"

namespace mxgate::proxy {

// Throws std::runtime_error with the file and OpenSSL's reason when the cert or key
// cannot be loaded (caught by `mxgate run`/`check` and reported).
std::shared_ptr<boost::asio::ssl::context> make_server_tls_context(const policy::TlsConfig& config);
std::shared_ptr<boost::asio::ssl::context> make_client_tls_context(const policy::BackendConfig& config);

}  // namespace mxgate::proxy

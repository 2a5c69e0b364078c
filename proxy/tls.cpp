// TLS contexts: modern defaults (TLS 1.2+), no compression, no renegotiation.
#include "proxy/tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <stdexcept>

namespace asio = boost::asio;

namespace mxgate::proxy {

namespace {
std::string openssl_error() {
  unsigned long code = ERR_get_error();
  if (code == 0) return "unknown OpenSSL error";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof buffer);
  return buffer;
}

int tls_version(const std::string& name) {
  if (name == "TLSv1.3") return TLS1_3_VERSION;
  if (name == "TLSv1.1") return TLS1_1_VERSION;
  if (name == "TLSv1") return TLS1_VERSION;
  return TLS1_2_VERSION;
}
}  // namespace

std::shared_ptr<asio::ssl::context> make_server_tls_context(const policy::TlsConfig& config) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  SSL_CTX* native = context->native_handle();
  SSL_CTX_set_min_proto_version(native, tls_version(config.min_version));
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                  SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate_chain_file(native, config.cert_file.c_str()) != 1)
    throw std::runtime_error(config.cert_file + ": " + openssl_error());
  if (SSL_CTX_use_PrivateKey_file(native, config.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    throw std::runtime_error(config.key_file + ": " + openssl_error());
  if (SSL_CTX_check_private_key(native) != 1)
    throw std::runtime_error(config.key_file + ": key does not match " + config.cert_file);
  return context;
}

std::shared_ptr<asio::ssl::context> make_client_tls_context(const policy::BackendConfig& config) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX* native = context->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  if (config.tls_verify) {
    context->set_verify_mode(asio::ssl::verify_peer);
    if (!config.tls_ca_file.empty()) {
      context->load_verify_file(config.tls_ca_file);
    } else {
      context->set_default_verify_paths();
    }
  } else {
    // A loopback Postfix usually has a self-signed certificate; encryption without
    // verification is still better than clear text on a shared host.
    context->set_verify_mode(asio::ssl::verify_none);
  }
  return context;
}

}  // namespace mxgate::proxy

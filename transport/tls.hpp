// tls.hpp — TLS 1.3 (OpenSSL) over memory buffers, so any byte mover can carry the ciphertext.
#pragma once

#include <cstddef>
#include <expected>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "transport/failure.hpp"

using SSL_CTX = struct ssl_ctx_st;
using SSL = struct ssl_st;

namespace uffdm::transport {

struct TlsFiles {
    std::string certificate;  // PEM: this side's certificate (chain)
    std::string private_key;  // PEM: its key (a key readable by group or others is refused)
    std::string trusted_ca;   // PEM: the CA that signs the peer's certificate
    // Client only: the name the server's certificate must carry (empty: not checked; the CA is).
    std::string server_name;
};

// One configured side: TLS 1.3 only, the peer always verified against trusted_ca.
//   server: certificate and key required; with trusted_ca, clients must present a certificate
//           signed by it (mutual TLS). Without trusted_ca the server authenticates only itself,
//           and the listener must also hold a token to know who the client is.
//   client: trusted_ca required (a server that cannot be verified is never talked to);
//           certificate and key optional (for a server that asks for them).
class TlsContext {
  public:
    enum class Side : std::uint8_t { Client, Server };

    [[nodiscard]] static std::expected<std::shared_ptr<TlsContext>, Failure> create(
        Side side, const TlsFiles& files);

    TlsContext(const TlsContext&) = delete;
    TlsContext& operator=(const TlsContext&) = delete;
    ~TlsContext();

    [[nodiscard]] Side side() const noexcept { return side_; }
    // The server verifies client certificates (mutual TLS).
    [[nodiscard]] bool verifies_peer() const noexcept { return verifies_peer_; }
    [[nodiscard]] SSL_CTX* native() const noexcept { return ctx_; }
    [[nodiscard]] const std::string& server_name() const noexcept { return server_name_; }

  private:
    TlsContext(Side side, SSL_CTX* ctx, bool verifies_peer, std::string server_name) noexcept
        : side_(side),
          ctx_(ctx),
          verifies_peer_(verifies_peer),
          server_name_(std::move(server_name)) {}
    Side side_;
    SSL_CTX* ctx_;
    bool verifies_peer_;
    std::string server_name_;
};

// One connection's TLS state. Ciphertext goes in through feed() and out through output(); the
// caller moves it over the socket however it likes (Asio, io_uring).
class TlsSession {
  public:
    [[nodiscard]] static std::expected<std::unique_ptr<TlsSession>, Failure> create(
        std::shared_ptr<TlsContext> context);
    TlsSession(const TlsSession&) = delete;
    TlsSession& operator=(const TlsSession&) = delete;
    ~TlsSession();

    enum class Progress : std::uint8_t { NeedInput, Done, Failed };
    // Advances the handshake. Send output() after every call; Failed leaves the reason in
    // error() (and usually an alert for the peer in output()).
    [[nodiscard]] Progress handshake();
    [[nodiscard]] bool established() const noexcept { return established_; }
    [[nodiscard]] bool is_server() const noexcept { return is_server_; }

    // Ciphertext received from the peer.
    void feed(std::span<const std::byte> ciphertext);
    // Ciphertext to send; consume() what was sent.
    [[nodiscard]] std::span<const std::byte> output() const noexcept {
        return std::span(out_).subspan(out_sent_);
    }
    void consume_output(std::size_t n) noexcept;

    // Encrypts plaintext into output() (never blocks: the output buffer grows). False and error()
    // on a TLS failure.
    [[nodiscard]] bool encrypt(std::span<const std::byte> plaintext);
    // Decrypts into out: bytes produced (0: need more ciphertext), or -1 and error() (a bad
    // record, an alert, or the peer's close_notify, which this protocol never sends).
    [[nodiscard]] long decrypt(std::span<std::byte> out);

    [[nodiscard]] const std::string& error() const noexcept { return error_; }

  private:
    explicit TlsSession(SSL* ssl, bool is_server) noexcept : ssl_(ssl), is_server_(is_server) {}
    void drain_output();
    std::string take_openssl_error(const char* doing, int result);

    SSL* ssl_;
    bool is_server_;
    bool established_ = false;
    std::vector<std::byte> out_;
    std::size_t out_sent_ = 0;
    std::string error_;
};

}  // namespace uffdm::transport

// auth.hpp — Shared-secret mutual authentication: the token file, nonces and HMAC-SHA256 proofs.
#pragma once

#include <expected>
#include <span>
#include <string>
#include <vector>

#include "transport/control.hpp"
#include "transport/failure.hpp"

namespace uffdm::transport {

// The shared secret both peers hold. Wiped from memory when destroyed.
class Secret {
  public:
    static constexpr std::size_t kMinBytes = 16;
    static constexpr std::size_t kMaxBytes = 4096;

    // Reads a token file: a regular file, owned by this user, not readable or writable by
    // group or others, holding 16..4096 bytes (surrounding whitespace is ignored). A file that
    // others can read is refused: the secret is what stands between a stranger and the
    // guest's memory.
    [[nodiscard]] static std::expected<Secret, Failure> from_token_file(const std::string& path);
    [[nodiscard]] static std::expected<Secret, Failure> from_bytes(std::span<const std::byte> key);

    Secret(Secret&& other) noexcept;
    Secret& operator=(Secret&& other) noexcept;
    Secret(const Secret&) = delete;
    Secret& operator=(const Secret&) = delete;
    ~Secret();

    [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return key_; }

  private:
    explicit Secret(std::vector<std::byte> key) noexcept : key_(std::move(key)) {}
    void wipe() noexcept;
    std::vector<std::byte> key_;
};

// 32 bytes from the system's CSPRNG.
[[nodiscard]] Nonce fresh_nonce();

// The server proves it holds the secret by MACing the client's HELLO (with its nonce) and its
// own nonce; the client proves the same with a different label, so neither proof can be
// reflected back as the other. Fresh nonces on both sides make a recorded handshake useless.
[[nodiscard]] Proof server_proof(const Secret& secret, const Hello& hello,
                                 const Nonce& server_nonce);
[[nodiscard]] Proof client_proof(const Secret& secret, const Hello& hello,
                                 const Nonce& server_nonce);
// Constant-time comparison.
[[nodiscard]] bool proofs_equal(const Proof& a, const Proof& b) noexcept;

}  // namespace uffdm::transport

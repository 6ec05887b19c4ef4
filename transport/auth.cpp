// auth.cpp — Token file checks, OpenSSL RAND_bytes and HMAC-SHA256 over the handshake transcript.
#include "transport/auth.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace uffdm::transport {

namespace {

std::string octal_mode(mode_t mode) {
    char buffer[8];
    std::snprintf(buffer, sizeof buffer, "%04o", static_cast<unsigned>(mode & 07777));
    return buffer;
}

Proof mac(const Secret& secret, std::string_view label, const Hello& hello,
          const Nonce& server_nonce) {
    std::vector<std::byte> transcript(label.size());
    std::memcpy(transcript.data(), label.data(), label.size());
    auto hello_bytes = encode(hello);
    transcript.insert(transcript.end(), hello_bytes.begin(), hello_bytes.end());
    transcript.insert(transcript.end(), server_nonce.begin(), server_nonce.end());
    Proof out{};
    unsigned length = 0;
    ::HMAC(EVP_sha256(), secret.bytes().data(), static_cast<int>(secret.bytes().size()),
           reinterpret_cast<const unsigned char*>(transcript.data()), transcript.size(),
           reinterpret_cast<unsigned char*>(out.data()), &length);
    return out;
}

}  // namespace

std::expected<Secret, Failure> Secret::from_bytes(std::span<const std::byte> key) {
    if (key.size() < kMinBytes || key.size() > kMaxBytes) {
        return std::unexpected(
            failure(Errc::InvalidArgument, "secret is " + std::to_string(key.size()) +
                                               " bytes; it must be " + std::to_string(kMinBytes) +
                                               ".." + std::to_string(kMaxBytes)));
    }
    return Secret(std::vector<std::byte>(key.begin(), key.end()));
}

std::expected<Secret, Failure> Secret::from_token_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int err = errno;
        if (err == ELOOP) {
            // O_NOFOLLOW: whoever can change a link could point us at a secret of their own.
            return std::unexpected(
                failure(Errc::PermissionDenied,
                        "token file " + path + " is a symbolic link; give the file itself"));
        }
        return std::unexpected(
            Failure{std::error_code(err, std::system_category()),
                    "cannot open token file " + path + ": " + std::strerror(err)});
    }
    struct stat st {};
    if (::fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return std::unexpected(
            failure(Errc::InvalidArgument, "token file " + path + " is not a regular file"));
    }
    if ((st.st_mode & 077) != 0) {
        ::close(fd);
        return std::unexpected(failure(
            Errc::PermissionDenied, "token file " + path + " has mode " + octal_mode(st.st_mode) +
                                        ": group or others may access it (chmod 600 " + path +
                                        ")"));
    }
    if (st.st_uid != ::geteuid()) {
        ::close(fd);
        return std::unexpected(
            failure(Errc::PermissionDenied, "token file " + path + " is owned by uid " +
                                                std::to_string(st.st_uid) + ", not by this user"));
    }
    std::vector<std::byte> key(kMaxBytes + 1);
    std::size_t got = 0;
    while (got < key.size()) {
        ssize_t n = ::read(fd, key.data() + got, key.size() - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    key.resize(got);
    while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) {
        key.pop_back();
    }
    std::size_t lead = 0;
    while (lead < key.size() && std::isspace(static_cast<unsigned char>(key[lead]))) {
        ++lead;
    }
    auto secret = from_bytes(std::span<const std::byte>(key).subspan(lead));
    OPENSSL_cleanse(key.data(), key.size());
    if (!secret) {
        return std::unexpected(
            failure(Errc::InvalidArgument, "token file " + path + ": " + secret.error().detail));
    }
    return secret;
}

Secret::Secret(Secret&& other) noexcept : key_(std::move(other.key_)) {}

Secret& Secret::operator=(Secret&& other) noexcept {
    if (this != &other) {
        wipe();
        key_ = std::move(other.key_);
    }
    return *this;
}

Secret::~Secret() {
    wipe();
}

void Secret::wipe() noexcept {
    if (!key_.empty()) {
        OPENSSL_cleanse(key_.data(), key_.size());
    }
    key_.clear();
}

Nonce fresh_nonce() {
    Nonce nonce{};
    if (::RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()),
                     static_cast<int>(nonce.size())) != 1) {
        // The CSPRNG failing is not recoverable; a predictable nonce would break replay
        // protection, so never continue with one.
        std::abort();
    }
    return nonce;
}

Proof server_proof(const Secret& secret, const Hello& hello, const Nonce& server_nonce) {
    return mac(secret, "uffdm/1 server proof", hello, server_nonce);
}

Proof client_proof(const Secret& secret, const Hello& hello, const Nonce& server_nonce) {
    return mac(secret, "uffdm/1 client proof", hello, server_nonce);
}

bool proofs_equal(const Proof& a, const Proof& b) noexcept {
    return ::CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace uffdm::transport

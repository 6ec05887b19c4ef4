// tls.cpp — OpenSSL contexts (TLS 1.3, verified peers) and sessions over memory BIOs.
#include "transport/tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>

namespace uffdm::transport {

namespace {

std::string openssl_errors() {
    std::string text;
    while (unsigned long code = ::ERR_get_error()) {
        char buffer[256];
        ::ERR_error_string_n(code, buffer, sizeof buffer);
        if (!text.empty()) {
            text += "; ";
        }
        text += buffer;
    }
    return text.empty() ? "no detail from OpenSSL" : text;
}

Failure tls_failure(Errc code, std::string detail) {
    return failure(code, "TLS: " + std::move(detail));
}

std::expected<void, Failure> check_key_file(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return std::unexpected(tls_failure(Errc::InvalidArgument, "cannot read key " + path));
    }
    if ((st.st_mode & 077) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        return std::unexpected(tls_failure(
            Errc::PermissionDenied, "private key " + path + " has mode " + mode +
                                        ": group or others may read it (chmod 600 " + path + ")"));
    }
    return {};
}

}  // namespace

std::expected<std::shared_ptr<TlsContext>, Failure> TlsContext::create(Side side,
                                                                       const TlsFiles& files) {
    bool server = side == Side::Server;
    if (server && (files.certificate.empty() || files.private_key.empty())) {
        return std::unexpected(tls_failure(Errc::InvalidArgument,
                                           "a TLS server needs a certificate and a private key"));
    }
    if (!server && files.trusted_ca.empty()) {
        return std::unexpected(tls_failure(
            Errc::InvalidArgument,
            "a TLS client needs the CA that signs the server's certificate (unverified TLS would "
            "hand guest memory to whoever answers)"));
    }
    if (files.certificate.empty() != files.private_key.empty()) {
        return std::unexpected(
            tls_failure(Errc::InvalidArgument, "certificate and private key go together"));
    }
    SSL_CTX* ctx = ::SSL_CTX_new(server ? ::TLS_server_method() : ::TLS_client_method());
    if (ctx == nullptr) {
        return std::unexpected(tls_failure(Errc::InvalidArgument, openssl_errors()));
    }
    std::shared_ptr<TlsContext> context(
        new TlsContext(side, ctx, server && !files.trusted_ca.empty(), files.server_name));
    ::SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    ::SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    // No session tickets: nothing arrives after the handshake that the data path must expect.
    ::SSL_CTX_set_num_tickets(ctx, 0);
    ::SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (!files.certificate.empty()) {
        if (auto ok = check_key_file(files.private_key); !ok) {
            return std::unexpected(ok.error());
        }
        if (::SSL_CTX_use_certificate_chain_file(ctx, files.certificate.c_str()) != 1) {
            return std::unexpected(
                tls_failure(Errc::InvalidArgument,
                            "certificate " + files.certificate + ": " + openssl_errors()));
        }
        if (::SSL_CTX_use_PrivateKey_file(ctx, files.private_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
            ::SSL_CTX_check_private_key(ctx) != 1) {
            return std::unexpected(
                tls_failure(Errc::InvalidArgument,
                            "private key " + files.private_key +
                                " (or it does not match the certificate): " + openssl_errors()));
        }
    }
    if (!files.trusted_ca.empty()) {
        if (::SSL_CTX_load_verify_locations(ctx, files.trusted_ca.c_str(), nullptr) != 1) {
            return std::unexpected(tls_failure(
                Errc::InvalidArgument, "CA file " + files.trusted_ca + ": " + openssl_errors()));
        }
        ::SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                             nullptr);
    }
    return context;
}

TlsContext::~TlsContext() {
    ::SSL_CTX_free(ctx_);
}

std::expected<std::unique_ptr<TlsSession>, Failure> TlsSession::create(
    std::shared_ptr<TlsContext> context) {
    SSL* ssl = ::SSL_new(context->native());
    if (ssl == nullptr) {
        return std::unexpected(tls_failure(Errc::InvalidArgument, openssl_errors()));
    }
    bool server = context->side() == TlsContext::Side::Server;
    std::unique_ptr<TlsSession> session(new TlsSession(ssl, server));
    BIO* in = ::BIO_new(::BIO_s_mem());
    BIO* out = ::BIO_new(::BIO_s_mem());
    if (in == nullptr || out == nullptr) {
        ::BIO_free(in);
        ::BIO_free(out);
        return std::unexpected(tls_failure(Errc::InvalidArgument, openssl_errors()));
    }
    ::BIO_set_mem_eof_return(in, -1);  // empty means "more to come", not end of stream
    ::SSL_set_bio(ssl, in, out);
    if (server) {
        ::SSL_set_accept_state(ssl);
    } else {
        ::SSL_set_connect_state(ssl);
        const std::string& name = context->server_name();
        if (!name.empty()) {
            ::SSL_set_tlsext_host_name(ssl, name.c_str());
            if (::SSL_set1_host(ssl, name.c_str()) != 1) {
                return std::unexpected(tls_failure(Errc::InvalidArgument, openssl_errors()));
            }
        }
    }
    return session;
}

TlsSession::~TlsSession() {
    ::SSL_free(ssl_);  // frees both BIOs
}

std::string TlsSession::take_openssl_error(const char* doing, int result) {
    int kind = ::SSL_get_error(ssl_, result);
    std::string text = doing;
    long verify = ::SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK) {
        text += ": peer certificate: ";
        text += ::X509_verify_cert_error_string(verify);
    }
    if (kind == SSL_ERROR_ZERO_RETURN) {
        text += ": the peer closed TLS";
    } else {
        text += ": " + openssl_errors();
    }
    return text;
}

TlsSession::Progress TlsSession::handshake() {
    if (established_) {
        return Progress::Done;
    }
    ::ERR_clear_error();
    int rc = ::SSL_do_handshake(ssl_);
    drain_output();
    if (rc == 1) {
        established_ = true;
        return Progress::Done;
    }
    int kind = ::SSL_get_error(ssl_, rc);
    if (kind == SSL_ERROR_WANT_READ) {
        return Progress::NeedInput;
    }
    error_ = take_openssl_error(
        is_server_ ? "TLS handshake with a client" : "TLS handshake with the server", rc);
    return Progress::Failed;
}

void TlsSession::feed(std::span<const std::byte> ciphertext) {
    while (!ciphertext.empty()) {
        int n = ::BIO_write(::SSL_get_rbio(ssl_), ciphertext.data(),
                            static_cast<int>(std::min<std::size_t>(ciphertext.size(), 1 << 30)));
        if (n <= 0) {
            return;  // a memory BIO only fails when out of memory
        }
        ciphertext = ciphertext.subspan(static_cast<std::size_t>(n));
    }
}

void TlsSession::drain_output() {
    BIO* out = ::SSL_get_wbio(ssl_);
    std::size_t pending = ::BIO_ctrl_pending(out);
    if (pending == 0) {
        return;
    }
    if (out_sent_ == out_.size()) {
        out_.clear();
        out_sent_ = 0;
    }
    std::size_t at = out_.size();
    out_.resize(at + pending);
    int n = ::BIO_read(out, out_.data() + at, static_cast<int>(pending));
    out_.resize(at + static_cast<std::size_t>(std::max(n, 0)));
}

void TlsSession::consume_output(std::size_t n) noexcept {
    out_sent_ += n;
    if (out_sent_ >= out_.size()) {
        out_.clear();
        out_sent_ = 0;
    }
}

bool TlsSession::encrypt(std::span<const std::byte> plaintext) {
    ::ERR_clear_error();
    while (!plaintext.empty()) {
        int n = ::SSL_write(ssl_, plaintext.data(),
                            static_cast<int>(std::min<std::size_t>(plaintext.size(), 1 << 30)));
        if (n <= 0) {
            error_ = take_openssl_error("TLS encrypting", n);
            return false;
        }
        plaintext = plaintext.subspan(static_cast<std::size_t>(n));
    }
    drain_output();
    return true;
}

long TlsSession::decrypt(std::span<std::byte> out) {
    ::ERR_clear_error();
    long total = 0;
    while (!out.empty()) {
        int n = ::SSL_read(ssl_, out.data(),
                           static_cast<int>(std::min<std::size_t>(out.size(), 1 << 30)));
        if (n > 0) {
            total += n;
            out = out.subspan(static_cast<std::size_t>(n));
            continue;
        }
        int kind = ::SSL_get_error(ssl_, n);
        drain_output();  // a KeyUpdate answer, or an alert
        if (kind == SSL_ERROR_WANT_READ) {
            return total;
        }
        error_ = take_openssl_error("TLS decrypting", n);
        return total > 0 ? total : -1;
    }
    drain_output();
    return total;
}

}  // namespace uffdm::transport

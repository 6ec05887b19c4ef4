// tls_support.hpp — A throwaway PKI for TLS tests: a CA, server and client certificates, a rogue
// CA.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace uffdm::test {

// Files made with the openssl tool in a fresh directory, removed on destruction. available()
// is false (with why()) when the tool is missing.
class TestPki {
  public:
    TestPki() {
        char pattern[] = "/tmp/uffdm-pki-XXXXXX";
        if (::mkdtemp(pattern) == nullptr) {
            why_ = "mkdtemp failed";
            return;
        }
        dir_ = pattern;
        std::ofstream(dir_ + "/san.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
        std::string script =
            "cd " + dir_ +
            " && make_ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
            "-nodes -keyout $1.key -out $1.pem -days 2 -subj /CN=$1 2>/dev/null; }"
            " && make_leaf() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
            "-nodes -keyout $1.key -out $1.csr -subj /CN=$3 2>/dev/null && openssl x509 -req "
            "-in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -out $1.pem -days 2 "
            "-extfile san.ext 2>/dev/null; }"
            " && make_ca ca && make_ca rogue-ca"
            " && make_leaf server ca localhost && make_leaf client ca uffdm-client"
            " && make_leaf rogue-server rogue-ca localhost"
            " && make_leaf rogue-client rogue-ca uffdm-client"
            " && chmod 600 *.key";
        if (std::system(("sh -c '" + script + "' >/dev/null 2>&1").c_str()) != 0) {
            why_ = "the openssl tool could not make test certificates";
            return;
        }
        available_ = true;
    }
    ~TestPki() {
        if (!dir_.empty()) {
            (void)std::system(("rm -rf " + dir_).c_str());
        }
    }
    TestPki(const TestPki&) = delete;
    TestPki& operator=(const TestPki&) = delete;

    [[nodiscard]] bool available() const { return available_; }
    [[nodiscard]] const std::string& why() const { return why_; }
    // name.pem / name.key for ca, rogue-ca, server, client, rogue-server, rogue-client.
    [[nodiscard]] std::string pem(const std::string& name) const {
        return dir_ + "/" + name + ".pem";
    }
    [[nodiscard]] std::string key(const std::string& name) const {
        return dir_ + "/" + name + ".key";
    }

  private:
    std::string dir_;
    bool available_ = false;
    std::string why_;
};

}  // namespace uffdm::test

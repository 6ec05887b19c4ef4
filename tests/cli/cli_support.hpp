// cli_support.hpp — What the CLI tests share: a scratch directory, JSON reports, endpoints.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/support/process.hpp"

namespace uffdm::cli {

// A scratch directory removed afterwards, and a token file in it (mode 600).
class Scratch {
  public:
    Scratch() {
        char pattern[] = "/tmp/uffdm-cli-XXXXXX";
        dir_ = ::mkdtemp(pattern);
        std::ofstream(token()) << "0123456789abcdef0123456789abcdef\n";
        ::chmod(token().c_str(), 0600);
    }
    ~Scratch() { (void)std::system(("rm -rf " + dir_).c_str()); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    [[nodiscard]] std::string path(const std::string& name) const { return dir_ + "/" + name; }
    [[nodiscard]] std::string token() const { return path("token"); }

  private:
    std::string dir_;
};

inline nlohmann::json read_json(const std::string& path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in, nullptr, false);
}

// The endpoint `serve` prints first ("listening on ENDPOINT"), or "".
inline std::string endpoint_of(test::Process& source) {
    std::string line = source.first_line();
    const std::string prefix = "listening on ";
    return line.rfind(prefix, 0) == 0 ? line.substr(prefix.size()) : "";
}

}  // namespace uffdm::cli

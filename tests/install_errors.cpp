// install_errors.cpp — Built by install_test.sh against the installed uffdm.hpp and libuffdm.so
// only: an error the library made compares equal to uffdm::Errc in the embedder's program.
#include <cstdio>
#include <system_error>

#include <uffdm/uffdm.hpp>

int main() {
    auto kind = uffdm::parse_memory_kind("not-a-kind");
    if (kind) {
        std::puts("parse_memory_kind accepted not-a-kind");
        return 1;
    }
    if (kind.error().code != uffdm::Errc::InvalidArgument) {
        std::printf(
            "the library's InvalidArgument (%s, category %s at %p) != uffdm::Errc::"
            "InvalidArgument here (category at %p)\n",
            kind.error().code.message().c_str(), kind.error().code.category().name(),
            static_cast<const void*>(&kind.error().code.category()),
            static_cast<const void*>(&uffdm::error_category()));
        return 1;
    }
    if (kind.error().code == uffdm::Errc::PeerLost) {
        std::puts("InvalidArgument compares equal to PeerLost");
        return 1;
    }
    std::puts("errors compare through libuffdm");
    return 0;
}

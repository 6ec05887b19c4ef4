// error.cpp — The uffdm error category: defined once, in the library, so that codes compare.
#include <uffdm/error.hpp>

#include <string>

namespace uffdm {

namespace {

class ErrorCategory final : public std::error_category {
  public:
    [[nodiscard]] const char* name() const noexcept override { return "uffdm"; }
    [[nodiscard]] std::string message(int value) const override {
        switch (static_cast<Errc>(value)) {
            case Errc::Invalid:
                return "no error";
            case Errc::RetryLater:
                return "the address space changed under the operation; retry after reading events";
            case Errc::AlreadyPresent:
                return "page already present";
            case Errc::Unsupported:
                return "not supported by the running kernel";
            case Errc::PermissionDenied:
                return "permission denied";
            case Errc::ProtocolViolation:
                return "protocol violation";
            case Errc::PeerLost:
                return "peer lost";
            case Errc::PeerAborted:
                return "the peer ended the connection";
            case Errc::TimedOut:
                return "deadline passed";
            case Errc::Unaligned:
                return "address or length not aligned to the page size";
            case Errc::NotRegistered:
                return "range not inside a registration of this userfaultfd";
            case Errc::Closed:
                return "object is closed";
            case Errc::InvalidArgument:
                return "invalid argument";
            case Errc::NotMapped:
                return "address range is not wholly mapped";
        }
        return "unknown uffdm error " + std::to_string(value);
    }
};

}  // namespace

const std::error_category& error_category() noexcept {
    static const ErrorCategory category;
    return category;
}

}  // namespace uffdm

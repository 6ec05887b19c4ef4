// helper.cpp — Handing a userfaultfd to an unprivileged process over a Unix socket (SCM_RIGHTS).
#include <uffdm/uffdm.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fcntl.h>

#include "uffd/unique_fd.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm {

namespace {

Error system_error(const std::string& what, int err) {
    return Error{std::error_code(err, std::system_category()), what + ": " + std::strerror(err)};
}

std::expected<sockaddr_un, Error> unix_address(const std::string& path) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof address.sun_path) {
        return std::unexpected(Error{make_error_code(Errc::InvalidArgument),
                                     "socket path '" + path + "' is empty or longer than " +
                                         std::to_string(sizeof address.sun_path - 1) + " bytes"});
    }
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    return address;
}

// One marker byte and room for one descriptor (SCM_RIGHTS): what the helper sends and the
// client receives. Not movable: msghdr points into it.
struct DescriptorMessage {
    char byte = 0;
    iovec payload{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr header{.msg_name = nullptr,
                  .msg_namelen = 0,
                  .msg_iov = &payload,
                  .msg_iovlen = 1,
                  .msg_control = control,
                  .msg_controllen = sizeof control,
                  .msg_flags = 0};

    DescriptorMessage() = default;
    DescriptorMessage(const DescriptorMessage&) = delete;
    DescriptorMessage& operator=(const DescriptorMessage&) = delete;
};

}  // namespace

std::expected<std::string, Error> serve_userfaultfd(const HelperOptions& options) {
    auto address = unix_address(options.socket_path);
    if (!address) {
        return std::unexpected(address.error());
    }
    // A userfaultfd serves the address space of the process that creates it, so what crosses
    // the socket is the open device: the receiver creates its own userfaultfd from it
    // (USERFAULTFD_IOC_NEW), and access was checked here, when the device was opened. The
    // device first: a helper that cannot open it says so before anybody waits.
    uffd::UniqueFd device(::open(options.device_path.c_str(), O_RDWR | O_CLOEXEC));
    if (!device) {
        int err = errno;
        return std::unexpected(Error{
            make_error_code(err == EACCES || err == EPERM ? Errc::PermissionDenied
                                                          : Errc::Unsupported),
            "cannot open " + options.device_path + " read-write (" + std::strerror(err) +
                "): the helper delegates the userfaultfd device, which a VMM cannot get "
                "otherwise (a capability such as CAP_SYS_PTRACE cannot be handed over); grant "
                "this user read-write access to " +
                options.device_path + " (Linux 6.1+)"});
    }
    if (auto trial = uffd::UserfaultFd::from_device(device, {}, {}); !trial) {
        return std::unexpected(
            Error{trial.error(),
                  options.device_path + " does not make userfaultfds: " + trial.error().message()});
    }
    uffd::UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener) {
        return std::unexpected(system_error("socket", errno));
    }
    struct stat st {};
    if (::lstat(options.socket_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
        ::unlink(options.socket_path.c_str());  // a stale socket of an earlier helper
    }
    // Created 0600 (never briefly open to others), then given to the one user who may connect.
    mode_t old_mask = ::umask(0177);
    int bound =
        ::bind(listener.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address);
    int bind_errno = errno;
    ::umask(old_mask);
    if (bound < 0) {
        return std::unexpected(system_error("binding " + options.socket_path, bind_errno));
    }
    auto allowed = static_cast<uid_t>(options.allow_uid >= 0 ? options.allow_uid : ::geteuid());
    auto cleanup = [&] { ::unlink(options.socket_path.c_str()); };
    if (::chown(options.socket_path.c_str(), allowed, static_cast<gid_t>(-1)) < 0 ||
        ::listen(listener.get(), 1) < 0) {
        int err = errno;
        cleanup();
        return std::unexpected(system_error("preparing " + options.socket_path, err));
    }
    auto deadline = std::chrono::steady_clock::now() + options.wait;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        pollfd ready{.fd = listener.get(), .events = POLLIN, .revents = 0};
        int n = left.count() > 0 ? ::poll(&ready, 1, static_cast<int>(left.count())) : 0;
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            cleanup();
            return std::unexpected(Error{make_error_code(Errc::PeerLost),
                                         "nobody collected the userfaultfd from " +
                                             options.socket_path + " within " +
                                             std::to_string(options.wait.count()) + " ms"});
        }
        uffd::UniqueFd client(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!client) {
            continue;
        }
        ucred peer{};
        socklen_t length = sizeof peer;
        if (::getsockopt(client.get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) < 0 ||
            (peer.uid != allowed && peer.uid != 0)) {
            continue;  // not the user it is for: refused by closing; keep waiting for them
        }
        DescriptorMessage message;
        message.byte = 'U';
        cmsghdr* header = CMSG_FIRSTHDR(&message.header);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int));
        int fd = device.get();
        std::memcpy(CMSG_DATA(header), &fd, sizeof fd);
        if (::sendmsg(client.get(), &message.header, MSG_NOSIGNAL) != 1) {
            int err = errno;
            cleanup();
            return std::unexpected(system_error("sending the userfaultfd", err));
        }
        cleanup();
        return std::string("device-node");
    }
}

std::expected<int, Error> receive_userfaultfd(const std::string& socket_path) {
    auto address = unix_address(socket_path);
    if (!address) {
        return std::unexpected(address.error());
    }
    uffd::UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!socket) {
        return std::unexpected(system_error("socket", errno));
    }
    if (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address) <
        0) {
        return std::unexpected(system_error("connecting to the helper at " + socket_path, errno));
    }
    DescriptorMessage message;
    ssize_t n = ::recvmsg(socket.get(), &message.header, MSG_CMSG_CLOEXEC);
    if (n < 0) {
        return std::unexpected(system_error("receiving from the helper", errno));
    }
    cmsghdr* header = CMSG_FIRSTHDR(&message.header);
    if (n != 1 || message.byte != 'U' || header == nullptr || header->cmsg_level != SOL_SOCKET ||
        header->cmsg_type != SCM_RIGHTS || header->cmsg_len != CMSG_LEN(sizeof(int))) {
        return std::unexpected(
            Error{make_error_code(Errc::ProtocolViolation),
                  "the helper at " + socket_path + " sent no userfaultfd (refused this user?)"});
    }
    int fd = -1;
    std::memcpy(&fd, CMSG_DATA(header), sizeof fd);
    return fd;
}

}  // namespace uffdm

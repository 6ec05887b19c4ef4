// firecracker.cpp — uffdm::FirecrackerHandler: Firecracker's userfaultfd handshake on a Unix
// socket, its regions checked, then a FaultServer over the VM's own memory per connection.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <uffdm/uffdm.hpp>

#include "api/conversions.hpp"
#include "migration/fault_server.hpp"
#include "migration/layout_probe.hpp"
#include "uffd/capabilities.hpp"
#include "uffd/event_fd.hpp"
#include "uffd/unique_fd.hpp"

namespace uffdm {

namespace {

constexpr std::size_t kMaxRegions = 64;
constexpr std::size_t kMaxMessageBytes = 64U << 10;
constexpr std::uint64_t kHugePage = 2ULL << 20;
constexpr std::uint64_t kGigaPage = 1ULL << 30;

Error invalid(const std::string& why) {
    return Error{make_error_code(Errc::InvalidArgument), why};
}

bool is_page_size(std::uint64_t bytes) {
    return bytes == 4096 || bytes == kHugePage || bytes == kGigaPage;
}

std::string hex(std::uint64_t value) {
    std::ostringstream out;
    out << "0x" << std::hex << value;
    return out.str();
}

std::expected<std::uint64_t, Error> unsigned_field(const nlohmann::json& region, const char* name,
                                                   std::size_t index) {
    auto it = region.find(name);
    if (it == region.end()) {
        return std::unexpected(
            invalid("region " + std::to_string(index) + ": no \"" + name + "\" field"));
    }
    if (!it->is_number_unsigned()) {
        return std::unexpected(invalid("region " + std::to_string(index) + ": \"" + name +
                                       "\" is not a non-negative integer"));
    }
    return it->get<std::uint64_t>();
}

// "page_size" is bytes; "page_size_kib" is bytes too as Firecracker fills it, or KiB as its
// name says (4, 2048): whichever makes a page size.
std::expected<std::uint64_t, Error> page_size_field(const nlohmann::json& region,
                                                    std::size_t index) {
    std::optional<std::uint64_t> bytes;
    std::optional<std::uint64_t> legacy;
    std::string at = "region " + std::to_string(index) + ": ";
    if (region.contains("page_size")) {
        auto value = unsigned_field(region, "page_size", index);
        if (!value) {
            return std::unexpected(value.error());
        }
        if (!is_page_size(*value)) {
            return std::unexpected(invalid(at + "page_size " + std::to_string(*value) +
                                           " is not a page size (4096, 2097152 or 1073741824)"));
        }
        bytes = *value;
    }
    if (region.contains("page_size_kib")) {
        auto value = unsigned_field(region, "page_size_kib", index);
        if (!value) {
            return std::unexpected(value.error());
        }
        if (is_page_size(*value)) {
            legacy = *value;
        } else if (*value <= kGigaPage / 1024 && is_page_size(*value * 1024)) {
            legacy = *value * 1024;
        } else {
            return std::unexpected(invalid(at + "page_size_kib " + std::to_string(*value) +
                                           " is no page size, in bytes or in KiB"));
        }
    }
    if (!bytes && !legacy) {
        return std::unexpected(invalid(at + "no \"page_size\" (or \"page_size_kib\") field"));
    }
    if (bytes && legacy && *bytes != *legacy) {
        return std::unexpected(invalid(at + "page_size and page_size_kib disagree"));
    }
    return bytes ? *bytes : *legacy;
}

}  // namespace

std::expected<std::vector<FirecrackerRegion>, Error> parse_firecracker_regions(
    std::string_view json) {
    auto doc = nlohmann::json::parse(json.begin(), json.end(), nullptr, false);
    if (doc.is_discarded()) {
        return std::unexpected(invalid("the regions message is not JSON"));
    }
    if (!doc.is_array()) {
        return std::unexpected(invalid("the regions message is not a JSON array of regions"));
    }
    if (doc.empty() || doc.size() > kMaxRegions) {
        return std::unexpected(invalid("the regions message has " + std::to_string(doc.size()) +
                                       " regions (1.." + std::to_string(kMaxRegions) + ")"));
    }
    std::vector<FirecrackerRegion> regions;
    for (std::size_t i = 0; i < doc.size(); ++i) {
        const auto& r = doc[i];
        if (!r.is_object()) {
            return std::unexpected(invalid("region " + std::to_string(i) + " is not an object"));
        }
        auto base = unsigned_field(r, "base_host_virt_addr", i);
        auto size = base ? unsigned_field(r, "size", i) : base;
        auto offset = size ? unsigned_field(r, "offset", i) : size;
        auto page = offset ? page_size_field(r, i) : offset;
        if (!page) {
            return std::unexpected(page.error());
        }
        FirecrackerRegion region{*base, *size, *offset, *page};
        std::string at = "region " + std::to_string(i) + ": ";
        if (region.size == 0 || region.size % region.page_size != 0) {
            return std::unexpected(invalid(at + "size " + std::to_string(region.size) +
                                           " is not a non-zero multiple of its page size"));
        }
        if (region.base_host_virt_addr % region.page_size != 0 ||
            region.base_host_virt_addr + region.size < region.base_host_virt_addr) {
            return std::unexpected(invalid(at + "base_host_virt_addr " +
                                           hex(region.base_host_virt_addr) +
                                           " is not page-aligned, or the region wraps"));
        }
        if (region.offset % region.page_size != 0 || region.offset + region.size < region.offset) {
            return std::unexpected(invalid(at + "offset " + std::to_string(region.offset) +
                                           " is not a multiple of its page size"));
        }
        if (!regions.empty() && region.page_size != regions.front().page_size) {
            return std::unexpected(invalid(at + "page size differs from region 0's"));
        }
        regions.push_back(region);
    }
    return regions;
}

namespace {

// The regions against the memory file: its page size, inside it, each byte of it in exactly one
// region (Firecracker writes its regions one after another).
std::expected<void, Error> check_against_memory(const std::vector<FirecrackerRegion>& regions,
                                                std::uint64_t file_bytes,
                                                std::uint64_t file_page_size) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < regions.size(); ++i) {
        const auto& r = regions[i];
        if (r.page_size != file_page_size) {
            return std::unexpected(invalid(
                "region " + std::to_string(i) + ": page size " + std::to_string(r.page_size) +
                " but the memory is served in pages of " + std::to_string(file_page_size)));
        }
        if (r.offset > file_bytes || r.size > file_bytes - r.offset) {
            return std::unexpected(invalid("region " + std::to_string(i) + ": bytes " +
                                           std::to_string(r.offset) + ".." +
                                           std::to_string(r.offset + r.size) +
                                           " of a memory file of " + std::to_string(file_bytes)));
        }
        spans.emplace_back(r.offset, r.offset + r.size);
        total += r.size;
    }
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i) {
        if (spans[i].first < spans[i - 1].second) {
            return std::unexpected(invalid("two regions overlap in the memory file"));
        }
    }
    if (total != file_bytes) {
        return std::unexpected(invalid("the regions hold " + std::to_string(total) +
                                       " bytes but the memory file has " +
                                       std::to_string(file_bytes)));
    }
    return {};
}

// What Firecracker sent: the regions message and the descriptor that came with it.
struct Handshake {
    std::string message;
    uffd::UniqueFd uffd;
    int pid = 0;
};

std::expected<Handshake, Error> receive_handshake(int connection,
                                                  std::chrono::milliseconds timeout) {
    Handshake got;
    ucred peer{};
    socklen_t len = sizeof(peer);
    if (::getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0) {
        got.pid = peer.pid;
    }
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<char> buffer(kMaxMessageBytes);
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        pollfd p{.fd = connection, .events = POLLIN, .revents = 0};
        int ready = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
        if (ready < 0 && errno == EINTR) {
            continue;
        }
        if (ready <= 0) {
            return std::unexpected(
                Error{make_error_code(Errc::TimedOut),
                      "no regions message within " + std::to_string(timeout.count()) + " ms"});
        }
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
        iovec io{.iov_base = buffer.data(), .iov_len = buffer.size()};
        msghdr msg{};
        msg.msg_iov = &io;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        ssize_t n = ::recvmsg(connection, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return std::unexpected(
                Error{std::error_code(errno, std::system_category()),
                      std::string("reading the regions message: ") + std::strerror(errno)});
        }
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
                continue;
            }
            std::size_t fds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (std::size_t i = 0; i < fds; ++i) {
                int fd = -1;
                std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                uffd::UniqueFd owned(fd);
                if (!got.uffd) {
                    got.uffd = std::move(owned);  // the first; any other closes here
                }
            }
        }
        if ((msg.msg_flags & MSG_CTRUNC) != 0 && !got.uffd) {
            return std::unexpected(invalid("the descriptor sent did not fit (MSG_CTRUNC)"));
        }
        if (n == 0) {
            return std::unexpected(Error{make_error_code(Errc::Closed),
                                         got.message.empty()
                                             ? "Firecracker closed the socket before sending"
                                             : "Firecracker closed the socket in the middle of the "
                                               "regions message"});
        }
        got.message.append(buffer.data(), static_cast<std::size_t>(n));
        if (got.message.size() > kMaxMessageBytes) {
            return std::unexpected(invalid("the regions message is over 64 KiB"));
        }
        if (nlohmann::json::accept(got.message)) {
            return got;
        }
    }
}

std::string describe(const Error& error) {
    return error.message.empty() ? error.code.message() : error.message;
}

}  // namespace

struct FirecrackerHandler::Impl {
    FirecrackerHandlerOptions options;
    api::Credentials credentials;
    std::optional<transport::Endpoint> remote;
    uffd::UniqueFd listener;
    std::optional<uffd::EventFd> stopping;
    std::string private_dir;  // the local sources' sockets

    std::mutex mutex;  // guards everything below
    std::condition_variable changed;
    std::vector<FirecrackerVm> ended;
    std::list<std::pair<std::uint64_t, std::thread>> threads;
    std::vector<std::uint64_t> done;  // ended: their threads are joined by run()
    std::vector<migration::FaultServer*> serving;
    std::uint64_t next_id = 0;
    std::size_t running = 0;
    bool stopped = false;

    ~Impl() {
        if (!options.socket_path.empty()) {
            ::unlink(options.socket_path.c_str());
        }
        if (!private_dir.empty()) {
            ::rmdir(private_dir.c_str());
        }
    }

    void serve(uffd::UniqueFd connection, std::uint64_t id);
    FirecrackerVm serve_vm(uffd::UniqueFd connection, std::uint64_t id);
    void finished(FirecrackerVm vm);
    // Joins the threads of sessions that ended (a handler may serve VMs for months). Holds
    // mutex; an ended session's thread only returns from serve() after finished().
    void join_done() {
        for (std::uint64_t id : done) {
            auto it = std::find_if(threads.begin(), threads.end(),
                                   [id](const auto& t) { return t.first == id; });
            if (it != threads.end()) {
                it->second.join();
                threads.erase(it);
            }
        }
        done.clear();
    }
};

void FirecrackerHandler::Impl::finished(FirecrackerVm vm) {
    if (options.on_vm_end) {
        options.on_vm_end(vm);
    }
    std::lock_guard lock(mutex);
    done.push_back(vm.id);
    ended.push_back(std::move(vm));
    --running;
    changed.notify_all();
}

void FirecrackerHandler::Impl::serve(uffd::UniqueFd connection, std::uint64_t id) {
    finished(serve_vm(std::move(connection), id));
}

FirecrackerVm FirecrackerHandler::Impl::serve_vm(uffd::UniqueFd connection, std::uint64_t id) {
    FirecrackerVm vm;
    vm.id = id;
    vm.source = remote ? options.connect : "image " + options.image;
    auto refuse = [&](const Error& why) {
        vm.end = "refused: " + describe(why);
        vm.stats.error = why;
        return vm;
    };
    auto handshake = receive_handshake(connection.get(), options.handshake_timeout);
    if (!handshake) {
        return refuse(handshake.error());
    }
    vm.pid = handshake->pid;
    if (!handshake->uffd) {
        return refuse(invalid("Firecracker sent the regions but no userfaultfd with them"));
    }
    auto regions = parse_firecracker_regions(handshake->message);
    if (!regions) {
        return refuse(regions.error());
    }
    vm.regions = *regions;
    auto adopted = uffd::UserfaultFd::adopt_initialized(std::move(handshake->uffd));
    if (!adopted) {
        return refuse(Error{adopted.error(),
                            "the descriptor sent is not an initialised "
                            "userfaultfd (" +
                                adopted.error().message() + ")"});
    }
    vm.remove_events = adopted->granted().has(uffd::Feature::EventRemove);
    std::uint64_t page_size = regions->front().page_size;

    // The memory: its size and page size, here or from the source.
    std::uint64_t file_bytes = 0;
    std::uint64_t file_page_size = page_size;
    std::optional<Source> local;
    std::optional<migration::GuestMemory> local_memory;  // faults placed from it directly
    if (remote) {
        auto layout = migration::probe_layout({.endpoint = *remote,
                                               .secret = credentials.secret_or_null(),
                                               .tls = credentials.tls,
                                               .bulk_channels = 0,
                                               .liveness = api::to_liveness(options.timeouts)});
        if (!layout) {
            return refuse(api::to_error(layout.error()));
        }
        if (layout->regions.size() != 1) {
            return refuse(invalid("the source serves " + std::to_string(layout->regions.size()) +
                                  " regions; a snapshot's memory file is one"));
        }
        file_bytes = layout->regions[0].length;
        file_page_size = layout->regions[0].page_size;
    } else {
        struct stat st {};
        if (::stat(options.image.c_str(), &st) != 0) {
            return refuse(Error{std::error_code(errno, std::system_category()),
                                options.image + ": " + std::strerror(errno)});
        }
        file_bytes = static_cast<std::uint64_t>(st.st_size);
    }
    if (auto ok = check_against_memory(*regions, file_bytes, file_page_size); !ok) {
        return refuse(ok.error());
    }
    std::string endpoint = options.connect;
    if (!remote) {
        SourceOptions source_options;
        source_options.listen = "unix:" + private_dir + "/vm-" + std::to_string(id) + ".sock";
        source_options.reconnect_timeout = std::chrono::milliseconds(0);
        source_options.timeouts = options.timeouts;
        source_options.data_path = options.data_path;
        auto made = Source::from_image(options.image, page_size, std::move(source_options));
        if (!made) {
            return refuse(made.error());
        }
        local.emplace(std::move(*made));
        endpoint = local->endpoint();
        auto mapped = migration::GuestMemory::image(options.image, page_size);
        if (!mapped) {
            return refuse(api::to_error(mapped.error()));
        }
        local_memory.emplace(std::move(*mapped));
    }
    auto parsed = transport::parse_endpoint(endpoint);
    if (!parsed) {
        return refuse(api::to_error(parsed.error()));
    }
    MemoryKind kind = page_size == 4096 ? MemoryKind::Anonymous : MemoryKind::Hugetlb;
    std::vector<migration::GuestRegion> guest{
        {nullptr, file_bytes, page_size, kind, kind != MemoryKind::Hugetlb}};
    migration::VmmMemory memory;
    memory.local = local_memory ? &*local_memory : nullptr;
    for (const auto& r : *regions) {
        memory.pieces.push_back(
            {r.base_host_virt_addr, {0, r.offset / page_size, r.size / page_size}});
    }
    bool is_remote = remote.has_value();
    migration::FaultServerOptions server_options{
        .source = *parsed,
        .secret = is_remote ? credentials.secret_or_null() : nullptr,
        .tls = is_remote ? credentials.tls : nullptr,
        .liveness = api::to_liveness(options.timeouts),
        .backend = api::to_backend(options.data_path),
        .bulk_channels = options.bulk_channels,
        .verify_hashes = options.verify,
        .hold_stream = false,
        .reconnect_timeout = is_remote ? options.reconnect_timeout : std::chrono::milliseconds(0),
        .poison_on_failure = true,  // a memory error in the guest, not a VM hung for ever
        .discarded_pages_read_zero = true,
        .accept_compression = true,
        .marking = {},
        .on_progress = {},
        .on_pause = {},
        .on_resume = {}};
    server_options.placement_threads = api::placement_threads(-1);
    auto server = migration::FaultServer::create(std::move(*adopted), std::move(guest),
                                                 std::move(server_options), std::move(memory));
    if (!server) {
        return refuse(api::to_error(server.error()));
    }
    std::thread source_thread;
    if (local) {
        source_thread = std::thread([&local] { (void)local->run(); });
    }
    auto stop_source = [&] {
        if (local) {
            local->stop();
            source_thread.join();
        }
    };
    if (auto started = (*server)->start(); !started) {
        stop_source();
        return refuse(api::to_error(started.error()));
    }
    {
        std::lock_guard lock(mutex);
        serving.push_back(server->get());
        if (stopped) {
            (*server)->stop();
        }
    }
    if (options.on_vm_start) {
        options.on_vm_start(vm);
    }
    // Firecracker's end ends the session: its memory is gone with it.
    uffd::UniqueFd pidfd(vm.pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, vm.pid, 0)) : -1);
    auto exited = [&pidfd](int timeout_ms) {
        pollfd p{.fd = pidfd.get(), .events = POLLIN, .revents = 0};
        return pidfd && ::poll(&p, 1, timeout_ms) > 0 && (p.revents & POLLIN) != 0;
    };
    auto watched = uffd::EventFd::create();
    std::thread watcher;
    if (pidfd && watched) {
        watcher = std::thread([&] {
            pollfd fds[2] = {{.fd = pidfd.get(), .events = POLLIN, .revents = 0},
                             {.fd = watched->fd(), .events = POLLIN, .revents = 0}};
            while (::poll(fds, 2, -1) < 0 && errno == EINTR) {
            }
            if ((fds[0].revents & POLLIN) != 0) {
                (*server)->stop();
            }
        });
    }
    vm.stats = (*server)->wait();
    vm.stats.grant = "handed over by Firecracker (pid " + std::to_string(vm.pid) + ")";
    if (watcher.joinable()) {
        (void)watched->signal();
        watcher.join();
    }
    bool vm_exited = !vm.stats.ok && exited(100);
    {
        std::lock_guard lock(mutex);
        std::erase(serving, server->get());
    }
    server->reset();
    stop_source();
    vm.end = vm.stats.ok ? "complete"
             : vm_exited ? "vm exited"
                         : "failed: " + describe(vm.stats.error);
    return vm;
}

FirecrackerHandler::FirecrackerHandler(std::unique_ptr<Impl> impl) noexcept
    : impl_(std::move(impl)) {}
FirecrackerHandler::FirecrackerHandler(FirecrackerHandler&&) noexcept = default;
FirecrackerHandler& FirecrackerHandler::operator=(FirecrackerHandler&&) noexcept = default;
FirecrackerHandler::~FirecrackerHandler() {
    if (impl_) {
        stop();
        std::list<std::pair<std::uint64_t, std::thread>> threads;
        {
            std::lock_guard lock(impl_->mutex);
            threads.swap(impl_->threads);
        }
        for (auto& [id, t] : threads) {
            t.join();
        }
    }
}

std::expected<FirecrackerHandler, Error> FirecrackerHandler::create(
    FirecrackerHandlerOptions options) {
    if (options.image.empty() == options.connect.empty()) {
        return std::unexpected(
            invalid("serve the VMs' memory from --image FILE or --connect "
                    "ADDR (one of the two)"));
    }
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (options.socket_path.empty() || options.socket_path.size() >= sizeof(address.sun_path)) {
        return std::unexpected(invalid("the socket path is empty or longer than " +
                                       std::to_string(sizeof(address.sun_path) - 1) + " bytes"));
    }
    auto impl = std::make_unique<Impl>();
    if (!options.connect.empty()) {
        auto endpoint = transport::parse_endpoint(options.connect);
        if (!endpoint) {
            return std::unexpected(api::to_error(endpoint.error()));
        }
        impl->remote = *endpoint;
        auto credentials =
            api::load_credentials(options.security, transport::TlsContext::Side::Client);
        if (!credentials) {
            return std::unexpected(credentials.error());
        }
        impl->credentials = std::move(*credentials);
    } else {
        int image = ::open(options.image.c_str(), O_RDONLY | O_CLOEXEC);
        if (image < 0) {
            return std::unexpected(Error{std::error_code(errno, std::system_category()),
                                         options.image + ": " + std::strerror(errno)});
        }
        ::close(image);
        std::string dir = "/tmp/uffdm-fc-XXXXXX";
        if (::mkdtemp(dir.data()) == nullptr) {
            return std::unexpected(Error{std::error_code(errno, std::system_category()),
                                         std::string("mkdtemp: ") + std::strerror(errno)});
        }
        impl->private_dir = dir;
    }
    auto stopping = uffd::EventFd::create();
    if (!stopping) {
        return std::unexpected(Error{stopping.error(), "eventfd: " + stopping.error().message()});
    }
    impl->stopping.emplace(std::move(*stopping));
    uffd::UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener) {
        return std::unexpected(Error{std::error_code(errno, std::system_category()),
                                     std::string("socket: ") + std::strerror(errno)});
    }
    std::memcpy(address.sun_path, options.socket_path.c_str(), options.socket_path.size());
    struct stat st {};
    if (::lstat(options.socket_path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            return std::unexpected(
                invalid(options.socket_path + " exists and is not a socket: not replaced"));
        }
        ::unlink(options.socket_path.c_str());
    }
    mode_t old = ::umask(0177);  // 0600 from the start: no moment where others may connect
    int bound = ::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address));
    int err = errno;
    ::umask(old);
    if (bound != 0 || ::listen(listener.get(), 64) != 0) {
        err = bound != 0 ? err : errno;
        return std::unexpected(Error{std::error_code(err, std::system_category()),
                                     options.socket_path + ": " + std::strerror(err)});
    }
    if (options.drop_capabilities) {
        if (auto dropped = uffd::drop_all_capabilities(); !dropped) {
            return std::unexpected(
                Error{dropped.error(), "dropping capabilities: " + dropped.error().message()});
        }
    }
    impl->listener = std::move(listener);
    impl->options = std::move(options);
    return FirecrackerHandler(std::move(impl));
}

std::vector<FirecrackerVm> FirecrackerHandler::run() {
    Impl& h = *impl_;
    for (;;) {
        {
            std::lock_guard lock(h.mutex);
            bool enough = h.options.max_vms != 0 && h.next_id >= h.options.max_vms;
            if (h.stopped || enough) {
                break;
            }
        }
        pollfd fds[2] = {{.fd = h.listener.get(), .events = POLLIN, .revents = 0},
                         {.fd = h.stopping->fd(), .events = POLLIN, .revents = 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if ((fds[1].revents & POLLIN) != 0) {
            break;
        }
        uffd::UniqueFd connection(::accept4(h.listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!connection) {
            continue;
        }
        std::lock_guard lock(h.mutex);
        std::uint64_t id = ++h.next_id;
        ++h.running;
        h.threads.emplace_back(id, std::thread([&h, id, c = std::move(connection)]() mutable {
                                   h.serve(std::move(c), id);
                               }));
        h.join_done();
    }
    std::unique_lock lock(h.mutex);
    h.changed.wait(lock, [&] { return h.running == 0; });
    return h.ended;
}

void FirecrackerHandler::stop() {
    std::lock_guard lock(impl_->mutex);
    impl_->stopped = true;
    (void)impl_->stopping->signal();
    for (auto* server : impl_->serving) {
        server->stop();
    }
}

}  // namespace uffdm

// receive_command.cpp — uffd-migrate receive: a destination that maps what the source describes.
#include <uffdm/uffdm.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "cli/commands.hpp"
#include "cli/common_options.hpp"
#include "cli/progress.hpp"
#include "cli/signals.hpp"
#include "cli/sizes.hpp"

namespace uffdm::cli {

namespace {

struct ReceiveArguments {
    DestinationOptions options;
    std::string memory = "anonymous";
    std::string json;
    std::string save;
    std::string userfaultfd_socket;
    bool keep_capabilities = false;
};

// The received memory as one file, regions back to back; all-zero pages stay holes.
std::expected<void, std::string> save_memory(const std::string& path,
                                             const std::vector<GuestMemory>& memory) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return std::unexpected("cannot save to " + path + ": " + std::strerror(errno));
    }
    off_t at = 0;
    for (const GuestMemory& region : memory) {
        for (std::size_t offset = 0; offset < region.size(); offset += region.page_size()) {
            const std::byte* page = region.data() + offset;
            bool zero = std::all_of(page, page + region.page_size(),
                                    [](std::byte b) { return b == std::byte{0}; });
            if (!zero && ::pwrite(fd, page, region.page_size(), at + static_cast<off_t>(offset)) !=
                             static_cast<ssize_t>(region.page_size())) {
                int err = errno;
                ::close(fd);
                return std::unexpected("cannot save to " + path + ": " + std::strerror(err));
            }
        }
        at += static_cast<off_t>(region.size());
    }
    if (::ftruncate(fd, at) < 0 || ::close(fd) < 0) {
        return std::unexpected("cannot save to " + path + ": " + std::strerror(errno));
    }
    return {};
}

int receive(ReceiveArguments args) {
    auto kind = parse_memory_kind(args.memory);
    if (!kind) {
        std::fprintf(stderr, "uffd-migrate receive: %s\n", kind.error().message.c_str());
        return 2;
    }
    auto layout = probe_source(args.options.connect, args.options.security, args.options.timeouts);
    if (!layout) {
        std::fprintf(stderr, "uffd-migrate receive: %s\n", layout.error().message.c_str());
        return 1;
    }
    std::vector<GuestMemory> memory;
    std::vector<DestinationRegion> regions;
    for (std::size_t i = 0; i < layout->size(); ++i) {
        const RegionLayout& r = (*layout)[i];
        auto mapped = GuestMemory::allocate(*kind, r.length);
        if (!mapped) {
            std::fprintf(stderr, "uffd-migrate receive: region %zu: %s\n", i,
                         mapped.error().message.c_str());
            return 1;
        }
        if (mapped->page_size() != r.page_size) {
            std::fprintf(stderr,
                         "uffd-migrate receive: the source's region %zu has %s pages; --memory %s "
                         "has %s pages (use --memory hugetlb for 2 MiB pages)\n",
                         i, format_bytes(static_cast<double>(r.page_size)).c_str(),
                         args.memory.c_str(),
                         format_bytes(static_cast<double>(mapped->page_size())).c_str());
            return 2;
        }
        regions.push_back({mapped->data(), mapped->size(), mapped->page_size(), *kind});
        memory.push_back(std::move(*mapped));
    }
    if (!args.userfaultfd_socket.empty()) {
        auto fd = receive_userfaultfd(args.userfaultfd_socket);
        if (!fd) {
            std::fprintf(stderr, "uffd-migrate receive: %s\n", fd.error().message.c_str());
            return 1;
        }
        args.options.userfaultfd = *fd;
    }
    args.options.drop_capabilities = !args.keep_capabilities;
    ProgressBar bar("receiving");
    args.options.on_progress = [&bar](const DestinationProgress& p) {
        bar.update(
            p.pages_present, p.pages_total, p.bytes_received,
            "faults " + std::to_string(p.faults) + (p.paused ? ", PAUSED: reconnecting" : ""));
    };
    report_pauses(args.options, "uffd-migrate receive");
    auto destination = Destination::create(regions, args.options);
    if (!destination) {
        std::fprintf(stderr, "uffd-migrate receive: %s\n", destination.error().message.c_str());
        return 1;
    }
    StopOnSignal on_signal([&destination](int) { destination->stop(); });
    if (auto started = destination->start(); !started) {
        std::fprintf(stderr, "uffd-migrate receive: %s\n", started.error().message.c_str());
        return 1;
    }
    DestinationStats stats = destination->wait();
    bar.finish();
    print_summary(stats, stdout);
    int status = stats.ok ? 0 : 1;
    if (stats.ok && !args.save.empty()) {
        if (auto saved = save_memory(args.save, memory); !saved) {
            std::fprintf(stderr, "uffd-migrate receive: %s\n", saved.error().c_str());
            status = 1;
        }
    }
    if (!args.json.empty()) {
        if (auto written = write_json(args.json, to_json(stats)); !written) {
            std::fprintf(stderr, "uffd-migrate receive: %s\n", written.error().c_str());
            status = 1;
        }
    }
    return status;
}

}  // namespace

std::function<int()> add_receive_command(CLI::App& app) {
    auto args = std::make_shared<ReceiveArguments>();
    CLI::App* command = app.add_subcommand(
        "receive", "Receive a guest's memory from a source (the destination of a migration)");
    command
        ->add_option("--connect", args->options.connect, "The source: tcp:HOST:PORT or unix:PATH")
        ->required();
    add_security_options(*command, args->options.security);
    command->add_flag("--verify", args->options.verify,
                      "Ask for a hash with every page and check it before placing the page");
    command->add_option("--memory", args->memory, "Guest memory: anonymous, shmem or hugetlb")
        ->capture_default_str();
    add_bulk_channels_option(*command, args->options.bulk_channels);
    add_placement_option(*command, args->options.placement_threads);
    add_data_path_option(*command, args->options.data_path);
    add_marking_options(*command, args->options.marking);
    add_timeout_options(*command, args->options.timeouts, &args->options.reconnect_timeout);
    command->add_option("--userfaultfd-socket", args->userfaultfd_socket,
                        "Take the userfaultfd from `uffd-migrate helper` on this socket");
    command->add_flag("--keep-capabilities", args->keep_capabilities,
                      "Do not drop capabilities once the userfaultfd is open");
    command->add_option("--save", args->save, "Write the received memory to this file");
    command->add_option("--json", args->json, "Write a JSON report to this file");
    return [args] { return receive(*args); };
}

}  // namespace uffdm::cli

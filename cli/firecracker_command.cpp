// firecracker_command.cpp — uffd-migrate firecracker-handler: Firecracker's external page-fault
// handler, serving restored VMs from a memory file here or from a source on another host.
#include <uffdm/uffdm.hpp>

#include <cstdio>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/common_options.hpp"
#include "cli/signals.hpp"

namespace uffdm::cli {

namespace {

struct FirecrackerArguments {
    FirecrackerHandlerOptions options;
    std::string json;
};

nlohmann::json to_json(const FirecrackerVm& vm) {
    nlohmann::json regions = nlohmann::json::array();
    for (const auto& r : vm.regions) {
        regions.push_back({{"base_host_virt_addr", r.base_host_virt_addr},
                           {"size", r.size},
                           {"offset", r.offset},
                           {"page_size", r.page_size}});
    }
    return {{"vm", vm.id},
            {"pid", vm.pid},
            {"source", vm.source},
            {"remove_events", vm.remove_events},
            {"end", vm.end},
            {"regions", regions},
            {"stats", cli::to_json(vm.stats)}};
}

int handle(FirecrackerArguments args) {
    std::mutex out;
    args.options.on_vm_start = [&out](const FirecrackerVm& vm) {
        std::lock_guard lock(out);
        std::fprintf(stderr,
                     "uffd-migrate firecracker-handler: VM %llu (pid %d): %zu regions, %s\n",
                     static_cast<unsigned long long>(vm.id), vm.pid, vm.regions.size(),
                     vm.remove_events ? "balloon discards reported"
                                      : "no REMOVE events (a balloon would not be seen)");
    };
    args.options.on_vm_end = [&out, &args](const FirecrackerVm& vm) {
        std::lock_guard lock(out);
        std::fprintf(stdout, "VM %llu (pid %d): %s\n", static_cast<unsigned long long>(vm.id),
                     vm.pid, vm.end.c_str());
        if (!vm.regions.empty() && vm.end.rfind("refused", 0) != 0) {
            print_summary(vm.stats, stdout);
        }
        std::fflush(stdout);
        if (!args.json.empty()) {
            // One line per VM, appended as each ends.
            if (std::FILE* f = std::fopen(args.json.c_str(), "a")) {
                std::fprintf(f, "%s\n", to_json(vm).dump().c_str());
                std::fclose(f);
            } else {
                std::fprintf(stderr, "uffd-migrate firecracker-handler: cannot append to %s\n",
                             args.json.c_str());
            }
        }
    };
    args.options.handshake_timeout = args.options.timeouts.handshake;
    auto handler = FirecrackerHandler::create(args.options);
    if (!handler) {
        std::fprintf(stderr, "uffd-migrate firecracker-handler: %s\n",
                     handler.error().message.c_str());
        return 1;
    }
    std::fprintf(stderr, "uffd-migrate firecracker-handler: listening on %s\n",
                 args.options.socket_path.c_str());
    StopOnSignal on_signal([&handler](int) { handler->stop(); });
    auto vms = handler->run();
    bool all_ok = true;
    for (const auto& vm : vms) {
        all_ok = all_ok && vm.end == "complete";
    }
    return all_ok ? 0 : 1;
}

}  // namespace

std::function<int()> add_firecracker_command(CLI::App& app) {
    auto args = std::make_shared<FirecrackerArguments>();
    CLI::App* command = app.add_subcommand(
        "firecracker-handler",
        "Serve restored Firecracker VMs' page faults (snapshot restore with the Uffd backend)");
    command
        ->add_option("--socket", args->options.socket_path,
                     "The Unix socket Firecracker connects to (its mem_backend backend_path)")
        ->required();
    auto* image = command->add_option("--image", args->options.image,
                                      "The snapshot's memory file on this host");
    auto* connect = command->add_option(
        "--connect", args->options.connect,
        "A source serving the memory file (uffd-migrate serve --image FILE): tcp:HOST:PORT or "
        "unix:PATH");
    image->excludes(connect);
    connect->excludes(image);
    add_security_options(*command, args->options.security);
    command->add_flag("--verify", args->options.verify,
                      "Ask for a hash with every page and check it before placing the page");
    add_bulk_channels_option(*command, args->options.bulk_channels);
    add_data_path_option(*command, args->options.data_path);
    add_timeout_options(*command, args->options.timeouts, &args->options.reconnect_timeout);
    command
        ->add_option("--max-vms", args->options.max_vms,
                     "Exit once this many VMs were served (0: until SIGINT or SIGTERM)")
        ->capture_default_str();
    command->add_option("--json", args->json, "Append a JSON line per VM to this file");
    return [args] {
        if (args->options.image.empty() && args->options.connect.empty()) {
            std::fprintf(stderr,
                         "uffd-migrate firecracker-handler: --image FILE or --connect "
                         "ADDR says where the VMs' memory is\n");
            return 2;
        }
        return handle(*args);
    };
}

}  // namespace uffdm::cli

// helper_command.cpp — uffd-migrate helper: the privileged half that hands over a userfaultfd.
#include <uffdm/uffdm.hpp>

#include <cstdio>
#include <memory>

#include "cli/commands.hpp"

namespace uffdm::cli {

std::function<int()> add_helper_command(CLI::App& app) {
    auto options = std::make_shared<HelperOptions>();
    auto wait_seconds = std::make_shared<unsigned>(60);
    CLI::App* command = app.add_subcommand(
        "helper",
        "Open /dev/userfaultfd, hand it to one process on a Unix socket (SCM_RIGHTS), and exit: "
        "the VMM that receives it makes its own userfaultfd with no privilege");
    command->add_option("--socket", options->socket_path, "The Unix socket to hand it over on")
        ->required();
    command->add_option("--device", options->device_path, "The userfaultfd device node")
        ->capture_default_str();
    command->add_option("--allow-uid", options->allow_uid,
                        "The user who may collect it (default: this user)");
    command->add_option("--wait", *wait_seconds, "Seconds to wait for the collector")
        ->capture_default_str();
    return [options, wait_seconds] {
        options->wait = std::chrono::seconds(*wait_seconds);
        auto grant = serve_userfaultfd(*options);
        if (!grant) {
            std::fprintf(stderr, "uffd-migrate helper: %s\n", grant.error().message.c_str());
            return 1;
        }
        std::printf("handed %s (%s) over %s\n", options->device_path.c_str(), grant->c_str(),
                    options->socket_path.c_str());
        return 0;
    };
}

}  // namespace uffdm::cli

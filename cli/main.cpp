// main.cpp — The `uffd-migrate` command line: parses arguments and dispatches subcommands.
#include <CLI/CLI.hpp>
#include <exception>
#include <iostream>
#include <uffdm/uffdm.hpp>

#include "cli/check_command.hpp"
#include "cli/commands.hpp"
#include "cli/signals.hpp"

int main(int argc, char** argv) {
    // Before any thread exists, so that only the watcher a command starts ever takes them.
    uffdm::cli::block_stop_signals();

    CLI::App app{"uffd-migrate: postcopy live migration of guest memory over userfaultfd"};
    app.set_version_flag("--version", std::string(uffdm::version()));
    app.require_subcommand(1);
    // One line, whatever was wrong with the arguments.
    app.failure_message([](const CLI::App*, const CLI::Error& e) {
        return "uffd-migrate: " + std::string(e.what()) + " (see --help)\n";
    });

    bool json = false;
    uffdm::CheckOptions check_options;
    CLI::App* check = app.add_subcommand(
        "check",
        "Say what this host allows. Exit 0: kernel faults can be served; 2: user-mode faults "
        "only; 1: no userfaultfd.");
    check->add_flag("--json", json, "Print a JSON report (fields documented in README.md)");
    check->add_option("--device", check_options.device_path, "The userfaultfd device node")
        ->capture_default_str();
    auto serve = uffdm::cli::add_serve_command(app);
    auto receive = uffdm::cli::add_receive_command(app);
    auto demo = uffdm::cli::add_demo_command(app);
    auto helper = uffdm::cli::add_helper_command(app);
    auto firecracker = uffdm::cli::add_firecracker_command(app);

    // CLI11 would only say that a subcommand is required; name the word it did not know.
    if (argc > 1 && argv[1][0] != '-') {
        std::string_view word = argv[1];
        bool known = false;
        for (const CLI::App* sub : app.get_subcommands({})) {
            known = known || sub->get_name() == word;
        }
        if (!known) {
            std::cerr << "uffd-migrate: unknown command '" << word
                      << "' (commands: check, serve, receive, demo, helper, firecracker-handler; "
                         "see --help)\n";
            return 2;
        }
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help and --version exit 0; every argument CLI11 refuses exits 2 (usage), as the
        // commands' own argument checks do, never CLI11's internal error numbers.
        return app.exit(e) == 0 ? 0 : 2;
    }

    try {
        if (check->parsed()) {
            uffdm::HostReport report = uffdm::check_host(check_options);
            if (json) {
                uffdm::cli::print_check_json(report, std::cout);
            } else {
                uffdm::cli::print_check_text(report, std::cout);
            }
            return report.exit_code();
        }
        for (auto [name, run] :
             {std::pair{"serve", &serve}, std::pair{"receive", &receive}, std::pair{"demo", &demo},
              std::pair{"helper", &helper}, std::pair{"firecracker-handler", &firecracker}}) {
            if (app.got_subcommand(name)) {
                return (*run)();
            }
        }
    } catch (const std::exception& e) {
        std::cerr << "uffd-migrate: " << e.what() << "\n";
        return 1;
    }
    return 1;
}

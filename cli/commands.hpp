// commands.hpp — The subcommands of uffd-migrate: each registers its options, then runs.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace uffdm::cli {

// Each adds its subcommand to app and returns what to run when it is the one parsed; the
// function returns the exit status.
std::function<int()> add_serve_command(CLI::App& app);
std::function<int()> add_receive_command(CLI::App& app);
std::function<int()> add_demo_command(CLI::App& app);
std::function<int()> add_helper_command(CLI::App& app);
std::function<int()> add_firecracker_command(CLI::App& app);

}  // namespace uffdm::cli

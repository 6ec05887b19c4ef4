// check_command.hpp — `uffd-migrate check`: what this host allows, as text or JSON.
#pragma once

#include <iosfwd>

#include <uffdm/uffdm.hpp>

namespace uffdm::cli {

void print_check_text(const HostReport& report, std::ostream& out);
void print_check_json(const HostReport& report, std::ostream& out);

}  // namespace uffdm::cli

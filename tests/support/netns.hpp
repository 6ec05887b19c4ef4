// netns.hpp — Two "hosts" for tests: the CLI's pair of network namespaces joined by veth.
#pragma once

#include "cli/netns.hpp"

namespace uffdm::test {
using NetnsPair = cli::NetnsPair;
}  // namespace uffdm::test

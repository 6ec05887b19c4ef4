// uapi.hpp — The userfaultfd kernel ABI, with constants newer than Debian 12's headers.
#pragma once

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

#include <cstdint>

// Debian 12 ships 6.1 uapi headers. The running kernel may know more; these
// values are the kernel's ABI (include/uapi/linux/userfaultfd.h in 6.8+) and
// whether the kernel supports them is always asked at run time (UFFDIO_API
// features, the ioctl mask returned by UFFDIO_REGISTER), never assumed here.

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif

#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
#endif

#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif

namespace uffdm::uffd::uapi {

// struct uffdio_move and struct uffdio_poison, as in the 6.8 uapi.
struct Move {
    std::uint64_t dst;
    std::uint64_t src;
    std::uint64_t len;
    std::uint64_t mode;
    std::int64_t move;
};
static_assert(sizeof(Move) == 40);

struct Poison {
    uffdio_range range;
    std::uint64_t mode;
    std::int64_t updated;
};
static_assert(sizeof(Poison) == 32);

inline constexpr std::uint64_t kMoveModeDontWake = 1ULL << 0;
inline constexpr std::uint64_t kMoveModeAllowSrcHoles = 1ULL << 1;
inline constexpr std::uint64_t kPoisonModeDontWake = 1ULL << 0;

inline constexpr unsigned long kIocMove = _IOWR(UFFDIO, _UFFDIO_MOVE, Move);
inline constexpr unsigned long kIocPoison = _IOWR(UFFDIO, _UFFDIO_POISON, Poison);

}  // namespace uffdm::uffd::uapi

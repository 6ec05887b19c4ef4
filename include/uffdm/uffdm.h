/* uffdm.h — The C ABI of uffd-migrate: opaque handles, 0 or -errno results, no exceptions.
 *
 * For VMMs written in C or Rust. Every function returns 0 (or a count, or a descriptor) on
 * success and a negative errno on failure; uffdm_last_error() then holds a sentence saying what
 * failed and what to do. Structs begin with `size` (set it to sizeof the struct you were compiled
 * with) and carry `flags` whose unknown bits must be 0: both let later versions add fields. */
#ifndef UFFDM_H
#define UFFDM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#define UFFDM_NOEXCEPT noexcept
#else
#define UFFDM_NOEXCEPT
#endif

#define UFFDM_ABI_VERSION 1

typedef struct uffdm_source uffdm_source;
typedef struct uffdm_destination uffdm_destination;
typedef struct uffdm_firecracker uffdm_firecracker;

enum uffdm_memory_kind {
    UFFDM_MEMORY_ANONYMOUS = 1, /* private anonymous memory */
    UFFDM_MEMORY_SHMEM = 2,     /* memfd shared memory */
    UFFDM_MEMORY_HUGETLB = 3    /* hugetlbfs, 2 MiB pages */
};

/* Who may take part: a token file (HMAC-SHA256 shared secret, mode 600), TLS 1.3, or both.
 * NULL members are unset. */
struct uffdm_security {
    const char* token_file;
    const char* tls_certificate;
    const char* tls_private_key;
    const char* tls_ca;
    const char* tls_server_name;
    uint32_t flags;    /* UFFDM_SECURITY_INSECURE */
    uint32_t reserved; /* 0 */
};
#define UFFDM_SECURITY_INSECURE (1u << 0) /* source: listen off-host without client auth */

/* Guest memory: mapped, aligned to page_size. A destination's regions must not be touched
 * before uffdm_destination_start(). */
struct uffdm_region {
    void* address;
    uint64_t length;
    uint64_t page_size;
    uint32_t kind;  /* enum uffdm_memory_kind */
    uint32_t flags; /* 0 */
};

struct uffdm_progress {
    uint64_t pages_total;
    uint64_t pages_present;
    uint64_t bytes_received;
    uint64_t faults;
    uint32_t connected;
    uint32_t reserved;
    double seconds;
};

typedef void (*uffdm_progress_fn)(const struct uffdm_progress* progress, void* user);
struct uffdm_destination_stats;
/* Called once when the migration ends, from a library thread; result is 0 or -errno. */
typedef void (*uffdm_complete_fn)(int result, const struct uffdm_destination_stats* stats,
                                  void* user);

#define UFFDM_DESTINATION_VERIFY (1u << 0)            /* a hash with every page, checked */
#define UFFDM_DESTINATION_DROP_CAPABILITIES (1u << 1) /* once the fd is open (single thread) */
#define UFFDM_DESTINATION_USER_FAULTS_ONLY (1u << 2)  /* do not require kernel-mode faults */
#define UFFDM_DESTINATION_HOLD_STREAM (1u << 3)       /* no background stream until released */
#define UFFDM_DESTINATION_POISON_ON_FAILURE (1u << 4) /* failed: missing pages give SIGBUS */
/* A page discarded during the migration (MADV_DONTNEED/MADV_REMOVE) reads zeros instead of
 * the source's copy fetched again. */
#define UFFDM_DESTINATION_DISCARDS_READ_ZERO (1u << 5)
/* Refuse compressed runs (the source then sends them raw), and leave the sockets unmarked. */
#define UFFDM_DESTINATION_REFUSE_COMPRESSION (1u << 6)
#define UFFDM_DESTINATION_NO_MARKING (1u << 7)

struct uffdm_destination_options {
    uint32_t size; /* sizeof(struct uffdm_destination_options) */
    uint32_t flags;
    const char* connect; /* the source: "tcp:HOST:PORT" or "unix:PATH" */
    struct uffdm_security security;
    uint32_t bulk_channels;        /* 0..16 */
    int32_t userfaultfd;           /* the device from uffdm_receive_userfaultfd, or -1 */
    uffdm_progress_fn on_progress; /* may be NULL; called about ten times a second */
    uffdm_complete_fn on_complete; /* may be NULL: then uffdm_destination_wait() blocks for it */
    void* user;                    /* passed to both */
    /* After a break: how long without a page before the migration fails. 0: the default
     * (30 s); UINT32_MAX: fail at the first break. */
    uint32_t reconnect_timeout_ms;
    /* Threads placing the background stream while the bulk connections go on receiving:
     * 0, the library's choice (one per usable core beyond two, at most four; none on two
     * cores, where the bulk loop placing itself measured faster); -1, none (each bulk loop
     * places what it received); 1..16, that many. (The field was `reserved`, always 0.) */
    int32_t placement_threads;
};

struct uffdm_latency {
    uint64_t count;
    double mean_us;
    double p50_us;
    double p90_us;
    double p99_us;
    double p999_us;
    double max_us;
};

struct uffdm_destination_stats {
    uint32_t size; /* sizeof(struct uffdm_destination_stats) */
    int32_t error; /* 0 when every page arrived, else -errno (see uffdm_last_error) */
    double seconds;
    uint64_t pages_total;
    uint64_t pages_urgent;
    uint64_t pages_background;
    uint64_t pages_zero;
    uint64_t pages_duplicate;
    uint64_t faults;
    uint64_t requests;
    uint64_t bytes_received;
    uint64_t hashes_verified;
    struct uffdm_latency fault_latency;
    uint64_t pauses;  /* breaks in the connection (each reconnected, or the one that ended it) */
    uint64_t resumed; /* of those, the ones after which pages flowed again */
};

/* Opens the userfaultfd (through the privilege gate, or adopts options->userfaultfd). */
int uffdm_destination_create(const struct uffdm_destination_options* options,
                             const struct uffdm_region* regions, size_t count,
                             uffdm_destination** out) UFFDM_NOEXCEPT;
/* Registers the regions and connects in the background: the guest may run from here on. */
int uffdm_destination_start(uffdm_destination* destination) UFFDM_NOEXCEPT;
/* Blocks until every page is present (0) or the migration failed (-errno). */
int uffdm_destination_wait(uffdm_destination* destination,
                           struct uffdm_destination_stats* stats) UFFDM_NOEXCEPT;
void uffdm_destination_stop(uffdm_destination* destination) UFFDM_NOEXCEPT;
/* Holds (held != 0) or resumes the source's background stream; faults are always served. */
void uffdm_destination_hold_stream(uffdm_destination* destination, int held) UFFDM_NOEXCEPT;
/* After a failure, pages still missing are poisoned first: a thread touching one gets SIGBUS. */
void uffdm_destination_destroy(uffdm_destination* destination) UFFDM_NOEXCEPT;

/* uffdm_source_options.flags */
#define UFFDM_SOURCE_COMPRESS_ANSWERS (1u << 0) /* answers to faults compressed too */
#define UFFDM_SOURCE_NO_MARKING (1u << 1)       /* no DSCP/priority/backlog on the sockets */
/* uffdm_source_options.compression: how the background stream's data runs are encoded */
#define UFFDM_COMPRESSION_OFF 0u
#define UFFDM_COMPRESSION_LZ4 1u
#define UFFDM_COMPRESSION_ZSTD 2u
#define UFFDM_COMPRESSION_AUTO 3u /* lz4 while the stream measures faster with it */

struct uffdm_source_options {
    uint32_t size;      /* sizeof(struct uffdm_source_options), or UFFDM_SOURCE_OPTIONS_SIZE_V1 */
    uint32_t flags;     /* UFFDM_SOURCE_* */
    const char* listen; /* "tcp:127.0.0.1:0" when NULL */
    struct uffdm_security security;
    /* unix: listeners. The socket file's mode whatever the umask (0: 0600), and the users
     * besides the source's own and root whose processes may connect (SO_PEERCRED). */
    uint32_t unix_socket_mode;
    uint32_t allowed_uid_count;
    const uint32_t* allowed_uids;
    /* Since ABI 1.1 (a caller built before passes the shorter size: these are then 0). */
    uint32_t compression;   /* UFFDM_COMPRESSION_* */
    int32_t zstd_level;     /* 0: 3; else -7..19 */
    uint64_t max_bandwidth; /* the stream's bytes per second on the wire; 0: no cap */
};
/* The size of the struct before compression and max_bandwidth, still accepted. */
#define UFFDM_SOURCE_OPTIONS_SIZE_V1 offsetof(struct uffdm_source_options, compression)

struct uffdm_source_stats {
    uint32_t size; /* sizeof(struct uffdm_source_stats) */
    int32_t error;
    double seconds;
    uint64_t pages_total;
    uint64_t pages_streamed;
    uint64_t pages_answered;
    uint64_t pages_resent;
    uint64_t zero_pages;
    uint64_t requests;
    uint64_t bytes_sent;
    /* Since ABI 1.1 (filled when size says the struct has them). */
    uint64_t compressed_runs;
    uint64_t compressed_raw_bytes; /* guest bytes of the runs sent compressed */
    uint64_t compressed_bytes;     /* what they took on the wire */
    double capped_seconds;         /* the stream waited for max_bandwidth */
};
#define UFFDM_SOURCE_STATS_SIZE_V1 offsetof(struct uffdm_source_stats, compressed_runs)

/* Serves the caller's memory (all regions of one page size; it must stay mapped until run
 * returns). */
int uffdm_source_create(const struct uffdm_source_options* options,
                        const struct uffdm_region* regions, size_t count,
                        uffdm_source** out) UFFDM_NOEXCEPT;
/* Where destinations connect, NUL-terminated; -ERANGE when buffer is too small. */
int uffdm_source_endpoint(const uffdm_source* source, char* buffer, size_t size) UFFDM_NOEXCEPT;
/* Serves one destination to the end. */
int uffdm_source_run(uffdm_source* source, struct uffdm_source_stats* stats) UFFDM_NOEXCEPT;
void uffdm_source_stop(uffdm_source* source) UFFDM_NOEXCEPT;
void uffdm_source_destroy(uffdm_source* source) UFFDM_NOEXCEPT;

/* ---- A live source (hybrid migration: precopy rounds while the guest runs, the switchover,
 * then postcopy; see uffdm.hpp's LiveMigration). Writes are tracked by the kernel (Linux 6.7+,
 * no privilege) unless the VMM hands over its own dirty log. */
struct uffdm_round {
    uint32_t round; /* 0: every page once */
    uint32_t reserved;
    uint64_t pages; /* sent in the round */
    uint64_t bytes; /* on the wire */
    double seconds;
    uint64_t dirty_pages; /* written meanwhile: the next round's pages */
    double dirty_pages_per_second;
};
typedef void (*uffdm_guest_fn)(void* user);
typedef void (*uffdm_round_fn)(const struct uffdm_round* round, void* user);
/* Sets in bits[] (bit i of word w: page 64 w + i of the region) the pages written since its
 * last call for that region; 0, or -errno to fail the migration. */
typedef int (*uffdm_dirty_log_fn)(uint32_t region, uint64_t* bits, size_t words, void* user);

struct uffdm_live_options {
    uint32_t size;                /* sizeof(struct uffdm_live_options) */
    uint32_t max_rounds;          /* 0: 10 */
    uint32_t downtime_budget_ms;  /* 0: 50 */
    uint32_t reserved;            /* 0 */
    uffdm_guest_fn pause_guest;   /* required: pause the vCPUs, return once paused */
    uffdm_guest_fn resume_guest;  /* may be NULL: the migration failed before any destination
                                     could run the guest; run it here again */
    uffdm_round_fn on_round;      /* may be NULL */
    uffdm_dirty_log_fn dirty_log; /* may be NULL: the kernel tracks writes */
    void* user;                   /* passed to all four */
};

struct uffdm_live_stats {
    uint32_t size; /* sizeof(struct uffdm_live_stats) */
    uint32_t rounds;
    uint64_t pages_discarded;    /* written after sent when the guest paused */
    double downtime_seconds;     /* paused here until the destination's guest ran */
    int32_t guest_runnable_here; /* after a failure: 1 when no destination can be running it */
    uint32_t reserved;
};

/* As uffdm_source_create, for a guest that keeps running; regions[i].kind says how to track
 * its writes. */
int uffdm_source_create_live(const struct uffdm_source_options* options,
                             const struct uffdm_live_options* live,
                             const struct uffdm_region* regions, size_t count,
                             uffdm_source** out) UFFDM_NOEXCEPT;
/* Switch over at the end of the current round (thread-safe). */
void uffdm_source_switchover(uffdm_source* source) UFFDM_NOEXCEPT;
/* After uffdm_source_run: the live migration's figures. */
int uffdm_source_live_stats(const uffdm_source* source,
                            struct uffdm_live_stats* stats) UFFDM_NOEXCEPT;

/* The destination of a live source: its guest may run only once this returns 0 (at once for
 * a source whose guest is paused). -ETIMEDOUT after timeout_ms (0: ten minutes), or the
 * migration's failure. */
int uffdm_destination_wait_runnable(uffdm_destination* destination,
                                    uint32_t timeout_ms) UFFDM_NOEXCEPT;

/* ---- Firecracker's page-fault handler (uffd-migrate firecracker-handler) ---------------- */

/* One VM's session, reported when it ends (from the VM's library thread). */
struct uffdm_firecracker_vm {
    uint64_t id;            /* 1, 2, ... in the order the VMs connected */
    int32_t pid;            /* Firecracker's process */
    int32_t result;         /* 0: every page arrived; else -errno */
    const char* end;        /* "complete", "vm exited", "refused: ...", "failed: ..." */
    uint32_t regions;       /* in its regions message (0 when refused before) */
    uint32_t remove_events; /* 1: balloon discards are reported to the handler */
    struct uffdm_destination_stats stats; /* zeros for a refused handshake */
};
typedef void (*uffdm_firecracker_vm_fn)(const struct uffdm_firecracker_vm* vm, void* user);

#define UFFDM_FIRECRACKER_VERIFY (1u << 0)            /* a hash with every page, checked */
#define UFFDM_FIRECRACKER_KEEP_CAPABILITIES (1u << 1) /* do not drop them in create() */

struct uffdm_firecracker_options {
    uint32_t size; /* sizeof(struct uffdm_firecracker_options) */
    uint32_t flags;
    const char* socket_path; /* created 0600; Firecracker's mem_backend backend_path */
    const char* image;       /* the snapshot's memory file here, or NULL and: */
    const char* connect;     /* a source serving it ("tcp:HOST:PORT", "unix:PATH") */
    struct uffdm_security security;
    uint32_t bulk_channels;        /* 0..16 (1 is the default to pass) */
    uint32_t max_vms;              /* uffdm_firecracker_run returns after this many; 0: stop() */
    uint32_t handshake_timeout_ms; /* 0: 5000 */
    uint32_t reconnect_timeout_ms; /* 0: 30000; UINT32_MAX: fail at the first break */
    uffdm_firecracker_vm_fn on_vm_end; /* may be NULL */
    void* user;
};

/* Listens on the socket (and drops every capability unless KEEP_CAPABILITIES: the process must
 * be single-threaded then). */
int uffdm_firecracker_create(const struct uffdm_firecracker_options* options,
                             uffdm_firecracker** out) UFFDM_NOEXCEPT;
/* Serves VMs until max_vms ended or uffdm_firecracker_stop(); 0 when every VM's memory arrived
 * whole, else the first failure's -errno. */
int uffdm_firecracker_run(uffdm_firecracker* handler) UFFDM_NOEXCEPT;
void uffdm_firecracker_stop(uffdm_firecracker* handler) UFFDM_NOEXCEPT; /* thread-safe */
void uffdm_firecracker_destroy(uffdm_firecracker* handler) UFFDM_NOEXCEPT;

/* Collects the open /dev/userfaultfd that `uffd-migrate helper --socket PATH` hands over: a
 * descriptor for uffdm_destination_options.userfaultfd, or -errno. */
int uffdm_receive_userfaultfd(const char* socket_path) UFFDM_NOEXCEPT;

/* The sentence about the last failure on this thread ("" when none). */
const char* uffdm_last_error(void) UFFDM_NOEXCEPT;
/* A fixed description of a -errno result. */
const char* uffdm_strerror(int error) UFFDM_NOEXCEPT;
const char* uffdm_version(void) UFFDM_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* UFFDM_H */

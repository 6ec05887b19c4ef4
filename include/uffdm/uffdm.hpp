// uffdm.hpp — The public C++ API of uffd-migrate.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <uffdm/error.hpp>
#include <uffdm/memory_kind.hpp>
#include <uffdm/report.hpp>

namespace uffdm {

// "MAJOR.MINOR.PATCH" of this library.
[[nodiscard]] std::string_view version() noexcept;

// ---- What this host allows (uffd-migrate check) ---------------------------------------------

struct CheckOptions {
    std::string device_path = "/dev/userfaultfd";
};

// One way of being allowed to serve kernel-mode faults, and whether it holds here.
struct GrantReport {
    std::string name;  // device-node, cap-userfaultfd, cap-sys-ptrace, unprivileged-sysctl
    bool holds = false;
    std::string detail;
};

// What registering one kind of guest memory gives: the ioctls the kernel allows there.
struct MemoryKindReport {
    std::string kind;                         // anonymous, shmem, hugetlb
    bool available = false;                   // the memory could be mapped and registered
    std::string note;                         // why not, when not
    std::vector<std::string> missing_ioctls;  // registered in MISSING mode
    std::vector<std::string> minor_ioctls;    // MINOR mode (empty where unsupported)
    std::vector<std::string> wp_ioctls;       // WP mode (empty where unsupported)
    // How a destination places this kind's pages, chosen from the ioctls above, and the ways
    // the kernel offers that were measured slower and not chosen (each with the figure).
    std::string placement;
    std::vector<std::string> placement_passed_over;
};

// Whether this host can track a running guest's writes to one kind of memory (a live source:
// precopy rounds). Needs no privilege; Linux 6.7+ (UFFD_FEATURE_WP_ASYNC, PAGEMAP_SCAN).
struct DirtyTrackingReport {
    std::string kind;  // anonymous, shmem, hugetlb
    bool available = false;
    std::string note;  // why not, when not
};

enum class HostVerdict : std::uint8_t {
    Invalid = 0,
    KernelFaults = 1,    // a full userfaultfd: guest and kernel (KVM, read(2)) faults are served
    UserFaultsOnly = 2,  // only UFFD_USER_MODE_ONLY: a destination needing kernel faults refuses
    NoUserfaultfd = 3,
};

struct HostReport {
    std::string kernel_release;
    std::string machine;
    HostVerdict verdict = HostVerdict::Invalid;
    std::string grant;                   // the grant used for kernel faults, or "none"
    std::string refusal;                 // empty when kernel faults are allowed
    std::string open_route;              // device or syscall, for the userfaultfd opened to check
    std::string open_error;              // set when even that failed
    std::uint64_t features_offered = 0;  // UFFD_FEATURE_* bits
    std::vector<std::string> feature_names;
    std::vector<std::string> api_ioctls;
    std::vector<GrantReport> grants;
    bool in_user_namespace = false;
    std::vector<MemoryKindReport> memory_kinds;
    std::uint64_t huge_page_size = 0;
    std::uint64_t huge_pages_total = 0;
    std::uint64_t huge_pages_free = 0;
    bool io_uring_available = false;
    std::string io_uring_detail;
    std::vector<DirtyTrackingReport> dirty_tracking;

    // 0: kernel faults can be served; 2: user-mode faults only; 1: no userfaultfd.
    [[nodiscard]] int exit_code() const noexcept;
};

// Probes privileges and the kernel. Never throws on a refusal: the report says what failed.
[[nodiscard]] HostReport check_host(const CheckOptions& options = {});

[[nodiscard]] std::string_view to_string(HostVerdict verdict) noexcept;

// ---- Guest memory -------------------------------------------------------------------------

[[nodiscard]] std::expected<MemoryKind, Error> parse_memory_kind(std::string_view text);

// Guest memory this library maps for a caller that has none of its own (the CLI, tests). A VMM
// passes its own mappings as regions instead.
class GuestMemory {
  public:
    [[nodiscard]] static std::expected<GuestMemory, Error> allocate(MemoryKind kind,
                                                                    std::size_t length);
    GuestMemory(GuestMemory&&) noexcept;
    GuestMemory& operator=(GuestMemory&&) noexcept;
    ~GuestMemory();

    [[nodiscard]] std::byte* data() const noexcept;
    [[nodiscard]] std::size_t size() const noexcept;
    [[nodiscard]] std::size_t page_size() const noexcept;
    [[nodiscard]] MemoryKind kind() const noexcept;

  private:
    struct Impl;
    explicit GuestMemory(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

// A deterministic synthetic guest: the same spec gives the same bytes on any host, so a
// destination can check every page it receives.
struct SyntheticGuest {
    std::uint64_t size = 1ULL << 30;
    std::uint64_t page_size = 4096;
    std::uint32_t regions = 1;
    std::uint64_t seed = 1;
    std::uint32_t zero_percent = 50;
    std::uint32_t repeat_percent = 10;
    // What the non-zero pages hold: Random bytes (incompressible, the same on any host), or
    // pages of this host's own files (libraries, programs, headers, licence texts: compresses
    // like a real guest's memory; the same on one host only).
    enum class Content : std::uint8_t { Random = 0, HostFiles = 1 } content = Content::Random;
};

// The region lengths the synthetic guest has (its size split evenly).
[[nodiscard]] std::vector<std::uint64_t> synthetic_region_lengths(const SyntheticGuest& guest);
// The page's bytes are what the synthetic guest holds there.
[[nodiscard]] bool synthetic_page_matches(const SyntheticGuest& guest, std::uint32_t region,
                                          std::uint64_t page, const void* data) noexcept;
// Writes the page's bytes (page_size of them) at `data`: a running guest's starting content.
void synthetic_page_fill(const SyntheticGuest& guest, std::uint32_t region, std::uint64_t page,
                         void* data) noexcept;

// ---- Both sides ---------------------------------------------------------------------------

// Who may take part. Every connection authenticates before a page moves: with a token (an
// HMAC-SHA256 shared secret read from a file only its owner can read), with TLS 1.3, or both.
struct Security {
    std::string token_file;
    std::string tls_certificate;  // PEM; the source needs one for TLS, the destination may
    std::string tls_private_key;  // PEM, mode 0600
    std::string tls_ca;           // PEM: who signs the peer's certificate
    std::string tls_server_name;  // destination: the name the source's certificate must carry
    // Source: listen on a non-loopback address without authenticating clients.
    bool insecure = false;
    // Source on a unix: address: the socket file's mode (whatever the umask), and the users
    // besides the source's own and root whose processes may connect (checked with
    // SO_PEERCRED before anything else, token or not).
    std::uint32_t unix_socket_mode = 0600;
    std::vector<std::uint32_t> allowed_uids;
};

enum class DataPathBackend : std::uint8_t { Auto = 0, IoUring = 1, Asio = 2 };

// Urgent traffic first on the wire: the urgent connection's packets carry DSCP EF and the
// interactive socket priority (pfifo_fast's first band), the bulk connections' CS1 and the bulk
// priority (its last band), so hosts and switches send a fault's answer ahead of the stream.
// The bulk sockets also keep their unsent backlog small (TCP_NOTSENT_LOWAT).
struct TrafficMarking {
    bool enabled = true;
    std::uint8_t urgent_dscp = 46;  // 0..63
    std::uint8_t bulk_dscp = 8;
    std::uint32_t bulk_unsent_bytes = 256U << 10;  // 0: the kernel's default
};

struct Timeouts {
    std::chrono::milliseconds handshake{5000};
    std::chrono::milliseconds stall{10000};  // a peer that stops reading
    std::chrono::milliseconds idle{10000};   // a peer that says nothing (heartbeats go every 2 s)
};

// ---- Source -------------------------------------------------------------------------------

// A guest that still runs while it migrates (hybrid migration, protocol version 2): memory is
// sent in precopy rounds while the guest writes it (round 0 every page once, each later round
// what was written since), then the guest pauses here (the switchover), the destination
// discards the pages written after they were sent, its guest runs, and postcopy brings those.
// Writes are tracked with userfaultfd asynchronous write-protection and PAGEMAP_SCAN (Linux
// 6.7+), which needs no privilege and sees every write: a vCPU's through KVM (EPT) too.
struct LiveMigration {
    bool enabled = false;
    // Rounds before the switchover is forced (1 .. 1000); it comes earlier when what a round
    // found written would take less than `downtime_budget` at the link rate that round
    // measured, or when a round found no fewer written pages than the one before.
    std::uint32_t max_rounds = 10;
    std::chrono::milliseconds downtime_budget{50};
    // Per region (default anonymous): shmem and hugetlbfs need write-protection of their own.
    std::vector<MemoryKind> kinds;
    // Optional, instead of the tracker: the VMM's own dirty log (KVM_GET_DIRTY_LOG, the dirty
    // ring). Sets in `bits` (bit i of word w: page 64 w + i of the region) the pages written
    // since its last call for that region (the first call: since create()). False fails the
    // migration.
    std::function<bool(std::uint32_t region, std::span<std::uint64_t> bits)> dirty_log;
    // Required: pause the vCPUs; return once they are paused (from a library thread).
    std::function<void()> pause_guest;
    // The migration failed while no destination can be running the guest: run it again here
    // (called as run() ends). Never called once SWITCHOVER may have reached a destination.
    std::function<void()> resume_guest;
    // Each round's figures, after the destination has placed every page of it.
    std::function<void(const RoundReport&)> on_round;
};

// How the source encodes the background stream's data runs (protocol version 3; a destination
// of an older version, or one that does not accept them, gets raw runs). Zero runs stay zero
// runs, and a run that does not shrink goes raw. Auto compresses with lz4 only while the stream
// measures faster with it than without (a link that is the bottleneck, a CPU that keeps up).
enum class Compression : std::uint8_t { Off = 0, Lz4 = 1, Zstd = 2, Auto = 3 };
struct StreamCompression {
    Compression codec = Compression::Off;
    int zstd_level = 3;    // 1..19, or zstd's fast levels -7..-1
    bool answers = false;  // compress answers to faults too (Lz4 or Zstd; Auto measures none)
    // Threads that compress the stream's runs beside each bulk loop, in batches with it:
    // -1 one per core this process may use beyond the first, at most three; 0 none; 1..16.
    int threads = -1;
};

struct SourceOptions {
    std::string listen = "tcp:127.0.0.1:0";  // tcp:HOST:PORT, tcp:[IPV6]:PORT or unix:PATH
    // A destination whose session broke (without ending it on purpose) may come back and
    // RESUME for this long; then run() fails. 0: fail at the first break.
    std::chrono::milliseconds reconnect_timeout{30000};
    Security security;
    DataPathBackend data_path = DataPathBackend::Auto;
    Timeouts timeouts;
    std::size_t bulk_run_bytes = 256U << 10;
    std::function<void(const SourceProgress&)> on_progress;  // ~10 Hz, from run()'s thread
    LiveMigration live;  // only with Source::create (memory the running guest writes)
    StreamCompression compression;
    TrafficMarking marking;
    // The background stream's rate on the wire, bytes per second (0: no cap), like QEMU's
    // max-postcopy-bandwidth: a migration that must not starve the guest's own traffic.
    // Answers to faults are never capped.
    std::uint64_t max_bandwidth = 0;
};

// The page server: serves one migration of a guest's memory.
class Source {
  public:
    // Memory the caller has mapped; it must stay mapped and unchanged until run() returns.
    [[nodiscard]] static std::expected<Source, Error> create(
        const std::vector<std::pair<const void*, std::size_t>>& regions, std::size_t page_size,
        SourceOptions options);
    // A memory image file (one region), mapped read-only; holes of a sparse file are not read.
    [[nodiscard]] static std::expected<Source, Error> from_image(const std::string& path,
                                                                 std::size_t page_size,
                                                                 SourceOptions options);
    [[nodiscard]] static std::expected<Source, Error> synthetic(const SyntheticGuest& guest,
                                                                SourceOptions options);
    Source(Source&&) noexcept;
    Source& operator=(Source&&) noexcept;
    ~Source();

    // Where destinations connect, with the port the kernel picked for port 0.
    [[nodiscard]] std::string endpoint() const;
    // Serves one destination to the end (every page there, or a failure).
    [[nodiscard]] SourceStats run();
    void stop();  // thread-safe
    [[nodiscard]] SourceProgress progress() const;
    // A live migration: switch over at the end of the current round (thread-safe).
    void switchover_now();

  private:
    struct Impl;
    explicit Source(std::unique_ptr<Impl> impl) noexcept;
    template <typename Memory>
    static std::expected<Source, Error> from_memory(Memory memory, SourceOptions options);
    std::unique_ptr<Impl> impl_;
};

// ---- Destination --------------------------------------------------------------------------

struct DestinationRegion {
    void* address = nullptr;  // mapped, aligned to page_size, not yet touched
    std::size_t length = 0;
    std::size_t page_size = 4096;
    MemoryKind kind = MemoryKind::Anonymous;
};

struct DestinationOptions {
    std::string connect;  // the source's endpoint
    Security security;
    DataPathBackend data_path = DataPathBackend::Auto;
    Timeouts timeouts;
    // Connections for the background stream, 0..16. 0: the stream shares the urgent connection
    // (one socket does everything; answers then queue behind stream frames).
    std::size_t bulk_channels = 1;
    bool verify = false;  // a hash with every page, checked before it is placed
    // Start with the source's background stream held: only faults are served (each a network
    // round trip) until set_stream_held(false).
    bool hold_stream = false;
    // Once connected, a broken session is not the end: faulting threads stay blocked while the
    // destination reconnects (authenticating again), tells the source what it has, and goes
    // on. After this long without a session the migration fails. 0: fail at the first break.
    std::chrono::milliseconds reconnect_timeout{30000};
    // When the migration fails: false keeps faulting threads blocked until the Destination is
    // destroyed (the VMM decides); true poisons the missing pages at once (UFFDIO_POISON), so a
    // guest touching one gets a memory error (SIGBUS) instead of a hang.
    bool poison_on_failure = false;
    // A page the guest or the VMM discards during the migration (MADV_DONTNEED or MADV_REMOVE
    // on guest memory: a balloon, free page reporting) is missing again. false (the default):
    // the source's copy is fetched again when it is touched, or before the end: the page reads
    // as if it had never been discarded. true: it reads zeros, what the kernel gives for a
    // discarded anonymous page, and the source is not asked (a balloon's semantics). Either
    // way a thread touching it is served, never left blocked. A discard after the last page
    // arrived reads zeros, as on any memory.
    bool discarded_pages_read_zero = false;
    // Accept compressed runs (lz4, zstd) when the source offers them (it decides, per run).
    bool accept_compression = true;
    TrafficMarking marking;
    // Threads placing the background stream's runs while the bulk connections go on receiving
    // (0: each bulk loop places what it received itself). -1: one per core this process may
    // use beyond two, at most four (none on two cores, where placing in the bulk loop
    // measured faster: BENCHMARKS.md, "Placement pipeline").
    int placement_threads = -1;
    // From a library thread: a break in the connection, and its end (a session resumed).
    std::function<void(const Pause&)> on_pause;
    std::function<void(const Pause&)> on_resume;
    // An open /dev/userfaultfd handed over by a helper (receive_userfaultfd()): the destination
    // makes its own userfaultfd from it, with no privilege. Or an open userfaultfd this process
    // created. -1 opens one through the privilege gate. The destination owns it from create() on.
    int userfaultfd = -1;
    std::string device_path = "/dev/userfaultfd";
    // Refuse to start unless kernel-mode faults (KVM, read(2) into guest memory) can be served.
    bool require_kernel_faults = true;
    // Once the userfaultfd is open, drop every capability and set no_new_privs. The process
    // must be single-threaded when create() runs.
    bool drop_capabilities = false;
    // ~10 Hz while someone waits: from wait()'s thread, or from the completion watcher.
    std::function<void(const DestinationProgress&)> on_progress;
    // Called once when the migration ends (every page present, or failed), from a thread of the
    // library's, so that a VMM need not block in wait(); wait() returns the same stats once it
    // has returned (so it must not call wait()).
    std::function<void(const DestinationStats&)> on_complete;
};

// The fault server. A failed migration never hands a guest thread a wrong or zero page: the
// threads stay blocked until the Destination is destroyed, and then pages still missing are
// poisoned (a memory error, SIGBUS) where the kernel can.
class Destination {
  public:
    [[nodiscard]] static std::expected<Destination, Error> create(
        std::vector<DestinationRegion> regions, DestinationOptions options);
    Destination(Destination&&) noexcept;
    Destination& operator=(Destination&&) noexcept;
    ~Destination();

    // Registers the regions and connects in the background. The guest may run from here on
    // when the source's guest is paused (a plain postcopy); from a live source, only once
    // wait_until_runnable() says so.
    [[nodiscard]] std::expected<void, Error> start();
    // Until the guest may run: as soon as the source's LAYOUT says its guest is paused, or,
    // from a live source, after the switchover (the precopy rounds placed, the stale pages
    // discarded). Errc::TimedOut after `timeout`; the migration's error if it failed first.
    [[nodiscard]] std::expected<void, Error> wait_until_runnable(
        std::chrono::milliseconds timeout = std::chrono::minutes(10));
    // Until every page is present or the migration failed.
    [[nodiscard]] DestinationStats wait();
    void stop();  // thread-safe
    // Thread-safe: holds or resumes the background stream; requests are always answered.
    void set_stream_held(bool held);
    [[nodiscard]] DestinationProgress progress() const;
    [[nodiscard]] std::string grant() const;

  private:
    struct Impl;
    explicit Destination(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

// One region of a guest, as a source describes it.
struct RegionLayout {
    std::uint64_t length = 0;
    std::uint64_t page_size = 0;
};

// Asks the source at `connect` for its guest's regions without starting a migration (the source
// keeps waiting for the real one): a destination with no memory of its own maps what this says.
[[nodiscard]] std::expected<std::vector<RegionLayout>, Error> probe_source(
    const std::string& connect, const Security& security, const Timeouts& timeouts = {});

// ---- Firecracker's page-fault handler ----------------------------------------------------

// One guest memory region as Firecracker describes it when it hands over its userfaultfd
// (snapshot restore with the Uffd memory backend): where the region is in Firecracker's address
// space, its size, where its content starts in the snapshot's memory file, and its page size in
// bytes (4 KiB, or 2 MiB for hugetlbfs guests).
struct FirecrackerRegion {
    std::uint64_t base_host_virt_addr = 0;
    std::uint64_t size = 0;
    std::uint64_t offset = 0;
    std::uint64_t page_size = 0;
};

// The regions message: a JSON array of objects with base_host_virt_addr, size, offset and the
// page size, named "page_size" (bytes) or, by releases before 1.7, "page_size_kib" (whose value
// is bytes too despite its name; a value that is a page size in KiB is read as KiB). Both
// present must agree. Unknown fields are ignored. Every field is checked: a clear error names
// the region and the field.
[[nodiscard]] std::expected<std::vector<FirecrackerRegion>, Error> parse_firecracker_regions(
    std::string_view json);

// One restored VM's session, reported when it ends.
struct FirecrackerVm {
    std::uint64_t id = 0;  // 1, 2, ... in the order the VMs connected
    int pid = 0;           // Firecracker's process (SO_PEERCRED)
    std::vector<FirecrackerRegion> regions;
    bool remove_events = false;  // the descriptor reports balloon discards (UFFD_EVENT_REMOVE)
    std::string source;          // "image FILE" or the remote endpoint
    // How it ended: "complete" (every page there; the memory unregistered, Firecracker runs
    // on without us), "vm exited", "refused: ..." (the handshake), or "failed: ...".
    std::string end;
    DestinationStats stats;  // none for a refused handshake
};

struct FirecrackerHandlerOptions {
    std::string socket_path;  // created (mode 0600; an existing socket file is replaced)
    // The snapshot's memory file on this host, or the endpoint of a source serving it
    // (uffd-migrate serve --image FILE): one of the two.
    std::string image;
    std::string connect;
    Security security;  // for `connect`
    DataPathBackend data_path = DataPathBackend::Auto;
    Timeouts timeouts;
    std::size_t bulk_channels = 1;
    bool verify = false;
    std::chrono::milliseconds reconnect_timeout{30000};
    // For the regions message and the descriptor after Firecracker connects.
    std::chrono::milliseconds handshake_timeout{5000};
    // Stop once this many VMs' sessions ended (0: serve until stop()).
    std::size_t max_vms = 0;
    // Drop every capability and set no_new_privs in create() (nothing here needs privilege:
    // each descriptor is Firecracker's). The process must be single-threaded then.
    bool drop_capabilities = true;
    // From the VM's thread when its session starts (handshake checked) and when it ends.
    std::function<void(const FirecrackerVm&)> on_vm_start;
    std::function<void(const FirecrackerVm&)> on_vm_end;
};

// Firecracker's external page-fault handler: listens on a Unix socket; for every VM that
// connects (several at once), takes its userfaultfd and regions, checks them against the
// memory and the descriptor's registrations, and serves its faults from the memory file here or
// from another host, faults first, the rest in the background, balloon discards reading zeros.
// Needs no privilege: the descriptor is Firecracker's.
class FirecrackerHandler {
  public:
    [[nodiscard]] static std::expected<FirecrackerHandler, Error> create(
        FirecrackerHandlerOptions options);
    FirecrackerHandler(FirecrackerHandler&&) noexcept;
    FirecrackerHandler& operator=(FirecrackerHandler&&) noexcept;
    ~FirecrackerHandler();

    // Serves until stop() or max_vms; returns every VM's report, in the order they ended.
    [[nodiscard]] std::vector<FirecrackerVm> run();
    void stop();  // thread-safe: VMs still being served fail (their missing pages poisoned)

  private:
    struct Impl;
    explicit FirecrackerHandler(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

// ---- The privileged helper ----------------------------------------------------------------

struct HelperOptions {
    std::string socket_path;
    std::string device_path = "/dev/userfaultfd";
    // Who may collect the descriptor (checked with SO_PEERCRED; the socket file is theirs, mode
    // 0600). -1: the user running the helper.
    int allow_uid = -1;
    std::chrono::milliseconds wait{60000};  // for the client to connect
};

// Opens /dev/userfaultfd read-write, waits for one client on a Unix socket, hands it the open
// device (SCM_RIGHTS) and returns: a VMM that runs without any privilege then makes a full
// userfaultfd (kernel faults too) for its own memory. A userfaultfd itself cannot be handed over
// that way: it serves the address space of the process that created it. Returns the grant.
[[nodiscard]] std::expected<std::string, Error> serve_userfaultfd(const HelperOptions& options);
// The client side: connects to the helper's socket and receives the open device (pass it as
// DestinationOptions::userfaultfd, or close it).
[[nodiscard]] std::expected<int, Error> receive_userfaultfd(const std::string& socket_path);

}  // namespace uffdm

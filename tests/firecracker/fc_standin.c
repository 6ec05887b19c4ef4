// fc_standin.c — What Firecracker does on snapshot restore with the Uffd memory backend, for
// tests on hosts without /dev/kvm (where Firecracker cannot run). Written from Firecracker's
// docs/snapshotting/handling-page-faults-on-snapshot-resume.md and the handshake its restore
// code performs: a userfaultfd (close-on-exec, non-blocking, kernel faults too, EVENT_REMOVE
// for the balloon), each guest region mapped anonymous private (MAP_HUGETLB for 2 MiB pages)
// and registered in MISSING mode, then one message on the handler's Unix socket: a JSON array
// of {base_host_virt_addr, size, offset, page_size} with the descriptor (SCM_RIGHTS).
// Then, in place of a guest: vCPU threads touching every page, a balloon's MADV_DONTNEED, and
// kernel-mode reads (write(2) from guest memory), every page compared with the memory file.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << 26)
#endif

#define MAX_REGIONS 8

struct region {
    unsigned char* base;
    size_t size;
    size_t offset;
};

static struct {
    const char* socket;
    const char* memory;
    const char* json_template;
    int regions;
    size_t page;
    int threads;
    long balloon_first, balloon_count;  // pages of the whole memory, -1: none
    int no_fd, legacy, exit_after_ms, unregister, kernel_reads, wait_unregistered;
    int latency, no_touch_all, file_backend, verify_late;
    const char* samples;
} opt = {.regions = 1,
         .page = 4096,
         .threads = 2,
         .balloon_first = -1,
         .unregister = -1,
         .kernel_reads = 64,
         .exit_after_ms = -1};

static struct region regions[MAX_REGIONS];
static const unsigned char* snapshot;
static size_t snapshot_size;
static long mismatches, zero_pages, checked;
static pthread_mutex_t counts = PTHREAD_MUTEX_INITIALIZER;

static void die(const char* what) {
    fprintf(stderr, "fc_standin: %s: %s\n", what, strerror(errno));
    exit(3);
}

static int ballooned(size_t page) {
    return opt.balloon_first >= 0 && (long)page >= opt.balloon_first &&
           (long)page < opt.balloon_first + opt.balloon_count;
}

// The guest address of a page of the memory file.
static unsigned char* guest_page(size_t page) {
    size_t at = page * opt.page;
    for (int r = 0; r < opt.regions; ++r) {
        if (at >= regions[r].offset && at < regions[r].offset + regions[r].size) {
            return regions[r].base + (at - regions[r].offset);
        }
    }
    return NULL;
}

static void check_page(size_t page, const unsigned char* seen) {
    static const unsigned char zeros[1 << 21];
    const unsigned char* want = ballooned(page) ? zeros : snapshot + page * opt.page;
    int bad = memcmp(seen, want, opt.page) != 0;
    pthread_mutex_lock(&counts);
    checked++;
    zero_pages += ballooned(page);
    if (bad && mismatches++ < 5) {
        fprintf(stderr, "fc_standin: page %zu differs from %s\n", page,
                ballooned(page) ? "zeros (ballooned)" : "the memory file");
    }
    pthread_mutex_unlock(&counts);
}

static void* vcpu(void* arg) {
    long id = (long)arg;
    size_t pages = snapshot_size / opt.page;
    // A stride through the pages, each thread its own residue class: random-looking order.
    size_t step = 7919 % pages ? 7919 : 1;
    for (size_t i = (size_t)id; i < pages; i += (size_t)opt.threads) {
        size_t page = (i * step) % pages;
        volatile unsigned char first = guest_page(page)[0];  // the fault
        (void)first;
        check_page(page, guest_page(page));
    }
    return NULL;
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int by_value(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

// One vCPU touching random pages it has not touched, each touch timed: the guest's view of a
// fault. Percentiles on stdout, every sample in opt.samples.
static void latency_workload(void) {
    size_t pages = snapshot_size / opt.page;
    int n = opt.latency > (int)pages ? (int)pages : opt.latency;
    double* took = calloc((size_t)n, sizeof(double));
    unsigned long long x = 88172645463325252ULL;
    for (int i = 0; i < n; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t page = (size_t)(x % pages);
        double start = now_us();
        volatile unsigned char first = guest_page(page)[0];
        (void)first;
        took[i] = now_us() - start;
    }
    if (opt.samples != NULL) {
        FILE* f = fopen(opt.samples, "w");
        for (int i = 0; f && i < n; ++i) {
            fprintf(f, "%.3f\n", took[i]);
        }
        if (f) {
            fclose(f);
        }
    }
    qsort(took, (size_t)n, sizeof(double), by_value);
    printf("latency us p50 %.1f p90 %.1f p99 %.1f max %.1f over %d touches\n", took[n / 2],
           took[n * 9 / 10], took[n * 99 / 100], took[n - 1], n);
    free(took);
}

static int open_userfaultfd(void) {
    int flags = O_CLOEXEC | O_NONBLOCK;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    int fd =
        dev >= 0 ? ioctl(dev, USERFAULTFD_IOC_NEW, flags) : (int)syscall(SYS_userfaultfd, flags);
    if (dev >= 0) {
        close(dev);
    }
    if (fd < 0) {
        die("userfaultfd");
    }
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        die("UFFDIO_API");
    }
    return fd;
}

static void map_regions(int uffd, int file) {
    size_t pages = snapshot_size / opt.page;
    size_t per = pages / (size_t)opt.regions;
    size_t offset = 0;
    for (int r = 0; r < opt.regions; ++r) {
        size_t count = r == opt.regions - 1 ? pages - per * (size_t)r : per;
        regions[r].size = count * opt.page;
        regions[r].offset = offset;
        offset += regions[r].size;
        int huge = opt.page == (2u << 20) ? MAP_HUGETLB | MAP_HUGE_2MB : 0;
        // The file backend (Firecracker without a handler): a private mapping of the memory
        // file, faulted in by the kernel from its page cache.
        void* at = file >= 0 ? mmap(NULL, regions[r].size, PROT_READ | PROT_WRITE, MAP_PRIVATE,
                                    file, (off_t)regions[r].offset)
                             : mmap(NULL, regions[r].size, PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | huge, -1, 0);
        if (at == MAP_FAILED) {
            die("mmap guest region");
        }
        regions[r].base = at;
        if (file >= 0 || r == opt.unregister) {
            continue;  // a lying VMM: says it registered what it did not
        }
        struct uffdio_register reg = {.range = {.start = (uintptr_t)at, .len = regions[r].size},
                                      .mode = UFFDIO_REGISTER_MODE_MISSING};
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
            die("UFFDIO_REGISTER");
        }
    }
}

// The regions message, or the template with {BASEi} {SIZEi} {OFFSETi} filled in.
static void regions_json(char* out, size_t room) {
    if (opt.json_template != NULL) {
        char* o = out;
        for (const char* t = opt.json_template; *t && (size_t)(o - out) < room - 32;) {
            int r = 0;
            char field[8];
            if (sscanf(t, "{%7[A-Z]%d}", field, &r) == 2 && r >= 0 && r < opt.regions) {
                unsigned long long v = strcmp(field, "BASE") == 0   ? (uintptr_t)regions[r].base
                                       : strcmp(field, "SIZE") == 0 ? regions[r].size
                                                                    : regions[r].offset;
                o += sprintf(o, "%llu", v);
                t = strchr(t, '}') + 1;
            } else {
                *o++ = *t++;
            }
        }
        *o = '\0';
        return;
    }
    size_t n = (size_t)snprintf(out, room, "[");
    for (int r = 0; r < opt.regions; ++r) {
        n += (size_t)snprintf(out + n, room - n,
                              "%s{\"base_host_virt_addr\":%llu,\"size\":%zu,\"offset\":%zu,"
                              "\"%s\":%zu}",
                              r ? "," : "", (unsigned long long)(uintptr_t)regions[r].base,
                              regions[r].size, regions[r].offset,
                              opt.legacy ? "page_size_kib" : "page_size", opt.page);
    }
    snprintf(out + n, room - n, "]");
}

static void send_handshake(int uffd) {
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, opt.socket, sizeof(addr.sun_path) - 1);
    for (int tries = 0; connect(sock, (struct sockaddr*)&addr, sizeof(addr)) < 0; ++tries) {
        if (tries > 100) {
            die("connect to the handler's socket");
        }
        usleep(50000);
    }
    static char json[16384];
    regions_json(json, sizeof(json));
    struct iovec io = {.iov_base = json, .iov_len = strlen(json)};
    char control[CMSG_SPACE(sizeof(int))];
    struct msghdr msg = {.msg_iov = &io, .msg_iovlen = 1};
    if (!opt.no_fd) {
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &uffd, sizeof(int));
    }
    if (sendmsg(sock, &msg, 0) < 0) {
        die("sendmsg");
    }
    close(sock);  // nothing else goes over the socket
}

// Kernel-mode faults: write(2) from guest pages into a pipe (copy_from_user faults), read back.
static void kernel_reads(void) {
    int p[2];
    if (pipe(p) < 0) {
        die("pipe");
    }
    fcntl(p[1], F_SETPIPE_SZ, 1 << 21);
    static unsigned char back[1 << 21];
    size_t pages = snapshot_size / opt.page;
    for (int i = 0; i < opt.kernel_reads && (size_t)i < pages; ++i) {
        size_t page = (pages - 1 - (size_t)i * 13 % pages);
        size_t len = opt.page > (64u << 10) ? (64u << 10) : opt.page;
        if (write(p[1], guest_page(page), len) != (ssize_t)len ||
            read(p[0], back, len) != (ssize_t)len) {
            die("write(2) from guest memory");
        }
        unsigned char full[1 << 16];
        memcpy(full, back, len);
        static const unsigned char zeros[1 << 16];
        const unsigned char* want = ballooned(page) ? zeros : snapshot + page * opt.page;
        if (memcmp(full, want, len) != 0) {
            fprintf(stderr, "fc_standin: kernel read of page %zu differs\n", page);
            mismatches++;
        }
    }
    close(p[0]);
    close(p[1]);
}

// After the last page arrived the handler unregisters: VmFlags of the regions lose "um".
static long wait_unregistered(int seconds) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        FILE* f = fopen("/proc/self/smaps", "r");
        char line[512];
        int registered = 0;
        unsigned long lo = 0, hi = 0;
        while (f && fgets(line, sizeof(line), f)) {
            if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
                continue;
            }
            if (strncmp(line, "VmFlags:", 8) == 0 && strstr(line, " um") != NULL) {
                for (int r = 0; r < opt.regions; ++r) {
                    registered |=
                        lo <= (uintptr_t)regions[r].base && (uintptr_t)regions[r].base < hi;
                }
            }
        }
        if (f) {
            fclose(f);
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (!registered) {
            return ms;
        }
        if (ms > seconds * 1000L) {
            return -1;
        }
        usleep(5000);
    }
}

// Every page touched by opt.threads vCPU threads and compared with the memory file.
static void touch_all(double start) {
    pthread_t t[64];
    int n = opt.threads > 64 ? 64 : opt.threads;
    for (long i = 0; i < n; ++i) {
        pthread_create(&t[i], NULL, vcpu, (void*)i);
    }
    for (int i = 0; i < n; ++i) {
        pthread_join(t[i], NULL);
    }
    if (opt.file_backend) {
        printf("every page touched after %.1f ms\n", (now_us() - start) / 1e3);
    }
}

int main(int argc, char** argv) {
    // Line by line: a test that gives up on a stand-in that hangs shows how far it got.
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; ++i) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : "";
        // Options with a value take the next argument; flags do not.
        int* flag = !strcmp(a, "--no-fd")          ? &opt.no_fd
                    : !strcmp(a, "--legacy-field") ? &opt.legacy
                    : !strcmp(a, "--no-touch-all") ? &opt.no_touch_all
                    : !strcmp(a, "--file-backend") ? &opt.file_backend
                    : !strcmp(a, "--verify-late")  ? &opt.verify_late
                                                   : NULL;
        if (flag != NULL) {
            *flag = 1;
            continue;
        }
        ++i;
        if (!strcmp(a, "--socket")) {
            opt.socket = v;
        } else if (!strcmp(a, "--memory")) {
            opt.memory = v;
        } else if (!strcmp(a, "--json-template")) {
            opt.json_template = v;
        } else if (!strcmp(a, "--samples")) {
            opt.samples = v;
        } else if (!strcmp(a, "--page-size")) {
            opt.page = strtoul(v, NULL, 0);
        } else if (!strcmp(a, "--balloon")) {
            sscanf(v, "%ld:%ld", &opt.balloon_first, &opt.balloon_count);
        } else if (!strcmp(a, "--regions")) {
            opt.regions = atoi(v);
        } else if (!strcmp(a, "--threads")) {
            opt.threads = atoi(v);
        } else if (!strcmp(a, "--unregister")) {
            opt.unregister = atoi(v);
        } else if (!strcmp(a, "--kernel-reads")) {
            opt.kernel_reads = atoi(v);
        } else if (!strcmp(a, "--wait-unregistered")) {
            opt.wait_unregistered = atoi(v);
        } else if (!strcmp(a, "--exit-after-ms")) {
            opt.exit_after_ms = atoi(v);
        } else if (!strcmp(a, "--latency")) {
            opt.latency = atoi(v);
        } else {
            fprintf(stderr, "fc_standin: unknown argument %s\n", a);
            return 2;
        }
    }
    if (!opt.socket || !opt.memory || opt.regions < 1 || opt.regions > MAX_REGIONS ||
        opt.threads < 1) {
        fprintf(stderr,
                "usage: fc_standin --socket PATH --memory FILE [--regions N] "
                "[--page-size BYTES] [--threads N] [--balloon FIRST:COUNT] ...\n");
        return 2;
    }
    int file = open(opt.memory, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (file < 0 || fstat(file, &st) < 0) {
        die(opt.memory);
    }
    snapshot_size = (size_t)st.st_size;
    snapshot = mmap(NULL, snapshot_size, PROT_READ, MAP_PRIVATE, file, 0);
    if (snapshot == MAP_FAILED) {
        die("mmap memory file");
    }
    double start = now_us();
    if (opt.file_backend) {
        map_regions(-1, file);
    } else {
        int uffd = open_userfaultfd();
        map_regions(uffd, -1);
        send_handshake(uffd);
        start = now_us();
    }
    if (opt.exit_after_ms >= 0) {
        // A VM that ends (or a handshake the handler refuses) before touching anything.
        usleep((useconds_t)opt.exit_after_ms * 1000);
        return 0;
    }
    if (opt.balloon_first >= 0) {
        // The balloon inflates early, while the stream has barely begun: one page touched
        // first (its content must go too), then the range discarded.
        unsigned char* first = guest_page((size_t)opt.balloon_first);
        volatile unsigned char touched = first[0];
        (void)touched;
        for (long p = 0; p < opt.balloon_count; ++p) {
            if (madvise(guest_page((size_t)(opt.balloon_first + p)), opt.page, MADV_DONTNEED) < 0) {
                die("madvise(MADV_DONTNEED)");
            }
        }
        fprintf(stderr, "fc_standin: balloon: %ld pages discarded\n", opt.balloon_count);
    }
    if (opt.latency > 0) {
        latency_workload();
    }
    if (!opt.no_touch_all && !opt.verify_late) {
        touch_all(start);
    }
    fprintf(stderr, "fc_standin: vCPU phase over, %d kernel reads next\n", opt.kernel_reads);
    kernel_reads();
    printf("checked %ld pages, %ld zero (ballooned), %ld differ\n", checked, zero_pages,
           mismatches);
    if (opt.wait_unregistered > 0 && !opt.file_backend) {
        long ms = wait_unregistered(opt.wait_unregistered);
        printf("unregistered after %ld ms\n", ms);
        if (ms < 0) {
            return 4;
        }
        printf("resident after %.1f ms\n", (now_us() - start) / 1e3);
        if (opt.verify_late) {
            touch_all(start);  // after the end: what the stream placed, compared
            printf("checked %ld pages, %ld zero (ballooned), %ld differ\n", checked, zero_pages,
                   mismatches);
        }
        // The balloon again, with no handler left: nothing blocks, the page reads zeros.
        unsigned char* last = guest_page(snapshot_size / opt.page - 1);
        if (madvise(last, opt.page, MADV_DONTNEED) < 0 || last[0] != 0) {
            fprintf(stderr, "fc_standin: a discard after the end did not read zeros\n");
            return 5;
        }
    }
    fflush(stdout);
    return mismatches == 0 ? 0 : 1;
}

/* tiny_vmm.c — A toy VMM in C that embeds libuffdm, on either side of a migration.
 *
 * Destination: maps guest RAM, resumes its "vCPUs" as soon as the library says the guest may
 * run (at once from a paused source, after the switchover from a live one), and lets the
 * guest's memory arrive by postcopy.
 *   uffd-migrate serve --listen tcp:127.0.0.1:4444 --synthetic 256M --token-file T &
 *   tiny_vmm --connect tcp:127.0.0.1:4444 --size 268435456 --token-file T
 *
 * Live source (hybrid migration): its vCPUs keep writing the guest while precopy rounds copy
 * it; the library pauses them at the switchover. Both sides print a checksum of the guest's
 * RAM (the source when paused, the destination at the end): they must be equal.
 *   tiny_vmm --serve tcp:127.0.0.1:4444 --size 268435456 --token-file T &
 *   tiny_vmm --connect tcp:127.0.0.1:4444 --size 268435456 --token-file T
 *
 * Build against an installed library: cc tiny_vmm.c $(pkg-config --cflags --libs uffdm) */
#define _GNU_SOURCE /* MAP_NORESERVE, MAP_ANONYMOUS: Linux interfaces */
#include <uffdm/uffdm.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096u

struct vcpu {
    volatile unsigned char* ram;
    uint64_t pages;
    unsigned seed;
    uint64_t touches;
    uint64_t checksum;
};

/* A "vCPU": reads bytes from pages here and there, as a guest would. Each first touch of a page
 * faults and waits until the page has arrived. */
static void* run_vcpu(void* arg) {
    struct vcpu* v = arg;
    uint64_t x = v->seed * 2654435761u + 1;
    for (uint64_t i = 0; i < 2000; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t page = (x >> 33) % v->pages;
        v->checksum += v->ram[page * PAGE + (x & (PAGE - 1))];
        v->touches++;
    }
    return NULL;
}

/* FNV-1a over the guest's RAM. */
static uint64_t checksum_of(const unsigned char* ram, uint64_t size) {
    uint64_t h = 14695981039346656037ull;
    for (uint64_t i = 0; i < size; i += 8) {
        uint64_t word;
        memcpy(&word, ram + i, sizeof word);
        h = (h ^ word) * 1099511628211ull;
    }
    return h;
}

/* The live source's vCPUs: they write a counter into pages of a hot set until paused. */
struct writer {
    unsigned char* ram;
    uint64_t pages;
    unsigned seed;
    atomic_int* paused;
};

static void* run_writer(void* arg) {
    struct writer* w = arg;
    uint64_t x = w->seed * 2654435761u + 7, n = 0;
    while (!atomic_load(w->paused)) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t page = ((x >> 33) % (w->pages / 32)) * 32; /* a 3 % hot set */
        ++n;
        memcpy(w->ram + page * PAGE + 128 + 8 * w->seed, &n, sizeof n);
        if (n % 256 == 0) {
            struct timespec pause = {0, 100000};
            nanosleep(&pause, NULL);
        }
    }
    return NULL;
}

struct live_guest {
    unsigned char* ram;
    uint64_t size;
    pthread_t threads[64];
    unsigned vcpus;
    atomic_int paused;
};

/* Called by the library at the switchover: the vCPUs stop, and the guest's state is final. */
static void pause_guest(void* user) {
    struct live_guest* g = user;
    atomic_store(&g->paused, 1);
    for (unsigned i = 0; i < g->vcpus; i++) {
        pthread_join(g->threads[i], NULL);
    }
    printf("tiny_vmm: source checksum %016llx\n", (unsigned long long)checksum_of(g->ram, g->size));
    fflush(stdout);
}

static void on_round(const struct uffdm_round* r, void* user) {
    (void)user;
    fprintf(stderr, "tiny_vmm: round %u, %llu pages, %llu written meanwhile\n", r->round,
            (unsigned long long)r->pages, (unsigned long long)r->dirty_pages);
}

static int serve_live(const char* listen, const char* token, uint64_t size, unsigned vcpus) {
    static struct live_guest guest; /* one per process; its vCPUs see it until paused */
    struct live_guest* g = &guest;
    g->ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->ram == MAP_FAILED) {
        perror("tiny_vmm: mmap");
        return 1;
    }
    for (uint64_t p = 0; p < size / PAGE; p += 2) { /* half the pages hold data */
        memset(g->ram + p * PAGE, (int)(p % 251) + 1, PAGE);
    }
    g->size = size;
    g->vcpus = vcpus;
    struct uffdm_region region = {g->ram, size, PAGE, UFFDM_MEMORY_ANONYMOUS, 0};
    struct uffdm_source_options options;
    memset(&options, 0, sizeof options);
    options.size = sizeof options;
    options.listen = listen;
    options.security.token_file = token;
    struct uffdm_live_options live;
    memset(&live, 0, sizeof live);
    live.size = sizeof live;
    live.max_rounds = 5;
    live.pause_guest = pause_guest;
    live.on_round = on_round;
    live.user = g;
    uffdm_source* source = NULL;
    int rc = uffdm_source_create_live(&options, &live, &region, 1, &source);
    if (rc != 0) {
        fprintf(stderr, "tiny_vmm: %s (%s)\n", uffdm_last_error(), uffdm_strerror(rc));
        return 1;
    }
    char endpoint[256];
    uffdm_source_endpoint(source, endpoint, sizeof endpoint);
    printf("listening on %s\n", endpoint);
    fflush(stdout);
    struct writer writers[64];
    for (unsigned i = 0; i < vcpus; i++) {
        writers[i] = (struct writer){g->ram, size / PAGE, i, &g->paused};
        pthread_create(&g->threads[i], NULL, run_writer, &writers[i]);
    }
    struct uffdm_source_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.size = sizeof stats;
    rc = uffdm_source_run(source, &stats);
    struct uffdm_live_stats figures;
    memset(&figures, 0, sizeof figures);
    figures.size = sizeof figures;
    uffdm_source_live_stats(source, &figures);
    if (rc != 0) {
        fprintf(stderr, "tiny_vmm: serving failed: %s%s\n", uffdm_last_error(),
                figures.guest_runnable_here ? " (the guest may run here again)" : "");
        return 1;
    }
    printf(
        "tiny_vmm: served %llu pages, %u rounds, %llu discarded at the switchover, "
        "guest paused %.1f ms\n",
        (unsigned long long)stats.pages_total, figures.rounds,
        (unsigned long long)figures.pages_discarded, figures.downtime_seconds * 1000);
    uffdm_source_destroy(source);
    return 0;
}

static void progress(const struct uffdm_progress* p, void* user) {
    (void)user;
    fprintf(stderr, "\rtiny_vmm: %llu of %llu pages, %llu faults",
            (unsigned long long)p->pages_present, (unsigned long long)p->pages_total,
            (unsigned long long)p->faults);
}

int main(int argc, char** argv) {
    const char* connect = NULL;
    const char* serve = NULL;
    const char* token = NULL;
    uint64_t size = 0;
    unsigned vcpus = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--connect") == 0) {
            connect = argv[i + 1];
        } else if (strcmp(argv[i], "--serve") == 0) {
            serve = argv[i + 1];
        } else if (strcmp(argv[i], "--token-file") == 0) {
            token = argv[i + 1];
        } else if (strcmp(argv[i], "--size") == 0) {
            size = strtoull(argv[i + 1], NULL, 0);
        } else if (strcmp(argv[i], "--vcpus") == 0) {
            vcpus = (unsigned)strtoul(argv[i + 1], NULL, 0);
        }
    }
    if ((connect == NULL) == (serve == NULL) || size == 0 || size % PAGE != 0 || vcpus == 0 ||
        vcpus > 64) {
        fprintf(stderr,
                "usage: tiny_vmm (--connect ENDPOINT | --serve LISTEN) --size BYTES "
                "[--token-file F] [--vcpus N]\n");
        return 2;
    }
    if (serve != NULL) {
        return serve_live(serve, token, size, vcpus);
    }
    void* ram = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED) {
        perror("tiny_vmm: mmap");
        return 1;
    }
    struct uffdm_region region = {ram, size, PAGE, UFFDM_MEMORY_ANONYMOUS, 0};
    struct uffdm_destination_options options;
    memset(&options, 0, sizeof options);
    options.size = sizeof options;
    options.connect = connect;
    options.security.token_file = token;
    options.bulk_channels = 1;
    options.userfaultfd = -1;
    options.on_progress = progress;
    uffdm_destination* destination = NULL;
    int rc = uffdm_destination_create(&options, &region, 1, &destination);
    if (rc == 0) {
        rc = uffdm_destination_start(destination);
    }
    if (rc != 0) {
        fprintf(stderr, "tiny_vmm: %s (%s)\n", uffdm_last_error(), uffdm_strerror(rc));
        return 1;
    }
    /* The VM resumes as soon as it may (from a live source: after the switchover), before
     * its memory is here. */
    rc = uffdm_destination_wait_runnable(destination, 0);
    if (rc != 0) {
        fprintf(stderr, "tiny_vmm: the guest may not run: %s\n", uffdm_last_error());
        return 1;
    }
    pthread_t threads[64];
    struct vcpu state[64];
    for (unsigned i = 0; i < vcpus; i++) {
        state[i] = (struct vcpu){ram, size / PAGE, i + 1, 0, 0};
        pthread_create(&threads[i], NULL, run_vcpu, &state[i]);
    }
    struct uffdm_destination_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.size = sizeof stats;
    rc = uffdm_destination_wait(destination, &stats);
    fprintf(stderr, "\n");
    if (rc != 0) {
        /* The vCPUs may wait on pages that will never come: report and leave. */
        fprintf(stderr, "tiny_vmm: migration failed: %s\n", uffdm_last_error());
        return 1;
    }
    uint64_t touches = 0;
    for (unsigned i = 0; i < vcpus; i++) {
        pthread_join(threads[i], NULL);
        touches += state[i].touches;
    }
    printf(
        "tiny_vmm: %llu pages in %.3f s (%llu urgent, %llu background), %llu vCPU touches, "
        "fault p50 %.1f us, p99 %.1f us\n",
        (unsigned long long)stats.pages_total, stats.seconds,
        (unsigned long long)stats.pages_urgent, (unsigned long long)stats.pages_background,
        (unsigned long long)touches, stats.fault_latency.p50_us, stats.fault_latency.p99_us);
    printf("tiny_vmm: checksum %016llx\n", (unsigned long long)checksum_of(ram, size));
    uffdm_destination_destroy(destination);
    return 0;
}

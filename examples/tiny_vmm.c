/* tiny_vmm.c — A toy VMM in C that embeds libuffdm: it maps guest RAM, resumes its "vCPUs" at
 * once, and lets the guest's memory arrive from a source by postcopy migration.
 *
 *   uffd-migrate serve --listen tcp:127.0.0.1:4444 --synthetic 256M --token-file T &
 *   tiny_vmm --connect tcp:127.0.0.1:4444 --size 268435456 --token-file T
 *
 * Build against an installed library: cc tiny_vmm.c $(pkg-config --cflags --libs uffdm) */
#define _GNU_SOURCE /* MAP_NORESERVE, MAP_ANONYMOUS: Linux interfaces */
#include <uffdm/uffdm.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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

static void progress(const struct uffdm_progress* p, void* user) {
    (void)user;
    fprintf(stderr, "\rtiny_vmm: %llu of %llu pages, %llu faults",
            (unsigned long long)p->pages_present, (unsigned long long)p->pages_total,
            (unsigned long long)p->faults);
}

int main(int argc, char** argv) {
    const char* connect = NULL;
    const char* token = NULL;
    uint64_t size = 0;
    unsigned vcpus = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--connect") == 0) {
            connect = argv[i + 1];
        } else if (strcmp(argv[i], "--token-file") == 0) {
            token = argv[i + 1];
        } else if (strcmp(argv[i], "--size") == 0) {
            size = strtoull(argv[i + 1], NULL, 0);
        } else if (strcmp(argv[i], "--vcpus") == 0) {
            vcpus = (unsigned)strtoul(argv[i + 1], NULL, 0);
        }
    }
    if (connect == NULL || size == 0 || size % PAGE != 0 || vcpus == 0 || vcpus > 64) {
        fprintf(stderr,
                "usage: tiny_vmm --connect ENDPOINT --size BYTES [--token-file F] [--vcpus N]\n");
        return 2;
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
    /* The VM resumes now, before its memory is here. */
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
    uffdm_destination_destroy(destination);
    return 0;
}

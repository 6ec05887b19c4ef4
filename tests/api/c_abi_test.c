/* c_abi_test.c — uffdm.h compiled as plain C: a whole migration through the C ABI, and its
 * argument checks. Exit 0 when every check holds. */
#define _GNU_SOURCE /* MAP_ANONYMOUS: a Linux interface */
#include <uffdm/uffdm.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096u
#define PAGES 4096u

#include "check.h"

static unsigned char expected(unsigned page, unsigned offset) {
    return page % 3 == 0 ? 0 : (unsigned char)(page * 131u + offset * 7u + 1u);
}

struct serving {
    uffdm_source* source;
    int result;
    struct uffdm_source_stats stats;
};

static void* serve(void* arg) {
    struct serving* s = arg;
    s->stats.size = sizeof s->stats;
    s->result = uffdm_source_run(s->source, &s->stats);
    return NULL;
}

static _Atomic unsigned progress_calls = 0;
static int completed_result = 1;
static uint64_t completed_pages = 0;
static void on_complete(int result, const struct uffdm_destination_stats* stats, void* user) {
    (void)user;
    completed_result = result;
    completed_pages = stats->pages_total;
}
static _Atomic uint64_t last_present = 0;
static void on_progress(const struct uffdm_progress* p, void* user) {
    (void)user;
    atomic_fetch_add(&progress_calls, 1);
    atomic_store(&last_present, p->pages_present);
}

int main(void) {
    unsigned char* guest =
        mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char* target =
        mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(guest != MAP_FAILED && target != MAP_FAILED, "mmap");
    for (unsigned p = 0; p < PAGES; p++) {
        for (unsigned o = 0; o < PAGE; o++) {
            guest[p * PAGE + o] = expected(p, o);
        }
    }

    struct uffdm_region source_region = {guest, PAGES * PAGE, PAGE, UFFDM_MEMORY_ANONYMOUS, 0};
    struct uffdm_source_options source_options;
    memset(&source_options, 0, sizeof source_options);
    source_options.size = sizeof source_options;
    source_options.listen = "tcp:127.0.0.1:0";
    struct serving serving = {NULL, -1, {0}};
    /* Users allowed on a unix: socket: a count without the array is refused. */
    source_options.allowed_uid_count = 1;
    CHECK(uffdm_source_create(&source_options, &source_region, 1, &serving.source) == -EINVAL,
          "allowed_uid_count without allowed_uids");
    CHECK(serving.source == NULL, "a source was created from bad arguments");
    source_options.allowed_uid_count = 0;
    /* A live source: no live options, a wrong size, or no pause callback are refused. */
    struct uffdm_live_options live;
    memset(&live, 0, sizeof live);
    CHECK(uffdm_source_create_live(&source_options, NULL, &source_region, 1, &serving.source) ==
              -EINVAL,
          "live source without live options");
    CHECK(uffdm_source_create_live(&source_options, &live, &source_region, 1, &serving.source) ==
              -EINVAL,
          "live options of size 0");
    live.size = sizeof live;
    CHECK(uffdm_source_create_live(&source_options, &live, &source_region, 1, &serving.source) ==
              -EINVAL,
          "live source without pause_guest");
    CHECK(serving.source == NULL, "a live source was created from bad arguments");
    /* Compression: an unknown codec is refused; a caller built against ABI 1.0 (the shorter
     * struct) is still served. */
    source_options.compression = 9;
    CHECK(uffdm_source_create(&source_options, &source_region, 1, &serving.source) == -EINVAL,
          "unknown compression");
    source_options.compression = UFFDM_COMPRESSION_OFF;
    source_options.size = UFFDM_SOURCE_OPTIONS_SIZE_V1;
    CHECK(uffdm_source_create(&source_options, &source_region, 1, &serving.source) == 0,
          "the 1.0 options struct");
    uffdm_source_destroy(serving.source);
    serving.source = NULL;
    source_options.size = sizeof source_options;
    /* The migration below: lz4 runs (this guest's pages repeat every 256 bytes). */
    source_options.compression = UFFDM_COMPRESSION_LZ4;
    int rc = uffdm_source_create(&source_options, &source_region, 1, &serving.source);
    CHECK(rc == 0, "uffdm_source_create returned %d", rc);
    if (rc != 0) {
        return 1;
    }
    char endpoint[128];
    CHECK(uffdm_source_endpoint(serving.source, endpoint, sizeof endpoint) == 0, "endpoint");
    CHECK(uffdm_source_endpoint(serving.source, endpoint, 3) == -ERANGE, "small buffer");
    pthread_t server;
    pthread_create(&server, NULL, serve, &serving);

    /* Bad arguments: refused with -EINVAL and a sentence, nothing created. */
    struct uffdm_destination_options options;
    memset(&options, 0, sizeof options);
    options.size = sizeof options - 1;
    options.connect = endpoint;
    options.userfaultfd = -1;
    struct uffdm_region region = {target, PAGES * PAGE, PAGE, UFFDM_MEMORY_ANONYMOUS, 0};
    uffdm_destination* destination = NULL;
    CHECK(uffdm_destination_create(&options, &region, 1, &destination) == -EINVAL, "wrong size");
    CHECK(strlen(uffdm_last_error()) > 0, "no message for a wrong size");
    options.size = sizeof options;
    options.flags = 1u << 30;
    CHECK(uffdm_destination_create(&options, &region, 1, &destination) == -EINVAL, "flags");
    options.flags = 0;
    options.placement_threads = 17;
    CHECK(uffdm_destination_create(&options, &region, 1, &destination) == -EINVAL,
          "17 placement threads");
    CHECK(strstr(uffdm_last_error(), "placement_threads") != NULL, "the field is not named");
    options.placement_threads = -2;
    CHECK(uffdm_destination_create(&options, &region, 1, &destination) == -EINVAL,
          "-2 placement threads");
    options.placement_threads = 0;
    region.flags = 1;
    CHECK(uffdm_destination_create(&options, &region, 1, &destination) == -EINVAL, "region flags");
    region.flags = 0;
    CHECK(uffdm_destination_create(NULL, &region, 1, &destination) == -EINVAL, "NULL options");
    CHECK(destination == NULL, "a destination was created from bad arguments");

    options.flags = UFFDM_DESTINATION_VERIFY | UFFDM_DESTINATION_HOLD_STREAM |
                    UFFDM_DESTINATION_DISCARDS_READ_ZERO;
    options.bulk_channels = 2;
    options.placement_threads = 2; /* the stream placed beside the bulk loops */
    options.on_progress = on_progress;
    options.on_complete = on_complete;
    rc = uffdm_destination_create(&options, &region, 1, &destination);
    CHECK(rc == 0, "uffdm_destination_create returned %d", rc);
    if (rc != 0) {
        return 1;
    }
    CHECK(uffdm_destination_start(destination) == 0, "start");
    /* The guest runs at once: these touches fault and wait for their pages. The stream is held,
     * so they are the only pages there until it is released. */
    unsigned wrong = 0;
    unsigned touched = 0;
    for (unsigned p = 1; p < PAGES; p += 97) {
        if (target[p * PAGE + 5] != expected(p, 5)) {
            wrong++;
        }
        touched++;
    }
    /* Each touched page was present when its read returned; the progress callback (ten calls
     * a second) reports them. Waited for as events, bounded at 10 s each: then three more calls
     * must still see only the touched pages, or the held stream sent some. */
    for (int i = 0; i < 1000 && atomic_load(&last_present) < touched; i++) {
        usleep(10 * 1000);
    }
    unsigned calls = atomic_load(&progress_calls);
    for (int i = 0; i < 1000 && atomic_load(&progress_calls) < calls + 3; i++) {
        usleep(10 * 1000);
    }
    CHECK(atomic_load(&progress_calls) >= calls + 3, "the progress callback stopped");
    CHECK(atomic_load(&last_present) == touched, "held stream: %llu pages present, %u touched",
          (unsigned long long)atomic_load(&last_present), touched);
    /* The guest discards the first page it touched (a balloon): with DISCARDS_READ_ZERO it
     * reads zeros from then on, here and after the migration. */
    CHECK(madvise(target + PAGE, PAGE, MADV_DONTNEED) == 0, "madvise");
    for (unsigned o = 0; o < PAGE; o += 511) {
        if (target[PAGE + o] != 0) {
            wrong++;
        }
    }
    uffdm_destination_hold_stream(destination, 0);
    struct uffdm_destination_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.size = sizeof stats;
    rc = uffdm_destination_wait(destination, &stats);
    CHECK(rc == 0, "wait returned %d: %s", rc, uffdm_strerror(rc));
    CHECK(stats.pages_total == PAGES, "pages_total %llu", (unsigned long long)stats.pages_total);
    CHECK(stats.pages_urgent + stats.pages_background == PAGES, "pages by path");
    CHECK(stats.hashes_verified > 0, "no hash verified");
    CHECK(stats.fault_latency.count > 0, "no fault latency recorded");
    CHECK(stats.pauses == 0 && stats.resumed == 0, "pauses in an unbroken migration");
    pthread_join(server, NULL);
    CHECK(serving.result == 0, "source returned %d", serving.result);
    CHECK(serving.stats.pages_total == PAGES, "source pages");
    CHECK(serving.stats.compressed_runs > 0, "no run went compressed");
    CHECK(serving.stats.compressed_bytes < serving.stats.compressed_raw_bytes / 4,
          "compressed %llu of %llu bytes", (unsigned long long)serving.stats.compressed_bytes,
          (unsigned long long)serving.stats.compressed_raw_bytes);
    for (unsigned p = 0; p < PAGES; p++) {
        for (unsigned o = 0; o < PAGE; o += 511) {
            if (target[p * PAGE + o] != (p == 1 ? 0 : expected(p, o))) {
                wrong++;
            }
        }
    }
    CHECK(wrong == 0, "%u bytes differ", wrong);
    CHECK(progress_calls > 0, "no progress callback");
    CHECK(completed_result == 0 && completed_pages == PAGES, "completion callback: %d, %llu pages",
          completed_result, (unsigned long long)completed_pages);
    uffdm_destination_destroy(destination);
    uffdm_source_destroy(serving.source);
    CHECK(strcmp(uffdm_strerror(-EPROTO), "Protocol error") == 0, "strerror");
    CHECK(strlen(uffdm_version()) > 0, "version");
    CHECK(uffdm_receive_userfaultfd("/nonexistent/socket") < 0, "receive from nowhere");
    if (failures == 0) {
        printf("c abi: migration of %u pages through uffdm.h verified\n", PAGES);
    }
    return failures == 0 ? 0 : 1;
}

/* c_firecracker_test.c — Firecracker's page-fault handler through the C ABI (uffdm.h, plain C):
 * a memory file, the handler, and the Firecracker stand-in (tests/firecracker/fc_standin.c, no
 * KVM here) as a child process that compares every page it touches with the file. Then the
 * argument checks. Exit 0 when every check holds. */
#define _GNU_SOURCE
#include <uffdm/uffdm.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

struct ended {
    int calls;
    int result;
    char end[256];
    uint64_t pages_total;
    uint32_t regions;
};

static void on_vm_end(const struct uffdm_firecracker_vm* vm, void* user) {
    struct ended* e = user;
    e->calls++;
    e->result = vm->result;
    snprintf(e->end, sizeof e->end, "%s", vm->end);
    e->pages_total = vm->stats.pages_total;
    e->regions = vm->regions;
}

int main(void) {
    const char* standin = getenv("UFFDM_FC_STANDIN");
    if (standin == NULL || access("/dev/userfaultfd", R_OK | W_OK) != 0) {
        printf("SKIP: needs UFFDM_FC_STANDIN and /dev/userfaultfd\n");
        return 77;
    }
    char dir[] = "/tmp/uffdm-cfc-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char memory[256], socket_path[256];
    snprintf(memory, sizeof memory, "%s/memory", dir);
    snprintf(socket_path, sizeof socket_path, "%s/fc.sock", dir);
    FILE* f = fopen(memory, "wb");
    unsigned char page[4096];
    for (unsigned p = 0; p < 2048; ++p) { /* 8 MiB, every third page zero */
        for (unsigned i = 0; i < sizeof page; ++i) {
            page[i] = p % 3 == 0 ? 0 : (unsigned char)(p * 131u + i * 7u + 1u);
        }
        fwrite(page, 1, sizeof page, f);
    }
    fclose(f);

    struct ended ended = {0};
    struct uffdm_firecracker_options o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.flags = UFFDM_FIRECRACKER_KEEP_CAPABILITIES;
    o.socket_path = socket_path;
    o.image = memory;
    o.bulk_channels = 1;
    o.max_vms = 1;
    o.on_vm_end = on_vm_end;
    o.user = &ended;
    uffdm_firecracker* handler = NULL;
    int rc = uffdm_firecracker_create(&o, &handler);
    CHECK(rc == 0, "uffdm_firecracker_create returned %d", rc);
    if (rc == 0) {
        pid_t vm = fork();
        if (vm == 0) {
            execl(standin, standin, "--socket", socket_path, "--memory", memory, "--regions", "2",
                  "--balloon", "100:20", "--wait-unregistered", "30", (char*)NULL);
            _exit(127);
        }
        rc = uffdm_firecracker_run(handler);
        CHECK(rc == 0, "uffdm_firecracker_run returned %d", rc);
        int status = 0;
        waitpid(vm, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the stand-in exited with %d", status);
        CHECK(ended.calls == 1 && ended.result == 0 && strcmp(ended.end, "complete") == 0,
              "on_vm_end: %d calls, result %d, end '%s'", ended.calls, ended.result, ended.end);
        CHECK(ended.pages_total == 2048 && ended.regions == 2, "pages %llu, regions %u",
              (unsigned long long)ended.pages_total, ended.regions);
        uffdm_firecracker_destroy(handler);
        CHECK(access(socket_path, F_OK) != 0, "the socket file is left behind");
    }

    /* Argument checks: each refused with EINVAL and a sentence, nothing created. */
    handler = NULL;
    CHECK(uffdm_firecracker_create(NULL, &handler) == -EINVAL, "NULL options");
    struct uffdm_firecracker_options bad = o;
    bad.size = 8;
    CHECK(uffdm_firecracker_create(&bad, &handler) == -EINVAL, "wrong size");
    bad = o;
    bad.flags = 1u << 30;
    CHECK(uffdm_firecracker_create(&bad, &handler) == -EINVAL, "unknown flag");
    bad = o;
    bad.connect = "tcp:127.0.0.1:1";
    CHECK(uffdm_firecracker_create(&bad, &handler) == -EINVAL &&
              strstr(uffdm_last_error(), "one of the two") != NULL,
          "both --image and --connect");
    bad = o;
    bad.image = "/nonexistent/memory";
    CHECK(uffdm_firecracker_create(&bad, &handler) == -ENOENT, "a missing memory file");
    CHECK(handler == NULL, "a refused create made a handler");
    uffdm_firecracker_run(NULL);
    uffdm_firecracker_stop(NULL);
    uffdm_firecracker_destroy(NULL);

    unlink(memory);
    rmdir(dir);
    if (failures == 0) {
        printf("c_firecracker: every check holds\n");
    }
    return failures == 0 ? 0 : 1;
}

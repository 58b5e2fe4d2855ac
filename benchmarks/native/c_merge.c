/* c_merge.c: what mmipc_merge_read (the C API's merge) costs per frame following N journals.
 *
 * usage: c_merge DIR N   -- DIR holds journals j0..j{N-1} (merge_reads.py write N FRAMES DIR);
 * reads the one warm-up frame per journal, then times the drain of the rest. See c_merge.sh. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "mmipc.h"

static double
now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int
main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: c_merge DIR N\n");
        return 2;
    }
    int n = atoi(argv[2]);
    mmipc_merge *m;
    if (mmipc_merge_open(&m) != MMIPC_OK) {
        return 1;
    }
    char name[32];
    mmipc_frame f;
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "j%d", i);
        if (mmipc_merge_add(m, argv[1], name, MMIPC_START_BEGIN, 0) < 0) {
            fprintf(stderr, "c_merge: %s\n", mmipc_last_error());
            return 1;
        }
    }
    for (int i = 0; i < n; i++) {
        if (mmipc_merge_read(m, &f) != 1) {
            fprintf(stderr, "c_merge: no warm-up frame: %s\n", mmipc_last_error());
            return 1;
        }
    }
    long got = 0;
    double start = now_ns();
    while (mmipc_merge_read(m, &f) == 1) {
        got++;
    }
    double elapsed = now_ns() - start;
    printf("%5d journals: %ld frames, %.1f ns a frame\n", n, got, got ? elapsed / (double)got : 0.0);
    mmipc_merge_close(m);
    return 0;
}

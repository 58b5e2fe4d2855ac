/* ctp_reader: read CTP depth-market-data frames from one or more mmipc journals via mmipc.h.
 *
 *   ctp_reader [--end | --at NANO] [--dump] DIRECTORY COUNT NAME [NAME...]
 *
 * Reads until COUNT frames have arrived (forever if COUNT is -1), merging several journals in
 * timestamp order (ties to the journal named first). Each msg_type 1 frame from a v2 page must be
 * exactly tick number `seq` of ctp.h; anything else counts as an error. --dump prints one line per
 * frame: "frame JOURNAL NANO SEQ MSG_TYPE SOURCE LENGTH CRC32". Prints "ready" once the journals
 * are open and, at the end, "read N errors E". Timestamps must rise within each journal; across
 * journals a live merge may see a later frame of one journal before an earlier frame of another
 * that had not arrived yet, so that is not an error. A journal error (corrupt page) exits 1. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctp.h"
#include "mmipc.h"

typedef struct {
    int start;
    int64_t at;
    int dump;
    long long count;
    int journals;
} options_t;

static int
usage(void)
{
    fprintf(stderr, "usage: ctp_reader [--end | --at NANO] [--dump] DIRECTORY COUNT NAME...\n");
    return 2;
}

static int
check_tick(const mmipc_frame *f, int64_t *last_nano)
{
    CThostFtdcDepthMarketDataField expected;
    int bad = f->nano < *last_nano;
    *last_nano = f->nano;
    if (f->msg_type == 1 && f->seq >= 0) {
        ctp_make_tick(&expected, (uint64_t)f->seq);
        bad |= f->length != sizeof(expected) || memcmp(f->data, &expected, sizeof(expected)) != 0;
    }
    return bad;
}

static void
idle(void)
{
    struct timespec pause = {0, 50000};
    nanosleep(&pause, NULL);
}

static int
run(mmipc_merge *m, const options_t *o)
{
    mmipc_frame f;
    long long got = 0;
    long long errors = 0;
    int64_t *last_nano = calloc((size_t)o->journals, sizeof(int64_t));
    if (last_nano == NULL) {
        fprintf(stderr, "ctp_reader: out of memory\n");
        return 1;
    }
    while (o->count < 0 || got < o->count) {
        int rc = mmipc_merge_read(m, &f);
        if (rc < 0) {
            fprintf(stderr, "ctp_reader: %s\n", mmipc_last_error());
            free(last_nano);
            return 1;
        }
        if (rc == 0) {
            idle();
            continue;
        }
        got++;
        errors += check_tick(&f, &last_nano[f.journal]);
        if (o->dump) {
            printf("frame %u %lld %lld %u %u %u %u\n", f.journal, (long long)f.nano,
                   (long long)f.seq, f.msg_type, f.source, f.length, mmipc_crc32(0, f.data, f.length));
        }
    }
    printf("read %lld errors %lld\n", got, errors);
    free(last_nano);
    return 0;
}

int
main(int argc, char **argv)
{
    options_t o = {MMIPC_START_BEGIN, 0, 0, 0, 0};
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--end") == 0) {
            o.start = MMIPC_START_END;
        }
        else if (strcmp(argv[i], "--at") == 0 && i + 1 < argc) {
            o.start = MMIPC_START_AT;
            o.at = strtoll(argv[++i], NULL, 10);
        }
        else if (strcmp(argv[i], "--dump") == 0) {
            o.dump = 1;
        }
        else {
            return usage();
        }
    }
    if (argc - i < 3) {
        return usage();
    }
    o.count = strtoll(argv[i + 1], NULL, 10);
    o.journals = argc - i - 2;
    mmipc_merge *m;
    if (mmipc_merge_open(&m) != MMIPC_OK) {
        fprintf(stderr, "ctp_reader: %s\n", mmipc_last_error());
        return 1;
    }
    for (int k = i + 2; k < argc; k++) {
        if (mmipc_merge_add(m, argv[i], argv[k], o.start, o.at) < 0) {
            fprintf(stderr, "ctp_reader: %s\n", mmipc_last_error());
            mmipc_merge_close(m);
            return 1;
        }
    }
    printf("ready\n");
    fflush(stdout);
    int rc = run(m, &o);
    mmipc_merge_close(m);
    return rc;
}

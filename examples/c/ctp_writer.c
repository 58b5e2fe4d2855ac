/* ctp_writer: write CTP depth-market-data frames to an mmipc journal through mmipc.h.
 *
 *   ctp_writer [--checksum] [--page-size BYTES] [--die-in-claim BYTES] DIRECTORY NAME COUNT
 *
 * Writes COUNT ticks (forever if COUNT is -1) with msg_type 1. Tick number = the frame's sequence
 * number, so a writer killed and started again continues the same feed. Prints "ready SEQ" once
 * the journal is open (SEQ: the next frame's sequence number) and "wrote N" at the end.
 * --die-in-claim: after the ticks, claim BYTES, fill them with 0xAB without committing, print
 * "claimed" and wait to be killed (the crash test of the resume rules).
 * Standalone: it does not register with the mmipc service (see docs/c-api.md). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctp.h"
#include "mmipc.h"

#define MSG_DEPTH_MARKET_DATA 1u
#define SOURCE_GATEWAY 7u

static int
usage(void)
{
    fprintf(stderr, "usage: ctp_writer [--checksum] [--page-size BYTES] [--mode OCTAL] "
                    "[--die-in-claim BYTES] DIRECTORY NAME COUNT\n");
    return 2;
}

static void
die_claiming(mmipc_writer *w, uint32_t size)
{
    void *buf;
    if (mmipc_claim(w, size, &buf) != MMIPC_OK) {
        fprintf(stderr, "ctp_writer: %s\n", mmipc_last_error());
        return;
    }
    memset(buf, 0xAB, size);
    printf("claimed\n");
    fflush(stdout);
    for (;;) {
        pause();
    }
}

int
main(int argc, char **argv)
{
    mmipc_writer_options options = {0, 0, 0};
    long long die_in_claim = -1;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--checksum") == 0) {
            options.checksum = 1;
        }
        else if (strcmp(argv[i], "--page-size") == 0 && i + 1 < argc) {
            options.page_size = strtoull(argv[++i], NULL, 10);
        }
        else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc) {
            options.mode = (unsigned int)strtoul(argv[++i], NULL, 8);  /* 600, 640 or 644 */
        }
        else if (strcmp(argv[i], "--die-in-claim") == 0 && i + 1 < argc) {
            die_in_claim = strtoll(argv[++i], NULL, 10);
        }
        else {
            return usage();
        }
    }
    if (argc - i != 3) {
        return usage();
    }
    long long count = strtoll(argv[i + 2], NULL, 10);
    mmipc_writer *w;
    if (mmipc_writer_open(&w, argv[i], argv[i + 1], &options) != MMIPC_OK) {
        fprintf(stderr, "ctp_writer: %s\n", mmipc_last_error());
        return 1;
    }
    printf("ready %llu\n", (unsigned long long)mmipc_writer_next_seq(w));
    fflush(stdout);
    CThostFtdcDepthMarketDataField tick;
    long long written = 0;
    for (; count < 0 || written < count; written++) {
        ctp_make_tick(&tick, mmipc_writer_next_seq(w));
        int64_t nano = mmipc_write(w, &tick, sizeof(tick), MSG_DEPTH_MARKET_DATA, SOURCE_GATEWAY);
        if (nano < 0) {
            fprintf(stderr, "ctp_writer: %s\n", mmipc_last_error());
            mmipc_writer_close(w);
            return 1;
        }
    }
    if (die_in_claim >= 0) {
        die_claiming(w, (uint32_t)die_in_claim);
    }
    mmipc_writer_close(w);
    printf("wrote %lld\n", written);
    return 0;
}

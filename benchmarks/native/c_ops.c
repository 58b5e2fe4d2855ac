/* c_ops: one hot-path operation of the C core repeated N times, for callgrind instruction counts.
 *
 *   c_ops write|read_empty|read N DIRECTORY
 *
 * Setup is the same for any N (read ops first write PREPARED frames), so the difference of two
 * runs' totals divided by the difference of their N is the cost of one operation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mmipc.h"

#define PREPARED 40000
#define PAYLOAD 408

static int
die(const char *what)
{
    fprintf(stderr, "c_ops: %s: %s\n", what, mmipc_last_error());
    return 1;
}

int
main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: c_ops write|read_empty|read N DIRECTORY\n");
        return 2;
    }
    const char *op = argv[1];
    long n = strtol(argv[2], NULL, 10);
    static unsigned char payload[PAYLOAD];
    memset(payload, 7, sizeof(payload));
    mmipc_writer *w;
    if (mmipc_writer_open(&w, argv[3], "ops", NULL) != MMIPC_OK) {
        return die("open writer");
    }
    long prepared = strcmp(op, "write") == 0 ? 0 : PREPARED;
    long writes = strcmp(op, "write") == 0 ? n : prepared;
    for (long i = 0; i < writes; i++) {
        if (mmipc_write(w, payload, PAYLOAD, 1, 0) < 0) {
            return die("write");
        }
    }
    mmipc_writer_close(w);
    if (prepared == 0) {
        return 0;
    }
    mmipc_cursor *c;
    int start = strcmp(op, "read_empty") == 0 ? MMIPC_START_END : MMIPC_START_BEGIN;
    if (mmipc_cursor_open(&c, argv[3], "ops", start, 0) != MMIPC_OK) {
        return die("open cursor");
    }
    mmipc_frame f;
    long got = 0;
    for (long i = 0; i < n; i++) {
        got += mmipc_cursor_read(c, &f);
    }
    mmipc_cursor_close(c);
    printf("%ld\n", got);
    return 0;
}

/* null_args.c: every mmipc.h entry point given a NULL handle or a NULL out-pointer, each in a
 * forked child (a crash kills only the child). Prints one line per call: "NAME rc MESSAGE", or
 * "NAME killed SIGNAL" (merge_add_name: a NULL name once the merge has a journal, compared with
 * the names it holds). Usage: null_args DIRECTORY (a journal "j" with one frame is made there). */
#include "mmipc.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *dir;

static mmipc_writer *writer(void)
{
    mmipc_writer *w = NULL;
    if (mmipc_writer_open(&w, dir, "j", NULL) != MMIPC_OK) {
        printf("setup failed: %s\n", mmipc_last_error());
        exit(3);
    }
    return w;
}

static mmipc_cursor *cursor(void)
{
    mmipc_cursor *c = NULL;
    if (mmipc_cursor_open(&c, dir, "j", MMIPC_START_BEGIN, 0) != MMIPC_OK) {
        exit(3);
    }
    return c;
}

static mmipc_merge *merge(void)
{
    mmipc_merge *m = NULL;
    if (mmipc_merge_open(&m) != MMIPC_OK || mmipc_merge_add(m, dir, "j", MMIPC_START_BEGIN, 0) < 0) {
        exit(3);
    }
    return m;
}

static long long writer_open_out(void) { return mmipc_writer_open(NULL, dir, "j", NULL); }
static long long write_handle(void) { return mmipc_write(NULL, "x", 1, 0, 0); }
static long long write_payload(void) { return mmipc_write(writer(), NULL, 8, 0, 0); }
static long long claim_handle(void) { void *b; return mmipc_claim(NULL, 8, &b); }
static long long claim_buf(void) { return mmipc_claim(writer(), 8, NULL); }
static long long commit_handle(void) { return mmipc_commit(NULL, 0, 0); }
static long long sync_handle(void) { return mmipc_writer_sync(NULL); }
static long long abandon_handle(void) { mmipc_abandon(NULL); return 0; }
static long long writer_getters(void)
{
    return (long long)(mmipc_writer_page(NULL) + mmipc_writer_pos(NULL) + mmipc_writer_next_seq(NULL))
           + mmipc_writer_last_nano(NULL);
}
static long long cursor_open_out(void) { return mmipc_cursor_open(NULL, dir, "j", MMIPC_START_BEGIN, 0); }
static long long cursor_read_handle(void) { mmipc_frame f; return mmipc_cursor_read(NULL, &f); }
static long long cursor_read_frame(void) { return mmipc_cursor_read(cursor(), NULL); }
static long long cursor_poll_nano(void) { return mmipc_cursor_poll(cursor(), NULL); }
static long long cursor_poll_handle(void) { int64_t n; return mmipc_cursor_poll(NULL, &n); }
static long long cursor_take_frame(void)
{
    mmipc_cursor *c = cursor();
    int64_t n;
    mmipc_cursor_poll(c, &n);
    return mmipc_cursor_take(c, NULL);
}
static long long cursor_take_handle(void) { mmipc_frame f; return mmipc_cursor_take(NULL, &f); }
static long long cursor_seek_handle(void) { return mmipc_cursor_seek(NULL, MMIPC_START_BEGIN, 0); }
static long long merge_open_out(void) { return mmipc_merge_open(NULL); }
static long long merge_add_handle(void) { return mmipc_merge_add(NULL, dir, "j", MMIPC_START_BEGIN, 0); }
static long long merge_add_name(void) { return mmipc_merge_add(merge(), dir, NULL, MMIPC_START_BEGIN, 0); }
static long long merge_read_handle(void) { mmipc_frame f; return mmipc_merge_read(NULL, &f); }
static long long merge_read_frame(void) { return mmipc_merge_read(merge(), NULL); }
static long long closes(void)
{
    mmipc_writer_close(NULL);
    mmipc_cursor_close(NULL);
    mmipc_merge_close(NULL);
    return 0;
}
static long long crc_data(void) { return mmipc_crc32(0, NULL, 0); }

static const struct {
    const char *name;
    long long (*call)(void);
} calls[] = {
    {"writer_open_out", writer_open_out}, {"write_handle", write_handle},
    {"write_payload", write_payload}, {"claim_handle", claim_handle}, {"claim_buf", claim_buf},
    {"commit_handle", commit_handle}, {"sync_handle", sync_handle},
    {"abandon_handle", abandon_handle}, {"writer_getters", writer_getters},
    {"cursor_open_out", cursor_open_out}, {"cursor_read_handle", cursor_read_handle},
    {"cursor_read_frame", cursor_read_frame}, {"cursor_poll_nano", cursor_poll_nano},
    {"cursor_poll_handle", cursor_poll_handle}, {"cursor_take_frame", cursor_take_frame},
    {"cursor_take_handle", cursor_take_handle}, {"cursor_seek_handle", cursor_seek_handle},
    {"merge_open_out", merge_open_out}, {"merge_add_handle", merge_add_handle},
    {"merge_add_name", merge_add_name}, {"merge_read_handle", merge_read_handle}, {"merge_read_frame", merge_read_frame},
    {"closes", closes}, {"crc_data", crc_data},
};

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: null_args DIRECTORY\n");
        return 2;
    }
    dir = argv[1];
    mmipc_writer *w = writer();
    if (mmipc_write(w, "frame", 5, 1, 0) < 0) {
        return 3;
    }
    mmipc_writer_close(w);
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            long long rc = calls[i].call();
            printf("%s %lld %s\n", calls[i].name, rc, mmipc_last_error());
            fflush(stdout);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFSIGNALED(status)) {
            printf("%s killed %d\n", calls[i].name, WTERMSIG(status));
        }
    }
    return 0;
}

/* mmipc.h: the C API of mmipc, for C and C++ processes.
 *
 * The same journals as the Python package (docs/format.md): a C writer's frames are read by Python
 * readers and the reverse. New pages are written in format version 2 (sequence numbers, optional
 * CRC-32 checksums); version 1 pages are read, and a writer that resumes inside a v1 page finishes
 * that page in v1.
 *
 * Standalone use. This API does not talk to the mmipc service: a writer is guarded by the journal's
 * OS lock alone (flock on NAME.lock, exactly as a Python writer created with service=None), and the
 * service does not list it or prepare its pages ahead. A C writer and a Python writer still exclude
 * each other through that lock. See docs/c-api.md.
 *
 * Threads. A writer, a cursor or a merge is used by one thread at a time (no locking inside).
 * Different handles may be used by different threads. mmipc_last_error() is per thread.
 * After fork(), only the process that opened a writer may write with it: the child shares the
 * lock's open file description, so the OS lock cannot tell them apart.
 *
 * Signals. Pages are allocated in full when created, so a writer never meets SIGBUS for want of
 * disk space. A page file truncated by someone else while mapped raises SIGBUS in any process
 * that touches the lost part (Python readers included); mmipc never truncates a page.
 * Under a file-size limit (RLIMIT_FSIZE), ignore SIGXFSZ as Python does: a page that would exceed
 * the limit then fails with MMIPC_E_DISK_FULL instead of killing the process.
 *
 * Errors. Every function that can fail returns a negative MMIPC_E_* code and sets a one-line
 * message for mmipc_last_error(); nothing aborts the process. A NULL handle or pointer argument
 * is MMIPC_E_USAGE (payload may be NULL when length is 0); the close functions and
 * mmipc_abandon accept NULL, the mmipc_writer_* getters return 0 for it. A handle used after
 * its close is freed memory: that the API cannot detect. After MMIPC_E_CORRUPT a cursor stays
 * where it was: the same call fails the same way again.
 *
 * Build: cc -std=c11 -O2 mmipc.c your_program.c (Linux; needs only libc).
 */
#ifndef MMIPC_H
#define MMIPC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MMIPC_VERSION_MAJOR 0
#define MMIPC_VERSION_MINOR 1

/* Return codes. 0 is success; read and poll functions return 1 for "a frame", 0 for "none yet". */
#define MMIPC_OK 0
#define MMIPC_E_USAGE (-1)       /* the caller passed something impossible (name, size, id) */
#define MMIPC_E_CORRUPT (-2)     /* a page file holds bytes that are not a valid journal */
#define MMIPC_E_STORAGE (-3)     /* the OS refused to create, open or map a file */
#define MMIPC_E_DISK_FULL (-4)   /* no space (or file-size limit, or quota) for the next page */
#define MMIPC_E_LOCKED (-5)      /* another live writer holds the journal */
#define MMIPC_E_TOO_LARGE (-6)   /* the payload does not fit one page */
#define MMIPC_E_CLOSED (-7)      /* the handle was closed, or a claim is open */
#define MMIPC_E_NOMEM (-8)       /* malloc failed */

/* The message of the last error of the calling thread ("" if none). Valid until its next call. */
const char *mmipc_last_error(void);

/* Limits, as in docs/format.md. */
#define MMIPC_DEFAULT_PAGE_SIZE (32u * 1024u * 1024u)
#define MMIPC_MAX_USER_MSG_TYPE 0xFFFEFFFFu

/* One committed frame as a reader hands it out. `data` points into the mapped page: it stays valid
 * until the next call on the same cursor (or merge), or its close. Copy what you keep. */
typedef struct {
    int64_t nano;          /* timestamp, ns since the Unix epoch */
    int64_t seq;           /* per-journal sequence number; -1 for frames of v1 pages */
    uint32_t msg_type;
    uint32_t source;
    uint32_t length;       /* payload length in bytes */
    uint32_t journal;      /* in a merge: the index of the journal (order of mmipc_merge_add) */
    const void *data;
} mmipc_frame;

/* ---- writer --------------------------------------------------------------------------------- */

typedef struct mmipc_writer mmipc_writer;

typedef struct {
    uint64_t page_size;    /* of pages created from now on; 0: the journal's last page size, or
                              MMIPC_DEFAULT_PAGE_SIZE for a new journal */
    int checksum;          /* non-zero: pages created from now on carry CRC-32 checksums */
    unsigned int mode;     /* of new page and lock files: 0600 (0: the default), 0640 or 0644 */
} mmipc_writer_options;

/* Open journal `name` in `directory` for appending (the directory and first page are created if
 * needed), take its writer lock and resume after its last committed frame, zeroing the remains of
 * any uncommitted frame first. `options` may be NULL. On success *out is the writer. */
int mmipc_writer_open(mmipc_writer **out, const char *directory, const char *name,
                      const mmipc_writer_options *options);

/* Append one frame and publish it. Returns its timestamp (> 0), or a negative MMIPC_E_* code.
 * msg_type must be at most MMIPC_MAX_USER_MSG_TYPE. Switches to the next page when needed. */
int64_t mmipc_write(mmipc_writer *w, const void *payload, uint32_t length, uint32_t msg_type,
                    uint32_t source);

/* Claim room for a `length`-byte payload to fill in place: *buf points at it. Publish it with
 * mmipc_commit, or give it up with mmipc_abandon (which zeroes it). No other write in between. */
int mmipc_claim(mmipc_writer *w, uint32_t length, void **buf);
int64_t mmipc_commit(mmipc_writer *w, uint32_t msg_type, uint32_t source);
void mmipc_abandon(mmipc_writer *w);

/* Where the writer stands: the page number, the offset of the next frame, the last timestamp and
 * the sequence number the next frame gets (in a v1 page: the first seq of the next v2 page). */
uint64_t mmipc_writer_page(const mmipc_writer *w);
uint64_t mmipc_writer_pos(const mmipc_writer *w);
int64_t mmipc_writer_last_nano(const mmipc_writer *w);
uint64_t mmipc_writer_next_seq(const mmipc_writer *w);

/* msync the current page (frames are visible to readers without it). */
int mmipc_writer_sync(mmipc_writer *w);

/* Abandon an open claim, unmap, release the lock, free. NULL is accepted. */
void mmipc_writer_close(mmipc_writer *w);

/* ---- reader: one journal -------------------------------------------------------------------- */

typedef struct mmipc_cursor mmipc_cursor;

#define MMIPC_START_BEGIN 0    /* the oldest frame on disk */
#define MMIPC_START_END 1      /* only frames committed from now on */
#define MMIPC_START_AT 2       /* the first frame with a timestamp >= `nano` */

/* Follow journal `name` in `directory`, which need not exist yet (the cursor looks for its first
 * page at most once a millisecond). Page files are opened read-only, without following links. */
int mmipc_cursor_open(mmipc_cursor **out, const char *directory, const char *name, int start,
                      int64_t nano);

/* The next committed frame: 1 and *frame filled, 0 if there is none yet, or a negative code.
 * Every frame's header is checked, and its checksum on CHECKSUMS pages, before it is handed out. */
int mmipc_cursor_read(mmipc_cursor *c, mmipc_frame *frame);

/* Peek: 1 and *nano = the next frame's timestamp (it stays peeked), 0 if none, or a negative code.
 * mmipc_cursor_take hands out the peeked frame (1), or 0 if nothing is peeked. */
int mmipc_cursor_poll(mmipc_cursor *c, int64_t *nano);
int mmipc_cursor_take(mmipc_cursor *c, mmipc_frame *frame);

/* Move the cursor (MMIPC_START_*), as mmipc_cursor_open does. */
int mmipc_cursor_seek(mmipc_cursor *c, int start, int64_t nano);

void mmipc_cursor_close(mmipc_cursor *c);

/* ---- reader: a merge of several journals ---------------------------------------------------- */

typedef struct mmipc_merge mmipc_merge;

/* Frames of all added journals in timestamp order; ties go to the journal added first. A heap of
 * the journals with a frame peeked: a frame costs O(log journals); journals with nothing peeked
 * are polled at every read (one commit-word load each). A journal error is returned before any
 * frame is taken, at every read, until it is fixed. */
int mmipc_merge_open(mmipc_merge **out);
/* Add a journal; returns its index (>= 0, also frame->journal) or a negative code. */
int mmipc_merge_add(mmipc_merge *m, const char *directory, const char *name, int start, int64_t nano);
int mmipc_merge_read(mmipc_merge *m, mmipc_frame *frame);
void mmipc_merge_close(mmipc_merge *m);

/* ---- utilities ------------------------------------------------------------------------------ */

/* zlib.crc32-compatible CRC-32 (CRC-32/ISO-HDLC) of n bytes, continuing from crc (start at 0). */
uint32_t mmipc_crc32(uint32_t crc, const void *data, size_t n);

/* The writers' clock: CLOCK_MONOTONIC anchored once per process to CLOCK_REALTIME, in ns since
 * the Unix epoch. It never steps back within a process. */
int64_t mmipc_now(void);

#ifdef __cplusplus
}
#endif

#endif /* MMIPC_H */

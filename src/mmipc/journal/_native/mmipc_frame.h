/* mmipc_frame.h: the journal format at the level of one mapped page buffer (private).
 *
 * docs/format.md is the contract; src/mmipc/journal/_layout.py is the Python statement of the same offsets.
 * Everything here works on a page buffer only (no files, no allocation), so that the C core
 * (mmipc.c) and the CPython extension (_mmipcmodule.c) share one definition of the hot paths.
 *
 * Memory ordering (docs/format.md, "Memory ordering: the contract"):
 *   - the writer stores payload, header fields, time-index slot and first_nano with plain or
 *     relaxed stores, then publishes the frame with ONE memory_order_release store of the commit
 *     word (`length`);
 *   - a reader loads the commit word with memory_order_acquire and reads nothing else of the frame
 *     before it is non-zero, so every store the writer made before the release is visible to it.
 * Words that a reader may load while a writer stores them without a commit in between (time-index
 * slots, first_nano) are accessed with relaxed atomics, so that there is no data race in C terms.
 */
#ifndef MMIPC_FRAME_H
#define MMIPC_FRAME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mmipc's on-disk format is little-endian; this C core supports little-endian hosts only"
#endif

#define MMIPC_MAGIC "MMIPCJNL"
#define MMIPC_PAGE_HEADER_SIZE 4096u
#define MMIPC_FRAME_HEADER_SIZE 32u
#define MMIPC_PAGE_END_RESERVE 32u
#define MMIPC_INDEX_OFFSET 256u
#define MMIPC_INDEX_SLOTS 960u
#define MMIPC_NAME_FIELD_SIZE 64u
#define MMIPC_MIN_PAGE_SIZE (64u * 1024u)
#define MMIPC_MAX_PAGE_SIZE (1024u * 1024u * 1024u)
#define MMIPC_PAGE_SIZE_MULTIPLE 4096u
#define MMIPC_MAX_MSG_TYPE 0xFFFEFFFFu
#define MMIPC_MSG_PAGE_END 0xFFFFFFFFu
#define MMIPC_FLAG_CHECKSUMS 1u

/* Page header offsets (docs/format.md, "Page header"). */
#define MMIPC_OFF_VERSION 8
#define MMIPC_OFF_HEADER_SIZE 10
#define MMIPC_OFF_FLAGS 12
#define MMIPC_OFF_PAGE_SIZE 16
#define MMIPC_OFF_PAGE_NO 24
#define MMIPC_OFF_FIRST_NANO 32
#define MMIPC_OFF_LAST_NANO 40
#define MMIPC_OFF_CREATED_NANO 48
#define MMIPC_OFF_NAME 56
#define MMIPC_OFF_FIRST_SEQ 120

/* The frame header, at an 8-byte aligned offset of a page-aligned map: natural alignment gives
 * exactly the offsets of docs/format.md (0, 4, 8, 16, 20, 24, 28; 32 bytes). */
typedef struct {
    _Atomic uint32_t length;   /* the commit word: 32 + payload_len, 0 while uncommitted */
    uint32_t msg_type;
    int64_t nano;
    uint32_t source;
    uint32_t payload_len;
    uint32_t seq;              /* v2: low 32 bits of the frame's sequence number; v1: 0 */
    uint32_t checksum;         /* v2 CHECKSUMS pages: crc32(payload); else 0 */
} mmipc_frame_header_t;

_Static_assert(sizeof(mmipc_frame_header_t) == MMIPC_FRAME_HEADER_SIZE, "frame header is 32 bytes");
_Static_assert(offsetof(mmipc_frame_header_t, nano) == 8, "nano at 8");
_Static_assert(offsetof(mmipc_frame_header_t, seq) == 24, "seq at 24");
_Static_assert(offsetof(mmipc_frame_header_t, checksum) == 28, "checksum at 28");

static inline uint64_t
mmipc_align8(uint64_t n)
{
    return (n + 7u) & ~(uint64_t)7u;
}

static inline mmipc_frame_header_t *
mmipc_frame_at(unsigned char *page, uint64_t pos)
{
    return (mmipc_frame_header_t *)(void *)(page + pos);
}

/* The commit word, loaded with acquire: nothing else of the frame may be read before this. */
static inline uint32_t
mmipc_load_commit(const unsigned char *page, uint64_t pos)
{
    const mmipc_frame_header_t *h = (const mmipc_frame_header_t *)(const void *)(page + pos);
    return atomic_load_explicit((_Atomic uint32_t *)&h->length, memory_order_acquire);
}

static inline void
mmipc_store_commit(unsigned char *page, uint64_t pos, uint32_t length)
{
    atomic_store_explicit(&mmipc_frame_at(page, pos)->length, length, memory_order_release);
}

static inline _Atomic uint32_t *
mmipc_slot_word(unsigned char *page, uint32_t index)
{
    return (_Atomic uint32_t *)(void *)(page + MMIPC_INDEX_OFFSET + 4u * index);
}

static inline uint32_t
mmipc_load_slot(const unsigned char *page, uint32_t index)
{
    return atomic_load_explicit(mmipc_slot_word((unsigned char *)page, index), memory_order_relaxed);
}

static inline void
mmipc_store_slot(unsigned char *page, uint32_t index, uint32_t offset)
{
    atomic_store_explicit(mmipc_slot_word(page, index), offset, memory_order_relaxed);
}

static inline _Atomic int64_t *
mmipc_header_nano(unsigned char *page, unsigned int offset)
{
    return (_Atomic int64_t *)(void *)(page + offset);
}

/* Bytes of page covered by one time-index slot: align8(ceil((page_size - 4096) / 960)). */
static inline uint64_t
mmipc_index_stride(uint64_t page_size)
{
    uint64_t body = page_size - MMIPC_PAGE_HEADER_SIZE;
    return mmipc_align8((body + MMIPC_INDEX_SLOTS - 1) / MMIPC_INDEX_SLOTS);
}

static inline uint64_t
mmipc_max_payload(uint64_t page_size)
{
    return page_size - MMIPC_PAGE_HEADER_SIZE - MMIPC_FRAME_HEADER_SIZE - MMIPC_PAGE_END_RESERVE;
}

/* The full sequence number of a frame in a page whose first data frame has `first_seq`. */
static inline int64_t
mmipc_full_seq(uint64_t first_seq, uint32_t seq32)
{
    return (int64_t)(first_seq + (uint32_t)(seq32 - (uint32_t)first_seq));
}

/* CRC-32/ISO-HDLC (zlib.crc32), slicing-by-8. mmipc_crc32_init() must have run once (the C
 * core runs it on first use of a writer or cursor; the extension at import). */
extern uint32_t mmipc_crc_table[8][256];
void mmipc_crc32_init(void);

static inline uint32_t
mmipc_crc32_update(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    while (n && ((uintptr_t)p & 7u)) {
        crc = mmipc_crc_table[0][(crc ^ *p++) & 0xFFu] ^ (crc >> 8);
        n--;
    }
    while (n >= 8) {
        uint32_t lo;
        uint32_t hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= crc;
        crc = mmipc_crc_table[7][lo & 0xFFu] ^ mmipc_crc_table[6][(lo >> 8) & 0xFFu]
              ^ mmipc_crc_table[5][(lo >> 16) & 0xFFu] ^ mmipc_crc_table[4][lo >> 24]
              ^ mmipc_crc_table[3][hi & 0xFFu] ^ mmipc_crc_table[2][(hi >> 8) & 0xFFu]
              ^ mmipc_crc_table[1][(hi >> 16) & 0xFFu] ^ mmipc_crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) {
        crc = mmipc_crc_table[0][(crc ^ *p++) & 0xFFu] ^ (crc >> 8);
    }
    return ~crc;
}

/* What a page's frames look like to the hot paths: its size and format. */
typedef struct {
    unsigned char *base;     /* the mapped page */
    uint64_t page_size;
    uint32_t version;        /* 1 or 2 */
    uint32_t flags;          /* v2 page flags (MMIPC_FLAG_CHECKSUMS) */
    uint64_t first_seq;      /* v2: the seq of the page's first data frame */
} mmipc_page_view_t;

/* A committed data frame as the fast read path found it. */
typedef struct {
    uint64_t pos;
    uint32_t length;
    uint32_t msg_type;
    int64_t nano;
    uint32_t source;
    uint32_t payload_len;
    int64_t seq;             /* -1 in v1 pages */
} mmipc_peeked_t;

enum {
    MMIPC_PEEK_NONE = 0,     /* the commit word is still 0 */
    MMIPC_PEEK_FRAME = 1,    /* a committed data frame that passed every check */
    MMIPC_PEEK_OTHER = 2,    /* an end-of-page marker, or a check failed: take the slow path */
};

static inline _Atomic uint64_t *
mmipc_first_seq_word(unsigned char *page)
{
    return (_Atomic uint64_t *)(void *)(page + MMIPC_OFF_FIRST_SEQ);
}

/* Peek at the frame at `pos` with every check of the Python cursor (length, payload length, room
 * for the end marker, timestamp order) and, on CHECKSUMS pages, the payload's CRC.
 * At a page's first frame, first_seq is loaded again from the header: a reader may have opened a
 * page prepared ahead before its writer adopted it and stored first_seq (before that frame's
 * commit, so the acquire load of the commit word makes the new value visible). */
static inline int
mmipc_peek(mmipc_page_view_t *page, uint64_t pos, int64_t last_nano, mmipc_peeked_t *out)
{
    uint32_t length = mmipc_load_commit(page->base, pos);
    if (length == 0) {
        return MMIPC_PEEK_NONE;
    }
    const mmipc_frame_header_t *h = mmipc_frame_at(page->base, pos);
    uint32_t n = h->payload_len;
    uint64_t end = pos + mmipc_align8(length);
    if (length != (uint64_t)n + MMIPC_FRAME_HEADER_SIZE
        || end + MMIPC_PAGE_END_RESERVE > page->page_size || h->nano < last_nano
        || h->msg_type == MMIPC_MSG_PAGE_END) {
        return MMIPC_PEEK_OTHER;
    }
    out->seq = -1;
    if (page->version >= 2) {
        if (pos == MMIPC_PAGE_HEADER_SIZE) {
            page->first_seq = atomic_load_explicit(mmipc_first_seq_word(page->base),
                                                   memory_order_relaxed);
        }
        if ((page->flags & MMIPC_FLAG_CHECKSUMS)
            && mmipc_crc32_update(0, page->base + pos + MMIPC_FRAME_HEADER_SIZE, n) != h->checksum) {
            return MMIPC_PEEK_OTHER;
        }
        out->seq = mmipc_full_seq(page->first_seq, h->seq);
    }
    out->pos = pos;
    out->length = length;
    out->msg_type = h->msg_type;
    out->nano = h->nano;
    out->source = h->source;
    out->payload_len = n;
    return MMIPC_PEEK_FRAME;
}

/* The writer's side of one page: where the next frame goes and which index slot is next. */
typedef struct {
    mmipc_page_view_t page;
    uint64_t pos;
    uint64_t limit;          /* page_size, or 0 to force every write onto the slow path */
    uint64_t slot_boundary;  /* the next frame at or past this offset fills time-index slots */
    int64_t last_nano;
    uint64_t next_seq;
} mmipc_write_state_t;

/* Store a frame's header (everything but the commit word) for a payload already in place. */
static inline void
mmipc_store_header(mmipc_write_state_t *w, uint64_t pos, uint32_t n, uint32_t msg_type,
                   uint32_t source, int64_t nano)
{
    mmipc_frame_header_t *h = mmipc_frame_at(w->page.base, pos);
    h->msg_type = msg_type;
    h->nano = nano;
    h->source = source;
    h->payload_len = n;
    if (w->page.version >= 2) {
        h->seq = (uint32_t)w->next_seq;
        h->checksum = (w->page.flags & MMIPC_FLAG_CHECKSUMS)
                          ? mmipc_crc32_update(0, w->page.base + pos + MMIPC_FRAME_HEADER_SIZE, n)
                          : 0u;
    }
    else {
        h->seq = 0;
        h->checksum = 0;
    }
}

/* The slot boundary after `slot`: the offset whose frame fills it, or 2**62 past the last slot. */
static inline uint64_t
mmipc_slot_boundary(uint32_t slot, uint64_t stride)
{
    return slot < MMIPC_INDEX_SLOTS ? MMIPC_PAGE_HEADER_SIZE + slot * stride : (uint64_t)1 << 62;
}

/* For the frame at `pos`, at or past w->slot_boundary: the page's first timestamp (if it is the
 * page's first frame) and every time-index slot it starts, as Writer._mark_index stores them (slot i
 * holds the offset of the first frame at or past PAGE_HEADER_SIZE + i * stride). Returns the next
 * slot index. Shared by the C writer (mmipc.c) and the extension's WriterCore. */
static inline uint32_t
mmipc_mark_index(mmipc_write_state_t *w, uint64_t pos, int64_t nano, uint32_t slot, uint64_t stride)
{
    unsigned char *base = w->page.base;
    if (pos == MMIPC_PAGE_HEADER_SIZE) {
        atomic_store_explicit(mmipc_header_nano(base, MMIPC_OFF_FIRST_NANO), nano,
                              memory_order_relaxed);
    }
    while (w->slot_boundary <= pos) {
        mmipc_store_slot(base, slot, (uint32_t)pos);
        slot++;
        w->slot_boundary = mmipc_slot_boundary(slot, stride);
    }
    return slot;
}

/* Publish the frame at `pos` (its header and any index slot already stored) and step past it. */
static inline void
mmipc_publish(mmipc_write_state_t *w, uint64_t pos, uint32_t n, int64_t nano)
{
    mmipc_store_commit(w->page.base, pos, n + MMIPC_FRAME_HEADER_SIZE);
    w->pos = pos + mmipc_align8((uint64_t)n + MMIPC_FRAME_HEADER_SIZE);
    w->last_nano = nano;
    if (w->page.version >= 2) {
        w->next_seq++;
    }
}

/* ---- the pretoucher (mmipc.c): pages faulted in, writable, before the writer needs them ---------
 *
 * mmipc_pretouch_start: a thread that keeps MMIPC_PRETOUCH_AHEAD bytes past the writer's position
 * populated writable (MADV_POPULATE_WRITE) in the page given by mmipc_pretouch_page; NULL when
 * MMIPC_PRETOUCH=0 is set or the thread cannot start (the writer then just faults, as before).
 * The writer's position is read from the page's time-index slots: the hot path pays nothing.
 * mmipc_pretouch_page(pt, NULL, 0) returns once the thread no longer touches the old page: call
 * it (or give a new page) before unmapping the page it was given. mmipc_pretouch_stop joins and
 * frees; in a forked child (where the thread does not exist) it only frees what it can. */
typedef struct mmipc_pretouch mmipc_pretouch;
mmipc_pretouch *mmipc_pretouch_start(void);
void mmipc_pretouch_page(mmipc_pretouch *pt, unsigned char *base, uint64_t size);
uint64_t mmipc_pretouch_total(mmipc_pretouch *pt);
int mmipc_pretouch_unsupported(mmipc_pretouch *pt);
void mmipc_pretouch_stop(mmipc_pretouch *pt);

#endif /* MMIPC_FRAME_H */

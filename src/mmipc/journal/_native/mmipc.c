/* mmipc.c: the C core of mmipc: page files, the writer, the reader cursor and the merge.
 *
 * The Python modules are the reference implementation (src/mmipc/journal/_files.py, _page.py, _writer.py,
 * _cursor.py, _reader.py); this file does the same things in the same order, and docs/format.md
 * is the contract both follow. Rules:
 *
 * 1. Files. Page N of journal J is J.NNNNNNNN.journal. A page is created under a hidden temporary
 *    name with O_EXCL, allocated with posix_fallocate, given its header with pwrite and only then
 *    linked to its final name (link(2) never replaces a file), so a page that exists is complete.
 *    Page files are opened with O_NOFOLLOW | O_NONBLOCK and must be regular files.
 * 2. Publication. A frame is published by one memory_order_release store of its commit word, after
 *    the payload, the header, the time-index slot and first_nano (mmipc_frame.h). Readers load the
 *    commit word with memory_order_acquire. This holds on weakly ordered CPUs too.
 * 3. Page switch, in this order: open (or create) page N+1 and store its first_seq; store last_nano
 *    in page N; commit page N's end-of-page marker; then drop page N's map a slice per time-index
 *    slot of page N+1 (MADV_DONTNEED), so that the switch never pays a full-page munmap.
 * 4. Resume. A writer resumes after the last committed frame; it first clears the time-index slots
 *    at or past that offset, resets first_nano on a page with no frame, and zeroes every non-zero
 *    byte to the end of the page, so no stale byte can pass for a commit word.
 * 5. Timestamps never decrease within a journal: the clock (CLOCK_MONOTONIC anchored once to
 *    CLOCK_REALTIME) is clamped to the journal's last timestamp.
 * 6. Errors are return codes plus a thread-local message; nothing here aborts or prints.
 */
#define _GNU_SOURCE
#include "mmipc.h"
#include "mmipc_bell.h"
#include "mmipc_frame.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <linux/futex.h>
#include <unistd.h>

#define MAX_PAGE_NO 99999999u
#define PROBE_INTERVAL_NS 1000000
#define RETIRE_SLICE (256u * 1024u)
#define ZERO_CHUNK (64u * 1024u)
#define NEVER ((uint64_t)1 << 62)
#define DEFAULT_MODE 0600u
/* Room for "/", a 64-character name and the longest suffix (".NNNNNNNN.PID.NANO.tmp"). */
#define DIR_MAX (PATH_MAX - 256)

/* ---- errors --------------------------------------------------------------------------------- */

static _Thread_local char error_text[1024];

const char *
mmipc_last_error(void)
{
    return error_text;
}

static int
fail(int code, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(error_text, sizeof(error_text), fmt, args);
    va_end(args);
    return code;
}

/* A NULL handle or pointer argument: MMIPC_E_USAGE naming it, where dereferencing it would crash. */
#define MMIPC_NULL(p) __builtin_expect((p) == NULL, 0)

static int
null_arg(const char *function, const char *argument)
{
    return fail(MMIPC_E_USAGE, "%s(): %s is NULL", function, argument);
}

static int
corrupt(const char *path, uint64_t offset, const char *problem)
{
    return fail(MMIPC_E_CORRUPT,
                "corrupt journal page %s at offset %llu: %s; run `mmipc check` on the journal, "
                "and move the damaged page aside to read past it",
                path, (unsigned long long)offset, problem);
}

static int
storage(int err, const char *what, const char *path)
{
    if (err == ENOSPC || err == EFBIG || err == EDQUOT) {
        return fail(MMIPC_E_DISK_FULL,
                    "%s %s: %s. The disk (or file-size limit, or quota) is full; every frame "
                    "already written is intact. Free space and write again.",
                    what, path, strerror(err));
    }
    return fail(MMIPC_E_STORAGE, "%s %s: %s", what, path, strerror(err));
}

/* ---- CRC-32 and the clock ------------------------------------------------------------------- */

uint32_t mmipc_crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void
build_crc_table(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        mmipc_crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t prev = mmipc_crc_table[t - 1][i];
            mmipc_crc_table[t][i] = mmipc_crc_table[0][prev & 0xFFu] ^ (prev >> 8);
        }
    }
}

void
mmipc_crc32_init(void)
{
    pthread_once(&crc_once, build_crc_table);
}

uint32_t
mmipc_crc32(uint32_t crc, const void *data, size_t n)
{
    mmipc_crc32_init();
    return mmipc_crc32_update(crc, data, n);
}

static int64_t clock_offset;
static pthread_once_t clock_once = PTHREAD_ONCE_INIT;
static _Atomic int clock_anchored;  /* 1 once clock_offset is set: every later call skips the once */

static int64_t
clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
anchor_clock(void)
{
    clock_offset = clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC);
    atomic_store_explicit(&clock_anchored, 1, memory_order_release);
}

/* The writer's clock, once per frame: an acquire load (a plain load on x86) instead of a call to
 * pthread_once at every frame; the once still decides between threads that race to anchor it. */
int64_t
mmipc_now(void)
{
    if (__builtin_expect(!atomic_load_explicit(&clock_anchored, memory_order_acquire), 0)) {
        pthread_once(&clock_once, anchor_clock);
    }
    return clock_ns(CLOCK_MONOTONIC) + clock_offset;
}

/* ---- names and paths ------------------------------------------------------------------------ */

static int
valid_name_char(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
           || ch == '_' || ch == '-' || ch == '.';
}

static int
check_name(const char *name, const char *what)
{
    size_t n = name ? strlen(name) : 0;
    int ok = n >= 1 && n <= MMIPC_NAME_FIELD_SIZE && name[0] != '.';
    for (size_t i = 0; ok && i < n; i++) {
        ok = valid_name_char(name[i]);
    }
    if (!ok) {
        return fail(MMIPC_E_USAGE,
                    "invalid %s name '%s': use 1 to 64 letters, digits, '_', '-' or '.', "
                    "not starting with '.'",
                    what, name ? name : "(null)");
    }
    return MMIPC_OK;
}

static int
check_directory(const char *directory)
{
    if (directory == NULL || directory[0] == '\0' || strlen(directory) >= DIR_MAX) {
        return fail(MMIPC_E_USAGE, "journal directory must be a non-empty path shorter than %d",
                    DIR_MAX);
    }
    return MMIPC_OK;
}

static void
page_path(char *out, const char *directory, const char *name, uint64_t page_no)
{
    snprintf(out, PATH_MAX, "%s/%s.%08llu.journal", directory, name, (unsigned long long)page_no);
}

/* Parse "NAME.NNNNNNNN.journal" (or, with tmp, ".NAME.NNNNNNNN.PID.NANO.tmp"). */
static int
all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }
    return n > 0;
}

static int
parse_page_name(const char *entry, const char *name, uint64_t *page_no)
{
    size_t n = strlen(name);
    if (strncmp(entry, name, n) != 0 || entry[n] != '.' || !all_digits(entry + n + 1, 8)
        || strcmp(entry + n + 9, ".journal") != 0) {
        return 0;
    }
    *page_no = strtoull(entry + n + 1, NULL, 10);
    return 1;
}

static int
is_stale_temporary(const char *entry, const char *name)
{
    size_t n = strlen(name);
    if (entry[0] != '.' || strncmp(entry + 1, name, n) != 0 || entry[n + 1] != '.'
        || !all_digits(entry + n + 2, 8) || entry[n + 10] != '.') {
        return 0;
    }
    const char *p = entry + n + 11;
    for (int field = 0; field < 2; field++) {
        size_t digits = strspn(p, "0123456789");
        if (digits == 0 || p[digits] != '.') {
            return 0;
        }
        p += digits + 1;
    }
    return strcmp(p, "tmp") == 0;
}

static int
compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The page numbers of a journal, ascending, in a malloc'ed array (*count may be 0). */
static int
list_pages(const char *directory, const char *name, uint64_t **pages, size_t *count)
{
    *pages = NULL;
    *count = 0;
    DIR *dir = opendir(directory);
    if (dir == NULL) {
        return errno == ENOENT ? MMIPC_OK : storage(errno, "cannot list journal directory", directory);
    }
    size_t cap = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        uint64_t page_no;
        if (!parse_page_name(entry->d_name, name, &page_no)) {
            continue;
        }
        if (*count == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *grown = realloc(*pages, cap * sizeof(uint64_t));
            if (grown == NULL) {
                closedir(dir);
                free(*pages);
                *pages = NULL;
                return fail(MMIPC_E_NOMEM, "out of memory listing %s", directory);
            }
            *pages = grown;
        }
        (*pages)[(*count)++] = page_no;
    }
    closedir(dir);
    if (*count > 1) {
        qsort(*pages, *count, sizeof(uint64_t), compare_u64);
    }
    return MMIPC_OK;
}

static void
remove_stale_temporaries(const char *directory, const char *name)
{
    DIR *dir = opendir(directory);
    if (dir == NULL) {
        return;
    }
    char path[PATH_MAX];
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (is_stale_temporary(entry->d_name, name)) {
            snprintf(path, sizeof(path), "%s/%s", directory, entry->d_name);
            unlink(path);
        }
    }
    closedir(dir);
}

/* A journal directory made here gets exactly the search bits of the files' mode (0700, 0750 or
 * 0755), whatever the umask, as _files.make_journal_directory does; an existing one is left alone,
 * and its missing parents get mkdir's 0777 less the umask, as Python's os.makedirs gives them. */
static int
make_leaf_directory(const char *path, unsigned int mode)
{
    if (mkdir(path, 0700) != 0) {
        return errno == EEXIST ? MMIPC_OK : storage(errno, "cannot create journal directory", path);
    }
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int err = fd < 0 ? errno : fchmod(fd, mode | (mode & 0444u) >> 2) == 0 ? 0 : errno;
    if (fd >= 0) {
        close(fd);
    }
    return err ? storage(err, "cannot set the mode of journal directory", path) : MMIPC_OK;
}

static int
make_directories(const char *directory, unsigned int mode)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s", directory);
    for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--) {
        path[n - 1] = '\0';  /* "/data/md/" is the leaf "/data/md" */
    }
    for (char *p = path + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (saved == '\0') {
                return make_leaf_directory(path, mode);
            }
            if (mkdir(path, 0777) != 0 && errno != EEXIST) {
                return storage(errno, "cannot create journal directory", path);
            }
            *p = saved;
        }
    }
}

/* ---- page headers --------------------------------------------------------------------------- */

typedef struct {
    uint32_t version;
    uint32_t flags;
    uint64_t page_size;
    uint64_t page_no;
    int64_t first_nano;
    uint64_t first_seq;
} header_info_t;

static uint64_t
get_u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void
put_u64(unsigned char *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static void
encode_header(unsigned char *buf, const char *name, uint64_t page_no, uint64_t page_size,
              uint32_t flags, uint64_t first_seq)
{
    uint16_t version = 2;
    uint16_t header_size = MMIPC_PAGE_HEADER_SIZE;
    memset(buf, 0, MMIPC_PAGE_HEADER_SIZE);
    memcpy(buf, MMIPC_MAGIC, 8);
    memcpy(buf + MMIPC_OFF_VERSION, &version, 2);
    memcpy(buf + MMIPC_OFF_HEADER_SIZE, &header_size, 2);
    memcpy(buf + MMIPC_OFF_FLAGS, &flags, 4);
    put_u64(buf + MMIPC_OFF_PAGE_SIZE, page_size);
    put_u64(buf + MMIPC_OFF_PAGE_NO, page_no);
    put_u64(buf + MMIPC_OFF_CREATED_NANO, (uint64_t)mmipc_now());
    memcpy(buf + MMIPC_OFF_NAME, name, strlen(name));
    put_u64(buf + MMIPC_OFF_FIRST_SEQ, first_seq);
}

/* Validate a page header (docs/format.md, "What readers check"); the name is checked by the
 * caller against the journal it expects. */
static int
decode_header(const unsigned char *buf, const char *path, header_info_t *out)
{
    uint16_t version;
    uint16_t header_size;
    if (memcmp(buf, MMIPC_MAGIC, 8) != 0) {
        return corrupt(path, 0, "bad magic, not an mmipc page");
    }
    memcpy(&version, buf + MMIPC_OFF_VERSION, 2);
    memcpy(&header_size, buf + MMIPC_OFF_HEADER_SIZE, 2);
    memcpy(&out->flags, buf + MMIPC_OFF_FLAGS, 4);
    out->page_size = get_u64(buf + MMIPC_OFF_PAGE_SIZE);
    out->page_no = get_u64(buf + MMIPC_OFF_PAGE_NO);
    out->first_nano = (int64_t)get_u64(buf + MMIPC_OFF_FIRST_NANO);
    out->version = version;
    if (version != 1 && version != 2) {
        char problem[96];
        snprintf(problem, sizeof(problem),
                 "format version %u is not supported (this mmipc reads 1 and 2)", version);
        return corrupt(path, MMIPC_OFF_VERSION, problem);
    }
    if (header_size != MMIPC_PAGE_HEADER_SIZE) {
        return corrupt(path, MMIPC_OFF_HEADER_SIZE, "header size is not 4096");
    }
    if (out->page_size < MMIPC_MIN_PAGE_SIZE || out->page_size > MMIPC_MAX_PAGE_SIZE
        || out->page_size % MMIPC_PAGE_SIZE_MULTIPLE) {
        return corrupt(path, MMIPC_OFF_PAGE_SIZE, "page size is out of range");
    }
    for (unsigned int i = 0; i < MMIPC_NAME_FIELD_SIZE; i++) {
        if (buf[MMIPC_OFF_NAME + i] >= 0x80) {
            return corrupt(path, MMIPC_OFF_NAME, "journal name is not ASCII");
        }
    }
    if (version == 1) {
        out->flags = 0;  /* reserved in v1 */
        out->first_seq = 0;
    }
    else {
        if (out->flags & ~MMIPC_FLAG_CHECKSUMS) {
            return corrupt(path, MMIPC_OFF_FLAGS, "unknown page flags (written by a newer mmipc?)");
        }
        out->first_seq = get_u64(buf + MMIPC_OFF_FIRST_SEQ);
    }
    return MMIPC_OK;
}

static int
header_names(const unsigned char *buf, const char *name)
{
    size_t n = strlen(name);
    if (memcmp(buf + MMIPC_OFF_NAME, name, n) != 0) {
        return 0;
    }
    for (size_t i = n; i < MMIPC_NAME_FIELD_SIZE; i++) {
        if (buf[MMIPC_OFF_NAME + i] != 0) {
            return 0;
        }
    }
    return 1;
}

/* ---- page files ----------------------------------------------------------------------------- */

typedef struct {
    unsigned char *base;  /* NULL when nothing is mapped */
    uint64_t size;
    uint64_t page_no;
    header_info_t info;
    char path[PATH_MAX];
} page_t;

#define NOT_FOUND 1  /* internal: the page file does not exist (yet) */

static int
open_page_file(const char *path, int writable, int *fd)
{
    *fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (*fd >= 0) {
        return MMIPC_OK;
    }
    if (errno == ENOENT) {
        return NOT_FOUND;
    }
    if (errno == ELOOP) {
        return corrupt(path, 0,
                       "the page is a symbolic link; mmipc does not follow links to pages "
                       "(link the journal's directory instead)");
    }
    return storage(errno, "cannot open page", path);
}

/* Read and validate the header of an open page file; *size is the file's size. */
static int
read_header(int fd, const char *path, unsigned char *buf, header_info_t *info, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return storage(errno, "cannot stat page", path);
    }
    if (!S_ISREG(st.st_mode)) {
        return corrupt(path, 0, "not a regular file");
    }
    if (st.st_size < (off_t)MMIPC_PAGE_HEADER_SIZE) {
        return corrupt(path, (uint64_t)st.st_size, "file is shorter than a page header (truncated)");
    }
    if (pread(fd, buf, MMIPC_PAGE_HEADER_SIZE, 0) != (ssize_t)MMIPC_PAGE_HEADER_SIZE) {
        return storage(errno ? errno : EIO, "cannot read page", path);
    }
    *size = (uint64_t)st.st_size;
    return decode_header(buf, path, info);
}

/* Map page `page_no` of journal `name`: MMIPC_OK, NOT_FOUND, or an error. */
static int
map_page(page_t *page, const char *directory, const char *name, uint64_t page_no, int writable)
{
    unsigned char header[MMIPC_PAGE_HEADER_SIZE];
    int fd;
    uint64_t size;
    page_path(page->path, directory, name, page_no);
    int rc = open_page_file(page->path, writable, &fd);
    if (rc != MMIPC_OK) {
        return rc;
    }
    rc = read_header(fd, page->path, header, &page->info, &size);
    if (rc == MMIPC_OK && size != page->info.page_size) {
        rc = corrupt(page->path, size, "file size disagrees with its header's page size (truncated)");
    }
    if (rc == MMIPC_OK && (page->info.page_no != page_no || !header_names(header, name))) {
        rc = corrupt(page->path, MMIPC_OFF_PAGE_NO, "header names another page or journal");
    }
    if (rc == MMIPC_OK) {
        int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
        void *base = mmap(NULL, size, prot, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED) {
            rc = storage(errno, "cannot map page", page->path);
        }
        else {
            page->base = base;
            page->size = size;
            page->page_no = page_no;
        }
    }
    close(fd);
    return rc;
}

static void
unmap_page(page_t *page)
{
    if (page->base != NULL) {
        munmap(page->base, page->size);
        page->base = NULL;
    }
}

static int may_grow_to(size_t size);

static int
fill_page(const char *tmp, const unsigned char *header, uint64_t page_size, unsigned int mode)
{
    if (!may_grow_to((size_t)page_size)) {
        return EFBIG;  /* posix_fallocate past RLIMIT_FSIZE raises SIGXFSZ: it kills a C program */
    }
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        return errno;
    }
    int err = fchmod(fd, mode) == 0 ? 0 : errno;  /* exactly the mode, whatever the umask */
    if (err == 0) {
        err = posix_fallocate(fd, 0, (off_t)page_size);
    }
    if (err == 0 && pwrite(fd, header, MMIPC_PAGE_HEADER_SIZE, 0) != (ssize_t)MMIPC_PAGE_HEADER_SIZE) {
        err = errno ? errno : EIO;
    }
    close(fd);
    return err;
}

/* Create page `page_no` (v2, with `flags` and `first_seq`) unless it exists. */
static int
create_page(const char *directory, const char *name, uint64_t page_no, uint64_t page_size,
            uint32_t flags, uint64_t first_seq, unsigned int mode)
{
    char final[PATH_MAX];
    char tmp[PATH_MAX];
    struct stat st;
    if (page_no > MAX_PAGE_NO) {
        return fail(MMIPC_E_STORAGE, "journal %s in %s has used all %u page numbers", name,
                    directory, MAX_PAGE_NO);
    }
    page_path(final, directory, name, page_no);
    if (lstat(final, &st) == 0) {
        return MMIPC_OK;
    }
    unsigned char header[MMIPC_PAGE_HEADER_SIZE];
    encode_header(header, name, page_no, page_size, flags, first_seq);
    snprintf(tmp, sizeof(tmp), "%s/.%s.%08llu.%ld.%lld.tmp", directory, name,
             (unsigned long long)page_no, (long)getpid(), (long long)mmipc_now());
    int err = fill_page(tmp, header, page_size, mode);
    if (err == 0 && link(tmp, final) != 0 && errno != EEXIST) {
        err = errno;
    }
    unlink(tmp);
    return err ? storage(err, "cannot create page", final) : MMIPC_OK;
}

/* ---- walking a page's frames ---------------------------------------------------------------- */

typedef struct {
    uint64_t offset;
    uint32_t length;
    uint32_t msg_type;
    int64_t nano;
    uint32_t seq;
} walked_t;

/* The committed frame at `offset` (1), none (0), or an error: decode_frame + check_frame. */
static int
decode_frame(const page_t *page, uint64_t offset, walked_t *out)
{
    if (offset + MMIPC_FRAME_HEADER_SIZE > page->size || offset % 8) {
        return corrupt(page->path, offset, "frame offset lies outside the page");
    }
    uint32_t length = mmipc_load_commit(page->base, offset);
    if (length == 0) {
        return 0;
    }
    const mmipc_frame_header_t *h = mmipc_frame_at(page->base, offset);
    if (length != (uint64_t)h->payload_len + MMIPC_FRAME_HEADER_SIZE) {
        return corrupt(page->path, offset, "frame length disagrees with payload length");
    }
    if (h->msg_type == MMIPC_MSG_PAGE_END) {
        if (h->payload_len) {
            return corrupt(page->path, offset, "end-of-page marker carries a payload");
        }
    }
    else if (offset + mmipc_align8(length) + MMIPC_PAGE_END_RESERVE > page->size) {
        return corrupt(page->path, offset, "frame length runs past the page end");
    }
    out->offset = offset;
    out->length = length;
    out->msg_type = h->msg_type;
    out->nano = h->nano;
    out->seq = h->seq;
    return 1;
}

static uint32_t
filled_slots(const page_t *page)
{
    uint32_t n = 0;
    while (n < MMIPC_INDEX_SLOTS && mmipc_load_slot(page->base, n) != 0) {
        n++;
    }
    return n;
}

/* The frame a time-index slot points at (1), or 0 if it is not (or no longer) committed. The slot
 * is loaded again after the frame: a resuming writer clears stale slots before overwriting. */
static int
slot_frame(const page_t *page, uint32_t index, uint32_t offset, walked_t *out)
{
    if (offset < MMIPC_PAGE_HEADER_SIZE || offset >= page->size) {
        return corrupt(page->path, MMIPC_INDEX_OFFSET + 4u * index, "time index slot is out of range");
    }
    int rc = decode_frame(page, offset, out);
    if (rc <= 0) {
        return rc;
    }
    return mmipc_load_slot(page->base, index) == offset ? 1 : 0;
}

typedef struct {
    uint64_t end;          /* just past the last committed frame */
    int has_last;
    walked_t last;         /* the last committed frame (maybe the end-of-page marker) */
    int has_data;
    walked_t last_data;    /* the last committed data frame */
} tail_t;

static int
walk_from(const page_t *page, uint64_t offset, tail_t *tail)
{
    walked_t f;
    int rc;
    tail->end = offset;
    while ((rc = decode_frame(page, offset, &f)) == 1) {
        tail->has_last = 1;
        tail->last = f;
        tail->end = offset + mmipc_align8(f.length);
        if (f.msg_type == MMIPC_MSG_PAGE_END) {
            return MMIPC_OK;
        }
        tail->has_data = 1;
        tail->last_data = f;
        offset = tail->end;
    }
    return rc;
}

/* The end of what is committed in a page, found from its last live time-index slot. */
static int
page_tail(const page_t *page, tail_t *tail)
{
    uint64_t start = MMIPC_PAGE_HEADER_SIZE;
    walked_t f;
    memset(tail, 0, sizeof(*tail));
    for (uint32_t i = filled_slots(page); i-- > 0;) {
        uint32_t slot = mmipc_load_slot(page->base, i);
        int rc = slot_frame(page, i, slot, &f);
        if (rc < 0) {
            return rc;
        }
        if (rc == 1 && f.msg_type != MMIPC_MSG_PAGE_END) {
            start = slot;
            break;
        }
    }
    int rc = walk_from(page, start, tail);
    if (rc < 0) {
        return rc;
    }
    return MMIPC_OK;
}

/* The sequence number the frame after `tail` gets in this page's numbering. */
static uint64_t
seq_after(const page_t *page, const tail_t *tail)
{
    if (page->info.version < 2) {
        return 0;  /* a journal begun under v1 numbers from 0 at its first v2 page */
    }
    if (!tail->has_data) {
        return page->info.first_seq;
    }
    return (uint64_t)mmipc_full_seq(page->info.first_seq, tail->last_data.seq) + 1u;
}

/* ---- the pretoucher (declared in mmipc_frame.h) ----------------------------------------------
 *
 * Why. A writer's first store into each 4 KiB page of its shared file mapping takes a write fault
 * (page-table entry and page_mkwrite), about 1.6 us, even when the service has put the file in
 * the page cache: MAP_POPULATE maps a shared file read-only (measured here: 8,192 write faults
 * after it for a 32 MiB page, against 2,720 without it), and only MADV_POPULATE_WRITE (Linux
 * 5.14) installs writable entries ahead (0 write faults after it). The entries belong to the
 * writer's own mapping, so the work must be done in the writer's process; a thread does it, as
 * Chronicle Queue's pretoucher does, so that it is off the writer's thread.
 *
 * How. The thread populates [done, want) of the current page in PRETOUCH_CHUNK steps, where want
 * is the writer's position (the offset of the last filled time-index slot's stride end) plus
 * PRETOUCH_AHEAD; it then sleeps PRETOUCH_POLL_NS, longer while the writer does not move. Each
 * madvise runs outside the mutex with
 * `busy` set; mmipc_pretouch_page waits for `busy` to clear, so a page is never touched after it
 * was taken away (its address range may be unmapped and reused right after). EINVAL from madvise
 * (a kernel without MADV_POPULATE_WRITE) ends the thread: the writer faults as it always did. */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define PRETOUCH_AHEAD (4u << 20)
#define PRETOUCH_CHUNK (64u << 10)
#define PRETOUCH_POLL_NS 1000000L      /* the sleep while the writer moves */
#define PRETOUCH_IDLE_MAX_NS 16000000L /* doubled up to this while it does not (4 MiB lasts 20 ms
                                          at 200 MB/s): a process of 64 idle writers wakes 4,000
                                          times a second, not 64,000 */

struct mmipc_pretouch {
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* the thread's sleep; and "busy cleared" for a waiting writer */
    pthread_t thread;
    pid_t pid;                   /* the process whose thread this is */
    int stop;
    int busy;                    /* a madvise of `base` is running outside the mutex */
    int unsupported;             /* the kernel refused MADV_POPULATE_WRITE */
    unsigned char *base;         /* the page to keep ahead in, or NULL */
    uint64_t size;
    uint64_t stride;
    uint64_t done;               /* populated up to here */
    uint32_t slots;              /* time-index slots seen filled */
    _Atomic uint64_t total;      /* bytes populated so far, all pages (for tests) */
};

/* Where to populate up to: the end of the stride the writer is in, plus PRETOUCH_AHEAD. */
static uint64_t
pretouch_want(mmipc_pretouch *pt)
{
    while (pt->slots < MMIPC_INDEX_SLOTS
           && atomic_load_explicit(mmipc_slot_word(pt->base, pt->slots), memory_order_relaxed) != 0) {
        pt->slots++;
    }
    uint64_t want = MMIPC_PAGE_HEADER_SIZE + (uint64_t)pt->slots * pt->stride + PRETOUCH_AHEAD;
    want = (want + 4095u) & ~(uint64_t)4095u;  /* madvise takes whole pages (sizes are multiples) */
    return want < pt->size ? want : pt->size;
}

static void
pretouch_sleep(mmipc_pretouch *pt, long ns)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += ns;
    while (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&pt->cv, &pt->mu, &until);
}

static void *
pretouch_run(void *arg)
{
    mmipc_pretouch *pt = arg;
    long nap = PRETOUCH_POLL_NS;
    pthread_mutex_lock(&pt->mu);
    while (!pt->stop && !pt->unsupported) {
        uint64_t want = pt->base != NULL ? pretouch_want(pt) : 0;
        if (pt->base == NULL || pt->done >= want) {
            pretouch_sleep(pt, nap);
            nap = nap * 2 < PRETOUCH_IDLE_MAX_NS ? nap * 2 : PRETOUCH_IDLE_MAX_NS;
            continue;
        }
        nap = PRETOUCH_POLL_NS;
        unsigned char *base = pt->base;
        uint64_t from = pt->done;
        uint64_t to = want - from > PRETOUCH_CHUNK ? from + PRETOUCH_CHUNK : want;
        pt->busy = 1;
        pthread_mutex_unlock(&pt->mu);
        int rc = madvise(base + from, to - from, MADV_POPULATE_WRITE);
        int err = errno;
        pthread_mutex_lock(&pt->mu);
        pt->busy = 0;
        pthread_cond_broadcast(&pt->cv);
        if (rc != 0 && err == EINVAL) {
            pt->unsupported = 1;
        }
        else if (pt->base == base) {
            /* any other failure (EFAULT, ENOMEM, EIO): the writer meets it itself, as it would */
            pt->done = rc == 0 || (err != EINTR && err != EAGAIN) ? to : pt->done;
            atomic_fetch_add_explicit(&pt->total, rc == 0 ? to - from : 0, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&pt->mu);
    return NULL;
}

/* Parse a CPU list ("0-3,6", as the kernel prints them, a newline at most at its end) into `set`:
 * 0, or -1 if it is not one (_writer.check_pretouch_cpus takes exactly the same texts). */
static int
parse_cpulist(const char *text, cpu_set_t *set)
{
    CPU_ZERO(set);
    const char *p = text;
    for (;;) {
        char *end;
        if (*p < '0' || *p > '9') {
            return -1;  /* strtoul would take spaces and signs */
        }
        unsigned long first = strtoul(p, &end, 10), last = first;
        p = end;
        if (*p == '-') {
            if (p[1] < '0' || p[1] > '9') {
                return -1;
            }
            last = strtoul(p + 1, &end, 10);
            p = end;
        }
        if (last < first || last >= CPU_SETSIZE) {
            return -1;
        }
        for (unsigned long cpu = first; cpu <= last; cpu++) {
            CPU_SET(cpu, set);
        }
        if (*p != ',') {
            return *p == '\0' || strcmp(p, "\n") == 0 ? 0 : -1;
        }
        p++;
    }
}

/* Where the pretoucher runs: where MMIPC_PRETOUCH_CPUS (a CPU list) says, if it names a CPU the
 * process may use; else where the thread that starts it (the writer's) may run, as any thread
 * it made would. Its madvise calls are the page faults it saves the writer: on a CPU shared with
 * the writer they take the writer's time slices, on one shared with a spinning reader the
 * reader's. Which is better depends on what else runs where, so the user chooses (a housekeeping
 * CPU, with isolcpus=). Measured on 2 CPUs in docs/benchmarks.md (ninth run): moved to the
 * reader's CPU, 408 B throughput +3-21%, 64 B -9%, and the reader's p99 at 408 B 4 -> 27 us. */
static void
pretouch_place(pthread_t thread)
{
    cpu_set_t want;
    const char *env = getenv("MMIPC_PRETOUCH_CPUS");
    if (env != NULL && *env != '\0' && parse_cpulist(env, &want) == 0) {
        pthread_setaffinity_np(thread, sizeof(want), &want);  /* EINVAL: none is ours; it stays */
    }
}

mmipc_pretouch *
mmipc_pretouch_start(void)
{
    const char *env = getenv("MMIPC_PRETOUCH");
    if (env != NULL && strcmp(env, "0") == 0) {
        return NULL;
    }
    mmipc_pretouch *pt = calloc(1, sizeof(*pt));
    if (pt == NULL) {
        return NULL;
    }
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&pt->mu, NULL);
    pthread_cond_init(&pt->cv, &attr);
    pthread_condattr_destroy(&attr);
    pt->pid = getpid();
    sigset_t all, old;
    sigfillset(&all);  /* the thread takes no signal: the process's handlers stay on its threads */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t thread_attr;
    pthread_attr_init(&thread_attr);
    pthread_attr_setstacksize(&thread_attr, 64u << 10);  /* it calls madvise and little else */
    int rc = pthread_create(&pt->thread, &thread_attr, pretouch_run, pt);
    pthread_attr_destroy(&thread_attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_cond_destroy(&pt->cv);
        pthread_mutex_destroy(&pt->mu);
        free(pt);
        return NULL;
    }
    pthread_setname_np(pt->thread, "mmipc-pretouch");
    pretouch_place(pt->thread);
    return pt;
}

void
mmipc_pretouch_page(mmipc_pretouch *pt, unsigned char *base, uint64_t size)
{
    if (pt == NULL || pt->pid != getpid()) {
        return;
    }
    pthread_mutex_lock(&pt->mu);
    while (pt->busy) {
        pthread_cond_wait(&pt->cv, &pt->mu);
    }
    pt->base = base;
    pt->size = size;
    pt->stride = base != NULL ? mmipc_index_stride(size) : 0;
    pt->done = 0;
    pt->slots = 0;
    pthread_cond_broadcast(&pt->cv);
    pthread_mutex_unlock(&pt->mu);
}

uint64_t
mmipc_pretouch_total(mmipc_pretouch *pt)
{
    return pt != NULL ? atomic_load_explicit(&pt->total, memory_order_relaxed) : 0;
}

int
mmipc_pretouch_unsupported(mmipc_pretouch *pt)
{
    if (pt == NULL) {
        return 0;
    }
    pthread_mutex_lock(&pt->mu);
    int unsupported = pt->unsupported;
    pthread_mutex_unlock(&pt->mu);
    return unsupported;
}

void
mmipc_pretouch_stop(mmipc_pretouch *pt)
{
    if (pt == NULL || pt->pid != getpid()) {
        return;  /* a forked child: the thread and its mutex's owner are the parent's; leave them */
    }
    pthread_mutex_lock(&pt->mu);
    pt->stop = 1;
    pthread_cond_broadcast(&pt->cv);
    pthread_mutex_unlock(&pt->mu);
    pthread_join(pt->thread, NULL);
    pthread_cond_destroy(&pt->cv);
    pthread_mutex_destroy(&pt->mu);
    free(pt);
}

/* ---- the writer ----------------------------------------------------------------------------- */

struct mmipc_writer {
    mmipc_write_state_t st;      /* the hot path's state (mmipc_frame.h) */
    page_t page;                 /* the current page */
    page_t retiring;             /* the previous page, unmapped a slice per slot */
    uint64_t retired_upto;
    uint64_t stride;
    uint32_t slot_index;
    uint64_t new_page_size;
    uint32_t new_flags;
    unsigned int mode;
    int lock_fd;
    int claim_open;
    uint64_t claim_pos;
    uint32_t claim_len;
    mmipc_pretouch *pretouch;    /* pages populated ahead of pos, or NULL */
    char directory[DIR_MAX];
    char name[MMIPC_NAME_FIELD_SIZE + 1];
    mmipc_ringer *ringer;        /* NAME.bells, or NULL (docs/format.md, "Doorbells") */
    _Atomic uint32_t *bell_count; /* its count word, or MMIPC_NO_BELLS (never NULL) */
};

/* ---- doorbells: a writer rings the bells its readers listed in NAME.bells ------------------- */

#define BELLS_V1_SIZE (64u + 256u * 64u)  /* format 1: no needy bytes (an older reader made it) */
#define BELLS_NEEDY BELLS_V1_SIZE           /* format 2: one needy byte per slot, one cache line */
#define BELLS_SIZE (BELLS_NEEDY + 64u)
#define SLOT_PROTOCOL_2 2u                  /* a slot's state: its reader keeps its needy byte */
#define BELL_FILE_SIZE 8192u
#define BELL_MAX_FLAGS (BELL_FILE_SIZE - 64u)

struct mmipc_ringer {
    unsigned char *list;         /* NAME.bells, mapped read-write; NULL: not yet (ringer_map_late) */
    size_t list_size;            /* BELLS_SIZE, or BELLS_V1_SIZE (a late ringer's older list) */
    int legacy;                  /* a slot of an older reader, or no needy bytes: ring in full */
    uint32_t top;                /* 1 + the highest slot cached: the needy bytes to look at */
    _Atomic uint32_t late;       /* 1: the writer's count pointer is this, not the list's count */
    uint64_t retry_at;           /* CLOCK_MONOTONIC ns of the next try to map the list */
    char list_path[DIR_MAX + MMIPC_NAME_FIELD_SIZE + 16];
    uint32_t version;            /* of the cached targets; odd: none cached */
    int n;
    struct {
        unsigned char *bell;
        _Atomic unsigned char *flag;  /* bell + 64 + the journal's flag index */
        _Atomic unsigned char *needy; /* the slot's needy byte in the list, or NULL (legacy) */
        char path[241];
    } targets[64];
};

/* Whether this process may make a file `size` bytes long: past RLIMIT_FSIZE, ftruncate raises
 * SIGXFSZ, which kills a C program that does not ignore it. */
static int
may_grow_to(size_t size)
{
    struct rlimit limit;
    return getrlimit(RLIMIT_FSIZE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY
           || limit.rlim_cur >= (rlim_t)size;
}

/* NAME.bells' mode: its journal's (its lock file's, NAME.lock beside it: the writer's mode) with
 * write wherever read is granted: whoever may read the journal may register a bell, nobody else
 * (0600 -> 0600, 0640 -> 0660, 0644 -> 0666), and its group in *gid. *known 0: no lock file, 0600
 * (_bell.list_mode). */
static mode_t
list_mode(const char *path, int *known, gid_t *gid)
{
    char lock[DIR_MAX + MMIPC_NAME_FIELD_SIZE + 16];
    size_t n = strlen(path);
    struct stat st;
    *known = 0;
    if (n < 6 || n >= sizeof(lock) || strcmp(path + n - 6, ".bells") != 0) {
        return 0600;
    }
    memcpy(lock, path, n - 6);
    memcpy(lock + n - 6, ".lock", 6);
    if (lstat(lock, &st) != 0 || !S_ISREG(st.st_mode)) {
        return 0600;
    }
    *known = 1;
    *gid = st.st_gid;
    mode_t mode = (st.st_mode & 0644) | 0600;
    return mode | (mode & 0044) >> 1;
}

/* Open NAME.bells, made if missing with exactly list_mode's mode and its journal's group (whose
 * members may register, mode 0640); an existing one of ours whose journal's mode is known gets
 * that mode (an older version made it 0666 less the umask). */
static int
open_list(const char *path)
{
    int known;
    gid_t gid = (gid_t)-1;
    mode_t mode = list_mode(path, &known, &gid);
    const int flags = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
    int fd = open(path, flags | O_CREAT | O_EXCL, mode);
    struct stat st;
    if (fd >= 0) {
        (void)fchmod(fd, mode); /* exactly, whatever the umask */
        if (known && fstat(fd, &st) == 0 && st.st_gid != gid) {
            (void)fchown(fd, (uid_t)-1, gid); /* as _bell._set_mode; refused: the group stays */
        }
        return fd;
    }
    fd = errno == EEXIST ? open(path, flags) : -1;
    if (fd >= 0 && known && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1
        && st.st_uid == geteuid() && (st.st_mode & 07777) != mode) {
        (void)fchmod(fd, mode);
    }
    return fd;
}

/* Map `path` read-write. `create` 1: make it, or grow it to `size` (NAME.bells, by its writer),
 * never past RLIMIT_FSIZE; 2: an existing NAME.bells of exactly `size` bytes (a late ringer's).
 * 0: a bell named in a list others may edit: only a file named mmipc-bell.* of exactly `size`
 * bytes is mapped, never resized. Only ever a regular file with one link: a hard link to another
 * file of the user, planted under the name, would be written into (Python logs the refusal). */
static void *
map_shared(const char *path, size_t size, int create)
{
    const char *base = strrchr(path, '/');
    if (create == 0 && strncmp(base ? base + 1 : path, "mmipc-bell.", 11) != 0) {
        return NULL;
    }
    int fd = create == 1 ? open_list(path) : open(path, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        return NULL;
    }
    struct stat st;
    void *p = MAP_FAILED;
    /* create 1: its blocks allocated (posix_fallocate also grows it): a store into a hole of a
     * sparse file on a full disk is a SIGBUS, so a file that cannot be allocated is not mapped. */
    int ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1
             && (create == 1 ? (st.st_size >= (off_t)size || may_grow_to(size))
                                   && posix_fallocate(fd, 0, (off_t)size) == 0
                             : st.st_size == (off_t)size);
    if (ok) {
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

static _Atomic uint32_t *
u32_at(unsigned char *base, size_t offset)
{
    return (_Atomic uint32_t *)(base + offset);
}

static void
ringer_forget(mmipc_ringer *r)
{
    for (int i = 0; i < r->n; i++) {
        munmap(r->targets[i].bell, BELL_FILE_SIZE);
    }
    r->n = 0;
    r->version = 1;
}

/* Read the slots again, between two loads of the version (odd: a reader is editing the list). */
static void
ringer_reload(mmipc_ringer *r)
{
    ringer_forget(r);
    uint32_t version = atomic_load_explicit(u32_at(r->list, 12), memory_order_acquire);
    uint32_t count = atomic_load_explicit(u32_at(r->list, 8), memory_order_relaxed);
    int has_needy = r->list_size >= BELLS_SIZE;
    r->legacy = !has_needy;
    r->top = count < 64 ? count : 64;
    for (uint32_t slot = 0; slot < count && slot < 64; slot++) {
        unsigned char *s = r->list + 64 + 256u * slot;
        uint32_t index = atomic_load_explicit(u32_at(s, 12), memory_order_relaxed);
        uint32_t state = atomic_load_explicit(u32_at(s, 0), memory_order_relaxed);
        if (!state || index >= BELL_MAX_FLAGS) {
            continue;
        }
        r->legacy |= state != SLOT_PROTOCOL_2;  /* an older reader: it keeps no needy byte */
        char *path = r->targets[r->n].path;
        memcpy(path, s + 16, 240);
        path[240] = 0;
        unsigned char *bell = map_shared(path, BELL_FILE_SIZE, 0);
        if (bell != NULL) {
            r->targets[r->n].bell = bell;
            r->targets[r->n].flag = (_Atomic unsigned char *)(bell + 64 + index);
            r->targets[r->n].needy
                = has_needy ? (_Atomic unsigned char *)(r->list + BELLS_NEEDY + slot) : NULL;
            r->n++;
        }
    }
    atomic_thread_fence(memory_order_acquire);
    uint32_t again = atomic_load_explicit(u32_at(r->list, 12), memory_order_relaxed);
    r->version = (version & 1u) || again != version ? 1u : version;
}

/* A ringer whose NAME.bells could not be made (RLIMIT_FSIZE, a full disk, no permission): its
 * writer's count pointer is `late` (1), so every commit calls the ring, which tries to map the
 * list, made by then by a subscribing reader, at most every LATE_RETRY_NS. 1: mapped, and the
 * list's count is not 0 (the writer keeps calling: one load more per commit than a normal ringer). */
#define LATE_RETRY_NS 100000000ull

static __attribute__((noinline)) int
ringer_map_late(mmipc_ringer *r)
{
    if (r->list == NULL) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        if (now < r->retry_at) {
            return 0;
        }
        r->retry_at = now + LATE_RETRY_NS;
        r->list_size = BELLS_SIZE;
        r->list = map_shared(r->list_path, BELLS_SIZE, 2);
        if (r->list == NULL) {  /* an older reader's list (format 1): rung in full */
            r->list_size = BELLS_V1_SIZE;
            r->list = map_shared(r->list_path, BELLS_V1_SIZE, 2);
        }
        if (r->list == NULL) {
            return 0;
        }
    }
    return atomic_load_explicit(u32_at(r->list, 8), memory_order_relaxed) != 0;
}

/* Wake the reader of target `i` if it sleeps: FUTEX_WAKE (1) or a byte into its FIFO (2, an
 * asyncio reader). The caller stored the flag and `pending` (or found them set), then fenced. */
static void
ringer_wake(mmipc_ringer *r, int i)
{
    _Atomic uint32_t *sleeping_at = u32_at(r->targets[i].bell, 12);
    if (atomic_load_explicit(sleeping_at, memory_order_relaxed) == 0) {
        return;  /* awake: it sees the commit at its next poll */
    }
    uint32_t sleeping = atomic_exchange_explicit(sleeping_at, 0u, memory_order_seq_cst);
    if (sleeping == 1) {
        _Atomic uint32_t *word = u32_at(r->targets[i].bell, 8);
        atomic_fetch_add_explicit(word, 1u, memory_order_seq_cst);
        syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    }
    else if (sleeping == 2) {
        char fifo[256];
        snprintf(fifo, sizeof(fifo), "%s.fifo", r->targets[i].path);
        /* the list names the bell (anyone who may write it may name any path): never a link,
         * never a regular file or a device, only a FIFO gets the byte */
        int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        if (fd >= 0) {
            if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode)) {
                ssize_t ignored = write(fd, "!", 1);
                (void)ignored;
            }
            close(fd);
        }
    }
}

/* Flag the bells whose flag is clear (the flag, then `pending`), fence, and wake every reader
 * that sleeps: the Dekker pair of the flag against the sleeper's exchange of `sleeping`. */
static __attribute__((noinline)) void
ringer_ring_cleared(mmipc_ringer *r)
{
    for (int i = 0; i < r->n; i++) {
        if (!atomic_load_explicit(r->targets[i].flag, memory_order_relaxed)) {
            atomic_store_explicit(r->targets[i].flag, 1, memory_order_relaxed);
            atomic_store_explicit(u32_at(r->targets[i].bell, 16), 1u, memory_order_release);
        }
    }
    mmipc_full_fence();  /* the flags before the loads of `sleeping` */
    for (int i = 0; i < r->n; i++) {
        ringer_wake(r, i);
    }
}

/* Whether a needy byte of a slot below `top` is set (eight at a time: the line is the list's last). */
static int
ringer_any_needy(mmipc_ringer *r)
{
    uint64_t any = 0;
    for (uint32_t i = 0; i < r->top; i += 8) {
        _Atomic uint64_t *eight = (_Atomic uint64_t *)(r->list + BELLS_NEEDY + i);
        any |= atomic_load_explicit(eight, memory_order_relaxed);
    }
    return any != 0;
}

/* After a ring: clear the needy byte of each bell rung whose flag is now set and whose reader is
 * awake, so that the next commit stops at ringer_any_needy. Clear, full fence, look again: a reader
 * that cleared its flag (or announced sleep) before its own store of the byte that this clear
 * overwrote is seen by the look, which sets the byte again (docs/format.md, "Needy bytes"). The
 * bells in `keeping_up` (their flag was clear at this ring: their reader collects every frame) are
 * left needy: it would set the byte again at once, and the clear would cost a fence per commit. */
static __attribute__((noinline)) void
ringer_settle_needy(mmipc_ringer *r, uint64_t keeping_up)
{
    uint64_t cleared = 0;
    for (int i = 0; i < r->n; i++) {
        if (!((keeping_up >> i) & 1u) && atomic_load_explicit(r->targets[i].needy, memory_order_relaxed)) {
            atomic_store_explicit(r->targets[i].needy, 0, memory_order_relaxed);
            cleared |= 1ull << i;
        }
    }
    if (cleared == 0) {
        return;
    }
    mmipc_full_fence();
    for (int i = 0; i < r->n; i++) {
        if (((cleared >> i) & 1u)
            && (!atomic_load_explicit(r->targets[i].flag, memory_order_relaxed)
                || atomic_load_explicit(u32_at(r->targets[i].bell, 12), memory_order_relaxed))) {
            atomic_store_explicit(r->targets[i].needy, 1, memory_order_relaxed);
        }
    }
}

/* Ring every listed bell: a full fence (the commit before every load below), then two loads per
 * bell. A bell whose flag for this journal is still set, and whose reader is awake, needs
 * nothing: the poll that follows its reader's next clear of that flag sees this commit
 * (docs/format.md, "Doorbells", *A ring that stores nothing*). Otherwise the bells whose flag is
 * clear are flagged, a second fence, and every reader asleep is woken. Out of line (cold): a
 * commit with no reader listening pays one load and a test. */
__attribute__((noinline, cold)) void
mmipc_ringer_ring(mmipc_ringer *r)
{
    if (atomic_load_explicit(&r->late, memory_order_relaxed) && !ringer_map_late(r)) {
        return;
    }
    mmipc_full_fence();  /* F: the commit before every load below */
    if (atomic_load_explicit(u32_at(r->list, 12), memory_order_relaxed) != r->version) {
        ringer_reload(r);
    }
    if (!r->legacy && !ringer_any_needy(r)) {
        return;  /* no reader needs a ring: one or two loads of one line, whatever their number */
    }
    uint64_t clear = 0;
    uint32_t asleep = 0;
    for (int i = 0; i < r->n; i++) {  /* no early exit: the loop is a few loads per bell */
        clear |= (uint64_t)!atomic_load_explicit(r->targets[i].flag, memory_order_relaxed) << i;
        asleep |= atomic_load_explicit(u32_at(r->targets[i].bell, 12), memory_order_relaxed);
    }
    if (clear || asleep) {
        ringer_ring_cleared(r);
    }
    if (!r->legacy) {
        ringer_settle_needy(r, clear);
    }
}

mmipc_ringer *
mmipc_ringer_open(const char *path)
{
    mmipc_ringer *r = calloc(1, sizeof(*r));
    if (r == NULL || strlen(path) >= sizeof(r->list_path)) {
        free(r);
        return NULL;
    }
    memcpy(r->list_path, path, strlen(path) + 1);
    r->version = 1;
    r->list_size = BELLS_SIZE;
    r->list = map_shared(path, BELLS_SIZE, 1);
    atomic_store_explicit(&r->late, r->list == NULL, memory_order_relaxed);
    return r;
}

void
mmipc_ringer_close(mmipc_ringer *r)
{
    if (r != NULL) {
        ringer_forget(r);
        if (r->list != NULL) {
            munmap(r->list, r->list_size);
        }
        free(r);
    }
}

_Atomic uint32_t mmipc_no_bells;

_Atomic uint32_t *
mmipc_ringer_count(mmipc_ringer *r)
{
    if (r == NULL) {
        return MMIPC_NO_BELLS;
    }
    return atomic_load_explicit(&r->late, memory_order_relaxed) ? &r->late : u32_at(r->list, 8);
}

/* NAME.bells of this writer's journal (no bells if the OS refuses: readers see it at sweeps). */
static void
ringer_open(mmipc_writer *w)
{
    char path[DIR_MAX + MMIPC_NAME_FIELD_SIZE + 16];
    snprintf(path, sizeof(path), "%s/%s.bells", w->directory, w->name);
    w->ringer = mmipc_ringer_open(path);
    w->bell_count = mmipc_ringer_count(w->ringer);
}

static void
ringer_close(mmipc_writer *w)
{
    mmipc_ringer_close(w->ringer);
    w->ringer = NULL;
    w->bell_count = MMIPC_NO_BELLS;
}

static uint64_t
slot_boundary(const mmipc_writer *w, uint32_t slot)
{
    return mmipc_slot_boundary(slot, w->stride);
}

static uint64_t
retire_slice(uint64_t page_size)
{
    uint64_t per_slot = (page_size + MMIPC_INDEX_SLOTS / 2 - 1) / (MMIPC_INDEX_SLOTS / 2);
    per_slot = (per_slot + 4095u) & ~(uint64_t)4095u;
    return per_slot > RETIRE_SLICE ? per_slot : RETIRE_SLICE;
}

static void
attach(mmipc_writer *w, uint64_t pos, uint32_t kept_slots, uint64_t next_seq)
{
    w->st.page.base = w->page.base;
    w->st.page.page_size = w->page.size;
    w->st.page.version = w->page.info.version;
    w->st.page.flags = w->page.info.flags;
    w->st.page.first_seq = w->page.info.first_seq;
    w->st.pos = pos;
    w->st.limit = w->page.size;
    w->st.next_seq = next_seq;
    w->stride = mmipc_index_stride(w->page.size);
    w->slot_index = kept_slots;
    w->st.slot_boundary = slot_boundary(w, kept_slots);
    mmipc_pretouch_page(w->pretouch, w->page.base, w->page.size);
}

static int
page_is_zero(const unsigned char *p, size_t n)
{
    static const unsigned char zeros[ZERO_CHUNK];
    return memcmp(p, zeros, n) == 0;
}

/* Rule 4: clear what a crashed writer may have left past `pos`, then write from `pos`. */
static void
resume(mmipc_writer *w, uint64_t pos, uint64_t next_seq)
{
    unsigned char *base = w->page.base;
    uint32_t filled = filled_slots(&w->page);
    uint32_t kept = 0;
    while (kept < filled && mmipc_load_slot(base, kept) < pos) {
        kept++;
    }
    for (uint32_t i = kept; i < filled; i++) {
        mmipc_store_slot(base, i, 0);
    }
    if (pos == MMIPC_PAGE_HEADER_SIZE) {
        atomic_store_explicit(mmipc_header_nano(base, MMIPC_OFF_FIRST_NANO), 0, memory_order_relaxed);
    }
    for (uint64_t start = pos; start < w->page.size; start += ZERO_CHUNK) {
        uint64_t n = w->page.size - start < ZERO_CHUNK ? w->page.size - start : ZERO_CHUNK;
        if (!page_is_zero(base + start, n)) {
            memset(base + start, 0, n);
        }
    }
    attach(w, pos, kept, next_seq);
}

/* Open (or create with exactly w->mode) the lock file as _files.open_own_file does: never through
 * a symbolic link, never blocking on a FIFO, only a regular file owned by this user (a lock file
 * planted by another user of the directory is refused and left untouched). */
static int
open_own_lock(mmipc_writer *w, const char *path, int *out)
{
    const int flags = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
    int fd;
    while ((fd = open(path, flags)) < 0 && errno == ENOENT) {
        fd = open(path, flags | O_CREAT | O_EXCL, w->mode);
        if (fd >= 0) {
            if (fchmod(fd, w->mode) != 0) {  /* exactly the mode, whatever the umask */
                int err = errno;
                close(fd);
                return storage(err, "cannot set the mode of lock file", path);
            }
            break;
        }
        if (errno != EEXIST) {  /* EEXIST: another process created it in between; open that */
            break;
        }
    }
    if (fd < 0) {
        return errno == ELOOP || errno == ENXIO
                   ? fail(MMIPC_E_STORAGE, "refusing lock file %s: it is a symbolic link or a "
                                           "special file", path)
                   : storage(errno, "cannot open lock file", path);
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(MMIPC_E_STORAGE, "refusing lock file %s: it is not a regular file", path);
    }
    if (st.st_uid != geteuid()) {
        close(fd);
        return fail(MMIPC_E_STORAGE,
                    "refusing lock file %s: it is owned by uid %ld, not by this user (uid %ld); "
                    "someone else can write that directory: remove the file, and keep journal "
                    "directories writable by their writer's user only",
                    path, (long)st.st_uid, (long)geteuid());
    }
    *out = fd;
    return MMIPC_OK;
}

static int
take_lock(mmipc_writer *w)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s.lock", w->directory, w->name);
    int fd = -1;
    int rc = open_own_lock(w, path, &fd);
    if (rc != MMIPC_OK) {
        return rc;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char holder[32] = "";
        ssize_t got = pread(fd, holder, sizeof(holder) - 1, 0);
        holder[got > 0 ? got : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(fd);
        return fail(MMIPC_E_LOCKED,
                    "journal %s in %s already has a live writer (pid %s holds %s); stop that "
                    "writer first: a journal has exactly one writer",
                    w->name, w->directory, holder[0] ? holder : "unknown", path);
    }
    /* The holder's mode, not only the first writer's: NAME.bells takes its mode from this file. */
    struct stat st;
    if (fstat(fd, &st) != 0 || ((st.st_mode & 07777) != w->mode && fchmod(fd, w->mode) != 0)) {
        int err = errno;
        close(fd);
        return storage(err, "cannot set the mode of lock file", path);
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        int err = errno;
        close(fd);
        return storage(err, "cannot write lock file", path);
    }
    w->lock_fd = fd;
    return MMIPC_OK;
}

static void
release_lock(mmipc_writer *w)
{
    if (w->lock_fd >= 0) {
        if (ftruncate(w->lock_fd, 0) != 0) {
            /* the lock is released by close() anyway; a stale pid only misleads a message */
        }
        close(w->lock_fd);
        w->lock_fd = -1;
    }
}

static int
adopt_next(mmipc_writer *w, uint64_t number, page_t *next)
{
    int rc = map_page(next, w->directory, w->name, number, 1);
    if (rc == NOT_FOUND) {
        rc = create_page(w->directory, w->name, number, w->new_page_size, w->new_flags,
                         w->st.next_seq, w->mode);
        if (rc == MMIPC_OK) {
            rc = map_page(next, w->directory, w->name, number, 1);
            rc = rc == NOT_FOUND ? fail(MMIPC_E_STORAGE, "page %s vanished", next->path) : rc;
        }
    }
    return rc;
}

/* The last page ends with its marker: the next page exists by the switch order; go there. */
static int
enter_existing_next(mmipc_writer *w, uint64_t next_seq)
{
    uint64_t number = w->page.page_no + 1;
    unmap_page(&w->page);
    w->st.next_seq = next_seq;
    int rc = adopt_next(w, number, &w->page);
    if (rc != MMIPC_OK) {
        return rc;
    }
    if (w->page.info.version >= 2) {
        next_seq = w->page.info.first_seq;
    }
    resume(w, MMIPC_PAGE_HEADER_SIZE, next_seq);
    return MMIPC_OK;
}

static int
open_tail(mmipc_writer *w, uint64_t page_size)
{
    uint64_t *pages;
    size_t count;
    remove_stale_temporaries(w->directory, w->name);
    int rc = list_pages(w->directory, w->name, &pages, &count);
    if (rc == MMIPC_OK && count == 0) {
        w->new_page_size = page_size ? page_size : MMIPC_DEFAULT_PAGE_SIZE;
        rc = create_page(w->directory, w->name, 0, w->new_page_size, w->new_flags, 0, w->mode);
        if (rc == MMIPC_OK) {
            rc = list_pages(w->directory, w->name, &pages, &count);
        }
    }
    for (size_t i = count; rc == MMIPC_OK && i-- > 0;) {
        tail_t tail;
        rc = map_page(&w->page, w->directory, w->name, pages[i], 1);
        rc = rc == NOT_FOUND ? fail(MMIPC_E_STORAGE, "page %s vanished", w->page.path) : rc;
        if (rc == MMIPC_OK) {
            rc = page_tail(&w->page, &tail);
        }
        if (rc != MMIPC_OK) {
            break;
        }
        if (!tail.has_last && i > 0) {
            unmap_page(&w->page);
            continue;
        }
        w->new_page_size = page_size ? page_size : w->page.size;
        w->st.last_nano = tail.has_last ? tail.last.nano : 0;
        uint64_t next_seq = seq_after(&w->page, &tail);
        resume(w, tail.end, next_seq);
        if (tail.has_last && tail.last.msg_type == MMIPC_MSG_PAGE_END) {
            rc = enter_existing_next(w, next_seq);
        }
        break;
    }
    free(pages);
    return rc;
}

static int
check_page_size(uint64_t page_size)
{
    if (page_size != 0
        && (page_size < MMIPC_MIN_PAGE_SIZE || page_size > MMIPC_MAX_PAGE_SIZE
            || page_size % MMIPC_PAGE_SIZE_MULTIPLE)) {
        return fail(MMIPC_E_USAGE,
                    "page_size %llu is invalid: it must be a multiple of 4096 between %u and %u bytes",
                    (unsigned long long)page_size, MMIPC_MIN_PAGE_SIZE, MMIPC_MAX_PAGE_SIZE);
    }
    return MMIPC_OK;
}

/* The owner reads and writes; group and others may read, never write; nothing is executable
 * (_files.check_mode): 0600, 0640 or 0644. 0 is the default, 0600. */
static int
check_mode(unsigned int mode)
{
    if (mode != 0 && ((mode & ~0644u) || (mode & 0600u) != 0600u)) {
        return fail(MMIPC_E_USAGE,
                    "invalid file mode 0%o: use 0600 (owner only, the default), 0640 (the group may "
                    "read) or 0644 (everyone may read); only the writer's user may write a journal",
                    mode);
    }
    return MMIPC_OK;
}

/* MMIPC_PRETOUCH_CPUS, if set, must be a CPU list (pretouch_place), as _writer.check_pretouch_cpus. */
static int
check_pretouch_cpus(void)
{
    const char *env = getenv("MMIPC_PRETOUCH_CPUS");
    cpu_set_t set;
    if (env != NULL && *env != '\0' && parse_cpulist(env, &set) != 0) {
        return fail(MMIPC_E_USAGE,
                    "MMIPC_PRETOUCH_CPUS must be a CPU list such as 2-3,6 (where the writer's "
                    "pretoucher thread runs), not '%.64s'",
                    env);
    }
    return MMIPC_OK;
}

int
mmipc_writer_open(mmipc_writer **out, const char *directory, const char *name,
                  const mmipc_writer_options *options)
{
    mmipc_writer_options defaults = {0, 0, 0};
    const mmipc_writer_options *o = options ? options : &defaults;
    if (MMIPC_NULL(out)) {
        return null_arg(__func__, "out");
    }
    *out = NULL;
    int rc = check_name(name, "journal");
    if (rc == MMIPC_OK) {
        rc = check_directory(directory);
    }
    if (rc == MMIPC_OK) {
        rc = check_page_size(o->page_size);
    }
    if (rc == MMIPC_OK) {
        rc = check_mode(o->mode);
    }
    if (rc == MMIPC_OK) {
        rc = check_pretouch_cpus();
    }
    if (rc != MMIPC_OK) {
        return rc;
    }
    mmipc_crc32_init();
    mmipc_writer *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return fail(MMIPC_E_NOMEM, "out of memory opening a writer");
    }
    w->lock_fd = -1;
    w->mode = o->mode ? o->mode : DEFAULT_MODE;
    w->new_flags = o->checksum ? MMIPC_FLAG_CHECKSUMS : 0u;
    snprintf(w->directory, sizeof(w->directory), "%s", directory);
    snprintf(w->name, sizeof(w->name), "%s", name);
    rc = make_directories(w->directory, w->mode);
    if (rc == MMIPC_OK) {
        rc = take_lock(w);
    }
    if (rc == MMIPC_OK) {
        rc = open_tail(w, o->page_size);
    }
    if (rc != MMIPC_OK) {
        mmipc_writer_close(w);
        return rc;
    }
    ringer_open(w);
    w->pretouch = mmipc_pretouch_start();  /* NULL: the writer faults its pages itself */
    mmipc_pretouch_page(w->pretouch, w->page.base, w->page.size);
    *out = w;
    return MMIPC_OK;
}

static void
retire_step(mmipc_writer *w)
{
    page_t *old = &w->retiring;
    uint64_t end = w->retired_upto + retire_slice(old->size);
    end = end < old->size ? end : old->size;
    madvise(old->base + w->retired_upto, end - w->retired_upto, MADV_DONTNEED);
    w->retired_upto = end;
    if (end == old->size) {
        unmap_page(old);  /* its page tables are gone already: a cheap munmap */
    }
}

/* Record the page's first timestamp and fill the time-index slots this frame starts. */
static void
mark_index(mmipc_writer *w, uint64_t pos, int64_t nano)
{
    w->slot_index = mmipc_mark_index(&w->st, pos, nano, w->slot_index, w->stride);
    if (pos != MMIPC_PAGE_HEADER_SIZE && w->retiring.base != NULL) {
        retire_step(w);
    }
}

/* Rule 3: the page switch, in the documented order. */
static int
switch_page(mmipc_writer *w)
{
    page_t next;
    memset(&next, 0, sizeof(next));
    uint64_t number = w->page.page_no + 1;
    int rc = adopt_next(w, number, &next);
    if (rc != MMIPC_OK) {
        return rc;
    }
    if (mmipc_load_commit(next.base, MMIPC_PAGE_HEADER_SIZE) != 0) {
        unmap_page(&next);
        return corrupt(next.path, MMIPC_PAGE_HEADER_SIZE, "the next page already holds frames");
    }
    if (next.info.version >= 2) {
        atomic_store_explicit(mmipc_first_seq_word(next.base), w->st.next_seq, memory_order_relaxed);
        next.info.first_seq = w->st.next_seq;
    }
    unsigned char *old = w->page.base;
    uint64_t pos = w->st.pos;
    int64_t last = w->st.last_nano;
    atomic_store_explicit(mmipc_header_nano(old, MMIPC_OFF_LAST_NANO), last, memory_order_relaxed);
    mmipc_frame_header_t *h = mmipc_frame_at(old, pos);
    h->msg_type = MMIPC_MSG_PAGE_END;
    h->nano = last;
    h->source = 0;
    h->payload_len = 0;
    h->seq = 0;
    h->checksum = 0;
    mmipc_store_commit(old, pos, MMIPC_FRAME_HEADER_SIZE);
    unmap_page(&w->retiring);
    w->retiring = w->page;
    w->retired_upto = 0;
    w->page = next;
    attach(w, MMIPC_PAGE_HEADER_SIZE, 0, w->st.next_seq);
    return MMIPC_OK;
}

static int
make_room(mmipc_writer *w, uint64_t size)
{
    if (w->page.base == NULL) {
        return fail(MMIPC_E_CLOSED, "writer of journal %s in %s is closed", w->name, w->directory);
    }
    if (w->claim_open) {
        return fail(MMIPC_E_CLOSED, "a frame claim is open: commit or abandon it before writing again");
    }
    uint64_t largest = mmipc_max_payload(w->new_page_size);
    if (size - MMIPC_FRAME_HEADER_SIZE > largest) {
        return fail(MMIPC_E_TOO_LARGE,
                    "a payload of %llu bytes (padded) does not fit journal %s: the largest is %llu "
                    "bytes with %llu-byte pages; open the writer with a larger page_size",
                    (unsigned long long)(size - MMIPC_FRAME_HEADER_SIZE), w->name,
                    (unsigned long long)largest, (unsigned long long)w->new_page_size);
    }
    if (w->st.pos + size + MMIPC_PAGE_END_RESERVE > w->page.size) {
        int rc = switch_page(w);
        if (rc != MMIPC_OK) {
            return rc;
        }
        if (w->st.pos + size + MMIPC_PAGE_END_RESERVE > w->page.size) {
            return fail(MMIPC_E_TOO_LARGE, "the payload does not fit page %s (%llu bytes)",
                        w->page.path, (unsigned long long)w->page.size);
        }
    }
    return MMIPC_OK;
}

static int
bad_msg_type(uint32_t msg_type)
{
    return fail(MMIPC_E_USAGE, "msg_type %u is outside 0..%u (the rest is reserved)", msg_type,
                MMIPC_MAX_MSG_TYPE);
}

static int64_t
stamp(const mmipc_writer *w)
{
    int64_t nano = mmipc_now();
    return nano < w->st.last_nano ? w->st.last_nano : nano;
}

int64_t
mmipc_write(mmipc_writer *w, const void *payload, uint32_t length, uint32_t msg_type,
            uint32_t source)
{
    if (MMIPC_NULL(w) || (MMIPC_NULL(payload) && length != 0)) {
        return null_arg(__func__, w == NULL ? "the writer" : "payload");
    }
    uint64_t size = mmipc_align8((uint64_t)length + MMIPC_FRAME_HEADER_SIZE);
    if (w->st.pos + size + MMIPC_PAGE_END_RESERVE > w->st.limit) {
        int rc = make_room(w, size);
        if (rc != MMIPC_OK) {
            return rc;
        }
    }
    if (msg_type > MMIPC_MAX_MSG_TYPE) {
        return bad_msg_type(msg_type);
    }
    uint64_t pos = w->st.pos;
    memcpy(w->st.page.base + pos + MMIPC_FRAME_HEADER_SIZE, payload, length);
    int64_t nano = stamp(w);  /* after the copy: only the header stands before the commit */
    mmipc_store_header(&w->st, pos, length, msg_type, source, nano);
    if (pos >= w->st.slot_boundary) {
        mark_index(w, pos, nano);
    }
    mmipc_publish(&w->st, pos, length, nano);
    mmipc_ring_bells(&w->ringer, w->bell_count);
    return nano;
}

int
mmipc_claim(mmipc_writer *w, uint32_t length, void **buf)
{
    if (MMIPC_NULL(w) || MMIPC_NULL(buf)) {
        return null_arg(__func__, w == NULL ? "the writer" : "buf");
    }
    uint64_t size = mmipc_align8((uint64_t)length + MMIPC_FRAME_HEADER_SIZE);
    if (w->st.pos + size + MMIPC_PAGE_END_RESERVE > w->st.limit) {
        int rc = make_room(w, size);
        if (rc != MMIPC_OK) {
            return rc;
        }
    }
    w->claim_open = 1;
    w->claim_pos = w->st.pos;
    w->claim_len = length;
    w->st.limit = 0;
    *buf = w->st.page.base + w->st.pos + MMIPC_FRAME_HEADER_SIZE;
    return MMIPC_OK;
}

int64_t
mmipc_commit(mmipc_writer *w, uint32_t msg_type, uint32_t source)
{
    if (MMIPC_NULL(w)) {
        return null_arg(__func__, "the writer");
    }
    if (!w->claim_open) {
        return fail(MMIPC_E_USAGE, "no frame claim is open: call mmipc_claim first");
    }
    if (msg_type > MMIPC_MAX_MSG_TYPE) {
        return bad_msg_type(msg_type);  /* the claim stays open: fix the id or abandon it */
    }
    uint64_t pos = w->claim_pos;
    w->claim_open = 0;
    w->st.limit = w->page.size;
    int64_t nano = stamp(w);
    mmipc_store_header(&w->st, pos, w->claim_len, msg_type, source, nano);
    if (pos >= w->st.slot_boundary) {
        mark_index(w, pos, nano);
    }
    mmipc_publish(&w->st, pos, w->claim_len, nano);
    mmipc_ring_bells(&w->ringer, w->bell_count);
    return nano;
}

void
mmipc_abandon(mmipc_writer *w)
{
    if (w == NULL || !w->claim_open) {
        return;
    }
    uint64_t size = mmipc_align8((uint64_t)w->claim_len + MMIPC_FRAME_HEADER_SIZE);
    memset(w->st.page.base + w->claim_pos, 0, size);  /* no stale bytes past the committed end */
    w->claim_open = 0;
    w->st.limit = w->page.size;
}

uint64_t
mmipc_writer_page(const mmipc_writer *w)
{
    return w == NULL ? 0 : w->page.page_no;
}

uint64_t
mmipc_writer_pos(const mmipc_writer *w)
{
    return w == NULL ? 0 : w->st.pos;
}

int64_t
mmipc_writer_last_nano(const mmipc_writer *w)
{
    return w == NULL ? 0 : w->st.last_nano;
}

uint64_t
mmipc_writer_next_seq(const mmipc_writer *w)
{
    return w == NULL ? 0 : w->st.next_seq;
}

int
mmipc_writer_sync(mmipc_writer *w)
{
    if (MMIPC_NULL(w)) {
        return null_arg(__func__, "the writer");
    }
    if (w->page.base != NULL && msync(w->page.base, w->page.size, MS_SYNC) != 0) {
        return storage(errno, "cannot sync page", w->page.path);
    }
    return MMIPC_OK;
}

void
mmipc_writer_close(mmipc_writer *w)
{
    if (w == NULL) {
        return;
    }
    if (w->claim_open && w->page.base != NULL) {
        mmipc_abandon(w);
    }
    mmipc_pretouch_stop(w->pretouch);
    unmap_page(&w->retiring);
    unmap_page(&w->page);
    ringer_close(w);
    release_lock(w);
    free(w);
}

/* ---- the reader cursor ---------------------------------------------------------------------- */

struct mmipc_cursor {
    page_t page;
    mmipc_page_view_t view;
    uint64_t pos;
    int64_t last_nano;
    int peeked;
    mmipc_peeked_t next;
    int start;
    int64_t start_nano;
    int64_t probe_at;
    char directory[DIR_MAX];
    char name[MMIPC_NAME_FIELD_SIZE + 1];
};

static void
cursor_detach(mmipc_cursor *c)
{
    unmap_page(&c->page);
    c->view.base = NULL;
    c->peeked = 0;
}

/* Enter page `page_no` at `pos`. A missing page is NOT_FOUND, or corrupt after a marker. */
static int
enter_page(mmipc_cursor *c, uint64_t page_no, uint64_t pos, int after_marker)
{
    page_t page;
    int rc = map_page(&page, c->directory, c->name, page_no, 0);
    if (rc == NOT_FOUND && after_marker) {
        char problem[PATH_MAX + 64];
        snprintf(problem, sizeof(problem), "the page ends here but the next page %s is missing",
                 page.path);
        return corrupt(c->page.path, c->pos, problem);
    }
    if (rc == NOT_FOUND) {
        return fail(MMIPC_E_STORAGE, "page %s vanished (archived or deleted while opening)", page.path);
    }
    if (rc != MMIPC_OK) {
        return rc;
    }
    cursor_detach(c);
    c->page = page;
    c->view.base = page.base;
    c->view.page_size = page.size;
    c->view.version = page.info.version;
    c->view.flags = page.info.flags;
    c->view.first_seq = page.info.first_seq;
    c->pos = pos;
    return MMIPC_OK;
}

static int
position_end(mmipc_cursor *c, const uint64_t *pages, size_t count)
{
    for (size_t i = count; i-- > 0;) {
        tail_t tail;
        int rc = enter_page(c, pages[i], MMIPC_PAGE_HEADER_SIZE, 0);
        if (rc == MMIPC_OK) {
            rc = page_tail(&c->page, &tail);
        }
        if (rc != MMIPC_OK) {
            return rc;
        }
        if (tail.has_last && tail.last.msg_type == MMIPC_MSG_PAGE_END) {
            c->pos = tail.end - MMIPC_FRAME_HEADER_SIZE;
            return enter_page(c, pages[i] + 1, MMIPC_PAGE_HEADER_SIZE, 1);
        }
        if (tail.has_last || i == 0) {
            c->pos = tail.end;
            return MMIPC_OK;
        }
    }
    return MMIPC_OK;
}

static int
first_nano_of(mmipc_cursor *c, uint64_t page_no, int64_t *first)
{
    char path[PATH_MAX];
    unsigned char buf[MMIPC_PAGE_HEADER_SIZE];
    header_info_t info;
    uint64_t size;
    int fd;
    page_path(path, c->directory, c->name, page_no);
    int rc = open_page_file(path, 0, &fd);
    if (rc == NOT_FOUND) {
        return fail(MMIPC_E_STORAGE, "page %s vanished while seeking", path);
    }
    if (rc != MMIPC_OK) {
        return rc;
    }
    rc = read_header(fd, path, buf, &info, &size);
    close(fd);
    *first = info.first_nano;
    return rc;
}

/* MappedPage.seek: the first frame at or after `nano` in the current page (*ended: the marker). */
static int
page_seek(mmipc_cursor *c, int64_t nano, int *ended)
{
    const page_t *page = &c->page;
    uint32_t lo = 0;
    uint32_t hi = filled_slots(page);
    walked_t f;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        int rc = slot_frame(page, mid, mmipc_load_slot(page->base, mid), &f);
        if (rc < 0) {
            return rc;
        }
        if (rc == 0 || f.nano >= nano) {
            hi = mid;
        }
        else {
            lo = mid + 1;
        }
    }
    uint64_t offset = lo ? mmipc_load_slot(page->base, lo - 1) : MMIPC_PAGE_HEADER_SIZE;
    int rc;
    *ended = 0;
    while ((rc = decode_frame(page, offset, &f)) == 1) {
        if (f.msg_type == MMIPC_MSG_PAGE_END) {
            *ended = 1;
            break;
        }
        if (f.nano >= nano) {
            break;
        }
        offset += mmipc_align8(f.length);
    }
    c->pos = offset;
    return rc < 0 ? rc : MMIPC_OK;
}

static int
position_at(mmipc_cursor *c, const uint64_t *pages, size_t count, int64_t nano)
{
    size_t lo = 0;
    size_t hi = count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int64_t first;
        int rc = first_nano_of(c, pages[mid], &first);
        if (rc != MMIPC_OK) {
            return rc;
        }
        if (first && first < nano) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    if (lo == 0) {
        return enter_page(c, pages[0], MMIPC_PAGE_HEADER_SIZE, 0);
    }
    int ended;
    int rc = enter_page(c, pages[lo - 1], MMIPC_PAGE_HEADER_SIZE, 0);
    if (rc == MMIPC_OK) {
        rc = page_seek(c, nano, &ended);
    }
    if (rc == MMIPC_OK && ended) {
        rc = enter_page(c, pages[lo - 1] + 1, MMIPC_PAGE_HEADER_SIZE, 1);
    }
    return rc;
}

/* Place the cursor: 1 when placed, 0 when the journal has no page yet, or an error. */
static int
position(mmipc_cursor *c, int start, int64_t nano)
{
    uint64_t *pages;
    size_t count;
    c->start = start;
    c->start_nano = nano;
    c->peeked = 0;
    int rc = list_pages(c->directory, c->name, &pages, &count);
    if (rc != MMIPC_OK) {
        return rc;
    }
    if (count == 0) {
        cursor_detach(c);
        return 0;
    }
    if (start == MMIPC_START_BEGIN) {
        rc = enter_page(c, pages[0], MMIPC_PAGE_HEADER_SIZE, 0);
    }
    else if (start == MMIPC_START_END) {
        rc = position_end(c, pages, count);
    }
    else {
        rc = position_at(c, pages, count, nano);
    }
    free(pages);
    c->last_nano = 0;
    return rc == MMIPC_OK ? 1 : rc;
}

static int
check_start(int start)
{
    if (start != MMIPC_START_BEGIN && start != MMIPC_START_END && start != MMIPC_START_AT) {
        return fail(MMIPC_E_USAGE, "start must be MMIPC_START_BEGIN, _END or _AT, not %d", start);
    }
    return MMIPC_OK;
}

int
mmipc_cursor_open(mmipc_cursor **out, const char *directory, const char *name, int start,
                  int64_t nano)
{
    if (MMIPC_NULL(out)) {
        return null_arg(__func__, "out");
    }
    *out = NULL;
    int rc = check_name(name, "journal");
    if (rc == MMIPC_OK) {
        rc = check_directory(directory);
    }
    if (rc == MMIPC_OK) {
        rc = check_start(start);
    }
    if (rc != MMIPC_OK) {
        return rc;
    }
    mmipc_crc32_init();
    mmipc_cursor *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return fail(MMIPC_E_NOMEM, "out of memory opening a cursor");
    }
    snprintf(c->directory, sizeof(c->directory), "%s", directory);
    snprintf(c->name, sizeof(c->name), "%s", name);
    rc = position(c, start, nano);
    if (rc < 0) {
        mmipc_cursor_close(c);
        return rc;
    }
    *out = c;
    return MMIPC_OK;
}

int
mmipc_cursor_seek(mmipc_cursor *c, int start, int64_t nano)
{
    if (MMIPC_NULL(c)) {
        return null_arg(__func__, "the cursor");
    }
    int rc = check_start(start);
    if (rc == MMIPC_OK) {
        rc = position(c, start, nano);
    }
    return rc < 0 ? rc : MMIPC_OK;
}

/* The frame at the cursor failed a fast check: name the problem, or follow the end marker. */
static int
poll_slow(mmipc_cursor *c)
{
    walked_t f;
    int rc = decode_frame(&c->page, c->pos, &f);
    if (rc <= 0) {
        return rc;
    }
    if (f.msg_type == MMIPC_MSG_PAGE_END) {
        rc = enter_page(c, c->page.page_no + 1, MMIPC_PAGE_HEADER_SIZE, 1);
        return rc == MMIPC_OK ? 2 : rc;
    }
    if (f.nano < c->last_nano) {
        char problem[128];
        snprintf(problem, sizeof(problem), "timestamp %lld is older than the frame before it (%lld)",
                 (long long)f.nano, (long long)c->last_nano);
        return corrupt(c->page.path, c->pos, problem);
    }
    return corrupt(c->page.path, c->pos, "payload checksum does not match the frame's checksum");
}

/* mmipc_cursor_poll, its arguments checked (the merge's calls, one per idle journal a read). */
static int
cursor_poll(mmipc_cursor *c, int64_t *nano)
{
    for (;;) {
        if (c->peeked) {
            *nano = c->next.nano;
            return 1;
        }
        if (c->page.base == NULL) {
            int64_t now = clock_ns(CLOCK_MONOTONIC);
            if (now < c->probe_at) {
                return 0;
            }
            c->probe_at = now + PROBE_INTERVAL_NS;
            int rc = position(c, c->start, c->start_nano);
            if (rc <= 0) {
                return rc;
            }
            continue;
        }
        int kind = mmipc_peek(&c->view, c->pos, c->last_nano, &c->next);
        if (kind == MMIPC_PEEK_FRAME) {
            c->peeked = 1;
            continue;
        }
        if (kind == MMIPC_PEEK_NONE) {
            return 0;
        }
        int rc = poll_slow(c);
        if (rc <= 0) {
            return rc;
        }
    }
}

int
mmipc_cursor_poll(mmipc_cursor *c, int64_t *nano)
{
    if (MMIPC_NULL(c) || MMIPC_NULL(nano)) {
        return null_arg(__func__, c == NULL ? "the cursor" : "nano");
    }
    return cursor_poll(c, nano);
}

static void
fill_frame(const mmipc_cursor *c, const mmipc_peeked_t *p, mmipc_frame *frame)
{
    frame->nano = p->nano;
    frame->seq = p->seq;
    frame->msg_type = p->msg_type;
    frame->source = p->source;
    frame->length = p->payload_len;
    frame->journal = 0;
    frame->data = c->page.base + p->pos + MMIPC_FRAME_HEADER_SIZE;
}

static int
cursor_take(mmipc_cursor *c, mmipc_frame *frame)
{
    if (!c->peeked) {
        return 0;
    }
    fill_frame(c, &c->next, frame);
    c->pos = c->next.pos + mmipc_align8(c->next.length);
    c->last_nano = c->next.nano;
    c->peeked = 0;
    return 1;
}

int
mmipc_cursor_take(mmipc_cursor *c, mmipc_frame *frame)
{
    if (MMIPC_NULL(c) || MMIPC_NULL(frame)) {
        return null_arg(__func__, c == NULL ? "the cursor" : "frame");
    }
    return cursor_take(c, frame);
}

int
mmipc_cursor_read(mmipc_cursor *c, mmipc_frame *frame)
{
    if (MMIPC_NULL(c) || MMIPC_NULL(frame)) {
        return null_arg(__func__, c == NULL ? "the cursor" : "frame");
    }
    if (c->page.base != NULL && !c->peeked) {
        mmipc_peeked_t p;
        int kind = mmipc_peek(&c->view, c->pos, c->last_nano, &p);
        if (kind == MMIPC_PEEK_FRAME) {
            fill_frame(c, &p, frame);
            c->pos = p.pos + mmipc_align8(p.length);
            c->last_nano = p.nano;
            return 1;
        }
        if (kind == MMIPC_PEEK_NONE) {
            return 0;
        }
    }
    int64_t nano;
    int rc = cursor_poll(c, &nano);
    return rc == 1 ? cursor_take(c, frame) : rc;
}

void
mmipc_cursor_close(mmipc_cursor *c)
{
    if (c != NULL) {
        cursor_detach(c);
        free(c);
    }
}

/* ---- the merge ------------------------------------------------------------------------------ *
 *
 * A binary min-heap of the journals with a frame peeked, keyed by (timestamp, index): a read takes
 * the top's frame, so a frame costs O(log journals) whatever the number of journals. A journal
 * whose poll found nothing is "idle" and is polled at every read (this API has no doorbell: only
 * polling sees a standalone writer's commit): an empty read costs one commit-word load per idle
 * journal, and a read of a frame among journals that all have frames (replay, a busy merge)
 * polls none. The journal whose frame was handed out is peeked again only at the next read: a
 * peek may leave its page, and the frame's data must stay valid until then. */

typedef struct {
    int64_t nano;
    size_t index;            /* the journal's index: ties go to the journal added first */
} merge_key_t;

struct mmipc_merge {
    mmipc_cursor **cursors;
    size_t count;
    size_t cap;
    merge_key_t *heap;       /* journals with a frame peeked; cap entries */
    size_t nheap;
    size_t *idle;            /* journals without one, polled at every read; cap entries */
    size_t nidle;
    int taken;               /* the top's frame was handed out: re-peek it before anything else */
};

static int
merge_less(const merge_key_t *a, const merge_key_t *b)
{
    return a->nano < b->nano || (a->nano == b->nano && a->index < b->index);
}

static void
merge_push(mmipc_merge *m, merge_key_t key)
{
    size_t at = m->nheap++;
    while (at > 0 && merge_less(&key, &m->heap[(at - 1) / 2])) {
        m->heap[at] = m->heap[(at - 1) / 2];
        at = (at - 1) / 2;
    }
    m->heap[at] = key;
}

/* Put `key` at the root of the non-empty heap and sift it down. */
static void
merge_replace_root(mmipc_merge *m, merge_key_t key)
{
    size_t at = 0;
    for (;;) {
        size_t child = 2 * at + 1;
        if (child >= m->nheap) {
            break;
        }
        if (child + 1 < m->nheap && merge_less(&m->heap[child + 1], &m->heap[child])) {
            child++;
        }
        if (!merge_less(&m->heap[child], &key)) {
            break;
        }
        m->heap[at] = m->heap[child];
        at = child;
    }
    m->heap[at] = key;
}

/* The root's journal is idle now (nothing more, or a failed peek that the next read repeats). */
static void
merge_pop_root(mmipc_merge *m)
{
    m->idle[m->nidle++] = m->heap[0].index;
    if (--m->nheap > 0) {
        merge_replace_root(m, m->heap[m->nheap]);
    }
}

int
mmipc_merge_open(mmipc_merge **out)
{
    if (MMIPC_NULL(out)) {
        return null_arg(__func__, "out");
    }
    *out = calloc(1, sizeof(**out));
    return *out ? MMIPC_OK : fail(MMIPC_E_NOMEM, "out of memory opening a merge");
}

static int
merge_grow(mmipc_merge *m)
{
    size_t cap = m->cap ? m->cap * 2 : 4;
    mmipc_cursor **cursors = realloc(m->cursors, cap * sizeof(*cursors));
    if (cursors != NULL) {
        m->cursors = cursors;
    }
    merge_key_t *heap = realloc(m->heap, cap * sizeof(*heap));
    if (heap != NULL) {
        m->heap = heap;
    }
    size_t *idle = realloc(m->idle, cap * sizeof(*idle));
    if (idle != NULL) {
        m->idle = idle;
    }
    if (cursors == NULL || heap == NULL || idle == NULL) {
        return fail(MMIPC_E_NOMEM, "out of memory adding a journal");
    }
    m->cap = cap;
    return MMIPC_OK;
}

/* `directory` as Python's os.path.abspath spells it (relative: under the working directory; ".",
 * "..", "//" and a trailing "/" resolved by name, links not followed) into `out` (DIR_MAX bytes):
 * the merge follows a journal by this spelling, so that one added again under another is refused,
 * as Reader.add_journal refuses it. -1 if it does not fit or the working directory is unknown. */
static int
normal_dir(const char *directory, char *out)
{
    char joined[2 * DIR_MAX + 2], cwd[DIR_MAX];
    if (directory[0] != '/' && getcwd(cwd, sizeof(cwd)) == NULL) {
        return -1;
    }
    snprintf(joined, sizeof(joined), "%s/%s", directory[0] == '/' ? "" : cwd, directory);
    size_t n = 0;  /* out[0, n): the path so far, "" for "/" */
    char *save = NULL;
    for (char *part = strtok_r(joined, "/", &save); part != NULL; part = strtok_r(NULL, "/", &save)) {
        size_t len = strlen(part);
        if (strcmp(part, "..") == 0) {
            while (n > 0 && out[--n] != '/') {
            }
        }
        else if (strcmp(part, ".") != 0) {
            if (n + 1 + len >= DIR_MAX) {
                return -1;
            }
            out[n++] = '/';
            memcpy(out + n, part, len);
            n += len;
        }
    }
    if (n == 0) {
        out[n++] = '/';
    }
    out[n] = '\0';
    return 0;
}

int
mmipc_merge_add(mmipc_merge *m, const char *directory, const char *name, int start, int64_t nano)
{
    if (MMIPC_NULL(m)) {
        return null_arg(__func__, "the merge");
    }
    int rc = check_name(name, "journal");
    if (rc != MMIPC_OK || (rc = check_directory(directory)) != MMIPC_OK) {
        return rc;  /* before the names are compared below */
    }
    char normal[DIR_MAX];
    if (normal_dir(directory, normal) < 0) {
        return fail(MMIPC_E_USAGE, "journal directory %s is too long once made absolute", directory);
    }
    directory = normal;
    if (m->count == m->cap && merge_grow(m) < 0) {
        return MMIPC_E_NOMEM;
    }
    for (size_t i = 0; i < m->count; i++) {
        if (strcmp(m->cursors[i]->name, name) == 0 && strcmp(m->cursors[i]->directory, directory) == 0) {
            return fail(MMIPC_E_USAGE, "journal %s/%s is already added", directory, name);
        }
    }
    rc = mmipc_cursor_open(&m->cursors[m->count], directory, name, start, nano);
    if (rc != MMIPC_OK) {
        return rc;
    }
    m->idle[m->nidle++] = m->count;
    return (int)m->count++;
}

/* Cursor c just peeked a frame: load the header after it into the second-level cache now
 * (locality 1). Following hundreds of journals, it is read only when c's journal is next at the
 * top, hundreds of reads later, and it then came from the shared cache or memory: 256 journals,
 * 74-80 against 46-53 ns a frame; 1,024, 205-237 against 148-165 (docs/benchmarks.md, eighth run). */
static inline __attribute__((always_inline)) void
prefetch_after_peek(const mmipc_cursor *c)
{
    __builtin_prefetch(c->page.base + c->next.pos + mmipc_align8(c->next.length), 0, 1);
}

/* Re-peek the journal whose frame the last read handed out; a failure leaves it idle. */
static int
merge_repeek_top(mmipc_merge *m)
{
    m->taken = 0;
    merge_key_t key = m->heap[0];
    int rc = cursor_poll(m->cursors[key.index], &key.nano);
    if (rc == 1) {
        prefetch_after_peek(m->cursors[key.index]);
        merge_replace_root(m, key);
        return MMIPC_OK;
    }
    merge_pop_root(m);
    return rc;
}

/* Poll every idle journal; those with a frame join the heap. On an error the failing journal
 * stays idle (the next read fails the same way) and the others keep what they peeked. */
static int
merge_poll_idle(mmipc_merge *m)
{
    size_t k = 0;
    while (k < m->nidle) {
        merge_key_t key = {0, m->idle[k]};
        int rc = cursor_poll(m->cursors[key.index], &key.nano);
        if (rc < 0) {
            return rc;
        }
        if (rc == 1) {
            prefetch_after_peek(m->cursors[key.index]);
            merge_push(m, key);
            m->idle[k] = m->idle[--m->nidle];
        }
        else {
            k++;
        }
    }
    return MMIPC_OK;
}

int
mmipc_merge_read(mmipc_merge *m, mmipc_frame *frame)
{
    if (MMIPC_NULL(m) || MMIPC_NULL(frame)) {
        return null_arg(__func__, m == NULL ? "the merge" : "frame");
    }
    int rc = m->taken ? merge_repeek_top(m) : MMIPC_OK;
    if (rc == MMIPC_OK) {
        rc = merge_poll_idle(m);
    }
    if (rc < 0) {
        return rc;
    }
    if (m->nheap == 0) {
        return 0;
    }
    size_t index = m->heap[0].index;
    cursor_take(m->cursors[index], frame);
    frame->journal = (uint32_t)index;
    m->taken = 1;
    return 1;
}

void
mmipc_merge_close(mmipc_merge *m)
{
    if (m == NULL) {
        return;
    }
    for (size_t i = 0; i < m->count; i++) {
        mmipc_cursor_close(m->cursors[i]);
    }
    free(m->cursors);
    free(m->heap);
    free(m->idle);
    free(m);
}

/* _mmipcmodule.c: mmipc.journal._native, the CPython extension over the C core's hot paths.
 *
 * Design. The Python modules stay the reference and keep everything that is not per-frame:
 * opening and resuming journals, page creation and switches, the writer lock, the service link,
 * the time-index slot crossings that drive the page news and the slice-wise retirement,
 * seeking, and every error message. This module does only the per-frame work, on a page Python
 * has already mapped, with the C11 atomics of mmipc_frame.h (release store of the commit word,
 * acquire load in readers), shared with the C core (mmipc.c):
 *
 *   WriterCore  attach(view, page_size, version, flags, first_seq, pos, last_nano, next_seq,
 *               slot_boundary, slot_index=960); write(payload, msg_type=0, source=0) -> nano,
 *               or SLOW; commit(pos, size, msg_type, source) -> nano, or SLOW (a claim filled
 *               in place). A frame that crosses a time-index slot goes SLOW, unless Python sets
 *               mark_slots (when it has no page news to send and no old page to retire): then
 *               the core fills the slots (and first_nano) itself, before the commit.
 *   CursorCore  attach(view, page_size, version, flags, first_seq, pos); read() -> Frame | None |
 *               SLOW; read_data() -> memoryview | None | SLOW (read()'s payload view alone, no
 *               Frame made); poll() -> nano | -1 (none) | -2 (SLOW); take() -> Frame;
 *               read_batch(limit) -> Batch | SLOW.
 *   merge_read(cores) -> Frame | None | SLOW: the merge of Reader.read (ties: first in the list).
 *   Batch       columns nano, msg_type, source, offset, length, seq: memoryviews of format 'q'
 *               (numpy views them without a copy); buffer: the page; data(i): a zero-copy view
 *               of payload i; len(), batch[i] and iteration give Frames.
 *
 * SLOW means "not done here, nothing changed": the frame does not fit the page, crosses a
 * time-index slot, has an id out of range, the page ended, a check or a checksum failed, or no
 * page is attached. The Python caller then runs its own slow path, which knows the files and
 * raises the right mmipc error, and writes the state back (the attributes pos, last_nano, ...).
 *
 * Lifetime. attach() makes the core's own memoryview of the page (registered on the same buffer
 * as the caller's view), so the page stays mapped while the core, or any frame view or batch it
 * handed out, is alive; the caller's view.release() stays possible. detach() drops the core's
 * view: call it before closing the mmap, or mmap.close() raises BufferError.
 *
 * No threads: every call runs under the GIL, like the Python code it replaces.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mmipc.h"
#include "mmipc_bell.h"
#include "mmipc_frame.h"
#include "_blockiter.h"

static PyObject *slow;  /* the SLOW sentinel */

/* ---- shared: a page view ------------------------------------------------------------------- */

typedef struct {
    PyObject *view;              /* the core's own memoryview of the page, or NULL */
    mmipc_page_view_t page;
} attached_t;

static int
attach_view(attached_t *a, PyObject *view, int writable)
{
    if (!PyMemoryView_Check(view)) {
        PyErr_SetString(PyExc_TypeError, "attach() needs the page's memoryview");
        return -1;
    }
    PyObject *own = PyMemoryView_FromObject(view);
    if (own == NULL) {
        return -1;
    }
    Py_buffer *b = PyMemoryView_GET_BUFFER(own);
    if ((writable && b->readonly) || b->len < (Py_ssize_t)MMIPC_MIN_PAGE_SIZE || b->ndim != 1
        || b->itemsize != 1 || !PyBuffer_IsContiguous(b, 'C')
        || ((uintptr_t)b->buf & 7u)) {
        Py_DECREF(own);
        PyErr_SetString(PyExc_ValueError,
                        "attach() needs a contiguous, 8-byte aligned byte view of a whole page"
                        " (writable for a writer)");
        return -1;
    }
    Py_XSETREF(a->view, own);
    a->page.base = b->buf;
    return 0;
}

static int
set_page(attached_t *a, unsigned long long page_size, unsigned int version, unsigned int flags,
         unsigned long long first_seq)
{
    Py_ssize_t len = PyMemoryView_GET_BUFFER(a->view)->len;
    if (page_size > (unsigned long long)len || page_size < MMIPC_MIN_PAGE_SIZE
        || (version != 1 && version != 2)) {
        Py_CLEAR(a->view);
        a->page.base = NULL;
        PyErr_SetString(PyExc_ValueError, "attach(): page_size or version does not fit the view");
        return -1;
    }
    a->page.page_size = page_size;
    a->page.version = version;
    a->page.flags = version >= 2 ? flags : 0u;
    a->page.first_seq = first_seq;
    return 0;
}

static void
detach_view(attached_t *a)
{
    Py_CLEAR(a->view);
    a->page.base = NULL;
}

/* What both cores' attach() check: the view, the page's geometry, and pos a frame offset with
 * `room` bytes after it. Detached, with a ValueError, on failure. */
static int
attach_page(attached_t *a, PyObject *view, int writable, unsigned long long page_size,
            unsigned int version, unsigned int flags, unsigned long long first_seq,
            unsigned long long pos, unsigned long long room)
{
    if (attach_view(a, view, writable) < 0
        || set_page(a, page_size, version, flags, first_seq) < 0) {
        detach_view(a);
        return -1;
    }
    if (pos < MMIPC_PAGE_HEADER_SIZE || pos + room > page_size || pos % 8) {
        detach_view(a);
        PyErr_SetString(PyExc_ValueError, "attach(): pos is not a frame offset of the page");
        return -1;
    }
    return 0;
}

/* A memoryview of bytes [offset, offset + n) of `view`, without a slice object: a new view on the
 * same managed buffer (as memoryview slicing makes), narrowed to the payload. */
static PyObject *
payload_view(PyObject *view, uint64_t offset, uint32_t n)
{
    PyObject *mv = PyMemoryView_FromObject(view);
    if (mv == NULL) {
        return NULL;
    }
    Py_buffer *b = &((PyMemoryViewObject *)mv)->view;
    b->buf = (char *)b->buf + offset;
    b->len = (Py_ssize_t)n;
    b->shape[0] = (Py_ssize_t)n;
    return mv;
}

/* ---- shared: refilling what the caller has dropped ------------------------------------------ */

/* The hot paths hand out a fresh int (write's nano) or Frame per call, and most callers drop it
 * before the next call. A core keeps the last one it handed out and, when its own reference is the
 * only one left (refcount 1: no caller, container or view can see it), refills it in place instead
 * of freeing it and allocating its twin, as CPython's zip() and enumerate() reuse their result
 * tuple. Anything still referenced elsewhere is never touched; a new object is made instead. */

/* Whether int `o` now holds v >= 0: it did already (msg_type and source repeat), or only the caller
 * holds it and v has as many digits, and it was overwritten. CPython 3.11's int layout (sign and
 * digit count in ob_size); elsewhere always 0 (the caller makes a new int). Small ints are never
 * overwritten: CPython shares them, so their refcount is above 1. */
static int
long_refill(PyObject *o, long long v)
{
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000 && !defined(Py_GIL_DISABLED)
    if (v < 0 || !PyLong_CheckExact(o)) {
        return 0;
    }
    Py_ssize_t size = Py_SIZE(o);
    digit *d = ((PyLongObject *)o)->ob_digit;
    if (v < (1LL << PyLong_SHIFT)) {  /* zero or one digit */
        if (size == (v != 0) && (v == 0 || d[0] == (digit)v)) {
            return 1;
        }
        if (v == 0 || size != 1 || Py_REFCNT(o) != 1) {
            return 0;
        }
        d[0] = (digit)v;
        return 1;
    }
    if (Py_REFCNT(o) != 1
        || size != (64 - __builtin_clzll((unsigned long long)v) + PyLong_SHIFT - 1) / PyLong_SHIFT) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < size; i++, v >>= PyLong_SHIFT) {
        d[i] = (digit)(v & PyLong_MASK);
    }
    return 1;
#else
    (void)o;
    (void)v;
    return 0;
#endif
}

/* *slot, an int owned by its container, set to v: refilled in place, or replaced. -1 on error. */
static int
set_long(PyObject **slot, long long v)
{
    if (long_refill(*slot, v)) {
        return 0;
    }
    PyObject *o = PyLong_FromLongLong(v);
    if (o == NULL) {
        return -1;
    }
    Py_SETREF(*slot, o);
    return 0;
}

/* Point memoryview `mv` (from payload_view on `view`) at another payload of the same page, if only
 * the caller holds it: not released, not exported, no weak reference. 1 if done. */
static int
view_refill(PyObject *mv, PyObject *view, uint64_t offset, uint32_t n)
{
    PyMemoryViewObject *m = (PyMemoryViewObject *)mv;
    if (Py_REFCNT(mv) != 1 || m->mbuf != ((PyMemoryViewObject *)view)->mbuf || m->exports != 0
        || m->weakreflist != NULL || (m->flags & _Py_MEMORYVIEW_RELEASED)) {
        return 0;
    }
    m->view.buf = (char *)PyMemoryView_GET_BUFFER(view)->buf + offset;
    m->view.len = (Py_ssize_t)n;
    m->view.shape[0] = (Py_ssize_t)n;
    m->hash = -1;  /* a read-only view caches its hash */
    return 1;
}

/* The calling thread's ident, as Python's _thread.get_ident() (PyThread_get_thread_ident) gives it:
 * pthread_self(). On x86-64 glibc that is the thread pointer itself (%fs:0 holds the thread's own
 * address): one load, and no call that would make the caller save registers. */
static inline unsigned long
current_thread(void)
{
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__has_builtin)
#if __has_builtin(__builtin_thread_pointer)
    return (unsigned long)__builtin_thread_pointer();
#else
    return (unsigned long)pthread_self();
#endif
#else
    return (unsigned long)pthread_self();
#endif
}

/* ---- WriterCore ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    attached_t a;
    mmipc_write_state_t st;
    char mark_slots;         /* fill time-index slots here instead of going SLOW at a crossing */
    unsigned int slot_index; /* the next slot to fill */
    unsigned long long stride;
    long long clock;         /* wall minus monotonic time: the Python writer's clock_offset() */
    mmipc_ringer *ringer;    /* the journal's NAME.bells (open_bells), or NULL */
    _Atomic uint32_t *bell_count; /* its count word, or MMIPC_NO_BELLS (never NULL) */
    unsigned long thread;    /* the owning thread's ident (0: any); another thread goes slow */
    char pretouch;           /* keep pages populated ahead of pos (a thread; see mmipc.c) */
    mmipc_pretouch *pt;      /* that thread, once started */
    PyObject *pt_view;       /* a view of the page it works in: the page stays mapped meanwhile */
    PyObject *nano;          /* the last nano returned, refilled when dropped, or NULL */
} WriterCore;

static PyTypeObject WriterCoreType;

static int
writer_clear(WriterCore *self)
{
    detach_view(&self->a);
    self->st.page.base = NULL;
    self->st.limit = 0;
    return 0;
}

/* Stop the pretoucher (it joins in a few us: a madvise chunk at most), then let its page go. */
static void
pretouch_stop(WriterCore *self)
{
    mmipc_pretouch_stop(self->pt);
    self->pt = NULL;
    Py_CLEAR(self->pt_view);
}

/* Point the pretoucher at the attached page, if it is not there yet (starting it on first use).
 * Its own view keeps the page mapped until it has moved on, however Python releases the page. */
static void
pretouch_follow(WriterCore *self)
{
    if (!self->pretouch || (self->pt_view != NULL
                            && PyMemoryView_GET_BUFFER(self->pt_view)->buf == self->a.page.base)) {
        return;
    }
    if (self->pt == NULL && (self->pt = mmipc_pretouch_start()) == NULL) {
        self->pretouch = 0;  /* MMIPC_PRETOUCH=0, or no thread: write without it */
        return;
    }
    mmipc_pretouch_page(self->pt, self->a.page.base, self->a.page.page_size);
    Py_XSETREF(self->pt_view, Py_NewRef(self->a.view));
}

static PyObject *
writer_pretouch_stop(WriterCore *self, PyObject *Py_UNUSED(ignored))
{
    pretouch_stop(self);
    Py_RETURN_NONE;
}

static PyObject *
writer_pretouched(WriterCore *self, void *Py_UNUSED(closure))
{
    if (self->pt != NULL && mmipc_pretouch_unsupported(self->pt)) {
        return PyLong_FromLong(-1);
    }
    return PyLong_FromUnsignedLongLong(mmipc_pretouch_total(self->pt));
}

static void
writer_dealloc(WriterCore *self)
{
    pretouch_stop(self);
    writer_clear(self);
    Py_CLEAR(self->nano);
    mmipc_ringer_close(self->ringer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
writer_attach(WriterCore *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"view", "page_size", "version", "flags", "first_seq", "pos",
                             "last_nano", "next_seq", "slot_boundary", "slot_index", NULL};
    PyObject *view;
    unsigned long long page_size, first_seq, pos, next_seq, boundary;
    unsigned int version, flags;
    unsigned int slot_index = MMIPC_INDEX_SLOTS;
    long long last_nano;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKIIKKLKK|I:_c_attach", kwlist, &view, &page_size,
                                     &version, &flags, &first_seq, &pos, &last_nano, &next_seq,
                                     &boundary, &slot_index)) {
        return NULL;
    }
    if (attach_page(&self->a, view, 1, page_size, version, flags, first_seq, pos, 0) < 0) {
        writer_clear(self);
        return NULL;
    }
    self->st.page = self->a.page;
    self->st.pos = pos;
    self->st.limit = page_size;
    self->st.last_nano = last_nano;
    self->st.next_seq = next_seq;
    self->st.slot_boundary = boundary;
    self->slot_index = slot_index;
    self->stride = mmipc_index_stride(page_size);
    pretouch_follow(self);
    Py_RETURN_NONE;
}

/* A WriterCore with no ringer yet: its count is MMIPC_NO_BELLS, so a commit tests no pointer. */
static PyObject *
writer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    WriterCore *self = (WriterCore *)PyType_GenericNew(type, args, kwds);
    if (self != NULL) {
        self->bell_count = MMIPC_NO_BELLS;
    }
    return (PyObject *)self;
}

static PyObject *
writer_detach(WriterCore *self, PyObject *Py_UNUSED(ignored))
{
    writer_clear(self);
    Py_RETURN_NONE;
}

/* open_bells(path) -> bool: ring the bells listed in `path` (NAME.bells) after every commit, as
 * the C writer does; False if the OS refuses the file (then nobody is rung). */
static PyObject *
writer_open_bells(WriterCore *self, PyObject *arg)
{
    PyObject *bytes;
    if (!PyUnicode_FSConverter(arg, &bytes)) {
        return NULL;
    }
    mmipc_ringer_close(self->ringer);
    self->ringer = mmipc_ringer_open(PyBytes_AS_STRING(bytes));
    self->bell_count = mmipc_ringer_count(self->ringer);
    Py_DECREF(bytes);
    return PyBool_FromLong(self->ringer != NULL);
}

/* close_bells(): stop ringing, unmap NAME.bells and the bells. */
static PyObject *
writer_close_bells(WriterCore *self, PyObject *Py_UNUSED(ignored))
{
    mmipc_ringer_close(self->ringer);
    self->ringer = NULL;
    self->bell_count = MMIPC_NO_BELLS;
    Py_RETURN_NONE;
}

/* A msg_type or source as a C value; 0 (not an error) when out of range: the caller goes SLOW. */
static int
as_u32(PyObject *o, uint32_t max, uint32_t *out)
{
    if (!PyLong_CheckExact(o)) {
        return 0;
    }
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    if ((size_t)Py_SIZE(o) <= 1) {  /* 0 or one digit (< 2**30): CPython 3.11's int layout */
        uint32_t v = Py_SIZE(o) != 0 ? (uint32_t)((PyLongObject *)o)->ob_digit[0] : 0u;
        *out = v;
        return v <= max;
    }
#endif
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || v < 0 || (unsigned long long)v > max) {
        return 0;
    }
    *out = (uint32_t)v;
    return 1;
}

/* The Python writer's clock (its rule 5): CLOCK_MONOTONIC plus the offset Python anchored once per
 * process, so that both backends stamp every journal of a process on one clock. */
static int64_t
writer_stamp(const WriterCore *self)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t nano = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + self->clock;
    return nano < self->st.last_nano ? self->st.last_nano : nano;
}

/* With mark_slots: whether this frame may fill its time-index slots here (SLOW otherwise). */
static int
slots_ok(const WriterCore *self, uint64_t pos)
{
    return pos < self->st.slot_boundary || (self->mark_slots && self->slot_index < MMIPC_INDEX_SLOTS);
}

/* Publish the frame at pos whose payload (and, for a claim, nothing else) is in place. */
static PyObject *
publish(WriterCore *self, uint64_t pos, uint32_t n, uint32_t msg_type, uint32_t source)
{
    int64_t nano = writer_stamp(self);
    mmipc_store_header(&self->st, pos, n, msg_type, source, nano);
    if (pos >= self->st.slot_boundary) {
        self->slot_index = mmipc_mark_index(&self->st, pos, nano, self->slot_index, self->stride);
    }
    mmipc_publish(&self->st, pos, n, nano);
    mmipc_ring_bells(&self->ringer, self->bell_count);
    if (self->nano != NULL && long_refill(self->nano, nano)) {
        return Py_NewRef(self->nano);  /* the caller dropped the last one (see "refilling") */
    }
    PyObject *o = PyLong_FromLongLong(nano);
    Py_XSETREF(self->nano, Py_XNewRef(o));
    return o;
}

/* Parse (payload, msg_type=0, source=0): -1 on a TypeError; *ok = 0 if an id is out of range. */
static int
parse_ids(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, Py_ssize_t first,
          uint32_t ids[2], int *ok)
{
    static const char *names[2] = {"msg_type", "source"};
    ids[0] = ids[1] = 0;
    *ok = 1;
    for (Py_ssize_t i = first; i < nargs; i++) {
        *ok &= as_u32(args[i], i == first ? MMIPC_MAX_MSG_TYPE : 0xFFFFFFFFu, &ids[i - first]);
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int which = -1;
        for (int j = 0; j < 2; j++) {
            if (PyUnicode_CompareWithASCIIString(key, names[j]) == 0) {
                which = j;
            }
        }
        if (which < 0 || which < nargs - first) {
            PyErr_Format(PyExc_TypeError, "unexpected or repeated keyword argument %R", key);
            return -1;
        }
        *ok &= as_u32(args[nargs + k], which == 0 ? MMIPC_MAX_MSG_TYPE : 0xFFFFFFFFu, &ids[which]);
    }
    return 0;
}

/* Whatever write() does not do here: SLOW from a bare WriterCore; from the Python Writer (a
 * subclass), its method _write_from_core(payload, msg_type=0, source=0) with the same arguments,
 * which runs Python's path (page switch, errors, other threads, closed): the nano, or it raises. */
static PyObject *
write_slow(WriterCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static PyObject *name;
    PyObject *stack[1 + 3 + 2];
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (Py_IS_TYPE(self, &WriterCoreType)) {
        return Py_NewRef(slow);
    }
    if (name == NULL && (name = PyUnicode_InternFromString("_write_from_core")) == NULL) {
        return NULL;
    }
    stack[0] = (PyObject *)self;
    memcpy(stack + 1, args, (size_t)(nargs + nkw) * sizeof(PyObject *));
    return PyObject_VectorcallMethod(name, stack, (size_t)(1 + nargs), kwnames);
}

/* write()'s msg_type and source (parse_ids), after a check of the argument count: -1 on a TypeError. */
static int
write_ids(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, uint32_t ids[2], int *ok)
{
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 1 || nargs + nkw > 3) {
        PyErr_SetString(PyExc_TypeError, "write(payload, msg_type=0, source=0)");
        return -1;
    }
    return parse_ids(args, nargs, kwnames, 1, ids, ok);
}

static PyObject *
writer_write(WriterCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    uint32_t ids[2] = {0, 0};
    int ok = 1;
    /* write(payload), the common call, has no ids to parse: no call (about 30 instructions) */
    if ((nargs != 1 || kwnames != NULL) && write_ids(args, nargs, kwnames, ids, &ok) < 0) {
        return NULL;
    }
    if (self->thread != 0 && current_thread() != self->thread) {
        return write_slow(self, args, nargs, kwnames);
    }
    Py_buffer buf;
    const void *data;
    Py_ssize_t n;
    PyObject *payload = args[0];
    buf.obj = NULL;
    if (PyBytes_CheckExact(payload)) {
        data = PyBytes_AS_STRING(payload);
        n = PyBytes_GET_SIZE(payload);
    }
    else {
        if (PyObject_GetBuffer(payload, &buf, PyBUF_C_CONTIGUOUS) < 0) {
            PyErr_Clear();  /* not a contiguous buffer: the Python path raises its own error */
            return write_slow(self, args, nargs, kwnames);
        }
        data = buf.buf;
        n = buf.len;
    }
    uint64_t pos = self->st.pos;
    uint64_t size = mmipc_align8((uint64_t)n + MMIPC_FRAME_HEADER_SIZE);
    PyObject *result;
    if (!ok || (uint64_t)n > 0xFFFFFFFFu || pos + size + MMIPC_PAGE_END_RESERVE > self->st.limit
        || !slots_ok(self, pos)) {
        result = NULL;
    }
    else {
        memcpy(self->st.page.base + pos + MMIPC_FRAME_HEADER_SIZE, data, (size_t)n);
        result = publish(self, pos, (uint32_t)n, ids[0], ids[1]);
    }
    if (buf.obj != NULL) {
        PyBuffer_Release(&buf);
    }
    return result != NULL ? result : write_slow(self, args, nargs, kwnames);
}

static PyObject *
writer_commit(WriterCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t ids[2];
    int ok;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "commit(pos, size, msg_type, source)");
        return NULL;
    }
    unsigned long long pos = PyLong_AsUnsignedLongLong(args[0]);
    unsigned long long n = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred() || parse_ids(args, nargs, NULL, 2, ids, &ok) < 0) {
        return NULL;
    }
    if (pos != self->st.pos || self->st.page.base == NULL
        || pos + mmipc_align8(n + MMIPC_FRAME_HEADER_SIZE) + MMIPC_PAGE_END_RESERVE
               > self->st.page.page_size) {
        PyErr_SetString(PyExc_ValueError, "commit(): the claim is not at the writer's position");
        return NULL;
    }
    if (!ok || !slots_ok(self, pos)) {
        return Py_NewRef(slow);
    }
    return publish(self, pos, (uint32_t)n, ids[0], ids[1]);
}

static PyMemberDef writer_members[] = {
    {"_c_pos", T_ULONGLONG, offsetof(WriterCore, st.pos), 0, "offset of the next frame"},
    {"_c_limit", T_ULONGLONG, offsetof(WriterCore, st.limit), 0, "page size, or 0: every write SLOW"},
    {"_c_last_nano", T_LONGLONG, offsetof(WriterCore, st.last_nano), 0, "last timestamp written"},
    {"_c_next_seq", T_ULONGLONG, offsetof(WriterCore, st.next_seq), 0, "seq of the next frame"},
    {"_c_slot_boundary", T_ULONGLONG, offsetof(WriterCore, st.slot_boundary), 0,
     "a frame at or past this offset fills time-index slots (SLOW unless mark_slots)"},
    {"_c_slot_index", T_UINT, offsetof(WriterCore, slot_index), 0, "the next time-index slot"},
    {"_c_clock", T_LONGLONG, offsetof(WriterCore, clock), 0,
     "wall minus monotonic ns added to CLOCK_MONOTONIC (the Python writer's clock_offset())"},
    {"_c_mark_slots", T_BOOL, offsetof(WriterCore, mark_slots), 0,
     "True: fill time-index slots and first_nano here; False: a crossing goes SLOW"},
    {"_c_thread", T_ULONG, offsetof(WriterCore, thread), 0,
     "ident of the thread that may write (0: any); write() from another goes slow"},
    {"_c_pretouch", T_BOOL, offsetof(WriterCore, pretouch), 0,
     "populate pages ahead of the writer from a thread (from the next attach on)"},
    {NULL, 0, 0, 0, NULL},
};

/* Writer.write's docstring (the native Writer's `write` is this method; a test keeps the two equal).
 * From a bare WriterCore, a write it does not do returns SLOW, with nothing written. */
#define WRITE_DOC                                                                                  \
    "write($self, payload, msg_type=0, source=0)\n--\n\n"                                          \
    "Append one frame and publish it; return its timestamp (ns since the epoch).\n\n"              \
    "`payload` is any C-contiguous buffer: bytes, bytearray, memoryview, a ctypes Structure, a\n"   \
    "numpy record or array.\n\n"                                                                   \
    "Example: ``nano = writer.write(b\"payload\", msg_type=1)``"

static PyMethodDef writer_methods[] = {
    {"_c_attach", (PyCFunction)(void (*)(void))writer_attach, METH_VARARGS | METH_KEYWORDS,
     "attach(view, page_size, version, flags, first_seq, pos, last_nano, next_seq, slot_boundary,"
     " slot_index=960)"},
    {"_c_detach", (PyCFunction)writer_detach, METH_NOARGS, "Drop the core's view of the page."},
    {"_c_open_bells", (PyCFunction)writer_open_bells, METH_O,
     "open_bells(path) -> bool: ring NAME.bells after every commit"},
    {"_c_close_bells", (PyCFunction)writer_close_bells, METH_NOARGS, "Stop ringing; unmap the bells."},
    {"_c_pretouch_stop", (PyCFunction)writer_pretouch_stop, METH_NOARGS,
     "Stop the pretoucher and drop its view of the page (before the page is unmapped)."},
    {"write", (PyCFunction)(void (*)(void))writer_write, METH_FASTCALL | METH_KEYWORDS,
     WRITE_DOC},
    {"_c_commit", (PyCFunction)(void (*)(void))writer_commit, METH_FASTCALL,
     "commit(pos, size, msg_type, source) -> nano, or SLOW: publish a claim filled in place"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef writer_getset[] = {
    {"_c_pretouched", (getter)writer_pretouched, NULL,
     "bytes the pretoucher has populated (-1: the kernel lacks MADV_POPULATE_WRITE)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WriterCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mmipc.journal._native.WriterCore",
    .tp_basicsize = sizeof(WriterCore),
    .tp_dealloc = (destructor)writer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The writer's per-frame hot path on a page mapped by Python (the native Writer's base).",
    .tp_methods = writer_methods,
    .tp_members = writer_members,
    .tp_getset = writer_getset,
    .tp_new = writer_new,
};

/* ---- CursorCore ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    attached_t a;
    PyObject *jid;
    PyTypeObject *frame_type;
    Py_ssize_t frame_fields;     /* 5 (v1 Frame) or 6 (with seq) */
    uint64_t pos;
    int64_t last_nano;
    int64_t next_nano;           /* -1 unless a frame is peeked */
    mmipc_peeked_t next;
    PyObject *last[2];           /* the last two Frames read or taken, refilled when dropped */
    int turn;                    /* the slot of last[] to try first */
    PyObject *views[2];          /* the last two payload views read_data handed out, likewise */
    int view_turn;               /* the slot of views[] to try first */
} CursorCore;

static PyTypeObject CursorCoreType;

/* SLOW from a bare CursorCore; from the Python Cursor (a subclass), its method `name` (no
 * arguments), which runs Python's path (page ends, damage, no page yet) and returns its result. */
static PyObject *
cursor_slow(CursorCore *self, const char *name)
{
    if (Py_IS_TYPE(self, &CursorCoreType)) {
        return Py_NewRef(slow);
    }
    return PyObject_CallMethod((PyObject *)self, name, NULL);
}

static int
cursor_init(CursorCore *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"jid", "frame_class", NULL};
    PyObject *jid;
    PyObject *frame_class;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!:CursorCore", kwlist, &jid, &PyType_Type,
                                     &frame_class)) {
        return -1;
    }
    PyTypeObject *type = (PyTypeObject *)frame_class;
    if (!PyType_IsSubtype(type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "frame_class must be a NamedTuple class");
        return -1;
    }
    PyObject *fields = PyObject_GetAttrString(frame_class, "_fields");
    if (fields == NULL) {
        return -1;
    }
    Py_ssize_t n = PyObject_Length(fields);
    Py_DECREF(fields);
    if (n != 5 && n != 6) {
        PyErr_SetString(PyExc_TypeError, "frame_class must have 5 or 6 fields");
        return -1;
    }
    Py_XSETREF(self->jid, Py_NewRef(jid));
    Py_XSETREF(self->frame_type, (PyTypeObject *)Py_NewRef(frame_class));
    self->frame_fields = n;
    self->next_nano = -1;
    return 0;
}

static void
drop_frames(CursorCore *self)
{
    Py_CLEAR(self->last[0]);
    Py_CLEAR(self->last[1]);
    Py_CLEAR(self->views[0]);
    Py_CLEAR(self->views[1]);
}

static void
cursor_dealloc(CursorCore *self)
{
    detach_view(&self->a);
    drop_frames(self);
    Py_CLEAR(self->jid);
    Py_CLEAR(self->frame_type);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
cursor_attach(CursorCore *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"view", "page_size", "version", "flags", "first_seq", "pos", NULL};
    PyObject *view;
    unsigned long long page_size, first_seq, pos;
    unsigned int version, flags;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKIIKK:_c_attach", kwlist, &view, &page_size,
                                     &version, &flags, &first_seq, &pos)) {
        return NULL;
    }
    drop_frames(self);  /* their views would keep the page it leaves mapped */
    if (attach_page(&self->a, view, 0, page_size, version, flags, first_seq, pos,
                    MMIPC_FRAME_HEADER_SIZE) < 0) {
        return NULL;
    }
    self->pos = pos;
    self->next_nano = -1;
    Py_RETURN_NONE;
}

static PyObject *
cursor_detach(CursorCore *self, PyObject *Py_UNUSED(ignored))
{
    detach_view(&self->a);
    drop_frames(self);  /* their views are exports of the page: mmap.close() would refuse */
    self->next_nano = -1;
    Py_RETURN_NONE;
}

/* The Frame NamedTuple for a peeked frame of the attached page. */
static PyObject *
make_frame(PyTypeObject *type, Py_ssize_t fields, PyObject *jid, PyObject *view,
           const mmipc_peeked_t *p)
{
    PyObject *data = payload_view(view, p->pos + MMIPC_FRAME_HEADER_SIZE, p->payload_len);
    if (data == NULL) {
        return NULL;
    }
    PyObject *frame = type->tp_alloc(type, fields);
    if (frame == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    PyObject *nano = PyLong_FromLongLong(p->nano);
    PyObject *msg_type = PyLong_FromUnsignedLong(p->msg_type);
    PyObject *source = PyLong_FromUnsignedLong(p->source);
    PyObject *seq = fields == 6 ? PyLong_FromLongLong(p->seq) : NULL;
    PyTuple_SET_ITEM(frame, 0, nano);
    PyTuple_SET_ITEM(frame, 1, msg_type);
    PyTuple_SET_ITEM(frame, 2, source);
    PyTuple_SET_ITEM(frame, 3, Py_NewRef(jid));
    PyTuple_SET_ITEM(frame, 4, data);
    if (fields == 6) {
        PyTuple_SET_ITEM(frame, 5, seq);
    }
    if (nano == NULL || msg_type == NULL || source == NULL || (fields == 6 && seq == NULL)) {
        Py_DECREF(frame);
        return NULL;
    }
    return frame;
}

/* Whether a kept Frame can be refilled: only the cursor holds it (and, with `view`, its payload
 * view too). */
static int
frame_free(PyObject *f, int view)
{
    return f != NULL && Py_REFCNT(f) == 1
           && (!view || Py_REFCNT(((PyTupleObject *)f)->ob_item[4]) == 1);
}

/* The slot of `last` (a cursor's or the merge's two kept Frames) to fill: one whose Frame and view
 * are free, else an empty one, else one whose Frame is free, else `turn` (a new Frame). Two slots,
 * because a loop holds the frame (`for f in ...`) or the view (`data = read().data`) of one read
 * until the next read has returned. */
static int
frame_slot(PyObject *const last[2], int turn)
{
    for (int k = 0; k < 2; k++) {
        if (frame_free(last[turn ^ k], 1)) {
            return turn ^ k;
        }
    }
    for (int k = 0; k < 2; k++) {
        if (last[turn ^ k] == NULL) {
            return turn ^ k;
        }
    }
    return frame_free(last[turn ^ 1], 0) ? turn ^ 1 : turn;
}

/* The Frame for a peeked frame: one of the last two this cursor handed out, refilled, if only the
 * cursor still holds it (see "refilling what the caller has dropped"), else a new one it keeps. */
static PyObject *
cursor_frame(CursorCore *self, const mmipc_peeked_t *p)
{
    int slot = frame_slot(self->last, self->turn);
    self->turn = slot ^ 1;
    PyObject *f = self->last[slot];
    if (f == NULL || Py_REFCNT(f) != 1) {
        f = make_frame(self->frame_type, self->frame_fields, self->jid, self->a.view, p);
        Py_XSETREF(self->last[slot], Py_XNewRef(f));
        return f;
    }
    PyObject **item = ((PyTupleObject *)f)->ob_item;
    uint64_t offset = p->pos + MMIPC_FRAME_HEADER_SIZE;
    if (!view_refill(item[4], self->a.view, offset, p->payload_len)) {
        PyObject *data = payload_view(self->a.view, offset, p->payload_len);
        if (data == NULL) {
            return NULL;
        }
        Py_SETREF(item[4], data);
    }
    if (set_long(&item[0], p->nano) < 0 || set_long(&item[1], p->msg_type) < 0
        || set_long(&item[2], p->source) < 0
        || (self->frame_fields == 6 && set_long(&item[5], p->seq) < 0)) {
        Py_CLEAR(self->last[slot]);  /* half refilled: never hand it out */
        return NULL;
    }
    return Py_NewRef(f);
}

static void
step_past(CursorCore *self, const mmipc_peeked_t *p)
{
    self->pos = p->pos + mmipc_align8(p->length);
    self->last_nano = p->nano;
    self->next_nano = -1;
}

/* read, poll and take are METH_FASTCALL, not METH_NOARGS: CPython 3.11 calls a bound FASTCALL
 * builtin straight from its CALL instruction, skipping two layers of dispatch (about 60 of the
 * ~260 instructions an empty read costs from Python). */
#define NO_ARGS(name)                                                                              \
    if (nargs != 0) {                                                                              \
        PyErr_SetString(PyExc_TypeError, name "() takes no arguments");                           \
        return NULL;                                                                               \
    }

static PyObject *
cursor_read(CursorCore *self, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    NO_ARGS("read")
    if (self->a.view == NULL || self->next_nano >= 0) {
        return cursor_slow(self, "_read_from_core");
    }
    mmipc_peeked_t p;
    int kind = mmipc_peek(&self->a.page, self->pos, self->last_nano, &p);
    if (kind == MMIPC_PEEK_NONE) {
        Py_RETURN_NONE;
    }
    if (kind != MMIPC_PEEK_FRAME) {
        return cursor_slow(self, "_read_from_core");
    }
    PyObject *frame = cursor_frame(self, &p);
    if (frame != NULL) {
        step_past(self, &p);
    }
    return frame;
}

/* The payload view for a peeked frame: one of the last two read_data handed out, pointed at the
 * new payload, if only the cursor still holds it (view_refill's conditions), else a new one it
 * keeps. Two slots for the reason frame_slot gives: `data = read_data()` holds the last view until
 * the next call has returned. */
static PyObject *
cursor_data(CursorCore *self, const mmipc_peeked_t *p)
{
    uint64_t offset = p->pos + MMIPC_FRAME_HEADER_SIZE;
    int t = self->view_turn;
    for (int k = 0; k < 2; k++) {
        PyObject *v = self->views[t ^ k];
        if (v != NULL && view_refill(v, self->a.view, offset, p->payload_len)) {
            self->view_turn = t ^ k ^ 1;
            return Py_NewRef(v);
        }
    }
    PyObject *v = payload_view(self->a.view, offset, p->payload_len);
    if (v == NULL) {
        return NULL;
    }
    int slot = self->views[t] == NULL || self->views[t ^ 1] != NULL ? t : t ^ 1;
    Py_XSETREF(self->views[slot], Py_NewRef(v));
    self->view_turn = slot ^ 1;
    return v;
}

/* read_data's slow path, from the Python Cursor: its read (which knows page ends, damage and the
 * files) and that Frame's payload view. */
static PyObject *
cursor_slow_data(CursorCore *self)
{
    PyObject *frame = cursor_slow(self, "_read_from_core");
    if (frame == NULL || frame == Py_None || frame == slow) {
        return frame;
    }
    if (!PyTuple_Check(frame) || PyTuple_GET_SIZE(frame) < 5) {
        Py_DECREF(frame);
        PyErr_SetString(PyExc_TypeError, "read_data(): the slow path did not return a Frame");
        return NULL;
    }
    PyObject *data = Py_NewRef(PyTuple_GET_ITEM(frame, 4));
    Py_DECREF(frame);
    return data;
}

/* read(), but only the frame's payload view: what a consumer that needs nothing else calls, with
 * no Frame and no ints made (about 200 instructions fewer than read().data from Python). */
static PyObject *
cursor_read_data(CursorCore *self, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    NO_ARGS("read_data")
    if (self->a.view == NULL || self->next_nano >= 0) {
        return cursor_slow_data(self);
    }
    mmipc_peeked_t p;
    int kind = mmipc_peek(&self->a.page, self->pos, self->last_nano, &p);
    if (kind == MMIPC_PEEK_NONE) {
        Py_RETURN_NONE;
    }
    if (kind != MMIPC_PEEK_FRAME) {
        return cursor_slow_data(self);
    }
    PyObject *data = cursor_data(self, &p);
    if (data != NULL) {
        step_past(self, &p);
    }
    return data;
}

/* The next frame's timestamp (peeked), -1 if there is none yet, -2 for SLOW. */
static int64_t
poll_core(CursorCore *self)
{
    if (self->next_nano >= 0) {
        return self->next_nano;
    }
    if (self->a.view == NULL) {
        return -2;
    }
    int kind = mmipc_peek(&self->a.page, self->pos, self->last_nano, &self->next);
    if (kind == MMIPC_PEEK_FRAME) {
        self->next_nano = self->next.nano;
        return self->next_nano;
    }
    return kind == MMIPC_PEEK_NONE ? -1 : -2;
}

static PyObject *
cursor_poll(CursorCore *self, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    NO_ARGS("poll")
    int64_t nano = poll_core(self);
    if (nano == -2 && !Py_IS_TYPE(self, &CursorCoreType)) {
        return PyObject_CallMethod((PyObject *)self, "_poll_from_core", NULL);
    }
    return PyLong_FromLongLong(nano);
}

static PyObject *
take_core(CursorCore *self)
{
    if (self->next_nano < 0 || self->a.view == NULL) {
        PyErr_SetString(PyExc_ValueError, "take(): no frame is peeked (poll() first)");
        return NULL;
    }
    PyObject *frame = cursor_frame(self, &self->next);
    if (frame != NULL) {
        step_past(self, &self->next);
    }
    return frame;
}

/* From the Python Cursor, a take with nothing peeked here peeks first, or lets Python do it. */
static PyObject *
cursor_take(CursorCore *self, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    NO_ARGS("take")
    if (!Py_IS_TYPE(self, &CursorCoreType) && (self->next_nano < 0 || self->a.view == NULL)
        && poll_core(self) < 0) {
        return PyObject_CallMethod((PyObject *)self, "_take_from_core", NULL);
    }
    return take_core(self);
}

/* ---- Batch --------------------------------------------------------------------------------- */

#define BATCH_COLUMNS 6
typedef struct {
    PyObject_HEAD
    PyObject *view;          /* the batch's own view of the page */
    PyObject *storage;       /* bytes: BATCH_COLUMNS columns of count int64 each */
    PyObject *jid;
    PyTypeObject *frame_type;
    Py_ssize_t frame_fields;
    Py_ssize_t count;
} Batch;

static void
batch_dealloc(Batch *self)
{
    Py_CLEAR(self->view);
    Py_CLEAR(self->storage);
    Py_CLEAR(self->jid);
    Py_CLEAR(self->frame_type);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int64_t *
batch_column(const Batch *self, int column)
{
    return (int64_t *)(void *)PyBytes_AS_STRING(self->storage) + column * self->count;
}

static Py_ssize_t
batch_len(Batch *self)
{
    return self->count;
}

static PyObject *
batch_item(Batch *self, Py_ssize_t i)
{
    if (i < 0 || i >= self->count) {
        PyErr_SetString(PyExc_IndexError, "batch index out of range");
        return NULL;
    }
    mmipc_peeked_t p;
    p.nano = batch_column(self, 0)[i];
    p.msg_type = (uint32_t)batch_column(self, 1)[i];
    p.source = (uint32_t)batch_column(self, 2)[i];
    p.pos = (uint64_t)batch_column(self, 3)[i] - MMIPC_FRAME_HEADER_SIZE;
    p.payload_len = (uint32_t)batch_column(self, 4)[i];
    p.seq = batch_column(self, 5)[i];
    return make_frame(self->frame_type, self->frame_fields, self->jid, self->view, &p);
}

static PyObject *
batch_data(Batch *self, PyObject *arg)
{
    Py_ssize_t i = PyNumber_AsSsize_t(arg, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (i < 0 || i >= self->count) {
        PyErr_SetString(PyExc_IndexError, "batch index out of range");
        return NULL;
    }
    return payload_view(self->view, (uint64_t)batch_column(self, 3)[i],
                        (uint32_t)batch_column(self, 4)[i]);
}

/* Column k as a memoryview of format 'q' over the batch's storage (zero-copy). */
static PyObject *
batch_get_column(Batch *self, void *closure)
{
    Py_ssize_t k = (Py_ssize_t)(intptr_t)closure;
    PyObject *whole = PyMemoryView_FromObject(self->storage);
    if (whole == NULL) {
        return NULL;
    }
    PyObject *part = PySequence_GetSlice(whole, k * self->count * 8, (k + 1) * self->count * 8);
    Py_DECREF(whole);
    if (part == NULL) {
        return NULL;
    }
    PyObject *column = PyObject_CallMethod(part, "cast", "s", "q");
    Py_DECREF(part);
    return column;
}

static PyObject *
batch_get_buffer(Batch *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->view);
}

static PyGetSetDef batch_getset[] = {
    {"nano", (getter)batch_get_column, NULL, "timestamps (int64)", (void *)0},
    {"msg_type", (getter)batch_get_column, NULL, "message types", (void *)1},
    {"source", (getter)batch_get_column, NULL, "sources", (void *)2},
    {"offset", (getter)batch_get_column, NULL, "payload offsets in `buffer`", (void *)3},
    {"length", (getter)batch_get_column, NULL, "payload lengths", (void *)4},
    {"seq", (getter)batch_get_column, NULL, "sequence numbers (-1 in v1 pages)", (void *)5},
    {"buffer", (getter)batch_get_buffer, NULL, "a read-only view of the whole page", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef batch_methods[] = {
    {"data", (PyCFunction)batch_data, METH_O, "data(i): a zero-copy view of payload i"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods batch_as_sequence = {
    .sq_length = (lenfunc)batch_len,
    .sq_item = (ssizeargfunc)batch_item,
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mmipc.journal._native.Batch",
    .tp_basicsize = sizeof(Batch),
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Frames read in one call: int64 columns, zero-copy payloads, iterates as Frames.",
    .tp_as_sequence = &batch_as_sequence,
    .tp_methods = batch_methods,
    .tp_getset = batch_getset,
};

static PyObject *
new_batch(CursorCore *self, const int64_t *columns, Py_ssize_t count, Py_ssize_t cap)
{
    Batch *b = PyObject_New(Batch, &BatchType);
    if (b == NULL) {
        return NULL;
    }
    b->view = PyMemoryView_FromObject(self->a.view);
    b->storage = PyBytes_FromStringAndSize(NULL, count * BATCH_COLUMNS * 8);
    b->jid = Py_NewRef(self->jid);
    b->frame_type = (PyTypeObject *)Py_NewRef(self->frame_type);
    b->frame_fields = self->frame_fields;
    b->count = count;
    if (b->view == NULL || b->storage == NULL) {
        Py_DECREF(b);
        return NULL;
    }
    for (int k = 0; k < BATCH_COLUMNS; k++) {
        memcpy(batch_column(b, k), columns + k * cap, (size_t)count * 8);
    }
    return (PyObject *)b;
}

static PyObject *
cursor_read_batch(CursorCore *self, PyObject *arg)
{
    Py_ssize_t limit = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (self->a.view == NULL || self->next_nano >= 0 || limit < 1) {
        return Py_NewRef(slow);
    }
    /* A page holds at most (page_size - pos) / 32 more frames: the bound of one batch. */
    Py_ssize_t room = (Py_ssize_t)((self->a.page.page_size - self->pos) / MMIPC_FRAME_HEADER_SIZE);
    Py_ssize_t cap = limit < room ? limit : room;
    cap = cap > 0 ? cap : 1;
    int64_t *columns = PyMem_Malloc((size_t)cap * BATCH_COLUMNS * sizeof(int64_t));
    if (columns == NULL) {
        return PyErr_NoMemory();
    }
    Py_ssize_t count = 0;
    uint64_t pos = self->pos;
    int64_t last_nano = self->last_nano;
    mmipc_peeked_t p;
    int kind = MMIPC_PEEK_NONE;
    while (count < cap && (kind = mmipc_peek(&self->a.page, pos, last_nano, &p)) == MMIPC_PEEK_FRAME) {
        columns[count] = p.nano;
        columns[cap + count] = p.msg_type;
        columns[2 * cap + count] = p.source;
        columns[3 * cap + count] = (int64_t)(p.pos + MMIPC_FRAME_HEADER_SIZE);
        columns[4 * cap + count] = p.payload_len;
        columns[5 * cap + count] = p.seq;
        pos = p.pos + mmipc_align8(p.length);
        last_nano = p.nano;
        count++;
    }
    PyObject *result;
    if (count == 0 && kind == MMIPC_PEEK_OTHER) {
        result = Py_NewRef(slow);
    }
    else {
        result = new_batch(self, columns, count, cap);
        if (result != NULL) {
            self->pos = pos;
            self->last_nano = last_nano;
        }
    }
    PyMem_Free(columns);
    return result;
}

static PyMemberDef cursor_members[] = {
    {"_c_pos", T_ULONGLONG, offsetof(CursorCore, pos), 0, "offset of the next frame"},
    {"_c_last_nano", T_LONGLONG, offsetof(CursorCore, last_nano), 0, "timestamp of the last frame"},
    {"_c_next_nano", T_LONGLONG, offsetof(CursorCore, next_nano), 0, "peeked timestamp, or -1"},
    {"_c_msg_type", T_UINT, offsetof(CursorCore, next.msg_type), READONLY, "peeked msg_type"},
    {"_c_source", T_UINT, offsetof(CursorCore, next.source), READONLY, "peeked source"},
    {"_c_length", T_UINT, offsetof(CursorCore, next.length), READONLY, "peeked commit word"},
    {"_c_seq", T_LONGLONG, offsetof(CursorCore, next.seq), READONLY, "peeked seq (-1 in v1)"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef cursor_methods[] = {
    {"_c_attach", (PyCFunction)(void (*)(void))cursor_attach, METH_VARARGS | METH_KEYWORDS,
     "attach(view, page_size, version, flags, first_seq, pos)"},
    {"_c_detach", (PyCFunction)cursor_detach, METH_NOARGS, "Drop the core's view of the page."},
    {"read", (PyCFunction)(void (*)(void))cursor_read, METH_FASTCALL,
     "read() -> Frame | None | SLOW (from the Python Cursor: Frame | None)"},
    {"read_data", (PyCFunction)(void (*)(void))cursor_read_data, METH_FASTCALL,
     "read_data() -> memoryview | None | SLOW: read()'s payload view alone (no Frame made)"},
    {"poll", (PyCFunction)(void (*)(void))cursor_poll, METH_FASTCALL,
     "poll() -> nano | -1 (none) | -2 (SLOW; from the Python Cursor: never)"},
    {"take", (PyCFunction)(void (*)(void))cursor_take, METH_FASTCALL, "take() -> the peeked Frame"},
    {"read_batch", (PyCFunction)cursor_read_batch, METH_O, "read_batch(limit) -> Batch | SLOW"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CursorCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mmipc.journal._native.CursorCore",
    .tp_basicsize = sizeof(CursorCore),
    .tp_dealloc = (destructor)cursor_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "CursorCore(jid, frame_class): a cursor's per-frame hot path on a page mapped by Python.",
    .tp_methods = cursor_methods,
    .tp_members = cursor_members,
    .tp_init = (initproc)cursor_init,
    .tp_new = PyType_GenericNew,
};

/* ---- module functions ---------------------------------------------------------------------- */

static PyObject *
merge_read(PyObject *Py_UNUSED(module), PyObject *cores)
{
    if (!PyList_CheckExact(cores)) {
        PyErr_SetString(PyExc_TypeError, "merge_read() needs a list of CursorCore");
        return NULL;
    }
    CursorCore *best = NULL;
    int64_t best_nano = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(cores); i++) {
        PyObject *item = PyList_GET_ITEM(cores, i);
        if (!PyObject_TypeCheck(item, &CursorCoreType)) {
            PyErr_SetString(PyExc_TypeError, "merge_read() needs a list of CursorCore");
            return NULL;
        }
        int64_t nano = poll_core((CursorCore *)item);
        if (nano == -2) {
            return Py_NewRef(slow);
        }
        if (nano >= 0 && (best == NULL || nano < best_nano)) {
            best = (CursorCore *)item;
            best_nano = nano;
        }
    }
    if (best == NULL) {
        Py_RETURN_NONE;
    }
    return take_core(best);
}

static PyObject *
native_crc32(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer buf;
    unsigned long crc = 0;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "crc32(data, value=0)");
        return NULL;
    }
    if (nargs == 2) {
        crc = PyLong_AsUnsignedLongMask(args[1]);
        if (crc == (unsigned long)-1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_C_CONTIGUOUS) < 0) {
        return NULL;
    }
    uint32_t out = mmipc_crc32_update((uint32_t)crc, buf.buf, (size_t)buf.len);
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(out);
}

static PyObject *
native_now(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLongLong(mmipc_now());
}

/* ---- doorbells (docs/format.md, "Doorbells") ------------------------------------------------ */

/* A reader's doorbell file, mapped read-write by its reader and by the writers that ring it:
 * u32 futex word at 8, u32 sleeping at 12, u32 pending at 16, one flag byte per journal from 64. */
#define BELL_WORD 8
#define BELL_SLEEPING 12
#define BELL_PENDING 16
#define BELL_FLAGS 64

static int
bell_buffer(PyObject *obj, Py_buffer *b, Py_ssize_t need)
{
    if (PyObject_GetBuffer(obj, b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        return -1;
    }
    if (b->len < need || ((uintptr_t)b->buf & 7u)) {
        PyBuffer_Release(b);
        PyErr_SetString(PyExc_ValueError, "a doorbell needs its whole 8-byte aligned mapping");
        return -1;
    }
    return 0;
}

static _Atomic uint32_t *
bell_word(Py_buffer *b, size_t offset)
{
    return (_Atomic uint32_t *)((char *)b->buf + offset);
}

/* bell_ring(bell, index): flag journal `index`, mark the bell pending, and wake its reader if it
 * sleeps. The caller has committed its frame before: the exchange of `sleeping` is a full fence
 * (Dekker: store the commit, fence, load the waiter's flag). */
static PyObject *
native_bell_ring(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "bell_ring(bell, index)");
        return NULL;
    }
    Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    if (index == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (index < 0 || bell_buffer(args[0], &b, BELL_FLAGS + index + 1) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "bell_ring(): index out of range");
        }
        return NULL;
    }
    _Atomic unsigned char *flag = (_Atomic unsigned char *)((char *)b.buf + BELL_FLAGS + index);
    atomic_store_explicit(flag, 1, memory_order_relaxed);
    atomic_store_explicit(bell_word(&b, BELL_PENDING), 1u, memory_order_release);
    uint32_t sleeping = atomic_exchange_explicit(bell_word(&b, BELL_SLEEPING), 0u, memory_order_seq_cst);
    if (sleeping == 1) {
        atomic_fetch_add_explicit(bell_word(&b, BELL_WORD), 1u, memory_order_seq_cst);
        syscall(SYS_futex, (uint32_t *)bell_word(&b, BELL_WORD), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    }
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(sleeping);  /* 2: an asyncio reader, woken through its FIFO */
}

/* The needy bytes of a sleeping reader (MergeCore holds one per journal followed: merge_need_all). */
static PyTypeObject MergeCoreType;
static void merge_need_all(PyObject *core);

/* After the store of `sleeping`: set the reader's needy byte in every list it is in, then a full
 * fence (docs/format.md, "Needy bytes"). `needy` is the reader's MergeCore (its bytes set in C, one
 * store each) or a callable that sets them (an older caller: Bell.need_all). -1 if it raised. */
static int
bell_set_needy(PyObject *needy)
{
    if (PyObject_TypeCheck(needy, &MergeCoreType)) {
        merge_need_all(needy);
    }
    else {
        PyObject *done = PyObject_CallNoArgs(needy);
        if (done == NULL) {
            return -1;
        }
        Py_DECREF(done);
    }
    mmipc_full_fence();
    return 0;
}

/* bell_sleep(bell, how=1, needy=None) -> seq: announce that the reader is about to sleep (full
 * fence), on the futex (how 1) or in an event loop (how 2), then set its needy bytes (`needy`, as
 * for bell_block) and fence again; returns the futex word to wait on. The reader then re-checks
 * its journals, and waits only if they are empty. */
static PyObject *
native_bell_sleep(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b;
    unsigned long how = 1;
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "bell_sleep(bell, how=1, needy=None)");
        return NULL;
    }
    if (nargs >= 2 && (how = PyLong_AsUnsignedLong(args[1])) == (unsigned long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if (bell_buffer(args[0], &b, BELL_FLAGS) < 0) {
        return NULL;
    }
    uint32_t seq = atomic_load_explicit(bell_word(&b, BELL_WORD), memory_order_seq_cst);
    atomic_exchange_explicit(bell_word(&b, BELL_SLEEPING), (uint32_t)how, memory_order_seq_cst);
    PyBuffer_Release(&b);
    if (nargs == 3 && args[2] != Py_None && bell_set_needy(args[2]) < 0) {
        return NULL;  /* `sleeping` stays set: the caller's awake() clears it (Bell.sleep's finally) */
    }
    return PyLong_FromUnsignedLong(seq);
}

#define LONGEST_WAIT_NS 3600000000000LL /* _bell.LONGEST_WAIT: one wait lasts an hour at most */

/* bell_wait(bell, seq, timeout_ns): sleep until a writer changes the word from `seq` (or the
 * timeout, < 0: none, passes, or a signal arrives), GIL released; then clear `sleeping`. A timeout
 * over LONGEST_WAIT_NS (one that does not fit a long long included) waits LONGEST_WAIT_NS: the
 * caller sees an early, spurious wake-up, which every caller handles, not an OverflowError. */
static PyObject *
native_bell_wait(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "bell_wait(bell, seq, timeout_ns)");
        return NULL;
    }
    unsigned long seq = PyLong_AsUnsignedLong(args[1]);
    int overflow = 0;
    long long timeout = PyErr_Occurred() ? 0 : PyLong_AsLongLongAndOverflow(args[2], &overflow);
    if (PyErr_Occurred() || bell_buffer(args[0], &b, BELL_FLAGS) < 0) {
        return NULL;
    }
    if (overflow > 0 || timeout > LONGEST_WAIT_NS) {
        timeout = LONGEST_WAIT_NS;
    }
    else if (overflow < 0) {
        timeout = -1;  /* below any long long: negative, "no limit", as -1 is */
    }
    struct timespec ts = {(time_t)(timeout / 1000000000), (long)(timeout % 1000000000)};
    Py_BEGIN_ALLOW_THREADS
    syscall(SYS_futex, (uint32_t *)bell_word(&b, BELL_WORD), FUTEX_WAIT, (uint32_t)seq,
            timeout < 0 ? NULL : &ts, NULL, 0);
    Py_END_ALLOW_THREADS
    atomic_store_explicit(bell_word(&b, BELL_SLEEPING), 0u, memory_order_relaxed);
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

/* bell_block(bell, read, timeout_ns, needy=None) -> a frame, True or False: the whole sleep of wait="block"
 * (_block.py) in one call, so that a woken reader goes from the futex to its frame without a
 * Python frame in between. Announce sleeping on the futex (the exchange is the full fence), re-check
 * with read(), and only if that found nothing wait while the word is still the one loaded before
 * the announcement (Drepper's rule), GIL released, `timeout_ns` at most (< 0: no limit). Then clear
 * `sleeping` and, if a ring changed the word, read() at once. Returns the frame read, else True if
 * a ring ended the wait, False if none did (the timeout, a spurious wake-up): then the caller sweeps.
 * A signal that interrupts the wait runs its handler here; an exception it raises is returned. */
/* The whole of bell_block below, for it and for BlockIter (_blockiter.c): a frame, True, False, or
 * NULL (an error, or an exception a signal handler raised). */
/* Clear `sleeping` of a bell mapped again (after Python code ran: a signal handler, the re-check read
 * or `needy` may have closed the reader, and its bell with it: then there is nothing to clear). */
static void
bell_clear_sleeping(PyObject *bell)
{
    Py_buffer b;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);  /* keep the exception being returned, if any */
    if (bell_buffer(bell, &b, BELL_FLAGS) == 0) {
        atomic_store_explicit(bell_word(&b, BELL_SLEEPING), 0u, memory_order_relaxed);
        PyBuffer_Release(&b);
    }
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
}

/* Announce sleep: `sleeping` set, then the needy bytes (a full fence each); *seq is the futex word
 * loaded before. -1 with an exception. The bell is not held mapped after: a handler may close it. */
static int
bell_announce(PyObject *bell, PyObject *needy, uint32_t *seq)
{
    Py_buffer b;
    if (bell_buffer(bell, &b, BELL_FLAGS) < 0) {
        return -1;
    }
    *seq = atomic_load_explicit(bell_word(&b, BELL_WORD), memory_order_seq_cst);
    atomic_exchange_explicit(bell_word(&b, BELL_SLEEPING), 1u, memory_order_seq_cst);
    PyBuffer_Release(&b);
    if (needy != NULL && needy != Py_None && bell_set_needy(needy) < 0) {  /* after `sleeping` */
        bell_clear_sleeping(bell);
        return -1;
    }
    return 0;
}

/* Wait on the futex while its word is `seq`, `timeout` ns at most (< 0: no limit), GIL released;
 * then clear `sleeping`. 1 if a ring changed the word (or `sleeping` was cleared before the wait),
 * 0 if not, -1 with an exception (a signal handler's). A bell closed meanwhile (a signal handler closed the reader before the wait): 0, and
 * the caller's next read says the reader is closed. */
static int
bell_futex_wait(PyObject *bell, uint32_t seq, long long timeout)
{
    Py_buffer b;
    if (bell_buffer(bell, &b, BELL_FLAGS) < 0) {
        PyErr_Clear();
        return 0;
    }
    _Atomic uint32_t *word = bell_word(&b, BELL_WORD);
    if (atomic_load_explicit(bell_word(&b, BELL_SLEEPING), memory_order_seq_cst) == 0) {
        PyBuffer_Release(&b);  /* cleared since the announcement: a ring, or a sleep of this reader */
        return 1;              /* nested in a signal handler (its end cleared it): read again */
    }
    struct timespec ts = {(time_t)(timeout / 1000000000), (long)(timeout % 1000000000)};
    long rc;
    Py_BEGIN_ALLOW_THREADS
    rc = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, seq, timeout < 0 ? NULL : &ts, NULL, 0);
    Py_END_ALLOW_THREADS
    int interrupted = rc < 0 && errno == EINTR;
    atomic_store_explicit(bell_word(&b, BELL_SLEEPING), 0u, memory_order_relaxed);
    int rung = atomic_load_explicit(word, memory_order_acquire) != seq;
    PyBuffer_Release(&b);
    return interrupted && PyErr_CheckSignals() < 0 ? -1 : rung;
}

PyObject *
mmipc_bell_block(PyObject *bell, PyObject *read, long long timeout, PyObject *needy)
{
    uint32_t seq;
    if (bell_announce(bell, needy, &seq) < 0) {
        return NULL;
    }
    PyObject *frame = PyObject_CallNoArgs(read);  /* the re-check after the announcement */
    if (frame == Py_None) {
        Py_DECREF(frame);
        /* A signal that came during the re-check (a read in C runs no handler) is handled now, not
         * after the wait: a Ctrl-C would wait out the nap, or, with no limit, for a frame. */
        frame = PyErr_CheckSignals() < 0 ? NULL : Py_None;
    }
    if (frame != Py_None) {
        bell_clear_sleeping(bell);  /* a frame or an error */
        return frame;
    }
    int rung = bell_futex_wait(bell, seq, timeout);
    if (rung <= 0) {
        return rung < 0 ? NULL : Py_NewRef(Py_False);
    }
    frame = PyObject_CallNoArgs(read);
    if (frame == Py_None) {
        Py_DECREF(frame);
        Py_RETURN_TRUE;
    }
    return frame;
}

static PyObject *
native_bell_block(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "bell_block(bell, read, timeout_ns, needy=None)");
        return NULL;
    }
    long long timeout = PyLong_AsLongLong(args[2]);
    if (timeout == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return mmipc_bell_block(args[0], args[1], timeout, nargs == 4 ? args[3] : NULL);
}

/* bell_collect(bell, n) -> list of the flagged journal indexes below n, flags cleared: pending
 * and each flag are cleared BEFORE the caller polls the journals (full fence between), so a ring
 * that lands after a clear stays visible for the next collect. */
static PyObject *
native_bell_collect(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "bell_collect(bell, n)");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if ((n == -1 && PyErr_Occurred()) || bell_buffer(args[0], &b, BELL_FLAGS) < 0) {
        return NULL;
    }
    if (n > b.len - BELL_FLAGS) {
        n = b.len - BELL_FLAGS;
    }
    PyObject *out = PyList_New(0);
    atomic_exchange_explicit(bell_word(&b, BELL_PENDING), 0u, memory_order_seq_cst);
    unsigned char *flags = (unsigned char *)b.buf + BELL_FLAGS;
    for (Py_ssize_t i = 0; out != NULL && i < n; i += 8) {
        uint64_t word;
        memcpy(&word, flags + i, 8);  /* eight flags at once: most are clear */
        for (Py_ssize_t j = i; word != 0 && j < i + 8 && j < n; j++) {
            _Atomic unsigned char *flag = (_Atomic unsigned char *)(flags + j);
            if (atomic_load_explicit(flag, memory_order_relaxed)) {
                atomic_store_explicit(flag, 0, memory_order_relaxed);
                PyObject *k = PyLong_FromSsize_t(j);
                if (k == NULL || PyList_Append(out, k) < 0) {
                    Py_XDECREF(k);
                    Py_CLEAR(out);
                    break;
                }
                Py_DECREF(k);
            }
        }
    }
    mmipc_full_fence();
    PyBuffer_Release(&b);
    return out;
}

static PyObject *
native_fence(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    mmipc_full_fence();
    Py_RETURN_NONE;
}

/* ---- MergeCore: the merge of a reader's journals, driven by its doorbell (_merge.py) ------- *
 *
 * The journals with a frame peeked ("the heap"), in a winner tree keyed by (timestamp, position in
 * the list, which is the order they were added): see tree_set. Only "dirty" journals are polled:
 * flagged by their writer's ring, just (re)set, unsubscribed (flag -1: every read), hot (a flag
 * the collect left set, up to MERGE_HOT_MAX: every read; merge_collect), or all of them every
 * MERGE_SWEEP_EVERY empty reads (which also cools the hot ones). A journal whose core needs Python (a page's end, damage, no
 * page: poll -2) is put on the `slow` list and read() returns SLOW, before any frame is taken,
 * until Python settles it: its next frame may be the earliest. Settled without a page, it is
 * "parked": polled again when rung, swept, or MERGE_PROBE_NS after the last probe.
 *
 * Memory. Following hundreds of journals, a frame costs cache and TLB misses, not instructions:
 * each comes from a different journal's core, page and view. So the tree holds its whole key
 * (merge_key_t: timestamp and list position, 16 bytes) in one compact array, and an update reads
 * no core and takes no data-dependent branch; a journal's page is read only to hand out its frame
 * and peek the one after it; the Frame handed out is one of the merge's own two (merge_frame),
 * refilled and its payload view re-pointed at the journal's page, not the cursor's own (a Frame,
 * its ints and its view per journal: a miss apiece); the entry holds its core's page view with
 * that view's buffer and exporter, so a take reads neither; and when a journal becomes the tree's
 * top, its core, its page's buffer, its jid and the next peek's frame header are prefetched, to
 * arrive while the caller handles this frame. What is left per frame (merge_cache.sh): the
 * core's lines, the page's buffer, the jid and the page itself. */

#define MERGE_SWEEP_EVERY 4096u
#define MERGE_HOT_MAX 8  /* journals whose flag a merge leaves set (HOT), polled at every read */
#define MERGE_PROBE_NS 1000000
#define BELL_MAX_FLAGS (8192 - BELL_FLAGS)

enum { IN_HEAP = 1, DIRTY = 2, IS_SLOW = 4, PARKED = 8, HOT = 16 };

typedef struct {
    CursorCore *core;
    Py_ssize_t slot;             /* IN_HEAP: its leaf in the tree (tree_set); by core: one line */
    PyObject *view;              /* a reference to its core's page view at its last peek, or NULL */
    _PyManagedBufferObject *mbuf;  /* that view's buffer if payloads may be re-pointed to it */
    PyObject *obj;               /* its exporter (the mmap) */
    const void *jid;             /* its jid (prefetch only) */
    const unsigned char *after;  /* the frame header its core peeks once its frame is taken (same) */
    int32_t flag;                /* index of its flag in the bell, or -1: polled on every read */
    uint8_t state;               /* IN_HEAP | DIRTY | IS_SLOW | PARKED | HOT */
} merge_entry_t;

typedef struct {  /* in this order: on x86-64, its 16 bytes are the __int128 nano << 64 | entry */
    Py_ssize_t entry;            /* its journal's index in the list: ties go to the lower */
    int64_t nano;                /* the peeked frame's timestamp */
} merge_key_t;

typedef struct {
    PyObject_HEAD
    merge_entry_t *e;
    Py_ssize_t n;
    merge_key_t *tree;       /* a winner tree on (nano, entry), room for n leaves: tree_set */
    Py_ssize_t leaves;       /* its leaves now, a power of two: leaf s is tree[leaves + s] */
    Py_ssize_t nheap;        /* the journals with a frame peeked ("in the heap": IN_HEAP), in
                                leaves 0 to nheap - 1 */
    Py_ssize_t *dirty;       /* a stack of entry indexes (DIRTY set) */
    Py_ssize_t ndirty;
    Py_ssize_t *always;      /* entries without a flag */
    Py_ssize_t nalways;
    Py_ssize_t *slow;        /* entries Python must settle */
    Py_ssize_t nslow;
    Py_ssize_t nparked;
    int64_t probe_at;
    int32_t *by_flag;        /* flag index -> entry index, or -1 */
    Py_ssize_t nflags;       /* 1 + the highest flag in use */
    _Atomic unsigned char **needy_at; /* flag index -> its journal's needy byte (NAME.bells), or NULL */
    Py_buffer *needy_bufs;   /* the lists those bytes are in, held while set */
    Py_ssize_t nneedy;
    Py_buffer bell;          /* the reader's bell, or bell.obj == NULL */
    Py_ssize_t hot[MERGE_HOT_MAX]; /* entries whose flag the collect left set (merge_collect) */
    Py_ssize_t nhot;
    unsigned int empties;
    unsigned int taken;      /* frames since the last sweep: a busy reader sweeps too */
    PyObject *last[2];       /* the merge's last two Frames, refilled when dropped (merge_frame) */
    int turn;
    PyObject *on_slow;       /* next() calls it instead of returning SLOW (Merge._read_settling) */
    unsigned long thread;    /* the owning reader's thread ident (0: any) */
    PyObject *on_thread;     /* the reader's entry points call it from another thread (it raises) */
    CursorCore *single;      /* a reader of one journal: its cursor (read_single), or NULL */
} MergeCore;

/* Set this reader's needy byte in every journal's list (bell_set_needy): one store each, from the
 * flags' table, release (a writer that sees the 1 sees the store of `sleeping` before it); the
 * caller fences after. */
static void
merge_need_all(PyObject *core)
{
    MergeCore *m = (MergeCore *)core;
    for (Py_ssize_t f = 0; m->needy_at != NULL && f < m->nflags; f++) {
        if (m->needy_at[f] != NULL) {
            atomic_store_explicit(m->needy_at[f], 1, memory_order_release);
        }
    }
}

static void
merge_drop_frames(MergeCore *self)
{
    Py_CLEAR(self->last[0]);
    Py_CLEAR(self->last[1]);
}

static void
merge_free_arrays(MergeCore *self)
{
    for (Py_ssize_t i = 0; i < self->n; i++) {
        Py_DECREF(self->e[i].core);
        Py_XDECREF(self->e[i].view);
    }
    PyMem_Free(self->e);
    PyMem_Free(self->tree);
    PyMem_Free(self->dirty);
    PyMem_Free(self->always);
    PyMem_Free(self->slow);
    PyMem_Free(self->by_flag);
    for (Py_ssize_t k = 0; k < self->nneedy; k++) {
        PyBuffer_Release(&self->needy_bufs[k]);
    }
    PyMem_Free(self->needy_bufs);
    PyMem_Free(self->needy_at);
    self->needy_bufs = NULL;
    self->needy_at = NULL;
    self->nneedy = 0;
    self->e = NULL;
    self->tree = NULL;
    self->leaves = 0;
    self->dirty = self->always = self->slow = NULL;
    self->by_flag = NULL;
    self->n = self->nheap = self->ndirty = self->nalways = self->nslow = self->nparked = 0;
    self->nhot = 0;
    self->nflags = 0;
    if (self->bell.obj != NULL) {
        PyBuffer_Release(&self->bell);
        self->bell.obj = NULL;
    }
}

static void
mergecore_dealloc(MergeCore *self)
{
    merge_free_arrays(self);
    merge_drop_frames(self);
    Py_CLEAR(self->on_slow);
    Py_CLEAR(self->on_thread);
    Py_CLEAR(self->single);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* 1 if a comes before b, else 0, without a branch (the winner tree's fallback, tree_set). */
static inline int
merge_less(const merge_key_t *a, const merge_key_t *b)
{
    return (a->nano < b->nano) | ((a->nano == b->nano) & (a->entry < b->entry));
}

/* Is a page's buffer one a payload view may be re-pointed to: read-only bytes, nothing private
 * (every page a reader maps), and not released? */
static int
plain_page(const _PyManagedBufferObject *mbuf)
{
    const Py_buffer *b = &mbuf->master;
    return !(mbuf->flags & _Py_MANAGED_BUFFER_RELEASED) && b->readonly && b->internal == NULL
           && b->format != NULL && strcmp(b->format, "B") == 0;
}

/* Entry e's core has a new page view (its first peek, or after a page switch): hold it, so that
 * its buffer and exporter, remembered here, stay valid while the core keeps that view; a take then
 * re-points a payload view without reading the core's view (one cache miss fewer per frame). */
static void
merge_hold_view(merge_entry_t *e, PyObject *view)
{
    Py_XSETREF(e->view, Py_XNewRef(view));
    _PyManagedBufferObject *mbuf = view != NULL ? ((PyMemoryViewObject *)view)->mbuf : NULL;
    e->mbuf = mbuf != NULL && plain_page(mbuf) ? mbuf : NULL;
    e->obj = e->mbuf != NULL ? e->mbuf->master.obj : NULL;
}

/* The key of entry i, whose core just peeked a frame (so the core is in cache): also remember
 * the objects its take will touch, for merge_prefetch_top, and start loading the header after the
 * peeked frame into the second-level cache (locality 1: prefetcht2 on x86). Following hundreds of
 * journals, that header is needed only when this journal is next at the top, hundreds of reads
 * later; loaded then from the shared cache or memory, it cost most of a frame's time (256
 * journals: about 115 against 70 ns a frame; docs/benchmarks.md, eighth run). In the second-level
 * cache by then, merge_prefetch_top's load of it is short enough to hide behind the caller's work.
 * Live, it is the line the journal is polled at after its frame is taken: nothing more is read. */
static inline merge_key_t
merge_key(MergeCore *m, Py_ssize_t i)
{
    merge_entry_t *e = &m->e[i];
    CursorCore *core = e->core;
    PyObject *view = core->a.view;
    if (view != e->view) {
        merge_hold_view(e, view);
    }
    e->jid = core->jid;
    e->after = core->a.page.base + core->next.pos + mmipc_align8(core->next.length);
    __builtin_prefetch(e->after, 0, 1);
    merge_key_t key = {.entry = i, .nano = core->next_nano};
    return key;
}

/* Point payload view `mv`, if only the merge holds it (not released, not exported, no weak
 * reference), at bytes [offset, offset + n) of the page at `base`, which entry e's held view shows
 * (its core's view now). For another page, the export moves from the managed buffer of the page
 * it showed to e's, so each page stays mapped exactly while a view of it lives; that is not done
 * (0) when `mv` is the last view of its page (its dealloc must release the buffer, which only
 * CPython can do), or when either page is not a plain one. Reads neither the core's view nor the
 * buffer's master: at hundreds of journals each is a cache miss per frame. CPython's own
 * memoryview layout, as view_refill; with the free-threaded build, the same page only. */
static int
view_repoint(PyObject *mv, const merge_entry_t *e, const unsigned char *base, uint64_t offset,
             uint32_t n)
{
    PyMemoryViewObject *m = (PyMemoryViewObject *)mv;
    _PyManagedBufferObject *from = m->mbuf;
    _PyManagedBufferObject *to = e->mbuf;
    if (to == NULL || Py_REFCNT(mv) != 1 || m->exports != 0 || m->weakreflist != NULL
        || (m->flags & _Py_MEMORYVIEW_RELEASED)) {
        return 0;
    }
    if (from != to) {
#ifdef Py_GIL_DISABLED
        return 0;
#else
        if (from->exports < 2 || (to->flags & _Py_MANAGED_BUFFER_RELEASED) || !m->view.readonly
            || m->view.internal != NULL || m->view.format[0] != 'B' || m->view.format[1] != 0) {
            return 0;
        }
        to->exports++;
        m->mbuf = (_PyManagedBufferObject *)Py_NewRef(to);
        from->exports--;
        Py_DECREF(from);  /* another view of its page holds it too (exports >= 1): not freed here */
        m->view.obj = e->obj;
#endif
    }
    m->view.buf = (char *)base + offset;
    m->view.len = (Py_ssize_t)n;
    m->view.shape[0] = (Py_ssize_t)n;
    m->hash = -1;  /* a read-only view caches its hash */
    return 1;
}

/* The Frame for core's peeked frame: one of the merge's last two, refilled (see "refilling what
 * the caller has dropped"), whatever journal it came from. Following hundreds of journals, each
 * cursor's own Frame, its ints and its payload view would be a cache miss apiece on every frame;
 * the merge's two stay in cache, and only the page's managed buffer and the jid are touched. */
static PyObject *
merge_frame(MergeCore *m, const merge_entry_t *e)
{
    CursorCore *core = e->core;
    const mmipc_peeked_t *p = &core->next;
    int slot = frame_slot(m->last, m->turn);
    m->turn = slot ^ 1;
    PyObject *f = m->last[slot];
    if (f == NULL || Py_REFCNT(f) != 1 || Py_TYPE(f) != core->frame_type) {
        f = make_frame(core->frame_type, core->frame_fields, core->jid, core->a.view, p);
        Py_XSETREF(m->last[slot], Py_XNewRef(f));
        return f;
    }
    PyObject **item = ((PyTupleObject *)f)->ob_item;
    uint64_t offset = p->pos + MMIPC_FRAME_HEADER_SIZE;
    if (core->a.view != e->view
        || !view_repoint(item[4], e, core->a.page.base, offset, p->payload_len)) {
        PyObject *data = payload_view(core->a.view, offset, p->payload_len);
        if (data == NULL) {
            Py_CLEAR(m->last[slot]);
            return NULL;
        }
        Py_SETREF(item[4], data);
    }
    if (item[3] != core->jid) {
        Py_SETREF(item[3], Py_NewRef(core->jid));
    }
    if (set_long(&item[0], p->nano) < 0 || set_long(&item[1], p->msg_type) < 0
        || set_long(&item[2], p->source) < 0
        || (core->frame_fields == 6 && set_long(&item[5], p->seq) < 0)) {
        Py_CLEAR(m->last[slot]);  /* half refilled: never hand it out */
        return NULL;
    }
    return Py_NewRef(f);
}

/* The key of a journal with no frame peeked: after every real one (an entry is < n). */
static const merge_key_t merge_none = {.entry = PY_SSIZE_T_MAX, .nano = INT64_MAX};

/* Leaf s is now `key` (merge_none: none): replay its path to the root, each node the lesser of its
 * two children, so tree[1] is the least key of all.
 *
 * A winner tree, not a binary heap: a heap's sift picks a child at each level, and the next
 * level's loads wait for that choice (and, as a jump, it was mispredicted about 4 times a frame at
 * 256 journals). Here the path is fixed by the leaf: every sibling's load can start at once, only
 * the compare-and-select chain is serial, there is no branch on the data, and the new key needs no
 * walk down and back up (15 instructions a level, 8 levels at 256 journals, against about 200
 * for the heap's sift). The journals with a frame peeked hold leaves 0 to nheap - 1, in no order
 * (a key holds its entry, so the tie order does not depend on the leaf), and the tree has as many
 * leaves as they need, so its depth is that of the journals with a frame, not of all followed. */
static void
tree_set(MergeCore *m, Py_ssize_t s, merge_key_t key)
{
    merge_key_t *t = m->tree;
    Py_ssize_t at = m->leaves + s;
    t[at] = key;
#if defined(__SIZEOF_INT128__) && defined(__x86_64__)
    __int128 k;  /* the key as one number (merge_key_t's layout): the lesser is cmp, sbb, 2 cmov */
    memcpy(&k, &key, sizeof k);
    for (; at > 1; at >>= 1) {
        __int128 other;
        memcpy(&other, &t[at ^ 1], sizeof other);
        k = other < k ? other : k;
        memcpy(&t[at >> 1], &k, sizeof k);
    }
#else
    for (; at > 1; at >>= 1) {
        if (merge_less(&t[at ^ 1], &key)) {
            key = t[at ^ 1];
        }
        t[at >> 1] = key;
    }
#endif
}

/* Give the tree `leaves` leaves (a power of two, >= nheap, room made by set()), keeping leaves 0 to
 * nheap - 1, and rebuild its nodes: when it fills, or is at most a quarter full. */
static void
tree_resize(MergeCore *m, Py_ssize_t leaves)
{
    merge_key_t *t = m->tree;
    memmove(&t[leaves], &t[m->leaves], (size_t)m->nheap * sizeof *t);
    for (Py_ssize_t s = m->nheap; s < leaves; s++) {
        t[leaves + s] = merge_none;
    }
    for (Py_ssize_t at = leaves - 1; at >= 1; at--) {
        t[at] = merge_less(&t[2 * at + 1], &t[2 * at]) ? t[2 * at + 1] : t[2 * at];
    }
    m->leaves = leaves;
}

/* The top's key grew (its journal's next frame). */
static void
heap_replace_root(MergeCore *m, merge_key_t key)
{
    tree_set(m, m->e[key.entry].slot, key);
}

static void
heap_push(MergeCore *m, Py_ssize_t entry)
{
    if (m->nheap == m->leaves) {
        tree_resize(m, 2 * m->leaves);  /* nheap < n: set() made room for twice the leaves */
    }
    m->e[entry].slot = m->nheap++;
    tree_set(m, m->e[entry].slot, merge_key(m, entry));
    m->e[entry].state |= IN_HEAP;
}

/* The top leaves the tree: the last leaf's key moves to its leaf. */
static void
heap_pop_root(MergeCore *m)
{
    merge_entry_t *top = &m->e[m->tree[1].entry];
    Py_ssize_t last = --m->nheap;
    top->state &= (uint8_t)~IN_HEAP;
    if (top->slot != last) {
        merge_key_t moved = m->tree[m->leaves + last];
        m->e[moved.entry].slot = top->slot;
        tree_set(m, top->slot, moved);
    }
    tree_set(m, last, merge_none);
    if (m->leaves > 1 && 4 * m->nheap <= m->leaves) {
        tree_resize(m, m->leaves / 2);
    }
}

/* No journal in the tree (set, reset; a core never set has no tree: a seek with no journal). */
static void
tree_clear(MergeCore *m)
{
    m->nheap = 0;
    m->leaves = 1;
    if (m->tree != NULL) {
        m->tree[1] = merge_none;
    }
}

/* The next read most likely takes the top's frame: start loading what that take and the peek
 * after it touch (a prefetch of a stale or NULL address is harmless: it never faults).
 * always_inline: out of line, gcc 12 -O2 found this function free of side effects (a prefetch has
 * none it counts) and deleted its call: the shipped .so held no prefetch instruction at all. */
static inline __attribute__((always_inline)) void
merge_prefetch_top(const MergeCore *m)
{
    if (m->nheap == 0) {
        return;
    }
    const merge_entry_t *e = &m->e[m->tree[1].entry];
    const char *core = (const char *)e->core;
    __builtin_prefetch(e->after, 0, 3);
    __builtin_prefetch(core, 1, 3);
    __builtin_prefetch(core + 64, 1, 3);
    __builtin_prefetch(core + 128, 1, 3);
    /* the first line of its view (view_repoint), its buffer's head and master, the jid's head */
    __builtin_prefetch(e->mbuf, 1, 3);
    __builtin_prefetch(e->jid, 1, 3);
}

static void
mark_dirty(MergeCore *m, Py_ssize_t i)
{
    merge_entry_t *e = &m->e[i];
    if (e->state & PARKED) {
        e->state &= (uint8_t)~PARKED;
        m->nparked--;
    }
    if (!(e->state & (DIRTY | IS_SLOW))) {
        e->state |= DIRTY;
        m->dirty[m->ndirty++] = i;
    }
}

static void
mark_all_dirty(MergeCore *m)
{
    for (Py_ssize_t i = 0; i < m->n; i++) {
        mark_dirty(m, i);
    }
}

static void
mark_slow(MergeCore *m, Py_ssize_t i)
{
    if (!(m->e[i].state & IS_SLOW)) {
        m->e[i].state |= IS_SLOW;
        m->slow[m->nslow++] = i;
    }
}

/* Clear `pending`, then look at each flag: a journal found flagged is dirty (polled after the fence
 * below). Its flag is left set while fewer than MERGE_HOT_MAX journals are HOT: a hot journal is
 * polled at every read, like one without a flag, so its writer, which finds the flag set and the
 * reader awake, stores nothing and (its needy byte cleared) pays its fence alone (docs/format.md,
 * *Hot journals*). Any other flag is cleared, then its needy byte set (its writer rings again).
 * Last a full fence: a ring after a clear stays visible to the next collect. */
static void
merge_collect(MergeCore *m)
{
    unsigned char *base = m->bell.buf;
    atomic_exchange_explicit((_Atomic uint32_t *)(base + BELL_PENDING), 0u, memory_order_seq_cst);
    unsigned char *flags = base + BELL_FLAGS;
    for (Py_ssize_t i = 0; i < m->nflags; i += 8) {
        uint64_t word;
        memcpy(&word, flags + i, 8);  /* eight flags at once: most are clear */
        for (Py_ssize_t j = i; word != 0 && j < i + 8 && j < m->nflags; j++) {
            _Atomic unsigned char *flag = (_Atomic unsigned char *)(flags + j);
            if (!atomic_load_explicit(flag, memory_order_relaxed)) {
                continue;
            }
            Py_ssize_t entry = m->by_flag[j];
            if (entry >= 0 && (m->e[entry].state & HOT)) {
                continue;  /* polled at every read already */
            }
            if (entry >= 0 && m->nhot < MERGE_HOT_MAX) {
                m->e[entry].state |= HOT;  /* its flag stays set */
                m->hot[m->nhot++] = entry;
            }
            else {
                atomic_store_explicit(flag, 0, memory_order_relaxed);
                if (m->needy_at[j] != NULL) {  /* after the clear: its writer rings again */
                    atomic_store_explicit(m->needy_at[j], 1, memory_order_release);
                }
            }
            if (entry >= 0) {
                mark_dirty(m, entry);
            }
        }
    }
    atomic_thread_fence(memory_order_seq_cst);
}

/* A hot journal becomes a flagged one again: clear its flag (C), set its needy byte (I), and take
 * it off the hot list; the caller fences (G) and polls it after, exactly as after a collect's
 * clear, so its writer's next commit rings it (docs/format.md, *Hot journals*). */
static void
merge_cool_one(MergeCore *m, Py_ssize_t k)
{
    merge_entry_t *e = &m->e[m->hot[k]];
    unsigned char *flags = (unsigned char *)m->bell.buf + BELL_FLAGS;
    e->state &= (uint8_t)~HOT;
    atomic_store_explicit((_Atomic unsigned char *)(flags + e->flag), 0, memory_order_relaxed);
    if (m->needy_at[e->flag] != NULL) {
        atomic_store_explicit(m->needy_at[e->flag], 1, memory_order_release);
    }
    m->hot[k] = m->hot[--m->nhot];
}

/* Every hot journal cooled (at a sweep, and before the membership changes), then G, each one
 * dirty: polled at the next read. */
static void
merge_cool(MergeCore *m)
{
    if (m->nhot == 0) {
        return;
    }
    while (m->nhot > 0) {
        Py_ssize_t i = m->hot[m->nhot - 1];
        merge_cool_one(m, m->nhot - 1);
        mark_dirty(m, i);
    }
    mmipc_full_fence();
}

static void
merge_poll_dirty(MergeCore *m)
{
    for (Py_ssize_t k = 0; k < m->nalways; k++) {
        if (!(m->e[m->always[k]].state & PARKED)) {
            mark_dirty(m, m->always[k]);
        }
    }
    for (Py_ssize_t k = 0; k < m->nhot; k++) {
        if (!(m->e[m->hot[k]].state & (PARKED | IN_HEAP))) {
            mark_dirty(m, m->hot[k]);
        }
    }
    while (m->ndirty > 0) {
        Py_ssize_t i = m->dirty[--m->ndirty];
        merge_entry_t *e = &m->e[i];
        e->state &= (uint8_t)~DIRTY;
        if (e->state & IN_HEAP) {
            continue;
        }
        int64_t nano = poll_core(e->core);
        if (nano >= 0) {
            heap_push(m, i);
        }
        else if (nano == -2) {
            mark_slow(m, i);
        }
    }
}

/* Nothing pending, peeked or dirty: a parked journal's probe, or a sweep, may be due. */
static int
merge_idle(MergeCore *m)
{
    if (m->nparked > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        if (now >= m->probe_at) {
            m->probe_at = now + MERGE_PROBE_NS;
            for (Py_ssize_t i = 0; i < m->n; i++) {
                if (m->e[i].state & PARKED) {
                    mark_dirty(m, i);
                }
            }
            return 1;
        }
    }
    if (++m->empties < MERGE_SWEEP_EVERY) {
        return 0;
    }
    m->empties = 0;
    merge_cool(m);  /* a hot journal that stopped writing costs no poll per read for good */
    mark_all_dirty(m);
    return 1;
}

static inline PyObject *
merge_next_frame(MergeCore *m)
{
    if (m->nslow > 0) {
        return Py_NewRef(slow);
    }
    if (m->bell.obj != NULL
        && atomic_load_explicit((_Atomic uint32_t *)((char *)m->bell.buf + BELL_PENDING),
                                memory_order_acquire)) {
        merge_collect(m);
    }
    else if (m->nheap == 0 && m->ndirty == 0 && m->nalways == 0 && !merge_idle(m) && m->nhot == 0) {
        Py_RETURN_NONE;
    }
    if (m->ndirty > 0 || m->nalways > 0 || m->nhot > 0) {
        merge_poll_dirty(m);
    }
    if (m->nslow > 0) {
        return Py_NewRef(slow);
    }
    if (m->nheap == 0) {
        Py_RETURN_NONE;
    }
    Py_ssize_t top = m->tree[1].entry;
    CursorCore *core = m->e[top].core;
    if (core->next_nano < 0 || core->a.view == NULL) {  /* a guard: a heaped core has peeked */
        PyErr_SetString(PyExc_ValueError, "MergeCore.read(): a heaped journal has no frame peeked");
        return NULL;
    }
    PyObject *frame = merge_frame(m, &m->e[top]);
    if (frame == NULL) {
        return NULL;
    }
    step_past(core, &core->next);
    int64_t nano = poll_core(core);
    if (nano >= 0) {
        heap_replace_root(m, merge_key(m, top));  /* the root's key grew */
    }
    else {
        heap_pop_root(m);
        if (nano == -2) {
            mark_slow(m, top);  /* the frame taken is returned; the next read settles this one */
        }
    }
    if (++m->taken >= MERGE_SWEEP_EVERY) {
        m->taken = 0;
        mark_all_dirty(m);  /* a journal whose writer cannot ring is not starved by busy ones */
    }
    merge_prefetch_top(m);
    return frame;
}

static PyObject *
mergecore_read(MergeCore *m, PyObject *Py_UNUSED(ignored))
{
    return merge_next_frame(m);
}

/* The reader's entry points (next, read_single, read_single_data) from a thread other than its
 * owner's: on_thread's result (it raises UsageError), before anything is touched. */
#define OWNER_ONLY(m)                                                                              \
    if ((m)->thread != 0 && current_thread() != (m)->thread) {                                    \
        return other_thread(m);                                                                    \
    }

static PyObject *
other_thread(MergeCore *m)
{
    if (m->on_thread == NULL || m->on_thread == Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "a reader's read from a thread other than its owner's");
        return NULL;
    }
    return PyObject_CallNoArgs(m->on_thread);
}

/* The owner while on_slow runs: no thread has ident 2 (an ident is a pthread_t, a pointer), so a
 * read from inside it (a signal handler's, a finalizer's) takes the other-thread path and on_thread
 * raises, where it went on from the middle of the settling (ValueError, or a frame handed twice). */
#define READING_IN_PYTHON 2UL

/* Reader.read itself when it merges: METH_FASTCALL (see NO_ARGS), and what needs Python is
 * settled by on_slow, so that a read costs no Python frame. */
static PyObject *
mergecore_next(MergeCore *m, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    NO_ARGS("next")
    OWNER_ONLY(m)
    PyObject *frame = merge_next_frame(m);
    if (frame == slow && m->on_slow != NULL && m->on_slow != Py_None) {
        Py_DECREF(frame);
        unsigned long owner = m->thread;
        m->thread = READING_IN_PYTHON;
        frame = PyObject_CallNoArgs(m->on_slow);
        if (m->thread == READING_IN_PYTHON) { /* unless on_slow closed or handed over the reader */
            m->thread = owner;
        }
    }
    return frame;
}

/* Reader.read and Reader.read_data with one journal: its cursor's own read behind the owner check
 * (a direct C call: no second dispatch). The cursor is `single`, not the merge's list: a caller
 * that keeps only `reader.read` reads on after the reader is dropped, as it did from the cursor. */
static inline int
single_is_set(const MergeCore *m, const char *what)
{
    if (m->single == NULL) {
        PyErr_Format(PyExc_ValueError, "%s(): no single cursor is set", what);
        return 0;
    }
    return 1;
}

static PyObject *
mergecore_read_single(MergeCore *m, PyObject *const *args, Py_ssize_t nargs)
{
    OWNER_ONLY(m)
    return single_is_set(m, "read_single") ? cursor_read(m->single, args, nargs) : NULL;
}

static PyObject *
mergecore_read_single_data(MergeCore *m, PyObject *const *args, Py_ssize_t nargs)
{
    OWNER_ONLY(m)
    return single_is_set(m, "read_single_data") ? cursor_read_data(m->single, args, nargs) : NULL;
}

/* Hold needy[i] = (list, offset), or None, for core i's flag: its byte is set at each collect. */
static int
merge_set_needy(MergeCore *self, PyObject *needy, PyObject *flags)
{
    Py_ssize_t n = PyList_GET_SIZE(flags);
    for (Py_ssize_t i = 0; needy != Py_None && i < n; i++) {
        PyObject *cell = PyList_GET_ITEM(needy, i);
        long flag = PyLong_AsLong(PyList_GET_ITEM(flags, i));
        Py_ssize_t offset;
        if (cell == Py_None || flag < 0) {
            continue;
        }
        Py_buffer *b = &self->needy_bufs[self->nneedy];
        if (!PyTuple_Check(cell) || PyTuple_GET_SIZE(cell) != 2
            || (offset = PyLong_AsSsize_t(PyTuple_GET_ITEM(cell, 1))) < 0
            || PyObject_GetBuffer(PyTuple_GET_ITEM(cell, 0), b, PyBUF_WRITABLE) < 0) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "set(): needy cells are (writable buffer, offset) or None");
            return -1;
        }
        self->nneedy++;
        if (offset >= b->len) {
            PyErr_SetString(PyExc_ValueError, "set(): a needy offset past its buffer");
            return -1;
        }
        self->needy_at[flag] = (_Atomic unsigned char *)((unsigned char *)b->buf + offset);
    }
    return 0;
}

/* set(cores, flags, bell, needy=None): follow these cores (the list order is the tie order), each
 * with its flag in `bell` (-1: none), every one dirty. `bell` is the reader's bell mapping, or
 * None; needy[i], (NAME.bells mapped, offset of the reader's needy byte) or None, per core. */
static PyObject *
mergecore_set(MergeCore *self, PyObject *args)
{
    PyObject *cores;
    PyObject *flags;
    PyObject *bell;
    PyObject *needy = Py_None;
    if (!PyArg_ParseTuple(args, "O!O!O|O:set", &PyList_Type, &cores, &PyList_Type, &flags, &bell,
                          &needy)) {
        return NULL;
    }
    if (needy != Py_None && (!PyList_Check(needy) || PyList_GET_SIZE(needy) != PyList_GET_SIZE(cores))) {
        PyErr_SetString(PyExc_ValueError, "set(): needy is None or a list, one per core");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(cores);
    if (PyList_GET_SIZE(flags) != n) {
        PyErr_SetString(PyExc_ValueError, "set(): one flag per core");
        return NULL;
    }
    Py_ssize_t nflags = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        long flag = PyLong_AsLong(PyList_GET_ITEM(flags, i));
        if (flag == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (!PyObject_TypeCheck(PyList_GET_ITEM(cores, i), &CursorCoreType) || flag < -1
            || flag >= BELL_MAX_FLAGS) {
            PyErr_SetString(PyExc_ValueError, "set(): CursorCores, and flags in [-1, 8128)");
            return NULL;
        }
        nflags = flag + 1 > nflags ? flag + 1 : nflags;
    }
    Py_buffer b = {0};
    if (bell != Py_None && bell_buffer(bell, &b, 8192) < 0) {
        return NULL;
    }
    merge_cool(self);  /* with the old bell and needy bytes: no flag is left set unwatched */
    merge_free_arrays(self);
    merge_drop_frames(self);  /* a journal removed: its pages are not kept mapped by them */
    self->bell = b;
    Py_ssize_t cap = n ? n : 1;
    self->e = PyMem_Calloc((size_t)cap, sizeof(*self->e));
    Py_ssize_t leaves = 1;
    while (leaves < cap) {
        leaves *= 2;
    }
    self->tree = PyMem_Calloc((size_t)(2 * leaves), sizeof(merge_key_t));  /* tree_resize */
    self->dirty = PyMem_Calloc((size_t)cap, sizeof(Py_ssize_t));
    self->always = PyMem_Calloc((size_t)cap, sizeof(Py_ssize_t));
    self->slow = PyMem_Calloc((size_t)cap, sizeof(Py_ssize_t));
    self->by_flag = PyMem_Calloc((size_t)(nflags + 8), sizeof(int32_t));
    self->needy_at = PyMem_Calloc((size_t)(nflags + 8), sizeof(*self->needy_at));
    self->needy_bufs = PyMem_Calloc((size_t)cap, sizeof(Py_buffer));
    if (!self->e || !self->tree || !self->dirty || !self->always || !self->slow || !self->by_flag
        || !self->needy_at || !self->needy_bufs) {
        merge_free_arrays(self);
        return PyErr_NoMemory();
    }
    tree_clear(self);
    for (Py_ssize_t f = 0; f < nflags + 8; f++) {
        self->by_flag[f] = -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t flag = (int32_t)PyLong_AsLong(PyList_GET_ITEM(flags, i));
        self->e[i].core = (CursorCore *)Py_NewRef(PyList_GET_ITEM(cores, i));
        self->e[i].flag = b.obj != NULL ? flag : -1;
        if (self->e[i].flag >= 0) {
            self->by_flag[flag] = (int32_t)i;
        }
        else {
            self->always[self->nalways++] = i;
        }
        self->n++;
    }
    self->nflags = b.obj != NULL ? nflags : 0;
    if (merge_set_needy(self, needy, flags) < 0) {
        merge_free_arrays(self);
        return NULL;
    }
    mark_all_dirty(self);
    Py_RETURN_NONE;
}

/* slow() -> the indexes of the cores Python must settle (poll through its slow path). */
static PyObject *
mergecore_slow(MergeCore *self, PyObject *Py_UNUSED(ignored))
{
    merge_drop_frames(self);  /* Python may now leave a page: the merge must not keep it mapped */
    for (Py_ssize_t k = 0; k < self->nslow; k++) {
        merge_hold_view(&self->e[self->slow[k]], NULL);
    }
    PyObject *out = PyList_New(self->nslow);
    for (Py_ssize_t k = 0; out != NULL && k < self->nslow; k++) {
        PyObject *i = PyLong_FromSsize_t(self->slow[k]);
        if (i == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, k, i);
    }
    return out;
}

/* settle(i): Python polled core i through its slow path: poll it again here (parked while its
 * core has no page). A core Python peeked or took from is never in the heap: every slow core
 * left it, and settle() is the only way back. */
static PyObject *
mergecore_settle(MergeCore *self, PyObject *arg)
{
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (i < 0 || i >= self->n || !(self->e[i].state & IS_SLOW)) {
        PyErr_SetString(PyExc_ValueError, "settle(): not a slow core");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < self->nslow; k++) {
        if (self->slow[k] == i) {
            self->slow[k] = self->slow[--self->nslow];
            break;
        }
    }
    merge_entry_t *e = &self->e[i];
    e->state &= (uint8_t)~IS_SLOW;
    if (e->core->a.view != NULL) {
        mark_dirty(self, i);
    }
    else {
        for (Py_ssize_t k = 0; k < self->nhot; k++) {
            if (self->hot[k] == i) {  /* parked: polled by its probe, or when rung, not per read */
                merge_cool_one(self, k);
                mmipc_full_fence();  /* G: its probe, or the collect of its ring, polls after */
                break;
            }
        }
        e->state |= PARKED;
        self->nparked++;
    }
    Py_RETURN_NONE;
}

/* sweep(): poll every core at the next read (after a wait no ring ended, and as a backstop). */
static PyObject *
mergecore_sweep(MergeCore *self, PyObject *Py_UNUSED(ignored))
{
    mark_all_dirty(self);
    Py_RETURN_NONE;
}

/* reset(): the cores were re-positioned (seek): forget the heap, poll them all. */
static PyObject *
mergecore_reset(MergeCore *self, PyObject *Py_UNUSED(ignored))
{
    merge_drop_frames(self);
    for (Py_ssize_t i = 0; i < self->n; i++) {
        merge_hold_view(&self->e[i], NULL);  /* the pages they left go now */
    }
    for (Py_ssize_t i = 0; i < self->n; i++) {
        self->e[i].state &= (uint8_t)~IN_HEAP;
    }
    tree_clear(self);
    mark_all_dirty(self);
    Py_RETURN_NONE;
}

static PyObject *
mergecore_get_heaped(MergeCore *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->nheap);
}

static PyMemberDef mergecore_members[] = {
    {"on_slow", T_OBJECT, offsetof(MergeCore, on_slow), 0,
     "called by next() (no arguments) for its result where read() returns SLOW"},
    {"_c_thread", T_ULONG, offsetof(MergeCore, thread), 0,
     "ident of the reader's thread (0: any): its entry points from another call on_thread"},
    {"on_thread", T_OBJECT, offsetof(MergeCore, on_thread), 0,
     "called by next/read_single(_data) (no arguments) from a thread not _c_thread: it raises"},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *
mergecore_get_single(MergeCore *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->single != NULL ? (PyObject *)self->single : Py_None);
}

static int
mergecore_set_single(MergeCore *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value != NULL && value != Py_None && !PyObject_TypeCheck(value, &CursorCoreType)) {
        PyErr_SetString(PyExc_TypeError, "single must be a CursorCore or None");
        return -1;
    }
    Py_XSETREF(self->single,
               value == NULL || value == Py_None ? NULL : (CursorCore *)Py_NewRef(value));
    return 0;
}

static PyGetSetDef mergecore_getset[] = {
    {"single", (getter)mergecore_get_single, (setter)mergecore_set_single,
     "the cursor read_single reads (a reader of one journal), or None", NULL},
    {"heaped", (getter)mergecore_get_heaped, NULL, "how many journals have a frame peeked", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef mergecore_methods[] = {
    {"set", (PyCFunction)mergecore_set, METH_VARARGS, "set(cores, flags, bell, needy=None): what to merge"},
    {"read", (PyCFunction)mergecore_read, METH_NOARGS, "read() -> Frame | None | SLOW"},
    {"next", (PyCFunction)(void (*)(void))mergecore_next, METH_FASTCALL,
     "next() -> Frame | None: read(), with on_slow() for SLOW"},
    {"read_single", (PyCFunction)(void (*)(void))mergecore_read_single, METH_FASTCALL,
     "read_single() -> Frame | None: `single`'s read(), from the owner thread only"},
    {"read_single_data", (PyCFunction)(void (*)(void))mergecore_read_single_data, METH_FASTCALL,
     "read_single_data() -> memoryview | None: `single`'s read_data(), likewise"},
    {"slow", (PyCFunction)mergecore_slow, METH_NOARGS, "slow() -> indexes for Python to settle"},
    {"settle", (PyCFunction)mergecore_settle, METH_O, "settle(i): Python polled core i"},
    {"sweep", (PyCFunction)mergecore_sweep, METH_NOARGS, "sweep(): poll every core at next read"},
    {"reset", (PyCFunction)mergecore_reset, METH_NOARGS, "reset(): cores re-positioned"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject MergeCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mmipc.journal._native.MergeCore",
    .tp_basicsize = sizeof(MergeCore),
    .tp_dealloc = (destructor)mergecore_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "MergeCore(): a reader's merge of CursorCores, polled only where its doorbell rang.",
    .tp_methods = mergecore_methods,
    .tp_getset = mergecore_getset,
    .tp_members = mergecore_members,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef module_methods[] = {
    {"bell_ring", (PyCFunction)(void (*)(void))native_bell_ring, METH_FASTCALL,
     "bell_ring(bell, index): flag a journal and wake the bell's reader if it sleeps"},
    {"bell_sleep", (PyCFunction)(void (*)(void))native_bell_sleep, METH_FASTCALL,
     "bell_sleep(bell, how=1) -> seq: announce sleep (fence)"},
    {"bell_wait", (PyCFunction)(void (*)(void))native_bell_wait, METH_FASTCALL,
     "bell_wait(bell, seq, timeout_ns): futex wait while the word is seq"},
    {"bell_block", (PyCFunction)(void (*)(void))native_bell_block, METH_FASTCALL,
     "bell_block(bell, read, timeout_ns, needy=None) -> frame, True (rung) or False: announce, "
     "needy(), re-check, wait, read"},
    {"bell_collect", (PyCFunction)(void (*)(void))native_bell_collect, METH_FASTCALL,
     "bell_collect(bell, n) -> flagged indexes (cleared)"},
    {"fence", native_fence, METH_NOARGS, "A full memory fence."},
    {"merge_read", (PyCFunction)merge_read, METH_O,
     "merge_read(cores) -> Frame | None | SLOW: the earliest next frame; ties to the first core"},
    {"crc32", (PyCFunction)(void (*)(void))native_crc32, METH_FASTCALL,
     "crc32(data, value=0): zlib.crc32-compatible"},
    {"now", native_now, METH_NOARGS, "The C writer's clock (ns since the epoch)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mmipc.journal._native",
    .m_doc = "mmipc's C hot paths (see the design note at the top of _mmipcmodule.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

static int
add_type(PyObject *module, PyTypeObject *type, const char *name)
{
    if (PyType_Ready(type) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, name, (PyObject *)type);
}

PyMODINIT_FUNC
PyInit__native(void)
{
    mmipc_crc32_init();
    PyObject *module = PyModule_Create(&native_module);
    if (module == NULL) {
        return NULL;
    }
    if (slow == NULL) {
        slow = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    }
    if (slow == NULL || PyModule_AddObjectRef(module, "SLOW", slow) < 0
        || add_type(module, &WriterCoreType, "WriterCore") < 0
        || add_type(module, &CursorCoreType, "CursorCore") < 0
        || add_type(module, &BatchType, "Batch") < 0
        || add_type(module, &MergeCoreType, "MergeCore") < 0
        || add_type(module, &mmipc_BlockIterType, "BlockIter") < 0
        || PyModule_AddIntConstant(module, "FRAME_HEADER_SIZE", MMIPC_FRAME_HEADER_SIZE) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

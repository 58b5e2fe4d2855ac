/* _blockiter.c: BlockIter, the iterator Reader.frames(wait="block") returns on the native backend.
 *
 * Why C: a woken reader's frame should reach its consumer with no Python frame on the way. As a
 * Python generator, each frame after a wake went back through the generator's own bytecode and
 * its resumption (about 900 instructions more than a blocking os.read of a pipe, whose p50 wake-up
 * mmipc's must not exceed: benchmarks/wake_path.py). Here the futex returns into bell_block, the
 * read there makes the Frame, and tp_iternext hands it straight to the caller.
 *
 * What stays in Python (`idle`, an object of _block.py's `_Idle`): every decision about waiting,
 * made on the way to sleep or after a frame is handed out, never between a wake and its frame:
 *   idle.start()        at the first next(): frames()'s checks, in the thread that iterates;
 *   idle.empty()        after a read found nothing: None (read again: the spin window, or a
 *                       bounded sleep done there), False (the timeout passed: stop), or
 *                       (bell, timeout_ns, needy) to sleep here (bell_block);
 *   idle.nothing(rung)  bell_block read nothing (True: a ring; False: no ring ended the wait);
 *   idle.found(gap_ns)  the frame handed out before this next() ended an idle spell; `gap_ns`:
 *                       its writer's time since the frame before the spell (the spin window).
 * Like a generator: the iteration ends for good after the timeout or an exception (a signal
 * handler's, raised during the wait), and a next() from inside a next() (a signal handler) is
 * refused with ValueError.
 */
#define PY_SSIZE_T_CLEAN
#include "_blockiter.h"

#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *reader;   /* its `read` (a Frame or None) is looked up at each read: add_journal,
                         * remove_journal and close rebind it between two next() */
    PyTypeObject *type; /* the reader's type, and where its `read` slot is (0: not a slot) */
    Py_ssize_t read_at;
    PyObject *idle;     /* the Python half */
    PyObject *empty;    /* idle.empty, idle.nothing, idle.found: bound once */
    PyObject *nothing;
    PyObject *found;
    long long last_nano;  /* the nano of the last frame handed out */
    long long gap;        /* for idle.found */
    int started, spell, tell, done, running;
} BlockIter;

static PyObject *read_name;  /* "read", interned */

/* The reader's current `read` (a new reference), or NULL with an exception. Reader has __slots__:
 * its `read` is read straight from the slot, where the generic lookup (the type's dictionary,
 * then the descriptor) costs about 100 instructions a frame. */
static PyObject *
current_read(BlockIter *self)
{
    if (self->read_at > 0 && Py_TYPE(self->reader) == self->type) {
        PyObject *read = *(PyObject **)((char *)self->reader + self->read_at);
        if (read != NULL) {
            return Py_NewRef(read);
        }
    }
    return PyObject_GetAttr(self->reader, read_name);
}

/* The frame's nano (field 0), 0 if it has none. CPython 3.11's int layout read directly (sign and
 * digit count in ob_size): PyLong_AsLongLongAndOverflow costs about 60 instructions for a nano's
 * three digits, and this runs for every frame handed out. */
static long long
frame_nano(PyObject *frame)
{
    if (!PyTuple_Check(frame) || PyTuple_GET_SIZE(frame) < 1) {
        return 0;
    }
    PyObject *o = PyTuple_GET_ITEM(frame, 0);
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000 && !defined(Py_GIL_DISABLED)
    if (PyLong_CheckExact(o) && Py_SIZE(o) >= 0 && Py_SIZE(o) <= 2) {
        const digit *d = ((PyLongObject *)o)->ob_digit;
        Py_ssize_t n = Py_SIZE(o);
        return n == 0 ? 0 : n == 1 ? (long long)d[0] : (long long)d[0] | (long long)d[1] << PyLong_SHIFT;
    }
    if (PyLong_CheckExact(o) && Py_SIZE(o) == 3 && ((PyLongObject *)o)->ob_digit[2] < (1u << 3)) {
        const digit *d = ((PyLongObject *)o)->ob_digit;  /* below 2**63 */
        return (long long)d[0] | (long long)d[1] << PyLong_SHIFT | (long long)d[2] << (2 * PyLong_SHIFT);
    }
#endif
    int overflow;
    long long nano = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (nano == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return nano;
}

/* A frame read: account for it (the idle spell it ends is told to Python at the next next()). */
static PyObject *
hand_out(BlockIter *self, PyObject *frame)
{
    long long nano = frame_nano(frame);
    if (self->spell) {
        self->spell = 0;
        self->tell = 1;
        self->gap = nano - self->last_nano;
    }
    self->last_nano = nano;
    return frame;
}

/* After an empty read: None (read again), a frame, or NULL (stop: done or an exception). */
static PyObject *
idle_turn(BlockIter *self)
{
    self->spell = 1;
    PyObject *what = PyObject_CallNoArgs(self->empty);
    if (what == NULL || what == Py_None) {
        return what;
    }
    if (what == Py_False) {  /* the timeout: NULL with no exception ends the iteration */
        Py_DECREF(what);
        return NULL;
    }
    if (!PyTuple_Check(what) || PyTuple_GET_SIZE(what) != 3) {
        Py_DECREF(what);
        PyErr_SetString(PyExc_TypeError, "BlockIter: idle.empty() must return None, False or (bell, ns, needy)");
        return NULL;
    }
    long long timeout = PyLong_AsLongLong(PyTuple_GET_ITEM(what, 1));
    PyObject *bell = Py_NewRef(PyTuple_GET_ITEM(what, 0));
    PyObject *needy = Py_NewRef(PyTuple_GET_ITEM(what, 2));
    Py_DECREF(what);  /* now, not after the wake: its dealloc cost 170 instructions on that path */
    PyObject *got = NULL;
    if (!(timeout == -1 && PyErr_Occurred())) {
        PyObject *read = current_read(self);
        got = read == NULL ? NULL : mmipc_bell_block(bell, read, timeout, needy);
        Py_XDECREF(read);
    }
    Py_DECREF(bell);
    Py_DECREF(needy);
    if (got == NULL || !PyBool_Check(got)) {
        return got;
    }
    PyObject *r = PyObject_CallOneArg(self->nothing, got);
    Py_DECREF(got);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *
next_frame(BlockIter *self)
{
    if (!self->started) {
        self->started = 1;
        PyObject *r = PyObject_CallMethod(self->idle, "start", NULL);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    if (self->tell) {  /* off the path from a wake to its frame: now, before the next read */
        self->tell = 0;
        PyObject *gap = PyLong_FromLongLong(self->gap);
        PyObject *r = gap == NULL ? NULL : PyObject_CallOneArg(self->found, gap);
        Py_XDECREF(gap);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    for (;;) {
        PyObject *read = current_read(self);
        PyObject *frame = read == NULL ? NULL : PyObject_CallNoArgs(read);
        Py_XDECREF(read);
        if (frame == Py_None) {
            Py_DECREF(frame);
            frame = idle_turn(self);
            if (frame == Py_None) {
                Py_DECREF(frame);
                continue;
            }
        }
        return frame == NULL ? NULL : hand_out(self, frame);
    }
}

static PyObject *
blockiter_next(BlockIter *self)
{
    if (self->done) {
        return NULL;
    }
    if (self->running) {
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return NULL;
    }
    self->running = 1;
    PyObject *frame = next_frame(self);
    self->running = 0;
    if (frame == NULL) {
        self->done = 1;  /* the timeout, or an exception: ended, as a generator would be */
    }
    return frame;
}

/* Where `type` keeps `read` (0: not a slot of its own layout). A member descriptor's offset holds
 * only in instances of the type that made it: `class X: read = Reader.read` borrows Reader's, whose
 * offset lies past the end of an X (the generic lookup then raises TypeError, as the descriptor's
 * own __get__ does). */
static Py_ssize_t
read_slot(PyTypeObject *type)
{
    PyObject *slot = _PyType_Lookup(type, read_name);  /* borrowed */
    if (slot == NULL || !Py_IS_TYPE(slot, &PyMemberDescr_Type)
        || !PyType_IsSubtype(type, PyDescr_TYPE(slot))) {
        return 0;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)slot)->d_member;
    return member->type == T_OBJECT_EX && !(member->flags & READONLY) ? member->offset : 0;
}

static PyObject *
blockiter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *reader, *idle;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "BlockIter(reader, idle)");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "BlockIter", 2, 2, &reader, &idle)) {
        return NULL;
    }
    if (read_name == NULL && (read_name = PyUnicode_InternFromString("read")) == NULL) {
        return NULL;
    }
    BlockIter *self = (BlockIter *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->reader = Py_NewRef(reader);
    self->type = (PyTypeObject *)Py_NewRef(Py_TYPE(reader));
    self->read_at = read_slot(self->type);
    self->idle = Py_NewRef(idle);
    self->empty = PyObject_GetAttrString(idle, "empty");
    self->nothing = self->empty == NULL ? NULL : PyObject_GetAttrString(idle, "nothing");
    self->found = self->nothing == NULL ? NULL : PyObject_GetAttrString(idle, "found");
    if (self->found == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
blockiter_traverse(BlockIter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->reader);
    Py_VISIT(self->type);
    Py_VISIT(self->idle);
    Py_VISIT(self->empty);
    Py_VISIT(self->nothing);
    Py_VISIT(self->found);
    return 0;
}

static int
blockiter_clear(BlockIter *self)
{
    Py_CLEAR(self->reader);
    Py_CLEAR(self->type);
    Py_CLEAR(self->idle);
    Py_CLEAR(self->empty);
    Py_CLEAR(self->nothing);
    Py_CLEAR(self->found);
    return 0;
}

static void
blockiter_dealloc(BlockIter *self)
{
    PyObject_GC_UnTrack(self);
    blockiter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyTypeObject mmipc_BlockIterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mmipc.journal._native.BlockIter",
    .tp_basicsize = sizeof(BlockIter),
    .tp_dealloc = (destructor)blockiter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "BlockIter(reader, idle): Reader.frames(wait=\"block\"); the waiting decided by `idle`.",
    .tp_traverse = (traverseproc)blockiter_traverse,
    .tp_clear = (inquiry)blockiter_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)blockiter_next,
    .tp_new = blockiter_new,
};

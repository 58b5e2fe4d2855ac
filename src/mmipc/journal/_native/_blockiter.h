/* _blockiter.h: Reader.frames(wait="block") in C (private to the extension; see _blockiter.c). */
#ifndef MMIPC_BLOCKITER_H
#define MMIPC_BLOCKITER_H

#include <Python.h>

/* BlockIter(reader, idle): the iterator type (_blockiter.c). */
extern PyTypeObject mmipc_BlockIterType;

/* Announce sleep on `bell` (its `needy` bytes set after, unless NULL or None), re-check with
 * read(), wait on the futex `timeout` ns at most (< 0: no limit), read() after a ring: a frame,
 * True (rung, nothing read), False (no ring ended the wait), or NULL with an exception
 * (_mmipcmodule.c, bell_block). */
PyObject *mmipc_bell_block(PyObject *bell, PyObject *read, long long timeout, PyObject *needy);

#endif

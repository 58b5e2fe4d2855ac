/* mmipc_bell.h: a writer's side of the doorbells (private; docs/format.md, "Doorbells").
 *
 * Shared by the C writer (mmipc.c) and the extension's WriterCore (_mmipcmodule.c), so that a
 * Python writer on the native backend rings from C, in the same call as its commit, exactly as a
 * C writer does. After each commit a writer calls mmipc_ring_bells: one relaxed load of the
 * list's count and a branch when no reader listens; the ring itself is out of line (cold). A
 * writer with no ringer points its count at MMIPC_NO_BELLS, a word that stays 0, rather than at
 * NULL: the check is then one load, a test and a branch, with no test of the pointer. */
#ifndef MMIPC_BELL_H
#define MMIPC_BELL_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct mmipc_ringer mmipc_ringer;

/* Map NAME.bells at `path` (created if missing, never grown past RLIMIT_FSIZE): the ringer, or
 * NULL (no memory, a path too long: then the writer rings nobody, and blocking readers see its
 * frames at their sweeps). A ringer that could not make the list is "late": its count pointer
 * is never 0, and its ring tries to map the list a reader made, at most every 100 ms. */
mmipc_ringer *mmipc_ringer_open(const char *path);
void mmipc_ringer_close(mmipc_ringer *r);
/* Ring every bell listed: a full fence first (the commit before every load of the list and the
 * bells); a bell whose flag is still set and whose reader is awake is left alone. */
void mmipc_ringer_ring(mmipc_ringer *r);
/* The list's count word: 0 when no reader listens; MMIPC_NO_BELLS for a NULL ringer. */
_Atomic uint32_t *mmipc_ringer_count(mmipc_ringer *r);

/* The count of a writer that rings nobody (no ringer): never written, so never anything but 0. */
extern _Atomic uint32_t mmipc_no_bells;
#define MMIPC_NO_BELLS (&mmipc_no_bells)

/* `count` is never NULL (MMIPC_NO_BELLS instead). The ringer is passed by its address and loaded
 * only when the count is not 0 (passed by value, the compiler loads it before the test). */
static inline void
mmipc_ring_bells(mmipc_ringer *const *r, _Atomic uint32_t *count)
{
    if (__builtin_expect(atomic_load_explicit(count, memory_order_relaxed) != 0, 0)) {
        mmipc_ringer_ring(*r);
    }
}

#endif /* MMIPC_BELL_H */

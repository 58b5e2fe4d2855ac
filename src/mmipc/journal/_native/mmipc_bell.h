/* mmipc_bell.h: a writer's side of the doorbells (private; docs/format.md, "Doorbells").
 *
 * Shared by the C writer (mmipc.c) and the extension's WriterCore (_mmipcmodule.c), so that a
 * Python writer on the native backend rings from C, in the same call as its commit, exactly as a
 * C writer does. After each commit a writer calls mmipc_ring_bells: one relaxed load of the
 * list's count when no reader listens; the ring itself is out of line (cold). */
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
/* The list's count word: 0 when no reader listens. */
_Atomic uint32_t *mmipc_ringer_count(mmipc_ringer *r);

static inline void
mmipc_ring_bells(mmipc_ringer *r, _Atomic uint32_t *count)
{
    if (__builtin_expect(count != 0 && atomic_load_explicit(count, memory_order_relaxed) != 0, 0)) {
        mmipc_ringer_ring(r);
    }
}

#endif /* MMIPC_BELL_H */

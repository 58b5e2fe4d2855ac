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

/* A full barrier (every load and store before it before every one after it), as the Dekker pairs of
 * the doorbells need (docs/format.md, "Doorbells"). On x86-64, a locked OR of 0 into the top of
 * the stack: a locked instruction orders every load and store around it (Intel SDM vol. 3,
 * 8.2.2: reads and writes are not reordered with locked instructions), which is what the
 * protocol needs, at about half the cost of `mfence`, which also waits for non-temporal stores and
 * write-combining memory that no bell uses (glibc's memcpy fences its own non-temporal stores).
 * GCC picks `lock or` for atomic_thread_fence itself, but `mfence` in code it optimizes for size,
 * such as the ring, which is `cold`: hence the explicit instruction. Linux's smp_mb() is the same. */
static inline void
mmipc_full_fence(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __asm__ __volatile__("lock; orq $0, (%%rsp)" ::: "memory", "cc");
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

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

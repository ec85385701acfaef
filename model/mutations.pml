/*
 * Seeded bugs: each -DMUT_<NAME> breaks one step of protocol.pml, so that a check can
 * show it would notice (run.sh --mutants runs every one against the check that must
 * catch it; mutants.tsv). Without any, these macros are today's code.
 */

/* _process.py:211 is_proven_dead: a live process with the recorded pid but another
 * start time (the pid was reused) is the dead holder. Mutant: the pid alone decides. */
#ifdef MUT_PID_ONLY_DEATH
#define START_DIFFERS(wstart, q)   false
#else
#define START_DIFFERS(wstart, q)   (wstart != 0 && wstart != start[q])
#endif

/* _process.py:192 is_proven_dead: a holder of another pid namespace is never judged.
 * Mutant: its pid is looked up in ours. */
#ifdef MUT_ANY_NS_DEATH
#define NS_DIFFERS(wns)            false
#else
#define NS_DIFFERS(wns)            (wns != id_ns[me])
#endif

/* _handle.py:359, 365 Handle.recover: under the guard, the record must still be the
 * one that was judged. Mutant: it is not read again. */
#ifdef MUT_NO_RECHECK
#define RECHECK                    true
#else
#define RECHECK                    SAME_AS_SEEN
#endif

/* _handle.py:402 Handle._take_over: the dead holder's acquisition becomes ours, so its
 * token is posted back. Mutant: the lock semaphore is posted instead. */
#ifdef MUT_TAKEOVER_POSTS_L
#define TAKEOVER_POST              POST_L
#else
#define TAKEOVER_POST              POST_H
#endif

/* _handle.py:287 Handle._free_if_current: only the acquisition being given back is
 * freed. Mutant: whatever acquisition holds the token. */
#ifdef MUT_GIVE_BACK_ANY
#define GEN_IS(gn)                 true
#else
#define GEN_IS(gn)                 (r_gen == gn)
#endif

/* _handle.py:167, 216: the owed mark is stored before the give-back, so that a waiter
 * can finish one cut short. Mutant: no mark. */
#ifdef MUT_NO_OWED_MARK
#define MARK_OWED(gn)              skip
#else
#define MARK_OWED(gn)              r_owed = gn
#endif

/* _handle.py:313 Handle.release: a release of another process's acquisition takes the
 * guard. Mutant: it does not. */
#ifdef MUT_RELEASE_UNGUARDED
#define RELEASE_GUARD_WAIT         skip
#define RELEASE_GUARD_OUT          skip
#else
#define RELEASE_GUARD_WAIT         GUARD_WAIT
#define RELEASE_GUARD_OUT          GUARD_OUT
#endif

/* _handle.py:329 Handle._free: a release takes the token. Mutant: it checks that the
 * lock is taken and posts it (the check-then-post race of DESIGN.md). */
#ifdef MUT_RELEASE_BY_VALUE
#define FREE_TAKE(ok)   if DIE :: atomic { L == 0 -> ok = true; END_ACQ } \
                               :: atomic { L > 0 -> ok = false; NOT_HELD } fi
#else
#define FREE_TAKE(ok)   if DIE :: atomic { H > 0 -> H--; ok = true; END_ACQ } \
                               :: atomic { H == 0 -> ok = false; NOT_HELD } fi
#endif

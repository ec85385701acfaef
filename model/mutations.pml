/*
 * Seeded bugs: each -DMUT_<NAME> breaks one step of protocol.pml, so that a check can
 * show it would notice (run.sh --mutants runs every one against the check that must
 * catch it; mutants.tsv). Without any, these macros are today's code.
 */

/* _process.py:156 judge: a live process with the recorded pid but another start time
 * (the pid was reused) is the dead holder. Mutant: the pid alone decides. */
#ifdef MUT_PID_ONLY_DEATH
#define START_DIFFERS(wstart, q)   false
#else
#define START_DIFFERS(wstart, q)   (wstart != 0 && wstart != start[q])
#endif

/* _process.py:137 judge: a holder of another pid namespace is never judged.
 * Mutant: its pid is looked up in ours. */
#ifdef MUT_ANY_NS_DEATH
#define NS_DIFFERS(wns)            false
#else
#define NS_DIFFERS(wns)            (wns != id_ns[me])
#endif

/* _process.py:145 judge: /proc is read only when it is this namespace's own (_trusted);
 * with a foreign one, only kill(pid, 0) failing proves death. Mutant (defect 3 of the
 * code before 4f69ab7): a foreign /proc is trusted, and another process's entry for
 * that pid number "proves" the holder dead. */
#ifdef MUT_FOREIGN_TRUSTED
#define JUDGE_TRUSTS_PROC          true
#else
#define JUDGE_TRUSTS_PROC          TRUSTED_PROC
#endif

/* _handle.py:385 Handle.release: the unguarded own-release path is taken only for an
 * acquisition that carries this process's key. Mutant (defect 1 of the code before
 * 4f69ab7): the pid is compared, so a process with a dead holder's pid (reused, or the
 * same number in another pid namespace) takes it. */
#ifdef MUT_FAST_PID_ONLY
#define OWN_ACQUISITION            (r_pid == pidn[me])
#else
#define OWN_ACQUISITION            (r_key == key[me])
#endif

/* _handle.py:426, 360, 632: every guarded section that takes H first records an intent.
 * Mutant (defect 2 of the code before 4f69ab7): no intents, so a section whose writer
 * was killed holding H is never settled. */
#ifdef MUT_NO_INTENT
#define SET_INTENT(k, p, gn)       skip
#else
#define SET_INTENT(k, p, gn)       r_ikind = k; r_iphase = p; r_igen = gn
#endif

/* _handle.py:468 Handle._settle_intent: only a section that reached TOOK is finished.
 * Mutant: a TAKING release or give-back is finished too (pid = 0, post L). */
#ifdef MUT_SETTLE_FINISHES_TAKING
#define SETTLE_FINISHES(ip)        true
#else
#define SETTLE_FINISHES(ip)        (ip == I_TOOK)
#endif

/* _handle.py:484 Handle._holder_may_release: a live recorded holder may be in its
 * unguarded steps, so an ambiguous intent is left to it. Mutant: never. */
#ifdef MUT_HOLDER_NEVER_RELEASING
#define HOLDER_MAY_OVERRIDE        may = false
#else
#define HOLDER_MAY_OVERRIDE        skip
#endif

/* sync.py:195 Lock._wait_quietly: a waiter settles intents and owed acquisitions at
 * every slice. Mutant: it does not. */
#ifdef MUT_NO_SETTLE
#define WAITER_SETTLE              skip
#else
#define WAITER_SETTLE              settle()
#endif

/* _handle.py:536 Handle.recover: under the guard, the record must still be the one
 * that was judged. Mutant: it is not read again. */
#ifdef MUT_NO_RECHECK
#define RECHECK                    true
#else
#define RECHECK                    SAME_AS_SEEN
#endif

/* _handle.py:597 Handle._take_over: the lost token of the dead holder's acquisition is
 * posted back. Mutant: the lock semaphore is posted instead. */
#ifdef MUT_TAKEOVER_POSTS_L
#define TAKEOVER_POST(post)        if :: post -> ST(POST_L; BEGIN_TAKEOVER) :: else -> skip fi
#else
/* _handle.py:597 Handle._take_over: self.token.release() */
#define TAKEOVER_POST(post)        if :: post -> ST(POST_H; BEGIN_TAKEOVER) :: else -> skip fi
#endif

/* _handle.py:369 Handle._free_if_current: only the acquisition being given back is
 * freed. Mutant: whatever acquisition holds the token. */
#ifdef MUT_GIVE_BACK_ANY
#define GEN_IS(gn)                 true
#else
#define GEN_IS(gn)                 (r_gen == gn)
#endif

/* _handle.py:240, 281, 296: the owed mark is stored before the give-back, so that a
 * waiter can finish one cut short. Mutant: no mark. */
#ifdef MUT_NO_OWED_MARK
#define MARK_OWED(gn)              skip
#else
#define MARK_OWED(gn)              r_owed = gn
#endif

/* _handle.py:399 Handle.release: a release of another process's acquisition takes the
 * guard. Mutant: it does not. */
#ifdef MUT_RELEASE_UNGUARDED
#define RELEASE_GUARD_WAIT         skip
#define RELEASE_GUARD_OUT          skip
#else
#define RELEASE_GUARD_WAIT         GUARD_WAIT
#define RELEASE_GUARD_OUT          GUARD_OUT
#endif

/* _handle.py:429 Handle._free: a release takes the token. Mutant: it checks that the
 * lock is taken and posts it (the check-then-post race of DESIGN.md). */
#ifdef MUT_RELEASE_BY_VALUE
#define FREE_TAKE(ok)   if DIE :: atomic { L == 0 -> ok = true } \
                               :: atomic { L > 0 -> ok = false; NOT_HELD } fi
#else
#define FREE_TAKE(ok)   if DIE :: atomic { H > 0 -> H--; ok = true } \
                               :: atomic { H == 0 -> ok = false; NOT_HELD } fi
#endif

/* ---- two steps of _settle_intent, and the bugs they fixed (-DMUT_<NAME>) ---------- */

/* _handle.py:472 Handle._settle_intent: a TOOK release is finished only while the
 * acquisition it freed is still the current one. The bug (-DMUT_SETTLE_ONE_READ): the generation read once
 * (line 465) and the pid later: a publisher that took the L the dead writer had
 * already posted can write itself in between, and its pid is then cleared and L posted
 * under it. The code reads the pid, then the generation again (one write sets both). */
#ifndef MUT_SETTLE_ONE_READ
#define FINISH_STILL_CURRENT(v)    if :: v -> ST(v = (r_gen == ig)) :: else -> skip fi
#else
#define FINISH_STILL_CURRENT(v)    skip
#endif

/* _handle.py:494 Handle._holder_may_release: it reads the pid again, after
 * _settle_intent (line 475) found it non-zero with H at 0. A 0 now means that the
 * holder's own unguarded release cleared it in between and is about to post L: today
 * -DMUT_HOLDER_PID_REREAD answers "no", and the caller posts H under it (L + H = 2). The code: a pid that
 * reads 0 here answers "yes" (leave the intent; the next settle finds pid 0 and passes). */
#ifndef MUT_HOLDER_PID_REREAD
#define HOLDER_PID_CLEARED(p)      (p == 0)
#else
#define HOLDER_PID_CLEARED(p)      false
#endif

/* ---- the in-loop handover (_posix/handover.py hand_over_lock) -------------------- */

/* _posix/handover.py:54 hand_over_lock: only an acquisition that R records as this
 * process's is handed over; any other is released as usual (guarded, if need be).
 * Mutant: the key is not compared, so a task's release of another process's
 * acquisition (any process may release) keeps the lock for this process, unguarded. */
#ifdef MUT_HANDOVER_NO_KEY
#define HANDOVER_KEY_IS_MINE       true
#else
#define HANDOVER_KEY_IS_MINE       (r_key == key[me])
#endif

/* _posix/handover.py:60 hand_over_lock: the token is taken before the record is
 * rewritten, and posted after. Mutant: it is not taken (the record rewritten under a
 * posted token, then posted again). The ghost ends the acquisition at the trywait, as
 * in the own release; the handover ends only its own process's (HANDOVER_OWN). */
#ifdef MUT_HANDOVER_NO_TOKEN
#define HANDOVER_TAKE(ok)   if DIE :: atomic { ok = true; OWN_RELEASE_OF(rg); HANDOVER_OWN; END_ACQ } fi
#else
#define HANDOVER_TAKE(ok)   if DIE :: atomic { H > 0 -> H--; ok = true; OWN_RELEASE_OF(rg); \
                                               HANDOVER_OWN; END_ACQ } \
                               :: atomic { H == 0 -> ok = false } fi
#endif

/*
 * A model of aplock's POSIX semaphore protocol (src/aplock/_posix/semaphore.py), checked
 * with spin; the main file of the checks whose model column in checks.tsv names it.
 *
 * It shares the kernel of the lock's model (os.pml: processes, identities, SIGKILL before
 * any step, the guard that the kernel drops when its holder dies) and its proof of death
 * (protocol.pml: is_proven_dead, with the seeded bugs of mutations.pml that break it).
 * What is the semaphore's: the record's slot table and extra count, the claim, release
 * and recovery steps, and four properties:
 *
 *   BOUND   the count never exceeds the bound: the acquisitions holding a permit never
 *           outnumber the permits, a release ends an acquisition that holds one, and a
 *           bounded semaphore never gains a permit (BoundedSemaphore: count <= value)
 *   NOROB   recovery frees only permits whose holder is dead (no live holder is robbed)
 *   ONCE    each dead acquisition's permit is freed once, and warns one acquirer once;
 *           a warning names an acquisition whose permit was freed from its dead holder
 *   LOSS    no permit is lost after any death at any step: once every process has
 *           finished or died, the repair (recovery by an auditor) leaves every permit
 *           free, in the table and in the count
 *
 * The wake-up semaphore W is not modelled: it only ends a waiter's slice early, and a
 * slice may always end (time is not modelled), so no property depends on it.
 */

#define NP 4                /* three processes and the auditor (slot 3) */
#define AUD 3
/* The proof of death is the lock's (protocol.pml), and so is this seeded bug of it. */
#ifdef MUT_SEM_PID_ONLY_DEATH
#define MUT_PID_ONLY_DEATH
#endif
#include "os.pml"
#include "mutations.pml"
#include "protocol.pml"

#ifndef VALUE
#define VALUE 2             /* Semaphore(name, 2) / BoundedSemaphore(name, 2) */
#endif
#define CAP 3               /* slots: VALUE, and one release above it (Semaphore) */
#ifdef BOUNDED
#define IS_BOUNDED true
#else
#define IS_BOUNDED false
#endif

/* ---- the record (_posix/slots.py) ---------------------------------------------- */

byte  m_extra = 0;          /* releases that found no permit held: VALUE + m_extra permits */
byte  m_gen = 0;            /* generation of the latest acquisition */
short sl_pid[CAP];          /* holder pid; 0: free */
byte  sl_start[CAP];
byte  sl_ns[CAP];
byte  sl_key[CAP];
byte  sl_gen[CAP];          /* generation of the acquisition that holds (or held) it */
short sl_dead[CAP];         /* abandoned: the dead holder of a freed slot (0: none) */

/* The free permits as a count. In the code there is none (the table is the truth): here
 * it is a ghost that every commit keeps equal to the free slots. MUT_SEM_COUNT_FIRST
 * makes it the kernel semaphore S that an acquirer takes before it claims a slot (the
 * design of a counting semaphore beside a table). */
byte S = VALUE;

/* ---- ghosts --------------------------------------------------------------------- */

byte g_out = 0;             /* acquisitions that hold a permit now */
byte g_extra = 0;           /* releases that raised the count above VALUE */
byte g_sowner[CAP];         /* the process whose acquisition holds slot j */
int  g_recovered = 0;       /* bit g: acquisition g's permit was freed from a dead holder */
int  g_warned = 0;          /* bit g: an acquirer was warned of dead acquisition g */
byte g_done = 0;            /* processes that finished their script or died */

#ifdef PROP_BOUND
#define BOUND(c)  assert(c)
#else
#define BOUND(c)  skip
#endif
#ifdef PROP_LOSS
#define LOSS(c)   assert(c)
#else
#define LOSS(c)   skip
#endif

#define HELD_COUNT(n)  n = (sl_pid[0] != 0) + (sl_pid[1] != 0) + (sl_pid[2] != 0)
/* The count a BoundedSemaphore shows never exceeds its value (its extra stays 0). */
#define COUNT_BOUNDED  BOUND(!IS_BOUNDED || m_extra == 0)

/* ---- seeded bugs (-DMUT_SEM_<NAME>; sem_mutants in mutants.tsv) ------------------ */

/* _posix/semaphore.py SemHandle._claim_once: the free slot is found and written under
 * the guard, tried without blocking (a busy guard: no permit this time, the caller tries
 * again). Mutant: without it, two claimers write the same slot. */
#ifdef MUT_SEM_CLAIM_UNGUARDED
#define CLAIM_GUARD_TRY(got) got = true
#define CLAIM_GUARD_OUT    skip
#else
#define CLAIM_GUARD_TRY(got) GUARD_TRY(got)
#define CLAIM_GUARD_OUT    GUARD_OUT
#endif

/* SemHandle.release: the slot is chosen and cleared under the guard. Mutant: without
 * it, two releasers clear the same slot and both succeed. */
#ifdef MUT_SEM_RELEASE_UNGUARDED
#define REL_GUARD_WAIT     skip
#define REL_GUARD_OUT      skip
#else
#define REL_GUARD_WAIT     GUARD_WAIT
#define REL_GUARD_OUT      GUARD_OUT
#endif

/* SemHandle.recover: under the guard, a slot is freed only if it still holds the
 * acquisition that was judged. Mutant: it is not read again. */
#ifdef MUT_SEM_NO_RECHECK
#define SEM_RECHECK(j)     true
#else
#define SEM_RECHECK(j)     (sl_pid[j] == c_pid[j] && sl_gen[j] == c_gen[j] && \
                            sl_key[j] == c_key[j] && sl_start[j] == c_start[j] && \
                            sl_ns[j] == c_ns[j])
#endif

/* SemHandle.claim: the claim's one pack_into clears the slot's abandoned mark. Mutant:
 * the mark stays, and warns the next acquirer of that slot again. */
#ifdef MUT_SEM_MARK_KEPT
#define CLEAR_MARK(j)      skip
#else
#define CLEAR_MARK(j)      sl_dead[j] = 0
#endif

/* SemHandle.recover: a freed slot is marked with its dead holder's pid, for the
 * acquirer that claims it. Mutant: no mark, and nobody is ever warned. */
#ifdef MUT_SEM_NO_MARK
#define MARK_DEAD(j)       sl_dead[j] = 0
#else
#define MARK_DEAD(j)       sl_dead[j] = c_pid[j]
#endif

/* SemHandle.release: a bounded semaphore's release with no permit held raises. Mutant:
 * it adds a permit, as a Semaphore's does. */
#ifdef MUT_SEM_BOUNDED_ADDS
#define ADDS_PERMIT        true
#else
#define ADDS_PERMIT        (!IS_BOUNDED)
#endif

/* ---- the protocol (_posix/semaphore.py SemHandle) ------------------------------- */

#define SEM_LOCALS \
	byte j; byte k; byte total; byte f; byte g; byte n; byte held; byte res; \
	byte dgen; short dpid; bool gotg; bool dead; bool same; bool got; bool block; \
	byte freed; byte q; \
	short c_pid[CAP]; byte c_start[CAP]; byte c_ns[CAP]; byte c_key[CAP]; \
	byte c_gen[CAP]; bool c_dead[CAP]

/* Forget the locals of a finished call (fewer distinct states). */
#define SFORGET  d_step { j = 0; k = 0; total = 0; f = 0; g = 0; dgen = 0; dpid = 0; \
                          gotg = false; dead = false; same = false; freed = 0; q = 0; \
                          c_pid[0] = 0; c_pid[1] = 0; c_pid[2] = 0; \
                          c_start[0] = 0; c_start[1] = 0; c_start[2] = 0; \
                          c_ns[0] = 0; c_ns[1] = 0; c_ns[2] = 0; \
                          c_key[0] = 0; c_key[1] = 0; c_key[2] = 0; \
                          c_gen[0] = 0; c_gen[1] = 0; c_gen[2] = 0; \
                          c_dead[0] = false; c_dead[1] = false; c_dead[2] = false }

/* An acquisition begins with its slot's write. */
#define BEGIN_PERMIT(j) \
	g_out++; g_sowner[j] = me; BOUND(g_out <= VALUE + g_extra); COUNT_AT_COMMIT; \
	if :: dpid != 0 -> ONCE((g_recovered & (1 << dgen)) != 0 && (g_warned & (1 << dgen)) == 0); \
	                   g_warned = g_warned | (1 << dgen) \
	   :: else -> skip fi
/* A release that finds no permit held (and raises, or adds one) finds none held. */
#define NONE_HELD(j)    if :: j == NONE -> BOUND(g_out == 0) :: else -> skip fi
/* A release ends the acquisition of the slot it clears: one that holds a permit. */
#define END_PERMIT(j)   BOUND(sl_pid[j] != 0 && g_out > 0); g_out--; S++

#ifdef MUT_SEM_COUNT_FIRST
#define COUNT_AT_COMMIT skip
#else
#define COUNT_AT_COMMIT S--
#endif

/* j = the first free slot below total, or NONE (one call: tolist().index(0)). */
inline first_free(total, j) {
	j = 0;
	do
	:: j < total && sl_pid[j] == 0 -> break
	:: j < total && sl_pid[j] != 0 -> j++
	:: j >= total -> j = NONE; break
	od
}

/* SemHandle.claim: res = the generation, or 0 if no permit was free. */
inline claim(res) {
	res = 0;
#ifdef MUT_SEM_COUNT_FIRST
	/* the mutant: take the count first (sem_trywait S), then claim a slot */
	if DIE
	:: atomic { S > 0 -> S--; got = true }
	:: atomic { S == 0 -> got = false }
	fi;
#else
	got = true;
#endif
	if
	:: got ->
		/* _posix/semaphore.py:231 SemHandle._claim_once: with self.guard.held(block=False) as got: */
		CLAIM_GUARD_TRY(gotg);
		if
		:: !gotg -> skip
		:: else ->
			/* _posix/semaphore.py:236 SemHandle._claim_once: slot = words[_P0 : _P0 + _W * total : _W].tolist().index(0) */
			ST(total = VALUE + m_extra; first_free(total, j));
			if
			:: j == NONE -> CLAIM_GUARD_OUT
			:: else ->
				/* _posix/semaphore.py:240 SemHandle._claim_once: dead_pid = words[at + _slots.S_ABANDONED] */
				ST(dpid = sl_dead[j]; dgen = sl_gen[j]);
				/* _posix/semaphore.py:243 SemHandle._claim_once: words[_GEN] = generation */
				ST(m_gen++; g = m_gen);
				/* _posix/semaphore.py:244 SemHandle._claim_once: _CLAIM.pack_into( */
				ST(sl_gen[j] = g; sl_pid[j] = pidn[me]; sl_start[j] = id_start[me];
				   sl_ns[j] = id_ns[me]; sl_key[j] = key[me]; CLEAR_MARK(j); BEGIN_PERMIT(j));
				CLAIM_GUARD_OUT;
				res = g
			fi
		fi
	:: else -> skip
	fi
}

/* j = this process's latest held permit (by key), else NONE (SemHandle._own_slot). */
inline own_slot(total, j) {
	j = NONE; k = 0;
	do
	:: k < total ->
		if
		:: sl_pid[k] != 0 && sl_key[k] == key[me] && (j == NONE || sl_gen[k] > sl_gen[j]) -> j = k
		:: else -> skip
		fi;
		k++
	:: else -> break
	od
}

/* j = the oldest held permit, else NONE (SemHandle._oldest_slot). */
inline oldest_slot(total, j) {
	j = NONE; k = 0;
	do
	:: k < total ->
		if
		:: sl_pid[k] != 0 && (j == NONE || sl_gen[k] < sl_gen[j]) -> j = k
		:: else -> skip
		fi;
		k++
	:: else -> break
	od
}

/* SemHandle.release: res = 1 released, 0 LockNotHeldError, 2 at capacity (ValueError). */
inline sem_release(res) {
	res = 0;
	/* _posix/semaphore.py:272 SemHandle.release: with self.guard.held(): */
	REL_GUARD_WAIT;
	/* _posix/semaphore.py:273 SemHandle.release: slot = self._own_slot() */
	ST(total = VALUE + m_extra; own_slot(total, j));
	if
	:: j == NONE ->
		/* _posix/semaphore.py:275 SemHandle.release: slot = self._oldest_slot() */
		ST(oldest_slot(total, j); NONE_HELD(j))
	:: else -> skip
	fi;
	if
	:: j != NONE ->
		/* _posix/semaphore.py:277 SemHandle.release: words[_slots.slot_word(slot) + _slots.S_PID] = 0  # the commit point */
		ST(END_PERMIT(j); sl_pid[j] = 0);
		res = 1
	:: j == NONE && !ADDS_PERMIT ->
		/* _posix/semaphore.py:279 SemHandle.release: raise LockNotHeldError( */
		skip
	:: j == NONE && ADDS_PERMIT && total >= CAP ->
		/* _posix/semaphore.py:286 SemHandle.release: if self.value + extra >= _CAPACITY: */
		res = 2
	:: j == NONE && ADDS_PERMIT && total < CAP ->
		/* _posix/semaphore.py:291 SemHandle.release: words[_EXTRA] = extra + 1  # the commit point */
		ST(m_extra++; g_extra++; S++; COUNT_BOUNDED);
		res = 1
	fi;
	REL_GUARD_OUT
}

/* SemHandle.recover: freed = the permits freed; with block (repair) it waits for the
 * guard, else it tries it once. */
inline sem_recover(block, freed) {
	freed = 0;
	/* _posix/semaphore.py:394 SemHandle.recover: suspects = self._dead_holders() */
	ST(total = VALUE + m_extra);
	k = 0;
	do
	:: k < total ->
		/* _posix/semaphore.py:375 SemHandle._dead_holders: pid = words[at + _slots.S_PID] */
		ST(c_pid[k] = sl_pid[k]; c_start[k] = sl_start[k]; c_ns[k] = sl_ns[k];
		   c_key[k] = sl_key[k]; c_gen[k] = sl_gen[k]);
		c_dead[k] = false;
		if
		:: c_pid[k] != 0 && c_key[k] != key[me] ->
			/* _posix/semaphore.py:382 SemHandle._dead_holders: judged[who] = is_proven_dead(who) */
			ST(is_proven_dead(c_pid[k], c_start[k], c_ns[k], dead));
			c_dead[k] = dead
		:: else -> skip
		fi;
		k++
	:: else -> break
	od;
	if
	:: c_dead[0] || c_dead[1] || c_dead[2] ->
		/* _posix/semaphore.py:399 SemHandle.recover: with self.guard.held(block=block) as got: */
		if
		:: block -> GUARD_WAIT; gotg = true
		:: else -> GUARD_TRY(gotg)
		fi;
		if
		:: gotg ->
			k = 0;
			do
			:: k < total ->
				if
				:: c_dead[k] ->
					/* _posix/semaphore.py:405 SemHandle.recover: words[at + _slots.S_GEN] != generation */
					ST(same = SEM_RECHECK(k));
					if
					:: same ->
						/* _posix/semaphore.py:413 SemHandle.recover: _FREE_DEAD.pack_into(self.mm, (at + _slots.S_PID) * 8, 0, who.pid) */
						ST(NOROB(g_sowner[k] < NP && !alive[g_sowner[k]]);
						   ONCE((g_recovered & (1 << c_gen[k])) == 0);
						   g_recovered = g_recovered | (1 << c_gen[k]);
						   END_PERMIT(k); sl_pid[k] = 0; MARK_DEAD(k));
						freed++
					:: else -> skip
					fi
				:: else -> skip
				fi;
				k++
			:: else -> break
			od;
			GUARD_OUT
		:: else -> skip
		fi
	:: else -> skip
	fi;
	skip
}

/* The peek: free = the free slots below total (one call: tolist().count(0)). */
#ifdef MUT_SEM_COUNT_FIRST
#define PEEK_FREE(f)  ST(f = S)
#else
#define PEEK_FREE(f)  ST(total = VALUE + m_extra; \
                         f = (0 < total && sl_pid[0] == 0) + (1 < total && sl_pid[1] == 0) + \
                             (2 < total && sl_pid[2] == 0))
#endif

/* Semaphore.acquire(block, timeout): got is its result. SemaphoreCore.try_acquire, then
 * SemaphoreCore.wait: a peek and a claim before each slice, a recovery check between
 * slices (MAY_SKIP_RECOVER: the interval has not passed), a timeout that may end it. */
inline sem_acquire() {
	got = false;
	/* _posix/semaphore.py:501 SemaphoreCore.try_acquire: if not h.free(): */
	PEEK_FREE(f);
	if
	:: f > 0 ->
		/* _posix/semaphore.py:503 SemaphoreCore.try_acquire: grant = h.claim(patience) */
		claim(res); got = (res != 0)
	:: else -> skip
	fi;
	SFORGET;
	if
	:: !got && block ->
		do
		:: got -> break
		:: else ->
			/* _posix/semaphore.py:522 SemaphoreCore.wait: if h.free(): */
			PEEK_FREE(f);
			if
			:: f > 0 ->
				/* _posix/semaphore.py:523 SemaphoreCore.wait: grant = h.claim(deadline.slice()) */
				claim(res); got = (res != 0)
			:: else -> skip
			fi;
			SFORGET;
			if
			:: !got ->
				if
				:: true ->
					/* _posix/semaphore.py:531 SemaphoreCore.wait: if h.recover(): */
					sem_recover(false, freed); SFORGET
				:: MAY_SKIP_RECOVER -> skip
				fi;
				if
				:: true -> skip
				:: break               /* the timeout ran out */
				fi
			:: else -> skip
			fi
		od
	:: else -> skip
	fi
}

/* ---- the processes ----------------------------------------------------------------- */

byte strays[NP];            /* release() calls without having acquired, made first */
byte acqs[NP];              /* then this many acquire() calls, held together */
byte how[NP];               /* 0: block=False, 1: a timeout that may run out, 2: either */
byte cycles[NP];            /* how many times it does its acquisitions and releases */

inline sproc(i, p, s, n, nstray, nacq, mode, killable) {
	pidn[i] = p; start[i] = s; ns[i] = n; procns[i] = n; id_start[i] = s; id_ns[i] = n;
	key[i] = i + 1; reuses[i] = NONE; alive[i] = true; mortal[i] = killable;
	strays[i] = nstray; acqs[i] = nacq; how[i] = mode; cycles[i] = 1
}

proctype SProc(byte me) {
	SEM_LOCALS;
	byte m;

end_unborn:
	(reuses[me] == NONE || (up[reuses[me]] && !alive[reuses[me]]));
	atomic { up[me] = true; alive[me] = true };

	n = 0;
	do
	:: n < strays[me] -> n++; sem_release(res); SFORGET; res = 0
	:: else -> break
	od;
	m = 0;
	do
	:: m < cycles[me] ->
		m++; n = 0; held = 0;
		do
		:: n < acqs[me] ->
			n++;
			if
			:: how[me] == 0 || how[me] == 2 -> block = false
			:: how[me] == 1 || how[me] == 2 -> block = true
			fi;
			sem_acquire();
			if
			:: got -> held++
			:: else -> skip
			fi;
			d_step { got = false; res = 0; block = false }
		:: else -> break
		od;
		do
		:: held > 0 -> held--; sem_release(res); SFORGET; res = 0
		:: else -> break
		od
	:: else -> break
	od;
	atomic { g_done++ };
	goto idle;
died:
	atomic { g_done++ };
idle:
	skip
}

/* ---- scenarios (-DSC_SEM_<NAME>) ------------------------------------------------ */

inline ssetup() {
	/* the auditor: alive, in namespace 1, never killed */
	pidn[AUD] = 9; start[AUD] = 1; ns[AUD] = 1; procns[AUD] = 1; id_start[AUD] = 1;
	id_ns[AUD] = 1; key[AUD] = AUD + 1; reuses[AUD] = NONE; alive[AUD] = true; up[AUD] = true;
#if defined(SC_SEM_KILL)
	/* X holds both permits, A and B wait for one (-DAGAIN: B twice); a SIGKILL anywhere. */
	sproc(0, 1, 1, 1, 0, 2, 1, true);
	sproc(1, 2, 1, 1, 0, 1, 1, true);
	sproc(2, 3, 1, 1, 0, 1, 1, true);
#ifdef AGAIN
	cycles[2] = 2;           /* B acquires a second time: a freed slot is claimed twice */
#endif
#elif defined(SC_SEM_RACE)
	/* Releases race: X acquires and releases; Y and Z each release once without
	 * having acquired (any process may); a SIGKILL anywhere. */
	sproc(0, 1, 1, 1, 0, 1, 2, true);
	sproc(1, 2, 1, 1, 1, 0, 0, true);
	sproc(2, 3, 1, 1, 1, 1, 1, true);
#elif defined(SC_SEM_REUSE)
	/* X holds a permit and may die; Y is born with X's pid (another start time) once X
	 * is dead and holds one; W waits for one and recovers. */
	sproc(0, 1, 1, 1, 0, 1, 2, true);
	sproc(1, 2, 1, 1, 0, 2, 1, false);
	sproc(2, 1, 2, 1, 0, 1, 1, false);
	reuses[2] = 0; alive[2] = false;
#else
#error "choose a scenario: -DSC_SEM_KILL, -DSC_SEM_RACE, -DSC_SEM_REUSE"
#endif
}

init {
	byte me = AUD;
	SEM_LOCALS;
	atomic {
		ssetup();
		run SProc(0);
		run SProc(1);
		run SProc(2)
	}
	/* LOSS: once every process has finished or died, the repair (SemaphoreCore.repair:
	 * recovery with a blocking guard) frees the dead holders' permits, and then every
	 * permit is free. */
end_audit:
	(g_done == NP - 1);
	sem_recover(true, freed);
	HELD_COUNT(held);
	LOSS(held == 0 && S == VALUE + m_extra && g_out == 0);
	/* ONCE: every freed permit of a dead holder warned its acquirer, or still waits,
	 * marked, for one. */
	k = 0; freed = 0;
	do
	:: k < CAP ->
		if
		:: sl_pid[k] == 0 && sl_dead[k] != 0 -> freed = freed | (1 << sl_gen[k])
		:: else -> skip
		fi;
		k++
	:: else -> break
	od;
	ONCE(g_recovered == (g_warned | freed) && (g_warned & freed) == 0);
	goto audited;
died:                       /* the auditor is never killed */
	skip;
audited:
	skip
}

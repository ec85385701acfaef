/*
 * The lock protocol, step by step, as src/aplock implements it.
 *
 * One inline per Python function. Every step is one call of the code (a semaphore
 * operation, one pack_into, one word load or store) and carries a reference
 *     FILE:LINE Qualified.name: code
 * where `code` is a fragment of that function's source. `run.sh --refs` checks that each
 * fragment is still in its function (tests/test_model.py runs it), so a change to the
 * protocol points at the steps here that mirror it. ST(...) is one step that SIGKILL may
 * pre-empt (os.pml); whatever is between two steps may interleave with other processes.
 *
 * Signals (a Python handler's exception, -DSIGNALS): SIG is a nondeterministic "a
 * handler raises here", at the points where the code expects one; at most MAXSIG per
 * run (an unbounded supply would let a waiter be interrupted at every slice forever).
 *
 * Ghosts: a guarded section's release or give-back ends the acquisition when it stores
 * phase TOOK (its commit point: a writer killed before it is undone by _settle_intent,
 * one killed after it is finished); the unguarded own release ends it when it takes H.
 */

#ifndef MAXSIG
#define MAXSIG 2                 /* signal handlers that raise, per run */
#endif
#ifdef SIGNALS
#define SIG atomic { sigs < MAXSIG -> sigs++ }
#else
#define SIG false
#endif

#ifdef LIVENESS
#define MAY_SKIP_RECOVER false   /* fairness: a waiter checks its holder at every slice */
#else
#define MAY_SKIP_RECOVER true    /* recovery_interval has not passed since the last check */
#endif

#define INTR 255                 /* the call raised a signal handler's exception */

/* The locals of the inlines below (Promela has no function scope). */
#define PROTOCOL_LOCALS \
	bool took; bool same; bool gotg; bool dead; bool fast; bool ok; bool acq; \
	bool done; bool intr; bool got; bool block; bool settled; bool posted; bool may; \
	bool hd; bool need; bool hv; \
	byte before; byte g; byte cur; byte o; byte res; byte q; byte rg; byte ik; byte ip; byte ig; \
	byte s_gen; short s_pid; byte s_start; byte s_ns; byte s_key; byte s_slot; \
	bool su_valid; byte su_gen; short su_pid; byte su_start; byte su_ns; byte su_key; \
	short h_pid; byte h_start; byte h_ns; byte h_key; \
	short w_pid; byte w_start; byte w_ns; byte w_slot

/* Forget the locals of a finished call (fewer distinct states; _suspect is kept, it is
 * the handle's memory). */
#define FORGET  d_step { took = false; same = false; gotg = false; dead = false; \
                         fast = false; ok = false; acq = false; done = false; \
                         intr = false; settled = false; posted = false; may = false; \
                         hd = false; need = false; before = 0; g = 0; cur = 0; o = 0; \
                         res = 0; q = 0; rg = 0; ik = 0; ip = 0; ig = 0; \
                         s_gen = 0; s_pid = 0; s_start = 0; s_ns = 0; s_key = 0; \
                         s_slot = 0; h_pid = 0; h_start = 0; h_ns = 0; h_key = 0; \
                         w_pid = 0; w_start = 0; w_ns = 0 }

/* _FAST_HOLD.pack_into(..., me_words): this process's (start, ns, key, pid). */
#define WRITE_ME   r_start = id_start[me]; r_ns = id_ns[me]; r_key = key[me]; \
                   r_pid = pidn[me]; g_rslot = me

#define SAME_AS_SEEN  (r_gen == s_gen && r_pid == s_pid && r_start == s_start && \
                       r_ns == s_ns && r_key == s_key)
#define SUSPECT_IS_SEEN (su_valid && su_gen == s_gen && su_pid == s_pid && \
                         su_start == s_start && su_ns == s_ns && su_key == s_key)

/* words[_INTENT_WORD] = kind | phase | gen << 8, and = 0 (SET_INTENT: mutations.pml) */
#define CLEAR_INTENT  r_ikind = 0; r_iphase = 0; r_igen = 0

/* ---- _process.py ---------------------------------------------------------------- */

/* is_proven_dead(who) = judge(who) is False, for process `me`, evaluated in one step:
 * the kill() and the read of /proc are two calls, but a process that changes between
 * them only makes the answer that of a moment later. */
inline is_proven_dead(wpid, wstart, wns, res) {
	/* _process.py:137 judge: if who.pid <= 0 or who.ns != me.ns: */
	if
	:: wpid <= 0 || NS_DIFFERS(wns) -> res = false
	:: else ->
		/* _process.py:140 judge: os.kill(who.pid, 0) */
		find_live(ns[me], wpid, q);
		if
		:: q == NONE -> res = true
		:: else ->
			if
			:: !JUDGE_TRUSTS_PROC ->
				/* _process.py:145 judge: if not HAS_PROC or not _trusted(): */
				res = false
			:: else ->
				/* _process.py:148 judge: stat = _read_stat(who.pid) */
				find_live(procns[me], wpid, q);
				if
				:: q == NONE -> res = false
				:: else ->
					/* _process.py:156 judge: (who.start not in (0, start)) */
					res = START_DIFFERS(wstart, q)
				fi
			fi
		fi
	fi
}

/* ---- _handle.py Handle: taking ------------------------------------------------- */

/* Handle.try_take: res = 0 (None), the generation, or INTR. */
inline try_take(res) {
	res = 0;
	/* _handle.py:223 Handle.try_take: sem.acquire(0) */
	if DIE
	:: atomic { L > 0 -> L--; took = true }
	:: atomic { L == 0 -> took = false }   /* _handle.py:224 Handle.try_take: except _BusyError: */
	fi;
	if
	:: took ->
		/* _handle.py:229 Handle.try_take: before = words[_GEN_WORD] */
		ST(before = r_gen);
		intr = false;
		if
		:: SIG -> intr = true              /* raised before the record write */
		:: true ->
			/* _handle.py:233 Handle.try_take: _FAST_HOLD.pack_into(mm, _HOLD_AT, before + 1, now, me_words) */
			ST(r_gen = before + 1; WRITE_ME);
			/* _handle.py:235 Handle.try_take: self.token.release() */
			ST(POST_H; BEGIN_ACQ);
			if
			:: SIG -> intr = true          /* raised after it: the finally posted H */
			:: true -> skip
			fi
		fi;
		if
		:: intr ->
			/* _handle.py:237 Handle.try_take: if words[_GEN_WORD] == before: */
			ST(same = (r_gen == before));
			if
			:: same ->
				/* _handle.py:238 Handle.try_take: sem.release()  # publish() never started */
				ST(POST_L)
			:: else ->
				/* _handle.py:240 Handle.try_take: words[_OWED_WORD] = before + 1 */
				ST(MARK_OWED(before + 1));
				/* _handle.py:241 Handle.try_take: self.give_back(before) */
				give_back()
			fi;
			res = INTR
		:: else -> res = before + 1        /* _handle.py:243 Handle.try_take: return before + 1 */
		fi
	:: else -> skip
	fi
}

/* Handle.take(seconds) with sem_timedwait: the slice either gets L or runs out while L
 * is 0 (timeouts are nondeterminism; the clock is not modelled). Signals are deferred
 * during it; a handler runs at restore_signals: one pending when the lock is taken
 * makes take() give it back first; one that arrives later raises there. */
inline take(res) {
	res = 0;
	/* _handle.py:262 Handle.take: sem.acquire(seconds) */
	if DIE
	:: atomic { L > 0 -> L--; took = true }
	:: atomic { L == 0 -> took = false }   /* _handle.py:263 Handle.take: except (_BusyError, _SignalError): */
	fi;
	if
	:: took ->
		/* _handle.py:268 Handle.take: before = words[_GEN_WORD] */
		ST(before = r_gen);
		/* _handle.py:272 Handle.take: _FAST_HOLD.pack_into(mm, _HOLD_AT, before + 1, _now(), me_words) */
		ST(r_gen = before + 1; WRITE_ME);
		/* _handle.py:274 Handle.take: self.token.release() */
		ST(POST_H; BEGIN_ACQ);
		g = before + 1;
		if
		:: SIG ->
			/* _handle.py:279 Handle.take: if old is not None and _posix.handled_signal_pending(old): */
			/* _handle.py:281 Handle.take: words[_OWED_WORD] = before + 1 */
			ST(MARK_OWED(before + 1));
			/* _handle.py:282 Handle.take: self.give_back(before) */
			give_back();
			/* _handle.py:293 Handle.take: _posix.restore_signals(old) */
			/* the pending handler runs: it raises, or returns (take gives None) */
			if
			:: res = INTR
			:: res = 0
			fi
		:: true ->
			if
			:: SIG ->
				/* _handle.py:293 Handle.take: _posix.restore_signals(old) */
				/* a handler that arrived after the check runs and raises */
				/* _handle.py:296 Handle.take: self.words[_OWED_WORD] = generation */
				ST(MARK_OWED(g));
				/* _handle.py:297 Handle.take: self.give_back(before) */
				give_back();
				res = INTR
			:: true -> res = g
			fi
		fi
	:: else -> skip
	fi
}

/* ---- _handle.py Handle: intents -------------------------------------------------- */

/* Handle._holder_may_release, under the guard: may. One thread per process, so for the
 * process's own acquisition (threading.active_count() == 1) the answer is no. */
inline holder_may_release() {
	/* _handle.py:496 Handle._holder_may_release: pid = words[_PID_WORD] */
	ST(h_pid = r_pid; h_key = r_key);
	if
	:: HOLDER_PID_CLEARED(h_pid) -> may = true
	:: !HOLDER_PID_CLEARED(h_pid) && (h_pid <= 0 || h_key == 0) -> may = false
	:: else ->
		if
		:: h_key != key[me] ->
			/* _handle.py:497 Handle._holder_may_release: return not is_proven_dead(self.snapshot().holder) */
			ST(h_pid = r_pid; h_start = r_start; h_ns = r_ns);
			ST(is_proven_dead(h_pid, h_start, h_ns, hd));
			may = !hd
		:: else ->
			/* _handle.py:498 Handle._holder_may_release: if threading.active_count() == 1: */
			may = false
		fi
	fi;
	HOLDER_MAY_OVERRIDE
}

/* Handle._settle_intent, under the guard: settled is whether no intent is left. */
inline settle_intent() {
	/* _handle.py:461 Handle._settle_intent: word = words[_INTENT_WORD] */
	ST(ik = r_ikind; ip = r_iphase; ig = r_igen);
	settled = true;
	if
	:: ik == 0 -> skip
	:: else ->
		/* _handle.py:465 Handle._settle_intent: generation = words[_GEN_WORD] */
		ST(cur = r_gen);
		if
		:: ip == I_TOOK && ik != I_GIVE_BACK && cur != ig ->
			/* _handle.py:466 Handle._settle_intent: if phase == Intent.TOOK and kind != Intent.GIVE_BACK and generation != target: */
			skip
		:: else ->
			if
			:: SETTLE_FINISHES(ip) && (ik == I_RELEASE || (ik == I_GIVE_BACK && cur == ig)) ->
				/* _handle.py:474 Handle._settle_intent: if words[_PID_WORD] != 0 and words[_GEN_WORD] == target: */
				ST(posted = (r_pid != 0));
				FINISH_STILL_CURRENT(posted);
				if
				:: posted ->
					/* _handle.py:473 Handle._settle_intent: words[_PID_WORD] = 0 */
					ST(r_pid = 0; g_rslot = NONE);
					/* _handle.py:474 Handle._settle_intent: self.sem.release() */
					ST(POST_L)
				:: else -> skip
				fi
			:: else ->
				/* _handle.py:475 Handle._settle_intent: elif self._token_posted() or words[_PID_WORD] == 0: */
				ST(posted = (H > 0));                 /* Handle._token_posted: self.token.value */
				if
				:: !posted -> ST(posted = (r_pid == 0))
				:: else -> skip
				fi;
				if
				:: posted -> skip
				:: else ->
					/* _handle.py:477 Handle._settle_intent: elif self._holder_may_release(): */
					holder_may_release();
					if
					:: may -> settled = false     /* _handle.py:478 Handle._settle_intent: return False */
					:: else ->
						/* _handle.py:480 Handle._settle_intent: self.token.release()  # the token it took goes back */
						ST(POST_H)
					fi
				fi
			fi
		fi;
		if
		:: settled ->
			/* _handle.py:481 Handle._settle_intent: words[_INTENT_WORD] = 0 */
			ST(CLEAR_INTENT)
		:: else -> skip
		fi
	fi
}

/* ---- _handle.py Handle: giving back, releasing --------------------------------- */

/* Handle._free_if_current(gn), under the guard. */
inline free_if_current(gn) {
	/* _handle.py:360 Handle._free_if_current: words[_INTENT_WORD] = _GIVE_BACK | _TAKING | generation << 8 */
	ST(SET_INTENT(I_GIVE_BACK, I_TAKING, gn));
	/* _handle.py:363 Handle._free_if_current: self.token.acquire(0) */
	if DIE
	:: atomic { H > 0 -> H--; took = true }
	:: atomic { H == 0 -> took = false }   /* _handle.py:364 Handle._free_if_current: except _BusyError: */
	fi;
	if
	:: took ->
		/* _handle.py:368 Handle._free_if_current: words[_INTENT_WORD] = _GIVE_BACK | _TOOK | generation << 8 */
		ST(SET_INTENT(I_GIVE_BACK, I_TOOK, gn);
		   if :: GEN_IS(gn) -> END_OWN_ACQ(gn) :: else -> skip fi);
		/* _handle.py:369 Handle._free_if_current: if words[_GEN_WORD] == generation: */
		ST(same = GEN_IS(gn));
		if
		:: same ->
			/* _handle.py:370 Handle._free_if_current: words[_PID_WORD] = 0 */
			ST(r_pid = 0; g_rslot = NONE);
			/* _handle.py:371 Handle._free_if_current: self.sem.release() */
			ST(POST_L)
		:: else ->
			/* _handle.py:373 Handle._free_if_current: self.token.release()  # a later acquisition's token */
			ST(POST_H)
		fi
	:: else -> skip
	fi;
	/* _handle.py:374 Handle._free_if_current: words[_INTENT_WORD] = 0 */
	ST(CLEAR_INTENT)
}

/* Handle.give_back(before): the owed mark is already stored. */
inline give_back() {
	if
	:: SIG -> skip  /* a second handler raises as the guard's section begins: the debt stays owed */
	:: true ->
		/* _handle.py:331 Handle.give_back: with self.guard.held(): */
		GUARD_WAIT;
		/* _handle.py:332 Handle.give_back: if self._settle_intent(): */
		settle_intent();
		if
		:: settled ->
			/* _handle.py:333 Handle.give_back: self._free_if_current(before + 1) */
			free_if_current(before + 1)
		:: else -> skip
		fi;
		GUARD_OUT
	fi
}

/* Handle.settle: a waiter's chores, finish a section whose writer is gone, free an
 * acquisition that is owed. The unguarded test reads owed, intent and generation in one
 * step (it only decides whether to try the guard; everything is read again under it). */
inline settle() {
	/* _handle.py:345 Handle.settle: owed = words[_OWED_WORD] */
	/* _handle.py:346 Handle.settle: if not words[_INTENT_WORD] and (owed == 0 or owed != words[_GEN_WORD]): */
	ST(need = (r_ikind != 0 || (r_owed != 0 && r_owed == r_gen)));
	if
	:: need ->
		/* _handle.py:348 Handle.settle: with self.guard.held(block=False) as got: */
		GUARD_TRY(gotg);
		if
		:: gotg ->
			/* _handle.py:349 Handle.settle: if got and self._settle_intent(): */
			settle_intent();
			if
			:: settled ->
				/* _handle.py:350 Handle.settle: owed = words[_OWED_WORD] */
				/* _handle.py:351 Handle.settle: if owed != 0 and owed == words[_GEN_WORD]: */
				ST(o = r_owed; need = (o != 0 && o == r_gen));
				if
				:: need ->
					/* _handle.py:352 Handle.settle: self._free_if_current(owed) */
					free_if_current(o)
				:: else -> skip
				fi
			:: else -> skip
			fi;
			GUARD_OUT
		:: else -> skip
		fi
	:: else -> skip
	fi
}

/* Handle._free, under the guard: ok is whether there was a token to take. */
inline free_() {
	/* _handle.py:426 Handle._free: words[_INTENT_WORD] = _RELEASE | _TAKING | words[_GEN_WORD] << 8 */
	ST(SET_INTENT(I_RELEASE, I_TAKING, r_gen));
	/* _handle.py:429 Handle._free: self.token.acquire(0) */
	FREE_TAKE(took);   /* H == 0: _handle.py:430 Handle._free: except _BusyError: */
	if
	:: took ->
		/* _handle.py:434 Handle._free: words[_INTENT_WORD] = _RELEASE | _TOOK | words[_GEN_WORD] << 8 */
		ST(SET_INTENT(I_RELEASE, I_TOOK, r_gen); END_ACQ);
		/* _handle.py:435 Handle._free: words[_PID_WORD] = 0 */
		ST(r_pid = 0; g_rslot = NONE);
		/* _handle.py:436 Handle._free: self.sem.release() */
		ST(POST_L)
	:: else -> skip
	fi;
	/* _handle.py:437 Handle._free: words[_INTENT_WORD] = 0 */
	ST(CLEAR_INTENT);
	ok = took
}

/* Handle.release: ok = false is LockNotHeldError. */
inline release() {
	/* _handle.py:385 Handle.release: if words[_KEY_WORD] == self.me_key: */
	ST(fast = OWN_ACQUISITION; rg = r_gen);   /* rg: ghost, the acquisition it saw */
	took = false;
	if
	:: fast ->
		/* _handle.py:389 Handle.release: self.token.acquire(0) */
		if DIE
		:: atomic { H > 0 -> H--; took = true; OWN_RELEASE_OF(rg); END_ACQ }
		:: atomic { H == 0 -> took = false }   /* _handle.py:390 Handle.release: except _BusyError: */
		fi;
		if
		:: took ->
			/* _handle.py:395 Handle.release: words[_PID_WORD] = 0 */
			ST(r_pid = 0; g_rslot = NONE);
			/* _handle.py:396 Handle.release: self.sem.release() */
			ST(POST_L)
		:: else -> skip
		fi
	:: else -> skip
	fi;
	if
	:: took -> ok = true   /* _handle.py:397 Handle.release: if took: */
	:: else ->
		/* _handle.py:399 Handle.release: with self.guard.held(): */
		RELEASE_GUARD_WAIT;
		/* _handle.py:400 Handle.release: if not self._settle_intent() or not self._free(): */
		settle_intent();
		if
		:: settled -> free_()
		:: else -> ok = false   /* an intent left for the recorded holder: LockNotHeldError */
		fi;
		RELEASE_GUARD_OUT
	fi
}

/* ---- _handle.py Handle: the rare paths ----------------------------------------- */

/* Handle._take_over(seen, post_token=post), under the guard. Without post, H is posted
 * and stays so: the write alone makes the dead holder's acquisition ours. */
inline take_over(post) {
	/* _handle.py:582 Handle._take_over: _state.TAKEOVER.pack_into( */
	ST(NOROB(s_slot == NONE || !alive[s_slot]);
	   ONCE((g_taken & (1 << s_gen)) == 0);
	   g_taken = g_taken | (1 << s_gen);
	   r_gen = s_gen + 1; WRITE_ME;
	   if :: !post -> BEGIN_TAKEOVER :: else -> skip fi);
	TAKEOVER_POST(post);
	acq = true
}

/* Handle._repair_half_done(seen): R names a dead process but H is 0. The suspect
 * (self._suspect) is this process's memory of the first sighting; STUCK_AFTER is not
 * modelled as time: any number of steps of the others may pass between two sightings,
 * and a sighting too early ("return None", _handle.py:567) only repeats this check. */
inline repair_half_done() {
	/* _handle.py:548 Handle._repair_half_done: self.sem.acquire(0) */
	if DIE
	:: atomic { L > 0 -> L--; took = true }
	:: atomic { L == 0 -> took = false }   /* _handle.py:549 Handle._repair_half_done: except _BusyError: */
	fi;
	if
	:: took ->
		/* _handle.py:554 Handle._repair_half_done: _FAST_HOLD.pack_into( */
		ST(r_gen = r_gen + 1; WRITE_ME);
		/* _handle.py:558 Handle._repair_half_done: self.token.release() */
		ST(POST_H; BEGIN_ACQ);
		acq = true
	:: else ->
		if
		:: !SUSPECT_IS_SEEN ->
			/* _handle.py:563 Handle._repair_half_done: if self._suspect != held: */
			su_valid = true; su_gen = s_gen; su_pid = s_pid; su_start = s_start;
			su_ns = s_ns; su_key = s_key
		:: else ->
			/* _handle.py:568 Handle._repair_half_done: self._suspect = None */
			su_valid = false;
			/* _handle.py:569 Handle._repair_half_done: return self._take_over(seen, post_token=True) */
			take_over(true)
		fi
	fi
}

/* Handle.recover: acq is whether this call acquired the lock (a Takeover). */
inline recover() {
	acq = false;
	/* _handle.py:527 Handle.recover: seen = self.snapshot() */
	ST(s_gen = r_gen; s_pid = r_pid; s_start = r_start; s_ns = r_ns; s_key = r_key;
	   s_slot = g_rslot);
	/* _handle.py:528 Handle.recover: if seen.pid <= 0 or not is_proven_dead(seen.holder): */
	ST(is_proven_dead(s_pid, s_start, s_ns, dead));
	if
	:: !dead -> su_valid = false   /* _handle.py:529 Handle.recover: self._suspect = None */
	:: else ->
		/* _handle.py:531 Handle.recover: with self.guard.held(block=False) as got: */
		GUARD_TRY(gotg);
		if
		:: gotg ->
			/* _handle.py:534 Handle.recover: if not got or not self._settle_intent(): */
			settle_intent();
			if
			:: settled ->
				/* _handle.py:536 Handle.recover: if self._held_by() != (seen.generation, seen.holder): */
				ST(same = RECHECK);
				if
				:: same ->
					/* _handle.py:538 Handle.recover: if self._token_posted(): */
					ST(posted = (H > 0));
					if
					:: posted ->
						/* _handle.py:539 Handle.recover: return self._take_over(seen, post_token=False) */
						take_over(false)
					:: else ->
						/* _handle.py:540 Handle.recover: return self._repair_half_done(seen) */
						repair_half_done()
					fi
				:: else -> skip
				fi
			:: else -> skip
			fi;
			GUARD_OUT
		:: else -> skip
		fi
	fi
}

/* Handle.hand_off(to): w_slot is the target slot, or DETACHED (to=None). ok = false is
 * LockNotHeldError. The identity is read first, by Lock.hand_off (identity_of). */
inline hand_off() {
	if
	:: w_slot == DETACHED ->
		/* _handle.py:626 Handle.hand_off: who = to or Identity(_state.DETACHED, 0, 0) */
		w_pid = DETACHED_PID; w_start = 0; w_ns = 0
	:: else ->
		/* _process.py:127 identity_of: return Identity(pid, start_time(pid), identity().ns) */
		ST(w_pid = pidn[w_slot];
		   find_live(procns[me], pidn[w_slot], q);
		   if :: q == NONE || !TRUSTED_PROC -> w_start = 0 :: else -> w_start = start[q] fi;
		   w_ns = id_ns[me])
	fi;
	took = false;
	/* _handle.py:629 Handle.hand_off: with self.guard.held(): */
	GUARD_WAIT;
	/* _handle.py:630 Handle.hand_off: if self._settle_intent(): */
	settle_intent();
	if
	:: settled ->
		/* _handle.py:632 Handle.hand_off: words[_INTENT_WORD] = _HAND_OFF | _TAKING | words[_GEN_WORD] << 8 */
		ST(SET_INTENT(I_HAND_OFF, I_TAKING, r_gen));
		/* _handle.py:635 Handle.hand_off: self.token.acquire(0) */
		if DIE
		:: atomic { H > 0 -> H--; took = true }
		:: atomic { H == 0 -> took = false }   /* _handle.py:636 Handle.hand_off: except _BusyError: */
		fi;
		if
		:: took ->
			/* _handle.py:640 Handle.hand_off: words[_INTENT_WORD] = _HAND_OFF | _TOOK | words[_GEN_WORD] << 8 */
			ST(SET_INTENT(I_HAND_OFF, I_TOOK, r_gen));
			/* _handle.py:642 Handle.hand_off: snap = self.snapshot() */
			ST(g = r_gen);
			/* _handle.py:643 Handle.hand_off: _state.write_hold(self.mm, snap.generation, who, snap.acquired_at) */
			ST(r_gen = g; r_pid = w_pid; r_start = w_start; r_ns = w_ns; r_key = 0;
			   if
			   :: w_slot == DETACHED -> g_rslot = NONE
			   :: else -> g_rslot = w_slot
			   fi;
			   g_owner = w_slot);
			/* _handle.py:645 Handle.hand_off: self.token.release() */
			ST(POST_H)
		:: else -> skip
		fi;
		/* _handle.py:646 Handle.hand_off: words[_INTENT_WORD] = 0 */
		ST(CLEAR_INTENT)
	:: else -> skip
	fi;
	ok = took;
	GUARD_OUT
}

/* ---- _posix/handover.py: the in-loop handover ------------------------------------ */

/* hand_over_lock(h): this process's acquisition ends and the next one of this process
 * begins (the next generation, this process's identity), L kept taken. took is whether
 * it did; false (R.key not ours, or H busy) and the caller releases as usual. rg: ghost,
 * the acquisition whose key it saw. Reached through LockCore.hand_over (_posix/lock.py),
 * called by the gate's release (gate_release below). */
inline hand_over_lock() {
	/* _posix/handover.py:56 hand_over_lock: if words[_KEY_WORD] != h.me_key: */
	ST(fast = HANDOVER_KEY_IS_MINE; rg = r_gen);
	took = false;
	if
	:: fast ->
		/* _posix/handover.py:63 hand_over_lock: token.acquire(0) */
		HANDOVER_TAKE(took);   /* H == 0: _posix/handover.py:64 hand_over_lock: except _BusyError: */
		if
		:: took ->
			/* _posix/handover.py:69 hand_over_lock: words[_GEN_WORD] + 1 */
			ST(g = r_gen);
			/* _posix/handover.py:69 hand_over_lock: _FAST_HOLD.pack_into(mm, _HOLD_AT, words[_GEN_WORD] + 1, now, me_words) */
			ST(r_gen = g + 1; WRITE_ME);
			/* _posix/handover.py:71 hand_over_lock: token.release() */
			ST(POST_H; BEGIN_ACQ);
			intr = false;
			if
			:: SIG -> intr = true   /* a handler raised in it: the finally wrote and posted;
			                         * gate_release gives the new acquisition back */
			:: true -> skip
			fi
		:: else -> skip
		fi
	:: else -> skip
	fi
}

/* _gate.release(core) with two tasks of this loop waiting and the bound not reached:
 * the handover (hv: this process holds the next acquisition), or else a real release.
 * ok = false is LockNotHeldError. */
inline gate_release() {
	hv = false;
	/* _gate.py:174 release: if len(gate.waiters) > 1 and core.hand_over(): */
	hand_over_lock();
	if
	:: took && !intr -> ok = true; hv = true
	:: took && intr ->
		/* _posix/handover.py:74 hand_over_lock: h.release()  # the new acquisition, which no task holds */
		/* the exception then leaves release() with no task granted, the lock released */
		release()
	:: else ->
		/* _gate.py:180 release: core.release() */
		release()
	fi
}

/* ---- sync.py Lock --------------------------------------------------------------- */

/* Lock._wait_quietly: wait in slices until taken or expired (or, with `forever`, for
 * good: timeout=None). got is whether it acquired. `forever` is an expression: it is
 * used as !(forever), so that a waiter of the liveness checks never gives up. */
inline wait_quietly(forever) {
	done = false;
	atomic { g_waiting[me] = true };
	do
	:: done -> break
	:: else ->
		FORGET;
		/* sync.py:191 Lock._wait_quietly: if h.take(deadline.slice()) is not None: */
		take(res);
		if
		:: res == INTR -> done = true
		:: res != 0 && res != INTR -> got = true; done = true
		:: res == 0 ->
			/* sync.py:195 Lock._wait_quietly: h.settle() */
			WAITER_SETTLE;
			if
			:: true ->
				/* sync.py:199 Lock._wait_quietly: takeover = h.recover() */
				recover();
				if
				:: acq -> got = true; done = true
				:: else -> skip
				fi
			:: MAY_SKIP_RECOVER -> skip
			fi;
			/* sync.py:202 Lock._wait_quietly: if deadline.expired(now=now): */
			if
			:: !done && !(forever) -> done = true
			:: true -> skip
			fi
		fi
	od;
	atomic { g_waiting[me] = false }
}

/* Lock.acquire(block, timeout): got is its result (false also when it raised). The
 * shortcut (block=False and L is 0: answer False) only reads L. */
inline lock_acquire(forever) {
	got = false;
	/* sync.py:166 Lock.acquire: if h.try_take() is not None: */
	try_take(res);
	if
	:: res == INTR -> skip
	:: res != 0 && res != INTR -> got = true
	:: res == 0 && !block -> skip
	:: res == 0 && block ->
		/* sync.py:170 Lock.acquire: return self._wait(Deadline.after(timeout), None) */
		wait_quietly(forever)
	fi
}

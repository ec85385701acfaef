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
	bool done; bool intr; bool got; bool block; \
	byte before; byte g; byte cur; byte o; byte res; byte q; \
	byte s_gen; short s_pid; byte s_start; byte s_ns; byte s_slot; \
	bool su_valid; byte su_gen; short su_pid; byte su_start; byte su_ns; \
	short w_pid; byte w_start; byte w_ns; byte w_slot

/* Forget the locals of a finished call (fewer distinct states; _suspect is kept, it is
 * the handle's memory). */
#define FORGET  d_step { took = false; same = false; gotg = false; dead = false; \
                         fast = false; ok = false; acq = false; done = false; \
                         intr = false; before = 0; g = 0; cur = 0; o = 0; res = 0; \
                         q = 0; s_gen = 0; s_pid = 0; s_start = 0; s_ns = 0; s_slot = 0; \
                         w_pid = 0; w_start = 0; w_ns = 0 }

/* _HOLD.pack_into(..., self.me_start, self.me_ns, now, self.me): this process. */
#define WRITE_ME   r_start = id_start[me]; r_ns = id_ns[me]; r_pid = pidn[me]; g_rslot = me

#define SAME_AS_SEEN  (r_gen == s_gen && r_pid == s_pid && r_start == s_start && r_ns == s_ns)
#define SUSPECT_IS_SEEN (su_valid && su_gen == s_gen && su_pid == s_pid && \
                         su_start == s_start && su_ns == s_ns)

/* ---- _process.py ---------------------------------------------------------------- */

/* is_proven_dead(who) for process `me`, evaluated in one step: the kill() and the read
 * of /proc are two calls, but a process that changes between them only makes the answer
 * that of a moment later. */
inline is_proven_dead(wpid, wstart, wns, res) {
	/* _process.py:192 is_proven_dead: if who.pid <= 0 or who.ns != me.ns: */
	if
	:: wpid <= 0 || NS_DIFFERS(wns) -> res = false
	:: else ->
		/* _process.py:195 is_proven_dead: os.kill(who.pid, 0) */
		find_live(ns[me], wpid, q);
		if
		:: q == NONE -> res = true
		:: else ->
			/* _process.py:203 is_proven_dead: stat = _read_stat(who.pid) */
			find_live(procns[me], wpid, q);
			if
			:: q == NONE -> res = false
			:: else ->
				/* _process.py:211 is_proven_dead: (who.start not in (0, start)) */
				res = START_DIFFERS(wstart, q)
			fi
		fi
	fi
}

/* ---- _handle.py Handle: taking ------------------------------------------------- */

/* Handle.publish: we hold L; gout is the new generation. */
inline publish(gout) {
	/* _handle.py:242 Handle.publish: generation = self.words[_GEN_WORD] + 1 */
	ST(gout = r_gen + 1);
	/* _handle.py:244 Handle.publish: _HOLD.pack_into(self.mm, _HOLD_AT, generation */
	ST(r_gen = gout; WRITE_ME);
	/* _handle.py:246 Handle.publish: self.token.release() */
	ST(POST_H; BEGIN_ACQ)
}

/* Handle.try_take: res = 0 (None), the generation, or INTR. */
inline try_take(res) {
	res = 0;
	/* _handle.py:146 Handle.try_take: sem.acquire(0) */
	if DIE
	:: atomic { L > 0 -> L--; took = true }
	:: atomic { L == 0 -> took = false }   /* _handle.py:147 Handle.try_take: except _BusyError: */
	fi;
	if
	:: took ->
		/* _handle.py:153 Handle.try_take: before = words[_GEN_WORD] */
		ST(before = r_gen);
		intr = false;
		if
		:: SIG -> intr = true              /* raised before the record write (_now(), ...) */
		:: true ->
			/* _handle.py:158 Handle.try_take: _HOLD.pack_into( */
			ST(r_gen = before + 1; WRITE_ME);
			/* _handle.py:162 Handle.try_take: self.token.release() */
			ST(POST_H; BEGIN_ACQ);
			if
			:: SIG -> intr = true          /* raised after it: the finally posted H */
			:: true -> skip
			fi
		fi;
		if
		:: intr ->
			/* _handle.py:164 Handle.try_take: if words[_GEN_WORD] == before: */
			ST(same = (r_gen == before));
			if
			:: same ->
				/* _handle.py:165 Handle.try_take: sem.release()  # publish() never started */
				ST(POST_L)
			:: else ->
				/* _handle.py:167 Handle.try_take: words[_OWED_WORD] = before + 1 */
				ST(MARK_OWED(before + 1));
				/* _handle.py:168 Handle.try_take: self.give_back(before) */
				give_back()
			fi;
			res = INTR
		:: else -> res = before + 1        /* _handle.py:170 Handle.try_take: return before + 1 */
		fi
	:: else -> skip
	fi
}

/* Handle.take(seconds) with sem_timedwait: the slice either gets L or runs out while L
 * is 0 (timeouts are nondeterminism; the clock is not modelled). Signals are deferred
 * during it; a handler that raises runs at restore_signals. */
inline take(res) {
	res = 0;
	/* _handle.py:186 Handle.take: sem.acquire(seconds) */
	if DIE
	:: atomic { L > 0 -> L--; took = true }
	:: atomic { L == 0 -> took = false }   /* _handle.py:187 Handle.take: except (_BusyError, _SignalError): */
	fi;
	if
	:: took ->
		/* _handle.py:193 Handle.take: before = words[_GEN_WORD] */
		ST(before = r_gen);
		if
		:: SIG ->
			/* _handle.py:198 Handle.take: pending = old is not None and _posix.handled_signal_pending(old) */
			/* _handle.py:209 Handle.take: sem.release() */
			ST(POST_L);
			/* _handle.py:213 Handle.take: _posix.restore_signals(old) */
			/* the pending handler runs: it raises, or returns */
			if
			:: res = INTR
			:: res = 0
			fi
		:: true ->
			/* _handle.py:200 Handle.take: generation = self.publish() */
			publish(g);
			if
			:: SIG ->
				/* _handle.py:213 Handle.take: _posix.restore_signals(old) */
				/* a handler that arrived meanwhile runs and raises */
				/* _handle.py:216 Handle.take: self.words[_OWED_WORD] = generation */
				ST(MARK_OWED(g));
				/* _handle.py:217 Handle.take: self.give_back(before) */
				give_back();
				res = INTR
			:: true -> res = g
			fi
		fi
	:: else -> skip
	fi
}

/* ---- _handle.py Handle: giving back, releasing --------------------------------- */

/* Handle._free_if_current(gn), under the guard. */
inline free_if_current(gn) {
	/* _handle.py:282 Handle._free_if_current: self.token.acquire(0) */
	if DIE
	:: atomic { H > 0 -> H--; took = true; if :: GEN_IS(gn) -> END_OWN_ACQ(gn) :: else -> skip fi }
	:: atomic { H == 0 -> took = false }   /* _handle.py:283 Handle._free_if_current: except _BusyError: */
	fi;
	if
	:: took ->
		/* _handle.py:287 Handle._free_if_current: if words[_GEN_WORD] == generation: */
		ST(same = GEN_IS(gn));
		if
		:: same ->
			/* _handle.py:288 Handle._free_if_current: words[_PID_WORD] = 0 */
			ST(r_pid = 0; g_rslot = NONE);
			/* _handle.py:289 Handle._free_if_current: self.sem.release() */
			ST(POST_L)
		:: else ->
			/* _handle.py:291 Handle._free_if_current: self.token.release()  # a later acquisition's token */
			ST(POST_H)
		fi
	:: else -> skip
	fi
}

/* Handle.give_back(before): the owed mark is already stored. */
inline give_back() {
	if
	:: SIG -> skip  /* a second handler raises as signals_deferred() begins: the debt stays owed */
	:: true ->
		/* _handle.py:261 Handle.give_back: with self.guard.held(): */
		GUARD_WAIT;
		/* _handle.py:262 Handle.give_back: self._free_if_current(before + 1) */
		free_if_current(before + 1);
		GUARD_OUT
	fi
}

/* Handle.settle_owed: a waiter frees an acquisition its own process marked owed. */
inline settle_owed() {
	/* _handle.py:270 Handle.settle_owed: owed = words[_OWED_WORD] */
	ST(o = r_owed);
	if
	:: o == 0 -> skip
	:: else ->
		/* _handle.py:271 Handle.settle_owed: owed != words[_GEN_WORD] */
		ST(cur = r_gen);
		if
		:: o != cur -> skip
		:: else ->
			/* _handle.py:273 Handle.settle_owed: with self.guard.held(block=False) as got: */
			GUARD_TRY(gotg);
			if
			:: gotg ->
				/* _handle.py:275 Handle.settle_owed: self._free_if_current(owed) */
				free_if_current(o);
				GUARD_OUT
			:: else -> skip
			fi
		fi
	fi
}

/* Handle._free, under the guard: ok is whether there was a token to take. */
inline free_() {
	/* _handle.py:329 Handle._free: self.token.acquire(0) */
	FREE_TAKE(took);   /* H == 0: _handle.py:330 Handle._free: except _BusyError: */
	if
	:: took ->
		/* _handle.py:334 Handle._free: self.words[_PID_WORD] = 0 */
		ST(r_pid = 0; g_rslot = NONE);
		/* _handle.py:335 Handle._free: self.sem.release() */
		ST(POST_L)
	:: else -> skip
	fi;
	ok = took
}

/* Handle.release: ok = false is LockNotHeldError. */
inline release() {
	/* _handle.py:300 Handle.release: if words[_PID_WORD] == self.me: */
	ST(fast = (r_pid == pidn[me]));
	took = false;
	if
	:: fast ->
		/* _handle.py:304 Handle.release: self.token.acquire(0) */
		if DIE
		:: atomic { H > 0 -> H--; took = true; END_ACQ }
		:: atomic { H == 0 -> took = false }   /* _handle.py:305 Handle.release: except _BusyError: */
		fi;
		if
		:: took ->
			/* _handle.py:309 Handle.release: words[_PID_WORD] = 0 */
			ST(r_pid = 0; g_rslot = NONE);
			/* _handle.py:310 Handle.release: self.sem.release() */
			ST(POST_L)
		:: else -> skip
		fi
	:: else -> skip
	fi;
	if
	:: took -> ok = true   /* _handle.py:311 Handle.release: if took: */
	:: else ->
		/* _handle.py:313 Handle.release: with self.guard.held(): */
		RELEASE_GUARD_WAIT;
		/* _handle.py:314 Handle.release: if not self._free(): */
		free_();
		RELEASE_GUARD_OUT
	fi
}

/* ---- _handle.py Handle: the rare paths ----------------------------------------- */

/* Handle._take_over(seen), under the guard, owning the token or repairing its loss. */
inline take_over() {
	/* _handle.py:394 Handle._take_over: _state.RECOVERY.pack_into( */
	ST(skip);   /* the inspection fields (not modelled): a step a SIGKILL may follow */
	/* _handle.py:397 Handle._take_over: _HOLD.pack_into(mm, _HOLD_AT, generation */
	ST(NOROB(s_slot == NONE || !alive[s_slot]);
	   ONCE((g_taken & (1 << s_gen)) == 0);
	   g_taken = g_taken | (1 << s_gen);
	   r_gen = s_gen + 1; WRITE_ME);
	/* _handle.py:402 Handle._take_over: self.token.release() */
	ST(TAKEOVER_POST; BEGIN_TAKEOVER);
	acq = true
}

/* Handle._repair_half_done(seen): R names a dead process but H is 0. The suspect
 * (self._suspect) is this process's memory of the first sighting; STUCK_AFTER is not
 * modelled as time: any number of steps of the others may pass between two sightings,
 * and a sighting too early ("return None", _handle.py:383) only repeats this check. */
inline repair_half_done() {
	/* _handle.py:373 Handle._repair_half_done: self.sem.acquire(0) */
	if DIE
	:: atomic { L > 0 -> L--; took = true }
	:: atomic { L == 0 -> took = false }   /* _handle.py:374 Handle._repair_half_done: except _BusyError: */
	fi;
	if
	:: took ->
		/* _handle.py:377 Handle._repair_half_done: generation = self.publish() */
		publish(g);
		acq = true
	:: else ->
		if
		:: !SUSPECT_IS_SEEN ->
			/* _handle.py:380 Handle._repair_half_done: if self._suspect != seen: */
			su_valid = true; su_gen = s_gen; su_pid = s_pid; su_start = s_start; su_ns = s_ns
		:: else ->
			/* _handle.py:385 Handle._repair_half_done: self._suspect = None */
			su_valid = false;
			/* _handle.py:386 Handle._repair_half_done: return self._take_over(seen) */
			take_over()
		fi
	fi
}

/* Handle.recover: acq is whether this call acquired the lock (a Takeover). */
inline recover() {
	acq = false;
	/* _handle.py:352 Handle.recover: seen = self.snapshot() */
	ST(s_gen = r_gen; s_pid = r_pid; s_start = r_start; s_ns = r_ns; s_slot = g_rslot);
	/* _handle.py:353 Handle.recover: if seen.pid <= 0 or not is_proven_dead(seen.holder): */
	ST(is_proven_dead(s_pid, s_start, s_ns, dead));
	if
	:: !dead -> su_valid = false   /* _handle.py:354 Handle.recover: self._suspect = None */
	:: else ->
		/* _handle.py:356 Handle.recover: with self.guard.held(block=False) as got: */
		GUARD_TRY(gotg);
		if
		:: gotg ->
			/* _handle.py:359 Handle.recover: if not got or self.snapshot() != seen: */
			ST(same = RECHECK);
			if
			:: same ->
				/* _handle.py:362 Handle.recover: self.token.acquire(0) */
				if DIE
				:: atomic { H > 0 -> H--; took = true }
				:: atomic { H == 0 -> took = false }   /* _handle.py:363 Handle.recover: except _BusyError: */
				fi;
				if
				:: !took ->
					/* _handle.py:364 Handle.recover: return self._repair_half_done(seen) */
					repair_half_done()
				:: else ->
					/* _handle.py:365 Handle.recover: if self.snapshot() != seen: */
					ST(same = RECHECK);
					if
					:: !same ->
						/* _handle.py:366 Handle.recover: self.token.release()  # not the dead holder's token */
						ST(POST_H)
					:: else ->
						/* _handle.py:368 Handle.recover: return self._take_over(seen) */
						take_over()
					fi
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
		/* _handle.py:431 Handle.hand_off: who = to or Identity(_state.DETACHED, 0, 0) */
		w_pid = DETACHED_PID; w_start = 0; w_ns = 0
	:: else ->
		/* _process.py:182 identity_of: return Identity(pid, start_time(pid), identity().ns) */
		ST(w_pid = pidn[w_slot];
		   find_live(procns[me], pidn[w_slot], q);
		   if :: q == NONE -> w_start = 0 :: else -> w_start = start[q] fi;
		   w_ns = id_ns[me])
	fi;
	/* _handle.py:432 Handle.hand_off: with self.guard.held(): */
	GUARD_WAIT;
	/* _handle.py:434 Handle.hand_off: self.token.acquire(0) */
	if DIE
	:: atomic { H > 0 -> H--; took = true }
	:: atomic { H == 0 -> took = false }   /* _handle.py:435 Handle.hand_off: except _BusyError: */
	fi;
	if
	:: took ->
		/* _handle.py:443 Handle.hand_off: snap = self.snapshot() */
		ST(g = r_gen);
		/* _handle.py:444 Handle.hand_off: _HOLD.pack_into( */
		ST(r_gen = g; r_pid = w_pid; r_start = w_start; r_ns = w_ns;
		   if
		   :: w_slot == DETACHED -> g_rslot = NONE
		   :: else -> g_rslot = w_slot
		   fi;
		   g_owner = w_slot);
		/* _handle.py:448 Handle.hand_off: self.token.release() */
		ST(POST_H);
		ok = true
	:: else -> ok = false
	fi;
	GUARD_OUT
}

/* ---- sync.py Lock --------------------------------------------------------------- */

/* Lock._wait_quietly: wait in slices until taken or expired (or, with `forever`, for
 * good: timeout=None). got is whether it acquired. */
inline wait_quietly(forever) {
	done = false;
	atomic { g_waiting[me] = true };
	do
	:: done -> break
	:: else ->
		FORGET;
		/* sync.py:169 Lock._wait_quietly: if h.take(deadline.slice()) is not None: */
		take(res);
		if
		:: res == INTR -> done = true
		:: res != 0 && res != INTR -> got = true; done = true
		:: res == 0 ->
			/* sync.py:173 Lock._wait_quietly: h.settle_owed() */
			settle_owed();
			if
			:: true ->
				/* sync.py:177 Lock._wait_quietly: takeover = h.recover() */
				recover();
				if
				:: acq -> got = true; done = true
				:: else -> skip
				fi
			:: MAY_SKIP_RECOVER -> skip
			fi;
			/* sync.py:180 Lock._wait_quietly: if deadline.expired(now=now): */
			if
			:: !done && !forever -> done = true
			:: true -> skip
			fi
		fi
	od;
	atomic { g_waiting[me] = false }
}

/* Lock.acquire(block, timeout): got is its result (false also when it raised). The
 * shortcut of sync.py:139 (block=False and L is 0: answer False) only reads L. */
inline lock_acquire(forever) {
	got = false;
	/* sync.py:141 Lock.acquire: if h.try_take() is not None: */
	try_take(res);
	if
	:: res == INTR -> skip
	:: res != 0 && res != INTR -> got = true
	:: res == 0 && !block -> skip
	:: res == 0 && block ->
		/* sync.py:148 Lock.acquire: return self._wait(Deadline.after(wait), None) */
		wait_quietly(forever)
	fi
}

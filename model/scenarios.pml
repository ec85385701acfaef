/*
 * Who uses the lock: the processes, their identities and what each one does.
 *
 * Every process runs the same script (Proc), parameterized per slot:
 *   strays[i]   release() calls made without having acquired (any process may release)
 *   cycles[i]   then this many Lock.acquire() calls, each followed, if it succeeded, by
 *               release(), or by hand_off(handto[i]) and a normal exit; with overs[i],
 *               first that many in-loop handovers (the gate's release with two tasks
 *               waiting: hand_over_lock, or a real release when it finds nothing of
 *               this process's), then, with passes[i], possibly no release: it is left
 *               to a process whose strays wait for it (waitpass)
 *   mode[i]     how it acquires: TRY (block=False), WAIT (a timeout that may expire),
 *               FOREVER (timeout=None), ANY (TRY or WAIT, chosen each time)
 * After its script a process stays alive, idle (a long-running service). A process with
 * reuses[i] = j is born only after j has died, with j's pid and another start time.
 *
 * A scenario is chosen with -DSC_<NAME>; each names the defect or property it targets.
 */

#define TRY     0
#define WAIT    1
#define FOREVER 2
#define ANY     3

#ifdef LIVENESS
#define WAIT_FOREVER true     /* a waiter that gives up would satisfy liveness vacuously */
#else
#define WAIT_FOREVER false
#endif

byte strays[NP];
byte cycles[NP];
byte mode[NP];
byte handto[NP];
byte after[NP];             /* a slot that must be gone before this one runs its script */
byte overs[NP];             /* in-loop handovers after each acquisition */
bool passes[NP];            /* after them it may leave its release to another process */
bool waitpass[NP];          /* its strays wait until a process has left it the release */
bool gatestray[NP];         /* its strays release through the gate (gate_release) */
bool passed = false;        /* a holder has left its release to another process */

/* Slot i: pid p, start s, pid namespace n; its script. */
inline proc(i, p, s, n, nstray, ncycle, how, killable) {
	pidn[i] = p; start[i] = s; ns[i] = n; procns[i] = n; id_start[i] = s; id_ns[i] = n;
	key[i] = i + 1;
	reuses[i] = NONE; alive[i] = true; mortal[i] = killable;
	strays[i] = nstray; cycles[i] = ncycle; mode[i] = how; handto[i] = NONE;
	after[i] = NONE; overs[i] = 0; passes[i] = false; waitpass[i] = false;
	gatestray[i] = false
}

proctype Proc(byte me) {
	PROTOCOL_LOCALS;
	byte n;
	byte k;
	bool held;

end_unborn:
	(reuses[me] == NONE || (up[reuses[me]] && !alive[reuses[me]]));
	atomic { up[me] = true; alive[me] = true };
end_after:
	(after[me] == NONE || !alive[after[me]]) && (!waitpass[me] || passed);

	n = 0;
	do
	:: n < strays[me] -> n++;
		if
		:: gatestray[me] -> gate_release()
		:: else -> release()
		fi;
		FORGET
	:: else -> break
	od;

	n = 0;
	do
	:: n < cycles[me] ->
		n++;
		if
		:: mode[me] == TRY -> block = false
		:: mode[me] == WAIT || mode[me] == FOREVER -> block = true
		:: mode[me] == ANY -> block = false
		:: mode[me] == ANY -> block = true
		fi;
		lock_acquire(mode[me] == FOREVER || WAIT_FOREVER);
		FORGET;
		if
		:: got && handto[me] != NONE ->
			w_slot = handto[me];
			hand_off();
			/* its exit: not a death while holding, since it handed the lock off */
			atomic { alive[me] = false };
			goto died
		:: got && handto[me] == NONE && overs[me] == 0 -> release(); FORGET
		:: got && handto[me] == NONE && overs[me] > 0 ->
			held = true; k = 0;
			do
			:: held && k < overs[me] -> k++; gate_release(); held = hv; FORGET
			:: !held || k == overs[me] -> break
			od;
			if
			:: held && passes[me] -> passed = true   /* its release is left to another */
			:: held -> release(); FORGET
			:: !held -> skip
			fi
		:: !got -> skip
		fi
	:: else -> break
	od;
	goto idle;
died:
	skip;
idle:
	skip
}

/* ---- scenarios ----------------------------------------------------------------- */

/* Slots: X holds first, W waits, the third one varies. Identities: pid 1 and 2 in
 * namespace 1 (start time 1), unless a scenario says otherwise. */
inline setup() {
#if defined(SC_REUSE)
	/* Defect 1, pid reuse: X dies holding; Y gets X's pid (another start time) and calls
	 * release(), then acquires. */
	proc(0, 1, 1, 1, 0, 1, ANY, true);
	proc(1, 2, 1, 1, 0, 1, WAIT, false);
#ifdef REUSE_IDLE
	proc(2, 1, 2, 1, 0, 0, TRY, false);      /* Y only lives, with X's pid */
#else
	proc(2, 1, 2, 1, 1, 1, TRY, false);
#endif
	reuses[2] = 0; alive[2] = false;
#elif defined(SC_NS)
	/* Defect 1, pid namespaces: Y lives in namespace 2 with X's pid number. */
	proc(0, 1, 1, 1, 0, 1, ANY, true);
	proc(1, 2, 1, 1, 0, 1, WAIT, false);
	proc(2, 1, 1, 2, 1, 1, TRY, false);
#elif defined(SC_RELEASE)
	/* Any process may release: Y (pid 3) releases whatever is held, racing X's own
	 * release; W waits. Defect 2 (a cross-process releaser killed mid-release) is here. */
	proc(0, 1, 1, 1, 0, 1, ANY, true);
	proc(1, 2, 1, 1, 0, 1, WAIT, true);
	proc(2, 3, 1, 1, 1, 0, TRY, true);
#elif defined(SC_TAKEOVER)
	/* Two waiters race to take over a holder that dies. */
	proc(0, 1, 1, 1, 0, 1, ANY, true);
	proc(1, 2, 1, 1, 0, 1, WAIT, false);
	proc(2, 3, 1, 1, 0, 1, WAIT, false);
#elif defined(SC_TWICE)
	/* Two acquisitions by X (a death can land on either) and two waiters. */
	proc(0, 1, 1, 1, 0, 2, ANY, true);
	proc(1, 2, 1, 1, 0, 1, WAIT, true);
	proc(2, 3, 1, 1, 0, 1, WAIT, false);
#elif defined(SC_OWED)
#ifndef OWED_CYCLES
#define OWED_CYCLES 1
#endif
	/* Signal handlers that raise during acquire (-DSIGNALS): give-back, owed marks,
	 * settle_owed by a waiter; Y releases across processes. */
	proc(0, 1, 1, 1, 0, OWED_CYCLES, ANY, true);
	proc(1, 2, 1, 1, 0, 1, WAIT, false);
	proc(2, 3, 1, 1, 1, 0, TRY, false);
#elif defined(SC_HANDOFF)
	/* X hands its acquisition to Y (pid 3), or detaches it, and exits; Y then releases. */
	proc(0, 1, 1, 1, 0, 1, ANY, true);
	proc(1, 2, 1, 1, 0, 1, WAIT, true);
	proc(2, 3, 1, 1, 1, 0, TRY, true);
#ifdef HANDOFF_X_DIES
	mortal[1] = false; mortal[2] = false;    /* only X may be killed */
#endif
#ifdef HANDOFF_DETACHED
	handto[0] = DETACHED;
#else
	handto[0] = 2;
	after[2] = 0;        /* Y releases what it is handed: once X has exited (or died) */
#endif
#elif defined(SC_HANDOVER)
#ifndef HANDOVERS
#define HANDOVERS 1
#endif
	/* The in-loop handover: X's task hands its acquisition to the next task of X's
	 * loop, HANDOVERS times, and that one releases it or leaves its release to Y. Y's
	 * task releases it through Y's gate (hand_over_lock finds another process's key: a
	 * real, guarded release); W waits. -DHANDOVER_RACE: Y releases at any time, a
	 * second release of an acquisition X's tasks release too (a user's error). */
	proc(0, 1, 1, 1, 0, 1, ANY, true);
	proc(1, 2, 1, 1, 0, 1, WAIT, true);
	proc(2, 3, 1, 1, 1, 0, TRY, true);
	overs[0] = HANDOVERS; gatestray[2] = true;
#ifndef HANDOVER_RACE
	passes[0] = true; waitpass[2] = true;
#endif
#ifdef LIVENESS
	/* Only X may be killed: a release left to Y that never comes keeps the lock X's (by
	 * design); and with W mortal, spin finds no wedge even where X holds for good. */
	mortal[1] = false; mortal[2] = false;
#endif
#elif defined(SC_OTHER_NS)
	/* N holds from pid namespace 2 (pid 1 there, no pid 1 here); the waiters of
	 * namespace 1 must never judge it (nor recover it if it dies: by design). */
	proc(0, 1, 1, 2, 0, 1, ANY, true);
	proc(1, 2, 1, 1, 0, 1, WAIT, false);
	proc(2, 3, 1, 1, 0, 1, WAIT, false);
#elif defined(SC_FOREIGN)
	/* Defect 3: F (pid 2 in namespace 2) reads namespace 1's /proc, where pid 1 is W,
	 * started at another time; X, pid 1 of namespace 2, holds. Its own identity comes
	 * from /proc/self (right whosever /proc it is), so it records itself correctly. */
	proc(0, 1, 1, 2, 0, 1, ANY, false);
	proc(1, 2, 1, 2, 0, 1, WAIT, false);
	procns[1] = 1;
	proc(2, 1, 2, 1, 0, 1, WAIT, false);
#else
#error "choose a scenario: -DSC_REUSE, -DSC_NS, -DSC_RELEASE, -DSC_TAKEOVER, ..."
#endif
}

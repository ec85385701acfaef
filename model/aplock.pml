/*
 * A model of aplock's POSIX lock protocol (src/aplock/_handle.py, _process.py, sync.py),
 * checked with spin. See README.md; run.sh runs every check.
 *
 *   os.pml         the kernel: L, H, the record R, the guard, identities, SIGKILL, ghosts
 *   protocol.pml   the protocol, one inline per Python function, step by step
 *   scenarios.pml  the processes and what they do (-DSC_<NAME>)
 *
 * Properties (-DPROP_<NAME>, one per run): EXCL, NOROB, ONCE, RACE are assertions (see
 * os.pml); LIVE is the LTL formula below, checked with weak fairness.
 */

#include "os.pml"
#include "mutations.pml"
#include "protocol.pml"
#include "scenarios.pml"

init {
	atomic {
		setup();
		run Proc(0);
		run Proc(1);
		run Proc(2)
	}
}

#ifdef PROP_LIVE
/* Someone waits for the lock; the lock is taken by nobody that `aplock repair` could free:
 * L = H = 0 and the record names no holder, or a dead one. */
#define WAITING      (g_waiting[0] || g_waiting[1] || g_waiting[2])
#define NAMED_STUCK  (L == 0 && H == 0 && \
                      (r_pid == 0 || (r_pid > 0 && g_rslot < NP && !alive[g_rslot])))
/* No wedge: in every run, from some point on, nobody waits, or the lock stays in a named
 * state for good. */
ltl no_wedge { <>[] (!WAITING || NAMED_STUCK) }
#endif

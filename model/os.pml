/*
 * The world the protocol runs in: the three OS objects of one lock, the processes and
 * their identities, SIGKILL, and the ghost variables that the properties read.
 *
 * Nothing here is protocol: protocol.pml mirrors src/aplock, this file is the kernel.
 */

#ifndef NP
#define NP 3                /* process slots (scenarios.pml fills them) */
#endif
#ifndef MAXDEATH
#define MAXDEATH 1          /* SIGKILLs per run (each may land before any step) */
#endif

#define NONE     255        /* no process slot */
#define DETACHED 254        /* ghost owner of a detached acquisition (hand_off(None)) */
#define DETACHED_PID (-1)   /* _state.DETACHED */

/* ---- the three OS objects (_handle.py module docstring) ------------------------- */

byte L = 1;                 /* the lock semaphore: 1 when free */
byte H = 0;                 /* the token semaphore: 1 while an acquisition is complete */

/* The state record R (_state.py): the fields the protocol reads. One _FAST_HOLD.pack_into
 * (write_hold) writes generation, acquired_at and the holder's (start, ns, key, pid) in
 * one call, so it is one step; a take-over's TAKEOVER.pack_into writes those and the
 * recovery fields in one call too. acquired_at is not modelled (it only changes with the
 * generation, except in hand_off, which keeps it), nor are the inspection fields
 * recoveries, abandoned_pid and recovered_gen, nor intent_pid (for display only). */
byte  r_gen   = 0;          /* generation: the fencing token of the latest acquisition */
short r_pid   = 0;          /* holder pid: 0 none, -1 detached */
byte  r_start = 0;          /* holder start time (ticks), 0 unknown */
byte  r_ns    = 0;          /* holder pid namespace inode */
byte  r_key   = 0;          /* holder's process key (Identity.key), 0 unknown */
byte  r_owed  = 0;          /* generation of an acquisition owed back (0: none) */
/* R.intent (_handle.py Intent): kind | phase | generation << 8, as three fields; kind 0
 * is no intent. Written and read under the guard only (settle() peeks without it). */
byte  r_ikind  = 0;         /* RELEASE, GIVE_BACK, HAND_OFF; 0: none */
byte  r_iphase = 0;         /* TAKING, TOOK */
byte  r_igen   = 0;         /* the generation it works on */

#define I_RELEASE   1       /* Intent.RELEASE */
#define I_GIVE_BACK 2       /* Intent.GIVE_BACK */
#define I_HAND_OFF  3       /* Intent.HAND_OFF */
#define I_TAKING    16      /* Intent.TAKING */
#define I_TOOK      32      /* Intent.TOOK */

/* The guard: a flock per process (per open file description). The kernel drops it
 * when its holder dies; threads within a process are not modelled. */
byte guard = NONE;

/* ---- processes and their identities (_process.py) ------------------------------ */

byte pidn[NP];               /* pid, as seen in the process's own namespace */
byte start[NP];             /* start time in ticks */
byte ns[NP];                /* its real pid namespace */
byte procns[NP];            /* the namespace of the /proc it reads (ns, unless foreign) */
#define TRUSTED_PROC (procns[me] == ns[me])   /* _process._trusted: /proc/self is our pid */
byte id_start[NP];          /* identity().start: what it records as its start time */
byte id_ns[NP];             /* identity().ns: what it records as its namespace */
byte key[NP];               /* identity().key: its random process key (never 0) */
byte reuses[NP];            /* a slot whose pid this process gets once that one is dead */
bool mortal[NP];            /* whether SIGKILL may land on it */
bool alive[NP];             /* running (or idle); false once killed or exited */
bool up[NP];                /* has started */

byte deaths = 0;            /* SIGKILLs so far */
byte sigs = 0;              /* signal handlers that raised so far (protocol.pml: SIG) */

/* ---- ghost state (read by the properties only; never by the protocol) ---------- */

byte g_owner = NONE;        /* holder of the current acquisition (DETACHED, NONE) */
byte g_gen = 0;             /* the generation of the current acquisition */
byte g_rslot = NONE;        /* the process that R's holder fields describe */
int  g_taken = 0;           /* bit g: the acquisition of generation g was taken over */
bool g_waiting[NP];         /* in Lock._wait_quietly, waiting for the lock */
bool g_gwait[NP];           /* blocked in flock(LOCK_EX) on the guard */

/* ---- properties: each run checks one (-DPROP_...), run.sh picks ---------------- */

#ifdef PROP_EXCL
#define EXCL(c)  assert(c)
#else
#define EXCL(c)  skip
#endif
#ifdef PROP_NOROB
#define NOROB(c) assert(c)
#else
#define NOROB(c) skip
#endif
#ifdef PROP_ONCE
#define ONCE(c)  assert(c)
#else
#define ONCE(c)  skip
#endif
#ifdef PROP_RACE
#define RACE(c)  assert(c)
#else
#define RACE(c)  skip
#endif

/* L + H <= 1: checked after every post (the only steps that raise either). */
#define CHECK_LH        EXCL(L + H <= 1)
#define POST_L          L++; CHECK_LH
#define POST_H          H++; CHECK_LH

#define OWNER_DEAD      (g_owner == NONE || (g_owner < NP && !alive[g_owner]))

/* An acquisition begins when its token is posted (publish). */
#define BEGIN_ACQ       EXCL(g_owner == NONE); g_owner = me; g_gen = r_gen
/* A takeover ends the dead holder's acquisition and begins ours. */
#define BEGIN_TAKEOVER  NOROB(OWNER_DEAD); EXCL(OWNER_DEAD); g_owner = me; g_gen = r_gen
/* A release ends the current acquisition when it takes the token (it then frees L). */
#define END_ACQ         RACE(g_owner != NONE); g_owner = NONE
/* A give-back frees only the acquisition it gives back (generation gn). */
#define END_OWN_ACQ(gn) EXCL(g_owner != NONE && g_gen == gn); g_owner = NONE
/* The own-release path frees the acquisition whose key it saw (generation gn), not a
 * later one: racing releasers of one acquisition, exactly one succeeds. */
#define OWN_RELEASE_OF(gn) RACE(g_gen == gn)
/* The handover (hand_over_lock) ends only its own process's acquisition: the one it
 * begins next is that process's, so a token taken from another holder's acquisition
 * leaves two holders (that one, and this process once it posts H again). */
#define HANDOVER_OWN    EXCL(g_owner == me)
/* A release that finds no token (LockNotHeldError) must find no acquisition. */
#define NOT_HELD        RACE(g_owner == NONE)

/* ---- SIGKILL: before any step, the process may stop for good -------------------- */

#define KILLABLE   (deaths < MAXDEATH && mortal[me])

inline kill() {
	deaths++;
	alive[me] = false;
	g_waiting[me] = false;
	g_gwait[me] = false;
	if
	:: guard == me -> guard = NONE      /* the kernel drops a dead process's flock */
	:: else -> skip
	fi
}

/* An extra option of every step: die instead of taking it. */
#define DIE        :: atomic { KILLABLE -> kill(); goto died }
/* One step: a single call of the code (a semaphore op, one pack_into, one word store). */
#define ST(x)      if DIE :: atomic { x } fi

/* ---- the guard (_posix.py Guard.held) ------------------------------------------- */

/* flock(LOCK_EX): blocks until the guard is free; SIGKILL may land while it waits. A
 * process blocked here gets the guard before another's non-blocking try: that one tries
 * again only a slice later (time is not modelled; without this, a waiter's try at every
 * slice could starve a blocked releaser forever, which the kernel's wake-up prevents). */
#define GUARD_WAIT        g_gwait[me] = true; \
                          if DIE :: atomic { guard == NONE -> guard = me; g_gwait[me] = false } fi
#define GWAITERS          (g_gwait[0] || g_gwait[1] || g_gwait[2])
/* flock(LOCK_EX | LOCK_NB): got is whether it was free. */
#define GUARD_TRY(got)    if DIE :: atomic { guard == NONE && !GWAITERS -> guard = me; got = true } \
                                 :: atomic { guard != NONE || GWAITERS -> got = false } fi
/* flock(LOCK_UN) on leaving the with block; dying right before it is the same as dying
 * right after, so it has no death option of its own. */
#define GUARD_OUT         atomic { assert(guard == me); guard = NONE }

/* ---- proof of death (_process.py is_proven_dead) -------------------------------- */

/* kill(pid, 0) from process `me`: is there a live process with that pid in its real
 * namespace? `q` is set to it (or NONE). */
inline find_live(wns, wpid, q) {
	q = 0;
	do
	:: q < NP && alive[q] && ns[q] == wns && pidn[q] == wpid -> break
	:: q < NP && !(alive[q] && ns[q] == wns && pidn[q] == wpid) -> q++
	:: q == NP -> q = NONE; break
	od
}

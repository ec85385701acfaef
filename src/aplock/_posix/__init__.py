"""The POSIX backend, the only importer of ``posix_ipc``.

- ``ipc``: the adapter over ``posix_ipc``, the guard, signals; every platform quirk.
- ``record``: the layout of the shared-memory state record, and its intent word.
- ``identity``: who a process is, and proof that a recorded one is dead.
- ``handle``: a process's one handle on a named lock, and the protocol below
  (mirrored by the model in ``model/``).
- ``registry``: the handles of this process, one per name, and ``fork()``.
- ``lock``: the ``Core`` of a lock (``aplock._core``): one object's use of a handle.
- ``handover``: a lock or a permit handed to a new acquisition of this process without
  being freed (the async gates' in-loop handoff).
- ``fastpath``: ``FastHandle``, whose hot steps are the C calls of ``_fast`` (optional,
  built where a compiler exists; ``APLOCK_PURE=1`` selects the pure-Python path).
- ``slots``: the layout of a semaphore's record (its slot table of owned permits).
- ``semaphore``: a semaphore's handle, its protocol and its ``Core``.

**The lock protocol.** One lock is three OS objects: the lock semaphore ``L`` (1 when
free), the token semaphore ``H`` (1 while an acquisition is complete) and the state
record ``R``.
Invariant: ``L + H <= 1``, so no two holders can ever exist, whatever users do.

- acquire:  wait ``L`` -> write ``R`` (one call) -> post ``H``
- release, own acquisition (``R.key`` is this process's key): trywait ``H`` -> clear
  ``R.pid`` -> post ``L``, with no guard. Any other release takes the guard and does
  the same steps as an intent (below): exactly one racing releaser gets ``H``; the rest
  get ``LockNotHeldError``.
- give back (an acquire interrupted by a signal handler's exception): if ``R``'s
  generation is unchanged, post ``L``; else mark its generation owed in ``R`` (one
  store) and, under the guard, trywait ``H`` and free the lock only if ``R`` still holds
  that generation. A waiter that finds the current generation owed does the same (a
  second handler's exception cut the give-back short).
- recover:  under the guard, when ``R`` names a holder proven dead and ``H`` is posted:
  write ourselves into ``R`` (one call). ``L`` and ``H`` stay as they are: the dead
  holder's acquisition becomes ours.
- hand off: under the guard, take ``H``, rewrite the holder in ``R``, post ``H``.
  The holder it records has key 0: no process takes the unguarded path for it.

**Intents.** Every guarded section that takes ``H`` first writes an intent into ``R``
(its kind, the generation it works on, phase ``TAKING``) and, once ``H`` is its own,
phase ``TOOK``; it clears the intent after its last step. The kernel drops the guard
of a dead process, so whoever next holds the guard and finds an intent knows that its
writer is gone, and finishes the section (``_settle_intent``): a waiter does so within
a slice. A release that reached ``TOOK`` is finished (it happened); anything short of
that is undone (``H`` goes back). One instant is ambiguous: a writer killed right after
its trywait of ``H`` returned, before it stored ``TOOK``, while the recorded holder's own
process may be releasing through the unguarded path. Then only the recorded holder's
process settles it (or anyone, once that process has died); until then the lock is
held by that live holder, which can always release it.

Every uncontended step is a userspace atomic in glibc: no system call, no guard. The
guard (``_posix.Guard``) serializes only the rare paths: recovery, hand-off, release by a
process other than the recorded holder, a release that found ``H`` busy, and the
settling of intents and owed acquisitions.

A signal handler's exception can surface after any call: ``try_take`` and ``take`` say
how each instant is undone, with no call in between for a second handler to interrupt.
A process dies *between* two of these steps only in a window of a few bytecodes (see
``docs/concepts.md``). If it dies after writing ``R`` and before the matching step on
the other semaphore, ``R`` names it, ``H`` and ``L`` are both 0, and no live process is
mid-operation (intents are settled first); a waiter that sees that state unchanged for
``STUCK_AFTER`` seconds repairs it. A process killed between taking ``L`` and writing
``R``, or between clearing ``R.pid`` and posting ``L``, leaves the lock taken by
nobody: the one state that no waiter may repair (a live process could be paused right
there), which ``aplock repair`` frees.
"""

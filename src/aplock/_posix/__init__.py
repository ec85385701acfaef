"""The POSIX backend, the only importer of ``posix_ipc``.

- ``ipc``: the adapter over ``posix_ipc``, the guard, signals; every platform quirk.
- ``record``: the layout of the shared-memory state record.
- ``identity``: who a process is, and proof that a recorded one is dead.
- ``handle``: a process's one handle on a named lock, and the protocol that makes it
  safe (mirrored by the model in ``model/``).
"""

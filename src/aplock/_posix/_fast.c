/* The lock's hot steps as C calls: the compiled fast path of aplock._posix.handle.
 *
 * Each function does exactly what the Python step of Handle does, on the same OS
 * objects: the lock semaphore L and the token semaphore H (opened here once more by
 * name, with sem_open), and the state record R (mapped here once more from the record's
 * descriptor). The record's layout and the order of its stores are those of
 * aplock._posix.record: generation, acquired_at, start, ns, key, and the pid last. A
 * process on this path and one on the pure-Python path share a lock.
 *
 * Every function holds the GIL from its first step to its last (the timed wait of
 * take() aside, before L is taken), so no Python signal handler, and no other thread
 * of this process, runs between two of its steps: the undo paths that the Python steps
 * need for a handler's exception have no counterpart here, as long as the caller gets
 * the result without a call (see FastLock_subscript). Another process may still
 * interleave anywhere, and a SIGKILL may land between any two stores, exactly as for
 * the Python steps (see model/README.md).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* The record's 64-bit words (aplock._posix.record). */
#define GEN_WORD 1
#define ACQUIRED_WORD 2
#define START_WORD 3
#define NS_WORD 4
#define KEY_WORD 5
#define PID_WORD 6
#define RECORD_WORDS 32 /* what this module touches lies in the first 256 bytes */
#define IDENTITY_BYTES 32 /* record.IDENTITY: start, ns, key, pid */

typedef struct {
    PyObject_HEAD
    sem_t *lock;      /* L */
    sem_t *token;     /* H */
    int64_t *words;   /* R, as 64-bit words */
    size_t mapped;    /* bytes mapped at words */
    int64_t me[4];    /* this process's identity words: start, ns, key, pid */
    PyObject *slow;   /* a callable returning the guarded release (a weakref.WeakMethod) */
} FastLock;

static inline int64_t load(const int64_t *word) {
    return __atomic_load_n(word, __ATOMIC_RELAXED);
}

static inline void store(int64_t *word, int64_t value) {
    __atomic_store_n(word, value, __ATOMIC_RELAXED);
}

static double wall_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* We hold L: record ourselves as holder (pid last), then post H. Handle.publish. */
static int64_t publish(FastLock *self, double now) {
    int64_t *w = self->words;
    int64_t generation = load(&w[GEN_WORD]) + 1;
    int64_t when;
    memcpy(&when, &now, sizeof when);
    store(&w[GEN_WORD], generation);
    store(&w[ACQUIRED_WORD], when);
    store(&w[START_WORD], self->me[0]);
    store(&w[NS_WORD], self->me[1]);
    store(&w[KEY_WORD], self->me[2]);
    __atomic_store_n(&w[PID_WORD], self->me[3], __ATOMIC_RELEASE);
    sem_post(self->token);
    return generation;
}

static int trywait(sem_t *sem) {
    int rc;
    do {
        rc = sem_trywait(sem);
    } while (rc != 0 && errno == EINTR);
    return rc;
}

static PyObject *closed_error(void) {
    PyErr_SetString(PyExc_RuntimeError, "the fast path's handle is closed");
    return NULL;
}

/* Handle.try_take: take L if it is free, write R, post H; the generation or None. */
static PyObject *FastLock_try_take(FastLock *self, PyObject *Py_UNUSED(ignored)) {
    if (self->words == NULL) {
        return closed_error();
    }
    double now = wall_clock(); /* before L is taken, as the Python step */
    if (trywait(self->lock) != 0) {
        if (errno == EAGAIN) {
            Py_RETURN_NONE;
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLongLong(publish(self, now));
}

/* The slice of Handle.take: wait up to *seconds* for L, then write R and post H. */
static PyObject *FastLock_take(FastLock *self, PyObject *arg) {
    if (self->words == NULL) {
        return closed_error();
    }
    double seconds = PyFloat_AsDouble(arg);
    if (seconds == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    int rc, err;
    if (seconds > 86400.0) {
        seconds = 86400.0; /* a slice is short; this only keeps the deadline in range */
    }
    if (!(seconds > 0.0)) {
        rc = trywait(self->lock);
        err = errno;
    } else {
        struct timespec end;
        clock_gettime(CLOCK_REALTIME, &end);
        double whole = (double)(time_t)seconds;
        long nsec = end.tv_nsec + (long)((seconds - whole) * 1e9);
        end.tv_sec += (time_t)whole + nsec / 1000000000L;
        end.tv_nsec = nsec % 1000000000L;
        Py_BEGIN_ALLOW_THREADS
        rc = sem_timedwait(self->lock, &end);
        err = errno;
        Py_END_ALLOW_THREADS
    }
    if (rc != 0) {
        /* Run out or interrupted (posix_ipc's BusyError and SignalError): no L. */
        if (err == EAGAIN || err == ETIMEDOUT || err == EINTR) {
            Py_RETURN_NONE;
        }
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLongLong(publish(self, wall_clock()));
}

/* fast[seconds]: take() for seconds > 0, else try_take().
 *
 * A subscript, not a call: CPython runs pending signal handlers when a call returns
 * (and at a function's start and a loop's back edge), never right after a subscript.
 * A handler's exception after a call could surface between the take and the caller's
 * next step, and the acquisition it returned would be lost; after a subscript the
 * generation always reaches the caller, which returns it (a Python function's return
 * runs no handler) or stores it before its next call. */
static PyObject *FastLock_subscript(FastLock *self, PyObject *arg) {
    double seconds = PyLong_CheckExact(arg) ? PyLong_AsDouble(arg) : PyFloat_AsDouble(arg);
    if (seconds == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (!(seconds > 0.0)) {
        return FastLock_try_take(self, NULL);
    }
    return FastLock_take(self, arg);
}

static PyMappingMethods FastLock_mapping = {
    .mp_subscript = (binaryfunc)FastLock_subscript,
};

/* Handle.release: this process's own acquisition without the guard; else the guarded
 * release (the Python method that *slow* returns). */
static PyObject *FastLock_release(FastLock *self, PyObject *Py_UNUSED(ignored)) {
    if (self->words == NULL) {
        return closed_error();
    }
    int64_t *w = self->words;
    if (load(&w[KEY_WORD]) == self->me[2]) {
        if (trywait(self->token) == 0) {
            __atomic_store_n(&w[PID_WORD], 0, __ATOMIC_RELEASE);
            sem_post(self->lock);
            Py_RETURN_NONE;
        }
        if (errno != EAGAIN) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    PyObject *method = PyObject_CallNoArgs(self->slow);
    if (method == NULL) {
        return NULL;
    }
    if (method == Py_None) {
        Py_DECREF(method);
        return closed_error();
    }
    PyObject *result = PyObject_CallNoArgs(method);
    Py_DECREF(method);
    return result;
}

/* Handle.locked: whether some thread or process holds the lock now. */
static PyObject *FastLock_locked(FastLock *self, PyObject *Py_UNUSED(ignored)) {
    if (self->words == NULL) {
        return closed_error();
    }
#ifdef __APPLE__
    return PyBool_FromLong(load(&self->words[PID_WORD]) != 0);
#else
    int value;
    if (sem_getvalue(self->lock, &value) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyBool_FromLong(value <= 0);
#endif
}

/* This process's identity words (record.pack_identity), again after fork(). */
static PyObject *FastLock_identify(FastLock *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) != 0) {
        return NULL;
    }
    if (view.len != IDENTITY_BYTES) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "identity words must be %d bytes", IDENTITY_BYTES);
        return NULL;
    }
    memcpy(self->me, view.buf, IDENTITY_BYTES);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static void FastLock_close_handles(FastLock *self) {
    if (self->words != NULL) {
        munmap(self->words, self->mapped);
        self->words = NULL;
    }
    if (self->lock != NULL && self->lock != SEM_FAILED) {
        sem_close(self->lock);
    }
    if (self->token != NULL && self->token != SEM_FAILED) {
        sem_close(self->token);
    }
    self->lock = self->token = NULL;
}

static int FastLock_init(FastLock *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"lock_name", "token_name", "record_fd", "slow", NULL};
    const char *lock_name, *token_name;
    int fd;
    PyObject *slow;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwds, "ssiO:FastLock", kwlist, &lock_name, &token_name, &fd, &slow)) {
        return -1;
    }
    if (!PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "slow must be callable");
        return -1;
    }
    FastLock_close_handles(self);
    Py_XSETREF(self->slow, Py_NewRef(slow));
    size_t size = (size_t)RECORD_WORDS * sizeof(int64_t);
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->words = map;
    self->mapped = size;
    self->lock = sem_open(lock_name, 0);
    if (self->lock == SEM_FAILED) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, lock_name);
        FastLock_close_handles(self);
        return -1;
    }
    self->token = sem_open(token_name, 0);
    if (self->token == SEM_FAILED) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, token_name);
        FastLock_close_handles(self);
        return -1;
    }
    return 0;
}

static PyObject *FastLock_close(FastLock *self, PyObject *Py_UNUSED(ignored)) {
    FastLock_close_handles(self);
    Py_RETURN_NONE;
}

static int FastLock_traverse(FastLock *self, visitproc visit, void *arg) {
    Py_VISIT(self->slow);
    return 0;
}

static int FastLock_clear(FastLock *self) {
    Py_CLEAR(self->slow);
    return 0;
}

static void FastLock_dealloc(FastLock *self) {
    PyObject_GC_UnTrack(self);
    FastLock_close_handles(self);
    FastLock_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef FastLock_methods[] = {
    {"try_take", (PyCFunction)FastLock_try_take, METH_NOARGS,
     "Take the lock if it is free; the new generation, or None."},
    {"take", (PyCFunction)FastLock_take, METH_O,
     "Wait up to seconds for the lock (one slice); the new generation, or None."},
    {"release", (PyCFunction)FastLock_release, METH_NOARGS,
     "Release the lock: the own acquisition here, any other through the guarded path."},
    {"locked", (PyCFunction)FastLock_locked, METH_NOARGS,
     "Whether some thread or process holds the lock now."},
    {"identify", (PyCFunction)FastLock_identify, METH_O,
     "Set this process's identity words (record.pack_identity)."},
    {"close", (PyCFunction)FastLock_close, METH_NOARGS,
     "Close this object's semaphores and mapping (the OS objects stay)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aplock._posix._fast.FastLock",
    .tp_doc = PyDoc_STR("The hot steps of one process's handle on a lock."),
    .tp_basicsize = sizeof(FastLock),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FastLock_init,
    .tp_dealloc = (destructor)FastLock_dealloc,
    .tp_traverse = (traverseproc)FastLock_traverse,
    .tp_clear = (inquiry)FastLock_clear,
    .tp_methods = FastLock_methods,
    .tp_as_mapping = &FastLock_mapping,
};

static struct PyModuleDef fast_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aplock._posix._fast",
    .m_doc = PyDoc_STR("The compiled fast path of the POSIX lock's hot steps."),
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fast(void) {
    if (PyType_Ready(&FastLockType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&fast_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "FastLock", (PyObject *)&FastLockType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

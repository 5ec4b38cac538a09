/* jouled.attribution._proctick: the process CPU clocks of a tick's claimed processes, in C.
 *
 * to_read(procs, active) -> list[tuple[proc, int | None]]
 *
 * ``ProcessTracker.tick`` reads the CPU clock of every process a workload claims, each tick
 * (jouled/attribution/workloads.py). Nearly all of them have not run since the last tick
 * (an idle worker pool, a server between requests): the clock says the same, and nothing is
 * left to do for them. This loop reads each clock and hands back only the processes that
 * need the Python loop's care, each with its clock reading, in the order given:
 *
 * - ``proc.workload`` is None: skipped (released since the list was taken);
 * - ``proc.by_stat`` is true: (proc, None) (read by its stat file, not its clock);
 * - the clock cannot be read (no such process, EPERM): (proc, None);
 * - the reading is 0, differs from ``proc.clock_ns``, or ``proc.last_cpu_s`` is None, or
 *   ``proc.pid`` is in ``active``: (proc, reading in ns);
 * - otherwise (the same non-zero reading, a baseline, not sub-sampled): skipped.
 *
 * ``procs``: a list of ``_Proc`` (any objects with the attributes ``pid`` (int),
 * ``workload``, ``by_stat``, ``clock_ns`` and ``last_cpu_s``); ``active``: anything that
 * supports ``in`` with ints (the tracker's dict of recently active PIDs).
 *
 * The clock is clock_getcpuclockid(3)'s, as glibc makes it (``MAKE_PROCESS_CPUCLOCK(pid,
 * CPUCLOCK_SCHED)``): the run time of the thread group that has ``pid`` in this process's
 * PID namespace, the value ``workloads.process_cpu_ns`` reads with ``time.clock_gettime_ns``.
 * One system call a process, without the GIL's release (each 0.4-0.9 µs): the per-process
 * Python frame, bound-method call and attribute loads are what this saves.
 *
 * Errors: TypeError for a ``procs`` that is not a list or a ``pid`` that is not an int;
 * whatever reading an attribute or ``in`` raises. Time O(n); memory O(returned).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <time.h>

#define CPUCLOCK_SCHED 2

static PyObject *s_pid, *s_workload, *s_by_stat, *s_clock_ns, *s_last_cpu_s;

/* Linux PIDs are 1..PID_MAX_LIMIT (2^22 on 64-bit, include/linux/threads.h): past that no
 * process has the PID, and (~pid) << 3 would not fit the clockid_t (an int) either. */
#define PID_MAX_LIMIT (1L << 22)

static int
valid_pid(int overflow, long pid)
{
    return !overflow && pid > 0 && pid <= PID_MAX_LIMIT;
}

/* 1: read into *ns; 0: no clock for that pid (ESRCH/EINVAL/EPERM). */
static int
process_clock(long pid, long long *ns)
{
    struct timespec ts;
    clockid_t id = (clockid_t)(((~(unsigned long)pid) << 3) | CPUCLOCK_SCHED);
    if (clock_gettime(id, &ts) != 0) {
        return 0;
    }
    *ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    return 1;
}

/* 1: append (proc, value) to out; 0: skip; -1: error. */
static int
classify(PyObject *proc, PyObject *active, PyObject **value)
{
    *value = NULL;
    PyObject *workload = PyObject_GetAttr(proc, s_workload);
    if (workload == NULL) {
        return -1;
    }
    int unclaimed = workload == Py_None;
    Py_DECREF(workload);
    if (unclaimed) {
        return 0;
    }
    PyObject *by_stat = PyObject_GetAttr(proc, s_by_stat);
    if (by_stat == NULL) {
        return -1;
    }
    int stat_only = PyObject_IsTrue(by_stat);
    Py_DECREF(by_stat);
    if (stat_only < 0) {
        return -1;
    }
    if (stat_only) {
        *value = Py_NewRef(Py_None);
        return 1;
    }
    PyObject *pid_obj = PyObject_GetAttr(proc, s_pid);
    if (pid_obj == NULL) {
        return -1;
    }
    if (!PyLong_Check(pid_obj)) {
        Py_DECREF(pid_obj);
        PyErr_SetString(PyExc_TypeError, "to_read: a process's pid must be an int");
        return -1;
    }
    int overflow = 0;
    long pid = PyLong_AsLongAndOverflow(pid_obj, &overflow);
    if (pid == -1 && PyErr_Occurred()) {
        Py_DECREF(pid_obj);
        return -1;
    }
    long long ns = 0;
    if (!valid_pid(overflow, pid) || !process_clock(pid, &ns)) {
        Py_DECREF(pid_obj);
        *value = Py_NewRef(Py_None);
        return 1;
    }
    PyObject *now = PyLong_FromLongLong(ns);
    if (now == NULL) {
        Py_DECREF(pid_obj);
        return -1;
    }
    int same = 0;
    if (ns != 0) {
        PyObject *last = PyObject_GetAttr(proc, s_clock_ns);
        if (last == NULL) {
            goto error;
        }
        same = last != Py_None && PyObject_RichCompareBool(now, last, Py_EQ);
        Py_DECREF(last);
        if (same < 0) {
            goto error;
        }
    }
    if (same) {
        PyObject *cpu = PyObject_GetAttr(proc, s_last_cpu_s);
        if (cpu == NULL) {
            goto error;
        }
        same = cpu != Py_None;
        Py_DECREF(cpu);
    }
    if (same) {
        same = PySequence_Contains(active, pid_obj);
        if (same < 0) {
            goto error;
        }
        same = !same;
    }
    Py_DECREF(pid_obj);
    if (same) {
        Py_DECREF(now);
        return 0;
    }
    *value = now;
    return 1;
error:
    Py_DECREF(pid_obj);
    Py_DECREF(now);
    return -1;
}

static PyObject *
py_to_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "to_read(procs, active) takes 2 arguments");
        return NULL;
    }
    PyObject *procs = args[0], *active = args[1];
    if (!PyList_Check(procs)) {
        PyErr_SetString(PyExc_TypeError, "to_read: procs must be a list");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(procs); i++) {
        PyObject *proc = PyList_GET_ITEM(procs, i);
        Py_INCREF(proc); /* the list may change under a callback (__eq__, __contains__) */
        PyObject *value;
        int keep = classify(proc, active, &value);
        if (keep > 0) {
            PyObject *pair = PyTuple_Pack(2, proc, value);
            Py_DECREF(value);
            if (pair == NULL || PyList_Append(out, pair) < 0) {
                Py_XDECREF(pair);
                keep = -1;
            }
            else {
                Py_DECREF(pair);
            }
        }
        Py_DECREF(proc);
        if (keep < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *
py_cpu_ns(PyObject *module, PyObject *arg)
{
    int overflow = 0;
    long pid = PyLong_AsLongAndOverflow(arg, &overflow);
    if (pid == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long ns;
    if (!valid_pid(overflow, pid) || !process_clock(pid, &ns)) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(ns);
}

static PyMethodDef methods[] = {
    {"to_read", (PyCFunction)(void (*)(void))py_to_read, METH_FASTCALL,
     "to_read(procs, active) -> list[(proc, ns | None)]: the claimed processes a tick must "
     "look at, with their CPU clock readings (see the module's docstring)."},
    {"cpu_ns", (PyCFunction)py_cpu_ns, METH_O,
     "cpu_ns(pid) -> int | None: the process CPU clock of pid in ns, as to_read reads it "
     "(for tests); None where no process has it or it cannot be read."},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    (void)module;
#define INTERN(var, text)                                                                   \
    if (var == NULL && (var = PyUnicode_InternFromString(text)) == NULL) {                  \
        return -1;                                                                          \
    }
    INTERN(s_pid, "pid");
    INTERN(s_workload, "workload");
    INTERN(s_by_stat, "by_stat");
    INTERN(s_clock_ns, "clock_ns");
    INTERN(s_last_cpu_s, "last_cpu_s");
#undef INTERN
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "jouled.attribution._proctick",
    "The tick's process CPU clocks in C (see jouled/attribution/workloads.py).", 0, methods,
    slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__proctick(void)
{
    return PyModuleDef_Init(&module_def);
}

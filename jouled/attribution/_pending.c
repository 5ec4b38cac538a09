/* jouled.attribution._pending: the splitter's record of a pending span, in C.
 *
 * Pending(span, dedup=0, span_key=0, parent_key=0) -> Pending
 *
 * The compiled twin of ``jouled.attribution.spans._Pending`` (read its docstring): the same
 * attributes with the same meaning, read and written from Python alike, so the splitter's
 * code is one for both. ``span`` is any object with the attributes of ``spans.Span``.
 * What differs is the layout: the times, the work and the token counts are C numbers in the
 * record (a Python float is 24 bytes and an int 28-36 more, each a separate allocation), and
 * the record is not tracked by the cycle collector (it refers to strings, a tuple of them, a
 * dict of floats and None only, none of which can lead back to it), so the collector's full
 * passes no longer walk every span in flight. Callers must keep it so: a value that refers
 * back to a record (a dict holding an object holding it) would make a cycle that is never
 * freed. 96 bytes a record against ~256 with its floats and ints (64-bit CPython 3.11):
 * each token count is a 63-bit field sharing its 8 bytes with a flag, and the workload,
 * model and route are one tuple shared by every record of the same three (three pointers
 * of their own made it 112 bytes; pymalloc's sizes are multiples of 16, so only a cut of 16
 * bytes counts).
 *
 * Attributes (read and write; a failed write leaves the old value): workload, model, route
 * (any object, the span's; in practice str; a write shares the new three's tuple), start, end (float: the setter takes any real
 * number), gflops, input_tokens and output_tokens (None when unknown; tokens are ints in
 * [-2^62 + 1, 2^62 - 1], far above the ingest's 10^12: OverflowError past that, TypeError
 * for a non-int), energy_j (None
 * or the dict of joules per component), done (bool), dedup (int, read-only: the splitter's
 * hash key, 0 when the span has no ids), span_key and parent_key (int: the request joiner's keys of the
 * span's id and its parent's, ``hash(id)``; 0 when absent). The ints are in [-2^63, 2^63 - 1]
 * (OverflowError past that, TypeError for a non-int).
 *
 * live() -> int: records alive now (for tests: a record nothing holds is freed at once,
 * records are not tracked by gc so gc.get_objects() does not list them).
 *
 * IdIndex() -> IdIndex: the request joiner's index of its requests by trace key, a mapping
 * of int keys in [-2^63, 2^63 - 1] (OverflowError past that, TypeError for a non-int) to
 * objects, with ``in``, ``[]`` (KeyError), ``[] =``, ``del`` (KeyError), ``get(key,
 * default=None)`` and ``len``; no iteration. A dict of ~30,000 int keys holds ~125 bytes an
 * entry (its table, which insert/delete churn leaves at up to twice the size a fresh one
 * needs, and a 32-36 byte int object a key); this open-addressing table holds the key as a
 * C int64 beside the value's pointer, 16 bytes a slot at a load of 1/3 to 2/3 (~24-48 bytes
 * an entry). Its arrays are allocated with PyMem (tracemalloc sees them).
 *
 * RecordIndex() -> RecordIndex: the same table for Pending records keyed by their own
 * ``dedup`` (the splitter's index): the key is read from the record, so a slot is the
 * record's pointer alone, 8 bytes (~12-24 bytes an entry; 0.5 MB less than an IdIndex at
 * 1,000 spans/s). ``index[key] = rec`` takes a Pending whose dedup is ``key`` (TypeError,
 * ValueError otherwise); the rest is IdIndex's. A probe reads the record's dedup, which is
 * why ``dedup`` is read-only.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

/* Token counts are 63-bit fields (each shares its 8 bytes with a flag): NO_TOKENS, the
 * field's least value, stands for None. */
#define TOKENS_MAX ((INT64_C(1) << 62) - 1)
#define NO_TOKENS (-TOKENS_MAX - 1)

typedef struct {
    PyObject_HEAD
    PyObject *labels;   /* (workload, model, route): one tuple shared by the records of the
                         * same three (labels_cache), 8 bytes a record where three pointers
                         * took 24 */
    PyObject *energy_j; /* None or a dict */
    double start;
    double end;
    double gflops;
    int64_t input_tokens : 63;  /* NO_TOKENS: None */
    uint64_t done : 1;
    int64_t output_tokens : 63; /* NO_TOKENS: None */
    uint64_t has_gflops : 1;
    Py_ssize_t dedup;
    Py_ssize_t span_key;
    Py_ssize_t parent_key;
} Pending;

static Py_ssize_t live_records = 0;

/* Each (workload, model, route) tuple once: a record holds the shared one. A spans' labels
 * are few (the models a workload serves times its routes), so the cache stays small; at
 * LABELS_CACHE_MAX distinct ones (a sender naming a new route in each span) it is emptied
 * and filled again, the records keeping the tuples they hold. */
#define LABELS_CACHE_MAX 4096
static PyObject *labels_cache = NULL;

/* The tuple (workload, model, route) (a new reference), or NULL with an exception: the
 * shared one when all three are exact strs (the ingest's labels), whose hash and equality
 * run no Python code and cannot fail; any other object gets a tuple of its own, so a record
 * always reads back the very objects it was given. */
static PyObject *
shared_labels(PyObject *workload, PyObject *model, PyObject *route)
{
    PyObject *t = PyTuple_Pack(3, workload, model, route);
    if (t == NULL || !PyUnicode_CheckExact(workload) || !PyUnicode_CheckExact(model) ||
        !PyUnicode_CheckExact(route)) {
        return t;
    }
    if (PyDict_GET_SIZE(labels_cache) >= LABELS_CACHE_MAX) {
        PyDict_Clear(labels_cache);
    }
    PyObject *shared = PyDict_SetDefault(labels_cache, t, t); /* borrowed */
    if (shared == NULL) { /* MemoryError */
        Py_DECREF(t);
        return NULL;
    }
    Py_INCREF(shared);
    Py_DECREF(t);
    return shared;
}

/* The record's labels with item ``i`` replaced by ``value``; -1 with an exception, the
 * labels unchanged. */
static int
set_label(PyObject **labels, Py_ssize_t i, PyObject *value)
{
    PyObject *items[3] = {PyTuple_GET_ITEM(*labels, 0), PyTuple_GET_ITEM(*labels, 1),
                          PyTuple_GET_ITEM(*labels, 2)};
    items[i] = value;
    PyObject *shared = shared_labels(items[0], items[1], items[2]);
    if (shared == NULL) {
        return -1;
    }
    Py_SETREF(*labels, shared);
    return 0;
}

static PyObject *s_workload, *s_model, *s_start, *s_end, *s_gflops, *s_route, *s_input_tokens,
    *s_output_tokens;

/* A token count (NO_TOKENS for None) into the int64_t at ``out``; -1 with an exception set
 * on error. */
static int
read_tokens(PyObject *value, void *out)
{
    if (value == Py_None) {
        *(int64_t *)out = NO_TOKENS;
        return 0;
    }
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "token counts must be int or None, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v <= NO_TOKENS || v > TOKENS_MAX) {
        PyErr_SetString(PyExc_OverflowError, "token count out of range (|count| < 2^62)");
        return -1;
    }
    *(int64_t *)out = (int64_t)v;
    return 0;
}

static PyObject *
tokens_object(int64_t v)
{
    if (v == NO_TOKENS) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong((long long)v);
}

/* A real number into a double member; the member is written only on success. */
static int
read_real(PyObject *value, void *out)
{
    double d = PyFloat_AsDouble(value);
    if (d == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *(double *)out = d;
    return 0;
}

/* The gflops member from a Python value (None or a real number); -1 with an exception. */
static int
read_gflops(PyObject *value, void *record)
{
    Pending *self = record;
    if (value == Py_None) {
        self->has_gflops = 0;
        self->gflops = 0.0;
        return 0;
    }
    if (read_real(value, &self->gflops) < 0) {
        return -1;
    }
    self->has_gflops = 1;
    return 0;
}

/* ``read(value, out)`` of the attribute ``name`` of ``span`` (one of the readers above). */
static int
read_attr(PyObject *span, PyObject *name, int (*read)(PyObject *, void *), void *out)
{
    PyObject *v = PyObject_GetAttr(span, name);
    if (v == NULL) {
        return -1;
    }
    int bad = read(v, out);
    Py_DECREF(v);
    return bad;
}

static void
pending_dealloc(Pending *self)
{
    Py_XDECREF(self->labels);
    Py_XDECREF(self->energy_j);
    live_records--;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
pending_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"span", "dedup", "span_key", "parent_key", NULL};
    PyObject *span;
    Py_ssize_t dedup = 0, span_key = 0, parent_key = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|nnn:Pending", kwlist, &span, &dedup,
                                     &span_key, &parent_key)) {
        return NULL;
    }
    Pending *self = (Pending *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    live_records++;
    self->dedup = dedup;
    self->span_key = span_key;
    self->parent_key = parent_key;
    self->energy_j = Py_NewRef(Py_None);
    self->input_tokens = self->output_tokens = NO_TOKENS;
    int64_t input_tokens = NO_TOKENS, output_tokens = NO_TOKENS;
    PyObject *workload = NULL, *model = NULL, *route = NULL;
    int ok = (workload = PyObject_GetAttr(span, s_workload)) != NULL &&
             (model = PyObject_GetAttr(span, s_model)) != NULL &&
             (route = PyObject_GetAttr(span, s_route)) != NULL &&
             (self->labels = shared_labels(workload, model, route)) != NULL &&
             read_attr(span, s_start, read_real, &self->start) == 0 &&
             read_attr(span, s_end, read_real, &self->end) == 0 &&
             read_attr(span, s_gflops, read_gflops, self) == 0 &&
             read_attr(span, s_input_tokens, read_tokens, &input_tokens) == 0 &&
             read_attr(span, s_output_tokens, read_tokens, &output_tokens) == 0;
    Py_XDECREF(workload);
    Py_XDECREF(model);
    Py_XDECREF(route);
    if (!ok) {
        goto fail;
    }
    self->input_tokens = input_tokens;
    self->output_tokens = output_tokens;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

/* Conversions between a member and its Python value (the getters' and setters' bodies). */
static PyObject *
gflops_object(Pending *self)
{
    if (!self->has_gflops) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(self->gflops);
}

static int
read_done(Pending *self, PyObject *value)
{
    int truth = PyObject_IsTrue(value);
    if (truth < 0) {
        return -1;
    }
    self->done = truth != 0;
    return 0;
}

/* Write the input (``output`` 0) or output token count; the field is unchanged on error. */
static int
set_tokens(Pending *self, PyObject *value, int output)
{
    int64_t v;
    if (read_tokens(value, &v) < 0) {
        return -1;
    }
    if (output) {
        self->output_tokens = v;
    }
    else {
        self->input_tokens = v;
    }
    return 0;
}

static int
read_ssize(PyObject *value, Py_ssize_t *out)
{
    Py_ssize_t n = PyNumber_AsSsize_t(value, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = n;
    return 0;
}

static int
read_object(PyObject **member, PyObject *value)
{
    Py_SETREF(*member, Py_NewRef(value));
    return 0;
}

/* get_<name> and set_<name>: GET and SET are expressions of ``self`` (and ``value``). Every
 * member is always set; deleting one is refused (the Python twin's slots would raise on
 * the next read instead; nothing deletes them). */
#define MEMBER(name, GET, SET)                                                                  \
    static PyObject *get_##name(Pending *self, void *closure)                                  \
    {                                                                                           \
        return GET;                                                                             \
    }                                                                                           \
    static int set_##name(Pending *self, PyObject *value, void *closure)                        \
    {                                                                                           \
        if (value == NULL) {                                                                    \
            PyErr_SetString(PyExc_AttributeError, #name " cannot be deleted");                  \
            return -1;                                                                          \
        }                                                                                       \
        return SET;                                                                             \
    }

MEMBER(workload, Py_NewRef(PyTuple_GET_ITEM(self->labels, 0)), set_label(&self->labels, 0, value))
MEMBER(model, Py_NewRef(PyTuple_GET_ITEM(self->labels, 1)), set_label(&self->labels, 1, value))
MEMBER(route, Py_NewRef(PyTuple_GET_ITEM(self->labels, 2)), set_label(&self->labels, 2, value))
MEMBER(energy_j, Py_NewRef(self->energy_j), read_object(&self->energy_j, value))
MEMBER(gflops, gflops_object(self), read_gflops(value, self))
MEMBER(input_tokens, tokens_object(self->input_tokens), set_tokens(self, value, 0))
MEMBER(output_tokens, tokens_object(self->output_tokens), set_tokens(self, value, 1))
MEMBER(done, PyBool_FromLong(self->done), read_done(self, value))
MEMBER(start, PyFloat_FromDouble(self->start), read_real(value, &self->start))
MEMBER(end, PyFloat_FromDouble(self->end), read_real(value, &self->end))
static PyObject *
get_dedup(Pending *self, void *closure)
{
    return PyLong_FromSsize_t(self->dedup);
}
MEMBER(span_key, PyLong_FromSsize_t(self->span_key), read_ssize(value, &self->span_key))
MEMBER(parent_key, PyLong_FromSsize_t(self->parent_key), read_ssize(value, &self->parent_key))

static PyGetSetDef pending_getset[] = {
    {"workload", (getter)get_workload, (setter)set_workload, "the span's workload", NULL},
    {"model", (getter)get_model, (setter)set_model, "the span's model", NULL},
    {"route", (getter)get_route, (setter)set_route, "the span's route", NULL},
    {"energy_j", (getter)get_energy_j, (setter)set_energy_j,
     "None, or joules received per component", NULL},
    {"gflops", (getter)get_gflops, (setter)set_gflops, "GFLOPs, None when unknown", NULL},
    {"input_tokens", (getter)get_input_tokens, (setter)set_input_tokens,
     "prompt tokens, None when unknown", NULL},
    {"output_tokens", (getter)get_output_tokens, (setter)set_output_tokens,
     "generated tokens, None when unknown", NULL},
    {"start", (getter)get_start, (setter)set_start, "start, unix seconds", NULL},
    {"end", (getter)get_end, (setter)set_end, "end, unix seconds", NULL},
    {"dedup", (getter)get_dedup, NULL,
     "the splitter's id key (read-only: a RecordIndex finds the record by it); 0: no ids",
     NULL},
    {"span_key", (getter)get_span_key, (setter)set_span_key, "hash of the span id; 0: none",
     NULL},
    {"parent_key", (getter)get_parent_key, (setter)set_parent_key,
     "hash of the parent's span id; 0: none", NULL},
    {"done", (getter)get_done, (setter)set_done, "settled, evicted or retracted", NULL},
    {NULL},
};

static PyTypeObject PendingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "jouled.attribution._pending.Pending",
    .tp_basicsize = sizeof(Pending),
    .tp_dealloc = (destructor)pending_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A pending span: spans._Pending's twin (see jouled/attribution/_pending.c).",
    .tp_getset = pending_getset,
    .tp_new = pending_new,
};

/* ---- IdIndex ------------------------------------------------------------------------ */

/* A deleted slot's value: not NULL (an empty slot), never an object. */
static char tombstone_mark;
#define TOMBSTONE ((PyObject *)&tombstone_mark)
#define MIN_CAPACITY 8

typedef struct {
    PyObject_HEAD
    int64_t *keys;     /* NULL in a RecordIndex: the key is the record's dedup */
    PyObject **values; /* NULL: empty; TOMBSTONE: deleted; else a strong reference */
    Py_ssize_t capacity; /* a power of two */
    Py_ssize_t used;     /* live entries */
    Py_ssize_t filled;   /* live entries and tombstones */
    int shift;           /* 64 - log2(capacity) */
    int by_record;       /* a RecordIndex: values are Pending, keyed by their dedup */
} IdIndex;

static PyTypeObject RecordIndexType;

/* The key of the live slot ``i``. */
static inline int64_t
key_at(IdIndex *self, size_t i)
{
    return self->by_record ? (int64_t)((Pending *)self->values[i])->dedup : self->keys[i];
}

/* Fibonacci hashing: the top bits of the key times 2^64 / phi. The splitter's keys are
 * Python hashes already; the multiply spreads any other ints (consecutive ones from tests,
 * ones differing only in high bits) over the table. */
static size_t
slot_of(int64_t key, int shift)
{
    return (size_t)(((uint64_t)key * UINT64_C(0x9E3779B97F4A7C15)) >> shift);
}

/* The slot holding ``key``, or -1. */
static Py_ssize_t
find_slot(IdIndex *self, int64_t key)
{
    if (self->capacity == 0) {
        return -1;
    }
    size_t mask = (size_t)self->capacity - 1;
    for (size_t i = slot_of(key, self->shift);; i = (i + 1) & mask) {
        PyObject *v = self->values[i];
        if (v == NULL) {
            return -1;
        }
        if (v != TOMBSTONE && key_at(self, i) == key) {
            return (Py_ssize_t)i;
        }
    }
}

/* Rebuild the table at ``capacity`` (tombstones dropped); -1 with MemoryError on failure,
 * the table unchanged. */
static int
resize(IdIndex *self, Py_ssize_t capacity)
{
    int shift = 64;
    for (Py_ssize_t c = capacity; c > 1; c >>= 1) {
        shift--;
    }
    int64_t *keys = self->by_record ? NULL : PyMem_Calloc((size_t)capacity, sizeof(int64_t));
    PyObject **values = PyMem_Calloc((size_t)capacity, sizeof(PyObject *));
    if ((keys == NULL && !self->by_record) || values == NULL) {
        PyMem_Free(keys);
        PyMem_Free(values);
        PyErr_NoMemory();
        return -1;
    }
    size_t mask = (size_t)capacity - 1;
    for (Py_ssize_t j = 0; j < self->capacity; j++) {
        PyObject *v = self->values[j];
        if (v == NULL || v == TOMBSTONE) {
            continue;
        }
        int64_t k = key_at(self, (size_t)j);
        size_t i = slot_of(k, shift);
        while (values[i] != NULL) {
            i = (i + 1) & mask;
        }
        if (keys != NULL) {
            keys[i] = k;
        }
        values[i] = v;
    }
    PyMem_Free(self->keys);
    PyMem_Free(self->values);
    self->keys = keys;
    self->values = values;
    self->capacity = capacity;
    self->shift = shift;
    self->filled = self->used;
    return 0;
}

static int
read_key(PyObject *key, int64_t *out)
{
    if (!PyLong_Check(key)) {
        PyErr_Format(PyExc_TypeError, "IdIndex keys are ints, not %.100s", Py_TYPE(key)->tp_name);
        return -1;
    }
    long long v = PyLong_AsLongLong(key);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

static PyObject *
index_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "IdIndex() takes no arguments");
        return NULL;
    }
    IdIndex *self = (IdIndex *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->by_record = PyType_IsSubtype(type, &RecordIndexType);
    }
    return (PyObject *)self; /* an empty table: arrays made on the first insert */
}

static int
index_clear(IdIndex *self)
{
    PyObject **values = self->values;
    Py_ssize_t capacity = self->capacity;
    self->values = NULL;
    self->capacity = self->used = self->filled = 0;
    PyMem_Free(self->keys);
    self->keys = NULL;
    for (Py_ssize_t i = 0; i < capacity; i++) {
        if (values[i] != NULL && values[i] != TOMBSTONE) {
            Py_DECREF(values[i]);
        }
    }
    PyMem_Free(values);
    return 0;
}

static int
index_traverse(IdIndex *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->capacity; i++) {
        if (self->values[i] != TOMBSTONE) {
            Py_VISIT(self->values[i]);
        }
    }
    return 0;
}

static void
index_dealloc(IdIndex *self)
{
    PyObject_GC_UnTrack(self);
    index_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
index_length(IdIndex *self)
{
    return self->used;
}

static PyObject *
index_subscript(IdIndex *self, PyObject *key)
{
    int64_t k;
    if (read_key(key, &k) < 0) {
        return NULL;
    }
    Py_ssize_t i = find_slot(self, k);
    if (i < 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return Py_NewRef(self->values[i]);
}

static int
index_ass_subscript(IdIndex *self, PyObject *key, PyObject *value)
{
    int64_t k;
    if (read_key(key, &k) < 0) {
        return -1;
    }
    Py_ssize_t i = find_slot(self, k);
    if (value == NULL) { /* del */
        if (i < 0) {
            PyErr_SetObject(PyExc_KeyError, key);
            return -1;
        }
        PyObject *old = self->values[i];
        self->values[i] = TOMBSTONE;
        self->used--;
        Py_DECREF(old);
        return 0;
    }
    if (self->by_record) {
        if (!Py_IS_TYPE(value, &PendingType)) {
            PyErr_Format(PyExc_TypeError, "a RecordIndex holds Pending records, not %.100s",
                         Py_TYPE(value)->tp_name);
            return -1;
        }
        if ((int64_t)((Pending *)value)->dedup != k) {
            PyErr_SetString(PyExc_ValueError,
                            "a RecordIndex holds a record under its own dedup key only");
            return -1;
        }
    }
    if (i >= 0) {
        Py_SETREF(self->values[i], Py_NewRef(value));
        return 0;
    }
    if ((self->filled + 1) * 3 > self->capacity * 2) {
        /* Past 2/3 full (tombstones count: they lengthen probes): rebuild at a load of at
         * most 1/2 of the live entries, growing or shrinking. */
        Py_ssize_t capacity = MIN_CAPACITY;
        while (capacity < (self->used + 1) * 2) {
            capacity *= 2;
        }
        if (resize(self, capacity) < 0) {
            return -1;
        }
    }
    size_t mask = (size_t)self->capacity - 1;
    size_t j = slot_of(k, self->shift);
    while (self->values[j] != NULL && self->values[j] != TOMBSTONE) {
        j = (j + 1) & mask;
    }
    if (self->values[j] == NULL) {
        self->filled++;
    }
    if (self->keys != NULL) {
        self->keys[j] = k;
    }
    self->values[j] = Py_NewRef(value);
    self->used++;
    return 0;
}

static int
index_contains(IdIndex *self, PyObject *key)
{
    int64_t k;
    if (read_key(key, &k) < 0) {
        return -1;
    }
    return find_slot(self, k) >= 0;
}

static PyObject *
index_get(IdIndex *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
        return NULL;
    }
    int64_t k;
    if (read_key(args[0], &k) < 0) {
        return NULL;
    }
    Py_ssize_t i = find_slot(self, k);
    if (i >= 0) {
        return Py_NewRef(self->values[i]);
    }
    return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static PyObject *
index_sizeof(IdIndex *self, PyObject *unused)
{
    size_t slot = sizeof(PyObject *) + (self->by_record ? 0 : sizeof(int64_t));
    return PyLong_FromSize_t(sizeof(IdIndex) + (size_t)self->capacity * slot);
}

static PyMethodDef index_methods[] = {
    {"get", (PyCFunction)(void (*)(void))index_get, METH_FASTCALL,
     "get(key, default=None): the value at key, else default."},
    {"__sizeof__", (PyCFunction)index_sizeof, METH_NOARGS, "bytes held, with the table"},
    {NULL},
};

static PyMappingMethods index_as_mapping = {
    .mp_length = (lenfunc)index_length,
    .mp_subscript = (binaryfunc)index_subscript,
    .mp_ass_subscript = (objobjargproc)index_ass_subscript,
};

static PySequenceMethods index_as_sequence = {
    .sq_contains = (objobjproc)index_contains,
};

static PyTypeObject IdIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "jouled.attribution._pending.IdIndex",
    .tp_basicsize = sizeof(IdIndex),
    .tp_dealloc = (destructor)index_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "int64 key -> object, open addressing (see jouled/attribution/_pending.c).",
    .tp_traverse = (traverseproc)index_traverse,
    .tp_clear = (inquiry)index_clear,
    .tp_as_mapping = &index_as_mapping,
    .tp_as_sequence = &index_as_sequence,
    .tp_methods = index_methods,
    .tp_new = index_new,
};

/* IdIndex's methods throughout (its subtype): only the keys differ (``by_record``). */
static PyTypeObject RecordIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "jouled.attribution._pending.RecordIndex",
    .tp_basicsize = sizeof(IdIndex),
    .tp_flags = Py_TPFLAGS_DEFAULT, /* HAVE_GC with traverse and clear: inherited */
    .tp_doc = "dedup -> Pending record, 8 bytes a slot (see jouled/attribution/_pending.c).",
    .tp_base = &IdIndexType,
};

static PyObject *
py_live(PyObject *module, PyObject *unused)
{
    return PyLong_FromSsize_t(live_records);
}

static PyMethodDef methods[] = {
    {"live", (PyCFunction)py_live, METH_NOARGS, "live() -> int: Pending records alive now."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "jouled.attribution._pending",
    "The splitter's pending-span record and id index in C (see jouled/attribution/spans.py).",
    -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__pending(void)
{
    if ((labels_cache = PyDict_New()) == NULL ||
        (s_workload = PyUnicode_InternFromString("workload")) == NULL ||
        (s_model = PyUnicode_InternFromString("model")) == NULL ||
        (s_start = PyUnicode_InternFromString("start")) == NULL ||
        (s_end = PyUnicode_InternFromString("end")) == NULL ||
        (s_gflops = PyUnicode_InternFromString("gflops")) == NULL ||
        (s_route = PyUnicode_InternFromString("route")) == NULL ||
        (s_input_tokens = PyUnicode_InternFromString("input_tokens")) == NULL ||
        (s_output_tokens = PyUnicode_InternFromString("output_tokens")) == NULL) {
        return NULL;
    }
    if (PyType_Ready(&PendingType) < 0 || PyType_Ready(&IdIndexType) < 0 ||
        PyType_Ready(&RecordIndexType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Pending", (PyObject *)&PendingType) < 0 ||
        PyModule_AddObjectRef(m, "IdIndex", (PyObject *)&IdIndexType) < 0 ||
        PyModule_AddObjectRef(m, "RecordIndex", (PyObject *)&RecordIndexType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

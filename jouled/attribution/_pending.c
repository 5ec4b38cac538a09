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
 * default=None)``, ``len`` and ``forget_lone`` (the request joiner's expiry of requests
 * remembered as one record: read its comment); no iteration. A dict of ~30,000 int keys holds ~125 bytes an
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
 *
 * TimeQueue(by_end) -> TimeQueue: ``spans._TimeQueue``'s twin for Pending records (read its
 * docstring): records queued by their end (``by_end``) or start, in a calendar of one-second
 * buckets (a dict of lists and a C heap of the seconds), each bucket sorted when a take
 * reaches it, in C, reading the record's double directly (Python's sort called a key per
 * record). ``push(rec, t)`` (TypeError for anything but a Pending, ValueError and
 * OverflowError for a NaN or infinite ``t``, as ``math.floor``), ``take_through(t)`` and
 * ``take_before(t)`` (lists, in (time, push) order), ``drop_done()`` and ``len``. Records of
 * equal time leave in push order (a stable merge sort). Bucket seconds are int64, clamped at
 * +-2^62: the top bucket is always cut by bisection, never taken whole, and the bottom one
 * is looked into by any take.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Token counts are 63-bit fields (each shares its 8 bytes with a flag): NO_TOKENS, the
 * field's least value, stands for None. */
#define TOKENS_MAX ((INT64_C(1) << 62) - 1)
/* The time queues' bucket seconds are int64, clamped here; below EXACT_SECONDS a second
 * (and the next) is an exact double. */
#define SECOND_MAX (INT64_C(1) << 62)
#define EXACT_SECONDS (INT64_C(1) << 53)
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

/* ``obj.name`` (a new reference, or NULL with an exception), read straight from its slot
 * when ``name`` is an object slot of its type (a ``slots=True`` dataclass such as ``Span``:
 * ~2 ns against ~20 for the attribute lookup). One cached (type, version, offset) per name:
 * a change to the type (its version tag) or another type looks the name up again. */
#define N_SLOT_CACHE 16
/* A type's version tag is valid (it changes whenever the type does): the flag up to 3.11;
 * from 3.12 a tag of 0 (3.13 no longer sets the flag). */
#if PY_VERSION_HEX >= 0x030C0000
#define TAG_VALID(t) ((t)->tp_version_tag != 0)
#else
#define TAG_VALID(t) (((t)->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) != 0)
#endif
static struct {
    PyObject *name; /* borrowed: an interned name kept by the module */
    PyTypeObject *type; /* strong */
    unsigned int version;
    Py_ssize_t offset; /* 0: not a slot of ``type`` */
} slot_cache[N_SLOT_CACHE];

static PyObject *
fast_attr(PyObject *obj, PyObject *name)
{
    PyTypeObject *type = Py_TYPE(obj);
    if (type->tp_getattro != PyObject_GenericGetAttr) { /* its own __getattribute__ */
        return PyObject_GetAttr(obj, name);
    }
    int free = -1;
    for (int i = 0; i < N_SLOT_CACHE; i++) {
        if (slot_cache[i].name == name) {
            if (slot_cache[i].type == type && slot_cache[i].version == type->tp_version_tag &&
                TAG_VALID(type)) {
                if (slot_cache[i].offset == 0) {
                    return PyObject_GetAttr(obj, name);
                }
                PyObject *v = *(PyObject **)((char *)obj + slot_cache[i].offset);
                return v != NULL ? Py_NewRef(v) : PyObject_GetAttr(obj, name);
            }
            free = i;
            break;
        }
        if (slot_cache[i].name == NULL) {
            free = i;
            break;
        }
    }
    PyObject *v = PyObject_GetAttr(obj, name); /* also makes the version tag valid */
    if (v == NULL || free < 0) {
        return v;
    }
    Py_ssize_t offset = 0;
    PyObject *d = PyObject_GetAttr((PyObject *)type, name); /* a slot's member descriptor */
    if (d == NULL) {
        PyErr_Clear();
    }
    else {
        if (Py_IS_TYPE(d, &PyMemberDescr_Type) &&
            ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX &&
            !(((PyMemberDescrObject *)d)->d_member->flags & READ_RESTRICTED)) {
            offset = ((PyMemberDescrObject *)d)->d_member->offset;
        }
        Py_DECREF(d);
    }
    if (TAG_VALID(type)) {
        slot_cache[free].name = name;
        Py_XSETREF(slot_cache[free].type, (PyTypeObject *)Py_NewRef(type));
        slot_cache[free].version = type->tp_version_tag;
        slot_cache[free].offset = offset;
    }
    return v;
}

/* ``read(value, out)`` of the attribute ``name`` of ``span`` (one of the readers above). */
static int
read_attr(PyObject *span, PyObject *name, int (*read)(PyObject *, void *), void *out)
{
    PyObject *v = fast_attr(span, name);
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

/* A record of ``span``'s values with these keys (a new reference), or NULL with an
 * exception (TypeError, OverflowError: values the record cannot hold). */
static PyObject *
pending_from(PyTypeObject *type, PyObject *span, Py_ssize_t dedup, Py_ssize_t span_key,
             Py_ssize_t parent_key)
{
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
    int ok = (workload = fast_attr(span, s_workload)) != NULL &&
             (model = fast_attr(span, s_model)) != NULL &&
             (route = fast_attr(span, s_route)) != NULL &&
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
        Py_DECREF(self);
        return NULL;
    }
    self->input_tokens = input_tokens;
    self->output_tokens = output_tokens;
    return (PyObject *)self;
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
    return pending_from(type, span, dedup, span_key, parent_key);
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

/* Delete slot ``i`` (a live entry): a tombstone takes its place and the index's reference is
   released last, when the table is consistent again (the release may run a finalizer). */
static void
delete_slot(IdIndex *self, Py_ssize_t i)
{
    PyObject *old = self->values[i];
    self->values[i] = TOMBSTONE;
    self->used--;
    Py_DECREF(old);
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

static int index_put(IdIndex *self, int64_t k, PyObject *value);

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
        delete_slot(self, i);
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
    return index_put(self, k, value);
}

/* Add ``value`` under ``k``, a key not in the table (a new reference is taken); -1 with
 * MemoryError. */
static int
index_put(IdIndex *self, int64_t k, PyObject *value)
{
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

static int forget_if_due(IdIndex *self, int64_t k, double due, double memory_s);

/* forget_lone(keys, due, memory_s) -> int: ``RequestJoiner._forget_records`` in one C loop.
 * For each int key of ``keys`` (any iterable of ints: the joiner's array('q')), the entry is
 * deleted where it is a Pending record (a request remembered as its one span's record) due
 * at ``due``: ``ceil(end + memory_s) == due``; any other value (a request of several spans,
 * a trace's index) or a record due later stays. Returns how many were deleted. ValueError
 * for |due| >= 2^53 (no exact double: the caller's Python loop takes those). */
static PyObject *
index_forget_lone(IdIndex *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "forget_lone(keys, due, memory_s)");
        return NULL;
    }
    long long due = PyLong_AsLongLong(args[1]);
    if (due == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (due <= -EXACT_SECONDS || due >= EXACT_SECONDS) { /* past 2^53 s: no exact double */
        PyErr_SetString(PyExc_ValueError, "forget_lone: |due| must be below 2^53");
        return NULL;
    }
    double memory_s = PyFloat_AsDouble(args[2]);
    if (memory_s == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t forgotten = 0;
    if (PyObject_CheckBuffer(args[0])) { /* array('q'): its int64s, no int object each */
        Py_buffer view;
        if (PyObject_GetBuffer(args[0], &view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
            return NULL;
        }
        int ok = view.itemsize == 8 && view.format != NULL &&
                 (strcmp(view.format, "q") == 0 || strcmp(view.format, "l") == 0);
        if (ok) {
            const int64_t *keys = view.buf;
            for (Py_ssize_t j = 0; j < view.len / 8; j++) {
                forgotten += forget_if_due(self, keys[j], (double)due, memory_s);
            }
        }
        PyBuffer_Release(&view);
        if (ok) {
            return PyLong_FromSsize_t(forgotten);
        }
    }
    PyObject *keys = PySequence_Fast(args[0], "forget_lone: keys must be iterable");
    if (keys == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys);
    PyObject **items = PySequence_Fast_ITEMS(keys);
    for (Py_ssize_t j = 0; j < n; j++) {
        int64_t k;
        if (read_key(items[j], &k) < 0) {
            Py_DECREF(keys);
            return NULL;
        }
        forgotten += forget_if_due(self, k, (double)due, memory_s);
    }
    Py_DECREF(keys);
    return PyLong_FromSsize_t(forgotten);
}

/* forget_lone's step: 1 when the entry of ``k`` was a record due at ``due``, now deleted. */
static int
forget_if_due(IdIndex *self, int64_t k, double due, double memory_s)
{
    Py_ssize_t i = find_slot(self, k);
    if (i < 0) {
        return 0;
    }
    PyObject *v = self->values[i];
    if (!Py_IS_TYPE(v, &PendingType) || ceil(((Pending *)v)->end + memory_s) != due) {
        return 0;
    }
    delete_slot(self, i);
    return 1;
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
    {"forget_lone", (PyCFunction)(void (*)(void))index_forget_lone, METH_FASTCALL,
     "forget_lone(keys, due, memory_s) -> int: delete the records due at due."},
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

/* ---- TimeQueue ---------------------------------------------------------------------- */

/* Bucket seconds are int64: a time past +-2^62 s (finite, but no clock's) shares the end
 * bucket: the top one is always cut by bisection, never taken whole; the bottom one is
 * looked into by any take (its records may be earlier than any t). */

typedef struct {
    PyObject_HEAD
    PyObject *buckets;  /* dict: second (int) -> list of Pending, in push order until sorted */
    int64_t *heap;      /* a min-heap of the buckets' seconds */
    Py_ssize_t heap_n, heap_cap;
    Py_ssize_t n;       /* records queued */
    int by_end;         /* the sort key: the record's end (1) or start (0) */
    int64_t last_second; /* the bucket of the latest push (pushes come in runs of a second) */
    PyObject *last_bucket; /* borrowed from ``buckets``; NULL when unknown */
} TimeQueue;

static inline double
time_key(PyObject *rec, int by_end)
{
    return by_end ? ((Pending *)rec)->end : ((Pending *)rec)->start;
}

/* Room for one more second in the heap; -1 with MemoryError. */
static int
heap_reserve(TimeQueue *self)
{
    if (self->heap_n == self->heap_cap) {
        Py_ssize_t cap = self->heap_cap ? 2 * self->heap_cap : 16;
        int64_t *heap = PyMem_Realloc(self->heap, (size_t)cap * sizeof(int64_t));
        if (heap == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->heap = heap;
        self->heap_cap = cap;
    }
    return 0;
}

/* Push after ``heap_reserve`` (or with the capacity known): cannot fail. */
static void
heap_push(TimeQueue *self, int64_t second)
{
    Py_ssize_t i = self->heap_n++;
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (self->heap[parent] <= second) {
            break;
        }
        self->heap[i] = self->heap[parent];
        i = parent;
    }
    self->heap[i] = second;
}

static void
heap_pop(TimeQueue *self)
{
    int64_t last = self->heap[--self->heap_n];
    Py_ssize_t i = 0, n = self->heap_n;
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= n) {
            break;
        }
        if (child + 1 < n && self->heap[child + 1] < self->heap[child]) {
            child++;
        }
        if (last <= self->heap[child]) {
            break;
        }
        self->heap[i] = self->heap[child];
        i = child;
    }
    if (n > 0) {
        self->heap[i] = last;
    }
}

/* Sort ``items[0:n]`` by time key, stably (records of equal time keep their push order, as
 * Python's list.sort does): a merge sort with the scratch ``tmp`` of n pointers. A bucket
 * arrives in a few sorted runs (one per exporter batch): a run already in order is found
 * in one comparison a merge. */
static void
merge_sort(PyObject **items, PyObject **tmp, Py_ssize_t n, int by_end)
{
    if (n < 2) {
        return;
    }
    if (n <= 16) { /* insertion sort: stable */
        for (Py_ssize_t i = 1; i < n; i++) {
            PyObject *x = items[i];
            double k = time_key(x, by_end);
            Py_ssize_t j = i;
            while (j > 0 && k < time_key(items[j - 1], by_end)) {
                items[j] = items[j - 1];
                j--;
            }
            items[j] = x;
        }
        return;
    }
    Py_ssize_t mid = n / 2;
    merge_sort(items, tmp, mid, by_end);
    merge_sort(items + mid, tmp, n - mid, by_end);
    if (!(time_key(items[mid], by_end) < time_key(items[mid - 1], by_end))) {
        return; /* already in order */
    }
    memcpy(tmp, items, (size_t)mid * sizeof(PyObject *));
    Py_ssize_t i = 0, j = mid, k = 0;
    while (i < mid && j < n) {
        /* the right one first only when strictly earlier: stable */
        if (time_key(items[j], by_end) < time_key(tmp[i], by_end)) {
            items[k++] = items[j++];
        }
        else {
            items[k++] = tmp[i++];
        }
    }
    while (i < mid) {
        items[k++] = tmp[i++];
    }
}

static int
sort_bucket(PyObject *bucket, int by_end)
{
    Py_ssize_t n = PyList_GET_SIZE(bucket);
    if (n < 2) {
        return 0;
    }
    PyObject **tmp = PyMem_Malloc((size_t)(n / 2 + 1) * sizeof(PyObject *));
    if (tmp == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    merge_sort(((PyListObject *)bucket)->ob_item, tmp, n, by_end);
    PyMem_Free(tmp);
    return 0;
}

static PyObject *
tq_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"by_end", NULL};
    int by_end;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "p:TimeQueue", kwlist, &by_end)) {
        return NULL;
    }
    TimeQueue *self = (TimeQueue *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->by_end = by_end;
    if ((self->buckets = PyDict_New()) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
tq_clear(TimeQueue *self)
{
    self->last_bucket = NULL;
    Py_CLEAR(self->buckets);
    return 0;
}

static int
tq_traverse(TimeQueue *self, visitproc visit, void *arg)
{
    Py_VISIT(self->buckets);
    return 0;
}

static void
tq_dealloc(TimeQueue *self)
{
    PyObject_GC_UnTrack(self);
    tq_clear(self);
    PyMem_Free(self->heap);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
tq_length(TimeQueue *self)
{
    return self->n;
}

/* push(rec, t): queue a Pending record whose key (its start or end) is ``t``. */
/* Queue ``rec`` (a Pending) at ``t`` (finite); -1 with an exception (MemoryError). */
static int
tq_push_rec(TimeQueue *self, PyObject *rec, double t)
{
    double f = floor(t);
    int64_t second = f >= (double)SECOND_MAX    ? SECOND_MAX
                     : f <= -(double)SECOND_MAX ? -SECOND_MAX
                                                : (int64_t)f;
    PyObject *bucket = self->last_bucket;
    if (bucket == NULL || self->last_second != second) {
        PyObject *key = PyLong_FromLongLong(second);
        if (key == NULL) {
            return -1;
        }
        bucket = PyDict_GetItemWithError(self->buckets, key); /* borrowed */
        if (bucket == NULL) {
            if (PyErr_Occurred() || heap_reserve(self) < 0 ||
                (bucket = PyList_New(0)) == NULL) {
                Py_DECREF(key);
                return -1;
            }
            int bad = PyDict_SetItem(self->buckets, key, bucket) < 0;
            Py_DECREF(bucket); /* the dict holds it */
            if (bad) {
                Py_DECREF(key);
                return -1;
            }
            heap_push(self, second);
        }
        Py_DECREF(key);
        self->last_second = second;
        self->last_bucket = bucket;
    }
    if (PyList_Append(bucket, rec) < 0) {
        return -1;
    }
    self->n++;
    return 0;
}

static PyObject *
tq_push(TimeQueue *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "push(rec, t)");
        return NULL;
    }
    PyObject *rec = args[0];
    if (!Py_IS_TYPE(rec, &PendingType)) {
        PyErr_Format(PyExc_TypeError, "TimeQueue holds Pending records, not %.100s",
                     Py_TYPE(rec)->tp_name);
        return NULL;
    }
    double t = PyFloat_AsDouble(args[1]);
    if (t == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (isnan(t)) { /* as math.floor */
        PyErr_SetString(PyExc_ValueError, "cannot convert float NaN to integer");
        return NULL;
    }
    if (isinf(t)) {
        PyErr_SetString(PyExc_OverflowError, "cannot convert float infinity to integer");
        return NULL;
    }
    if (tq_push_rec(self, rec, t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Remove the heap's top bucket, ``bucket`` under ``key``, from the dict and the heap. */
static int
drop_top(TimeQueue *self, PyObject *key, PyObject *bucket)
{
    if (bucket == self->last_bucket) {
        self->last_bucket = NULL;
    }
    heap_pop(self);
    return PyDict_DelItem(self->buckets, key); /* present: an int's hash cannot fail */
}

/* Records with key < t (``through`` 0) or <= t (1), in order, removed. */
static PyObject *
tq_take(TimeQueue *self, PyObject *arg, int through)
{
    double t = PyFloat_AsDouble(arg);
    if (t == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL || isnan(t)) { /* nothing is before NaN, as in Python */
        return out;
    }
    /* The first bucket's second <= t; the -2^62 bucket may hold any earlier time. */
    Py_ssize_t removed = 0; /* records taken out of the buckets (in ``out``) */
    while (self->heap_n > 0 && (self->heap[0] == -SECOND_MAX || (double)self->heap[0] <= t)) {
        int64_t second = self->heap[0];
        PyObject *key = PyLong_FromLongLong(second);
        if (key == NULL) {
            goto fail;
        }
        PyObject *bucket = PyDict_GetItemWithError(self->buckets, key); /* borrowed */
        if (bucket == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_SystemError, "TimeQueue: a second without its bucket");
            }
            Py_DECREF(key);
            goto fail;
        }
        if (sort_bucket(bucket, self->by_end) < 0) {
            Py_DECREF(key);
            goto fail;
        }
        Py_ssize_t size = PyList_GET_SIZE(bucket), lo = size;
        /* Every record of [second, second + 1) is before t: the bucket goes whole. Past
         * 2^53 s second + 1 is no double, and the end buckets hold more than a second: those
         * are cut by bisection. */
        int whole =
            second > -EXACT_SECONDS && second < EXACT_SECONDS && (double)(second + 1) <= t;
        if (!whole) {
            PyObject **items = ((PyListObject *)bucket)->ob_item;
            Py_ssize_t low = 0, high = size; /* bisect_right (through) or bisect_left */
            while (low < high) {
                Py_ssize_t mid = (low + high) / 2;
                double k = time_key(items[mid], self->by_end);
                if (through ? t < k : !(k < t)) {
                    high = mid;
                }
                else {
                    low = mid + 1;
                }
            }
            lo = low;
        }
        Py_ssize_t at = PyList_GET_SIZE(out);
        PyObject *head = lo == size ? Py_NewRef(bucket) : PyList_GetSlice(bucket, 0, lo);
        if (head == NULL || PyList_SetSlice(out, at, at, head) < 0) {
            Py_XDECREF(head);
            Py_DECREF(key);
            goto fail;
        }
        Py_DECREF(head);
        int bad = lo == size ? drop_top(self, key, bucket) : PyList_SetSlice(bucket, 0, lo, NULL);
        Py_DECREF(key);
        if (bad < 0) {
            /* still in the bucket: not taken after all */
            PyList_SetSlice(out, at, PyList_GET_SIZE(out), NULL);
            goto fail;
        }
        removed += lo;
        if (lo < size) {
            break; /* the rest of the bucket is at or after t, and every later bucket */
        }
        /* emptied: the next bucket is after t unless this one was an end bucket */
    }
    self->n -= removed;
    return out;
fail:
    self->n -= removed; /* taken out of the buckets, lost with ``out`` (as in Python) */
    Py_DECREF(out);
    return NULL;
}

static PyObject *
tq_take_through(TimeQueue *self, PyObject *t)
{
    return tq_take(self, t, 1);
}

static PyObject *
tq_take_before(TimeQueue *self, PyObject *t)
{
    return tq_take(self, t, 0);
}

/* Forget finished records (``done``); empty buckets go. */
static PyObject *
tq_drop_done(TimeQueue *self, PyObject *unused)
{
    PyObject *kept = PyDict_New();
    if (kept == NULL) {
        return NULL;
    }
    Py_ssize_t pos = 0, n = 0;
    PyObject *key, *bucket;
    while (PyDict_Next(self->buckets, &pos, &key, &bucket)) {
        Py_ssize_t size = PyList_GET_SIZE(bucket), live = 0;
        for (Py_ssize_t i = 0; i < size; i++) {
            live += !((Pending *)PyList_GET_ITEM(bucket, i))->done;
        }
        if (live == 0) {
            continue;
        }
        PyObject *fresh = PyList_New(live);
        if (fresh == NULL) {
            goto fail;
        }
        for (Py_ssize_t i = 0, j = 0; i < size; i++) {
            PyObject *rec = PyList_GET_ITEM(bucket, i);
            if (!((Pending *)rec)->done) {
                PyList_SET_ITEM(fresh, j++, Py_NewRef(rec));
            }
        }
        int bad = PyDict_SetItem(kept, key, fresh) < 0;
        Py_DECREF(fresh);
        if (bad) {
            goto fail;
        }
        n += live;
    }
    /* The heap, pushed again from the kept buckets' seconds. */
    Py_ssize_t count = PyDict_GET_SIZE(kept);
    if (count > self->heap_cap) {
        int64_t *heap = PyMem_Realloc(self->heap, (size_t)count * sizeof(int64_t));
        if (heap == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        self->heap = heap;
        self->heap_cap = count;
    }
    pos = 0;
    self->heap_n = 0;
    while (PyDict_Next(kept, &pos, &key, &bucket)) {
        heap_push(self, (int64_t)PyLong_AsLongLong(key)); /* capacity reserved above */
    }
    Py_SETREF(self->buckets, kept);
    self->last_bucket = NULL;
    self->n = n;
    Py_RETURN_NONE;
fail:
    Py_DECREF(kept);
    return NULL;
}

static PyObject *
tq_sizeof(TimeQueue *self, PyObject *unused)
{
    return PyLong_FromSize_t(sizeof(TimeQueue) + (size_t)self->heap_cap * sizeof(int64_t));
}

static PyMethodDef tq_methods[] = {
    {"push", (PyCFunction)(void (*)(void))tq_push, METH_FASTCALL,
     "push(rec, t): queue a Pending record whose key (start or end) is t."},
    {"take_through", (PyCFunction)tq_take_through, METH_O,
     "take_through(t) -> list: records with key <= t, in order, removed."},
    {"take_before", (PyCFunction)tq_take_before, METH_O,
     "take_before(t) -> list: records with key < t, in order, removed."},
    {"drop_done", (PyCFunction)tq_drop_done, METH_NOARGS, "drop_done(): forget done records."},
    {"__sizeof__", (PyCFunction)tq_sizeof, METH_NOARGS, "bytes held, without the buckets"},
    {NULL},
};

static PySequenceMethods tq_as_sequence = {
    .sq_length = (lenfunc)tq_length,
};

static PyTypeObject TimeQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "jouled.attribution._pending.TimeQueue",
    .tp_basicsize = sizeof(TimeQueue),
    .tp_dealloc = (destructor)tq_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Pending records by start or end, a calendar of one-second buckets "
              "(see jouled/attribution/_pending.c).",
    .tp_traverse = (traverseproc)tq_traverse,
    .tp_clear = (inquiry)tq_clear,
    .tp_as_sequence = &tq_as_sequence,
    .tp_methods = tq_methods,
    .tp_new = tq_new,
};

/* ---- finish_all --------------------------------------------------------------------- */

/* SettledRequest's fields in its dataclass order (jouled/attribution/spans.py), and their
 * slot offsets in the type last seen (one type in practice). */
enum { N_SETTLED = 8 };
static const char *const SETTLED_FIELDS[N_SETTLED] = {
    "workload", "model",  "energy_j",     "gflops",
    "duration_s", "route", "input_tokens", "output_tokens",
};
static PyTypeObject *settled_type = NULL;
static Py_ssize_t settled_offsets[N_SETTLED];

/* The slot offsets of ``fields`` in ``type`` (each an object slot: a ``slots=True``
 * dataclass's), kept with the type in ``*cached``; -1 with TypeError otherwise. */
static int
learn_slots(PyObject *type, const char *const *fields, int n, Py_ssize_t *offsets,
            PyTypeObject **cached, const char *who)
{
    if (!PyType_Check(type)) {
        PyErr_Format(PyExc_TypeError, "%s: a type is needed", who);
        return -1;
    }
    if ((PyTypeObject *)type == *cached) {
        return 0;
    }
    Py_ssize_t learned[16]; /* kept only when every field is a slot */
    if (n > 16) {
        PyErr_Format(PyExc_SystemError, "%s: too many fields", who);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        PyObject *d = PyObject_GetAttrString(type, fields[i]);
        if (d == NULL && !PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        int ok = d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
        if (ok) {
            learned[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        }
        Py_XDECREF(d);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s: %s.%s is not an object slot", who,
                         ((PyTypeObject *)type)->tp_name, fields[i]);
            return -1;
        }
    }
    memcpy(offsets, learned, (size_t)n * sizeof(Py_ssize_t));
    Py_XSETREF(*cached, (PyTypeObject *)Py_NewRef(type));
    return 0;
}

static int
learn_settled(PyObject *type, const char *who)
{
    return learn_slots(type, SETTLED_FIELDS, N_SETTLED, settled_offsets, &settled_type, who);
}

/* A SettledRequest of the record, which hands over its energy (None: a new empty dict). */
static PyObject *
settled_of(Pending *rec)
{
    PyObject *values[N_SETTLED] = {
        Py_NewRef(PyTuple_GET_ITEM(rec->labels, 0)),
        Py_NewRef(PyTuple_GET_ITEM(rec->labels, 1)),
        rec->energy_j != Py_None ? Py_NewRef(rec->energy_j) : PyDict_New(),
        gflops_object(rec),
        PyFloat_FromDouble(rec->end - rec->start),
        Py_NewRef(PyTuple_GET_ITEM(rec->labels, 2)),
        tokens_object(rec->input_tokens),
        tokens_object(rec->output_tokens),
    };
    PyObject *settled = NULL;
    for (int i = 0; i < N_SETTLED; i++) {
        if (values[i] == NULL) {
            goto fail;
        }
    }
    settled = settled_type->tp_alloc(settled_type, 0);
    if (settled == NULL) {
        goto fail;
    }
    for (int i = 0; i < N_SETTLED; i++) {
        *(PyObject **)((char *)settled + settled_offsets[i]) = values[i]; /* stolen */
    }
    Py_SETREF(rec->energy_j, Py_NewRef(Py_None)); /* handed over, not kept */
    return settled;
fail:
    for (int i = 0; i < N_SETTLED; i++) {
        Py_XDECREF(values[i]);
    }
    return NULL;
}

static PyObject *s_active, *s_n_pending;

/* One record's step of ``SpanSplitter._finish_all`` (its docstring has the rule): done, out
 * of its workload's count (and FIFO with the count's last), out of the id index where it
 * is the one there, out of its lane's active set; its SettledRequest appended. */
static int
finish_one(Pending *rec, IdIndex *by_id, PyObject *count, PyObject *fifo, PyObject *lanes,
           PyObject *out)
{
    rec->done = 1;
    PyObject *workload = PyTuple_GET_ITEM(rec->labels, 0);
    PyObject *held = PyDict_GetItemWithError(count, workload); /* borrowed */
    if (held == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, workload);
        }
        return -1;
    }
    long long left = PyLong_AsLongLong(held);
    if (left == -1 && PyErr_Occurred()) {
        return -1;
    }
    left -= 1;
    if (left) {
        PyObject *n = PyLong_FromLongLong(left);
        int bad = n == NULL || PyDict_SetItem(count, workload, n) < 0;
        Py_XDECREF(n);
        if (bad) {
            return -2;
        }
    }
    else if (PyDict_DelItem(count, workload) < 0 || PyDict_DelItem(fifo, workload) < 0) {
        return -2;
    }
    if (rec->dedup) {
        Py_ssize_t i = find_slot(by_id, (int64_t)rec->dedup);
        if (i >= 0 && by_id->values[i] == (PyObject *)rec) {
            delete_slot(by_id, i); /* the index's reference; the caller holds another */
        }
    }
    PyObject *lane = PyDict_GetItemWithError(lanes, workload); /* borrowed */
    if (lane == NULL && PyErr_Occurred()) {
        return -2;
    }
    if (lane != NULL) {
        PyObject *active = PyObject_GetAttr(lane, s_active);
        if (active == NULL) {
            return -2;
        }
        int bad = 0;
        if (PyDict_Check(active)) {
            int has = PyDict_Contains(active, (PyObject *)rec);
            bad = has < 0 || (has && PyDict_DelItem(active, (PyObject *)rec) < 0);
        }
        else {
            PyErr_SetString(PyExc_TypeError, "finish_all: a lane's active set must be a dict");
            bad = 1;
        }
        Py_DECREF(active);
        if (bad) {
            return -2;
        }
    }
    PyObject *settled = settled_of(rec);
    if (settled == NULL) {
        return -2;
    }
    int bad = PyList_Append(out, settled);
    Py_DECREF(settled);
    return bad < 0 ? -2 : 0;
}

/* finish_all(splitter, recs, by_id, count, fifo, lanes, requests, settled_type) -> None:
 * ``SpanSplitter._finish_all`` for compiled records and a RecordIndex, in one C loop; the
 * splitter's ``_n_pending`` drops by the records finished (also when an error stops it
 * midway, as the Python loop's per-record ``_unqueue`` leaves it). */
static PyObject *
py_finish_all(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "finish_all(splitter, recs, by_id, count, fifo, lanes, requests, type)");
        return NULL;
    }
    PyObject *splitter = args[0], *by_id = args[2], *count = args[3], *fifo = args[4];
    PyObject *lanes = args[5], *out = args[6];
    if (!PyObject_TypeCheck(by_id, &RecordIndexType) || !PyDict_Check(count) ||
        !PyDict_Check(fifo) || !PyDict_Check(lanes) || !PyList_Check(out)) {
        PyErr_SetString(PyExc_TypeError,
                        "finish_all: a RecordIndex, three dicts and a list are needed");
        return NULL;
    }
    if (learn_settled(args[7], "finish_all") < 0) {
        return NULL;
    }
    PyObject *recs = PySequence_Fast(args[1], "finish_all: recs must be a sequence");
    if (recs == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(recs), done = 0;
    PyObject **items = PySequence_Fast_ITEMS(recs);
    for (Py_ssize_t i = 0; i < n; i++) { /* all or nothing for a record of another type */
        if (!Py_IS_TYPE(items[i], &PendingType)) {
            PyErr_Format(PyExc_TypeError, "finish_all takes Pending records, not %.100s",
                         Py_TYPE(items[i])->tp_name);
            Py_DECREF(recs);
            return NULL;
        }
    }
    int bad = 0;
    for (Py_ssize_t i = 0; i < n && !bad; i++) {
        int got = finish_one((Pending *)items[i], (IdIndex *)by_id, count, fifo, lanes, out);
        bad = got < 0;
        done += got != -1; /* out of the count even when a later step failed, as in Python */
    }
    Py_DECREF(recs);
    /* splitter._n_pending -= done, keeping an error of the loop */
    PyObject *exc_type = NULL, *exc = NULL, *tb = NULL;
    if (bad) {
        PyErr_Fetch(&exc_type, &exc, &tb);
    }
    PyObject *pending = PyObject_GetAttr(splitter, s_n_pending);
    PyObject *finished = PyLong_FromSsize_t(done);
    PyObject *left =
        pending != NULL && finished != NULL ? PyNumber_Subtract(pending, finished) : NULL;
    Py_XDECREF(pending);
    Py_XDECREF(finished);
    int set_bad = left == NULL || PyObject_SetAttr(splitter, s_n_pending, left) < 0;
    Py_XDECREF(left);
    if (bad) {
        PyErr_Restore(exc_type, exc, tb);
        return NULL;
    }
    if (set_bad) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------------
 * add_all: RequestJoiner.add for a batch, the common case in C.
 *
 * The common case is a span with a trace and span id (exact, non-empty strs; an exact str
 * parent id) whose trace the joiner holds nothing of, that ``SpanSplitter.admit`` accepts
 * as new (valid, not late, not a resend, under the pending cap) for a workload with spans
 * pending and a lane already, and that the joiner remembers as its record in a forget
 * second it has a slot for, under ``max_requests``. Such a span is done here exactly as
 * ``add`` does it (the same containers, in the same order). Any other span goes to
 * ``other(span)`` (the stage's per-span step, which calls ``add``), in its place in the
 * batch, with the counters written back before and read again after.
 */

static PyObject *s_frontier, *s_ticks, *s_max_pending, *s_by_id, *s_ends, *s_lanes, *s_fifo,
    *s_count, *s_by_trace, *s_size, *s_max_requests, *s_memory_s, *s_expiry, *s_waiting,
    *s_lone, *s_w0, *s_append, *s_popleft, *s_trace_id, *s_span_id, *s_parent_id;

typedef struct {
    PyObject *splitter, *joiner;    /* borrowed */
    IdIndex *by_id, *by_trace;      /* new references, as the rest */
    TimeQueue *ends;
    PyObject *lanes, *fifo, *count, *expiry;
    double frontier, oldest, memory_s;
    int has_oldest;
    Py_ssize_t n_pending, max_pending, size, max_requests;
    double last_due;                /* the forget second of the last span, and its slots */
    PyObject *last_lone;            /* NULL: none */
} Admit;

/* ``obj.name`` as a Py_ssize_t (an int; clamped at the type's range) or a double; -1 with an
 * error. */
static int
attr_ssize(PyObject *obj, PyObject *name, Py_ssize_t *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) {
        return -1;
    }
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "add_all: %U must be an int, not %.100s", name,
                     Py_TYPE(v)->tp_name);
        Py_DECREF(v);
        return -1;
    }
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
    Py_DECREF(v);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = overflow > 0 ? PY_SSIZE_T_MAX : overflow < 0 ? PY_SSIZE_T_MIN : (Py_ssize_t)n;
    return 0;
}

static int
attr_double(PyObject *obj, PyObject *name, double *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) {
        return -1;
    }
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* The counters and the oldest open tick, read (again: ``other`` changes them). */
static int
admit_read(Admit *a)
{
    Py_CLEAR(a->last_lone); /* ``other`` may have forgotten a second's slots */
    if (attr_ssize(a->splitter, s_n_pending, &a->n_pending) < 0 ||
        attr_ssize(a->joiner, s_size, &a->size) < 0 ||
        attr_double(a->splitter, s_frontier, &a->frontier) < 0) {
        return -1;
    }
    PyObject *ticks = PyObject_GetAttr(a->splitter, s_ticks);
    if (ticks == NULL) {
        return -1;
    }
    Py_ssize_t n = PyObject_Length(ticks);
    a->has_oldest = n > 0;
    int bad = n < 0;
    if (n > 0) {
        PyObject *first = PySequence_GetItem(ticks, 0);
        bad = first == NULL || attr_double(first, s_w0, &a->oldest) < 0;
        Py_XDECREF(first);
    }
    Py_DECREF(ticks);
    return bad ? -1 : 0;
}

static int
set_ssize(PyObject *obj, PyObject *name, Py_ssize_t value)
{
    PyObject *v = PyLong_FromSsize_t(value);
    int bad = v == NULL || PyObject_SetAttr(obj, name, v) < 0;
    Py_XDECREF(v);
    return bad ? -1 : 0;
}

/* Write the counters back (keeping an error already set). */
static int
admit_write(Admit *a)
{
    PyObject *exc_type, *exc, *tb;
    PyErr_Fetch(&exc_type, &exc, &tb);
    int bad = set_ssize(a->splitter, s_n_pending, a->n_pending) < 0 ||
              set_ssize(a->joiner, s_size, a->size) < 0;
    if (exc_type != NULL) {
        if (bad) {
            PyErr_Clear();
        }
        PyErr_Restore(exc_type, exc, tb);
        return -1;
    }
    return bad ? -1 : 0;
}

/* ``span.name`` when it is an exact str (non-empty unless ``empty_ok``), its hash in *hash;
 * NULL (no error) otherwise. */
static PyObject *
id_attr(PyObject *span, PyObject *name, int empty_ok, Py_hash_t *hash)
{
    PyObject *v = fast_attr(span, name);
    if (v == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (!PyUnicode_CheckExact(v) || (!empty_ok && PyUnicode_GET_LENGTH(v) == 0)) {
        Py_DECREF(v);
        return NULL;
    }
    *hash = PyObject_Hash(v); /* an exact str's: cannot fail */
    return v;
}

/* hash((workload, trace_key, span_key)): the splitter's dedup key; -1 with an error. */
static Py_hash_t
dedup_of(PyObject *workload, Py_hash_t trace_key, Py_hash_t span_key)
{
    PyObject *t = PyLong_FromSsize_t(trace_key), *s = PyLong_FromSsize_t(span_key);
    PyObject *tuple = t != NULL && s != NULL ? PyTuple_Pack(3, workload, t, s) : NULL;
    Py_XDECREF(t);
    Py_XDECREF(s);
    if (tuple == NULL) {
        return -1;
    }
    Py_hash_t h = PyObject_Hash(tuple);
    Py_DECREF(tuple);
    return h;
}

/* ``rec`` to the back of its workload's FIFO as ``SpanSplitter._queue`` does it (finished
 * records at the front go first; a FIFO of mostly finished ones is rebuilt); ``held`` is the
 * workload's count before. -1 with an error. */
static int
admit_queue(Admit *a, PyObject *fifo, PyObject *workload, Pending *rec, Py_ssize_t held)
{
    PyObject *count = PyLong_FromSsize_t(held + 1);
    int bad = count == NULL || PyDict_SetItem(a->count, workload, count) < 0;
    Py_XDECREF(count);
    if (bad) {
        return -1;
    }
    a->n_pending++;
    for (;;) {
        Py_ssize_t n = PyObject_Length(fifo);
        if (n < 0) {
            return -1;
        }
        if (n == 0) {
            break;
        }
        PyObject *first = PySequence_GetItem(fifo, 0);
        if (first == NULL) {
            return -1;
        }
        int done = Py_IS_TYPE(first, &PendingType) && ((Pending *)first)->done;
        Py_DECREF(first);
        if (!done) {
            break;
        }
        PyObject *gone = PyObject_CallMethodNoArgs(fifo, s_popleft);
        if (gone == NULL) {
            return -1;
        }
        Py_DECREF(gone);
    }
    PyObject *got = PyObject_CallMethodOneArg(fifo, s_append, (PyObject *)rec);
    if (got == NULL) {
        return -1;
    }
    Py_DECREF(got);
    Py_ssize_t n = PyObject_Length(fifo);
    if (n < 0) {
        return -1;
    }
    if (n <= 2 * (held + 1) + 1024) {
        return 0;
    }
    /* Spans finished in place leave entries behind: deque(r for r in fifo if not r.done) */
    PyObject *live = PyList_New(0), *it = PyObject_GetIter(fifo), *item = NULL;
    bad = live == NULL || it == NULL;
    while (!bad && (item = PyIter_Next(it)) != NULL) {
        PyObject *done = PyObject_GetAttrString(item, "done");
        int finished = done == NULL ? -1 : PyObject_IsTrue(done);
        Py_XDECREF(done);
        bad = finished < 0 || (!finished && PyList_Append(live, item) < 0);
        Py_DECREF(item);
    }
    bad = bad || PyErr_Occurred();
    PyObject *rebuilt = bad ? NULL : PyObject_CallOneArg((PyObject *)Py_TYPE(fifo), live);
    bad = rebuilt == NULL || PyDict_SetItem(a->fifo, workload, rebuilt) < 0;
    Py_XDECREF(rebuilt);
    Py_XDECREF(it);
    Py_XDECREF(live);
    return bad ? -1 : 0;
}

/* The common case for ``span``: 1 when done, 0 when it is not the common case (nothing
 * changed), -1 with an error. */
static int
admit_one(Admit *a, PyObject *span)
{
    Py_hash_t trace_key = 0, span_key = 0, parent_key = 0;
    PyObject *trace_id = id_attr(span, s_trace_id, 0, &trace_key);
    PyObject *span_id = trace_id ? id_attr(span, s_span_id, 0, &span_key) : NULL;
    PyObject *parent_id = span_id ? id_attr(span, s_parent_id, 1, &parent_key) : NULL;
    Py_XDECREF(trace_id);
    Py_XDECREF(span_id);
    Py_XDECREF(parent_id);
    if (parent_id == NULL || find_slot(a->by_trace, (int64_t)trace_key) >= 0) {
        return 0;
    }
    /* Times and work as exact floats (None for no work): ``admit`` checks the values it is
     * given, which for other numbers (ints past 2^53, objects with __float__) may differ
     * from the doubles the record holds. */
    PyObject *numbers[3] = {fast_attr(span, s_start), fast_attr(span, s_end),
                            fast_attr(span, s_gflops)};
    int exact = numbers[0] != NULL && numbers[1] != NULL && numbers[2] != NULL &&
                PyFloat_CheckExact(numbers[0]) && PyFloat_CheckExact(numbers[1]) &&
                (numbers[2] == Py_None || PyFloat_CheckExact(numbers[2]));
    for (int i = 0; i < 3; i++) {
        Py_XDECREF(numbers[i]);
    }
    if (!exact) {
        PyErr_Clear();
        return 0;
    }
    PyObject *made = pending_from(&PendingType, span, 0, span_key, parent_key);
    if (made == NULL) { /* values the record cannot hold: ``add`` says so */
        PyErr_Clear();
        return 0;
    }
    Pending *rec = (Pending *)made;
    PyObject *workload = PyTuple_GET_ITEM(rec->labels, 0);
    PyObject *waiting = NULL, *lone = NULL;
    int result = 0;
    double start = rec->start, end = rec->end;
    if (!(-INFINITY < start && start <= end && end < INFINITY) ||
        (rec->has_gflops && !(rec->gflops >= 0 && rec->gflops < INFINITY)) ||
        start < a->frontier ||
        (a->has_oldest && (end < a->oldest || (end == a->oldest && end > start))) ||
        a->n_pending >= a->max_pending || a->size >= a->max_requests) {
        goto out; /* invalid, late, or a cap to act on: ``add`` */
    }
    Py_hash_t dedup = dedup_of(workload, trace_key, span_key);
    if (dedup == -1) {
        PyErr_Clear();
        goto out;
    }
    if (dedup == 0 || find_slot(a->by_id, (int64_t)dedup) >= 0) {
        goto out; /* a resend (or a key of 0, which the splitter takes as no ids) */
    }
    PyObject *fifo = PyDict_GetItemWithError(a->fifo, workload);    /* borrowed */
    PyObject *held_obj = fifo ? PyDict_GetItemWithError(a->count, workload) : NULL;
    Py_ssize_t held = held_obj && PyLong_CheckExact(held_obj) ? PyLong_AsSsize_t(held_obj) : -1;
    if (held < 0) {
        PyErr_Clear();
        goto out; /* the workload's first pending span: ``add`` makes its FIFO */
    }
    if (end > start) {
        PyObject *lane = PyDict_GetItemWithError(a->lanes, workload); /* borrowed */
        waiting = lane ? PyObject_GetAttr(lane, s_waiting) : NULL;
        if (waiting == NULL || !Py_IS_TYPE(waiting, &TimeQueueType)) {
            PyErr_Clear();
            goto out;
        }
    }
    double due = ceil(end + a->memory_s);
    if (!isfinite(due)) {
        goto out;
    }
    if (a->last_lone != NULL && a->last_due == due) {
        lone = Py_NewRef(a->last_lone);
    }
    else {
        PyObject *key = PyLong_FromDouble(due);
        PyObject *slots = key ? PyDict_GetItemWithError(a->expiry, key) : NULL; /* borrowed */
        Py_XDECREF(key);
        lone = slots ? PyObject_GetAttr(slots, s_lone) : NULL;
        if (lone == NULL) {
            PyErr_Clear();
            goto out; /* a new forget second: ``add`` makes its slots */
        }
        Py_XSETREF(a->last_lone, Py_NewRef(lone));
        a->last_due = due;
    }
    /* From here on it is admitted: the order of ``admit`` and ``add``. */
    result = -1;
    rec->dedup = dedup;
    if (admit_queue(a, fifo, workload, rec, held) < 0 ||
        index_put(a->by_id, (int64_t)dedup, made) < 0 || tq_push_rec(a->ends, made, end) < 0 ||
        (waiting != NULL && tq_push_rec((TimeQueue *)waiting, made, start) < 0) ||
        index_put(a->by_trace, (int64_t)trace_key, made) < 0) {
        goto out;
    }
    PyObject *key = PyLong_FromSsize_t(trace_key);
    PyObject *got = key ? PyObject_CallMethodOneArg(lone, s_append, key) : NULL;
    Py_XDECREF(key);
    if (got == NULL) {
        goto out;
    }
    Py_DECREF(got);
    a->size++;
    result = 1;
out:
    Py_XDECREF(waiting);
    Py_XDECREF(lone);
    Py_DECREF(made);
    return result;
}

static void
admit_clear(Admit *a)
{
    Py_CLEAR(a->by_id);
    Py_CLEAR(a->by_trace);
    Py_CLEAR(a->ends);
    Py_CLEAR(a->lanes);
    Py_CLEAR(a->fifo);
    Py_CLEAR(a->count);
    Py_CLEAR(a->expiry);
    Py_CLEAR(a->last_lone);
}

/* The containers and the settings; 0: they are not the compiled ones (the caller runs
 * ``other`` for every span), -1 with an error. */
static int
admit_open(Admit *a)
{
    a->by_id = (IdIndex *)PyObject_GetAttr(a->splitter, s_by_id);
    a->ends = a->by_id ? (TimeQueue *)PyObject_GetAttr(a->splitter, s_ends) : NULL;
    a->by_trace = a->ends ? (IdIndex *)PyObject_GetAttr(a->joiner, s_by_trace) : NULL;
    if (a->by_trace == NULL) {
        return -1;
    }
    if (!Py_IS_TYPE(a->by_id, &RecordIndexType) || !Py_IS_TYPE(a->ends, &TimeQueueType) ||
        !Py_IS_TYPE(a->by_trace, &IdIndexType)) {
        return 0;
    }
    if ((a->lanes = PyObject_GetAttr(a->splitter, s_lanes)) == NULL ||
        (a->fifo = PyObject_GetAttr(a->splitter, s_fifo)) == NULL ||
        (a->count = PyObject_GetAttr(a->splitter, s_count)) == NULL ||
        (a->expiry = PyObject_GetAttr(a->joiner, s_expiry)) == NULL ||
        attr_ssize(a->splitter, s_max_pending, &a->max_pending) < 0 ||
        attr_ssize(a->joiner, s_max_requests, &a->max_requests) < 0 ||
        attr_double(a->joiner, s_memory_s, &a->memory_s) < 0) {
        return -1;
    }
    if (!PyDict_CheckExact(a->lanes) || !PyDict_CheckExact(a->fifo) ||
        !PyDict_CheckExact(a->count) || !PyDict_CheckExact(a->expiry)) {
        return 0;
    }
    return admit_read(a) < 0 ? -1 : 1;
}

static PyObject *
py_add_all(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "add_all(spans, splitter, joiner, other)");
        return NULL;
    }
    PyObject *spans = PySequence_Fast(args[0], "add_all: spans must be a sequence");
    if (spans == NULL) {
        return NULL;
    }
    Admit a = {.splitter = args[1], .joiner = args[2]};
    PyObject *other = args[3];
    Py_ssize_t lone = 0;
    int fast = admit_open(&a), bad = fast < 0;
    /* dirty: counters changed here and not yet written back (once written, before
     * ``other`` runs, the attributes are the truth: ``other`` may change them and fail) */
    int dirty = 0;
    /* PySequence_Fast's items may move when ``other`` changes a list: index it each time */
    for (Py_ssize_t i = 0; !bad && i < PySequence_Fast_GET_SIZE(spans); i++) {
        PyObject *span = Py_NewRef(PySequence_Fast_GET_ITEM(spans, i));
        int got = fast > 0 ? admit_one(&a, span) : 0;
        if (got == 0) {
            bad = fast > 0 && dirty && admit_write(&a) < 0;
            dirty = 0;
            PyObject *r = bad ? NULL : PyObject_CallOneArg(other, span);
            bad = r == NULL || (fast > 0 && admit_read(&a) < 0);
            Py_XDECREF(r);
        }
        else {
            dirty = 1; /* a failed step may have counted its record already */
            bad = got < 0;
            lone += got > 0;
        }
        Py_DECREF(span);
    }
    if (fast > 0 && dirty && admit_write(&a) < 0) {
        bad = 1;
    }
    admit_clear(&a);
    Py_DECREF(spans);
    return bad ? NULL : PyLong_FromSsize_t(lone);
}

/* ------------------------------------------------------------------------------------------
 * The split of a tick over a workload's open records (SpanSplitter._settle_tick's step):
 * ``rates`` packs what ``split_fractions`` reads of each record, ``share_out`` gives each
 * record its fraction of the tick's energy. Both answer None/False, changing nothing, for
 * input they do not take (the caller runs its Python loop).
 */

/* rates(active) -> bytes | None: per record the doubles (start, end, rate, has_rate), rate
 * = gflops / (end - start) GFLOPs a second (0.0 for a span of no length), has_rate 1.0 when
 * it has gflops (then 0.0 and 0.0 without): ``split_fractions``'s packed input, 32 bytes a
 * record where a tuple of three floats and a bool took ~150. None when a record is not a
 * Pending. */
static PyObject *
py_rates(PyObject *module, PyObject *active)
{
    if (!PyList_CheckExact(active)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyList_GET_SIZE(active);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!Py_IS_TYPE(PyList_GET_ITEM(active, i), &PendingType)) {
            Py_RETURN_NONE;
        }
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 4 * (Py_ssize_t)sizeof(double));
    if (out == NULL) {
        return NULL;
    }
    double *d = (double *)PyBytes_AS_STRING(out); /* bytes data is aligned for a double */
    for (Py_ssize_t i = 0; i < n; i++) {
        Pending *r = (Pending *)PyList_GET_ITEM(active, i);
        d[4 * i] = r->start;
        d[4 * i + 1] = r->end;
        if (r->has_gflops) {
            d[4 * i + 2] = r->end > r->start ? r->gflops / (r->end - r->start) : 0.0;
            d[4 * i + 3] = 1.0;
        }
        else {
            d[4 * i + 2] = d[4 * i + 3] = 0.0;
        }
    }
    return out;
}

/* share_out(active, fractions, parts) -> bool: each record of ``active`` whose fraction is
 * above 0 gets ``joules * fraction`` of each (component, joules) of ``parts``: a new dict
 * when it holds none (most records: their only tick), else added to what it holds, as the
 * Python loop does. False, changing nothing, unless ``active`` is a list of Pending records
 * holding None or a dict of str to float, ``fractions`` a list of floats as long, and
 * ``parts`` a list of (str, float) tuples. */
static PyObject *
py_share_out(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "share_out(active, fractions, parts)");
        return NULL;
    }
    PyObject *active = args[0], *fractions = args[1], *parts = args[2];
    if (!PyList_CheckExact(active) || !PyList_CheckExact(fractions) ||
        !PyList_CheckExact(parts) || PyList_GET_SIZE(active) != PyList_GET_SIZE(fractions)) {
        Py_RETURN_FALSE;
    }
    Py_ssize_t n = PyList_GET_SIZE(active), m = PyList_GET_SIZE(parts);
    for (Py_ssize_t k = 0; k < m; k++) {
        PyObject *t = PyList_GET_ITEM(parts, k);
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 2 ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(t, 0)) ||
            !PyFloat_CheckExact(PyTuple_GET_ITEM(t, 1))) {
            Py_RETURN_FALSE;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyList_GET_ITEM(active, i);
        if (!Py_IS_TYPE(r, &PendingType) || !PyFloat_CheckExact(PyList_GET_ITEM(fractions, i)) ||
            !(((Pending *)r)->energy_j == Py_None || PyDict_CheckExact(((Pending *)r)->energy_j))) {
            Py_RETURN_FALSE;
        }
        /* What a record holds: str keys and float values, so that the additions below run
         * no Python code (which could change the record under the loop). */
        PyObject *held = ((Pending *)r)->energy_j, *component, *value;
        Py_ssize_t pos = 0;
        while (held != Py_None && PyDict_Next(held, &pos, &component, &value)) {
            if (!PyUnicode_CheckExact(component) || !PyFloat_CheckExact(value)) {
                Py_RETURN_FALSE;
            }
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        double frac = PyFloat_AS_DOUBLE(PyList_GET_ITEM(fractions, i));
        if (!(frac > 0.0)) {
            continue;
        }
        Pending *rec = (Pending *)PyList_GET_ITEM(active, i);
        PyObject *got = rec->energy_j;
        int fresh = got == Py_None;
        if (fresh && (got = PyDict_New()) == NULL) {
            return NULL;
        }
        for (Py_ssize_t k = 0; k < m; k++) {
            PyObject *t = PyList_GET_ITEM(parts, k);
            PyObject *component = PyTuple_GET_ITEM(t, 0);
            double share = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(t, 1)) * frac;
            PyObject *v;
            PyObject *old = fresh ? NULL : PyDict_GetItemWithError(got, component); /* borrowed */
            if (old == NULL && PyErr_Occurred()) {
                v = NULL;
            }
            else if (old == NULL) { /* {c: share} when fresh, else got.get(c, 0.0) + share */
                v = PyFloat_FromDouble(fresh ? share : 0.0 + share);
            }
            else {
                v = PyFloat_FromDouble(PyFloat_AS_DOUBLE(old) + share); /* checked above */
            }
            if (v == NULL || PyDict_SetItem(got, component, v) < 0) {
                Py_XDECREF(v);
                if (fresh) {
                    Py_DECREF(got);
                }
                return NULL;
            }
            Py_DECREF(v);
        }
        if (fresh) {
            Py_SETREF(rec->energy_j, got);
        }
    }
    Py_RETURN_TRUE;
}

/* ------------------------------------------------------------------------------------------
 * book: the stage's booking of settled requests into its histograms (stage._book, the
 * Python twin, has the rule).
 */

/* _Histogram's slots (jouled/attribution/stage.py). */
enum { H_COUNTS, H_TOTAL, H_N, H_GFLOPS, H_INPUT, H_OUTPUT, N_HIST };
static const char *const HIST_FIELDS[N_HIST] = {
    "counts", "total", "n", "gflops", "input_tokens", "output_tokens",
};
static PyTypeObject *hist_type = NULL;
static Py_ssize_t hist_offsets[N_HIST];
static PyObject *math_fsum = NULL;

#define SLOT(obj, offsets, i) (*(PyObject **)((char *)(obj) + (offsets)[i]))
enum { S_WORKLOAD, S_MODEL, S_ENERGY, S_GFLOPS, S_DURATION, S_ROUTE, S_INPUT, S_OUTPUT };

/* ``slot = slot + add`` (a new reference stored); -1 with an error. */
static int
slot_add(PyObject **slot, PyObject *add)
{
    PyObject *sum = PyNumber_Add(*slot, add);
    if (sum == NULL) {
        return -1;
    }
    Py_SETREF(*slot, sum);
    return 0;
}

/* ``slot = slot + x`` for an exact float slot (else through PyNumber_Add). */
static int
slot_add_double(PyObject **slot, double x)
{
    if (PyFloat_CheckExact(*slot)) {
        PyObject *sum = PyFloat_FromDouble(PyFloat_AS_DOUBLE(*slot) + x);
        if (sum == NULL) {
            return -1;
        }
        Py_SETREF(*slot, sum);
        return 0;
    }
    PyObject *add = PyFloat_FromDouble(x);
    int bad = add == NULL || slot_add(slot, add) < 0;
    Py_XDECREF(add);
    return bad ? -1 : 0;
}

/* A request's joules as the stage sums them (``energy``: a dict): ``math.fsum`` of its
 * values when it has several, else ``sum`` (0.0 + the one value; 0 for none). 0 done, 1 when
 * a value is not an exact float (left to Python), -1 with fsum's error. */
static int
joules_of(PyObject *energy, double *out)
{
    Py_ssize_t n = PyDict_GET_SIZE(energy), pos = 0;
    PyObject *key, *value;
    double first = 0.0, second = 0.0;
    for (Py_ssize_t i = 0; PyDict_Next(energy, &pos, &key, &value); i++) {
        if (!PyFloat_CheckExact(value)) {
            return 1;
        }
        if (i < 2) {
            *(i == 0 ? &first : &second) = PyFloat_AS_DOUBLE(value);
        }
    }
    if (n <= 1) {
        *out = 0.0 + first;
        return 0;
    }
    /* Two finite values whose sum is finite and not zero: one rounding, as fsum's. */
    double two = first + second;
    if (n == 2 && isfinite(first) && isfinite(second) && isfinite(two) && two != 0.0) {
        *out = two;
        return 0;
    }
    PyObject *values = PyDict_Values(energy);
    PyObject *sum = values ? PyObject_CallOneArg(math_fsum, values) : NULL;
    Py_XDECREF(values);
    if (sum == NULL) {
        return -1;
    }
    *out = PyFloat_AsDouble(sum);
    Py_DECREF(sum);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* ``bisect.bisect_left(bounds, x)`` over doubles. */
static Py_ssize_t
bisect_left(const double *bounds, Py_ssize_t n, double x)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (bounds[mid] < x) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
}

/* A token count to add: 1 for an int that is not 0, 0 for None or 0, -1 for anything else. */
static int
tokens_to_add(PyObject *v)
{
    if (v == Py_None) {
        return 0;
    }
    if (!PyLong_CheckExact(v)) {
        return -1;
    }
    return PyObject_IsTrue(v); /* an exact int's: cannot fail */
}

/* Is ``hist`` a histogram whose values are all exact (ints and floats): adding to them runs
 * no Python code? */
static int
plain_hist(PyObject *hist, Py_ssize_t n_bounds, Py_ssize_t at)
{
    if (!Py_IS_TYPE(hist, hist_type)) {
        return 0;
    }
    PyObject *counts = SLOT(hist, hist_offsets, H_COUNTS);
    PyObject *v[5] = {
        SLOT(hist, hist_offsets, H_TOTAL), SLOT(hist, hist_offsets, H_GFLOPS),
        SLOT(hist, hist_offsets, H_N), SLOT(hist, hist_offsets, H_INPUT),
        SLOT(hist, hist_offsets, H_OUTPUT),
    };
    if (counts == NULL || !PyList_CheckExact(counts) || PyList_GET_SIZE(counts) != n_bounds + 1 ||
        !PyLong_CheckExact(PyList_GET_ITEM(counts, at))) {
        return 0;
    }
    for (int i = 0; i < 5; i++) {
        if (v[i] == NULL || !(i < 2 ? PyFloat_CheckExact(v[i]) : PyLong_CheckExact(v[i]))) {
            return 0;
        }
    }
    return 1;
}

/* One request into ``hists`` and ``worked``: 1 booked, 0 left to Python (nothing changed but
 * perhaps its histogram made), -1 with an error. It books only what it can book without
 * running Python code while it changes things: exact strs, floats and ints throughout (the
 * splitter's requests and the stage's histograms); anything else is ``_book``'s. */
static int
book_one(PyObject *req, PyObject *hists, const double *bounds, Py_ssize_t n_bounds,
         PyObject *bounds_obj, PyObject *worked, PyObject *new_hist)
{
    if (!Py_IS_TYPE(req, settled_type)) {
        return 0;
    }
    PyObject *workload = SLOT(req, settled_offsets, S_WORKLOAD);
    PyObject *model = SLOT(req, settled_offsets, S_MODEL);
    PyObject *gflops = SLOT(req, settled_offsets, S_GFLOPS);
    PyObject *input = SLOT(req, settled_offsets, S_INPUT);
    PyObject *output = SLOT(req, settled_offsets, S_OUTPUT);
    PyObject *energy = SLOT(req, settled_offsets, S_ENERGY);
    if (workload == NULL || model == NULL || gflops == NULL || input == NULL ||
        output == NULL || energy == NULL || !PyUnicode_CheckExact(workload) ||
        !PyUnicode_CheckExact(model) || !(gflops == Py_None || PyFloat_CheckExact(gflops)) ||
        !PyDict_CheckExact(energy)) {
        return 0;
    }
    int add_in = tokens_to_add(input), add_out = tokens_to_add(output);
    if (add_in < 0 || add_out < 0) {
        return 0;
    }
    Py_ssize_t pos = 0;
    PyObject *component, *value;
    while (PyDict_Next(energy, &pos, &component, &value)) {
        if (!PyFloat_CheckExact(value)) {
            return 0;
        }
    }
    /* Held: making a histogram runs Python code, which may change the request. */
    PyObject *held[4] = {Py_NewRef(gflops), Py_NewRef(input), Py_NewRef(output),
                         Py_NewRef(energy)};
    PyObject *hist = NULL;
    PyObject *key = PyTuple_Pack(2, workload, model);
    int result = -1;
    if (key == NULL) {
        goto out;
    }
    hist = PyDict_GetItemWithError(hists, key); /* str keys: no Python code runs */
    if (hist != NULL) {
        Py_INCREF(hist);
    }
    else {
        if (PyErr_Occurred()) {
            goto out;
        }
        hist = PyObject_CallOneArg(new_hist, bounds_obj);
        if (hist == NULL || PyDict_SetItem(hists, key, hist) < 0) {
            goto out;
        }
    }
    double joules; /* after the histogram is made, as in Python */
    int summed = joules_of(energy, &joules);
    if (summed != 0) {
        result = summed < 0 ? -1 : 0;
        goto out;
    }
    Py_ssize_t at = bisect_left(bounds, n_bounds, joules);
    result = 0;
    if (!plain_hist(hist, n_bounds, at)) {
        goto out; /* not a histogram it can add to without Python code: ``_book`` does */
    }
    PyObject *pair = NULL; /* worked[key]: [joules, gflops] of exact floats, or none */
    int work = gflops != Py_None && PyFloat_AS_DOUBLE(gflops) > 0.0;
    if (work) {
        pair = PyDict_GetItemWithError(worked, key);
        if (pair == NULL && PyErr_Occurred()) {
            result = -1;
            goto out;
        }
        if (pair != NULL &&
            (!PyList_CheckExact(pair) || PyList_GET_SIZE(pair) != 2 ||
             !PyFloat_CheckExact(PyList_GET_ITEM(pair, 0)) ||
             !PyFloat_CheckExact(PyList_GET_ITEM(pair, 1)))) {
            goto out;
        }
    }
    /* From here on only exact numbers are added: no Python code runs. */
    result = -1;
    PyObject *counts = SLOT(hist, hist_offsets, H_COUNTS);
    PyObject *one = PyLong_FromLong(1);
    PyObject *bumped = one ? PyNumber_Add(PyList_GET_ITEM(counts, at), one) : NULL;
    if (bumped == NULL || PyList_SetItem(counts, at, bumped) < 0 || /* steals ``bumped`` */
        slot_add_double(&SLOT(hist, hist_offsets, H_TOTAL), joules) < 0 ||
        slot_add(&SLOT(hist, hist_offsets, H_N), one) < 0 ||
        (gflops != Py_None && slot_add(&SLOT(hist, hist_offsets, H_GFLOPS), gflops) < 0) ||
        (add_in && slot_add(&SLOT(hist, hist_offsets, H_INPUT), input) < 0) ||
        (add_out && slot_add(&SLOT(hist, hist_offsets, H_OUTPUT), output) < 0)) {
        Py_XDECREF(one);
        goto out;
    }
    Py_DECREF(one);
    if (work && pair == NULL) {
        PyObject *j = PyFloat_FromDouble(joules);
        PyObject *fresh = j ? PyList_New(2) : NULL;
        if (fresh == NULL) {
            Py_XDECREF(j);
            goto out;
        }
        PyList_SET_ITEM(fresh, 0, j);
        PyList_SET_ITEM(fresh, 1, Py_NewRef(gflops));
        int bad = PyDict_SetItem(worked, key, fresh) < 0;
        Py_DECREF(fresh);
        if (bad) {
            goto out;
        }
    }
    else if (work && (slot_add_double(&PyList_GET_ITEM(pair, 0), joules) < 0 ||
                      slot_add(&PyList_GET_ITEM(pair, 1), gflops) < 0)) {
        goto out;
    }
    result = 1;
out:
    Py_XDECREF(hist);
    Py_XDECREF(key);
    for (int i = 0; i < 4; i++) {
        Py_DECREF(held[i]);
    }
    return result;
}

/* book(requests, hists, bounds, worked, histogram_type, settled_type) -> int: the stage's
 * ``_book`` loop for the requests (a list or tuple) it takes, in order; returns how many it
 * booked (the caller books the rest, from the first it left, in Python). 0 for containers
 * of other types and bounds that are not floats. */
static PyObject *
py_book(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "book(requests, hists, bounds, worked, histogram_type, settled_type)");
        return NULL;
    }
    PyObject *requests = args[0], *hists = args[1], *bounds_obj = args[2], *worked = args[3];
    if (!(PyList_CheckExact(requests) || PyTuple_CheckExact(requests)) ||
        !PyDict_CheckExact(hists) || !PyTuple_CheckExact(bounds_obj) ||
        !PyDict_CheckExact(worked)) {
        return PyLong_FromLong(0);
    }
    if (learn_settled(args[5], "book") < 0 ||
        learn_slots(args[4], HIST_FIELDS, N_HIST, hist_offsets, &hist_type, "book") < 0) {
        return NULL;
    }
    Py_ssize_t n_bounds = PyTuple_GET_SIZE(bounds_obj);
    double *bounds = PyMem_Malloc((size_t)(n_bounds ? n_bounds : 1) * sizeof(double));
    if (bounds == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n_bounds; i++) {
        PyObject *b = PyTuple_GET_ITEM(bounds_obj, i);
        if (!PyFloat_CheckExact(b)) {
            PyMem_Free(bounds);
            return PyLong_FromLong(0);
        }
        bounds[i] = PyFloat_AS_DOUBLE(b);
    }
    Py_ssize_t done = 0;
    int got = 1;
    /* a list or tuple (SettleResult.requests): indexed afresh, Python code may run */
    while (done < PySequence_Fast_GET_SIZE(requests) && got == 1) {
        PyObject *req = Py_NewRef(PySequence_Fast_GET_ITEM(requests, done));
        got = book_one(req, hists, bounds, n_bounds, bounds_obj, worked, args[4]);
        Py_DECREF(req);
        done += got == 1;
    }
    PyMem_Free(bounds);
    return got < 0 ? NULL : PyLong_FromSsize_t(done);
}

static PyObject *
py_live(PyObject *module, PyObject *unused)
{
    return PyLong_FromSsize_t(live_records);
}

static PyMethodDef methods[] = {
    {"live", (PyCFunction)py_live, METH_NOARGS, "live() -> int: Pending records alive now."},
    {"finish_all", (PyCFunction)(void (*)(void))py_finish_all, METH_FASTCALL,
     "finish_all(splitter, recs, by_id, count, fifo, lanes, requests, settled_type): "
     "SpanSplitter._finish_all for compiled records."},
    {"rates", (PyCFunction)py_rates, METH_O,
     "rates(active) -> bytes | None: split_fractions's packed input of compiled records."},
    {"share_out", (PyCFunction)(void (*)(void))py_share_out, METH_FASTCALL,
     "share_out(active, fractions, parts) -> bool: the tick's energy to each record by its "
     "fraction, as SpanSplitter._settle_tick's loop."},
    {"book", (PyCFunction)(void (*)(void))py_book, METH_FASTCALL,
     "book(requests, hists, bounds, worked, histogram_type, settled_type) -> int: the "
     "stage's _book loop in C for the requests it takes; returns how many it booked."},
    {"add_all", (PyCFunction)(void (*)(void))py_add_all, METH_FASTCALL,
     "add_all(spans, splitter, joiner, other) -> int: RequestJoiner.add_all's common case "
     "(a new request of one span) in C, every other span to other(span) in its place; "
     "returns the spans it added itself."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "jouled.attribution._pending",
    "The splitter's pending-span record, id indexes and time queue in C (see spans.py).",
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
        (s_output_tokens = PyUnicode_InternFromString("output_tokens")) == NULL ||
        (s_active = PyUnicode_InternFromString("active")) == NULL ||
        (s_n_pending = PyUnicode_InternFromString("_n_pending")) == NULL ||
        (s_frontier = PyUnicode_InternFromString("_frontier")) == NULL ||
        (s_ticks = PyUnicode_InternFromString("_ticks")) == NULL ||
        (s_max_pending = PyUnicode_InternFromString("_max_pending")) == NULL ||
        (s_by_id = PyUnicode_InternFromString("_by_id")) == NULL ||
        (s_ends = PyUnicode_InternFromString("_ends")) == NULL ||
        (s_lanes = PyUnicode_InternFromString("_lanes")) == NULL ||
        (s_fifo = PyUnicode_InternFromString("_fifo")) == NULL ||
        (s_count = PyUnicode_InternFromString("_count")) == NULL ||
        (s_by_trace = PyUnicode_InternFromString("_by_trace")) == NULL ||
        (s_size = PyUnicode_InternFromString("_size")) == NULL ||
        (s_max_requests = PyUnicode_InternFromString("max_requests")) == NULL ||
        (s_memory_s = PyUnicode_InternFromString("_memory_s")) == NULL ||
        (s_expiry = PyUnicode_InternFromString("_expiry")) == NULL ||
        (s_waiting = PyUnicode_InternFromString("waiting")) == NULL ||
        (s_lone = PyUnicode_InternFromString("lone")) == NULL ||
        (s_w0 = PyUnicode_InternFromString("w0")) == NULL ||
        (s_append = PyUnicode_InternFromString("append")) == NULL ||
        (s_popleft = PyUnicode_InternFromString("popleft")) == NULL ||
        (s_trace_id = PyUnicode_InternFromString("trace_id")) == NULL ||
        (s_span_id = PyUnicode_InternFromString("span_id")) == NULL ||
        (s_parent_id = PyUnicode_InternFromString("parent_id")) == NULL) {
        return NULL;
    }
    PyObject *math = PyImport_ImportModule("math");
    math_fsum = math ? PyObject_GetAttrString(math, "fsum") : NULL;
    Py_XDECREF(math);
    if (math_fsum == NULL) {
        return NULL;
    }
    if (PyType_Ready(&PendingType) < 0 || PyType_Ready(&IdIndexType) < 0 ||
        PyType_Ready(&RecordIndexType) < 0 || PyType_Ready(&TimeQueueType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Pending", (PyObject *)&PendingType) < 0 ||
        PyModule_AddObjectRef(m, "IdIndex", (PyObject *)&IdIndexType) < 0 ||
        PyModule_AddObjectRef(m, "RecordIndex", (PyObject *)&RecordIndexType) < 0 ||
        PyModule_AddObjectRef(m, "TimeQueue", (PyObject *)&TimeQueueType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

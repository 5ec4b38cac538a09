/* jouled.ingest._otlpscan: what jouled reads off serialized OTLP spans, in one pass.
 *
 * scan_scope(data, wanted) -> list[tuple]   over an opentelemetry.proto.trace.v1.ScopeSpans
 * scan_span(data, wanted) -> tuple          over one opentelemetry.proto.trace.v1.Span
 *
 * Each span becomes (trace_id: bytes, span_id: bytes, parent_span_id: bytes, kind: int,
 * start_ns: int, end_ns: int, name: str, has_links: bool, attrs: dict | None): attrs holds
 * the attributes whose key is in `wanted` (a set or frozenset of str), each value a str,
 * bool, int or float for the scalar AnyValue members and None for the others (array, kvlist,
 * bytes, string_value_strindex, unset); None instead of an empty dict.
 *
 * The same values upb gives on valid input: a scalar field seen twice keeps the last, a
 * message field seen twice merges (two `value` fields of a KeyValue are one AnyValue: the
 * last member set wins), a field of an unexpected wire type is an unknown field and skipped,
 * as are unknown fields (groups included). Field numbers: opentelemetry/proto/trace/v1/
 * trace.proto and common/v1/common.proto as opentelemetry-proto 1.45 generates them
 * (AnyValue has 8 members); encoding: the protobuf wire-format spec
 * (https://protobuf.dev/programming-guides/encoding/).
 *
 * Malformed input (truncation, a length past the end, a varint over 10 bytes, a stray
 * end-group, wire types 6 and 7, invalid UTF-8 in a string read) raises ValueError. The
 * caller validates with upb first, so only what upb accepts needs to agree with it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_otlpwire.h"

/* A wanted key and its UTF-8 (cached by the str), to match attribute keys as bytes. */
typedef struct {
    PyObject *key; /* a strong reference */
    const char *utf8;
    Py_ssize_t len;
} WantedKey;

typedef struct {
    Py_ssize_t n;
    WantedKey *keys;
} Wanted;

/* The Python value of av: str, bool, int, float, or None (the other members, unset). */
static PyObject *
any_value_object(const AnyValue *av)
{
    union {
        uint64_t u;
        double d;
    } bits;
    switch (av->which) {
    case 1:
        return PyUnicode_DecodeUTF8((const char *)av->str, av->str_len, NULL);
    case 2:
        return PyBool_FromLong(av->value != 0);
    case 3:
        return PyLong_FromLongLong((long long)(int64_t)av->value);
    case 4:
        bits.u = av->value;
        return PyFloat_FromDouble(bits.d);
    default:
        Py_RETURN_NONE;
    }
}

/* One serialized KeyValue: if its key is wanted, sets attrs[key] (making *attrs first). */
static int
scan_key_value(const uint8_t *data, Py_ssize_t len, const Wanted *wanted, PyObject **attrs)
{
    AnyValue av;
    const uint8_t *key;
    Py_ssize_t key_len;
    int r;
    if (read_key_value(data, len, &key, &key_len, &av) < 0)
        return -1;
    for (const WantedKey *w = wanted->keys; w < wanted->keys + wanted->n; w++) {
        if (w->len != key_len || memcmp(w->utf8, key, (size_t)key_len) != 0)
            continue;
        PyObject *v = any_value_object(&av);
        if (v == NULL || (*attrs == NULL && (*attrs = PyDict_New()) == NULL)) {
            Py_XDECREF(v);
            return -1;
        }
        r = PyDict_SetItem(*attrs, w->key, v);
        Py_DECREF(v);
        return r;
    }
    return 0; /* not wanted (its bytes are not checked as UTF-8: upb has) */
}

typedef struct {
    const Wanted *wanted;
    PyObject *attrs;
} AttrsCtx;

static int
on_attribute(const uint8_t *data, Py_ssize_t len, void *ctx)
{
    AttrsCtx *a = ctx;
    return scan_key_value(data, len, a->wanted, &a->attrs);
}

/* One serialized Span as the tuple described at the top, or NULL with an exception set. */
static PyObject *
scan_span_bytes(const uint8_t *data, Py_ssize_t len, const Wanted *wanted)
{
    SpanFields sf;
    AttrsCtx a = {wanted, NULL};
    PyObject *t = NULL;
    if (read_span_fields(data, len, &sf, on_attribute, &a) < 0 || (t = PyTuple_New(9)) == NULL)
        goto error;
    PyObject *item;
#define SET(i, expr)                                                                          \
    do {                                                                                      \
        if ((item = (expr)) == NULL)                                                          \
            goto error;                                                                       \
        PyTuple_SET_ITEM(t, i, item);                                                         \
    } while (0)
    SET(0, PyBytes_FromStringAndSize((const char *)sf.text[1], sf.text_len[1]));
    SET(1, PyBytes_FromStringAndSize((const char *)sf.text[2], sf.text_len[2]));
    SET(2, PyBytes_FromStringAndSize((const char *)sf.text[4], sf.text_len[4]));
    SET(3, PyLong_FromLongLong(enum_value(sf.kind)));
    SET(4, PyLong_FromUnsignedLongLong(sf.start_ns));
    SET(5, PyLong_FromUnsignedLongLong(sf.end_ns));
    SET(6, PyUnicode_DecodeUTF8((const char *)sf.text[5], sf.text_len[5], NULL));
    SET(7, PyBool_FromLong(sf.has_links));
#undef SET
    PyTuple_SET_ITEM(t, 8, a.attrs != NULL ? a.attrs : Py_NewRef(Py_None)); /* the tuple owns it */
    return t;
error:
    Py_XDECREF(a.attrs);
    Py_XDECREF(t);
    return NULL;
}

static void
wanted_release(Wanted *w)
{
    for (Py_ssize_t i = 0; i < w->n; i++)
        Py_DECREF(w->keys[i].key);
    PyMem_Free(w->keys);
}

/* The table of a set of str; a key that cannot be UTF-8 (a lone surrogate) never matches. */
static int
wanted_build(PyObject *set, Wanted *w)
{
    Py_ssize_t size = PySet_Size(set);
    PyObject *it, *item;
    w->n = 0;
    if ((w->keys = PyMem_New(WantedKey, size + 1)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if ((it = PyObject_GetIter(set)) == NULL)
        goto error;
    while ((item = PyIter_Next(it)) != NULL) {
        WantedKey *k = &w->keys[w->n];
        if (!PyUnicode_CheckExact(item) || w->n == size) {
            Py_DECREF(item);
            PyErr_SetString(PyExc_TypeError, "wanted must be a set of str");
            break;
        }
        if ((k->utf8 = PyUnicode_AsUTF8AndSize(item, &k->len)) == NULL) {
            PyErr_Clear();
            Py_DECREF(item);
            continue;
        }
        k->key = item;
        w->n++;
    }
    Py_DECREF(it);
    if (!PyErr_Occurred())
        return 0;
error:
    wanted_release(w);
    return -1;
}

/* The arguments (data, wanted): the buffer and the wanted table, both released by
 * release_args. */
static int
get_args(PyObject *const *args, Py_ssize_t nargs, const char *name, Py_buffer *view,
         Wanted *wanted)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes 2 arguments (%zd given)", name, nargs);
        return -1;
    }
    if (!PyAnySet_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "%s(): wanted must be a set or frozenset", name);
        return -1;
    }
    if (PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE) < 0)
        return -1;
    if (wanted_build(args[1], wanted) < 0) {
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static void
release_args(Py_buffer *view, Wanted *wanted)
{
    wanted_release(wanted);
    PyBuffer_Release(view);
}

static PyObject *
py_scan_scope(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Wanted wanted;
    (void)module;
    if (get_args(args, nargs, "scan_scope", &view, &wanted) < 0)
        return NULL;
    const uint8_t *data = view.buf;
    Cursor c = {data, data + view.len};
    Field f;
    int r;
    PyObject *spans = PyList_New(0);
    if (spans == NULL)
        goto done;
    while ((r = each_field(&c, &f)) > 0) {
        if (f.number != 2 || f.wire_type != WT_LEN)
            continue; /* ScopeSpans.scope, schema_url, unknown fields */
        PyObject *span = scan_span_bytes(f.data, f.len, &wanted);
        if (span == NULL || PyList_Append(spans, span) < 0) {
            Py_XDECREF(span);
            r = -1;
            break;
        }
        Py_DECREF(span);
    }
    if (r < 0)
        Py_CLEAR(spans);
done:
    release_args(&view, &wanted);
    return spans;
}

static PyObject *
py_scan_span(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Wanted wanted;
    (void)module;
    if (get_args(args, nargs, "scan_span", &view, &wanted) < 0)
        return NULL;
    PyObject *span = scan_span_bytes(view.buf, view.len, &wanted);
    release_args(&view, &wanted);
    return span;
}

static PyMethodDef methods[] = {
    {"scan_scope", (PyCFunction)(void (*)(void))py_scan_scope, METH_FASTCALL,
     "scan_scope(data, wanted) -> list of span tuples of a serialized ScopeSpans"},
    {"scan_span", (PyCFunction)(void (*)(void))py_scan_span, METH_FASTCALL,
     "scan_span(data, wanted) -> the span tuple of a serialized Span"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "jouled.ingest._otlpscan",
    "What jouled reads off serialized OTLP spans, in one pass (see jouled/ingest/otlpscan.py).",
    0, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__otlpscan(void)
{
    return PyModuleDef_Init(&module_def);
}

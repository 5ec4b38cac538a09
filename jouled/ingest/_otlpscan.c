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
#include <stdint.h>
#include <string.h>

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };
enum { MAX_GROUP_DEPTH = 100 }; /* upb's default depth limit: deeper input fails there first */

typedef struct {
    const uint8_t *p, *end;
} Cursor;

typedef struct {
    uint32_t number;
    int wire_type;
    uint64_t value;        /* VARINT, I64, I32 */
    const uint8_t *data;   /* LEN payload */
    Py_ssize_t len;
} Field;

/* AnyValue as it stands after the fields seen so far: the oneof member last set (0 unset). */
typedef struct {
    uint32_t which;
    uint64_t value;
    const uint8_t *str;
    Py_ssize_t str_len;
} AnyValue;

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

static int
fail(const char *message)
{
    PyErr_SetString(PyExc_ValueError, message);
    return -1;
}

static int
read_varint(Cursor *c, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (c->p >= c->end)
            return fail("truncated varint");
        uint8_t b = *c->p++;
        v |= (uint64_t)(b & 0x7F) << (7 * i); /* bits past 64 dropped, as upb does */
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return fail("varint longer than 10 bytes");
}

static int skip_group(Cursor *c, uint32_t number, int depth);

/* The next field of c into f: 0, or 1 for an end-group tag (f->number set), -1 on error.
 * A start-group field is skipped whole and reported with wire type WT_SGROUP. */
static int
next_field(Cursor *c, Field *f, int depth)
{
    const uint8_t *start = c->p;
    uint64_t tag, n;
    if (read_varint(c, &tag) < 0)
        return -1;
    if (c->p - start > 5 || tag > UINT32_MAX)
        return fail("field tag too long");
    f->number = (uint32_t)(tag >> 3);
    f->wire_type = (int)(tag & 7);
    if (f->number == 0)
        return fail("field number 0");
    switch (f->wire_type) {
    case WT_VARINT:
        return read_varint(c, &f->value);
    case WT_I64:
    case WT_I32:
        n = f->wire_type == WT_I64 ? 8 : 4;
        if ((uint64_t)(c->end - c->p) < n)
            return fail("truncated fixed-size field");
        f->value = 0;
        for (int i = (int)n - 1; i >= 0; i--)
            f->value = f->value << 8 | c->p[i]; /* little-endian */
        c->p += n;
        return 0;
    case WT_LEN:
        if (read_varint(c, &n) < 0)
            return -1;
        if (n > (uint64_t)(c->end - c->p))
            return fail("length past the end of the message");
        f->data = c->p;
        f->len = (Py_ssize_t)n;
        c->p += n;
        return 0;
    case WT_SGROUP:
        return skip_group(c, f->number, depth + 1);
    case WT_EGROUP:
        return 1;
    default:
        return fail("invalid wire type");
    }
}

static int
skip_group(Cursor *c, uint32_t number, int depth)
{
    Field f;
    if (depth > MAX_GROUP_DEPTH)
        return fail("groups nested too deep");
    for (;;) {
        if (c->p >= c->end)
            return fail("unterminated group");
        int r = next_field(c, &f, depth);
        if (r < 0)
            return -1;
        if (r > 0)
            return f.number == number ? 0 : fail("mismatched end-group");
    }
}

/* Fields of c one by one into f: 1 while there is one, 0 at the end, -1 on error. */
static int
each_field(Cursor *c, Field *f)
{
    if (c->p >= c->end)
        return 0;
    int r = next_field(c, f, 0);
    if (r > 0)
        return fail("end-group outside a group");
    return r < 0 ? -1 : 1;
}

/* Merges one serialized AnyValue into av (string_value's bytes are kept, decoded later). */
static int
scan_any_value(const uint8_t *data, Py_ssize_t len, AnyValue *av)
{
    Cursor c = {data, data + len};
    Field f;
    int r;
    /* The wire type of each oneof member: 1 string, 2 bool, 3 int64, 4 double, 5 array,
     * 6 kvlist, 7 bytes, 8 string_value_strindex (int32, profiles only: None here). */
    static const int member_wire_type[9] = {-1, WT_LEN, WT_VARINT, WT_VARINT, WT_I64,
                                            WT_LEN, WT_LEN, WT_LEN, WT_VARINT};
    while ((r = each_field(&c, &f)) > 0) {
        if (f.number > 8 || f.wire_type != member_wire_type[f.number])
            continue; /* unknown field */
        av->which = f.number;
        if (f.number == 1) {
            av->str = f.data;
            av->str_len = f.len;
        }
        else if (f.wire_type != WT_LEN)
            av->value = f.value;
    }
    return r;
}

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
    Cursor c = {data, data + len};
    Field f;
    AnyValue av = {0, 0, NULL, 0};
    const uint8_t *key = data;
    Py_ssize_t key_len = 0;
    int r;
    while ((r = each_field(&c, &f)) > 0) {
        if (f.wire_type != WT_LEN)
            continue;
        if (f.number == 1) {
            key = f.data;
            key_len = f.len;
        }
        else if (f.number == 2 && scan_any_value(f.data, f.len, &av) < 0)
            return -1;
    }
    if (r < 0)
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

/* One serialized Span as the tuple described at the top, or NULL with an exception set. */
static PyObject *
scan_span_bytes(const uint8_t *data, Py_ssize_t len, const Wanted *wanted)
{
    Cursor c = {data, data + len};
    Field f;
    /* Byte and string fields as (start, length), indexed by field number 1..5. */
    const uint8_t *text[6] = {data, data, data, data, data, data};
    Py_ssize_t text_len[6] = {0, 0, 0, 0, 0, 0};
    uint64_t kind = 0, start_ns = 0, end_ns = 0;
    int has_links = 0, r;
    PyObject *attrs = NULL, *t = NULL;
    while ((r = each_field(&c, &f)) > 0) {
        switch (f.number) {
        case 1: case 2: case 4: case 5:
            if (f.wire_type == WT_LEN) {
                text[f.number] = f.data;
                text_len[f.number] = f.len;
            }
            break;
        case 6:
            if (f.wire_type == WT_VARINT)
                kind = f.value;
            break;
        case 7: case 8:
            if (f.wire_type == WT_I64)
                *(f.number == 7 ? &start_ns : &end_ns) = f.value;
            break;
        case 9:
            if (f.wire_type == WT_LEN && scan_key_value(f.data, f.len, wanted, &attrs) < 0)
                goto error;
            break;
        case 13:
            has_links |= f.wire_type == WT_LEN;
            break;
        }
    }
    if (r < 0 || (t = PyTuple_New(9)) == NULL)
        goto error;
    /* kind is an int32 enum: the varint's low 32 bits, as two's complement. */
    uint32_t low = (uint32_t)kind;
    long long kind_value = low <= INT32_MAX ? (long long)low : (long long)low - 0x100000000LL;
    PyObject *item;
#define SET(i, expr)                                                                          \
    do {                                                                                      \
        if ((item = (expr)) == NULL)                                                          \
            goto error;                                                                       \
        PyTuple_SET_ITEM(t, i, item);                                                         \
    } while (0)
    SET(0, PyBytes_FromStringAndSize((const char *)text[1], text_len[1]));
    SET(1, PyBytes_FromStringAndSize((const char *)text[2], text_len[2]));
    SET(2, PyBytes_FromStringAndSize((const char *)text[4], text_len[4]));
    SET(3, PyLong_FromLongLong(kind_value));
    SET(4, PyLong_FromUnsignedLongLong(start_ns));
    SET(5, PyLong_FromUnsignedLongLong(end_ns));
    SET(6, PyUnicode_DecodeUTF8((const char *)text[5], text_len[5], NULL));
    SET(7, PyBool_FromLong(has_links));
#undef SET
    PyTuple_SET_ITEM(t, 8, attrs != NULL ? attrs : Py_NewRef(Py_None)); /* the tuple owns it */
    return t;
error:
    Py_XDECREF(attrs);
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

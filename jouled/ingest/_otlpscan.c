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

/* ---- validate: a serialized message checked as upb checks it, without parsing it ----
 *
 * validate(data, schema) -> None; ValueError (what is wrong) where upb's parse of the same
 * bytes fails. What upb checks (upb/wire/decode.c, reader.c): tags (at most 5 bytes, a
 * 32-bit value, field number not 0 but in a group it skips, wire types 0-5), varints (at
 * most 10 bytes), lengths (at most 5 bytes, under 2 GiB), fixed-size and delimited
 * fields within the message, groups closed by their own number, end-groups only closing a
 * group, UTF-8 in proto3 string fields, and a depth limit: each submessage and each group
 * takes one of UPB_DEPTH levels. A field of a wire type its schema entry does not have is an
 * unknown field (checked for framing only), as in upb.
 *
 * schema: bytes made by otlpscan.schema_table from the message descriptors: [messages,
 * fields] then, per message and field number 1..fields, two bytes (kind, child message). */

enum { UPB_DEPTH = 100 };
enum { K_NONE = 0, K_VARINT = 1, K_I64 = 2, K_I32 = 3, K_BYTES = 4, K_STRING = 5, K_MESSAGE = 6 };

typedef struct {
    const uint8_t *table;
    int messages, fields;
    int depth; /* levels left */
} Schema;

/* Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF): 1 valid. */
static int
utf8_valid(const uint8_t *p, Py_ssize_t n)
{
    const uint8_t *end = p + n;
    while (p < end) {
        if (end - p >= 8) {
            uint64_t chunk;
            memcpy(&chunk, p, 8);
            if (!(chunk & 0x8080808080808080ULL)) {
                p += 8;
                continue;
            }
        }
        uint8_t b = *p;
        if (b < 0x80) {
            p++;
            continue;
        }
        int need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF)
            need = 1;
        else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            if (b == 0xE0)
                lo = 0xA0;
            else if (b == 0xED)
                hi = 0x9F;
        }
        else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            if (b == 0xF0)
                lo = 0x90;
            else if (b == 0xF4)
                hi = 0x8F;
        }
        else
            return 0;
        if (end - p <= need)
            return 0;
        if (p[1] < lo || p[1] > hi)
            return 0;
        for (int i = 2; i <= need; i++)
            if ((p[i] & 0xC0) != 0x80)
                return 0;
        p += need + 1;
    }
    return 1;
}

static int check_fields(Schema *s, Cursor *c, int message, int64_t group);

/* The fields of c as message `message` (-1: unknown, all its fields unknown) up to its end,
 * or, in a group (group >= 0: its field number), up to that group's end-group tag. */
static int
check_fields(Schema *s, Cursor *c, int message, int64_t group)
{
    while (c->p < c->end) {
        uint64_t v;
        uint32_t number;
        int wire_type;
        if (read_tag(c, group >= 0, &number, &wire_type) < 0)
            return -1;
        int kind = K_NONE, child = -1;
        if (message >= 0 && number <= (uint32_t)s->fields) {
            const uint8_t *e = s->table + 2 + 2 * ((size_t)message * s->fields + number - 1);
            kind = e[0];
            child = e[1];
        }
        switch (wire_type) {
        case WT_VARINT:
            if (read_varint(c, &v) < 0)
                return -1;
            break;
        case WT_I64:
        case WT_I32:
            v = wire_type == WT_I64 ? 8 : 4;
            if ((uint64_t)(c->end - c->p) < v)
                return fail("truncated fixed-size field");
            c->p += v;
            break;
        case WT_LEN: {
            if (read_length(c, &v) < 0)
                return -1;
            Cursor sub = {c->p, c->p + v};
            c->p += v;
            if (kind == K_STRING && !utf8_valid(sub.p, (Py_ssize_t)v))
                return fail("a string field is not UTF-8");
            if (kind == K_MESSAGE) {
                if (child >= s->messages)
                    return fail("malformed schema table");
                if (--s->depth < 0)
                    return fail("messages nested too deep");
                if (check_fields(s, &sub, child, -1) < 0)
                    return -1;
                s->depth++;
            }
            break;
        }
        case WT_SGROUP:
            if (--s->depth < 0)
                return fail("groups nested too deep");
            if (check_fields(s, c, -1, number) < 0)
                return -1;
            s->depth++;
            break;
        case WT_EGROUP:
            if (group == number)
                return 0;
            return fail(group < 0 ? "end-group outside a group" : "mismatched end-group");
        default:
            return fail("invalid wire type");
        }
    }
    return group < 0 ? 0 : fail("unterminated group");
}

static PyObject *
py_validate(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyBytes_CheckExact(args[1]) || PyBytes_GET_SIZE(args[1]) < 2) {
        PyErr_SetString(PyExc_TypeError, "validate(data, schema: bytes)");
        return NULL;
    }
    Schema s;
    s.table = (const uint8_t *)PyBytes_AS_STRING(args[1]);
    s.messages = s.table[0];
    s.fields = s.table[1];
    s.depth = UPB_DEPTH;
    if (s.messages == 0 || PyBytes_GET_SIZE(args[1]) != 2 + 2 * (Py_ssize_t)s.messages * s.fields) {
        PyErr_SetString(PyExc_ValueError, "validate: malformed schema table");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Cursor c = {view.buf, (const uint8_t *)view.buf + view.len};
    int r = check_fields(&s, &c, 0, -1);
    PyBuffer_Release(&view);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan_scope", (PyCFunction)(void (*)(void))py_scan_scope, METH_FASTCALL,
     "scan_scope(data, wanted) -> list of span tuples of a serialized ScopeSpans"},
    {"scan_span", (PyCFunction)(void (*)(void))py_scan_span, METH_FASTCALL,
     "scan_span(data, wanted) -> the span tuple of a serialized Span"},
    {"validate", (PyCFunction)(void (*)(void))py_validate, METH_FASTCALL,
     "validate(data, schema) -> None; ValueError where upb would refuse the message"},
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

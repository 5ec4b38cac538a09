/* jouled.ingest._roots: the request spans of one resource's flat batch, validated, in C.
 *
 * select_roots(tuples, workload, resource_model, default_model, plan) -> list[Span] | None
 *
 * The compiled twin of the per-span loop of ``decode._select_roots`` and
 * ``rules.Checker.span_of`` for the common case: a batch in which no span has a parent (each
 * span is a request or is ignored), whose workload is already resolved. ``tuples`` are the
 * span tuples of ``otlpscan`` (trace_id, span_id, parent_span_id, kind, start_ns, end_ns,
 * name, has_links, attrs or None). It returns the ``Span`` of each request span in order, or
 * None as soon as one span needs anything but the plain path (an explicit jouled.request, a
 * time, model, route, GFLOPs or token count that is missing, out of range or not of the
 * plain type, a model priced by its config): the caller then runs the Python path over the
 * whole group, which says what is wrong. So a group's result is the Python path's, or that
 * path is run.
 *
 * plan: (Span, model_names, gflops_names, input_names, output_names, total_names,
 *        route_key, request_key, ignore_prefixes, labels, label_of, gflops_per_token,
 *        token_costs, lo, hi, max_gflops, max_tokens)
 *   labels: a dict value -> label (``sanitize_label``), filled through ``label_of`` on a
 *   miss while it holds fewer than LABELS_MAX entries (values of up to LABEL_KEY_MAX
 *   characters only); lo, hi: the accepted span end times.
 *
 * Values are those of the Python path: times are ``start_ns / 1_000_000_000`` (int true
 * division, correctly rounded), work is ``float(inp + out) * per_token`` or the span's own
 * float GFLOPs, ids become lowercase hex. A ``Span`` is made as its dataclass ``__init__``
 * makes it (each slot set, nothing else), straight into its slots.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>

#include "_otlpwire.h"

/* The label cache holds at most LABELS_MAX values of at most LABEL_KEY_MAX characters each
 * (labels are cut to 128): a sender of long or ever-new model names cannot grow it past
 * ~2 MB; longer values are labelled afresh each time. */
enum { N_FIELDS = 11, LABELS_MAX = 4096, LABEL_KEY_MAX = 128 };
enum { KIND_UNSPECIFIED = 0, KIND_INTERNAL = 1, KIND_SERVER = 2, KIND_CONSUMER = 5 };

/* Span's fields in its dataclass order (jouled/attribution/spans.py). */
static const char *const FIELDS[N_FIELDS] = {
    "workload", "model", "start", "end", "gflops", "route",
    "trace_id", "span_id", "parent_id", "input_tokens", "output_tokens",
};

/* The slot offsets of the Span type last seen (one type in practice). */
static PyTypeObject *slots_of = NULL;
static Py_ssize_t offsets[N_FIELDS];

static int
learn_slots(PyTypeObject *type)
{
    if (type == slots_of)
        return 0;
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *d = PyObject_GetAttrString((PyObject *)type, FIELDS[i]);
        if (d == NULL)
            return -1;
        if (Py_TYPE(d) != &PyMemberDescr_Type) {
            Py_DECREF(d);
            PyErr_Format(PyExc_TypeError, "Span.%s is not a slot", FIELDS[i]);
            return -1;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        offsets[i] = m->offset;
        int ok = m->type == T_OBJECT_EX;
        Py_DECREF(d);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "Span.%s is not an object slot", FIELDS[i]);
            return -1;
        }
    }
    Py_XDECREF(slots_of);
    Py_INCREF(type);
    slots_of = type;
    return 0;
}

/* A new Span with its fields set from `values` (new references, stolen, all non-NULL) at
 * the slot offsets `at` (the plan's copy: Python code run by label() may learn another type
 * into the globals meanwhile). */
static PyObject *
make_span(PyTypeObject *type, const Py_ssize_t at[N_FIELDS], PyObject *values[N_FIELDS])
{
    PyObject *span = type->tp_alloc(type, 0);
    if (span == NULL) {
        for (int i = 0; i < N_FIELDS; i++)
            Py_DECREF(values[i]);
        return NULL;
    }
    for (int i = 0; i < N_FIELDS; i++)
        *(PyObject **)((char *)span + at[i]) = values[i];
    return span;
}

/* attrs[name] for the first of `names` present and not None; borrowed, NULL when none
 * (check PyErr_Occurred). */
static PyObject *
first(PyObject *attrs, PyObject *names)
{
    if (attrs == Py_None)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyDict_GetItemWithError(attrs, PyTuple_GET_ITEM(names, i));
        if (v != NULL && v != Py_None)
            return v;
        if (v == NULL && PyErr_Occurred())
            return NULL;
    }
    return NULL;
}

/* Lowercase hex of n bytes, a new str. */
static PyObject *
hex_bytes(const unsigned char *b, Py_ssize_t n)
{
    static const char digits[] = "0123456789abcdef";
    PyObject *s = PyUnicode_New(2 * n, 127);
    if (s == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    return s;
}

static PyObject *
hex_of(PyObject *id)
{
    if (PyUnicode_CheckExact(id))
        return Py_NewRef(id); /* OTLP/JSON: hex already */
    if (!PyBytes_CheckExact(id))
        return Py_NewRef(Py_None); /* not plain: the caller falls back */
    return hex_bytes((const unsigned char *)PyBytes_AS_STRING(id), PyBytes_GET_SIZE(id));
}

/* The label of a str value (a new reference), through the `labels` cache; NULL with no error
 * set when `value` is not a str or its label is not one (the caller falls back). */
static PyObject *
label(PyObject *value, PyObject *labels, PyObject *label_of)
{
    if (!PyUnicode_CheckExact(value))
        return NULL;
    PyObject *got = PyDict_GetItemWithError(labels, value);
    if (got != NULL)
        return Py_NewRef(got);
    if (PyErr_Occurred())
        return NULL;
    got = PyObject_CallOneArg(label_of, value);
    if (got == NULL)
        return NULL;
    if (!PyUnicode_CheckExact(got)) {
        Py_DECREF(got);
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(value) <= LABEL_KEY_MAX && PyDict_GET_SIZE(labels) < LABELS_MAX &&
        PyDict_SetItem(labels, value, got) < 0) {
        Py_DECREF(got);
        return NULL;
    }
    return got;
}

/* A plain token count: an exact int in [0, max]; -1 otherwise (no error set). */
static long long
count_of(PyObject *v, long long max)
{
    if (!PyLong_CheckExact(v))
        return -1;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || x < 0 || x > max) {
        PyErr_Clear();
        return -1;
    }
    return x;
}

static int
is_ignored(PyObject *name, PyObject *prefixes)
{
    if (!PyUnicode_Check(name) || PyUnicode_GET_LENGTH(name) == 0)
        return 0;
    Py_ssize_t n = PyTuple_GET_SIZE(prefixes);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t r = PyUnicode_Tailmatch(name, PyTuple_GET_ITEM(prefixes, i), 0,
                                           PY_SSIZE_T_MAX, -1);
        if (r != 0)
            return (int)r; /* 1, or -1 on error */
    }
    return 0;
}

typedef struct {
    PyTypeObject *span_type;
    PyObject *model_names, *gflops_names, *input_names, *output_names, *total_names;
    PyObject *route_key, *request_key, *ignore_prefixes, *labels, *label_of;
    PyObject *per_token, *token_costs;
    double lo, hi, max_gflops;
    long long max_tokens;
    Py_ssize_t offsets[N_FIELDS]; /* of span_type's slots */
} Plan;

static int
read_plan(PyObject *t, Plan *p)
{
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 17) {
        PyErr_SetString(PyExc_TypeError, "select_roots: plan must be a 17-tuple");
        return -1;
    }
    PyObject *type = PyTuple_GET_ITEM(t, 0);
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "select_roots: plan[0] must be the Span type");
        return -1;
    }
    p->span_type = (PyTypeObject *)type;
    PyObject **names[] = {&p->model_names, &p->gflops_names, &p->input_names,
                          &p->output_names, &p->total_names};
    for (int i = 0; i < 5; i++) {
        *names[i] = PyTuple_GET_ITEM(t, 1 + i);
        if (!PyTuple_CheckExact(*names[i])) {
            PyErr_SetString(PyExc_TypeError, "select_roots: attribute names must be tuples");
            return -1;
        }
    }
    p->route_key = PyTuple_GET_ITEM(t, 6);
    p->request_key = PyTuple_GET_ITEM(t, 7);
    p->ignore_prefixes = PyTuple_GET_ITEM(t, 8);
    p->labels = PyTuple_GET_ITEM(t, 9);
    p->label_of = PyTuple_GET_ITEM(t, 10);
    p->per_token = PyTuple_GET_ITEM(t, 11);
    p->token_costs = PyTuple_GET_ITEM(t, 12);
    if (!PyTuple_CheckExact(p->ignore_prefixes) || !PyDict_CheckExact(p->labels) ||
        !PyDict_Check(p->per_token) || !PyDict_Check(p->token_costs)) {
        PyErr_SetString(PyExc_TypeError, "select_roots: malformed plan");
        return -1;
    }
    p->lo = PyFloat_AsDouble(PyTuple_GET_ITEM(t, 13));
    p->hi = PyFloat_AsDouble(PyTuple_GET_ITEM(t, 14));
    p->max_gflops = PyFloat_AsDouble(PyTuple_GET_ITEM(t, 15));
    p->max_tokens = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 16));
    if (PyErr_Occurred() || learn_slots(p->span_type) < 0)
        return -1;
    memcpy(p->offsets, offsets, sizeof(offsets));
    return 0;
}

/* A model label as label() gave it (*model: a new reference, or NULL), the workload's
 * default where it is empty: 1, 2 fall back (no label: not a str), -1 error. */
static int
or_default(PyObject **model, PyObject *default_model)
{
    if (*model == NULL)
        return PyErr_Occurred() ? -1 : 2;
    if (PyUnicode_GET_LENGTH(*model) == 0)
        Py_SETREF(*model, Py_NewRef(default_model));
    return 1;
}

/* A request's work (a new reference in *work): its own GFLOPs (`gflops` when has_gflops,
 * range checked here) win, else its tokens (in_n, out_n:
 * -1 when absent, `tokens` whether any was given) priced by the model's GFLOPs per token,
 * else None. 0, 2 fall back (a model priced by its config, values out of range), -1 error. */
static int
work_of(const Plan *p, PyObject *model, int has_gflops, double gflops, int tokens,
        long long in_n, long long out_n, PyObject **work)
{
    *work = NULL;
    if (has_gflops) {
        if (!(0.0 <= gflops && gflops <= p->max_gflops))
            return 2;
        *work = PyFloat_FromDouble(gflops);
        return *work == NULL ? -1 : 0;
    }
    if (!tokens) {
        *work = Py_NewRef(Py_None);
        return 0;
    }
    PyObject *cost = PyDict_GetItemWithError(p->token_costs, model);
    if (cost != NULL)
        return 2; /* priced by the model's config: the Python path */
    if (PyErr_Occurred())
        return -1;
    PyObject *per = PyDict_GetItemWithError(p->per_token, model);
    if (per == NULL) {
        if (PyErr_Occurred())
            return -1;
        *work = Py_NewRef(Py_None);
        return 0;
    }
    if (!PyFloat_CheckExact(per))
        return 2;
    double g = (double)((in_n > 0 ? in_n : 0) + (out_n > 0 ? out_n : 0)) * PyFloat_AS_DOUBLE(per);
    if (!(g <= p->max_gflops))
        return 2;
    *work = PyFloat_FromDouble(g);
    return *work == NULL ? -1 : 0;
}

/* Appends the Span of these fields to out (the references are stolen, also on failure;
 * parent_id is ""): 1, or -1 on error. */
static int
append_span(const Plan *p, PyObject *values[N_FIELDS], PyObject *out)
{
    PyObject *obj = make_span(p->span_type, p->offsets, values);
    if (obj == NULL)
        return -1;
    int r = PyList_Append(out, obj) < 0 ? -1 : 1;
    Py_DECREF(obj);
    return r;
}

/* Result of one span: 1 a Span was appended, 0 not a request, 2 fall back, -1 error. */
static int
one_span(PyObject *tuple, PyObject *workload, PyObject *resource_model,
         PyObject *default_model, const Plan *p, PyObject *ns_per_s, PyObject *out)
{
    if (!PyTuple_CheckExact(tuple) || PyTuple_GET_SIZE(tuple) != 9)
        return 2;
    PyObject *trace_id = PyTuple_GET_ITEM(tuple, 0), *span_id = PyTuple_GET_ITEM(tuple, 1);
    PyObject *kind_o = PyTuple_GET_ITEM(tuple, 3), *start_o = PyTuple_GET_ITEM(tuple, 4);
    PyObject *end_o = PyTuple_GET_ITEM(tuple, 5), *name = PyTuple_GET_ITEM(tuple, 6);
    PyObject *links = PyTuple_GET_ITEM(tuple, 7), *attrs = PyTuple_GET_ITEM(tuple, 8);
    if (attrs != Py_None && !PyDict_CheckExact(attrs))
        return 2;
    if (attrs != Py_None) {
        PyObject *explicit = PyDict_GetItemWithError(attrs, p->request_key);
        if (explicit != NULL && PyBool_Check(explicit))
            return 2; /* the span says whether it is a request: rare, the Python path */
        if (explicit == NULL && PyErr_Occurred())
            return -1;
    }
    int ignored = is_ignored(name, p->ignore_prefixes);
    if (ignored < 0)
        return -1;
    if (ignored)
        return 0;
    long kind = PyLong_Check(kind_o) ? PyLong_AsLong(kind_o) : -1;
    if (kind == -1 && PyErr_Occurred())
        PyErr_Clear();
    if (kind != KIND_SERVER && kind != KIND_CONSUMER) {
        int has_links = PyObject_IsTrue(links);
        if (has_links < 0)
            return -1;
        if (has_links || (kind != KIND_UNSPECIFIED && kind != KIND_INTERNAL))
            return 0;
    }
    /* A request span: its values, as _select_roots then span_of read them. */
    if (!PyLong_CheckExact(start_o) || !PyLong_CheckExact(end_o))
        return 2;
    /* (input, output) tokens, a total alone standing in as input (decode._tokens). */
    PyObject *inp = first(attrs, p->input_names);
    if (PyErr_Occurred())
        return -1;
    PyObject *outp = first(attrs, p->output_names);
    if (PyErr_Occurred())
        return -1;
    if (inp == NULL && outp == NULL) {
        inp = first(attrs, p->total_names);
        if (PyErr_Occurred())
            return -1;
    }
    PyObject *model_v = first(attrs, p->model_names);
    if (PyErr_Occurred())
        return -1;
    PyObject *gflops_v = first(attrs, p->gflops_names);
    if (PyErr_Occurred())
        return -1;
    PyObject *route_v = attrs != Py_None ? PyDict_GetItemWithError(attrs, p->route_key) : NULL;
    if (PyErr_Occurred())
        return -1;
    if (model_v == NULL)
        model_v = resource_model;
    /* Times. */
    PyObject *start = PyObject_IsTrue(start_o) ? PyNumber_TrueDivide(start_o, ns_per_s)
                                               : PyFloat_FromDouble(0.0);
    if (start == NULL)
        return -1;
    PyObject *end = PyObject_IsTrue(end_o) ? PyNumber_TrueDivide(end_o, ns_per_s)
                                           : PyFloat_FromDouble(0.0);
    if (end == NULL) {
        Py_DECREF(start);
        return -1;
    }
    double s = PyFloat_AS_DOUBLE(start), e = PyFloat_AS_DOUBLE(end);
    PyObject *model = NULL, *route = NULL, *work = NULL, *trace = NULL, *span = NULL;
    int result = 2;
    if (!(0.0 < s && s <= e && p->lo <= e && e <= p->hi))
        goto done;
    /* Model: its label, else the workload's default. */
    model = model_v == Py_None ? Py_NewRef(default_model) : label(model_v, p->labels, p->label_of);
    if ((result = or_default(&model, default_model)) != 1)
        goto done;
    result = 2;
    /* Work: own GFLOPs win; else tokens priced by GFLOPs per token. */
    long long in_n = -1, out_n = -1;
    if (inp != NULL && (in_n = count_of(inp, p->max_tokens)) < 0)
        goto done;
    if (outp != NULL && (out_n = count_of(outp, p->max_tokens)) < 0)
        goto done;
    if (gflops_v != NULL && !PyFloat_CheckExact(gflops_v))
        goto done;
    int w = work_of(p, model, gflops_v != NULL, gflops_v ? PyFloat_AS_DOUBLE(gflops_v) : 0.0,
                    inp != NULL || outp != NULL, in_n, out_n, &work);
    if (w != 0) {
        result = w;
        goto done;
    }
    /* Route: its label, "" when not given. */
    if (route_v == NULL || route_v == Py_None) {
        route = PyUnicode_New(0, 0);
    }
    else {
        route = label(route_v, p->labels, p->label_of);
        if (route == NULL) {
            result = PyErr_Occurred() ? -1 : 2;
            goto done;
        }
    }
    if (route == NULL) {
        result = -1;
        goto done;
    }
    trace = hex_of(trace_id);
    if (trace == NULL) {
        result = -1;
        goto done;
    }
    span = hex_of(span_id);
    if (span == NULL) {
        result = -1;
        goto done;
    }
    if (trace == Py_None || span == Py_None)
        goto done;
    PyObject *empty = PyUnicode_New(0, 0);
    if (empty == NULL) {
        result = -1;
        goto done;
    }
    PyObject *values[N_FIELDS] = {
        Py_NewRef(workload), model, start, end, work, route, trace, span, empty,
        Py_NewRef(inp != NULL ? inp : Py_None), Py_NewRef(outp != NULL ? outp : Py_None),
    };
    model = start = end = work = route = trace = span = NULL; /* stolen by append_span */
    result = append_span(p, values, out);
done:
    Py_XDECREF(start);
    Py_XDECREF(end);
    Py_XDECREF(work);
    Py_XDECREF(route);
    Py_XDECREF(trace);
    Py_XDECREF(span);
    Py_XDECREF(model);
    return result;
}

/* ---- scan_roots: the same loop straight off the wire (no span tuple, no attribute dict) ----
 *
 * scan_roots(data, workload, resource_model, default_model, plan) -> (list[Span], seen) | None
 *
 * data: a serialized ScopeSpans that upb has accepted. Each span is read field by field (the
 * reading of _otlpscan.c, whose values it shares through _otlpwire.h) and, without its tuple,
 * judged and made a Span as one_span does: the same Spans in the same order, `seen` the
 * spans the scope holds. None as soon as a span has a parent (the body is not flat: the
 * caller's general path runs over all of it) or one_span would fall back. */

enum { MAX_KEYS = 32 };

/* The attribute keys the plan reads, each distinct key once as UTF-8, and each role's keys
 * in order (indices; a key that has no UTF-8, a lone surrogate, is never sent: -1). */
typedef struct {
    int n;
    const char *utf8[MAX_KEYS];
    Py_ssize_t len[MAX_KEYS];
    int role[5][MAX_KEYS]; /* model, gflops, input, output, total */
    int n_role[5];
    int route, request;
    int n_prefix;
    const char *prefix[MAX_KEYS];
    Py_ssize_t prefix_len[MAX_KEYS];
} Keys;

/* The index of `name` (a str) in k, added when new: >= 0, -1 for no UTF-8, -2 too many keys,
 * -3 on error. */
static int
key_index(Keys *k, PyObject *name)
{
    if (!PyUnicode_CheckExact(name)) {
        PyErr_SetString(PyExc_TypeError, "scan_roots: attribute names must be str");
        return -3;
    }
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(name, &len);
    if (utf8 == NULL) {
        PyErr_Clear();
        return -1;
    }
    for (int i = 0; i < k->n; i++)
        if (k->len[i] == len && memcmp(k->utf8[i], utf8, (size_t)len) == 0)
            return i;
    if (k->n == MAX_KEYS)
        return -2;
    k->utf8[k->n] = utf8;
    k->len[k->n] = len;
    return k->n++;
}

/* 0, 1 when the plan has more keys or prefixes than the table holds, -1 on error. */
static int
read_keys(const Plan *p, Keys *k)
{
    PyObject *roles[5] = {p->model_names, p->gflops_names, p->input_names, p->output_names,
                          p->total_names};
    k->n = 0;
    for (int r = 0; r < 5; r++) {
        Py_ssize_t n = PyTuple_GET_SIZE(roles[r]);
        if (n > MAX_KEYS)
            return 1;
        k->n_role[r] = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            int at = key_index(k, PyTuple_GET_ITEM(roles[r], i));
            if (at == -3)
                return -1;
            if (at == -2)
                return 1;
            if (at >= 0)
                k->role[r][k->n_role[r]++] = at;
        }
    }
    k->route = key_index(k, p->route_key);
    k->request = key_index(k, p->request_key);
    if (k->route == -3 || k->request == -3)
        return -1;
    if (k->route == -2 || k->request == -2)
        return 1;
    Py_ssize_t n = PyTuple_GET_SIZE(p->ignore_prefixes);
    if (n > MAX_KEYS)
        return 1;
    k->n_prefix = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *prefix = PyTuple_GET_ITEM(p->ignore_prefixes, i);
        if (!PyUnicode_Check(prefix))
            return 1; /* not what is_ignored compares: the tuple path */
        Py_ssize_t len;
        const char *utf8 = PyUnicode_AsUTF8AndSize(prefix, &len);
        if (utf8 == NULL) {
            PyErr_Clear(); /* a lone surrogate: no UTF-8 name starts with it */
            continue;
        }
        k->prefix[k->n_prefix] = utf8;
        k->prefix_len[k->n_prefix++] = len;
    }
    return 0;
}

/* A scalar AnyValue member: string, bool, int or double (any other is None to Python). */
static int
is_scalar(const AnyValue *av)
{
    return av->which >= 1 && av->which <= 4;
}

/* The first of a role's keys whose value is a scalar (``first``), or NULL. */
static const AnyValue *
first_of(const Keys *k, int role, const AnyValue *vals)
{
    for (int i = 0; i < k->n_role[role]; i++) {
        const AnyValue *v = &vals[k->role[role][i]];
        if (is_scalar(v))
            return v;
    }
    return NULL;
}

/* n / 1e9 correctly rounded (half to even), as Python's int true division gives it. */
static PyObject *
seconds_of(uint64_t n)
{
    if (n < (1ULL << 53)) /* both exact doubles: one IEEE division is correctly rounded */
        return PyFloat_FromDouble((double)n / 1e9);
#ifdef __SIZEOF_INT128__
    unsigned __int128 num = (unsigned __int128)n << 64;
    unsigned __int128 x = num / 1000000000u;
    int inexact = num % 1000000000u != 0;
    uint64_t hi = (uint64_t)(x >> 64);
    int bits = hi ? 128 - __builtin_clzll(hi) : 64 - __builtin_clzll((uint64_t)x);
    int shift = bits - 53; /* x >= 2^87: shift >= 35 */
    unsigned __int128 mant = x >> shift;
    unsigned __int128 low = x & (((unsigned __int128)1 << shift) - 1);
    unsigned __int128 half = (unsigned __int128)1 << (shift - 1);
    if (low > half || (low == half && (inexact || (mant & 1))))
        mant += 1;
    return PyFloat_FromDouble(ldexp((double)(uint64_t)mant, shift - 64));
#else
    PyObject *num = PyLong_FromUnsignedLongLong(n), *den = PyLong_FromLong(1000000000L);
    PyObject *q = num && den ? PyNumber_TrueDivide(num, den) : NULL;
    Py_XDECREF(num);
    Py_XDECREF(den);
    return q;
#endif
}

/* The labels of the string values met in one scope, by their bytes: a batch repeats a few
 * models and routes, each made a str and looked up once per scope (label() a new reference,
 * held here until the scope is done). */
enum { SEEN_LABELS = 16 };
typedef struct {
    int n;
    const uint8_t *bytes[SEEN_LABELS];
    Py_ssize_t len[SEEN_LABELS];
    PyObject *label[SEEN_LABELS];
} SeenLabels;

static void
seen_release(SeenLabels *seen)
{
    for (int i = 0; i < seen->n; i++)
        Py_DECREF(seen->label[i]);
    seen->n = 0;
}

/* label() of a string AnyValue (its UTF-8 checked by upb), a new reference; NULL as label(). */
static PyObject *
label_of_value(const AnyValue *av, const Plan *p, SeenLabels *seen)
{
    for (int i = 0; i < seen->n; i++)
        if (seen->len[i] == av->str_len && memcmp(seen->bytes[i], av->str, (size_t)av->str_len) == 0)
            return Py_NewRef(seen->label[i]);
    PyObject *text = PyUnicode_DecodeUTF8((const char *)av->str, av->str_len, NULL);
    if (text == NULL)
        return NULL;
    PyObject *got = label(text, p->labels, p->label_of);
    Py_DECREF(text);
    if (got != NULL && seen->n < SEEN_LABELS) {
        seen->bytes[seen->n] = av->str;
        seen->len[seen->n] = av->str_len;
        seen->label[seen->n++] = Py_NewRef(got);
    }
    return got;
}

typedef struct {
    const Keys *keys;
    AnyValue *vals;
} ValuesCtx;

/* One attribute: its value kept when the plan reads its key (the last copy of a key wins). */
static int
on_key_value(const uint8_t *data, Py_ssize_t len, void *ctx)
{
    const ValuesCtx *v = ctx;
    const Keys *k = v->keys;
    AnyValue av;
    const uint8_t *key;
    Py_ssize_t key_len;
    if (read_key_value(data, len, &key, &key_len, &av) < 0)
        return -1;
    for (int i = 0; i < k->n; i++) {
        if (k->len[i] == key_len && memcmp(k->utf8[i], key, (size_t)key_len) == 0) {
            v->vals[i] = av;
            break;
        }
    }
    return 0;
}

/* One serialized Span: 1 a Span was appended, 0 not a request, 2 fall back (also: it has a
 * parent), -1 error. */
static int
wire_span(const uint8_t *data, Py_ssize_t len, PyObject *workload, PyObject *resource_model,
          PyObject *default_model, const Plan *p, const Keys *k, SeenLabels *seen,
          PyObject *out)
{
    SpanFields sf;
    AnyValue vals[MAX_KEYS];
    for (int i = 0; i < k->n; i++)
        vals[i].which = 0;
    ValuesCtx ctx = {k, vals};
    if (read_span_fields(data, len, &sf, on_key_value, &ctx) < 0)
        return -1;
    const uint8_t *const *text = sf.text;
    const Py_ssize_t *text_len = sf.text_len;
    uint64_t start_ns = sf.start_ns, end_ns = sf.end_ns;
    int has_links = sf.has_links;
    const uint8_t *name = text[5];
    Py_ssize_t name_len = text_len[5];
    if (text_len[4] > 0)
        return 2; /* a parent */
    if (k->request >= 0 && vals[k->request].which == 2)
        return 2; /* the span says whether it is a request: rare, the Python path */
    if (name_len > 0) {
        for (int i = 0; i < k->n_prefix; i++)
            if (k->prefix_len[i] <= name_len &&
                memcmp(k->prefix[i], name, (size_t)k->prefix_len[i]) == 0)
                return 0;
    }
    long long kind = enum_value(sf.kind);
    if (kind != KIND_SERVER && kind != KIND_CONSUMER &&
        (has_links || (kind != KIND_UNSPECIFIED && kind != KIND_INTERNAL)))
        return 0;
    /* A request span: its values, as one_span reads them off the tuple. */
    const AnyValue *inp = first_of(k, 2, vals), *outp = first_of(k, 3, vals);
    if (inp == NULL && outp == NULL)
        inp = first_of(k, 4, vals);
    const AnyValue *model_v = first_of(k, 0, vals), *gflops_v = first_of(k, 1, vals);
    const AnyValue *route_v = k->route >= 0 && is_scalar(&vals[k->route]) ? &vals[k->route]
                                                                          : NULL;
    PyObject *start = start_ns ? seconds_of(start_ns) : PyFloat_FromDouble(0.0);
    if (start == NULL)
        return -1;
    PyObject *end = end_ns ? seconds_of(end_ns) : PyFloat_FromDouble(0.0);
    if (end == NULL) {
        Py_DECREF(start);
        return -1;
    }
    double s = PyFloat_AS_DOUBLE(start), e = PyFloat_AS_DOUBLE(end);
    PyObject *model = NULL, *route = NULL, *work = NULL, *trace = NULL, *span = NULL;
    PyObject *inp_o = NULL, *outp_o = NULL;
    int result = 2;
    if (!(0.0 < s && s <= e && p->lo <= e && e <= p->hi))
        goto done;
    /* Model: its label, else the workload's default (a str value only: label()). */
    if (model_v != NULL) {
        if (model_v->which != 1)
            goto done;
        model = label_of_value(model_v, p, seen);
    }
    else if (resource_model == Py_None) {
        model = Py_NewRef(default_model);
    }
    else {
        model = label(resource_model, p->labels, p->label_of);
    }
    if ((result = or_default(&model, default_model)) != 1)
        goto done;
    result = 2;
    /* Token counts: exact ints in [0, max]. */
    long long in_n = -1, out_n = -1;
    if (inp != NULL) {
        if (inp->which != 3 || (int64_t)inp->value < 0 || (int64_t)inp->value > p->max_tokens)
            goto done;
        in_n = (long long)(int64_t)inp->value;
    }
    if (outp != NULL) {
        if (outp->which != 3 || (int64_t)outp->value < 0 || (int64_t)outp->value > p->max_tokens)
            goto done;
        out_n = (long long)(int64_t)outp->value;
    }
    /* Work: own GFLOPs (a double only) win; else tokens priced by GFLOPs per token. */
    if (gflops_v != NULL && gflops_v->which != 4)
        goto done;
    union {
        uint64_t u;
        double d;
    } bits = {gflops_v != NULL ? gflops_v->value : 0};
    int w = work_of(p, model, gflops_v != NULL, bits.d, inp != NULL || outp != NULL, in_n,
                    out_n, &work);
    if (w != 0) {
        result = w;
        goto done;
    }
    /* Route: its label (a str value only), "" when not given. */
    if (route_v == NULL) {
        route = PyUnicode_New(0, 0);
    }
    else {
        if (route_v->which != 1)
            goto done;
        route = label_of_value(route_v, p, seen);
        if (route == NULL) {
            result = PyErr_Occurred() ? -1 : 2;
            goto done;
        }
    }
    if (route == NULL) {
        result = -1;
        goto done;
    }
    if ((trace = hex_bytes(text[1], text_len[1])) == NULL ||
        (span = hex_bytes(text[2], text_len[2])) == NULL) {
        result = -1;
        goto done;
    }
    inp_o = inp != NULL ? PyLong_FromLongLong(in_n) : Py_NewRef(Py_None);
    outp_o = outp != NULL ? PyLong_FromLongLong(out_n) : Py_NewRef(Py_None);
    PyObject *empty = PyUnicode_New(0, 0);
    if (inp_o == NULL || outp_o == NULL || empty == NULL) {
        Py_XDECREF(empty);
        result = -1;
        goto done;
    }
    PyObject *values[N_FIELDS] = {
        Py_NewRef(workload), model, start, end, work, route, trace, span, empty, inp_o, outp_o,
    };
    model = start = end = work = route = trace = span = inp_o = outp_o = NULL; /* stolen */
    result = append_span(p, values, out);
done:
    Py_XDECREF(start);
    Py_XDECREF(end);
    Py_XDECREF(work);
    Py_XDECREF(route);
    Py_XDECREF(trace);
    Py_XDECREF(span);
    Py_XDECREF(model);
    Py_XDECREF(inp_o);
    Py_XDECREF(outp_o);
    return result;
}

static PyObject *
py_scan_roots(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "scan_roots takes 5 arguments");
        return NULL;
    }
    PyObject *workload = args[1], *resource_model = args[2], *default_model = args[3];
    if (!PyUnicode_CheckExact(workload) || !PyUnicode_CheckExact(default_model)) {
        PyErr_SetString(PyExc_TypeError, "scan_roots(data, str, model, str, plan)");
        return NULL;
    }
    Plan plan;
    if (read_plan(args[4], &plan) < 0)
        return NULL;
    Keys keys;
    int r = read_keys(&plan, &keys);
    if (r != 0) {
        if (r < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = PyList_New(0), *result = NULL;
    Py_ssize_t spans = 0;
    SeenLabels seen = {0};
    if (out == NULL)
        goto done;
    Cursor c = {view.buf, (const uint8_t *)view.buf + view.len};
    Field f;
    while ((r = each_field(&c, &f)) > 0) {
        if (f.number != 2 || f.wire_type != WT_LEN)
            continue; /* ScopeSpans.scope, schema_url, unknown fields */
        spans++;
        r = wire_span(f.data, f.len, workload, resource_model, default_model, &plan, &keys,
                      &seen, out);
        if (r < 0)
            break;
        if (r == 2) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    if (r >= 0)
        result = Py_BuildValue("(On)", out, spans);
done:
    seen_release(&seen);
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *ns_per_s_obj = NULL;

static PyObject *
py_select_roots(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "select_roots takes 5 arguments");
        return NULL;
    }
    PyObject *tuples = args[0], *workload = args[1], *resource_model = args[2];
    PyObject *default_model = args[3];
    if (!PyList_CheckExact(tuples) || !PyUnicode_CheckExact(workload) ||
        !PyUnicode_CheckExact(default_model)) {
        PyErr_SetString(PyExc_TypeError, "select_roots(list, str, model, str, plan)");
        return NULL;
    }
    Plan plan;
    if (read_plan(args[4], &plan) < 0)
        return NULL;
    if (ns_per_s_obj == NULL && (ns_per_s_obj = PyLong_FromLong(1000000000L)) == NULL)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(tuples); i++) {
        int r = one_span(PyList_GET_ITEM(tuples, i), workload, resource_model, default_model,
                         &plan, ns_per_s_obj, out);
        if (r < 0) {
            Py_DECREF(out);
            return NULL;
        }
        if (r == 2) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
    }
    return out;
}

static PyMethodDef methods[] = {
    {"select_roots", (PyCFunction)(void (*)(void))py_select_roots, METH_FASTCALL,
     "select_roots(tuples, workload, resource_model, default_model, plan) -> list of Span, "
     "or None: run the Python path over this group"},
    {"scan_roots", (PyCFunction)(void (*)(void))py_scan_roots, METH_FASTCALL,
     "scan_roots(data, workload, resource_model, default_model, plan) -> (list of Span, "
     "spans seen) of a serialized ScopeSpans, or None: run the general path over the body"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "jouled.ingest._roots",
    "The request spans of a flat batch, validated (see jouled/ingest/decode.py).",
    0, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__roots(void)
{
    return PyModuleDef_Init(&module_def);
}

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

/* A new Span with its fields set from `values` (new references, stolen, all non-NULL). */
static PyObject *
make_span(PyTypeObject *type, PyObject *values[N_FIELDS])
{
    PyObject *span = type->tp_alloc(type, 0);
    if (span == NULL) {
        for (int i = 0; i < N_FIELDS; i++)
            Py_DECREF(values[i]);
        return NULL;
    }
    for (int i = 0; i < N_FIELDS; i++)
        *(PyObject **)((char *)span + offsets[i]) = values[i];
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

static PyObject *
hex_of(PyObject *id)
{
    static const char digits[] = "0123456789abcdef";
    if (PyUnicode_CheckExact(id))
        return Py_NewRef(id); /* OTLP/JSON: hex already */
    if (!PyBytes_CheckExact(id))
        return Py_NewRef(Py_None); /* not plain: the caller falls back */
    Py_ssize_t n = PyBytes_GET_SIZE(id);
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(id);
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
    if (PyErr_Occurred())
        return -1;
    return learn_slots(p->span_type);
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
    if (model_v == Py_None) {
        model = Py_NewRef(default_model);
    }
    else {
        model = label(model_v, p->labels, p->label_of);
        if (model == NULL) {
            result = PyErr_Occurred() ? -1 : 2;
            goto done;
        }
        if (PyUnicode_GET_LENGTH(model) == 0)
            Py_SETREF(model, Py_NewRef(default_model));
    }
    /* Work: own GFLOPs win; else tokens priced by GFLOPs per token. */
    long long in_n = -1, out_n = -1;
    if (inp != NULL && (in_n = count_of(inp, p->max_tokens)) < 0)
        goto done;
    if (outp != NULL && (out_n = count_of(outp, p->max_tokens)) < 0)
        goto done;
    if (gflops_v != NULL) {
        if (!PyFloat_CheckExact(gflops_v))
            goto done;
        double g = PyFloat_AS_DOUBLE(gflops_v);
        if (!(0.0 <= g && g <= p->max_gflops))
            goto done;
        work = Py_NewRef(gflops_v);
    }
    else if (inp != NULL || outp != NULL) {
        PyObject *cost = PyDict_GetItemWithError(p->token_costs, model);
        if (cost != NULL)
            goto done; /* priced by the model's config: the Python path */
        if (PyErr_Occurred()) {
            result = -1;
            goto done;
        }
        PyObject *per = PyDict_GetItemWithError(p->per_token, model);
        if (per == NULL) {
            if (PyErr_Occurred()) {
                result = -1;
                goto done;
            }
            work = Py_NewRef(Py_None);
        }
        else {
            if (!PyFloat_CheckExact(per))
                goto done;
            double g = (double)((in_n > 0 ? in_n : 0) + (out_n > 0 ? out_n : 0)) *
                       PyFloat_AS_DOUBLE(per);
            if (!(g <= p->max_gflops))
                goto done;
            work = PyFloat_FromDouble(g);
            if (work == NULL) {
                result = -1;
                goto done;
            }
        }
    }
    else {
        work = Py_NewRef(Py_None);
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
    model = start = end = work = route = trace = span = NULL; /* stolen by make_span */
    PyObject *obj = make_span(p->span_type, values);
    if (obj == NULL) {
        result = -1;
        goto done;
    }
    result = PyList_Append(out, obj) < 0 ? -1 : 1;
    Py_DECREF(obj);
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

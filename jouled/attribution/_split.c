/* jouled.attribution._split: ``split_fractions`` in C, value for value.
 *
 * split_fractions(spans, w0, w1) -> (outside, fractions) | None
 *
 * The compiled twin of ``jouled.attribution.spans.py_split_fractions`` (read its docstring
 * for the rule): the fractions of a tick [w0, w1) going outside spans and to each span of
 * ``spans``, a list (or tuple) of (start, end, rate, known) tuples. Every value is the
 * Python function's, bit for bit: the same double operations in the same order, the same
 * segment trees, and where Python sums exactly (``math.fsum``; the rate sums in exact
 * integers) an exact fixed-point sum rounded once to nearest, ties to even, as they are.
 * It returns None, leaving the call to the Python function, for anything outside the plain
 * case: w0, w1, a start or an end that is not a finite float, a rate that is not a float,
 * ``known`` that is not a bool, an item that is not a 4-tuple; and for bounds so far apart
 * (~1e308) that the tick's length or its gaps' sum overflows, where Python's ``math.fsum``
 * raises OverflowError (so the caller gets that error).
 *
 * Built with -ffp-contract=off (setup.py): a fused multiply-add would round once where
 * Python rounds twice.
 *
 * Time O(n log n); memory O(n), freed before returning.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- exact sums ------------------------------------------------------------------------
 * A two's-complement integer in units of 2^-1074 (the least subnormal): any finite double
 * is an integer there, and NL limbs hold 2^1024 x 2^40 terms with room for the sign. */
enum { NL = 36 };
typedef struct {
    uint64_t w[NL];
} Acc;

#define MIN_RATE 1e-200
#define MAX_RATE 1e200

/* Add (sub = 0) or subtract (sub = 1) the finite double x, exactly (callers pass finite
 * values only: frexp of an infinity leaves the exponent unset on some C libraries). */
static void
acc_add(Acc *a, double x, int sub)
{
    if (x == 0.0 || !isfinite(x)) {
        return;
    }
    if (x < 0.0) {
        x = -x;
        sub = !sub;
    }
    int e;
    double m = frexp(x, &e); /* x = m * 2^e, 0.5 <= m < 1 */
    uint64_t mant = (uint64_t)ldexp(m, 53); /* exact: 2^52 <= mant < 2^53 */
    int shift = e - 53 + 1074; /* x = mant units << shift */
    if (shift < 0) { /* a subnormal: the bits shifted out are zero */
        mant >>= -shift;
        shift = 0;
    }
    int limb = shift / 64, bit = shift % 64;
    unsigned __int128 v = (unsigned __int128)mant << bit;
    uint64_t part[2] = {(uint64_t)v, (uint64_t)(v >> 64)};
    if (!sub) {
        uint64_t carry = 0;
        for (int k = limb; k < NL && (k < limb + 2 || carry); k++) {
            unsigned __int128 s = (unsigned __int128)a->w[k] + carry
                                  + (k < limb + 2 ? part[k - limb] : 0);
            a->w[k] = (uint64_t)s;
            carry = (uint64_t)(s >> 64);
        }
    }
    else {
        uint64_t borrow = 0;
        for (int k = limb; k < NL && (k < limb + 2 || borrow); k++) {
            uint64_t p = k < limb + 2 ? part[k - limb] : 0;
            uint64_t w = a->w[k];
            uint64_t d = w - p - borrow;
            borrow = (w < p) || (w - p < borrow);
            a->w[k] = d;
        }
    }
}

static int
acc_negative(const Acc *a)
{
    return (a->w[NL - 1] >> 63) != 0;
}

static int
acc_zero(const Acc *a)
{
    for (int k = 0; k < NL; k++) {
        if (a->w[k]) {
            return 0;
        }
    }
    return 1;
}

/* The (non-negative) sum rounded to the nearest double, ties to even, as math.fsum and
 * CPython's int-to-float and int/int division round. */
static double
acc_value(const Acc *a)
{
    int top = NL - 1;
    while (top >= 0 && a->w[top] == 0) {
        top--;
    }
    if (top < 0) {
        return 0.0;
    }
    int nbits = top * 64 + (64 - __builtin_clzll(a->w[top])); /* value < 2^nbits units */
    if (nbits <= 53) { /* exact (every subnormal is here) */
        return ldexp((double)a->w[0], -1074);
    }
    uint64_t hi; /* the top 64 bits: value = hi * 2^low + (the bits below, sticky) */
    int sticky = 0;
    int low = nbits - 64;
    if (low <= 0) {
        hi = a->w[0] << -low;
    }
    else {
        int limb = low / 64, off = low % 64;
        hi = a->w[limb] >> off;
        if (off) {
            hi |= a->w[limb + 1] << (64 - off);
            sticky = (a->w[limb] & ((UINT64_C(1) << off) - 1)) != 0;
        }
        for (int k = 0; k < limb && !sticky; k++) {
            sticky = a->w[k] != 0;
        }
    }
    uint64_t mant = hi >> 11, rest = hi & 0x7FF;
    if (rest > 0x400 || (rest == 0x400 && (sticky || (mant & 1)))) {
        mant++;
    }
    return ldexp((double)mant, low + 11 - 1074);
}

/* ---- the segment tree of spans.py's _RangeSum ------------------------------------------ */

/* tree[n + i] = values[i]; tree[k] = tree[2k] + tree[2k + 1] for k = n - 1 .. 1. */
static void
tree_build(double *tree, const double *values, Py_ssize_t n)
{
    tree[0] = 0.0;
    memcpy(tree + n, values, (size_t)n * sizeof(double));
    for (Py_ssize_t k = n - 1; k > 0; k--) {
        tree[k] = tree[2 * k] + tree[2 * k + 1];
    }
}

static double
tree_sum(const double *tree, Py_ssize_t n, Py_ssize_t lo, Py_ssize_t hi)
{
    double total = 0.0;
    lo += n;
    hi += n;
    while (lo < hi) {
        if (lo & 1) {
            total += tree[lo];
            lo++;
        }
        if (hi & 1) {
            hi--;
            total += tree[hi];
        }
        lo >>= 1;
        hi >>= 1;
    }
    return total;
}

/* ---- split_fractions -------------------------------------------------------------------- */

typedef struct {
    double start;
    Py_ssize_t i;
} ByStart;

static int
cmp_by_start(const void *pa, const void *pb)
{
    const ByStart *a = pa, *b = pb;
    if (a->start != b->start) {
        return a->start < b->start ? -1 : 1;
    }
    return (a->i > b->i) - (a->i < b->i); /* stable, as Python's sorted */
}

static int
cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

static Py_ssize_t
point_index(const double *points, Py_ssize_t n, double t)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (points[mid] < t) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
}

static double
clamp_rate(double rate)
{
    if (!(rate >= MIN_RATE)) { /* NaN lands here too */
        return 0.0;
    }
    return MAX_RATE < rate ? MAX_RATE : rate;
}

/* Scratch for one cluster, grown as needed and freed by the caller. */
typedef struct {
    double *points, *rates, *by_rate, *equal, *rate_tree, *equal_tree;
    Py_ssize_t *a, *b, *ev_start, *ev_count;
    Py_ssize_t *events;
    Py_ssize_t cap;
} Scratch;

static void
scratch_free(Scratch *s)
{
    PyMem_Free(s->points);
    PyMem_Free(s->rates);
    PyMem_Free(s->by_rate);
    PyMem_Free(s->equal);
    PyMem_Free(s->rate_tree);
    PyMem_Free(s->equal_tree);
    PyMem_Free(s->a);
    PyMem_Free(s->b);
    PyMem_Free(s->ev_start);
    PyMem_Free(s->ev_count);
    PyMem_Free(s->events);
    memset(s, 0, sizeof *s);
}

static int
scratch_reserve(Scratch *s, Py_ssize_t m)
{
    if (m <= s->cap) {
        return 0;
    }
    scratch_free(s);
    size_t p = 2 * (size_t)m + 1;
    s->points = PyMem_Malloc(p * sizeof(double));
    s->rates = PyMem_Malloc((size_t)m * sizeof(double));
    s->by_rate = PyMem_Malloc(p * sizeof(double));
    s->equal = PyMem_Malloc(p * sizeof(double));
    s->rate_tree = PyMem_Malloc(2 * p * sizeof(double));
    s->equal_tree = PyMem_Malloc(2 * p * sizeof(double));
    s->a = PyMem_Malloc((size_t)m * sizeof(Py_ssize_t));
    s->b = PyMem_Malloc((size_t)m * sizeof(Py_ssize_t));
    s->ev_start = PyMem_Malloc((p + 1) * sizeof(Py_ssize_t));
    s->ev_count = PyMem_Malloc((p + 1) * sizeof(Py_ssize_t));
    s->events = PyMem_Malloc(2 * (size_t)m * sizeof(Py_ssize_t));
    if (!s->points || !s->rates || !s->by_rate || !s->equal || !s->rate_tree
        || !s->equal_tree || !s->a || !s->b || !s->ev_start || !s->ev_count || !s->events) {
        scratch_free(s);
        PyErr_NoMemory();
        return -1;
    }
    s->cap = m;
    return 0;
}

/* spans.py's _cluster_shares: the shares of the m >= 2 overlapping spans cluster[] into
 * raw[]. 0, or -1 with an exception; 1 when a rate sum came out negative (cannot happen:
 * the caller falls back to Python). */
static int
cluster_shares(const Py_ssize_t *cluster, Py_ssize_t m, const double *S, const double *E,
               const double *R, const char *K, double length, double *raw, Scratch *sc)
{
    if (scratch_reserve(sc, m) < 0) {
        return -1;
    }
    double *points = sc->points;
    Py_ssize_t np = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        points[np++] = S[cluster[j]];
        points[np++] = E[cluster[j]];
    }
    qsort(points, (size_t)np, sizeof(double), cmp_double);
    Py_ssize_t u = 0; /* distinct values (0.0 and -0.0 are one, as in a Python set) */
    for (Py_ssize_t k = 0; k < np; k++) {
        if (u == 0 || points[k] != points[u - 1]) {
            points[u++] = points[k];
        }
    }
    np = u;
    Py_ssize_t nseg = np - 1;
    /* Events bucketed by point: each member starts at a[j] and ends at b[j]. */
    memset(sc->ev_count, 0, (size_t)(np + 1) * sizeof(Py_ssize_t));
    for (Py_ssize_t j = 0; j < m; j++) {
        Py_ssize_t c = cluster[j];
        sc->a[j] = point_index(points, np, S[c]);
        sc->b[j] = point_index(points, np, E[c]);
        sc->rates[j] = clamp_rate(R[c]);
        sc->ev_count[sc->a[j] + 1]++;
        sc->ev_count[sc->b[j] + 1]++;
    }
    sc->ev_start[0] = 0;
    for (Py_ssize_t k = 0; k < np; k++) {
        sc->ev_start[k + 1] = sc->ev_start[k] + sc->ev_count[k + 1];
        sc->ev_count[k + 1] = 0;
    }
    for (Py_ssize_t j = 0; j < m; j++) { /* event = 2j (a start) or 2j + 1 (an end) */
        Py_ssize_t k = sc->a[j];
        sc->events[sc->ev_start[k] + sc->ev_count[k + 1]++] = 2 * j;
        k = sc->b[j];
        sc->events[sc->ev_start[k] + sc->ev_count[k + 1]++] = 2 * j + 1;
    }
    Acc rate_sum;
    memset(&rate_sum, 0, sizeof rate_sum);
    Py_ssize_t count = 0, unknown = 0;
    for (Py_ssize_t k = 0; k < nseg; k++) {
        for (Py_ssize_t q = sc->ev_start[k]; q < sc->ev_start[k + 1]; q++) {
            Py_ssize_t j = sc->events[q] / 2;
            int end = (int)(sc->events[q] & 1);
            count += end ? -1 : 1;
            if (!K[cluster[j]]) {
                unknown += end ? -1 : 1;
            }
            acc_add(&rate_sum, sc->rates[j], end);
        }
        double seg = points[k + 1] - points[k];
        sc->by_rate[k] = 0.0;
        sc->equal[k] = 0.0;
        if (acc_negative(&rate_sum)) {
            return 1;
        }
        if (unknown == 0 && !acc_zero(&rate_sum)) {
            sc->by_rate[k] = (seg / length) / acc_value(&rate_sum);
        }
        else if (count) {
            sc->equal[k] = (seg / length) / (double)count;
        }
    }
    tree_build(sc->rate_tree, sc->by_rate, nseg);
    tree_build(sc->equal_tree, sc->equal, nseg);
    for (Py_ssize_t j = 0; j < m; j++) {
        double by_rate = tree_sum(sc->rate_tree, nseg, sc->a[j], sc->b[j]);
        double share = sc->rates[j] * by_rate;
        raw[cluster[j]] = share + tree_sum(sc->equal_tree, nseg, sc->a[j], sc->b[j]);
    }
    return 0;
}

static PyObject *
result(double outside, const double *fractions, Py_ssize_t n, double scale)
{
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyFloat_FromDouble(fractions ? fractions[i] * scale : 0.0);
        if (f == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, f);
    }
    PyObject *out = Py_BuildValue("(dN)", outside, list);
    return out;
}

static int
finite_float(PyObject *o, double *out)
{
    if (!PyFloat_CheckExact(o)) {
        return 0;
    }
    *out = PyFloat_AS_DOUBLE(o);
    return isfinite(*out);
}

static PyObject *
py_split_fractions(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "split_fractions(spans, w0, w1) takes 3 arguments");
        return NULL;
    }
    double w0, w1;
    /* The spans as a list or tuple of (start, end, rate, has_rate) tuples, or packed: bytes
     * of four doubles a span, has_rate 0.0 or 1.0 (``_pending.rates``). */
    PyObject *seq = args[0];
    int packed = PyBytes_CheckExact(seq);
    if (!(packed || PyList_CheckExact(seq) || PyTuple_CheckExact(seq))
        || (packed && PyBytes_GET_SIZE(seq) % (4 * (Py_ssize_t)sizeof(double)) != 0)
        || !finite_float(args[1], &w0) || !finite_float(args[2], &w1)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t n = packed ? PyBytes_GET_SIZE(seq) / (4 * (Py_ssize_t)sizeof(double))
                          : PySequence_Fast_GET_SIZE(seq);
    PyObject **items = packed ? NULL : PySequence_Fast_ITEMS(seq);
    const char *bytes = packed ? PyBytes_AS_STRING(seq) : NULL;
    double *S = PyMem_Malloc((size_t)(n ? n : 1) * 4 * sizeof(double));
    char *K = PyMem_Malloc((size_t)(n ? n : 1));
    ByStart *order = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(ByStart));
    Py_ssize_t *cluster = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    Scratch sc;
    memset(&sc, 0, sizeof sc);
    PyObject *out = NULL;
    if (!S || !K || !order || !cluster) {
        PyErr_NoMemory();
        goto done;
    }
    double *E = S + n, *R = S + 2 * n, *raw = S + 3 * n;
    Py_ssize_t n_open = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double s, e;
        if (packed) {
            double v[4];
            memcpy(v, bytes + i * (Py_ssize_t)sizeof v, sizeof v);
            s = v[0];
            e = v[1];
            R[i] = v[2];
            K[i] = v[3] != 0.0;
            if (!isfinite(s) || !isfinite(e) || (v[3] != 0.0 && v[3] != 1.0)) {
                out = Py_None;
                Py_INCREF(out);
                goto done;
            }
        }
        else {
            PyObject *t = items[i];
            if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 4
                || !finite_float(PyTuple_GET_ITEM(t, 0), &s)
                || !finite_float(PyTuple_GET_ITEM(t, 1), &e)
                || !PyFloat_CheckExact(PyTuple_GET_ITEM(t, 2))
                || !PyBool_Check(PyTuple_GET_ITEM(t, 3))) {
                out = Py_None;
                Py_INCREF(out);
                goto done;
            }
            R[i] = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(t, 2));
            K[i] = PyTuple_GET_ITEM(t, 3) == Py_True;
        }
        S[i] = w0 > s ? w0 : s; /* max(s, w0): the first unless the second is larger */
        E[i] = w1 < e ? w1 : e; /* min(e, w1) */
        raw[i] = 0.0;
        if (E[i] > S[i]) {
            order[n_open].start = S[i];
            order[n_open].i = i;
            n_open++;
        }
    }
    double length = w1 - w0;
    if (!isfinite(length)) { /* bounds ~1e308 apart: Python's fsum overflows and says so */
        out = Py_None;
        Py_INCREF(out);
        goto done;
    }
    if (length <= 0.0 || n_open == 0) {
        out = result(1.0, NULL, n, 0.0);
        goto done;
    }
    qsort(order, (size_t)n_open, sizeof(ByStart), cmp_by_start);
    Acc gaps;
    memset(&gaps, 0, sizeof gaps);
    Py_ssize_t size = 0;
    double cluster_end = w0;
    for (Py_ssize_t q = 0; q <= n_open; q++) {
        Py_ssize_t i = q < n_open ? order[q].i : -1;
        if (i >= 0 && S[i] < cluster_end) { /* overlaps the cluster (touching is not) */
            cluster[size++] = i;
            if (E[i] > cluster_end) {
                cluster_end = E[i];
            }
            continue;
        }
        if (size == 1) { /* a span alone: its time's share */
            Py_ssize_t c = cluster[0];
            raw[c] = (E[c] - S[c]) / length;
        }
        else if (size > 1) {
            int rc = cluster_shares(cluster, size, S, E, R, K, length, raw, &sc);
            if (rc < 0) {
                goto done;
            }
            if (rc > 0) {
                out = Py_None;
                Py_INCREF(out);
                goto done;
            }
        }
        if (i < 0) {
            break;
        }
        acc_add(&gaps, S[i] - cluster_end, 0);
        cluster[0] = i;
        size = 1;
        cluster_end = E[i];
    }
    acc_add(&gaps, w1 - cluster_end, 0);
    double gap_sum = acc_value(&gaps);
    if (!isfinite(gap_sum)) { /* rounds past DBL_MAX: math.fsum raises OverflowError */
        out = Py_None;
        Py_INCREF(out);
        goto done;
    }
    double outside = gap_sum / length;
    if (!(outside < 1.0)) {
        outside = 1.0; /* min(1.0, x) */
    }
    Acc sum;
    memset(&sum, 0, sizeof sum);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!(raw[i] >= 0.0 && isfinite(raw[i]))) {
            out = Py_None;
            Py_INCREF(out);
            goto done;
        }
        acc_add(&sum, raw[i], 0);
    }
    double total = acc_value(&sum);
    if (!isfinite(total)) {
        out = Py_None;
        Py_INCREF(out);
        goto done;
    }
    if (total <= 0.0) {
        out = result(1.0, NULL, n, 0.0);
        goto done;
    }
    out = result(outside, raw, n, (1.0 - outside) / total);
done:
    scratch_free(&sc);
    PyMem_Free(S);
    PyMem_Free(K);
    PyMem_Free(order);
    PyMem_Free(cluster);
    return out;
}

/* fsum(values) -> float | None: math.fsum by the exact sum above, for the tests (None for
 * anything but a list of finite floats, and where the sum is negative or rounds past
 * DBL_MAX; math.fsum may also raise OverflowError on the way to a finite sum). */
static PyObject *
py_fsum(PyObject *Py_UNUSED(module), PyObject *values)
{
    if (!PyList_CheckExact(values)) {
        Py_RETURN_NONE;
    }
    Acc sum;
    memset(&sum, 0, sizeof sum);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
        double x;
        if (!finite_float(PyList_GET_ITEM(values, i), &x)) {
            Py_RETURN_NONE;
        }
        acc_add(&sum, x, 0);
    }
    double total = acc_negative(&sum) ? -1.0 : acc_value(&sum);
    if (!(total >= 0.0 && isfinite(total))) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(total);
}

static PyMethodDef methods[] = {
    {"fsum", (PyCFunction)py_fsum, METH_O,
     "fsum(values) -> float | None: math.fsum of a list of finite floats whose sum is >= 0 "
     "and finite, by the exact sum split_fractions uses (for tests); None otherwise."},
    {"split_fractions", (PyCFunction)(void (*)(void))py_split_fractions, METH_FASTCALL,
     "split_fractions(spans, w0, w1) -> (outside, fractions) | None: spans.py's "
     "py_split_fractions, value for value; None where the Python function must run."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "jouled.attribution._split",
    "split_fractions in C (see jouled/attribution/spans.py).", 0, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__split(void)
{
    return PyModuleDef_Init(&module_def);
}

/* The protobuf wire format as jouled reads OTLP spans: shared by the span scanner
 * (_otlpscan.c) and the request selector (_roots.c). Encoding: the protobuf wire-format spec
 * (https://protobuf.dev/programming-guides/encoding/); semantics those of upb on valid input
 * (a scalar seen twice keeps the last, a message seen twice merges, a field of an unexpected
 * wire type is an unknown field and skipped, as are unknown fields, groups included).
 * Malformed input raises ValueError. Static functions: each extension has its own copy. */
#ifndef JOULED_OTLPWIRE_H
#define JOULED_OTLPWIRE_H
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

/* A field's tag into *number and *wire_type, as upb reads it: at most 5 bytes, a 32-bit
 * value, field number 0 refused except in a group being skipped (``in_group``, which upb
 * takes). 0, or -1 with ValueError. */
static int
read_tag(Cursor *c, int in_group, uint32_t *number, int *wire_type)
{
    const uint8_t *start = c->p;
    uint64_t tag;
    if (read_varint(c, &tag) < 0)
        return -1;
    if (c->p - start > 5 || tag > UINT32_MAX)
        return fail("field tag too long");
    *number = (uint32_t)(tag >> 3);
    *wire_type = (int)(tag & 7);
    if (*number == 0 && !in_group)
        return fail("field number 0");
    return 0;
}

/* A delimited field's length into *n, as upb's ReadSize takes it (at most 5 bytes, under
 * 2 GiB), within what is left of c; c then points at its payload. 0, or -1 with ValueError. */
static int
read_length(Cursor *c, uint64_t *n)
{
    const uint8_t *start = c->p;
    if (read_varint(c, n) < 0)
        return -1;
    if (c->p - start > 5 || *n >= INT32_MAX)
        return fail("length over 5 bytes or 2 GiB");
    if (*n > (uint64_t)(c->end - c->p))
        return fail("length past the end of the message");
    return 0;
}

static int skip_group(Cursor *c, uint32_t number, int depth);

/* The next field of c into f: 0, or 1 for an end-group tag (f->number set), -1 on error.
 * A start-group field is skipped whole and reported with wire type WT_SGROUP. */
static int
next_field(Cursor *c, Field *f, int depth)
{
    uint64_t n;
    if (read_tag(c, depth > 0, &f->number, &f->wire_type) < 0)
        return -1;
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
        if (read_length(c, &n) < 0)
            return -1;
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

/* One serialized KeyValue: its key's bytes (the last key field; empty when none) and its
 * value merged into *av (zeroed first). 0, or -1 on error. */
static int
read_key_value(const uint8_t *data, Py_ssize_t len, const uint8_t **key, Py_ssize_t *key_len,
               AnyValue *av)
{
    Cursor c = {data, data + len};
    Field f;
    int r;
    *key = data;
    *key_len = 0;
    av->which = 0;
    av->value = 0;
    av->str = NULL;
    av->str_len = 0;
    while ((r = each_field(&c, &f)) > 0) {
        if (f.wire_type != WT_LEN)
            continue;
        if (f.number == 1) {
            *key = f.data;
            *key_len = f.len;
        }
        else if (f.number == 2 && scan_any_value(f.data, f.len, av) < 0)
            return -1;
    }
    return r;
}

/* What jouled reads of a serialized Span, the attributes aside. */
typedef struct {
    /* Byte and string fields as (start, length), by field number: 1 trace_id, 2 span_id,
     * 4 parent_span_id, 5 name (3, trace_state, is not read). */
    const uint8_t *text[6];
    Py_ssize_t text_len[6];
    uint64_t kind, start_ns, end_ns; /* kind: the varint as sent (an int32 enum) */
    int has_links;
} SpanFields;

/* The fields of one serialized Span into *s, calling on_attribute(KeyValue bytes, ctx) for
 * each attribute in order (it returns 0, or -1 on error). 0, or -1 on error. */
static int
read_span_fields(const uint8_t *data, Py_ssize_t len, SpanFields *s,
                 int (*on_attribute)(const uint8_t *, Py_ssize_t, void *), void *ctx)
{
    Cursor c = {data, data + len};
    Field f;
    int r;
    for (int i = 0; i < 6; i++) {
        s->text[i] = data;
        s->text_len[i] = 0;
    }
    s->kind = s->start_ns = s->end_ns = 0;
    s->has_links = 0;
    while ((r = each_field(&c, &f)) > 0) {
        switch (f.number) {
        case 1: case 2: case 4: case 5:
            if (f.wire_type == WT_LEN) {
                s->text[f.number] = f.data;
                s->text_len[f.number] = f.len;
            }
            break;
        case 6:
            if (f.wire_type == WT_VARINT)
                s->kind = f.value;
            break;
        case 7: case 8:
            if (f.wire_type == WT_I64)
                *(f.number == 7 ? &s->start_ns : &s->end_ns) = f.value;
            break;
        case 9:
            if (f.wire_type == WT_LEN && on_attribute(f.data, f.len, ctx) < 0)
                return -1;
            break;
        case 13:
            s->has_links |= f.wire_type == WT_LEN;
            break;
        }
    }
    return r;
}

/* An int32 enum from its varint: the low 32 bits, as two's complement. */
static long long
enum_value(uint64_t raw)
{
    uint32_t low = (uint32_t)raw;
    return low <= INT32_MAX ? (long long)low : (long long)low - 0x100000000LL;
}

#endif

/* A HAMT leaf's per-row work in C (hamt_node.py, hamt.py, tree.py).
 *
 * check_leaf(rows): None when ``rows`` is a list of [key, path, value] lists (key 16
 * bytes, path and value bytes) strictly increasing by (key, path); else ValueError with
 * the message check_node's leaf branch gives, for the first row it would refuse.
 *
 * children_into(out, rows, prefix, pre, dirpath): for each row whose key starts with
 * ``prefix`` (found by binary search: the rows are sorted by key) and whose path is
 * ``pre`` + a name without "/" (and not ``dirpath``), sets out[name] = value, in row
 * order (a later row wins). The rows must have passed check_leaf. The Python reference
 * is SnapshotTree.raw_children_by_name's comprehension (tests/test_hamtleaf.py). With a
 * list for ``out``, appends (path, value) of each such row instead, in row order (every
 * row kept: SnapshotTree.raw_children).
 *
 * leaf_info(raw) -> (rows, first key, last key), or None: raw is accepted only when it is
 * exactly one msgpack array [0, [[key, path, value], ...]] with every key, path and value
 * a bin (key 16 bytes) and the rows strictly increasing by (key, path), nothing after it:
 * what decode_node accepts as a leaf, in the encoding bk writes. Anything else gives None
 * and the caller decodes it in Python (which refuses or accepts it with its own words).
 *
 * common_nibbles(a, b): hamt_node.common_nibbles for two bytes.
 *
 * leaf_children_into(out, raw, prefix, pre, dirpath): children_into over a leaf's
 * plaintext that leaf_info accepted, without making the rows into Python objects (only
 * the names and values it keeps); ValueError if raw is not such a leaf.
 *
 * entry_fields(raw) -> the 17 field values of the Entry encoded in raw (a list in
 * Entry._fields order, None where absent), or None: Entry.decode's Python path then
 * decides and words what is wrong. Accepted only: exactly one msgpack map of known str
 * keys, each once, every value of its field's type and range (objects/entry.py), "t"
 * one of the seven types, the fields the type needs present, not both "c" and "cb",
 * user and group names valid UTF-8, and no "x" (xattrs: left to Python, which also
 * settles repeated names). So this never accepts what Python refuses, and what it
 * accepts it gives as Python would (tests/test_hamtleaf.py compares both).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_mpread.h" /* Cur, Int, read_int, read_header, read_bin */

#define KEY_LEN 16

/* -- a leaf's plaintext, read without Python objects ----------------------------------- */

static int
cmp_mem(const unsigned char *a, size_t al, const unsigned char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c;
    return (al > bl) - (al < bl);
}

typedef struct {
    const unsigned char *k, *p, *v;
    size_t pl, vl;
} Row;

/* the name of the child of dirpath that path (pl bytes) is, as a new bytes object; NULL
 * with no exception set when path is not one (it must be pre + a name without "/", and
 * not dirpath itself: raw_children_by_name's test) */
static PyObject *
child_name(const char *path, size_t pl, const Py_buffer *pre, const Py_buffer *dirpath)
{
    size_t n = (size_t)pre->len;
    if (pl < n || memcmp(path, pre->buf, n) != 0 || memchr(path + n, '/', pl - n) != NULL ||
        (pl == (size_t)dirpath->len && memcmp(path, dirpath->buf, pl) == 0))
        return NULL;
    return PyBytes_FromStringAndSize(path + n, (Py_ssize_t)(pl - n));
}

/* out[name] = value (a dict), or out.append((path, value)) (a list); -1 on error */
static int
put_child(PyObject *out, PyObject *name, PyObject *path, PyObject *value)
{
    if (PyDict_CheckExact(out))
        return PyDict_SetItem(out, name, value);
    PyObject *t = PyTuple_Pack(2, path, value);
    if (t == NULL)
        return -1;
    int r = PyList_Append(out, t);
    Py_DECREF(t);
    return r;
}

static int
dict_or_list(PyObject *out)
{
    if (PyDict_CheckExact(out) || PyList_CheckExact(out))
        return 0;
    PyErr_SetString(PyExc_TypeError, "out must be a dict or a list");
    return -1;
}

/* the leaf's row count and the cursor at its first row; -1 unless the header is a leaf's */
static int
leaf_head(Cur *c, uint32_t *rows)
{
    Int zero;
    if (read_header(c, 0x90, 0xdc, 0xdd) != 2 || read_int(c, &zero) || zero.neg || zero.v != 0)
        return -1;
    long long n = read_header(c, 0x90, 0xdc, 0xdd);
    /* each row takes at least 1 + 18 + 2 + 2 bytes: a count beyond that is a lie */
    if (n < 0 || (size_t)(c->end - c->p) / 23 < (size_t)n)
        return -1;
    *rows = (uint32_t)n;
    return 0;
}

static int
leaf_row(Cur *c, Row *r)
{
    size_t kl;
    if (read_header(c, 0x90, 0xdc, 0xdd) != 3 || read_bin(c, &r->k, &kl) || kl != KEY_LEN || read_bin(c, &r->p, &r->pl) ||
        read_bin(c, &r->v, &r->vl))
        return -1;
    return 0;
}

static PyObject *
leaf_info(PyObject *Py_UNUSED(self), PyObject *arg)
{
    Py_buffer raw;
    if (PyObject_GetBuffer(arg, &raw, PyBUF_SIMPLE))
        return NULL;
    Cur c = {raw.buf, (const unsigned char *)raw.buf + raw.len};
    uint32_t n;
    Row prev = {0}, r;
    const unsigned char *first = NULL;
    PyObject *result = NULL;
    if (leaf_head(&c, &n))
        goto refuse;
    for (uint32_t i = 0; i < n; i++) {
        if (leaf_row(&c, &r))
            goto refuse;
        if (i) {
            int k = memcmp(r.k, prev.k, KEY_LEN);
            if (k < 0 || (k == 0 && cmp_mem(r.p, r.pl, prev.p, prev.pl) <= 0))
                goto refuse;
        } else {
            first = r.k;
        }
        prev = r;
    }
    if (c.p != c.end)
        goto refuse;
    if (n == 0)
        result = Py_BuildValue("(iOO)", 0, Py_None, Py_None);
    else
        result = Py_BuildValue("(Iy#y#)", n, (const char *)first, (Py_ssize_t)KEY_LEN, (const char *)prev.k, (Py_ssize_t)KEY_LEN);
    PyBuffer_Release(&raw);
    return result;
refuse:
    PyBuffer_Release(&raw);
    Py_RETURN_NONE;
}

static PyObject *
leaf_children_into(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *out;
    Py_buffer raw, prefix, pre, dirpath;
    if (!PyArg_ParseTuple(args, "Oy*y*y*y*", &out, &raw, &prefix, &pre, &dirpath))
        return NULL;
    PyObject *result = NULL;
    if (dict_or_list(out))
        goto done;
    Cur c = {raw.buf, (const unsigned char *)raw.buf + raw.len};
    uint32_t n;
    Row r;
    if (leaf_head(&c, &n))
        goto bad;
    for (uint32_t i = 0; i < n; i++) {
        if (leaf_row(&c, &r))
            goto bad;
        if (prefix.len > KEY_LEN)
            break; /* no 16-byte key starts with it */
        int k = memcmp(r.k, prefix.buf, (size_t)prefix.len);
        if (k < 0)
            continue;
        if (k > 0)
            break; /* sorted by key: the prefix's run is over */
        PyObject *name = child_name((const char *)r.p, r.pl, &pre, &dirpath);
        if (name == NULL) {
            if (PyErr_Occurred())
                goto done;
            continue;
        }
        PyObject *value = PyBytes_FromStringAndSize((const char *)r.v, (Py_ssize_t)r.vl);
        PyObject *path = NULL; /* only a list takes the path */
        int bad = value == NULL;
        if (!bad && !PyDict_CheckExact(out))
            bad = (path = PyBytes_FromStringAndSize((const char *)r.p, (Py_ssize_t)r.pl)) == NULL;
        bad = bad || put_child(out, name, path, value);
        Py_XDECREF(name);
        Py_XDECREF(value);
        Py_XDECREF(path);
        if (bad)
            goto done;
    }
    result = Py_None;
    Py_INCREF(result);
    goto done;
bad:
    PyErr_SetString(PyExc_ValueError, "leaf_children_into: not a leaf leaf_info accepts");
done:
    PyBuffer_Release(&raw);
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&pre);
    PyBuffer_Release(&dirpath);
    return result;
}

static int
row_parts(PyObject *row, PyObject **k, PyObject **p, PyObject **v)
{
    if (!PyList_CheckExact(row) || PyList_GET_SIZE(row) != 3) {
        PyErr_SetString(PyExc_ValueError, "a leaf row is not [key, path, value]");
        return -1;
    }
    *k = PyList_GET_ITEM(row, 0);
    *p = PyList_GET_ITEM(row, 1);
    *v = PyList_GET_ITEM(row, 2);
    if (!PyBytes_CheckExact(*k) || PyBytes_GET_SIZE(*k) != KEY_LEN || !PyBytes_CheckExact(*p) || !PyBytes_CheckExact(*v)) {
        PyErr_SetString(PyExc_ValueError, "a leaf row has a field of the wrong type");
        return -1;
    }
    return 0;
}

/* bytes compare as Python orders bytes: memcmp, then the shorter first */
static int
cmp_bytes(PyObject *a, PyObject *b)
{
    Py_ssize_t la = PyBytes_GET_SIZE(a), lb = PyBytes_GET_SIZE(b);
    int c = memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)(la < lb ? la : lb));
    if (c)
        return c;
    return (la > lb) - (la < lb);
}

static PyObject *
check_leaf(PyObject *Py_UNUSED(self), PyObject *rows)
{
    if (!PyList_CheckExact(rows)) {
        PyErr_SetString(PyExc_ValueError, "leaf rows are not a list");
        return NULL;
    }
    PyObject *pk = NULL, *pp = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); i++) {
        PyObject *k, *p, *v;
        if (row_parts(PyList_GET_ITEM(rows, i), &k, &p, &v))
            return NULL;
        if (pk != NULL) {
            int c = cmp_bytes(k, pk);
            if (c < 0 || (c == 0 && cmp_bytes(p, pp) <= 0)) {
                PyErr_SetString(PyExc_ValueError, "leaf rows are not strictly increasing");
                return NULL;
            }
        }
        pk = k;
        pp = p;
    }
    Py_RETURN_NONE;
}

static PyObject *
children_into(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *out, *rows;
    Py_buffer prefix, pre, dirpath;
    if (!PyArg_ParseTuple(args, "OO!y*y*y*", &out, &PyList_Type, &rows, &prefix, &pre, &dirpath))
        return NULL;
    PyObject *result = NULL;
    if (dict_or_list(out))
        goto done;
    Py_ssize_t n = PyList_GET_SIZE(rows), lo = 0, hi = n;
    PyObject *k, *p, *v;
    /* the first row whose key is not below the prefix */
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (row_parts(PyList_GET_ITEM(rows, mid), &k, &p, &v))
            goto done;
        Py_ssize_t m = prefix.len < KEY_LEN ? prefix.len : KEY_LEN;
        int c = memcmp(PyBytes_AS_STRING(k), prefix.buf, (size_t)m);
        if (c < 0 || (c == 0 && m < prefix.len))
            lo = mid + 1;
        else
            hi = mid;
    }
    for (Py_ssize_t i = lo; i < n; i++) {
        if (row_parts(PyList_GET_ITEM(rows, i), &k, &p, &v))
            goto done;
        if (prefix.len > KEY_LEN || memcmp(PyBytes_AS_STRING(k), prefix.buf, (size_t)prefix.len) != 0)
            break;
        PyObject *name = child_name(PyBytes_AS_STRING(p), (size_t)PyBytes_GET_SIZE(p), &pre, &dirpath);
        if (name == NULL) {
            if (PyErr_Occurred())
                goto done;
            continue;
        }
        int r = put_child(out, name, p, v);
        Py_DECREF(name);
        if (r)
            goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&pre);
    PyBuffer_Release(&dirpath);
    return result;
}

static PyObject *
common_nibbles(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "common_nibbles(a, b) takes two bytes");
        return NULL;
    }
    const unsigned char *a = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    Py_ssize_t al = PyBytes_GET_SIZE(args[0]), bl = PyBytes_GET_SIZE(args[1]);
    Py_ssize_t n = al < bl ? al : bl;
    for (Py_ssize_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return PyLong_FromSsize_t(2 * i + (((a[i] ^ b[i]) >> 4) ? 0 : 1));
    return PyLong_FromSsize_t(2 * n);
}


/* -- an entry's fields (objects/entry.py's Entry.from_wire, for what it accepts) ------- */

enum { F_T, F_M, F_U, F_G, F_UN, F_GN, F_S, F_MT, F_CT, F_I, F_DV, F_N, F_RD, F_L, F_X, F_C, F_CB, F_COUNT };
enum { K_TYPE, K_INT, K_STR, K_BIN, K_OTHER };

typedef struct {
    const char *key;
    size_t key_len;
    int field, kind;
    int neg_ok;              /* ints: negative values allowed (down to -2^63) */
    unsigned long long hi;   /* ints: the value must be below this (0: 2^64) */
} FieldSpec;

static const FieldSpec SPECS[] = {
    {"t", 1, F_T, K_TYPE, 0, 0},
    {"m", 1, F_M, K_INT, 0, 010000},
    {"u", 1, F_U, K_INT, 0, 1ULL << 32},
    {"g", 1, F_G, K_INT, 0, 1ULL << 32},
    {"un", 2, F_UN, K_STR, 0, 0},
    {"gn", 2, F_GN, K_STR, 0, 0},
    {"s", 1, F_S, K_INT, 0, 1ULL << 63},
    {"mt", 2, F_MT, K_INT, 1, 1ULL << 63},
    {"ct", 2, F_CT, K_INT, 1, 1ULL << 63},
    {"i", 1, F_I, K_INT, 0, 0},
    {"dv", 2, F_DV, K_INT, 0, 0},
    {"n", 1, F_N, K_INT, 0, 0},
    {"rd", 2, F_RD, K_INT, 0, 0},
    {"l", 1, F_L, K_BIN, 0, 0},
    {"x", 1, F_X, K_OTHER, 0, 0},
    {"c", 1, F_C, K_OTHER, 0, 0},
    {"cb", 2, F_CB, K_OTHER, 0, 0},
};

static PyObject *type_names[7]; /* "f" "d" "l" "p" "s" "c" "b", made once */
static const char TYPES[] = "fdlpscb";

static const FieldSpec *
spec_of(const unsigned char *k, size_t kl)
{
    for (size_t i = 0; i < sizeof SPECS / sizeof SPECS[0]; i++)
        if (SPECS[i].key_len == kl && memcmp(SPECS[i].key, k, kl) == 0)
            return &SPECS[i];
    return NULL;
}

/* a content list ("c": 32-byte ids and holes in [0, 2^63); "cb": ids only) as a tuple;
 * NULL with no exception when the bytes are not one Python accepts */
static PyObject *
content_tuple(Cur *c, int ids_only)
{
    long long n = read_header(c, 0x90, 0xdc, 0xdd);
    if (n < 0 || (size_t)(c->end - c->p) < (size_t)n)
        return NULL;
    PyObject *t = PyTuple_New((Py_ssize_t)n);
    if (t == NULL)
        return NULL;
    for (long long i = 0; i < n; i++) {
        PyObject *item = NULL;
        if (c->p < c->end && (*c->p == 0xc4 || *c->p == 0xc5 || *c->p == 0xc6)) {
            const unsigned char *b;
            size_t bl;
            if (read_bin(c, &b, &bl) == 0 && bl == 32)
                item = PyBytes_FromStringAndSize((const char *)b, 32);
        } else if (!ids_only) {
            Int v;
            if (read_int(c, &v) == 0 && !v.neg && v.v < (1ULL << 63))
                item = PyLong_FromUnsignedLongLong(v.v);
        }
        if (item == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, (Py_ssize_t)i, item);
    }
    return t;
}

static PyObject *
entry_fields(PyObject *Py_UNUSED(self), PyObject *arg)
{
    Py_buffer raw;
    if (PyObject_GetBuffer(arg, &raw, PyBUF_SIMPLE))
        return NULL;
    PyObject *vals[F_COUNT] = {NULL};
    PyObject *result = NULL;
    Cur c = {raw.buf, (const unsigned char *)raw.buf + raw.len};
    long long n = read_header(&c, 0x80, 0xde, 0xdf);
    if (n < 0 || n > F_COUNT)
        goto refuse;
    for (long long i = 0; i < n; i++) {
        const unsigned char *k;
        size_t kl;
        if (read_str(&c, &k, &kl))
            goto refuse;
        const FieldSpec *f = spec_of(k, kl);
        if (f == NULL || vals[f->field] != NULL || f->field == F_X)
            goto refuse;
        PyObject *v = NULL;
        if (f->kind == K_INT) {
            Int x;
            if (read_int(&c, &x))
                goto refuse;
            if (x.neg) {
                if (!f->neg_ok)
                    goto refuse;
                v = PyLong_FromLongLong((long long)x.v);
            } else {
                if (f->hi && x.v >= f->hi)
                    goto refuse;
                v = PyLong_FromUnsignedLongLong(x.v);
            }
        } else if (f->kind == K_STR || f->kind == K_TYPE) {
            const unsigned char *sv;
            size_t sl;
            if (read_str(&c, &sv, &sl))
                goto refuse;
            if (f->kind == K_TYPE) {
                const char *at = sl == 1 ? memchr(TYPES, sv[0], 7) : NULL;
                if (at == NULL || sv[0] == 0)
                    goto refuse;
                v = type_names[at - TYPES];
                Py_INCREF(v);
            } else {
                v = PyUnicode_DecodeUTF8((const char *)sv, (Py_ssize_t)sl, "strict");
                if (v == NULL) {
                    PyErr_Clear(); /* msgpack refuses it too: Python words it */
                    goto refuse;
                }
            }
        } else if (f->kind == K_BIN) {
            const unsigned char *b;
            size_t bl;
            if (read_bin(&c, &b, &bl))
                goto refuse;
            v = PyBytes_FromStringAndSize((const char *)b, (Py_ssize_t)bl);
        } else {
            v = content_tuple(&c, f->field == F_CB);
        }
        if (v == NULL) {
            if (PyErr_Occurred())
                goto done;
            goto refuse;
        }
        vals[f->field] = v;
    }
    if (c.p != c.end || vals[F_T] == NULL || (vals[F_C] != NULL && vals[F_CB] != NULL))
        goto refuse;
    switch (PyUnicode_READ_CHAR(vals[F_T], 0)) {
    case 'f': if (vals[F_S] == NULL) goto refuse; break;
    case 'l': if (vals[F_L] == NULL) goto refuse; break;
    case 'c':
    case 'b': if (vals[F_RD] == NULL) goto refuse; break;
    default: break;
    }
    result = PyList_New(F_COUNT);
    if (result == NULL)
        goto done;
    for (int i = 0; i < F_COUNT; i++) {
        PyObject *v = vals[i] ? vals[i] : Py_None;
        if (!vals[i])
            Py_INCREF(v);
        vals[i] = NULL;
        PyList_SET_ITEM(result, i, v);
    }
    goto done;
refuse:
    result = Py_None;
    Py_INCREF(result);
done:
    for (int i = 0; i < F_COUNT; i++)
        Py_XDECREF(vals[i]);
    PyBuffer_Release(&raw);
    return result;
}

static PyMethodDef methods[] = {
    {"common_nibbles", (PyCFunction)(void (*)(void))common_nibbles, METH_FASTCALL,
     "common_nibbles(a, b) -> how many leading nibbles two byte strings share"},
    {"check_leaf", check_leaf, METH_O, "check_leaf(rows): ValueError unless a leaf's rows are well formed and sorted"},
    {"children_into", children_into, METH_VARARGS,
     "children_into(out, rows, prefix, pre, dirpath): out[name] = value (a dict) or out.append((path, value)) (a list) of the rows of dirpath's children"},
    {"leaf_info", leaf_info, METH_O, "leaf_info(raw) -> (rows, first key, last key) of a leaf in bk's encoding, or None"},
    {"entry_fields", entry_fields, METH_O, "entry_fields(raw) -> an encoded Entry's 17 field values, or None: ask Python"},
    {"leaf_children_into", leaf_children_into, METH_VARARGS,
     "leaf_children_into(out, raw, prefix, pre, dirpath): children_into over a leaf's plaintext"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hamtleaf", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__hamtleaf(void)
{
    for (int i = 0; i < 7; i++) {
        if (type_names[i] == NULL && (type_names[i] = PyUnicode_InternFromString((char[]){TYPES[i], 0})) == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}

/* Two loops of the compact blob index (index.py) in C: the lookups an unchanged backup
 * makes for every blob of every file, and the queueing of a loaded pack's records.
 *
 * missing(ids, recents, dirs, tables) -> the ids the index does not hold, in order: each
 * 32-byte id is looked for in its shard's dict of recent additions, then by binary
 * search in the shard's sorted table of 48-byte records (id first) between the bounds
 * its directory gives; anything not a 32-byte bytes is missing. The Python reference is
 * Index.missing's loop (tests/test_index_ops.py compares the two).
 *
 * queue_records(pending, entries, no): for each 44-byte entry (id, offset, length, raw
 * length: PackedEntries' layout) appends the 48-byte record (id, pack number, offset,
 * length, raw length; little-endian u32s) to pending[id[0]], a bytearray per shard.
 *
 * sort_records(parts, keep_last) -> bytes: the 48-byte records of the buffers in
 * ``parts``, taken as one sequence in that order, sorted by id; of records with one id
 * only the first in that sequence is kept, or the last with ``keep_last``. The Python
 * reference is Index._rebuild's dict-and-sort (tests/test_index_ops.py).
 *
 * directory(table, shard, bits) -> bytes: the 2**bits + 1 native u32 bounds of a sorted
 * table's directory: bound j is the first record not below (shard, j << (16 - bits)) on
 * the id's first three bytes, the last is the record count (bisect_left in Python).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../_mpread.h" /* Cur, Int, read_int, read_str, read_header, read_bin */

#define ID 32
#define REC 48
#define ENT 44
#define SHARDS 256

static PyObject *
missing(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *ids, *recents, *dirs, *tables;
    if (!PyArg_ParseTuple(args, "OO!O!O!", &ids, &PyList_Type, &recents, &PyList_Type, &dirs, &PyList_Type, &tables))
        return NULL;
    if (PyList_GET_SIZE(recents) != SHARDS || PyList_GET_SIZE(dirs) != SHARDS || PyList_GET_SIZE(tables) != SHARDS) {
        PyErr_SetString(PyExc_ValueError, "missing: 256 shards expected");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(ids, "missing: ids must be a sequence");
    if (seq == NULL)
        return NULL;
    PyObject *out = PyList_New(0);
    Py_buffer bounds[SHARDS];
    int have[SHARDS];
    int bits[SHARDS];
    memset(have, 0, sizeof have);
    if (out == NULL)
        goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = items[i];
        if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) != ID) {
            if (PyList_Append(out, b))
                goto fail;
            continue;
        }
        const unsigned char *id = (const unsigned char *)PyBytes_AS_STRING(b);
        int shard = id[0];
        PyObject *recent = PyList_GET_ITEM(recents, shard);
        int r = PyDict_Check(recent) ? PyDict_Contains(recent, b) : PySequence_Contains(recent, b);
        if (r < 0)
            goto fail;
        if (r)
            continue;
        PyObject *table = PyList_GET_ITEM(tables, shard);
        if (!PyBytes_Check(table)) {
            PyErr_SetString(PyExc_TypeError, "missing: a table is not bytes");
            goto fail;
        }
        Py_ssize_t tlen = PyBytes_GET_SIZE(table);
        int found = 0;
        if (tlen > 0) {
            if (!have[shard]) {
                PyObject *d = PyList_GET_ITEM(dirs, shard);
                if (!PyTuple_Check(d) || PyTuple_GET_SIZE(d) != 2) {
                    PyErr_SetString(PyExc_TypeError, "missing: a directory is not (bits, bounds)");
                    goto fail;
                }
                long bt = PyLong_AsLong(PyTuple_GET_ITEM(d, 0));
                if (bt < 1 || bt > 16) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_ValueError, "missing: directory bits out of range");
                    goto fail;
                }
                if (PyObject_GetBuffer(PyTuple_GET_ITEM(d, 1), &bounds[shard], PyBUF_FORMAT | PyBUF_C_CONTIGUOUS))
                    goto fail;
                have[shard] = 1;
                bits[shard] = (int)bt;
                if (bounds[shard].itemsize != 4 || bounds[shard].len / 4 < (1 << bt) + 1) {
                    PyErr_SetString(PyExc_ValueError, "missing: a directory's bounds do not fit");
                    goto fail;
                }
            }
            const uint32_t *bd = (const uint32_t *)bounds[shard].buf;
            unsigned j = (((unsigned)id[1] << 8) | id[2]) >> (16 - bits[shard]);
            Py_ssize_t lo = bd[j], hi = bd[j + 1];
            if (hi * REC > tlen || lo > hi) {
                PyErr_SetString(PyExc_ValueError, "missing: a directory's bounds exceed the table");
                goto fail;
            }
            const unsigned char *t = (const unsigned char *)PyBytes_AS_STRING(table);
            while (lo < hi) {
                Py_ssize_t mid = lo + (hi - lo) / 2;
                int c = memcmp(t + mid * REC, id, ID);
                if (c == 0) {
                    found = 1;
                    break;
                }
                if (c < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
        }
        if (!found && PyList_Append(out, b))
            goto fail;
    }
    for (int s = 0; s < SHARDS; s++)
        if (have[s])
            PyBuffer_Release(&bounds[s]);
    Py_DECREF(seq);
    return out;
fail:
    for (int s = 0; s < SHARDS; s++)
        if (have[s])
            PyBuffer_Release(&bounds[s]);
    Py_DECREF(seq);
    Py_XDECREF(out);
    return NULL;
}

static PyObject *
queue_records(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *pending;
    Py_buffer ents;
    unsigned long no;
    if (!PyArg_ParseTuple(args, "O!y*k", &PyList_Type, &pending, &ents, &no))
        return NULL;
    PyObject *result = NULL;
    if (PyList_GET_SIZE(pending) != SHARDS || ents.len % ENT || no > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_ValueError, "queue_records: 256 shards, whole entries, a u32 pack number");
        goto done;
    }
    /* the bytes each shard gets, then one resize of each */
    Py_ssize_t add[SHARDS];
    memset(add, 0, sizeof add);
    const unsigned char *e = ents.buf;
    Py_ssize_t count = ents.len / ENT;
    for (Py_ssize_t i = 0; i < count; i++)
        add[e[i * ENT]] += REC;
    Py_ssize_t at[SHARDS];
    for (int s = 0; s < SHARDS; s++) {
        PyObject *ba = PyList_GET_ITEM(pending, s);
        if (!PyByteArray_Check(ba)) {
            PyErr_SetString(PyExc_TypeError, "queue_records: pending holds bytearrays");
            goto done;
        }
        at[s] = PyByteArray_GET_SIZE(ba);
        if (add[s] && PyByteArray_Resize(ba, at[s] + add[s]))
            goto done;
    }
    unsigned char nob[4] = {(unsigned char)no, (unsigned char)(no >> 8), (unsigned char)(no >> 16), (unsigned char)(no >> 24)};
    for (Py_ssize_t i = 0; i < count; i++) {
        const unsigned char *x = e + i * ENT;
        int s = x[0];
        unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(PyList_GET_ITEM(pending, s)) + at[s];
        memcpy(dst, x, ID);
        memcpy(dst + ID, nob, 4);
        memcpy(dst + ID + 4, x + ID, ENT - ID);
        at[s] += REC;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&ents);
    return result;
}

/* a record and its place in the input, so that equal ids keep their input order */
typedef struct {
    const unsigned char *rec;
    Py_ssize_t at;
} Slot;

static int
cmp_slot(const void *a, const void *b)
{
    const Slot *x = a, *y = b;
    int c = memcmp(x->rec, y->rec, ID);
    if (c)
        return c;
    return (x->at > y->at) - (x->at < y->at);
}

static PyObject *
sort_records(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *parts;
    int keep_last;
    if (!PyArg_ParseTuple(args, "O!p", &PyList_Type, &parts, &keep_last))
        return NULL;
    Py_ssize_t np = PyList_GET_SIZE(parts);
    Py_buffer *views = PyMem_Calloc(np ? np : 1, sizeof(Py_buffer));
    if (views == NULL)
        return PyErr_NoMemory();
    PyObject *result = NULL;
    Slot *slots = NULL;
    Py_ssize_t got = 0, total = 0;
    for (; got < np; got++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(parts, got), &views[got], PyBUF_SIMPLE))
            goto done;
        if (views[got].len % REC) {
            got++;
            PyErr_SetString(PyExc_ValueError, "sort_records: a part is not whole records");
            goto done;
        }
        total += views[got].len / REC;
    }
    slots = PyMem_Malloc((total ? total : 1) * sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t p = 0; p < np; p++) {
        const unsigned char *b = views[p].buf;
        for (Py_ssize_t i = 0; i < views[p].len / REC; i++, k++) {
            slots[k].rec = b + i * REC;
            slots[k].at = k;
        }
    }
    qsort(slots, (size_t)total, sizeof(Slot), cmp_slot);
    /* keep one record of each run of equal ids: its first or its last */
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < total; i++) {
        int ends = i + 1 == total || memcmp(slots[i].rec, slots[i + 1].rec, ID) != 0;
        int starts = i == 0 || memcmp(slots[i].rec, slots[i - 1].rec, ID) != 0;
        if (keep_last ? ends : starts)
            slots[kept++] = slots[i];
    }
    result = PyBytes_FromStringAndSize(NULL, kept * REC);
    if (result == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < kept; i++)
        memcpy(out + i * REC, slots[i].rec, REC);
done:
    for (Py_ssize_t p = 0; p < got; p++)
        PyBuffer_Release(&views[p]);
    PyMem_Free(views);
    PyMem_Free(slots);
    return result;
}

static PyObject *
directory(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer table;
    int shard, bits;
    if (!PyArg_ParseTuple(args, "y*ii", &table, &shard, &bits))
        return NULL;
    PyObject *result = NULL;
    if (table.len % REC || shard < 0 || shard >= SHARDS || bits < 1 || bits > 16) {
        PyErr_SetString(PyExc_ValueError, "directory: whole records, a shard, 1..16 bits");
        goto done;
    }
    Py_ssize_t n = table.len / REC, slots = (Py_ssize_t)1 << bits;
    if (n > 0xFFFFFFFFL) {
        PyErr_SetString(PyExc_ValueError, "directory: more records than a u32 counts");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (slots + 1) * 4);
    if (result == NULL)
        goto done;
    uint32_t *bd = (uint32_t *)PyBytes_AS_STRING(result);
    const unsigned char *t = table.buf;
    int step = 16 - bits;
    Py_ssize_t i = 0;
    for (Py_ssize_t j = 0; j < slots; j++) {
        /* first record whose (id[0], id[1] id[2]) is not below (shard, j << step) */
        long want = ((long)shard << 16) | ((long)j << step);
        while (i < n) {
            const unsigned char *r = t + i * REC;
            long have = ((long)r[0] << 16) | ((long)r[1] << 8) | r[2];
            if (have >= want)
                break;
            i++;
        }
        bd[j] = (uint32_t)i;
    }
    bd[slots] = (uint32_t)n;
done:
    PyBuffer_Release(&table);
    return result;
}

/* -- an index object's plaintext ---------------------------------------------------------- */

/* a non-negative integer of any width (a negative one is refused) */
static int
read_uint(Cur *c, unsigned long long *v)
{
    Int x;
    if (read_int(c, &x) || x.neg)
        return -1;
    *v = x.v;
    return 0;
}

/* a map (map 1) or array (map 0) header's count */
static int
read_head(Cur *c, int map, unsigned long long *n)
{
    long long x = map ? read_header(c, 0x80, 0xde, 0xdf) : read_header(c, 0x90, 0xdc, 0xdd);
    if (x < 0)
        return -1;
    *n = (unsigned long long)x;
    return 0;
}

/* a str (str 1) or bin (str 0) */
static int
read_raw(Cur *c, int str, const unsigned char **b, size_t *n)
{
    return str ? read_str(c, b, n) : read_bin(c, b, n);
}

static int
is_key(const unsigned char *b, size_t n, const char *k)
{
    return n == strlen(k) && memcmp(b, k, n) == 0;
}

static void
put_u32(unsigned char *d, unsigned long long v)
{
    d[0] = (unsigned char)v;
    d[1] = (unsigned char)(v >> 8);
    d[2] = (unsigned char)(v >> 16);
    d[3] = (unsigned char)(v >> 24);
}

/* the packs array; NULL with no exception set: not the shape (Python decides) */
static PyObject *
read_packs(Cur *c, unsigned long long overhead, unsigned long long sealed_max, unsigned long long blob_max,
           unsigned long long pack_max, PyObject *kinds)
{
    unsigned long long np;
    if (read_head(c, 0, &np) || np > (unsigned long long)(c->end - c->p))
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (unsigned long long i = 0; i < np; i++) {
        unsigned long long four, size, nrows;
        const unsigned char *pid, *kind;
        size_t pidl, kindl;
        if (read_head(c, 0, &four) || four != 4 || read_raw(c, 0, &pid, &pidl) || pidl != ID || read_raw(c, 1, &kind, &kindl) ||
            read_uint(c, &size) || size == 0 || size > pack_max || read_head(c, 0, &nrows) ||
            nrows > (unsigned long long)(c->end - c->p) / 38) /* a row is at least 1 + 34 + 3 bytes */
            goto shape;
        Py_ssize_t k = -1;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(kinds); j++) {
            Py_ssize_t kl;
            const char *ks = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(kinds, j), &kl);
            if (ks == NULL)
                goto fail;
            if ((size_t)kl == kindl && memcmp(ks, kind, kindl) == 0)
                k = j;
        }
        if (k < 0)
            goto shape;
        PyObject *rows = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(nrows * ENT));
        if (rows == NULL)
            goto fail;
        unsigned char *d = (unsigned char *)PyBytes_AS_STRING(rows);
        for (unsigned long long r = 0; r < nrows; r++, d += ENT) {
            unsigned long long n4, o, ln, raw;
            const unsigned char *bid;
            size_t bl;
            if (read_head(c, 0, &n4) || n4 != 4 || read_raw(c, 0, &bid, &bl) || bl != ID || read_uint(c, &o) ||
                read_uint(c, &ln) || read_uint(c, &raw) || !(overhead < ln && ln <= sealed_max) || o > size ||
                ln > size - o || raw > blob_max || o > 0xFFFFFFFFULL || ln > 0xFFFFFFFFULL || raw > 0xFFFFFFFFULL) {
                Py_DECREF(rows);
                goto shape;
            }
            memcpy(d, bid, ID);
            put_u32(d + ID, o);
            put_u32(d + ID + 4, ln);
            put_u32(d + ID + 8, raw);
        }
        PyObject *t = Py_BuildValue("(y#nKN)", (const char *)pid, (Py_ssize_t)ID, k, size, rows);
        if (t == NULL || PyList_Append(out, t)) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    return out;
shape:
    Py_DECREF(out);
    return NULL;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *
decode_index(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer data;
    unsigned long long overhead, sealed_max, blob_max, pack_max;
    PyObject *kinds;
    if (!PyArg_ParseTuple(args, "y*KKKKO!", &data, &overhead, &sealed_max, &blob_max, &pack_max, &PyTuple_Type, &kinds))
        return NULL;
    Cur c = {data.buf, (const unsigned char *)data.buf + data.len};
    PyObject *packs = NULL, *sup = NULL, *result = NULL;
    int have_v = 0;
    unsigned long long nkeys;
    if (read_head(&c, 1, &nkeys) || nkeys > 3)
        goto shape;
    for (unsigned long long i = 0; i < nkeys; i++) {
        const unsigned char *k;
        size_t kl;
        if (read_raw(&c, 1, &k, &kl))
            goto shape;
        if (is_key(k, kl, "v") && !have_v) {
            unsigned long long v;
            if (read_uint(&c, &v) || v != 1)
                goto shape;
            have_v = 1;
        } else if (is_key(k, kl, "packs") && packs == NULL) {
            packs = read_packs(&c, overhead, sealed_max, blob_max, pack_max, kinds);
            if (packs == NULL)
                goto shape;
        } else if (is_key(k, kl, "supersedes") && sup == NULL) {
            unsigned long long n;
            if (read_head(&c, 0, &n) || n > (unsigned long long)(c.end - c.p) / 34 || (sup = PyList_New(0)) == NULL)
                goto shape;
            for (unsigned long long j = 0; j < n; j++) {
                const unsigned char *b;
                size_t bl;
                if (read_raw(&c, 0, &b, &bl) || bl != ID)
                    goto shape;
                PyObject *x = PyBytes_FromStringAndSize((const char *)b, ID);
                if (x == NULL || PyList_Append(sup, x)) {
                    Py_XDECREF(x);
                    goto shape;
                }
                Py_DECREF(x);
            }
        } else {
            goto shape;
        }
    }
    if (!have_v || packs == NULL || c.p != c.end)
        goto shape;
    if (sup == NULL && (sup = PyList_New(0)) == NULL)
        goto shape;
    result = PyTuple_Pack(2, packs, sup);
shape:
    Py_XDECREF(packs);
    Py_XDECREF(sup);
    PyBuffer_Release(&data);
    if (result == NULL) {
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_MemoryError))
            PyErr_Clear(); /* whatever went wrong, Python reads it and says what */
        if (!PyErr_Occurred())
            Py_RETURN_NONE;
    }
    return result;
}

static PyMethodDef methods[] = {
    {"missing", missing, METH_VARARGS, "missing(ids, recents, dirs, tables) -> the ids not in the index"},
    {"queue_records", queue_records, METH_VARARGS,
     "queue_records(pending, entries, no): a pack's packed entries as records, one bytearray per shard"},
    {"sort_records", sort_records, METH_VARARGS,
     "sort_records(parts, keep_last) -> the parts' records sorted by id, one per id (first or last)"},
    {"decode_index", decode_index, METH_VARARGS,
     "decode_index(data, overhead, sealed_max, blob_max, pack_max, kinds) -> (packs, supersedes), or None"},
    {"directory", directory, METH_VARARGS, "directory(table, shard, bits) -> a sorted table's bounds, native u32s"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_indexops", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__indexops(void)
{
    return PyModule_Create(&module);
}

/*
 * _cdc.c - the scan loop of backupkit's content-defined chunker.
 *
 * This is a transcription of backupkit/chunker/_reference.py, which is the
 * specification; read that file for why the algorithm is what it is. Only the loop
 * lives here: the gear table is derived from the chunker key in Python and passed in
 * as 2048 bytes (256 little-endian uint64). Both functions take any C-contiguous
 * buffer (bytes, bytearray, memoryview, mmap) and release the GIL while scanning.
 *
 *   find_cut(table, data, sizes, eof) -> int
 *   cut_all(table, data, sizes, eof) -> list[int]
 *
 * sizes is the tuple (min_size, avg_size, max_size), a _reference.ChunkSizes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#define GEAR_ENTRIES 256
#define GEAR_TABLE_BYTES (GEAR_ENTRIES * 8)
#define MIN_MIN_SIZE 64
#define MAX_MAX_SIZE ((Py_ssize_t)1 << 62)

typedef struct {
    uint64_t gear[GEAR_ENTRIES];
    Py_ssize_t min_size, avg_size, max_size;
    uint64_t mask_s, mask_l;
} cdc_params;

/* Length of the first chunk of data[0:n], or 0 if more data is needed. */
static Py_ssize_t
scan_first(const cdc_params *p, const uint8_t *data, Py_ssize_t n, int eof)
{
    if (n <= p->min_size)
        return eof ? n : 0;
    const Py_ssize_t limit = n < p->max_size ? n : p->max_size;
    const Py_ssize_t normal = p->avg_size < limit ? p->avg_size : limit;
    const uint64_t *gear = p->gear;
    const uint64_t mask_s = p->mask_s, mask_l = p->mask_l;
    uint64_t h = 0;
    Py_ssize_t i = p->min_size;
    for (; i < normal; i++) {
        h = (h << 1) + gear[data[i]];
        if ((h & mask_s) == 0)
            return i + 1;
    }
    for (; i < limit; i++) {
        h = (h << 1) + gear[data[i]];
        if ((h & mask_l) == 0)
            return i + 1;
    }
    return (limit == p->max_size || eof) ? limit : 0;
}

/* Parse and check the common arguments. On success the caller owns *data. */
static int
parse_args(PyObject *args, PyObject *kwargs, const char *fname, cdc_params *p,
           Py_buffer *data, int *eof)
{
    static char *kwlist[] = {"table", "data", "sizes", "eof", NULL};
    char format[32];
    Py_buffer table;
    PyObject *sizes;

    PyOS_snprintf(format, sizeof(format), "y*y*Op:%s", fname);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, kwlist, &table, data, &sizes,
                                     eof))
        return -1;

    /* sizes is read by hand: the format's "(nnn)" goes through the sequence protocol
       and costs ~160 ns more per call on a ChunkSizes than these tuple reads. */
    if (!PyTuple_Check(sizes) || PyTuple_GET_SIZE(sizes) != 3) {
        PyErr_Format(PyExc_TypeError,
                     "%s: sizes must be a tuple (min_size, avg_size, max_size), not %.100s",
                     fname, Py_TYPE(sizes)->tp_name);
        goto fail;
    }
    Py_ssize_t *size[3] = {&p->min_size, &p->avg_size, &p->max_size};
    for (int i = 0; i < 3; i++) {
        *size[i] = PyNumber_AsSsize_t(PyTuple_GET_ITEM(sizes, i), PyExc_OverflowError);
        if (*size[i] == -1 && PyErr_Occurred())
            goto fail;
    }

    if (table.len != GEAR_TABLE_BYTES) {
        PyErr_Format(PyExc_ValueError, "gear table must be %d bytes, got %zd",
                     GEAR_TABLE_BYTES, table.len);
        goto fail;
    }
    if (p->min_size < MIN_MIN_SIZE) {
        PyErr_Format(PyExc_ValueError, "min_size must be at least %d, got %zd",
                     MIN_MIN_SIZE, p->min_size);
        goto fail;
    }
    if (!(p->min_size < p->avg_size && p->avg_size < p->max_size)) {
        PyErr_Format(PyExc_ValueError,
                     "need min_size < avg_size < max_size, got %zd, %zd, %zd",
                     p->min_size, p->avg_size, p->max_size);
        goto fail;
    }
    if (p->avg_size & (p->avg_size - 1)) {
        PyErr_Format(PyExc_ValueError, "avg_size must be a power of two, got %zd",
                     p->avg_size);
        goto fail;
    }
    if (p->max_size >= MAX_MAX_SIZE) {
        PyErr_Format(PyExc_ValueError, "max_size is too large: %zd", p->max_size);
        goto fail;
    }

    int bits = 0;
    while (((Py_ssize_t)1 << bits) < p->avg_size)
        bits++;
    /* 7 <= bits <= 61, so both shifts are in range. */
    p->mask_s = UINT64_MAX << (64 - (bits + 2));
    p->mask_l = UINT64_MAX << (64 - (bits - 2));

    const uint8_t *t = (const uint8_t *)table.buf;
    for (int i = 0; i < GEAR_ENTRIES; i++) {
        uint64_t v = 0;
        for (int k = 7; k >= 0; k--)
            v = (v << 8) | t[8 * i + k];
        p->gear[i] = v;
    }
    PyBuffer_Release(&table);
    return 0;

fail:
    PyBuffer_Release(&table);
    PyBuffer_Release(data);
    return -1;
}

static PyObject *
cdc_find_cut(PyObject *self, PyObject *args, PyObject *kwargs)
{
    cdc_params p;
    Py_buffer data;
    int eof;
    Py_ssize_t cut;

    (void)self;
    if (parse_args(args, kwargs, "find_cut", &p, &data, &eof) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    cut = scan_first(&p, (const uint8_t *)data.buf, data.len, eof);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(cut);
}

static PyObject *
cdc_cut_all(PyObject *self, PyObject *args, PyObject *kwargs)
{
    cdc_params p;
    Py_buffer data;
    int eof;
    Py_ssize_t count = 0, offset = 0;
    PyObject *result = NULL;

    (void)self;
    if (parse_args(args, kwargs, "cut_all", &p, &data, &eof) < 0)
        return NULL;

    /* Every chunk but the last is longer than min_size, so this many always suffice. */
    Py_ssize_t capacity = data.len / (p.min_size + 1) + 1;
    Py_ssize_t *cuts = PyMem_New(Py_ssize_t, capacity);
    if (cuts == NULL) {
        PyErr_NoMemory();
        goto done;
    }

    const uint8_t *buf = (const uint8_t *)data.buf;
    Py_BEGIN_ALLOW_THREADS
    while (offset < data.len && count < capacity) {
        Py_ssize_t cut = scan_first(&p, buf + offset, data.len - offset, eof);
        if (cut == 0)
            break;
        cuts[count++] = cut;
        offset += cut;
    }
    Py_END_ALLOW_THREADS

    result = PyList_New(count);
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyLong_FromSsize_t(cuts[i]);
        if (item == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, item);
    }

done:
    PyMem_Free(cuts);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef cdc_methods[] = {
    {"find_cut", (PyCFunction)(void (*)(void))cdc_find_cut, METH_VARARGS | METH_KEYWORDS,
     "find_cut(table, data, sizes, eof) -> int\n\n"
     "Length of the first chunk of data, or 0 if more data is needed."},
    {"cut_all", (PyCFunction)(void (*)(void))cdc_cut_all, METH_VARARGS | METH_KEYWORDS,
     "cut_all(table, data, sizes, eof) -> list[int]\n\n"
     "Lengths of all chunks of data that can be decided; with eof they sum to len(data)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cdc_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_cdc",
    .m_doc = "Gear-hash content-defined chunking scan loop (see _reference.py).",
    .m_size = 0,
    .m_methods = cdc_methods,
};

PyMODINIT_FUNC
PyInit__cdc(void)
{
    PyObject *m = PyModule_Create(&cdc_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "GEAR_TABLE_BYTES", GEAR_TABLE_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

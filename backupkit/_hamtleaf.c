/* Two per-row loops over a HAMT leaf's rows (hamt_node.py, tree.py) in C.
 *
 * check_leaf(rows): None when ``rows`` is a list of [key, path, value] lists (key 16
 * bytes, path and value bytes) strictly increasing by (key, path); else ValueError with
 * the message check_node's leaf branch gives, for the first row it would refuse.
 *
 * children_into(out, rows, prefix, pre, dirpath): for each row whose key starts with
 * ``prefix`` (found by binary search: the rows are sorted by key) and whose path is
 * ``pre`` + a name without "/" (and not ``dirpath``), sets out[name] = value, in row
 * order (a later row wins). The rows must have passed check_leaf. The Python reference
 * is SnapshotTree.raw_children_by_name's comprehension (tests/test_hamtleaf.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define KEY_LEN 16

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
    if (!PyArg_ParseTuple(args, "O!O!y*y*y*", &PyDict_Type, &out, &PyList_Type, &rows, &prefix, &pre, &dirpath))
        return NULL;
    PyObject *result = NULL;
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
        const char *ps = PyBytes_AS_STRING(p);
        Py_ssize_t pl = PyBytes_GET_SIZE(p);
        if (pl < pre.len || memcmp(ps, pre.buf, (size_t)pre.len) != 0)
            continue;
        if (memchr(ps + pre.len, '/', (size_t)(pl - pre.len)) != NULL)
            continue;
        if (pl == dirpath.len && memcmp(ps, dirpath.buf, (size_t)pl) == 0)
            continue;
        PyObject *name = PyBytes_FromStringAndSize(ps + pre.len, pl - pre.len);
        if (name == NULL)
            goto done;
        int r = PyDict_SetItem(out, name, v);
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

static PyMethodDef methods[] = {
    {"check_leaf", check_leaf, METH_O, "check_leaf(rows): ValueError unless a leaf's rows are well formed and sorted"},
    {"children_into", children_into, METH_VARARGS,
     "children_into(out, rows, prefix, pre, dirpath): out[name] = value of the rows of dirpath's children"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hamtleaf", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__hamtleaf(void)
{
    return PyModule_Create(&module);
}

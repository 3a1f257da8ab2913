/* Whether a file is unchanged since the parent snapshot, from the parent's encoded
 * entry and the file's lstat, without unpacking the entry into Python objects.
 *
 * Matcher(owner)(raw, st) -> the entry's content list, or None. It says "unchanged"
 * (returns the list) only when raw is exactly one msgpack map holding exactly the keys a
 * regular file's entry has (c ct dv g gn i m mt n s t u un, each once, in any order),
 * with t = "f", each number equal to st's field (mt, ct: the *_ns times; m: the mode's
 * permission bits), un and gn equal to the names owner(uid, gid) gives (a 4-tuple
 * (uid, gid, user, group), asked once per owner in a row), and c an array of bin and
 * non-negative integers. Anything else, well formed or not, gives None, and the caller
 * decides with the Python path (backup_parent.wire, inline_content, file_unchanged): so
 * this code never has to agree with Python about a refusal or an error, only about a
 * match, and every match it makes Python makes too (tests/test_parentmatch.py holds it
 * to that on crafted and mutated entries).
 *
 * Matcher.directory(listing, olds, pre, start, limit) -> (unchanged, rest, next): the same match for every
 * regular file of one directory's listing (a capsule of _dirscan.c's) straight from the
 * lstat in C memory, so a file that did not change costs no os.stat_result and no
 * Python loop step. olds: name -> the parent's encoded entry (the directory's children);
 * each matched file's name is taken out of it. unchanged: (path, size, content list,
 * encoded entry, place in the listing) of each matched file, path = pre + name; rest:
 * the places of every other entry (directories, other types, files the parent lacks or
 * that did not match, failed lstats), for the walk's own loop; from place start on, and
 * only until limit files have matched (next: the place to go on from, else None), so a
 * directory of a million files is matched a window at a time. The values compared are
 * those os.stat_result would hold (posixmodule.c: *_ns = sec * 10**9 + nsec, a uid or
 * gid of -1 as -1): a value that would not fit leaves the file to the Python path.
 *
 * entry_blobs(raw) -> (content, content_blobs) or None: for reachability (prune, check),
 * an entry checked field by field as Entry.from_wire checks it (known keys once each,
 * each value of its kind and range, the type's required field, not both content forms)
 * and its two blob lists (None where absent); None for anything it does not accept
 * (extended attributes, non-ASCII names, a repeated key, ...): then Entry.decode
 * decides, and words the error of an entry that is malformed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "_listing.h" /* a listing of _dirscan.c's, read by Matcher.directory */
#include "_mpread.h"  /* Cur, Int, take, be, read_int, read_str, read_header, read_bin */

/* a list of bins (of id_len bytes when id_len > 0) and, with ints, of integers in
 * [0, int_max]: a content list (bk's matcher: any bin, any non-negative integer; the
 * entry check: 32-byte ids, integers below 2**63) or a list of content blob ids (no
 * integers). NULL when the next object is not such a list (no exception set), or on
 * an error raised. */
static PyObject *
read_items(Cur *c, size_t id_len, int ints, unsigned long long int_max)
{
    long long n = read_header(c, 0x90, 0xdc, 0xdd);
    if (n < 0 || n > c->end - c->p) /* each item takes a byte at least */
        return NULL;
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL)
        return NULL;
    for (long long i = 0; i < n; i++) {
        PyObject *item;
        if (c->p < c->end && c->p[0] >= 0xc4 && c->p[0] <= 0xc6) {
            const unsigned char *b;
            size_t len;
            if (read_bin(c, &b, &len) || (id_len && len != id_len))
                goto refuse;
            item = PyBytes_FromStringAndSize((const char *)b, (Py_ssize_t)len);
        } else {
            Int v;
            if (!ints || read_int(c, &v) || v.neg || v.v > int_max)
                goto refuse;
            item = PyLong_FromUnsignedLongLong(v.v);
        }
        if (item == NULL)
            goto refuse;
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
refuse:
    Py_DECREF(list);
    return NULL;
}

/* an expected number from a Python int; -1 when it has no msgpack integer form */
static int
expect(PyObject *o, Int *out)
{
    int overflow;
    long long s = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (s == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    if (overflow == 0) {
        out->neg = s < 0;
        out->v = (unsigned long long)s;
        return 0;
    }
    if (overflow < 0)
        return -1;
    unsigned long long u = PyLong_AsUnsignedLongLong(o);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    out->neg = 0;
    out->v = u;
    return 0;
}

static int
same_int(const Int *a, const Int *b)
{
    return a->neg == b->neg && a->v == b->v;
}

/* os.stat_result (its fields read by index: mode 0, ino 1, dev 2, nlink 3, uid 4, gid 5,
 * size 6, then past the visible ten, st_mtime_ns 14 and st_ctime_ns 15) */
static PyTypeObject *StatType;

enum { K_C, K_CT, K_DV, K_G, K_GN, K_I, K_M, K_MT, K_N, K_S, K_T, K_U, K_UN, K_COUNT };
static const char *const KEYS[K_COUNT] = {"c", "ct", "dv", "g", "gn", "i", "m", "mt", "n", "s", "t", "u", "un"};

typedef struct {
    PyObject_HEAD
    PyObject *owner;   /* callable (uid, gid) -> (uid, gid, user, group) */
    PyObject *last_uid, *last_gid;
    PyObject *user, *group; /* bytes: UTF-8 of the names; NULL: no UTF-8 form */
    int have_last;
    unsigned long long c_uid, c_gid; /* the last ids as numbers (directory()) */
    int have_c;
} Matcher;

/* the owner's names as UTF-8, asked of owner() when uid/gid differ from the last ones;
 * 0 and user, group set (NULL when a name has no UTF-8 form), -1 on an error raised */
static int
owner_names(Matcher *m, PyObject *uid, PyObject *gid, PyObject **user, PyObject **group)
{
    if (!m->have_last || PyObject_RichCompareBool(uid, m->last_uid, Py_EQ) != 1
        || PyObject_RichCompareBool(gid, m->last_gid, Py_EQ) != 1) {
        PyErr_Clear();
        PyObject *t = PyObject_CallFunctionObjArgs(m->owner, uid, gid, NULL);
        if (t == NULL)
            return -1;
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 4) {
            Py_DECREF(t);
            PyErr_SetString(PyExc_TypeError, "owner() must give (uid, gid, user, group)");
            return -1;
        }
        PyObject *names[2] = {NULL, NULL};
        for (int i = 0; i < 2; i++) {
            PyObject *s = PyTuple_GET_ITEM(t, 2 + i);
            if (PyUnicode_Check(s)) {
                names[i] = PyUnicode_AsUTF8String(s);
                if (names[i] == NULL)
                    PyErr_Clear(); /* a name with no UTF-8 form: never matched here */
            }
        }
        Py_DECREF(t);
        Py_XSETREF(m->user, names[0]);
        Py_XSETREF(m->group, names[1]);
        Py_INCREF(uid);
        Py_XSETREF(m->last_uid, uid);
        Py_INCREF(gid);
        Py_XSETREF(m->last_gid, gid);
        m->have_last = 1;
        m->have_c = 0;
    }
    *user = m->user;
    *group = m->group;
    return 0;
}

static int
same_str(const unsigned char *s, size_t len, PyObject *want)
{
    return want != NULL && (size_t)PyBytes_GET_SIZE(want) == len && memcmp(PyBytes_AS_STRING(want), s, len) == 0;
}

/* raw (a parent's encoded entry) against the wanted values and owner names: its content
 * list when it is exactly a regular file's entry holding them, Py_None when not, NULL
 * on an error raised */
static PyObject *
match_entry(const unsigned char *buf, size_t len, const Int *want, PyObject *user, PyObject *group)
{
    Cur c = {buf, buf + len};
    if (read_header(&c, 0x80, 0xde, 0xdf) != K_COUNT)
        goto refuse;
    int seen[K_COUNT];
    memset(seen, 0, sizeof seen);
    PyObject *content = NULL;
    for (int k = 0; k < K_COUNT; k++) {
        const unsigned char *key;
        size_t klen;
        if (read_str(&c, &key, &klen))
            goto refuse_content;
        int which = -1;
        for (int j = 0; j < K_COUNT; j++) {
            if (strlen(KEYS[j]) == klen && memcmp(KEYS[j], key, klen) == 0) {
                which = j;
                break;
            }
        }
        if (which < 0 || seen[which])
            goto refuse_content;
        seen[which] = 1;
        if (which == K_C) {
            content = read_items(&c, 0, 1, ~0ULL);
            if (content == NULL) {
                if (PyErr_Occurred())
                    return NULL;
                goto refuse_content;
            }
        } else if (which == K_T || which == K_UN || which == K_GN) {
            const unsigned char *str;
            size_t slen;
            if (read_str(&c, &str, &slen))
                goto refuse_content;
            if (which == K_T ? !(slen == 1 && str[0] == 'f') : !same_str(str, slen, which == K_UN ? user : group))
                goto refuse_content;
        } else {
            Int v;
            if (read_int(&c, &v) || !same_int(&v, &want[which]))
                goto refuse_content;
        }
    }
    if (c.p != c.end)
        goto refuse_content;
    return content;
refuse_content:
    Py_XDECREF(content);
refuse:
    Py_RETURN_NONE;
}

static PyObject *
matcher_call(Matcher *self, PyObject *args, PyObject *kwargs)
{
    Py_buffer raw;
    PyObject *st;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Matcher takes (raw, st)");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*O", &raw, &st))
        return NULL;
    PyObject *result = NULL;
    if (!Py_IS_TYPE(st, StatType)) {
        PyErr_SetString(PyExc_TypeError, "st must be an os.stat_result");
        goto done;
    }
    /* os.stat_result's hidden fields (the *_ns times at 13-15) are past its visible
     * size; PyStructSequence_GetItem reads them all */
    PyObject *mode_o = PyStructSequence_GetItem(st, 0), *uid = PyStructSequence_GetItem(st, 4),
             *gid = PyStructSequence_GetItem(st, 5);
    Int want[K_COUNT];
    memset(want, 0, sizeof want);
    long mode = PyLong_AsLong(mode_o);
    if (mode == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        goto refuse;
    }
    want[K_M].neg = 0;
    want[K_M].v = (unsigned long long)(mode & 07777);
    if (expect(PyStructSequence_GetItem(st, 14), &want[K_MT]) || expect(PyStructSequence_GetItem(st, 15), &want[K_CT])
        || expect(PyStructSequence_GetItem(st, 1), &want[K_I]) || expect(PyStructSequence_GetItem(st, 6), &want[K_S])
        || expect(PyStructSequence_GetItem(st, 2), &want[K_DV]) || expect(PyStructSequence_GetItem(st, 3), &want[K_N])
        || expect(uid, &want[K_U]) || expect(gid, &want[K_G]))
        goto refuse;
    PyObject *user, *group;
    if (owner_names(self, uid, gid, &user, &group))
        goto done;

    result = match_entry((const unsigned char *)raw.buf, (size_t)raw.len, want, user, group);
    goto done;
refuse:
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&raw);
    return result;
}

/* a time as os.stat_result's *_ns holds it (sec * 10**9 + nsec); -1 past what an entry holds */
static int
time_ns(const struct timespec *t, Int *out)
{
    __int128 v = (__int128)t->tv_sec * 1000000000 + t->tv_nsec;
    if (v < (__int128)INT64_MIN || v > (__int128)INT64_MAX)
        return -1;
    out->neg = v < 0;
    out->v = (unsigned long long)(long long)v;
    return 0;
}

/* the values matcher_call reads from an os.stat_result, from the lstat itself; -1 when
 * one would not be a plain non-negative number there (the Python path decides) */
static int
want_of(const struct stat *st, Int *want)
{
    memset(want, 0, sizeof(Int) * K_COUNT);
    if (time_ns(&st->st_mtim, &want[K_MT]) || time_ns(&st->st_ctim, &want[K_CT]) || st->st_size < 0 ||
        st->st_uid == (uid_t)-1 || st->st_gid == (gid_t)-1 || (unsigned long long)st->st_nlink > (unsigned long long)LONG_MAX)
        return -1;
    want[K_M].v = (unsigned long long)(st->st_mode & 07777);
    want[K_I].v = (unsigned long long)st->st_ino;
    want[K_S].v = (unsigned long long)st->st_size;
    want[K_DV].v = (unsigned long long)st->st_dev;
    want[K_N].v = (unsigned long long)st->st_nlink;
    want[K_U].v = (unsigned long long)st->st_uid;
    want[K_G].v = (unsigned long long)st->st_gid;
    return 0;
}

/* owner_names for numeric ids (no int objects made while they repeat) */
static int
owner_of(Matcher *m, unsigned long long uid, unsigned long long gid, PyObject **user, PyObject **group)
{
    if (m->have_c && m->have_last && m->c_uid == uid && m->c_gid == gid) {
        *user = m->user;
        *group = m->group;
        return 0;
    }
    PyObject *u = PyLong_FromUnsignedLongLong(uid), *g = PyLong_FromUnsignedLongLong(gid);
    int r = (u == NULL || g == NULL) ? -1 : owner_names(m, u, g, user, group);
    Py_XDECREF(u);
    Py_XDECREF(g);
    if (r == 0) {
        m->c_uid = uid;
        m->c_gid = gid;
        m->have_c = 1;
    }
    return r;
}

static int
append_place(PyObject *rest, size_t i)
{
    PyObject *x = PyLong_FromSize_t(i);
    int r = x == NULL || PyList_Append(rest, x);
    Py_XDECREF(x);
    return r ? -1 : 0;
}

static PyObject *
matcher_directory(Matcher *self, PyObject *args)
{
    PyObject *cap, *olds;
    Py_buffer pre;
    Py_ssize_t start = 0, limit = PY_SSIZE_T_MAX;
    if (!PyArg_ParseTuple(args, "OO!y*|nn", &cap, &PyDict_Type, &olds, &pre, &start, &limit))
        return NULL;
    PyObject *unchanged = NULL, *rest = NULL, *result = NULL;
    Listing *l = PyCapsule_GetPointer(cap, CAPSULE_NAME);
    if (l == NULL || (unchanged = PyList_New(0)) == NULL || (rest = PyList_New(0)) == NULL)
        goto done;
    if (start < 0 || limit < 1) {
        PyErr_SetString(PyExc_ValueError, "directory: start >= 0, limit >= 1");
        goto done;
    }
    size_t i = (size_t)start;
    for (; i < l->n && PyList_GET_SIZE(unchanged) < limit; i++) {
        Item *it = &l->items[i];
        Int want[K_COUNT];
        if (it->err || !S_ISREG(it->st.st_mode) || PyDict_GET_SIZE(olds) == 0 || want_of(&it->st, want)) {
            if (append_place(rest, i))
                goto done;
            continue;
        }
        PyObject *name = PyBytes_FromStringAndSize(it->name, (Py_ssize_t)it->len);
        if (name == NULL)
            goto done;
        PyObject *raw = PyDict_GetItemWithError(olds, name);
        PyObject *content = NULL, *user, *group;
        if (raw == NULL && PyErr_Occurred())
            goto fail_name;
        Py_XINCREF(raw); /* owner() is Python code: the dict may change under it */
        if (raw != NULL && PyBytes_Check(raw)) {
            if (owner_of(self, want[K_U].v, want[K_G].v, &user, &group))
                goto fail_raw;
            content = match_entry((const unsigned char *)PyBytes_AS_STRING(raw), (size_t)PyBytes_GET_SIZE(raw), want, user,
                                  group);
            if (content == NULL)
                goto fail_raw;
            if (content == Py_None)
                Py_CLEAR(content);
        }
        if (content == NULL) {
            Py_XDECREF(raw);
            Py_DECREF(name);
            if (append_place(rest, i))
                goto done;
            continue;
        }
        PyObject *t = PyTuple_New(5);
        PyObject *path = PyBytes_FromStringAndSize(NULL, pre.len + (Py_ssize_t)it->len);
        PyObject *size = PyLong_FromLongLong((long long)it->st.st_size);
        PyObject *place = PyLong_FromSize_t(i);
        if (t == NULL || path == NULL || size == NULL || place == NULL) {
            Py_XDECREF(t);
            Py_XDECREF(path);
            Py_XDECREF(size);
            Py_XDECREF(place);
            Py_DECREF(content);
            goto fail_raw;
        }
        memcpy(PyBytes_AS_STRING(path), pre.buf, (size_t)pre.len);
        memcpy(PyBytes_AS_STRING(path) + pre.len, it->name, it->len);
        PyTuple_SET_ITEM(t, 0, path);
        PyTuple_SET_ITEM(t, 1, size);
        PyTuple_SET_ITEM(t, 2, content);
        PyTuple_SET_ITEM(t, 3, raw); /* the tuple takes the reference held above */
        PyTuple_SET_ITEM(t, 4, place);
        int bad = PyList_Append(unchanged, t);
        Py_DECREF(t);
        if (bad || PyDict_DelItem(olds, name))
            goto fail_name;
        Py_DECREF(name);
        continue;
    fail_raw:
        Py_XDECREF(raw);
    fail_name:
        Py_DECREF(name);
        goto done;
    }
    if (i < l->n) {
        PyObject *next = PyLong_FromSize_t(i);
        if (next != NULL) {
            result = PyTuple_Pack(3, unchanged, rest, next);
            Py_DECREF(next);
        }
    } else {
        result = PyTuple_Pack(3, unchanged, rest, Py_None);
    }
done:
    Py_XDECREF(unchanged);
    Py_XDECREF(rest);
    PyBuffer_Release(&pre);
    return result;
}

static PyMethodDef matcher_methods[] = {
    {"directory", (PyCFunction)matcher_directory, METH_VARARGS,
     "directory(listing, olds, pre, start=0, limit=max) -> (unchanged, rest, next): the regular files of a listing "
     "matched at once, from place start until limit have matched (next: the place to go on from, or None)"},
    {NULL, NULL, 0, NULL},
};

static int
matcher_init(Matcher *self, PyObject *args, PyObject *kwargs)
{
    PyObject *owner;
    static char *kw[] = {"owner", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O", kw, &owner))
        return -1;
    if (!PyCallable_Check(owner)) {
        PyErr_SetString(PyExc_TypeError, "owner must be callable");
        return -1;
    }
    Py_INCREF(owner);
    Py_XSETREF(self->owner, owner);
    self->have_last = 0;
    return 0;
}

static void
matcher_dealloc(Matcher *self)
{
    Py_XDECREF(self->owner);
    Py_XDECREF(self->last_uid);
    Py_XDECREF(self->last_gid);
    Py_XDECREF(self->user);
    Py_XDECREF(self->group);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject MatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "backupkit._parentmatch.Matcher",
    .tp_basicsize = sizeof(Matcher),
    .tp_dealloc = (destructor)matcher_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Matcher(owner)(raw, st) -> the parent's content list when the file is unchanged, else None",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)matcher_init,
    .tp_call = (ternaryfunc)matcher_call,
    .tp_methods = matcher_methods,
};

/* -- entry_blobs: a whole entry checked as Entry.from_wire checks it, for reachability ---- */

/* the wire keys and what each holds (objects/entry.py's _FIELDS) */
enum { V_TYPE, V_INT, V_NAME, V_BYTES, V_XATTRS, V_CONTENT, V_BLOBS };
typedef struct {
    const char *key;
    int kind;
    int neg_ok;             /* V_INT: negative values allowed (down to -2**63) */
    unsigned long long max; /* V_INT: the largest value allowed */
} Field;
static const Field FIELDS[] = {
    {"t", V_TYPE, 0, 0},
    {"m", V_INT, 0, 07777},
    {"u", V_INT, 0, 0xFFFFFFFFULL},
    {"g", V_INT, 0, 0xFFFFFFFFULL},
    {"un", V_NAME, 0, 0},
    {"gn", V_NAME, 0, 0},
    {"s", V_INT, 0, 0x7FFFFFFFFFFFFFFFULL},
    {"mt", V_INT, 1, 0x7FFFFFFFFFFFFFFFULL},
    {"ct", V_INT, 1, 0x7FFFFFFFFFFFFFFFULL},
    {"i", V_INT, 0, 0xFFFFFFFFFFFFFFFFULL},
    {"dv", V_INT, 0, 0xFFFFFFFFFFFFFFFFULL},
    {"n", V_INT, 0, 0xFFFFFFFFFFFFFFFFULL},
    {"rd", V_INT, 0, 0xFFFFFFFFFFFFFFFFULL},
    {"l", V_BYTES, 0, 0},
    {"x", V_XATTRS, 0, 0},
    {"c", V_CONTENT, 0, 0},
    {"cb", V_BLOBS, 0, 0},
};
#define NFIELDS ((int)(sizeof FIELDS / sizeof FIELDS[0]))

static PyObject *
entry_blobs(PyObject *Py_UNUSED(self), PyObject *arg)
{
    Py_buffer raw;
    if (PyObject_GetBuffer(arg, &raw, PyBUF_SIMPLE))
        return NULL;
    Cur c = {(const unsigned char *)raw.buf, (const unsigned char *)raw.buf + raw.len};
    PyObject *lists[2] = {NULL, NULL}; /* c, cb */
    PyObject *result = NULL;
    int seen[NFIELDS];
    memset(seen, 0, sizeof seen);
    char type = 0;
    long long nkeys = read_header(&c, 0x80, 0xde, 0xdf);
    if (nkeys < 0 || nkeys > NFIELDS)
        goto refuse;
    for (long long k = 0; k < nkeys; k++) {
        const unsigned char *key, *s;
        size_t klen, slen;
        if (read_str(&c, &key, &klen))
            goto refuse;
        int f = -1;
        for (int j = 0; j < NFIELDS; j++)
            if (strlen(FIELDS[j].key) == klen && memcmp(FIELDS[j].key, key, klen) == 0)
                f = j;
        if (f < 0 || seen[f])
            goto refuse; /* unknown, or repeated (Python keeps the last: it decides) */
        seen[f] = 1;
        switch (FIELDS[f].kind) {
        case V_TYPE:
            if (read_str(&c, &s, &slen) || slen != 1 || !memchr("fdlpscb", s[0], 7))
                goto refuse;
            type = (char)s[0];
            break;
        case V_INT: {
            Int v;
            if (read_int(&c, &v))
                goto refuse;
            if (v.neg ? !FIELDS[f].neg_ok : v.v > FIELDS[f].max)
                goto refuse;
            break;
        }
        case V_NAME: /* ASCII only: anything else is Python's to decode */
            if (read_str(&c, &s, &slen))
                goto refuse;
            for (size_t i = 0; i < slen; i++)
                if (s[i] & 0x80)
                    goto refuse;
            break;
        case V_BYTES:
            if (read_bin(&c, &s, &slen))
                goto refuse;
            break;
        case V_XATTRS:
            goto refuse; /* rare: Python reads them */
        case V_CONTENT:
        case V_BLOBS: {
            PyObject *l = read_items(&c, 32, FIELDS[f].kind == V_CONTENT, 0x7FFFFFFFFFFFFFFFULL);
            if (l == NULL) {
                if (PyErr_Occurred())
                    goto error;
                goto refuse;
            }
            lists[FIELDS[f].kind == V_BLOBS] = l;
            break;
        }
        }
    }
    if (c.p != c.end || type == 0)
        goto refuse;
    /* what each type cannot do without, and never both content forms */
    int need = type == 'f' ? 6 : type == 'l' ? 13 : (type == 'c' || type == 'b') ? 12 : -1;
    if ((need >= 0 && !seen[need]) || (lists[0] != NULL && lists[1] != NULL))
        goto refuse;
    result = PyTuple_Pack(2, lists[0] ? lists[0] : Py_None, lists[1] ? lists[1] : Py_None);
    goto done;
refuse:
    result = Py_None;
    Py_INCREF(result);
error:
done:
    Py_XDECREF(lists[0]);
    Py_XDECREF(lists[1]);
    PyBuffer_Release(&raw);
    return result;
}

static PyMethodDef module_methods[] = {
    {"entry_blobs", entry_blobs, METH_O,
     "entry_blobs(raw) -> (content, content_blobs) of an entry Entry.from_wire accepts (each a list or None), or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_parentmatch", NULL, -1, module_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__parentmatch(void)
{
    if (PyType_Ready(&MatcherType) < 0)
        return NULL;
    PyObject *os = PyImport_ImportModule("os");
    if (os == NULL)
        return NULL;
    PyObject *t = PyObject_GetAttrString(os, "stat_result");
    Py_DECREF(os);
    if (t == NULL)
        return NULL;
    PyObject *nf = PyObject_GetAttrString(t, "n_fields");
    long n_fields = nf ? PyLong_AsLong(nf) : -1;
    Py_XDECREF(nf);
    if (!PyType_Check(t) || n_fields < 16) {
        Py_DECREF(t);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ImportError, "os.stat_result has no *_ns fields");
        return NULL;
    }
    StatType = (PyTypeObject *)t;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&MatcherType);
    if (PyModule_AddObject(m, "Matcher", (PyObject *)&MatcherType) < 0) {
        Py_DECREF(&MatcherType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

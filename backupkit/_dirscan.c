/* List one directory and lstat every entry in one call, the GIL released.
 *
 * read(path) -> listing: the directory's names (without "." and ".."), sorted as Python
 * sorts bytes, each with its lstat (or the errno that lstat failed with), held in C
 * memory; a directory that cannot be opened or read raises OSError as os.listdir would.
 * names(listing) and stats(listing, os.stat_result) make the Python objects: each stat
 * an os.stat_result equal field for field to os.lstat(path + b"/" + name), or an int
 * errno, made one at a time by an iterator; subdirs(listing, os.stat_result) gives
 * (name, stat) of the directories only. So a thread that reads ahead holds the GIL only
 * for what it must look at (the subdirectories), and the thread that uses the entries
 * makes them as it goes (as many alive at once as with one os.lstat call per entry).
 *
 * The reference is the Python path in dirscan.py (os.listdir, sorted, os.lstat of each
 * name); tests/test_dirscan.py compares the two on the same trees. Each stat_result is
 * filled the way CPython's posixmodule.c fills os.lstat's, so code that reads any of its
 * fields cannot tell them apart. The entries are stat'ed relative to the directory's
 * descriptor (fstatat), which spares the kernel a path lookup per entry.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "_listing.h" /* Item, Listing, CAPSULE_NAME */

static int
cmp_items(const void *a, const void *b)
{
    const Item *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    return (x->len > y->len) - (x->len < y->len);
}

/* A listing's items and their names live in one block (read_dir). A large block (a
 * directory of a thousand entries or more) is mapped on its own and unmapped when freed:
 * the process sets malloc's mmap threshold high (cli/tuning.py), and blocks freed by the
 * walk would otherwise stay in the reading thread's arena. */
#define BLOCK_HEAD 16
#define BLOCK_MAPPED ((size_t)256 * 1024)

static void *
block_alloc(size_t size)
{
    size_t total = size + BLOCK_HEAD;
    char *p;
    if (total >= BLOCK_MAPPED) {
        p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
    } else if ((p = malloc(total)) == NULL) {
        return NULL;
    }
    memcpy(p, &total, sizeof total);
    return p + BLOCK_HEAD;
}

static void
block_free(void *block)
{
    if (block == NULL)
        return;
    char *p = (char *)block - BLOCK_HEAD;
    size_t total;
    memcpy(&total, p, sizeof total);
    if (total >= BLOCK_MAPPED)
        munmap(p, total);
    else
        free(p);
}

static void
free_items(Item *items, size_t n)
{
    (void)n;
    block_free(items);
}

/* Reads the directory (no GIL held). Returns 0, or an errno with nothing allocated.
 * *out: n items followed by their names, one block (one free). */
static int
read_dir(const char *path, Item **out, size_t *count)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        int e = errno;
        close(fd);
        return e;
    }
    /* the names first, one after the other (each ended by a NUL) */
    size_t cap = 4096, used = 0, n = 0;
    char *buf = malloc(cap);
    int err = buf == NULL ? ENOMEM : 0;
    while (!err) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (de == NULL) {
            err = errno;
            break;
        }
        const char *nm = de->d_name;
        if (nm[0] == '.' && (nm[1] == 0 || (nm[1] == '.' && nm[2] == 0)))
            continue;
        size_t len = strlen(nm) + 1;
        if (used + len > cap) {
            char *grown = realloc(buf, 2 * cap + len);
            if (grown == NULL) {
                err = ENOMEM;
                break;
            }
            buf = grown;
            cap = 2 * cap + len;
        }
        memcpy(buf + used, nm, len);
        used += len;
        n++;
    }
    Item *items = err ? NULL : block_alloc(n * sizeof(Item) + used + 1);
    if (items == NULL) {
        closedir(d);
        free(buf);
        return err ? err : ENOMEM;
    }
    char *names = (char *)(items + n);
    memcpy(names, buf, used);
    free(buf);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        items[i].name = names + off;
        items[i].len = strlen(names + off);
        items[i].err = 0;
        off += items[i].len + 1;
    }
    qsort(items, n, sizeof(Item), cmp_items);
    int dfd = dirfd(d);
    for (size_t i = 0; i < n; i++) {
        if (fstatat(dfd, items[i].name, &items[i].st, AT_SYMLINK_NOFOLLOW) != 0)
            items[i].err = errno ? errno : EIO;
    }
    closedir(d);
    *out = items;
    *count = n;
    return 0;
}

/* sec * 10**9 + nsec as a Python int, as posixmodule.c's fill_time computes it */
static PyObject *
time_ns(long long sec, long nsec)
{
    long long ns;
    if (!__builtin_mul_overflow(sec, 1000000000LL, &ns) && !__builtin_add_overflow(ns, (long long)nsec, &ns))
        return PyLong_FromLongLong(ns);
    PyObject *s = PyLong_FromLongLong(sec), *g = PyLong_FromLong(1000000000L), *n = PyLong_FromLong(nsec);
    PyObject *r = NULL;
    if (s && g && n) {
        PyObject *m = PyNumber_Multiply(s, g);
        if (m) {
            r = PyNumber_Add(m, n);
            Py_DECREF(m);
        }
    }
    Py_XDECREF(s);
    Py_XDECREF(g);
    Py_XDECREF(n);
    return r;
}

static PyObject *
id_value(unsigned long long v, int all_ones)
{
    /* uid, gid and dev of -1 read as -1, as in posixmodule.c */
    return all_ones ? PyLong_FromLong(-1) : PyLong_FromUnsignedLongLong(v);
}

static int
set(PyObject *r, Py_ssize_t i, PyObject *v)
{
    if (v == NULL)
        return -1;
    PyStructSequence_SetItem(r, i, v);
    return 0;
}

static PyObject *
stat_result(PyTypeObject *type, const struct stat *st)
{
    PyObject *r = PyStructSequence_New(type);
    if (r == NULL)
        return NULL;
    const long long secs[3] = {st->st_atim.tv_sec, st->st_mtim.tv_sec, st->st_ctim.tv_sec};
    const long nsecs[3] = {st->st_atim.tv_nsec, st->st_mtim.tv_nsec, st->st_ctim.tv_nsec};
    if (set(r, 0, PyLong_FromLong((long)st->st_mode)) || set(r, 1, PyLong_FromUnsignedLongLong(st->st_ino))
        || set(r, 2, id_value(st->st_dev, st->st_dev == (dev_t)-1))
        || set(r, 3, PyLong_FromUnsignedLongLong(st->st_nlink))
        || set(r, 4, id_value(st->st_uid, st->st_uid == (uid_t)-1))
        || set(r, 5, id_value(st->st_gid, st->st_gid == (gid_t)-1))
        || set(r, 6, PyLong_FromLongLong(st->st_size)))
        goto fail;
    for (int i = 0; i < 3; i++) {
        if (set(r, 7 + i, PyLong_FromLongLong(secs[i])) || set(r, 10 + i, PyFloat_FromDouble(secs[i] + nsecs[i] * 1e-9))
            || set(r, 13 + i, time_ns(secs[i], nsecs[i])))
            goto fail;
    }
    if (set(r, 16, PyLong_FromLong((long)st->st_blksize)) || set(r, 17, PyLong_FromLong((long)st->st_blocks))
        || set(r, 18, PyLong_FromLong((long)st->st_rdev)))
        goto fail;
    return r;
fail:
    Py_DECREF(r);
    return NULL;
}

static void
drop_listing(PyObject *cap)
{
    Listing *l = PyCapsule_GetPointer(cap, CAPSULE_NAME);
    if (l != NULL) {
        free_items(l->items, l->n);
        free(l);
    }
}

/* the capsule that owns l (freed here when it cannot be made) */
static PyObject *
listing_capsule(Listing *l)
{
    PyObject *cap = PyCapsule_New(l, CAPSULE_NAME, drop_listing);
    if (cap == NULL) {
        free_items(l->items, l->n);
        free(l);
    }
    return cap;
}

static Listing *
listing_of(PyObject *cap)
{
    return PyCapsule_GetPointer(cap, CAPSULE_NAME);
}

/* the type must be os.stat_result's shape: 19 fields as posixmodule.c fills them on Linux */
static int
check_type(PyTypeObject *type)
{
    PyObject *nf = PyObject_GetAttrString((PyObject *)type, "n_fields");
    long n_fields = nf ? PyLong_AsLong(nf) : -1;
    Py_XDECREF(nf);
    if (n_fields != 19) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "expected os.stat_result with 19 fields");
        return -1;
    }
    return 0;
}

static PyObject *
ds_read(PyObject *Py_UNUSED(self), PyObject *arg)
{
    PyObject *path;
    if (!PyUnicode_FSConverter(arg, &path))
        return NULL;
    Listing *l = malloc(sizeof(Listing));
    if (l == NULL) {
        Py_DECREF(path);
        return PyErr_NoMemory();
    }
    l->items = NULL;
    l->n = 0;
    int err;
    const char *p = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    err = read_dir(p, &l->items, &l->n);
    Py_END_ALLOW_THREADS
    if (err) {
        free(l);
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        Py_DECREF(path);
        return NULL;
    }
    Py_DECREF(path);
    return listing_capsule(l);
}

/* the entries' names, in order */
static PyObject *
ds_names(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *cap, *at = NULL;
    if (!PyArg_ParseTuple(args, "O|O!", &cap, &PyList_Type, &at))
        return NULL;
    Listing *l = listing_of(cap);
    if (l == NULL)
        return NULL;
    Py_ssize_t n = at ? PyList_GET_SIZE(at) : (Py_ssize_t)l->n;
    PyObject *names = PyList_New(n);
    if (names == NULL)
        return NULL;
    for (Py_ssize_t j = 0; j < n; j++) {
        size_t i = (size_t)j;
        if (at != NULL) {
            i = PyLong_AsSize_t(PyList_GET_ITEM(at, j));
            if (i >= l->n) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_IndexError, "names: a place past the listing's end");
                Py_DECREF(names);
                return NULL;
            }
        }
        PyObject *nm = PyBytes_FromStringAndSize(l->items[i].name, (Py_ssize_t)l->items[i].len);
        if (nm == NULL) {
            Py_DECREF(names);
            return NULL;
        }
        PyList_SET_ITEM(names, j, nm);
    }
    return names;
}

/* stats(listing, type): an iterator over the entries' os.stat_result (or errno), made one
 * at a time as the walk reaches them: a directory of 18k files never holds 18k of them */
typedef struct {
    PyObject_HEAD
    PyObject *cap;
    PyTypeObject *type;
    PyObject *at; /* NULL: every entry in turn; else a list of the entries' places */
    size_t i;
} StatsIter;

static void
stats_iter_dealloc(StatsIter *it)
{
    Py_XDECREF(it->cap);
    Py_XDECREF(it->type);
    Py_XDECREF(it->at);
    PyObject_Free(it);
}

static PyObject *
stats_iter_next(StatsIter *it)
{
    Listing *l = listing_of(it->cap);
    size_t k = it->i;
    if (it->at != NULL) {
        if (l == NULL || it->i >= (size_t)PyList_GET_SIZE(it->at))
            return NULL;
        k = PyLong_AsSize_t(PyList_GET_ITEM(it->at, (Py_ssize_t)it->i));
        if (k == (size_t)-1 && PyErr_Occurred())
            return NULL;
    }
    if (l == NULL || k >= l->n) {
        if (it->at != NULL && l != NULL)
            PyErr_SetString(PyExc_IndexError, "stats: a place past the listing's end");
        return NULL;
    }
    it->i++;
    Item *x = &l->items[k];
    return x->err ? PyLong_FromLong(x->err) : stat_result(it->type, &x->st);
}

static PyTypeObject StatsIterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "backupkit._dirscan.StatsIterator",
    .tp_basicsize = sizeof(StatsIter),
    .tp_dealloc = (destructor)stats_iter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)stats_iter_next,
};

static PyObject *
ds_stats(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *cap, *at = NULL;
    PyTypeObject *type;
    if (!PyArg_ParseTuple(args, "OO!|O!", &cap, &PyType_Type, &type, &PyList_Type, &at) || check_type(type) ||
        listing_of(cap) == NULL)
        return NULL;
    StatsIter *it = PyObject_New(StatsIter, &StatsIterType);
    if (it == NULL)
        return NULL;
    Py_INCREF(cap);
    Py_INCREF(type);
    Py_XINCREF(at);
    it->cap = cap;
    it->type = type;
    it->at = at;
    it->i = 0;
    return (PyObject *)it;
}

/* how many entries' lstat failed */
static PyObject *
ds_errors(PyObject *Py_UNUSED(self), PyObject *cap)
{
    Listing *l = listing_of(cap);
    if (l == NULL)
        return NULL;
    size_t e = 0;
    for (size_t i = 0; i < l->n; i++)
        e += l->items[i].err != 0;
    return PyLong_FromSize_t(e);
}

/* ---- reading ahead of the walk ------------------------------------------------------------
 *
 * ahead(root, entries, max_age, dev, threads) starts threads of their own (pthreads: they
 * never take the GIL) that read the directories below root as read() does, each taking
 * the first directory in the walk's order (depth first, names sorted) not yet read, and
 * keep each listing for the walk. take(path) hands the walk the listing of the directory
 * it is about to list, or None when no thread has got there (or that read failed, or the
 * listing is older than max_age seconds): the walk then reads it itself. So on a cold
 * cache the disk works (several reads in flight) while the walk compares, and warm, the
 * system calls leave the walk's thread. dev >= 0: directories on another device are not
 * entered (--one-file-system).
 *
 * Listings read and not yet taken are bounded: past `entries` entries the threads wait.
 * Only the first AHEAD_FULL threads read up to that bound; the others read while less
 * than a quarter of it is held, i.e. while the walk is close behind the readers: on a
 * cold cache, where each read waits for the disk and more reads in flight are what
 * helps; warm, the first ones keep far enough ahead and the others sleep instead of
 * taking the CPU from the walk (cold /usr: 2.2 s with two threads, 1.8 with four;
 * warm four cost ~5% over two until the others were held back).
 * A directory the walk went past without taking (excluded, another file system) is
 * dropped, and not read when no thread has got there yet. close() stops the threads at
 * their next directory without waiting for them (a read stuck on a dead network mount
 * keeps only its own thread).
 *
 * keep=False makes a warmer: the same threads in the same order, but each listing is
 * dropped once read, so nothing is held and nothing bounds them. Started while a backup
 * opens its repository (the key, the index), it fills the kernel's caches with the
 * tree's metadata on a cold cache, on a core that is otherwise idle then.
 */

/* paths in the walk's order: component by component, each compared as bytes. Past
 * their common prefix that is one byte's compare, where a component's end sorts first:
 * the path's end (an ancestor comes first), then "/" (a shorter name comes first), then
 * every other byte as unsigned (tests/test_dirscan.py holds it to the component loop) */
static int
cmp_walk(const char *a, size_t al, const char *b, size_t bl)
{
    size_t n = al < bl ? al : bl, k = 0;
    while (k + 8 <= n) {
        uint64_t x, y;
        memcpy(&x, a + k, 8);
        memcpy(&y, b + k, 8);
        if (x != y)
            break;
        k += 8;
    }
    while (k < n && a[k] == b[k])
        k++;
    int ca = k < al ? (a[k] == '/' ? 1 : (unsigned char)a[k] + 2) : 0;
    int cb = k < bl ? (b[k] == '/' ? 1 : (unsigned char)b[k] + 2) : 0;
    return (ca > cb) - (ca < cb);
}

static int
is_ancestor(const char *a, size_t al, const char *b, size_t bl)
{
    if (al == 1 && a[0] == '/')
        return bl > 1 && b[0] == '/';
    return bl > al && memcmp(a, b, al) == 0 && b[al] == '/';
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* threads that read up to the bound; the others only up to a quarter of it */
#define AHEAD_FULL 2

typedef struct Rec {
    struct Rec *next, *prev; /* prev: only within the list of the read */
    Item *items; /* NULL when the read failed */
    size_t n, len;
    double at; /* when it was read */
    char path[];
} Rec;

/* directories found and not yet read: a heap, the first in the walk's order on top */
typedef struct {
    char *p;
    size_t len;
} Path;

typedef struct {
    Path *v;
    size_t n, cap;
} PathHeap;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs, stop, busy;
    int started; /* threads that have begun: each one's number */
    int keep; /* 0: a warmer, whose listings are dropped once read (see ahead) */
    char *root;
    size_t root_len;
    long long dev; /* < 0: any device */
    double max_age;
    size_t limit, held;
    PathHeap todo;
    Rec *head, *tail; /* read, not yet taken or passed, in the walk's order */
    char *pos;        /* the directory the walk took last (NULL: none yet) */
    size_t pos_len, pos_cap;
    size_t dirs_read, dirs_passed, dirs_taken;
} Ahead;

static void
free_rec(Rec *r)
{
    if (r->items)
        free_items(r->items, r->n);
    free(r);
}

static void
ahead_release(Ahead *w)
{
    pthread_mutex_lock(&w->mu);
    int left = --w->refs;
    pthread_mutex_unlock(&w->mu);
    if (left)
        return;
    for (Rec *r = w->head; r;) {
        Rec *nx = r->next;
        free_rec(r);
        r = nx;
    }
    for (size_t i = 0; i < w->todo.n; i++)
        free(w->todo.v[i].p);
    free(w->todo.v);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->root);
    free(w->pos);
    free(w);
}

static int
heap_less(const Path *a, const Path *b)
{
    return cmp_walk(a->p, a->len, b->p, b->len) < 0;
}

static int
heap_push(PathHeap *h, char *p, size_t len)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        Path *v = realloc(h->v, cap * sizeof(Path));
        if (v == NULL)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    h->v[i].p = p;
    h->v[i].len = len;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!heap_less(&h->v[i], &h->v[up]))
            break;
        Path t = h->v[i];
        h->v[i] = h->v[up];
        h->v[up] = t;
        i = up;
    }
    return 0;
}

static Path
heap_pop(PathHeap *h)
{
    Path top = h->v[0];
    h->v[0] = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && heap_less(&h->v[l], &h->v[m]))
            m = l;
        if (r < h->n && heap_less(&h->v[r], &h->v[m]))
            m = r;
        if (m == i)
            break;
        Path t = h->v[i];
        h->v[i] = h->v[m];
        h->v[m] = t;
        i = m;
    }
    return top;
}

/* dir + "/" + name (no double slash after the root "/") */
static char *
join_path(const char *dir, size_t dl, const char *name, size_t nl, size_t *len)
{
    int slash = !(dl == 1 && dir[0] == '/');
    *len = dl + (size_t)slash + nl;
    char *p = malloc(*len + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, dir, dl);
    if (slash)
        p[dl] = '/';
    memcpy(p + dl + slash, name, nl);
    p[*len] = 0;
    return p;
}

/* one of the reading threads: takes the first directory in the walk's order from the
 * heap, reads it, adds its subdirectories to the heap and its listing to the list */
static void *
ahead_main(void *arg)
{
    Ahead *w = arg;
    pthread_mutex_lock(&w->mu);
    size_t bound = w->started++ < AHEAD_FULL ? w->limit : w->limit / 4;
    for (;;) {
        while (!w->stop && (w->held > bound || (w->todo.n == 0 && w->busy > 0)))
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop || w->todo.n == 0)
            break; /* stopped, or nothing left and no one reading: the tree is done */
        Path d = heap_pop(&w->todo);
        /* the walk went past this one and everything below it (one it is at or inside
         * is still read: its subdirectories are what comes next) */
        if (w->pos != NULL && cmp_walk(d.p, d.len, w->pos, w->pos_len) < 0 && !is_ancestor(d.p, d.len, w->pos, w->pos_len)) {
            w->dirs_passed++;
            free(d.p);
            continue;
        }
        w->busy++;
        pthread_mutex_unlock(&w->mu);

        Item *items = NULL;
        size_t n = 0;
        if (read_dir(d.p, &items, &n) != 0) {
            items = NULL;
            n = 0;
        }
        /* its subdirectories, joined outside the lock */
        size_t nsub = 0;
        Path *subs = NULL;
        for (size_t i = 0; i < n; i++)
            nsub += !items[i].err && S_ISDIR(items[i].st.st_mode);
        if (nsub && (subs = malloc(nsub * sizeof(Path))) != NULL) {
            size_t k = 0;
            for (size_t i = 0; i < n; i++) {
                Item *it = &items[i];
                if (it->err || !S_ISDIR(it->st.st_mode) || (w->dev >= 0 && (long long)it->st.st_dev != w->dev))
                    continue;
                subs[k].p = join_path(d.p, d.len, it->name, it->len, &subs[k].len);
                if (subs[k].p != NULL)
                    k++;
            }
            nsub = k;
        } else {
            nsub = 0;
        }
        Rec *r = w->keep ? malloc(sizeof(Rec) + d.len + 1) : NULL;
        if (!w->keep) {
            if (items)
                free_items(items, n); /* read for the kernel's caches alone */
        } else if (r != NULL) {
            r->next = r->prev = NULL;
            r->items = items;
            r->n = n;
            r->len = d.len;
            r->at = now_s();
            memcpy(r->path, d.p, d.len + 1);
        } else if (items) {
            free_items(items, n);
        }
        free(d.p);

        pthread_mutex_lock(&w->mu);
        w->busy--;
        w->dirs_read++;
        for (size_t i = 0; i < nsub; i++) {
            if (w->stop || heap_push(&w->todo, subs[i].p, subs[i].len))
                free(subs[i].p);
        }
        free(subs);
        if (r != NULL) {
            if (w->stop || (w->pos != NULL && cmp_walk(r->path, r->len, w->pos, w->pos_len) <= 0)) {
                /* stopped, or the walk listed it itself meanwhile (or is inside it):
                 * only its subdirectories were wanted */
                free_rec(r);
            } else {
                /* in the walk's order: most often after the last one or just before
                 * it (the other thread's), so the place is looked for from the tail */
                Rec *after = w->tail;
                while (after && cmp_walk(after->path, after->len, r->path, r->len) > 0)
                    after = after->prev;
                r->prev = after;
                r->next = after ? after->next : w->head;
                if (r->next)
                    r->next->prev = r;
                else
                    w->tail = r;
                if (after)
                    after->next = r;
                else
                    w->head = r;
                w->held += r->n + 1;
            }
        }
        /* the others wait for directories to read or for the end (not for this one's
         * listing): wake them only for those */
        if (nsub || (w->busy == 0 && w->todo.n == 0))
            pthread_cond_broadcast(&w->cv);
    }
    pthread_cond_broadcast(&w->cv); /* the others see the end too */
    pthread_mutex_unlock(&w->mu);
    ahead_release(w);
    return NULL;
}

typedef struct {
    PyObject_HEAD
    Ahead *w;
} AheadObject;

static void
ahead_stop(Ahead *w)
{
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void
ahead_dealloc(AheadObject *o)
{
    if (o->w) {
        ahead_stop(o->w);
        ahead_release(o->w);
    }
    PyObject_Free(o);
}

/* the listing of path read ahead, or None: see the section's comment */
static PyObject *
ahead_take(AheadObject *o, PyObject *arg)
{
    char *p;
    Py_ssize_t pl;
    if (PyBytes_AsStringAndSize(arg, &p, &pl) < 0)
        return NULL;
    Ahead *w = o->w;
    Rec *mine = NULL;
    Rec *gone = NULL; /* freed after the lock is let go */
    if (pthread_mutex_trylock(&w->mu) != 0) {
        /* a reading thread holds it: wait without the GIL */
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&w->mu);
        Py_END_ALLOW_THREADS
    }
    if ((size_t)pl + 1 > w->pos_cap) {
        char *np = realloc(w->pos, (size_t)pl + 1);
        if (np == NULL) {
            pthread_mutex_unlock(&w->mu);
            return PyErr_NoMemory();
        }
        w->pos = np;
        w->pos_cap = (size_t)pl + 1;
    }
    memcpy(w->pos, p, (size_t)pl + 1);
    w->pos_len = (size_t)pl;
    size_t before = w->held;
    while (w->head) {
        Rec *r = w->head;
        int c = cmp_walk(r->path, r->len, p, (size_t)pl);
        if (c > 0)
            break;
        w->head = r->next;
        if (w->head == NULL)
            w->tail = NULL;
        else
            w->head->prev = NULL;
        w->held -= r->n + 1;
        r->next = NULL;
        if (c == 0 && r->items != NULL && now_s() - r->at <= w->max_age) {
            mine = r;
            w->dirs_taken++;
        } else {
            r->next = gone;
            gone = r;
        }
    }
    if ((before > w->limit && w->held <= w->limit) || (before > w->limit / 4 && w->held <= w->limit / 4))
        pthread_cond_broadcast(&w->cv); /* room again for the readers a bound stopped */
    pthread_mutex_unlock(&w->mu);
    while (gone) {
        Rec *nx = gone->next;
        free_rec(gone);
        gone = nx;
    }
    if (mine == NULL)
        Py_RETURN_NONE;
    Listing *l = malloc(sizeof(Listing));
    if (l == NULL) {
        free_rec(mine);
        return PyErr_NoMemory();
    }
    l->items = mine->items;
    l->n = mine->n;
    mine->items = NULL;
    free_rec(mine);
    return listing_capsule(l);
}

static PyObject *
ahead_close(AheadObject *o, PyObject *Py_UNUSED(arg))
{
    ahead_stop(o->w);
    Py_RETURN_NONE;
}

static PyObject *
ahead_counts(AheadObject *o, PyObject *Py_UNUSED(arg))
{
    Ahead *w = o->w;
    pthread_mutex_lock(&w->mu);
    size_t r = w->dirs_read, p = w->dirs_passed, t = w->dirs_taken, h = w->held;
    pthread_mutex_unlock(&w->mu);
    return Py_BuildValue("(nnnn)", (Py_ssize_t)r, (Py_ssize_t)p, (Py_ssize_t)t, (Py_ssize_t)h);
}

static PyMethodDef ahead_methods[] = {
    {"take", (PyCFunction)ahead_take, METH_O, "take(path) -> the listing of path read ahead, or None"},
    {"close", (PyCFunction)ahead_close, METH_NOARGS, "close(): stop at the next directory (without waiting)"},
    {"counts", (PyCFunction)ahead_counts, METH_NOARGS,
     "counts() -> (directories read, passed over unread, taken by the walk; entries held)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject AheadType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "backupkit._dirscan.Ahead",
    .tp_basicsize = sizeof(AheadObject),
    .tp_dealloc = (destructor)ahead_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = ahead_methods,
};

static PyObject *
ds_ahead(PyObject *Py_UNUSED(self), PyObject *args)
{
    const char *root;
    Py_ssize_t root_len, limit;
    double max_age;
    long long dev;
    int threads = 1, keep = 1;
    if (!PyArg_ParseTuple(args, "y#ndL|ip", &root, &root_len, &limit, &max_age, &dev, &threads, &keep))
        return NULL;
    if (root_len < 1 || root[0] != '/' || limit < 0 || (size_t)root_len != strlen(root) || threads < 1 || threads > 64) {
        PyErr_SetString(PyExc_ValueError, "ahead: an absolute root, entries >= 0, 1-64 threads");
        return NULL;
    }
    Ahead *w = calloc(1, sizeof(Ahead));
    if (w == NULL)
        return PyErr_NoMemory();
    char *first = malloc((size_t)root_len + 1);
    w->root = malloc((size_t)root_len + 1);
    if (w->root == NULL || first == NULL || heap_push(&w->todo, first, (size_t)root_len)) {
        free(first);
        free(w->root);
        free(w->todo.v);
        free(w);
        return PyErr_NoMemory();
    }
    memcpy(first, root, (size_t)root_len + 1);
    memcpy(w->root, root, (size_t)root_len + 1);
    w->root_len = (size_t)root_len;
    w->limit = (size_t)limit;
    w->max_age = max_age;
    w->dev = dev;
    w->keep = keep;
    w->refs = 1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    AheadObject *o = PyObject_New(AheadObject, &AheadType);
    if (o == NULL) {
        ahead_release(w);
        return NULL;
    }
    o->w = w;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        pthread_mutex_lock(&w->mu);
        w->refs++;
        pthread_mutex_unlock(&w->mu);
        if (pthread_create(&t, &attr, ahead_main, w) != 0) {
            /* fewer threads (none: take() gives None, the walk reads as it would anyway) */
            pthread_mutex_lock(&w->mu);
            w->refs--;
            pthread_mutex_unlock(&w->mu);
            break;
        }
    }
    pthread_attr_destroy(&attr);
    return (PyObject *)o;
}

static PyObject *
ds_walk_cmp(PyObject *Py_UNUSED(self), PyObject *args)
{
    const char *a, *b;
    Py_ssize_t al, bl;
    if (!PyArg_ParseTuple(args, "y#y#", &a, &al, &b, &bl))
        return NULL;
    return PyLong_FromLong(cmp_walk(a, (size_t)al, b, (size_t)bl));
}

static PyMethodDef methods[] = {
    {"walk_cmp", ds_walk_cmp, METH_VARARGS, "walk_cmp(a, b) -> -1, 0 or 1: two paths in the walk's order (for tests)"},
    {"read", ds_read, METH_O, "read(path) -> a listing: the directory read and every entry lstat'ed, the GIL released"},
    {"names", ds_names, METH_VARARGS, "names(listing, places=None) -> the entries' names, sorted (or those at places)"},
    {"stats", ds_stats, METH_VARARGS,
     "stats(listing, stat_result_type, places=None) -> an iterator: each entry's (or each at places') os.stat_result, "
     "or the errno its lstat failed with"},
    {"errors", ds_errors, METH_O, "errors(listing) -> how many entries' lstat failed"},
    {"ahead", ds_ahead, METH_VARARGS,
     "ahead(root, entries, max_age, dev, threads=1, keep=True) -> threads reading the directories below root ahead of "
     "the walk (keep=False: a warmer, that keeps nothing)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dirscan", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__dirscan(void)
{
    if (PyType_Ready(&StatsIterType) < 0 || PyType_Ready(&AheadType) < 0)
        return NULL;
    return PyModule_Create(&module);
}

/* Seal many blobs (compress, encrypt, authenticate) and compute many blob ids in one
 * call each, the GIL released for the whole batch.
 *
 * The reference is the Python path: pack.encode_payload then crypto.Sealer.seal, and
 * crypto.Sealer.blob_id; pack.seal_payloads and pack.blob_ids choose this path when the
 * extension is built and its libraries are found, and tests open what it seals with the
 * Python path. Python's sealing holds the GIL in AES-GCM (the cryptography package keeps
 * it in encrypt) and in three copies of every blob; a backup's walk, reads and sealing
 * share one GIL, so that time was taken from the walk.
 *
 * For each blob: payload = 1 | zstd frame (level > 0, at least 64 bytes, and the frame
 * smaller than the data), else 0 | the data; envelope = version 1 | salt 16 | nonce 12 |
 * AES-256-GCM(payload) | tag 16, with key = HMAC-SHA256(enc_key, "bk-obj-v1" | type |
 * len(id) | id | salt) and associated data "bk1" | type | len(id) | id. Salts and nonces
 * come from getrandom, one call per batch. The payload is compressed straight into the
 * envelope and encrypted in place: no copy of the blob is made.
 *
 * Each thread keeps its zstd compression context and cipher context (a pthread key frees
 * them when the thread ends): a compression context's tables cost more to set up than
 * compressing a small file.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sys/random.h>

#include "_libcrypt.h"

#define OBJ_ID_MAX 255
#define RND_LEN (SALT_LEN + NONCE_LEN)
#define MIN_COMPRESS 64 /* pack.encode_payload: smaller payloads are stored raw */

typedef struct {
    EVP_CIPHER_CTX *cipher;
    void *cctx;
} ThreadCtx;

static pthread_key_t ctx_key;
static int ctx_key_ok;

static void free_thread_ctx(void *p) {
    ThreadCtx *t = p;
    if (!t) return;
    if (t->cipher) L.cipher_ctx_free(t->cipher);
    if (t->cctx) L.zstd_free_c(t->cctx);
    free(t);
}

/* This thread's contexts, made at its first use (no GIL needed); NULL if out of memory. */
static ThreadCtx *thread_ctx(void) {
    ThreadCtx *t = pthread_getspecific(ctx_key);
    if (t) return t;
    t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->cipher = L.cipher_ctx_new();
    t->cctx = L.zstd_create_c();
    if (!t->cipher || !t->cctx || !L.encrypt_init(t->cipher, L.cipher, NULL, NULL, NULL) || pthread_setspecific(ctx_key, t) != 0) {
        free_thread_ctx(t);
        return NULL;
    }
    return t;
}

static int fill_random(unsigned char *buf, size_t n) {
    while (n) {
        ssize_t got = getrandom(buf, n, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        buf += got;
        n -= (size_t)got;
    }
    return 1;
}

static PyObject *available(PyObject *self, PyObject *noargs) {
    return PyBool_FromLong(ctx_key_ok && ready());
}

static int check_ready(void) {
    if (!ctx_key_ok || !ready()) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto or libzstd not found");
        return 0;
    }
    return 1;
}

/* Buffers of a sequence of bytes-like objects; released by release_all. */
static Py_buffer *get_buffers(PyObject *seq, Py_ssize_t count, Py_ssize_t item) {
    Py_buffer *bufs = PyMem_Calloc((size_t)(count ? count : 1), sizeof(Py_buffer));
    if (!bufs) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, i);
        if (item >= 0) {
            if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) != 2) {
                PyErr_SetString(PyExc_TypeError, "each item is (object id, data)");
                goto fail;
            }
            o = PyTuple_GET_ITEM(o, item);
        }
        if (PyObject_GetBuffer(o, &bufs[i], PyBUF_SIMPLE) < 0) goto fail;
        if (bufs[i].len > INT_MAX - 64) {
            PyBuffer_Release(&bufs[i]);
            PyErr_SetString(PyExc_ValueError, "a blob is too large to seal");
            goto fail;
        }
        continue;
    fail:
        for (Py_ssize_t j = 0; j < i; j++) PyBuffer_Release(&bufs[j]);
        PyMem_Free(bufs);
        return NULL;
    }
    return bufs;
}

static void release_all(Py_buffer *bufs, Py_ssize_t count) {
    if (!bufs) return;
    for (Py_ssize_t i = 0; i < count; i++) PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
}

/* blob_ids(id_key, datas) -> list of HMAC-SHA256(id_key, data), one per data */
static PyObject *blob_ids(PyObject *self, PyObject *args) {
    Py_buffer key;
    PyObject *datas, *seq = NULL, *out = NULL;
    Py_buffer *bufs = NULL;
    unsigned char *macs = NULL;
    Py_ssize_t count = 0;
    Hmac h;
    memset(&h, 0, sizeof h);
    if (!PyArg_ParseTuple(args, "y*O", &key, &datas)) return NULL;
    if (!check_ready()) goto done;
    seq = PySequence_Fast(datas, "datas must be a sequence");
    if (!seq) goto done;
    count = PySequence_Fast_GET_SIZE(seq);
    bufs = get_buffers(seq, count, -1);
    macs = PyMem_Malloc((size_t)(count ? count : 1) * 32);
    if (!bufs || !macs) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    ok = hmac_init(&h, key.buf, key.len, NULL);
    for (Py_ssize_t i = 0; ok && i < count; i++) ok = hmac3(&h, bufs[i].buf, (size_t)bufs[i].len, NULL, 0, NULL, 0, macs + 32 * i);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto failed to hash a blob");
        goto done;
    }
    out = PyList_New(count);
    for (Py_ssize_t i = 0; out && i < count; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)macs + 32 * i, 32);
        if (!b) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, b);
    }
done:
    hmac_free(&h);
    release_all(bufs, count);
    PyMem_Free(macs);
    Py_XDECREF(seq);
    PyBuffer_Release(&key);
    return out;
}

typedef struct {
    const unsigned char *id;
    Py_ssize_t id_len;
    PyObject *env;      /* the envelope, allocated at its largest size, then shrunk */
    unsigned char *dst; /* its bytes */
    Py_ssize_t used;    /* its final size */
} Sealed;

/* Write item ``s`` (plaintext ``data``) into its envelope: 1 if done. */
static int seal_one(ThreadCtx *t, Hmac *enc, int obj_type, int level, const unsigned char *rnd, const Py_buffer *data, Sealed *s) {
    unsigned char *env = s->dst;
    size_t n = (size_t)data->len;
    unsigned char *payload = env + HEAD_LEN, *body = payload + 1;
    size_t body_len = n;
    env[0] = 1;
    memcpy(env + 1, rnd, RND_LEN);
    payload[0] = 0;
    if (level > 0 && n >= MIN_COMPRESS) {
        size_t z = L.zstd_compress(t->cctx, body, L.zstd_bound(n), data->buf, n, level);
        if (L.zstd_is_error(z)) return 0;
        if (z < n) {
            payload[0] = 1;
            body_len = z;
        }
    }
    if (payload[0] == 0 && n) memcpy(body, data->buf, n);
    unsigned char head[2] = {(unsigned char)obj_type, (unsigned char)s->id_len};
    unsigned char key[32];
    if (!hmac3(enc, head, 2, s->id, (size_t)s->id_len, env + 1, SALT_LEN, key)) return 0;
    unsigned char aad[5 + OBJ_ID_MAX];
    memcpy(aad, "bk1", 3);
    memcpy(aad + 3, head, 2);
    memcpy(aad + 5, s->id, (size_t)s->id_len);
    int got = 0, fin = 0, plen = (int)(1 + body_len);
    int ok = L.encrypt_init(t->cipher, NULL, NULL, key, env + 1 + SALT_LEN)
             && L.encrypt_update(t->cipher, NULL, &got, aad, 5 + (int)s->id_len)
             && L.encrypt_update(t->cipher, payload, &got, payload, plen) && got == plen
             && L.encrypt_final(t->cipher, payload + plen, &fin) && fin == 0
             && L.cipher_ctrl(t->cipher, CTRL_GCM_GET_TAG, TAG_LEN, payload + plen);
    memset(key, 0, sizeof key);
    s->used = HEAD_LEN + plen + TAG_LEN;
    return ok;
}

/* seal_blobs(enc_key, obj_type, level, items) -> list of envelopes
 * items: a sequence of (object id, data); level: zstd level (<= 0: stored raw). */
static PyObject *seal_blobs(PyObject *self, PyObject *args) {
    Py_buffer key;
    int obj_type, level;
    PyObject *items, *seq = NULL, *out = NULL;
    Py_buffer *bufs = NULL;
    Sealed *its = NULL;
    unsigned char *rnd = NULL;
    Py_ssize_t count = 0;
    Hmac enc;
    memset(&enc, 0, sizeof enc);
    if (!PyArg_ParseTuple(args, "y*iiO", &key, &obj_type, &level, &items)) return NULL;
    if (!check_ready()) goto done;
    if (obj_type < 0 || obj_type > 255) {
        PyErr_SetString(PyExc_ValueError, "object type out of range");
        goto done;
    }
    seq = PySequence_Fast(items, "items must be a sequence");
    if (!seq) goto done;
    count = PySequence_Fast_GET_SIZE(seq);
    bufs = get_buffers(seq, count, 1);
    if (!bufs) goto done;
    its = PyMem_Calloc((size_t)(count ? count : 1), sizeof(Sealed));
    rnd = PyMem_Malloc((size_t)(count ? count : 1) * RND_LEN);
    if (!its || !rnd) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *oid = PyTuple_GET_ITEM(PySequence_Fast_GET_ITEM(seq, i), 0);
        if (!PyBytes_Check(oid) || PyBytes_GET_SIZE(oid) > OBJ_ID_MAX) {
            PyErr_SetString(PyExc_ValueError, "an object id is bytes of at most 255");
            goto done;
        }
        its[i].id = (const unsigned char *)PyBytes_AS_STRING(oid);
        its[i].id_len = PyBytes_GET_SIZE(oid);
        size_t n = (size_t)bufs[i].len, room = n;
        if (level > 0 && n >= MIN_COMPRESS && L.zstd_bound(n) > room) room = L.zstd_bound(n);
        its[i].env = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(HEAD_LEN + 1 + room + TAG_LEN));
        if (!its[i].env) goto done;
        its[i].dst = (unsigned char *)PyBytes_AS_STRING(its[i].env);
    }
    int ok = 1, rnd_ok = 1;
    Py_BEGIN_ALLOW_THREADS
    ThreadCtx *t = thread_ctx();
    rnd_ok = fill_random(rnd, (size_t)count * RND_LEN);
    ok = t && rnd_ok && hmac_init(&enc, key.buf, key.len, "bk-obj-v1");
    for (Py_ssize_t i = 0; ok && i < count; i++) ok = seal_one(t, &enc, obj_type, level, rnd + RND_LEN * i, &bufs[i], &its[i]);
    Py_END_ALLOW_THREADS
    if (!rnd_ok) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto or libzstd failed to seal a blob");
        goto done;
    }
    out = PyList_New(count);
    if (!out) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (_PyBytes_Resize(&its[i].env, its[i].used) < 0) { /* shrinks in place: no copy */
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, its[i].env);
        its[i].env = NULL;
    }
done:
    if (its) {
        for (Py_ssize_t i = 0; i < count; i++) Py_XDECREF(its[i].env);
        PyMem_Free(its);
    }
    if (rnd) {
        memset(rnd, 0, (size_t)(count ? count : 1) * RND_LEN);
        PyMem_Free(rnd);
    }
    hmac_free(&enc);
    release_all(bufs, count);
    Py_XDECREF(seq);
    PyBuffer_Release(&key);
    return out;
}

static PyMethodDef methods[] = {
    {"available", available, METH_NOARGS, "True if libcrypto and libzstd were found."},
    {"blob_ids", blob_ids, METH_VARARGS, "HMAC-SHA256 of each buffer with one key, the GIL released."},
    {"seal_blobs", seal_blobs, METH_VARARGS, "Compress and seal (object id, data) items, the GIL released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_blobseal", NULL, -1, methods};

PyMODINIT_FUNC PyInit__blobseal(void) {
    if (!ctx_key_ok) ctx_key_ok = pthread_key_create(&ctx_key, free_thread_ctx) == 0;
    return PyModule_Create(&module);
}

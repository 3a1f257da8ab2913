/* Open, decode and verify many sealed blobs of one pack in one call, the GIL released.
 *
 * The reference is the Python path (crypto.Sealer.open, pack.decode_payload,
 * packverify.verify_blob); blobopen.py uses this only to say "this blob is good" fast:
 * a blob this code does not accept is handed back to the Python path, which decides
 * and words the error. So this file never has to agree with Python about an error,
 * only about success, and success needs the blob's keyed id to match its plaintext.
 *
 * For each blob: envelope = version 1 | salt 16 | nonce 12 | ciphertext | tag 16;
 * key = HMAC-SHA256(enc_key, "bk-obj-v1" | type | len(id) | id | salt); AES-256-GCM with
 * associated data "bk1" | type | len(id) | id; payload = flag (0 raw, 1 zstd) | body,
 * decoded into exactly raw_length bytes (never more: the zstd bomb bound); then
 * HMAC-SHA256(id_key, plaintext) must equal the id.
 *
 * libcrypto (OpenSSL 3, which Python's own hashlib loads) and libzstd are found with
 * dlopen at first use, so building needs neither library's headers; where either is
 * missing, available() is False and every caller keeps the Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_libcrypt.h"

typedef struct {
    Py_ssize_t off, len, raw;
    unsigned char id[ID_MAX];
    Py_ssize_t id_len;
    unsigned char *out; /* where the plaintext goes: the result's bytes, or scratch */
    PyObject *result;   /* a bytes object of raw bytes (want), else NULL */
    int ok;
} Item;

typedef struct {
    Hmac enc, ids;
    EVP_CIPHER_CTX *cipher;
    void *dctx;
    unsigned char *payload; /* decrypted payload of one blob */
} Work;

static int open_one(Work *w, int obj_type, const unsigned char *data, Py_ssize_t size, Item *it) {
    if (it->off < 0 || it->len < HEAD_LEN + TAG_LEN + 1 || it->off > size || it->len > size - it->off) return 0;
    const unsigned char *env = data + it->off;
    if (env[0] != 1) return 0;
    const unsigned char *salt = env + 1, *nonce = env + 1 + SALT_LEN;
    const unsigned char *ct = env + HEAD_LEN;
    int ct_len = (int)(it->len - HEAD_LEN - TAG_LEN);
    unsigned char head[2] = {(unsigned char)obj_type, (unsigned char)it->id_len};
    unsigned char key[32];
    if (!hmac3(&w->enc, head, 2, it->id, (size_t)it->id_len, salt, SALT_LEN, key)) return 0;
    unsigned char aad[3 + 2 + ID_MAX];
    memcpy(aad, "bk1", 3);
    memcpy(aad + 3, head, 2);
    memcpy(aad + 5, it->id, (size_t)it->id_len);
    int n = 0;
    if (!L.decrypt_init(w->cipher, NULL, NULL, key, nonce)) return 0;
    if (!L.decrypt_update(w->cipher, NULL, &n, aad, 5 + (int)it->id_len)) return 0;
    if (!L.decrypt_update(w->cipher, w->payload, &n, ct, ct_len) || n != ct_len) return 0;
    if (!L.cipher_ctrl(w->cipher, CTRL_GCM_SET_TAG, TAG_LEN, (void *)(ct + ct_len))) return 0;
    if (L.decrypt_final(w->cipher, w->payload + n, &n) <= 0) return 0;
    /* the payload: flag | body, decoded into exactly raw bytes */
    if (w->payload[0] == 0) {
        if (ct_len - 1 != it->raw) return 0;
        memcpy(it->out, w->payload + 1, (size_t)it->raw);
    } else if (w->payload[0] == 1) {
        size_t got = L.zstd_decompress(w->dctx, it->out, (size_t)it->raw, w->payload + 1, (size_t)(ct_len - 1));
        if (L.zstd_is_error(got) || got != (size_t)it->raw) return 0;
    } else {
        return 0;
    }
    unsigned char mac[32];
    if (!hmac3(&w->ids, it->out, (size_t)it->raw, NULL, 0, NULL, 0, mac)) return 0;
    return it->id_len == 32 && memcmp(mac, it->id, 32) == 0;
}

static PyObject *available(PyObject *self, PyObject *noargs) {
    return PyBool_FromLong(ready());
}

/* open_blobs(enc_key, id_key, obj_type, data, items, want, raw_max) -> list
 * items: a sequence of (offset, length, blob id, raw length); each result is the
 * plaintext (want), True (not want), or None: not accepted here, ask the Python path. */
static PyObject *open_blobs(PyObject *self, PyObject *args) {
    Py_buffer enc_key, id_key, data;
    int obj_type, want;
    PyObject *items;
    Py_ssize_t raw_max;
    if (!PyArg_ParseTuple(args, "y*y*iy*Opn", &enc_key, &id_key, &obj_type, &data, &items, &want, &raw_max)) return NULL;
    PyObject *out = NULL, *seq = NULL;
    Item *its = NULL;
    Work w;
    memset(&w, 0, sizeof w);
    unsigned char *scratch = NULL;
    Py_ssize_t count = 0;
    if (!ready()) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto or libzstd not found");
        goto done;
    }
    if (obj_type < 0 || obj_type > 255) {
        PyErr_SetString(PyExc_ValueError, "object type out of range");
        goto done;
    }
    seq = PySequence_Fast(items, "items must be a sequence");
    if (!seq) goto done;
    count = PySequence_Fast_GET_SIZE(seq);
    its = PyMem_Calloc((size_t)(count ? count : 1), sizeof(Item));
    if (!its) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t max_len = 1, max_raw = 1;
    for (Py_ssize_t i = 0; i < count; i++) {
        Item *it = &its[i];
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *bid;
        if (!PyTuple_Check(t) || !PyArg_ParseTuple(t, "nnSn", &it->off, &it->len, &bid, &it->raw)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "each item is (offset, length, id, raw length)");
            goto done;
        }
        it->id_len = PyBytes_GET_SIZE(bid);
        it->ok = it->id_len > 0 && it->id_len <= ID_MAX && it->raw >= 0 && it->raw <= raw_max && it->len > 0;
        if (!it->ok) continue; /* the Python path words the problem */
        memcpy(it->id, PyBytes_AS_STRING(bid), (size_t)it->id_len);
        if (it->len > max_len) max_len = it->len;
        if (it->raw > max_raw) max_raw = it->raw;
        if (want) {
            it->result = PyBytes_FromStringAndSize(NULL, it->raw);
            if (!it->result) goto done;
            it->out = (unsigned char *)PyBytes_AS_STRING(it->result);
        }
    }
    w.payload = PyMem_RawMalloc((size_t)max_len);
    if (!want) scratch = PyMem_RawMalloc((size_t)max_raw);
    if (!w.payload || (!want && !scratch)) {
        PyErr_NoMemory();
        goto done;
    }
    int setup_ok = 1;
    Py_BEGIN_ALLOW_THREADS
    w.cipher = L.cipher_ctx_new();
    w.dctx = L.zstd_create();
    setup_ok = w.cipher && w.dctx && hmac_init(&w.enc, enc_key.buf, enc_key.len, "bk-obj-v1")
               && hmac_init(&w.ids, id_key.buf, id_key.len, NULL) && L.decrypt_init(w.cipher, L.cipher, NULL, NULL, NULL);
    for (Py_ssize_t i = 0; setup_ok && i < count; i++) {
        Item *it = &its[i];
        if (!it->ok) continue;
        if (!want) it->out = scratch;
        it->ok = open_one(&w, obj_type, data.buf, data.len, it);
    }
    Py_END_ALLOW_THREADS
    if (!setup_ok) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto or libzstd could not be set up");
        goto done;
    }
    out = PyList_New(count);
    if (!out) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        Item *it = &its[i];
        PyObject *r;
        if (!it->ok) {
            r = Py_None;
            Py_INCREF(r);
        } else if (want) {
            r = it->result;
            it->result = NULL;
        } else {
            r = Py_True;
            Py_INCREF(r);
        }
        PyList_SET_ITEM(out, i, r);
    }
done:
    if (its) {
        for (Py_ssize_t i = 0; i < count; i++) Py_XDECREF(its[i].result);
        PyMem_Free(its);
    }
    if (w.cipher) L.cipher_ctx_free(w.cipher);
    if (w.dctx) L.zstd_free(w.dctx);
    hmac_free(&w.enc);
    hmac_free(&w.ids);
    PyMem_RawFree(w.payload);
    PyMem_RawFree(scratch);
    Py_XDECREF(seq);
    PyBuffer_Release(&enc_key);
    PyBuffer_Release(&id_key);
    PyBuffer_Release(&data);
    return out;
}

static PyMethodDef methods[] = {
    {"available", available, METH_NOARGS, "True if libcrypto and libzstd were found."},
    {"open_blobs", open_blobs, METH_VARARGS, "Open and verify sealed blobs of one buffer, the GIL released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_blobopen", NULL, -1, methods};

PyMODINIT_FUNC PyInit__blobopen(void) { return PyModule_Create(&module); }

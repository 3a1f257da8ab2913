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
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SALT_LEN 16
#define NONCE_LEN 12
#define TAG_LEN 16
#define HEAD_LEN (1 + SALT_LEN + NONCE_LEN)
#define ID_MAX 64
#define CTRL_GCM_SET_TAG 0x11

typedef void EVP_MD_CTX;
typedef void EVP_CIPHER_CTX;

static struct {
    int state; /* 0 not tried, 1 loaded, -1 unavailable */
    const void *md, *cipher;
    EVP_MD_CTX *(*md_ctx_new)(void);
    void (*md_ctx_free)(EVP_MD_CTX *);
    int (*digest_init)(EVP_MD_CTX *, const void *, void *);
    int (*digest_update)(EVP_MD_CTX *, const void *, size_t);
    int (*digest_final)(EVP_MD_CTX *, unsigned char *, unsigned int *);
    int (*md_ctx_copy)(EVP_MD_CTX *, const EVP_MD_CTX *);
    EVP_CIPHER_CTX *(*cipher_ctx_new)(void);
    void (*cipher_ctx_free)(EVP_CIPHER_CTX *);
    int (*decrypt_init)(EVP_CIPHER_CTX *, const void *, void *, const unsigned char *, const unsigned char *);
    int (*cipher_ctrl)(EVP_CIPHER_CTX *, int, int, void *);
    int (*decrypt_update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int);
    int (*decrypt_final)(EVP_CIPHER_CTX *, unsigned char *, int *);
    void *(*zstd_create)(void);
    size_t (*zstd_free)(void *);
    size_t (*zstd_decompress)(void *, void *, size_t, const void *, size_t);
    unsigned (*zstd_is_error)(size_t);
} L;

static void *open_first(const char *const *names) {
    for (; *names; names++) {
        void *h = dlopen(*names, RTLD_NOW | RTLD_LOCAL);
        if (h) return h;
    }
    return NULL;
}

#define SYM(h, field, name) \
    if (!(*(void **)(&L.field) = dlsym(h, name))) return -1

static int load(void) {
    static const char *const crypto_names[] = {"libcrypto.so.3", "libcrypto.so", NULL};
    static const char *const zstd_names[] = {"libzstd.so.1", "libzstd.so", NULL};
    void *c = open_first(crypto_names), *z = open_first(zstd_names);
    if (!c || !z) return -1;
    SYM(c, md_ctx_new, "EVP_MD_CTX_new");
    SYM(c, md_ctx_free, "EVP_MD_CTX_free");
    SYM(c, digest_init, "EVP_DigestInit_ex");
    SYM(c, digest_update, "EVP_DigestUpdate");
    SYM(c, digest_final, "EVP_DigestFinal_ex");
    SYM(c, md_ctx_copy, "EVP_MD_CTX_copy_ex");
    SYM(c, cipher_ctx_new, "EVP_CIPHER_CTX_new");
    SYM(c, cipher_ctx_free, "EVP_CIPHER_CTX_free");
    SYM(c, decrypt_init, "EVP_DecryptInit_ex");
    SYM(c, cipher_ctrl, "EVP_CIPHER_CTX_ctrl");
    SYM(c, decrypt_update, "EVP_DecryptUpdate");
    SYM(c, decrypt_final, "EVP_DecryptFinal_ex");
    SYM(z, zstd_create, "ZSTD_createDCtx");
    SYM(z, zstd_free, "ZSTD_freeDCtx");
    SYM(z, zstd_decompress, "ZSTD_decompressDCtx");
    SYM(z, zstd_is_error, "ZSTD_isError");
    /* explicitly fetched algorithms (OpenSSL 3): an implicit fetch per init is slow */
    void *(*md_fetch)(void *, const char *, const char *) = (void *(*)(void *, const char *, const char *))dlsym(c, "EVP_MD_fetch");
    void *(*cipher_fetch)(void *, const char *, const char *) = (void *(*)(void *, const char *, const char *))dlsym(c, "EVP_CIPHER_fetch");
    if (md_fetch && cipher_fetch) {
        L.md = md_fetch(NULL, "SHA256", NULL);
        L.cipher = cipher_fetch(NULL, "AES-256-GCM", NULL);
    } else {
        const void *(*sha256)(void) = (const void *(*)(void))dlsym(c, "EVP_sha256");
        const void *(*gcm)(void) = (const void *(*)(void))dlsym(c, "EVP_aes_256_gcm");
        if (!sha256 || !gcm) return -1;
        L.md = sha256();
        L.cipher = gcm();
    }
    return (L.md && L.cipher) ? 1 : -1;
}

static int ready(void) {
    if (L.state == 0) L.state = load();
    return L.state == 1;
}

/* HMAC-SHA256 with the padded key hashed once (RFC 2104), as crypto.HmacSha256 */
typedef struct {
    EVP_MD_CTX *inner, *outer, *work;
} Hmac;

static int hmac_init(Hmac *h, const unsigned char *key, Py_ssize_t n, const char *prefix) {
    unsigned char block[64];
    unsigned char hashed[32];
    unsigned int hl = 0;
    h->inner = L.md_ctx_new();
    h->outer = L.md_ctx_new();
    h->work = L.md_ctx_new();
    if (!h->inner || !h->outer || !h->work) return 0;
    if (n > 64) {
        if (!L.digest_init(h->work, L.md, NULL) || !L.digest_update(h->work, key, (size_t)n) || !L.digest_final(h->work, hashed, &hl))
            return 0;
        key = hashed;
        n = 32;
    }
    memset(block, 0, sizeof block);
    memcpy(block, key, (size_t)n);
    for (int i = 0; i < 64; i++) block[i] ^= 0x36;
    if (!L.digest_init(h->inner, L.md, NULL) || !L.digest_update(h->inner, block, 64)) return 0;
    if (prefix && !L.digest_update(h->inner, prefix, strlen(prefix))) return 0;
    for (int i = 0; i < 64; i++) block[i] ^= 0x36 ^ 0x5c;
    if (!L.digest_init(h->outer, L.md, NULL) || !L.digest_update(h->outer, block, 64)) return 0;
    return 1;
}

static void hmac_free(Hmac *h) {
    if (h->inner) L.md_ctx_free(h->inner);
    if (h->outer) L.md_ctx_free(h->outer);
    if (h->work) L.md_ctx_free(h->work);
}

/* out = HMAC(key, a | b | c) */
static int hmac3(Hmac *h, const void *a, size_t an, const void *b, size_t bn, const void *c, size_t cn, unsigned char out[32]) {
    unsigned char ih[32];
    unsigned int n = 0;
    if (!L.md_ctx_copy(h->work, h->inner)) return 0;
    if (an && !L.digest_update(h->work, a, an)) return 0;
    if (bn && !L.digest_update(h->work, b, bn)) return 0;
    if (cn && !L.digest_update(h->work, c, cn)) return 0;
    if (!L.digest_final(h->work, ih, &n)) return 0;
    if (!L.md_ctx_copy(h->work, h->outer)) return 0;
    if (!L.digest_update(h->work, ih, 32) || !L.digest_final(h->work, out, &n)) return 0;
    return 1;
}

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

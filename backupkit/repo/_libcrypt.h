/* What the envelope C modules (_blobopen: open, _blobseal: seal) share: libcrypto and
 * libzstd found with dlopen at first use (building needs neither library's headers),
 * and HMAC-SHA256 with the padded key hashed once, as crypto.HmacSha256.
 *
 * Each module including this has its own copy of the table (all static). ready() is
 * called with the GIL held, so the first load is not raced.
 */
#ifndef BK_LIBCRYPT_H
#define BK_LIBCRYPT_H

#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SALT_LEN 16
#define NONCE_LEN 12
#define TAG_LEN 16
#define HEAD_LEN (1 + SALT_LEN + NONCE_LEN)
#define ID_MAX 64
#define CTRL_GCM_GET_TAG 0x10
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
    int (*encrypt_init)(EVP_CIPHER_CTX *, const void *, void *, const unsigned char *, const unsigned char *);
    int (*encrypt_update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int);
    int (*encrypt_final)(EVP_CIPHER_CTX *, unsigned char *, int *);
    void *(*zstd_create)(void);
    size_t (*zstd_free)(void *);
    size_t (*zstd_decompress)(void *, void *, size_t, const void *, size_t);
    unsigned (*zstd_is_error)(size_t);
    void *(*zstd_create_c)(void);
    size_t (*zstd_free_c)(void *);
    size_t (*zstd_compress)(void *, void *, size_t, const void *, size_t, int);
    size_t (*zstd_bound)(size_t);
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
    SYM(c, encrypt_init, "EVP_EncryptInit_ex");
    SYM(c, encrypt_update, "EVP_EncryptUpdate");
    SYM(c, encrypt_final, "EVP_EncryptFinal_ex");
    SYM(z, zstd_create, "ZSTD_createDCtx");
    SYM(z, zstd_free, "ZSTD_freeDCtx");
    SYM(z, zstd_decompress, "ZSTD_decompressDCtx");
    SYM(z, zstd_is_error, "ZSTD_isError");
    SYM(z, zstd_create_c, "ZSTD_createCCtx");
    SYM(z, zstd_free_c, "ZSTD_freeCCtx");
    SYM(z, zstd_compress, "ZSTD_compressCCtx");
    SYM(z, zstd_bound, "ZSTD_compressBound");
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

#endif

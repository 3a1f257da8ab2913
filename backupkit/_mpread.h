/* Reading msgpack in C without Python objects: the readers _parentmatch.c, _hamtleaf.c
 * and repo/_indexops.c share (each module is built with this one copy). A reader takes
 * one object at the cursor and returns -1 (or NULL) when the bytes there are not that
 * object or run out: the callers refuse, and Python decides what the bytes are. */
#ifndef BACKUPKIT_MPREAD_H
#define BACKUPKIT_MPREAD_H

#include <stddef.h>
#include <string.h>

typedef struct {
    const unsigned char *p, *end;
} Cur;

typedef struct {
    int neg;               /* 1: v holds a negative value as int64 */
    unsigned long long v;  /* the value (two's complement when neg) */
} Int;

static inline int
take(Cur *c, size_t n, const unsigned char **out)
{
    if ((size_t)(c->end - c->p) < n)
        return -1;
    *out = c->p;
    c->p += n;
    return 0;
}

static inline unsigned long long
be(const unsigned char *b, int n)
{
    unsigned long long v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | b[i];
    return v;
}

/* an integer of any msgpack width; -1 when the next object is not an integer */
static inline int
read_int(Cur *c, Int *out)
{
    const unsigned char *b;
    if (take(c, 1, &b))
        return -1;
    unsigned char t = b[0];
    if (t <= 0x7f) {
        out->neg = 0;
        out->v = t;
        return 0;
    }
    if (t >= 0xe0) {
        out->neg = 1;
        out->v = (unsigned long long)(long long)(signed char)t;
        return 0;
    }
    int n;
    int sign;
    switch (t) {
    case 0xcc: n = 1; sign = 0; break;
    case 0xcd: n = 2; sign = 0; break;
    case 0xce: n = 4; sign = 0; break;
    case 0xcf: n = 8; sign = 0; break;
    case 0xd0: n = 1; sign = 1; break;
    case 0xd1: n = 2; sign = 1; break;
    case 0xd2: n = 4; sign = 1; break;
    case 0xd3: n = 8; sign = 1; break;
    default: return -1;
    }
    if (take(c, (size_t)n, &b))
        return -1;
    unsigned long long v = be(b, n);
    if (sign) {
        long long s;
        if (n == 8)
            s = (long long)v;
        else {
            unsigned long long bit = 1ULL << (8 * n - 1);
            s = (v & bit) ? (long long)(v - (bit << 1)) : (long long)v;
        }
        out->neg = s < 0;
        out->v = (unsigned long long)s;
    } else {
        out->neg = 0;
        out->v = v;
    }
    return 0;
}

/* a str's bytes; -1 when the next object is not a str */
static inline int
read_str(Cur *c, const unsigned char **s, size_t *len)
{
    const unsigned char *b;
    if (take(c, 1, &b))
        return -1;
    unsigned char t = b[0];
    size_t n;
    if (t >= 0xa0 && t <= 0xbf)
        n = t & 0x1f;
    else {
        int w = t == 0xd9 ? 1 : t == 0xda ? 2 : t == 0xdb ? 4 : 0;
        if (!w || take(c, (size_t)w, &b))
            return -1;
        n = (size_t)be(b, w);
    }
    if (take(c, n, s))
        return -1;
    *len = n;
    return 0;
}

/* a container header: the next object's count when its first byte is of the kind
 * (fix range lo..lo+15, then the 16- and 32-bit codes); -1 otherwise */
static inline long long
read_header(Cur *c, unsigned char fix_lo, unsigned char c16, unsigned char c32)
{
    const unsigned char *b;
    if (take(c, 1, &b))
        return -1;
    unsigned char t = b[0];
    if (t >= fix_lo && t <= fix_lo + 15)
        return t - fix_lo;
    int w = t == c16 ? 2 : t == c32 ? 4 : 0;
    if (!w || take(c, (size_t)w, &b))
        return -1;
    return (long long)be(b, w);
}

/* a bin's bytes; -1 when the next object is not a bin */
static inline int
read_bin(Cur *c, const unsigned char **b, size_t *len)
{
    const unsigned char *t;
    if (take(c, 1, &t))
        return -1;
    int w = t[0] == 0xc4 ? 1 : t[0] == 0xc5 ? 2 : t[0] == 0xc6 ? 4 : 0;
    if (!w || take(c, (size_t)w, &t))
        return -1;
    *len = (size_t)be(t, w);
    return take(c, *len, b);
}

#endif

/* A directory listing as _dirscan.c makes it and hands it out in a capsule, shared with
 * _parentmatch.c (which reads it, never frees it): the entries sorted by name, each with
 * its lstat or the errno its lstat failed with. Both modules are built from this one
 * definition (setup.py), so the layout cannot differ. */
#ifndef BACKUPKIT_LISTING_H
#define BACKUPKIT_LISTING_H

#include <stddef.h>
#include <sys/stat.h>

typedef struct {
    char *name;
    size_t len;
    int err; /* 0: st holds the entry's lstat */
    struct stat st;
} Item;

typedef struct {
    Item *items;
    size_t n;
} Listing;

#define CAPSULE_NAME "backupkit._dirscan.Listing"

#endif

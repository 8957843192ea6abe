/*
 * iovfs.c: an SQLite VFS over the default one that keeps the errno of the
 * last failed write, flush or truncate, per thread.
 *
 * SQLite reports a flush or truncate that failed with ENOSPC as an I/O error
 * and asks the VFS for errno only when it records the error, after its
 * rollback and unlocking made system calls of their own.  The outbox needs
 * the failure's own errno to tell "disk full" (FULL, retry later) from a
 * broken disk (STORE).  A file of ours holds the base VFS's file and passes
 * every call on; write, sync and truncate keep errno when they fail.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <sqlite3.h>

#include "iovfs.h"

#define IOVFS_BASES	4	/* default VFSes seen: one, tests aside */

static pthread_mutex_t	iovfs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	sqlite3_vfs	*base;
	sqlite3_vfs	 ours;
	char		 name[64];
}			iovfs_bases[IOVFS_BASES];
static _Thread_local int iovfs_errno;

/* Our file object, with the base VFS's behind it in the same allocation. */
struct iovfs_file {
	sqlite3_file	 f;
	sqlite3_file	*real;
};

#define REAL(f)		(((struct iovfs_file *)(f))->real)
#define CALL(f, m)	(REAL(f)->pMethods->m)

static int
iovfs_kept(int rc, int e)
{
	if (rc != SQLITE_OK)
		iovfs_errno = e;
	return rc;
}

static int
iovfs_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
	int	rc = CALL(f, xWrite)(REAL(f), p, n, off);

	return iovfs_kept(rc, errno);
}

static int
iovfs_sync(sqlite3_file *f, int flags)
{
	int	rc = CALL(f, xSync)(REAL(f), flags);

	return iovfs_kept(rc, errno);
}

static int
iovfs_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	int	rc = CALL(f, xTruncate)(REAL(f), size);

	return iovfs_kept(rc, errno);
}

/* The rest passes through. */
static int
iovfs_close(sqlite3_file *f)
{
	int	rc = CALL(f, xClose)(REAL(f));

	f->pMethods = NULL;
	return rc;
}

static int
iovfs_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
	return CALL(f, xRead)(REAL(f), p, n, off);
}

static int
iovfs_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	return CALL(f, xFileSize)(REAL(f), size);
}

static int
iovfs_lock_file(sqlite3_file *f, int level)
{
	return CALL(f, xLock)(REAL(f), level);
}

static int
iovfs_unlock(sqlite3_file *f, int level)
{
	return CALL(f, xUnlock)(REAL(f), level);
}

static int
iovfs_check_reserved(sqlite3_file *f, int *out)
{
	return CALL(f, xCheckReservedLock)(REAL(f), out);
}

static int
iovfs_file_control(sqlite3_file *f, int op, void *arg)
{
	return CALL(f, xFileControl)(REAL(f), op, arg);
}

static int
iovfs_sector_size(sqlite3_file *f)
{
	return CALL(f, xSectorSize)(REAL(f));
}

static int
iovfs_device_chars(sqlite3_file *f)
{
	return CALL(f, xDeviceCharacteristics)(REAL(f));
}

static int
iovfs_shm_map(sqlite3_file *f, int pg, int pgsz, int extend,
    void volatile **pp)
{
	return CALL(f, xShmMap)(REAL(f), pg, pgsz, extend, pp);
}

static int
iovfs_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
	return CALL(f, xShmLock)(REAL(f), off, n, flags);
}

static void
iovfs_shm_barrier(sqlite3_file *f)
{
	CALL(f, xShmBarrier)(REAL(f));
}

static int
iovfs_shm_unmap(sqlite3_file *f, int del)
{
	return CALL(f, xShmUnmap)(REAL(f), del);
}

static int
iovfs_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
	return CALL(f, xFetch)(REAL(f), off, n, pp);
}

static int
iovfs_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	return CALL(f, xUnfetch)(REAL(f), off, p);
}

static const sqlite3_io_methods iovfs_methods_v1 = {
	1, iovfs_close, iovfs_read, iovfs_write, iovfs_truncate, iovfs_sync,
	iovfs_file_size, iovfs_lock_file, iovfs_unlock, iovfs_check_reserved,
	iovfs_file_control, iovfs_sector_size, iovfs_device_chars,
	NULL, NULL, NULL, NULL, NULL, NULL
};
static const sqlite3_io_methods iovfs_methods_v2 = {
	2, iovfs_close, iovfs_read, iovfs_write, iovfs_truncate, iovfs_sync,
	iovfs_file_size, iovfs_lock_file, iovfs_unlock, iovfs_check_reserved,
	iovfs_file_control, iovfs_sector_size, iovfs_device_chars,
	iovfs_shm_map, iovfs_shm_lock, iovfs_shm_barrier, iovfs_shm_unmap,
	NULL, NULL
};
static const sqlite3_io_methods iovfs_methods_v3 = {
	3, iovfs_close, iovfs_read, iovfs_write, iovfs_truncate, iovfs_sync,
	iovfs_file_size, iovfs_lock_file, iovfs_unlock, iovfs_check_reserved,
	iovfs_file_control, iovfs_sector_size, iovfs_device_chars,
	iovfs_shm_map, iovfs_shm_lock, iovfs_shm_barrier, iovfs_shm_unmap,
	iovfs_fetch, iovfs_unfetch
};

static int
iovfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags,
    int *out)
{
	sqlite3_vfs	*base = NULL;
	sqlite3_file	*real = (sqlite3_file *)((struct iovfs_file *)f + 1);
	int		 rc, i;

	f->pMethods = NULL;
	for (i = 0; i < IOVFS_BASES; i++)
		if (vfs == &iovfs_bases[i].ours)
			base = iovfs_bases[i].base;
	if (base == NULL)
		return SQLITE_CANTOPEN;	/* cannot happen */
	rc = base->xOpen(base, name, real, flags, out);
	if (real->pMethods == NULL)
		return rc;
	/* A file SQLite must close, even after a failed open. */
	REAL(f) = real;
	switch (real->pMethods->iVersion) {
	case 1:
		f->pMethods = &iovfs_methods_v1;
		break;
	case 2:
		f->pMethods = &iovfs_methods_v2;
		break;
	default:
		f->pMethods = &iovfs_methods_v3;
		break;
	}
	return rc;
}

const char *
iovfs_name(void)
{
	sqlite3_vfs	*base;
	const char	*name = NULL;
	int		 i;

	pthread_mutex_lock(&iovfs_lock);
	if ((base = sqlite3_vfs_find(NULL)) == NULL)
		goto out;
	for (i = 0; i < IOVFS_BASES && iovfs_bases[i].base != NULL; i++)
		if (iovfs_bases[i].base == base ||
		    &iovfs_bases[i].ours == base) {
			name = iovfs_bases[i].name;
			goto out;
		}
	if (i == IOVFS_BASES)
		goto out;
	snprintf(iovfs_bases[i].name, sizeof(iovfs_bases[i].name),
	    "pubrelay-%s", base->zName);
	iovfs_bases[i].ours = *base;
	iovfs_bases[i].ours.szOsFile = (int)sizeof(struct iovfs_file) +
	    base->szOsFile;
	iovfs_bases[i].ours.zName = iovfs_bases[i].name;
	iovfs_bases[i].ours.xOpen = iovfs_open;
	iovfs_bases[i].ours.pNext = NULL;
	iovfs_bases[i].base = base;	/* before anyone can open with it */
	if (sqlite3_vfs_register(&iovfs_bases[i].ours, 0) != SQLITE_OK) {
		iovfs_bases[i].base = NULL;
		goto out;
	}
	name = iovfs_bases[i].name;
 out:
	pthread_mutex_unlock(&iovfs_lock);
	return name;
}

int
iovfs_errno_take(void)
{
	int	e = iovfs_errno;

	iovfs_errno = 0;
	return e;
}

/*
 * iovfs.h: the errno of the outbox's failed writes, flushes and truncates,
 * kept when they fail (SQLite asks for errno only later).
 */
#ifndef PUBRELAY_IOVFS_H
#define PUBRELAY_IOVFS_H

/*
 * Name of a VFS over SQLite's default one that keeps that errno, registered
 * on first use; NULL (use the default) when it cannot be.
 */
const char	*iovfs_name(void);
/* The errno of this thread's last such failure, 0 if none; cleared. */
int		 iovfs_errno_take(void);

#endif

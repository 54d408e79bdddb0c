/*
 * bootenv-carry: applies a carry plan (src/be/carry-plan.ts) to the working
 * snapshot of a new BE, and swaps that snapshot in. Node can neither clone
 * extents, nor read or write extended attributes, nor set times to the
 * nanosecond without a process per file; this does all three with plain
 * system calls.
 *
 * bootenv-carry apply SOURCE TARGET
 *   SOURCE is the origin's read-only snapshot, TARGET the working snapshot
 *   (both directories of one btrfs mount). stdin: records of three
 *   NUL-terminated fields "OP\0A\0B\0", paths relative to the roots ("" is
 *   the root itself):
 *     copy SRC DST     make DST a copy of SRC: a regular file's extents are
 *                      cloned (FICLONE: shared, not written; a plain copy
 *                      only if the kernel refuses), a symlink, device, fifo
 *                      or socket made anew; then owner, xattrs (ACLs and file
 *                      capabilities included), mode, atime and mtime, inode
 *                      flags (chattr); made under a temporary name and
 *                      renamed over DST
 *     save SRC DST     the same, for a copy saved beside the new BE's version:
 *                      without setuid and setgid bits or file capabilities
 *     mkdir SRC DST    make directory DST (or keep it) with SRC's owner,
 *                      mode, xattrs and flags but immutable and append-only
 *     meta SRC DST     the same for an existing directory
 *                      (copies and directories get exactly SRC's xattrs: one
 *                      inherited from a default ACL, or left over, goes)
 *     times SRC DST    DST takes SRC's atime and mtime (and, for a directory,
 *                      its immutable and append-only flags, now that its
 *                      entries are done)
 *     link OLD DST     DST becomes another name of OLD (in TARGET)
 *     remove "" DST    unlink DST (or rmdir it); a missing DST is fine
 *     write TEXT DST   replace DST's content with TEXT, keeping its owner,
 *                      mode and xattrs
 *   Paths are resolved below their root without following any symlink
 *   (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS). stdout: one line per
 *   record, in order: "ok", "copied BYTES" (the kernel would not clone: the
 *   data was copied), or "error ERRNO MESSAGE"; then, once stdin is read to
 *   its end, the filesystem is synced (syncfs) and "synced" printed.
 *   Exit 0 then; 1 if the sync or stdout failed; 2 on malformed input.
 *
 * bootenv-carry exchange A B
 *   Swaps the two paths atomically (renameat2 RENAME_EXCHANGE: two
 *   subvolumes, the carried one and the BE it replaces) and syncs both
 *   directories. Exit 0, or 1 with the reason on stderr.
 *
 * bootenv-carry mtimes
 *   stdin: records "PATH\0SECONDS.NANOSECONDS\0" (nine digits of
 *   nanoseconds); sets each PATH's modification time to exactly that, its
 *   access time unchanged, not following a symlink (touch --no-dereference -m,
 *   without a process per file: the apt transaction restores the running
 *   root's files with it). stdout: "ok" or "error ERRNO MESSAGE" per record.
 *   Exit 0 then; 2 on malformed input. Syncs nothing: the caller does.
 *
 * Both die with their parent (PR_SET_PDEATHSIG): a killed beadm leaves no
 * helper writing behind it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

/* Inode flags carried after the data; NOCOW must be set before it. */
#define CARRIED_FLAGS (FS_APPEND_FL | FS_IMMUTABLE_FL | FS_NODUMP_FL | FS_NOATIME_FL | FS_SYNC_FL | FS_DIRSYNC_FL | FS_COMPR_FL | FS_NOCOMP_FL | FS_NOCOW_FL)
#define LATE_DIRECTORY_FLAGS (FS_APPEND_FL | FS_IMMUTABLE_FL)

static unsigned long temporary_counter;

struct failure {
  int error;
  const char *what;
};

static int fail(struct failure *failure, const char *what) {
  failure->error = errno == 0 ? EIO : errno;
  failure->what = what;
  return -1;
}

/* Opens the directory holding `path` below `root` and points `*name` at its last component ("." for the root). */
static int open_parent(int root, char *path, char **name, struct failure *failure) {
  struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV};
  if (path[0] == '\0') {
    *name = ".";
    int fd = (int)syscall(SYS_openat2, root, ".", &how, sizeof how);
    return fd < 0 ? fail(failure, "open root") : fd;
  }
  char *slash = strrchr(path, '/');
  const char *directory = ".";
  if (slash != NULL) {
    *slash = '\0';
    directory = path;
    *name = slash + 1;
  } else {
    *name = path;
  }
  int fd = (int)syscall(SYS_openat2, root, directory, &how, sizeof how);
  if (slash != NULL) *slash = '/';
  return fd < 0 ? fail(failure, "open parent directory") : fd;
}

/* Opens the directories holding `source` (below `source_root`) and `target` (below `target_root`); returns 0, or -1 with nothing left open. */
static int open_parents(int source_root, char *source, char **source_name, int *source_directory, int target_root, char *target, char **target_name, int *target_directory, struct failure *failure) {
  *source_directory = open_parent(source_root, source, source_name, failure);
  if (*source_directory < 0) return -1;
  *target_directory = open_parent(target_root, target, target_name, failure);
  if (*target_directory >= 0) return 0;
  close(*source_directory);
  return -1;
}

/* "/proc/self/fd/DIR/NAME": the way to an entry's xattrs when it cannot be opened (a symlink, a device). */
static void proc_path(char *buffer, size_t size, int directory, const char *name) {
  snprintf(buffer, size, "/proc/self/fd/%d/%s", directory, name);
}

/* An entry's xattrs go through its fd when it has one, else through its /proc path (never following it). */
struct handle {
  int fd;
  char path[4200];
};

static ssize_t handle_list(const struct handle *h, char *list, size_t size) {
  return h->fd >= 0 ? flistxattr(h->fd, list, size) : llistxattr(h->path, list, size);
}

static ssize_t handle_get(const struct handle *h, const char *name, void *value, size_t size) {
  return h->fd >= 0 ? fgetxattr(h->fd, name, value, size) : lgetxattr(h->path, name, value, size);
}

static int handle_set(const struct handle *h, const char *name, const void *value, size_t size) {
  return h->fd >= 0 ? fsetxattr(h->fd, name, value, size, 0) : lsetxattr(h->path, name, value, size, 0);
}

static int handle_remove(const struct handle *h, const char *name) {
  return h->fd >= 0 ? fremovexattr(h->fd, name) : lremovexattr(h->path, name);
}

/* A malloc'd list of xattr names ("a\0b\0"), its size in *length; NULL with errno on failure. */
static char *xattr_names(const struct handle *h, ssize_t *length) {
  for (;;) {
    ssize_t size = handle_list(h, NULL, 0);
    if (size < 0) {
      if (errno == ENOTSUP) {
        *length = 0;
        return calloc(1, 1);
      }
      return NULL;
    }
    char *list = malloc((size_t)size + 1);
    if (list == NULL) return NULL;
    ssize_t got = handle_list(h, list, (size_t)size);
    if (got >= 0) {
      *length = got;
      return list;
    }
    free(list);
    if (errno != ERANGE) return NULL;
  }
}

/* Gives `to` exactly the xattrs of `from` (setting each; with `prune`, removing those `from` lacks). */
static int copy_xattrs(const struct handle *from, const struct handle *to, int prune, struct failure *failure) {
  ssize_t length;
  char *names = xattr_names(from, &length);
  if (names == NULL) return fail(failure, "list xattrs");
  int result = 0;
  for (char *name = names; name < names + length; name += strlen(name) + 1) {
    ssize_t size = handle_get(from, name, NULL, 0);
    if (size < 0) {
      result = fail(failure, "read xattr");
      break;
    }
    char *value = malloc((size_t)size + 1);
    if (value == NULL) {
      result = fail(failure, "read xattr");
      break;
    }
    size = handle_get(from, name, value, (size_t)size);
    if (size < 0 || handle_set(to, name, value, (size_t)size) != 0) {
      free(value);
      result = fail(failure, size < 0 ? "read xattr" : "write xattr");
      break;
    }
    free(value);
  }
  if (result == 0 && prune) {
    ssize_t existing_length;
    char *existing = xattr_names(to, &existing_length);
    if (existing == NULL) {
      result = fail(failure, "list xattrs");
    } else {
      for (char *name = existing; name < existing + existing_length; name += strlen(name) + 1) {
        int present = 0;
        for (char *wanted = names; wanted < names + length; wanted += strlen(wanted) + 1) present |= strcmp(name, wanted) == 0;
        if (!present && handle_remove(to, name) != 0 && errno != ENODATA) {
          result = fail(failure, "remove xattr");
          break;
        }
      }
      free(existing);
    }
  }
  free(names);
  return result;
}

/* Owner, xattrs, then mode (chown drops setuid bits and capabilities; chmod comes last). */
static int copy_owner_xattrs_mode(const struct stat *st, const struct handle *from, const struct handle *to, int directory, const char *name, int prune, struct failure *failure) {
  int symlink = S_ISLNK(st->st_mode);
  if (to->fd >= 0 ? fchown(to->fd, st->st_uid, st->st_gid) : fchownat(directory, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW)) return fail(failure, "chown");
  if (copy_xattrs(from, to, prune, failure) != 0) return -1;
  if (!symlink && (to->fd >= 0 ? fchmod(to->fd, st->st_mode & 07777) : fchmodat(directory, name, st->st_mode & 07777, 0))) return fail(failure, "chmod");
  return 0;
}

static int set_times(int directory, const char *name, const struct stat *st, struct failure *failure) {
  struct timespec times[2] = {st->st_atim, st->st_mtim};
  if (utimensat(directory, name, times, AT_SYMLINK_NOFOLLOW) != 0) return fail(failure, "set times");
  return 0;
}

/* Sets the `mask` flags of `fd` to those in `flags`. */
static int set_flags(int fd, unsigned int flags, unsigned int mask, struct failure *failure) {
  unsigned int current = 0;
  if (ioctl(fd, FS_IOC_GETFLAGS, &current) != 0) {
    if ((flags & mask) == 0 && (errno == ENOTTY || errno == EOPNOTSUPP)) return 0;
    return fail(failure, "read inode flags");
  }
  unsigned int wanted = (current & ~mask) | (flags & mask);
  if (wanted != current && ioctl(fd, FS_IOC_SETFLAGS, &wanted) != 0) return fail(failure, "set inode flags");
  return 0;
}

static unsigned int flags_of(int fd) {
  unsigned int flags = 0;
  if (ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) flags = 0;
  return flags;
}

/* Copies the data of `from` into the empty file `to`: cloned extents, or bytes when the kernel will not clone. */
static int copy_data(int from, int to, off_t size, long long *copied, struct failure *failure) {
  if (ioctl(to, FICLONE, from) == 0) return 0;
  if (errno != EINVAL && errno != EOPNOTSUPP && errno != EXDEV && errno != ETXTBSY && errno != EPERM) return fail(failure, "clone");
  off_t done = 0;
  while (done < size) {
    ssize_t written = copy_file_range(from, NULL, to, NULL, (size_t)(size - done), 0);
    if (written < 0) return fail(failure, "copy data");
    if (written == 0) break;
    done += written;
  }
  *copied = done;
  return 0;
}

static void temporary_name(char *buffer, size_t size) {
  snprintf(buffer, size, ".bootenv-carry.%ld.%lu", (long)getpid(), temporary_counter++);
}

/* A copy saved beside another file (op save) is for reading, not running: no setuid or setgid bit, no file capabilities. */
static int disarm(const struct stat *st, const struct handle *h, int directory, const char *name, struct failure *failure) {
  if (S_ISLNK(st->st_mode)) return 0;
  if ((h->fd >= 0 ? fremovexattr(h->fd, "security.capability") : lremovexattr(h->path, "security.capability")) != 0 && errno != ENODATA && errno != ENOTSUP) return fail(failure, "remove capabilities");
  if ((st->st_mode & 06000) != 0 && (h->fd >= 0 ? fchmod(h->fd, st->st_mode & 01777) : fchmodat(directory, name, st->st_mode & 01777, 0)) != 0) return fail(failure, "chmod");
  return 0;
}

static int copy_entry(int source_root, int target_root, char *source, char *target, int saved, long long *copied, struct failure *failure) {
  char *source_name, *target_name, temporary[64];
  int source_directory, target_directory;
  if (open_parents(source_root, source, &source_name, &source_directory, target_root, target, &target_name, &target_directory, failure) != 0) return -1;
  int result = -1, from = -1, to = -1;
  struct stat st;
  struct handle from_handle = {.fd = -1}, to_handle = {.fd = -1};
  temporary_name(temporary, sizeof temporary);
  if (fstatat(source_directory, source_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    fail(failure, "stat source");
    goto done;
  }
  unsigned int flags = 0;
  if (S_ISREG(st.st_mode)) {
    from = openat(source_directory, source_name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
    if (from < 0) {
      fail(failure, "open source");
      goto done;
    }
    to = openat(target_directory, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (to < 0) {
      fail(failure, "create");
      goto done;
    }
    flags = flags_of(from);
    if ((flags & FS_NOCOW_FL) && set_flags(to, FS_NOCOW_FL, FS_NOCOW_FL, failure) != 0) goto unlink;
    if (copy_data(from, to, st.st_size, copied, failure) != 0) goto unlink;
    from_handle.fd = from;
    to_handle.fd = to;
  } else if (S_ISLNK(st.st_mode)) {
    char link[4097];
    ssize_t length = readlinkat(source_directory, source_name, link, sizeof link - 1);
    if (length < 0) {
      fail(failure, "read symlink");
      goto done;
    }
    link[length] = '\0';
    if (symlinkat(link, target_directory, temporary) != 0) {
      fail(failure, "make symlink");
      goto done;
    }
  } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
    if (mknodat(target_directory, temporary, st.st_mode & (S_IFMT | 0600), st.st_rdev) != 0) {
      fail(failure, "make node");
      goto done;
    }
  } else {
    errno = EISDIR;
    fail(failure, "copy a directory");
    goto done;
  }
  if (from_handle.fd < 0) {
    proc_path(from_handle.path, sizeof from_handle.path, source_directory, source_name);
    proc_path(to_handle.path, sizeof to_handle.path, target_directory, temporary);
  }
  /* Pruned: a new entry inherits its directory's default ACL, which the source may not have. */
  if (copy_owner_xattrs_mode(&st, &from_handle, &to_handle, target_directory, temporary, 1, failure) != 0) goto unlink;
  if (saved && disarm(&st, &to_handle, target_directory, temporary, failure) != 0) goto unlink;
  if (set_times(target_directory, temporary, &st, failure) != 0) goto unlink;
  if (renameat(target_directory, temporary, target_directory, target_name) != 0) {
    fail(failure, "rename into place");
    goto unlink;
  }
  if (S_ISREG(st.st_mode) && (flags & CARRIED_FLAGS & ~FS_NOCOW_FL) && set_flags(to, flags, CARRIED_FLAGS & ~FS_NOCOW_FL, failure) != 0) goto done;
  result = 0;
  goto done;
unlink:
  unlinkat(target_directory, temporary, 0);
done:
  if (from >= 0) close(from);
  if (to >= 0) close(to);
  close(source_directory);
  close(target_directory);
  return result;
}

/* mkdir (create != 0) or meta: a directory with the source's owner, xattrs, mode and early flags. */
static int directory_entry(int source_root, int target_root, char *source, char *target, int create, struct failure *failure) {
  char *source_name, *target_name;
  int source_directory, target_directory;
  if (open_parents(source_root, source, &source_name, &source_directory, target_root, target, &target_name, &target_directory, failure) != 0) return -1;
  int result = -1, from = -1, to = -1;
  struct stat st;
  from = openat(source_directory, source_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (from < 0 || fstat(from, &st) != 0) {
    fail(failure, "open source directory");
    goto done;
  }
  if (create && mkdirat(target_directory, target_name, 0700) != 0 && errno != EEXIST) {
    fail(failure, "mkdir");
    goto done;
  }
  to = openat(target_directory, target_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (to < 0) {
    fail(failure, "open directory");
    goto done;
  }
  struct handle from_handle = {.fd = from}, to_handle = {.fd = to};
  if (copy_owner_xattrs_mode(&st, &from_handle, &to_handle, target_directory, target_name, 1, failure) != 0) goto done;
  if (set_flags(to, flags_of(from), CARRIED_FLAGS & ~LATE_DIRECTORY_FLAGS, failure) != 0) goto done;
  result = 0;
done:
  if (from >= 0) close(from);
  if (to >= 0) close(to);
  close(source_directory);
  close(target_directory);
  return result;
}

static int times_entry(int source_root, int target_root, char *source, char *target, struct failure *failure) {
  char *source_name, *target_name;
  int source_directory, target_directory;
  if (open_parents(source_root, source, &source_name, &source_directory, target_root, target, &target_name, &target_directory, failure) != 0) return -1;
  int result = -1;
  struct stat st;
  if (fstatat(source_directory, source_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    fail(failure, "stat source");
  } else if (set_times(target_directory, target_name, &st, failure) == 0) {
    result = 0;
    if (S_ISDIR(st.st_mode)) {
      int from = openat(source_directory, source_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      int to = openat(target_directory, target_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      unsigned int late = from >= 0 ? flags_of(from) & LATE_DIRECTORY_FLAGS : 0;
      if (late != 0 && (to < 0 || set_flags(to, late, LATE_DIRECTORY_FLAGS, failure) != 0)) result = to < 0 ? fail(failure, "open directory") : -1;
      if (from >= 0) close(from);
      if (to >= 0) close(to);
    }
  }
  close(source_directory);
  close(target_directory);
  return result;
}

static int link_entry(int target_root, char *existing, char *target, struct failure *failure) {
  char *existing_name, *target_name, temporary[64];
  int existing_directory = open_parent(target_root, existing, &existing_name, failure);
  if (existing_directory < 0) return -1;
  int target_directory = open_parent(target_root, target, &target_name, failure);
  if (target_directory < 0) {
    close(existing_directory);
    return -1;
  }
  int result = 0;
  temporary_name(temporary, sizeof temporary);
  if (linkat(existing_directory, existing_name, target_directory, temporary, 0) != 0) {
    result = fail(failure, "link");
  } else if (renameat(target_directory, temporary, target_directory, target_name) != 0) {
    result = fail(failure, "rename into place");
    unlinkat(target_directory, temporary, 0);
  }
  close(existing_directory);
  close(target_directory);
  return result;
}

static int remove_entry(int target_root, char *target, struct failure *failure) {
  char *name;
  int directory = open_parent(target_root, target, &name, failure);
  if (directory < 0) return errno == ENOENT ? 0 : -1;
  int result = 0;
  if (unlinkat(directory, name, 0) != 0) {
    if (errno == EISDIR && unlinkat(directory, name, AT_REMOVEDIR) == 0) result = 0;
    else if (errno != ENOENT) result = fail(failure, "remove");
  }
  close(directory);
  return result;
}

static int write_entry(int target_root, const char *content, size_t length, char *target, struct failure *failure) {
  char *name, temporary[64];
  int directory = open_parent(target_root, target, &name, failure);
  if (directory < 0) return -1;
  int result = -1, old = -1, fresh = -1;
  struct stat st;
  temporary_name(temporary, sizeof temporary);
  old = openat(directory, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (old < 0 || fstat(old, &st) != 0) {
    fail(failure, "open");
    goto done;
  }
  if (!S_ISREG(st.st_mode)) {
    errno = EINVAL;
    fail(failure, "not a regular file");
    goto done;
  }
  fresh = openat(directory, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fresh < 0) {
    fail(failure, "create");
    goto done;
  }
  for (size_t done = 0; done < length;) {
    ssize_t written = write(fresh, content + done, length - done);
    if (written < 0) {
      fail(failure, "write");
      goto unlink;
    }
    done += (size_t)written;
  }
  struct handle from = {.fd = old}, to = {.fd = fresh};
  if (copy_owner_xattrs_mode(&st, &from, &to, directory, temporary, 0, failure) != 0) goto unlink;
  if (renameat(directory, temporary, directory, name) != 0) {
    fail(failure, "rename into place");
    goto unlink;
  }
  result = 0;
  goto done;
unlink:
  unlinkat(directory, temporary, 0);
done:
  if (old >= 0) close(old);
  if (fresh >= 0) close(fresh);
  close(directory);
  return result;
}

static int open_root(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fprintf(stderr, "bootenv-carry: %s: %s\n", path, strerror(errno));
  return fd;
}

static int apply(const char *source_path, const char *target_path) {
  int source_root = open_root(source_path), target_root = open_root(target_path);
  if (source_root < 0 || target_root < 0) return 2;
  static char output[1 << 16];
  setvbuf(stdout, output, _IOFBF, sizeof output);
  char *fields[3] = {NULL, NULL, NULL};
  size_t capacities[3] = {0, 0, 0};
  ssize_t lengths[3];
  for (;;) {
    lengths[0] = getdelim(&fields[0], &capacities[0], '\0', stdin);
    if (lengths[0] < 0) break;
    for (int index = 1; index < 3; index++) {
      lengths[index] = getdelim(&fields[index], &capacities[index], '\0', stdin);
      if (lengths[index] <= 0 || fields[index][lengths[index] - 1] != '\0') {
        fprintf(stderr, "bootenv-carry: a record without its three fields\n");
        return 2;
      }
    }
    struct failure failure = {0, NULL};
    long long copied = -1;
    const char *op = fields[0];
    int status;
    errno = 0;
    if (strcmp(op, "copy") == 0 || strcmp(op, "save") == 0) status = copy_entry(source_root, target_root, fields[1], fields[2], op[0] == 's', &copied, &failure);
    else if (strcmp(op, "mkdir") == 0) status = directory_entry(source_root, target_root, fields[1], fields[2], 1, &failure);
    else if (strcmp(op, "meta") == 0) status = directory_entry(source_root, target_root, fields[1], fields[2], 0, &failure);
    else if (strcmp(op, "times") == 0) status = times_entry(source_root, target_root, fields[1], fields[2], &failure);
    else if (strcmp(op, "link") == 0) status = link_entry(target_root, fields[1], fields[2], &failure);
    else if (strcmp(op, "remove") == 0) status = remove_entry(target_root, fields[2], &failure);
    else if (strcmp(op, "write") == 0) status = write_entry(target_root, fields[1], (size_t)lengths[1] - 1, fields[2], &failure);
    else {
      fprintf(stderr, "bootenv-carry: unknown operation %s\n", op);
      return 2;
    }
    if (status == 0 && copied >= 0) printf("copied %lld\n", copied);
    else if (status == 0) puts("ok");
    else {
      const char *name = strerrorname_np(failure.error);
      printf("error %s %s: %s\n", name == NULL ? "EUNKNOWN" : name, failure.what, strerror(failure.error));
    }
  }
  if (ferror(stdin)) {
    fprintf(stderr, "bootenv-carry: reading the plan: %s\n", strerror(errno));
    return 2;
  }
  if (syncfs(target_root) != 0) {
    printf("error %s syncfs: %s\n", strerrorname_np(errno), strerror(errno));
    fflush(stdout);
    return 1;
  }
  puts("synced");
  return fflush(stdout) == 0 ? 0 : 1;
}

static int sync_directory_of(const char *path) {
  char copy[4096];
  snprintf(copy, sizeof copy, "%s", path);
  char *slash = strrchr(copy, '/');
  if (slash == NULL) return 0;
  *slash = '\0';
  int fd = open(copy[0] == '\0' ? "/" : copy, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int result = fsync(fd);
  close(fd);
  return result;
}

static int exchange(const char *a, const char *b) {
  if (syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0) {
    fprintf(stderr, "bootenv-carry: exchanging %s and %s: %s\n", a, b, strerror(errno));
    return 1;
  }
  if (sync_directory_of(a) != 0 || sync_directory_of(b) != 0) {
    fprintf(stderr, "bootenv-carry: syncing after the exchange: %s\n", strerror(errno));
    return 1;
  }
  return 0;
}

/* "SECONDS.NANOSECONDS" (digits, a dot, nine digits) as a timespec; -1 when it is not that. */
static int parse_exact_time(const char *text, struct timespec *time) {
  const char *dot = strchr(text, '.');
  if (dot == NULL || dot == text || strlen(dot + 1) != 9) return -1;
  long long seconds = 0;
  for (const char *digit = text; digit < dot; digit++) {
    if (*digit < '0' || *digit > '9' || seconds > (LLONG_MAX - 9) / 10) return -1;
    seconds = seconds * 10 + (*digit - '0');
  }
  long nanoseconds = 0;
  for (const char *digit = dot + 1; *digit != '\0'; digit++) {
    if (*digit < '0' || *digit > '9') return -1;
    nanoseconds = nanoseconds * 10 + (*digit - '0');
  }
  time->tv_sec = (time_t)seconds;
  time->tv_nsec = nanoseconds;
  return 0;
}

static int mtimes(void) {
  static char output[1 << 16];
  setvbuf(stdout, output, _IOFBF, sizeof output);
  char *fields[2] = {NULL, NULL};
  size_t capacities[2] = {0, 0};
  for (;;) {
    ssize_t length = getdelim(&fields[0], &capacities[0], '\0', stdin);
    if (length < 0) break;
    ssize_t time_length = getdelim(&fields[1], &capacities[1], '\0', stdin);
    struct timespec times[2] = {{0, UTIME_OMIT}, {0, 0}};
    if (length <= 1 || fields[0][length - 1] != '\0' || time_length <= 1 || fields[1][time_length - 1] != '\0' || parse_exact_time(fields[1], &times[1]) != 0) {
      fprintf(stderr, "bootenv-carry: a record that is not PATH and SECONDS.NANOSECONDS\n");
      return 2;
    }
    if (utimensat(AT_FDCWD, fields[0], times, AT_SYMLINK_NOFOLLOW) == 0) puts("ok");
    else {
      const char *name = strerrorname_np(errno);
      printf("error %s utimensat: %s\n", name == NULL ? "EUNKNOWN" : name, strerror(errno));
    }
  }
  if (ferror(stdin)) {
    fprintf(stderr, "bootenv-carry: reading the records: %s\n", strerror(errno));
    return 2;
  }
  return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (argc == 4 && strcmp(argv[1], "apply") == 0) return apply(argv[2], argv[3]);
  if (argc == 4 && strcmp(argv[1], "exchange") == 0) return exchange(argv[2], argv[3]);
  if (argc == 2 && strcmp(argv[1], "mtimes") == 0) return mtimes();
  fputs("usage: bootenv-carry apply SOURCE TARGET < plan\n       bootenv-carry exchange A B\n       bootenv-carry mtimes < records\n", stderr);
  return 2;
}

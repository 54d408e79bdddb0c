/*
 * bootenv-dedupe: shares extents between pairs of files with the kernel's
 * FIDEDUPERANGE ioctl, which Node cannot issue. The kernel compares the bytes
 * itself and shares extents only where they are equal; the destination keeps
 * its inode, owner, mode, timestamps and extended attributes (file
 * capabilities included). This program never clones (FICLONE), never writes
 * file data and never changes metadata.
 *
 * Protocol (src/sys/dedupe.ts is the one caller):
 *   stdin:  records "SOURCE\0DESTINATION\0", absolute paths, any number.
 *   stdout: one line per record, in input order, flushed as it is done:
 *             same BYTES                 every byte of DESTINATION now shares
 *                                        extents with SOURCE (BYTES = its size)
 *             differs BYTES              the contents differ (or the sizes do);
 *                                        BYTES leading bytes were shared first
 *             error BYTES ERRNO MESSAGE  ERRNO is a name such as ENOENT
 *   exit:   0 when stdin was read to its end (whatever the pairs' outcomes),
 *           2 on malformed input (a record without destination), 1 when
 *           stdout cannot be written.
 * Ranges go to the kernel in pieces of at most 16 MiB (btrfs's own limit per
 * call). Files are opened read-only without following symlinks; as root,
 * FIDEDUPERANGE needs no write access to the destination.
 *
 * `bootenv-dedupe --extents` reads only (FS_IOC_FIEMAP, for beadm audit):
 *   stdin:  records "PATH\0".
 *   stdout: one line per record: "extents P:L:F P:L:F ..." (physical offset,
 *           length and FIEMAP flags in hex of each extent, in file order;
 *           nothing after "extents" for an empty file), or
 *           "error 0 ERRNO MESSAGE" as above.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (16ULL * 1024 * 1024)

/* Prints one outcome line; `detail` replaces strerror's text when given. */
static int report(const char *status, unsigned long long bytes, int error, const char *what, const char *detail) {
  int written;
  if (error == 0) {
    written = printf("%s %llu\n", status, bytes);
  } else {
    const char *name = strerrorname_np(error);
    written = printf("%s %llu %s %s: %s\n", status, bytes, name == NULL ? "EUNKNOWN" : name, what, detail == NULL ? strerror(error) : detail);
  }
  if (written < 0 || fflush(stdout) != 0) return -1;
  return 0;
}

/* Opens `path` read-only without following a symlink; fails (EINVAL, `*detail` set) unless it is a regular file. */
static int open_regular(const char *path, int *fd, off_t *size, const char **failed, const char **detail, const char *what) {
  struct stat st;
  *fd = open(path, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
  if (*fd < 0) {
    *failed = what;
    return errno;
  }
  if (fstat(*fd, &st) != 0) {
    int error = errno;
    *failed = what;
    return error;
  }
  if (!S_ISREG(st.st_mode)) {
    *failed = what;
    *detail = "not a regular file";
    return EINVAL;
  }
  *size = st.st_size;
  return 0;
}

/* Dedupes DESTINATION against SOURCE and reports the outcome; returns -1 only when stdout fails. */
static int dedupe_pair(const char *source, const char *destination) {
  int source_fd = -1, destination_fd = -1, error;
  off_t source_size = 0, destination_size = 0;
  const char *failed = "", *detail = NULL;
  unsigned long long shared = 0;
  int result;
  struct file_dedupe_range *range = calloc(1, sizeof(*range) + sizeof(struct file_dedupe_range_info));
  if (range == NULL) return report("error", 0, ENOMEM, "allocate", NULL);

  error = open_regular(source, &source_fd, &source_size, &failed, &detail, "source");
  if (error == 0) error = open_regular(destination, &destination_fd, &destination_size, &failed, &detail, "destination");
  if (error != 0) {
    result = report("error", 0, error, failed, detail);
    goto done;
  }
  if (source_size != destination_size) {
    result = report("differs", 0, 0, "", NULL);
    goto done;
  }
  while (shared < (unsigned long long)destination_size) {
    unsigned long long length = (unsigned long long)destination_size - shared;
    if (length > CHUNK) length = CHUNK;
    memset(range, 0, sizeof(*range) + sizeof(struct file_dedupe_range_info));
    range->src_offset = shared;
    range->src_length = length;
    range->dest_count = 1;
    range->info[0].dest_fd = destination_fd;
    range->info[0].dest_offset = shared;
    if (ioctl(source_fd, FIDEDUPERANGE, range) != 0) {
      result = report("error", shared, errno, "FIDEDUPERANGE", NULL);
      goto done;
    }
    if (range->info[0].status == FILE_DEDUPE_RANGE_DIFFERS) {
      result = report("differs", shared, 0, "", NULL);
      goto done;
    }
    if (range->info[0].status < 0) {
      result = report("error", shared, -range->info[0].status, "FIDEDUPERANGE", NULL);
      goto done;
    }
    if (range->info[0].bytes_deduped == 0) {
      result = report("error", shared, EIO, "FIDEDUPERANGE", "no progress");
      goto done;
    }
    shared += range->info[0].bytes_deduped;
  }
  result = report("same", shared, 0, "", NULL);
done:
  if (source_fd >= 0) close(source_fd);
  if (destination_fd >= 0) close(destination_fd);
  free(range);
  return result;
}

#define FIEMAP_BATCH 256

/* Prints the extents of `path` on one line; returns -1 only when stdout fails. */
static int print_extents(const char *path) {
  int fd = -1, error;
  off_t size = 0;
  const char *failed = "", *detail = NULL;
  struct fiemap *map = calloc(1, sizeof(*map) + FIEMAP_BATCH * sizeof(struct fiemap_extent));
  char *line = NULL;
  size_t line_size = 0;
  FILE *out = NULL;
  unsigned long long start = 0;
  int last = 0, result;
  if (map == NULL) return report("error", 0, ENOMEM, "allocate", NULL);
  error = open_regular(path, &fd, &size, &failed, &detail, "file");
  if (error != 0) {
    result = report("error", 0, error, failed, detail);
    goto done;
  }
  out = open_memstream(&line, &line_size);
  if (out == NULL) {
    result = report("error", 0, errno, "open_memstream", NULL);
    goto done;
  }
  while (!last) {
    memset(map, 0, sizeof(*map));
    map->fm_start = start;
    map->fm_length = FIEMAP_MAX_OFFSET - start;
    map->fm_flags = FIEMAP_FLAG_SYNC;
    map->fm_extent_count = FIEMAP_BATCH;
    if (ioctl(fd, FS_IOC_FIEMAP, map) != 0) {
      result = report("error", 0, errno, "FS_IOC_FIEMAP", NULL);
      goto done;
    }
    if (map->fm_mapped_extents == 0) break;
    for (unsigned int i = 0; i < map->fm_mapped_extents; i++) {
      struct fiemap_extent *extent = &map->fm_extents[i];
      fprintf(out, " %llu:%llu:%x", (unsigned long long)extent->fe_physical, (unsigned long long)extent->fe_length, extent->fe_flags);
      if (extent->fe_flags & FIEMAP_EXTENT_LAST) last = 1;
      start = extent->fe_logical + extent->fe_length;
    }
  }
  if (fclose(out) != 0) {
    out = NULL;
    result = report("error", 0, ENOMEM, "open_memstream", NULL);
    goto done;
  }
  out = NULL;
  result = (printf("extents%s\n", line) < 0 || fflush(stdout) != 0) ? -1 : 0;
done:
  if (out != NULL) fclose(out);
  free(line);
  if (fd >= 0) close(fd);
  free(map);
  return result;
}

static int extents_main(void) {
  char *path = NULL;
  size_t capacity = 0;
  while (getdelim(&path, &capacity, '\0', stdin) >= 0) {
    if (print_extents(path) != 0) return 1;
  }
  free(path);
  return ferror(stdin) ? 2 : 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--extents") == 0) return extents_main();
  if (argc != 1) {
    fprintf(stderr, "usage: bootenv-dedupe [--extents] < records\n");
    return 2;
  }
  char *source = NULL, *destination = NULL;
  size_t source_capacity = 0, destination_capacity = 0;
  for (;;) {
    if (getdelim(&source, &source_capacity, '\0', stdin) < 0) break;
    if (getdelim(&destination, &destination_capacity, '\0', stdin) < 0) {
      fprintf(stderr, "bootenv-dedupe: a record has a source but no destination\n");
      return 2;
    }
    if (dedupe_pair(source, destination) != 0) return 1;
  }
  free(source);
  free(destination);
  return ferror(stdin) ? 2 : 0;
}

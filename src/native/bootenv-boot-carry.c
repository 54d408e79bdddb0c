/*
 * bootenv-boot-carry: runs the carry (beadm carry --boot, src/be/carry.ts)
 * from the initramfs at the first boot of a BE that has one pending, before
 * its root is used: nothing writes to the origin BE any more (it is not
 * mounted) nor to the new one (the system has not started). Node is not in
 * the initramfs, so the carry runs chrooted in the BE itself, with the BE's
 * own beadm and node.
 *
 * Usage: bootenv-boot-carry take ROOTMNT [WORKDIR]
 *   Called by the local-bottom script (hooks/initramfs-tools) once
 *   initramfs-tools has mounted the root at ROOTMNT, with its environment:
 *   ROOTFLAGS ("-o subvol=@bootenv/NAME,...", as initramfs-tools exports it)
 *   and readonly (y or n). BOOTENV_CARRY_LOG, if set, is a file (the
 *   initramfs passes /dev/kmsg) that gets the carry's output too, so that
 *   the booted system's journal has it.
 *   Does nothing, at the cost of a mount of the filesystem's top level (the
 *   root's filesystem is mounted already: no device is read) and a stat,
 *   unless the BE's subvolume has a carry pending (the marker
 *   @bootenv/.carry/pending/UUID, UUID the root subvolume's). Otherwise:
 *   unmounts ROOTMNT,
 *   mounts the BE read-only at WORKDIR (default /run/bootenv-carry) with
 *   /dev, /proc, /sys and the initramfs's /run bound in, runs
 *   `beadm carry --boot NAME` chrooted there (the carry swaps the BE's
 *   subvolume for its carried snapshot, atomically), unmounts all that, and
 *   mounts the root at ROOTMNT again as initramfs-tools did: the subvolume
 *   now at the BE's path, carried or not.
 * Exit: 0 unless the root could not be mounted again (1) or the arguments
 *   are wrong (2): a failed carry does not stop the boot; it says so loudly
 *   on the console (and in BOOTENV_CARRY_LOG) and the BE boots as it was,
 *   its origin's changes still in the origin BE.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <sys/ioctl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bootenv-mountinfo.h"

#define PENDING "@bootenv/.carry/pending/"
#define CONTAINER "@bootenv/"

static FILE *log_file;

static void say(const char *format, ...) {
  char line[2048];
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(line, sizeof line, format, arguments);
  va_end(arguments);
  fprintf(stderr, "bootenv: %s\n", line);
  if (log_file != NULL) {
    fprintf(log_file, "bootenv: %s\n", line);
    fflush(log_file);
  }
}

struct root_options {
  unsigned long flags;
  char data[1024];
  char subvolume[512];
};

/* ROOTFLAGS and readonly as initramfs-tools mounted the root: VFS flags apart, the rest for btrfs. */
static int parse_root_options(struct root_options *options) {
  static const struct { const char *name; unsigned long set, clear; } vfs[] = {
    {"ro", MS_RDONLY, 0}, {"rw", 0, MS_RDONLY}, {"noatime", MS_NOATIME, 0}, {"nodiratime", MS_NODIRATIME, 0},
    {"relatime", MS_RELATIME, 0}, {"strictatime", MS_STRICTATIME, 0}, {"lazytime", MS_LAZYTIME, 0}, {"nosuid", MS_NOSUID, 0},
    {"nodev", MS_NODEV, 0}, {"noexec", MS_NOEXEC, 0}, {"sync", MS_SYNCHRONOUS, 0}, {"defaults", 0, 0},
  };
  const char *readonly = getenv("readonly");
  options->flags = readonly != NULL && strcmp(readonly, "n") == 0 ? 0 : MS_RDONLY;
  options->data[0] = options->subvolume[0] = '\0';
  const char *flags = getenv("ROOTFLAGS");
  if (flags == NULL) return -1;
  while (*flags == ' ') flags++;
  if (strncmp(flags, "-o", 2) == 0) flags += 2;
  while (*flags == ' ') flags++;
  char copy[1024];
  snprintf(copy, sizeof copy, "%s", flags);
  char *save = NULL;
  for (char *option = strtok_r(copy, ",", &save); option != NULL; option = strtok_r(NULL, ",", &save)) {
    int known = 0;
    for (size_t index = 0; index < sizeof vfs / sizeof vfs[0]; index++) {
      if (strcmp(option, vfs[index].name) == 0) {
        options->flags = (options->flags | vfs[index].set) & ~vfs[index].clear;
        known = 1;
      }
    }
    if (known) continue;
    if (strncmp(option, "subvol=", 7) == 0) snprintf(options->subvolume, sizeof options->subvolume, "%s", option[7] == '/' ? option + 8 : option + 7);
    size_t length = strlen(options->data);
    snprintf(options->data + length, sizeof options->data - length, "%s%s", length == 0 ? "" : ",", option);
  }
  return options->subvolume[0] == '\0' ? -1 : 0;
}

/* Whether the subvolume mounted at `rootmnt` (on `device`) has a carry pending: its UUID's marker at the top level. */
static int carry_pending(const char *rootmnt, const char *device, const char *workdir) {
  int fd = open(rootmnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct btrfs_ioctl_get_subvol_info_args info;
  memset(&info, 0, sizeof info);
  /* Linux 6.18 returns 1 for a subvolume whose parent is not the top level, with the info filled in. */
  int got = ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, &info);
  close(fd);
  static const unsigned char none[BTRFS_UUID_SIZE];
  if (got < 0 || memcmp(info.uuid, none, BTRFS_UUID_SIZE) == 0) return 0;
  char uuid[37];
  const unsigned char *u = info.uuid;
  snprintf(uuid, sizeof uuid, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
  char top[4096], marker[4200];
  snprintf(top, sizeof top, "%s-top", workdir);
  if (mkdir(top, 0700) != 0 && errno != EEXIST) return 0;
  int pending = 0;
  if (mount(device, top, "btrfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "subvolid=5") == 0) {
    struct stat st;
    snprintf(marker, sizeof marker, "%s/%s%s", top, PENDING, uuid);
    pending = lstat(marker, &st) == 0;
    if (umount(top) != 0) umount2(top, MNT_DETACH);
  }
  rmdir(top);
  return pending;
}

static int mount_root(const char *device, const char *rootmnt, const struct root_options *options) {
  for (int attempt = 0; attempt < 3; attempt++) {
    if (mount(device, rootmnt, "btrfs", options->flags, options->data) == 0) return 0;
    say("mounting the root again failed (%s); trying again", strerror(errno));
    sleep(1);
  }
  return -1;
}

/* Runs beadm carry --boot NAME chrooted in `root`; its output goes to the console and the log. Returns its exit status (or -1). */
static int run_carry(const char *root, const char *name) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return -1;
  pid_t child = fork();
  if (child < 0) return -1;
  if (child == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    dup2(pipe_fds[1], STDERR_FILENO);
    if (chroot(root) != 0 || chdir("/") != 0) _exit(126);
    setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
    setenv("LC_ALL", "C", 1);
    setenv("HOME", "/root", 1);
    execl("/usr/sbin/beadm", "beadm", "carry", "--boot", name, (char *)NULL);
    _exit(127);
  }
  close(pipe_fds[1]);
  FILE *output = fdopen(pipe_fds[0], "r");
  char *line = NULL;
  size_t capacity = 0;
  ssize_t length;
  while (output != NULL && (length = getline(&line, &capacity, output)) > 0) {
    if (line[length - 1] == '\n') line[length - 1] = '\0';
    /* beadm's own lines say "beadm: "; the console shows them as the carry's. */
    say("%s", strncmp(line, "beadm: ", 7) == 0 ? line + 7 : line);
  }
  free(line);
  if (output != NULL) fclose(output);
  int status;
  if (waitpid(child, &status, 0) != child) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int main(int argc, char **argv) {
  if ((argc != 3 && argc != 4) || strcmp(argv[1], "take") != 0) {
    fputs("usage: bootenv-boot-carry take ROOTMNT [WORKDIR]\n", stderr);
    return 2;
  }
  const char *rootmnt = argv[2];
  const char *workdir = argc == 4 ? argv[3] : "/run/bootenv-carry";
  char path[4096];
  struct root_options options;
  /* Not a BE's boot (not mounted from @bootenv/NAME, not btrfs): nothing to do. */
  if (parse_root_options(&options) != 0 || strncmp(options.subvolume, CONTAINER, strlen(CONTAINER)) != 0 || strchr(options.subvolume + strlen(CONTAINER), '/') != NULL) return 0;
  const char *name = options.subvolume + strlen(CONTAINER);
  char *device = btrfs_device_of(rootmnt);
  if (device == NULL) return 0;
  if (!carry_pending(rootmnt, device, workdir)) {
    free(device);
    return 0;
  }
  const char *log_path = getenv("BOOTENV_CARRY_LOG");
  if (log_path != NULL && log_path[0] != '\0') log_file = fopen(log_path, "we");
  say("carrying into %s what changed in its origin since it was made", name);
  if (umount(rootmnt) != 0) {
    say("CARRY NOT DONE: cannot unmount %s (%s); %s boots without its origin's changes, which stay in the origin", rootmnt, strerror(errno), name);
    free(device);
    return 0;
  }
  int status = -1;
  char data[600];
  snprintf(data, sizeof data, "subvol=%s", options.subvolume);
  if (mkdir(workdir, 0700) != 0 && errno != EEXIST) {
    say("cannot make %s: %s", workdir, strerror(errno));
  } else if (mount(device, workdir, "btrfs", MS_RDONLY, data) != 0) {
    say("cannot mount %s: %s", options.subvolume, strerror(errno));
    rmdir(workdir);
  } else {
    static const char *binds[] = {"/dev", "/proc", "/sys", "/run"};
    int bound = 0;
    for (; bound < 4; bound++) {
      snprintf(path, sizeof path, "%s%s", workdir, binds[bound]);
      if (mount(binds[bound], path, NULL, MS_BIND | (bound == 0 ? MS_REC : 0), NULL) != 0) {
        say("cannot bind %s: %s", binds[bound], strerror(errno));
        break;
      }
    }
    if (bound == 4) status = run_carry(workdir, name);
    while (bound-- > 0) {
      snprintf(path, sizeof path, "%s%s", workdir, binds[bound]);
      umount2(path, MNT_DETACH);
    }
    if (umount(workdir) != 0) umount2(workdir, MNT_DETACH);
    rmdir(workdir);
  }
  if (status != 0) {
    say("THE CARRY INTO %s FAILED (%s %d): what its origin changed since %s was made is NOT in it; it is still in the origin BE. "
        "Once booted: beadm list --json shows the carry pending; boot the origin and run beadm carry %s to carry it.",
        name, status < 0 ? "could not run beadm:" : "exit status", status, name, name);
  }
  int result = 0;
  if (mount_root(device, rootmnt, &options) != 0) {
    say("cannot mount the root %s again: %s", options.subvolume, strerror(errno));
    result = 1;
  }
  free(device);
  if (log_file != NULL) fclose(log_file);
  return result;
}

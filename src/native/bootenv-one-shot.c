/*
 * bootenv-one-shot: takes a one-shot activation (beadm activate -t) from the
 * initramfs, so that a trial boot environment that fails later in its boot
 * (an init that exits, a kernel panic after switching root, a reboot from
 * emergency mode) is not booted again: the next boot is the default BE's.
 *
 * Why here: GRUB 2.06 cannot write its environment block on btrfs (save_env:
 * "sparse file not allowed"), so GRUB never clears next_entry itself, and the
 * booted system's bootenv-boot-complete.service runs only once systemd is up.
 * The initramfs is the earliest code that can write: its local-bottom script
 * (hooks/initramfs-tools/bootenv) runs this once the root is mounted and before
 * it becomes /.
 *
 * Usage: bootenv-one-shot take ROOTMNT [WORKDIR]
 *   ROOTMNT is where the initramfs mounted the root (initramfs-tools: /root);
 *   WORKDIR (default /run/bootenv-one-shot, made and removed) is where the
 *   installed root is mounted meanwhile.
 *   Finds the btrfs device of ROOTMNT (/proc/self/mountinfo) and, in
 *   ROOTMNT/etc/fstab, the subvolume bootenv mounts at /.rootbe (the installed
 *   root, GRUB's home, written there by beadm); mounts that subvolume on a
 *   private directory, and in its /boot/grub/grubenv replaces
 *   "next_entry=VALUE" by "bootenv_tried=VALUE" (written to grubenv.new,
 *   fsynced and renamed over grubenv; GRUB ignores the new variable, and
 *   `beadm boot-complete` reads it to tell whether the one-shot BE came up).
 *   Then unmounts it.
 * Exit: always 0 unless the arguments are wrong (2): a boot must never stop
 *   here. What it did or why it did nothing goes to stderr (the console).
 * Changes nothing when: the root is not btrfs, its fstab has no /.rootbe line
 * (not a BE), grubenv has no next_entry, or anything fails on the way.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bootenv-mountinfo.h"

#define GRUBENV_SIGNATURE "# GRUB Environment Block\n"
#define GRUBENV_MAX 65536

static void say(const char *format, const char *argument) {
  fputs("bootenv: ", stderr);
  fprintf(stderr, format, argument);
  fputc('\n', stderr);
}

/* The subvol= option of the fstab line mounted at /.rootbe, or NULL. Caller frees. */
static char *rootbe_subvolume(const char *rootmnt) {
  char path[4096];
  snprintf(path, sizeof path, "%s/etc/fstab", rootmnt);
  FILE *file = fopen(path, "re");
  if (file == NULL) return NULL;
  char *line = NULL, *found = NULL;
  size_t capacity = 0;
  while (found == NULL && getline(&line, &capacity, file) != -1) {
    char *save = NULL;
    char *spec = strtok_r(line, " \t\n", &save);
    char *target = spec == NULL ? NULL : strtok_r(NULL, " \t\n", &save);
    char *type = target == NULL ? NULL : strtok_r(NULL, " \t\n", &save);
    char *options = type == NULL ? NULL : strtok_r(NULL, " \t\n", &save);
    if (options == NULL || spec[0] == '#') continue;
    unescape(target);
    if (strcmp(target, "/.rootbe") != 0) continue;
    char *option_save = NULL;
    for (char *option = strtok_r(options, ",", &option_save); option != NULL; option = strtok_r(NULL, ",", &option_save)) {
      if (strncmp(option, "subvol=", 7) == 0 && option[7] != '\0') {
        unescape(option + 7);
        found = strdup(option + 7);
        break;
      }
    }
  }
  free(line);
  fclose(file);
  return found;
}

/*
 * Rewrites grubenv in `grub_directory`: next_entry=VALUE becomes
 * bootenv_tried=VALUE (any earlier bootenv_tried dropped), same size, padded
 * with '#'. Returns 1 when it took a one-shot, 0 when there was none, -1 on error.
 */
static int take_one_shot(const char *grub_directory) {
  char path[4096], next_path[4096];
  snprintf(path, sizeof path, "%s/grubenv", grub_directory);
  snprintf(next_path, sizeof next_path, "%s/grubenv.new", grub_directory);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return errno == ENOENT ? 0 : -1;
  static char block[GRUBENV_MAX + 1], rewritten[GRUBENV_MAX + 1];
  ssize_t size = read(fd, block, GRUBENV_MAX + 1);
  close(fd);
  size_t signature = strlen(GRUBENV_SIGNATURE);
  if (size < (ssize_t)signature || size > GRUBENV_MAX || memcmp(block, GRUBENV_SIGNATURE, signature) != 0) {
    errno = EINVAL;
    return -1;
  }
  /* Variables are "name=value\n" lines after the signature; '#' lines are padding. */
  size_t out = 0;
  const char *value = NULL;
  size_t value_length = 0;
  memcpy(rewritten, block, signature);
  out = signature;
  for (size_t at = signature; at < (size_t)size;) {
    const char *end = memchr(block + at, '\n', (size_t)size - at);
    if (end == NULL) break; /* the padding's tail, or a torn line: not a variable */
    size_t length = (size_t)(end - (block + at)) + 1;
    const char *line = block + at;
    at += length;
    if (line[0] == '#') continue;
    if (length > 11 && memcmp(line, "next_entry=", 11) == 0) {
      value = line + 11;
      value_length = length - 11;
      continue;
    }
    if (length > 14 && memcmp(line, "bootenv_tried=", 14) == 0) continue;
    memcpy(rewritten + out, line, length);
    out += length;
  }
  /* An empty next_entry= (only its newline) is no one-shot. */
  if (value == NULL || value_length <= 1) return 0;
  /* Without room to record it, the one-shot is taken all the same, unrecorded. */
  if (out + 14 + value_length <= (size_t)size) {
    memcpy(rewritten + out, "bootenv_tried=", 14);
    memcpy(rewritten + out + 14, value, value_length);
    out += 14 + value_length;
  }
  memset(rewritten + out, '#', (size_t)size - out);
  fd = open(next_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return -1;
  if (write(fd, rewritten, (size_t)size) != size || fsync(fd) != 0) {
    int saved = errno;
    close(fd);
    unlink(next_path);
    errno = saved;
    return -1;
  }
  close(fd);
  if (rename(next_path, path) != 0) {
    int saved = errno;
    unlink(next_path);
    errno = saved;
    return -1;
  }
  int directory = open(grub_directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directory >= 0) {
    fsync(directory);
    close(directory);
  }
  char name[256];
  size_t shown = value_length - 1 < sizeof name - 1 ? value_length - 1 : sizeof name - 1;
  memcpy(name, value, shown);
  name[shown] = '\0';
  say("took the one-shot boot entry %s: the next boot is the default boot environment's", name);
  return 1;
}

int main(int argc, char **argv) {
  if ((argc != 3 && argc != 4) || strcmp(argv[1], "take") != 0) {
    fputs("usage: bootenv-one-shot take ROOTMNT [WORKDIR]\n", stderr);
    return 2;
  }
  const char *rootmnt = argv[2];
  const char *workdir = argc == 4 ? argv[3] : "/run/bootenv-one-shot";
  if (strlen(rootmnt) > 2048 || strlen(workdir) > 2048) return 2;
  char grub_directory[4064];
  snprintf(grub_directory, sizeof grub_directory, "%s/boot/grub", workdir);
  char *device = btrfs_device_of(rootmnt);
  if (device == NULL) return 0;
  char *subvolume = rootbe_subvolume(rootmnt);
  if (subvolume == NULL) {
    free(device);
    return 0;
  }
  char options[4200];
  snprintf(options, sizeof options, "subvol=%s", subvolume);
  if (mkdir(workdir, 0700) != 0) {
    say("cannot take a one-shot activation: mkdir: %s", strerror(errno));
  } else if (mount(device, workdir, "btrfs", MS_NOATIME | MS_NODEV | MS_NOSUID | MS_NOEXEC, options) != 0) {
    say("cannot take a one-shot activation: mounting the installed root: %s", strerror(errno));
    rmdir(workdir);
  } else {
    if (take_one_shot(grub_directory) < 0) say("cannot take a one-shot activation: grubenv: %s", strerror(errno));
    if (umount(workdir) != 0) umount2(workdir, MNT_DETACH);
    rmdir(workdir);
  }
  free(device);
  free(subvolume);
  return 0;
}

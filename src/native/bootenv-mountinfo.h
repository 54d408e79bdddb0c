/*
 * What bootenv's initramfs helpers (bootenv-one-shot.c, bootenv-boot-carry.c)
 * read of /proc/self/mountinfo: the btrfs device a mount point shows, with
 * the octal escapes of mountinfo's fields undone. Static functions, compiled
 * into each helper.
 */
#ifndef BOOTENV_MOUNTINFO_H
#define BOOTENV_MOUNTINFO_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Undoes the octal escapes of mountinfo and fstab fields (\040 for a space). */
static void unescape(char *field) {
  char *out = field;
  for (char *in = field; *in != '\0'; in++) {
    if (in[0] == '\\' && in[1] >= '0' && in[1] <= '3' && in[2] >= '0' && in[2] <= '7' && in[3] >= '0' && in[3] <= '7') {
      *out++ = (char)((in[1] - '0') * 64 + (in[2] - '0') * 8 + (in[3] - '0'));
      in += 3;
    } else {
      *out++ = *in;
    }
  }
  *out = '\0';
}

/* The source device of the btrfs mount at `mountpoint`, or NULL. Caller frees. */
static char *btrfs_device_of(const char *mountpoint) {
  FILE *file = fopen("/proc/self/mountinfo", "re");
  if (file == NULL) return NULL;
  char *line = NULL, *found = NULL;
  size_t capacity = 0;
  while (getline(&line, &capacity, file) != -1) {
    /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS */
    char *fields[5], *save = NULL, *token = strtok_r(line, " \n", &save);
    int count = 0;
    while (token != NULL && count < 5) {
      fields[count++] = token;
      token = strtok_r(NULL, " \n", &save);
    }
    if (count < 5) continue;
    unescape(fields[4]);
    if (strcmp(fields[4], mountpoint) != 0) continue;
    while (token != NULL && strcmp(token, "-") != 0) token = strtok_r(NULL, " \n", &save);
    char *type = token == NULL ? NULL : strtok_r(NULL, " \n", &save);
    char *source = type == NULL ? NULL : strtok_r(NULL, " \n", &save);
    free(found);
    found = NULL;
    /* The last mount at that point is the visible one. */
    if (type != NULL && source != NULL && strcmp(type, "btrfs") == 0) {
      unescape(source);
      found = strdup(source);
    }
  }
  free(line);
  fclose(file);
  return found;
}

#endif

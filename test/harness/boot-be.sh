#!/bin/bash
# Simulated boot of a boot environment, for integration tests. Runs inside a
# private mount namespace (unshare --mount --propagation private), so every
# mount made here disappears with the namespace.
#   boot-be.sh LOOPDEV FSUUID SUBVOLUME NEWROOT SETUP -- COMMAND...
# Mounts SUBVOLUME as the new root; then, as the initramfs's local-bottom
# does, carries into it what its origin changed if a carry is pending (the
# real bootenv-boot-carry, $BOOTENV_BOOT_CARRY, with ROOTFLAGS and readonly as
# initramfs-tools exports them, a fresh /run and /proc as the initramfs has;
# what it prints, the console's lines, goes to $BOOTENV_CONSOLE); then the
# btrfs and bind lines of that root's own /etc/fstab (as systemd would at
# boot), /proc, /sys, /dev, fresh tmpfs /run and /tmp, runs SETUP (shell,
# with $NEWROOT), and execs COMMAND chrooted there.
set -euo pipefail
dev=$1 uuid=$2 subvol=$3 NEWROOT=$4 setup=$5
shift 5
[ "${1:-}" = -- ] && shift
export NEWROOT

if [ -n "$subvol" ]; then opts="subvol=/$subvol"; else opts="subvolid=5"; fi
mount -t btrfs -o "$opts" "$dev" "$NEWROOT"

if [ -n "$subvol" ] && [ -n "${BOOTENV_BOOT_CARRY:-}" ]; then
  mount -t tmpfs -o mode=0755 tmpfs /run
  mount -t proc proc /proc
  ROOTFLAGS="-o subvol=$subvol" readonly=n "$BOOTENV_BOOT_CARRY" take "$NEWROOT" 2>>"${BOOTENV_CONSOLE:-/dev/null}" || true
fi

while read -r spec file type options _; do
  case "$spec" in '' | '#'*) continue ;; esac
  [ "$file" = / ] && continue
  case "$type" in
  btrfs)
    if [ "$spec" != "UUID=$uuid" ]; then
      echo "boot-be: fstab names an unknown device: $spec" >&2
      exit 90
    fi
    mkdir -p "$NEWROOT$file"
    mount -t btrfs -o "$options" "$dev" "$NEWROOT$file"
    ;;
  none)
    case ",$options," in *,bind,*) mount --bind "$NEWROOT$spec" "$NEWROOT$file" ;; esac
    ;;
  esac
done <"$NEWROOT/etc/fstab"

mount --rbind /dev "$NEWROOT/dev"
mount -t proc proc "$NEWROOT/proc"
mount -t sysfs sysfs "$NEWROOT/sys"
mount -t tmpfs -o mode=0755 tmpfs "$NEWROOT/run"
mount -t tmpfs -o mode=1777 tmpfs "$NEWROOT/tmp"
# What systemd-tmpfiles makes at boot (legacy.conf): /var/lock is /run/lock, where aptitude locks.
mkdir -p -m 1777 "$NEWROOT/run/lock"
# What systemd-tmpfiles does at boot for bootenv (the base has no systemd).
if [ -r "$NEWROOT/usr/lib/tmpfiles.d/bootenv.conf" ]; then
  while read -r type path mode _; do
    case "$type" in
    d) mkdir -p -m "$mode" "$NEWROOT$path" ;;
    f) install -m "$mode" /dev/null "$NEWROOT$path" ;;
    esac
  done <"$NEWROOT/usr/lib/tmpfiles.d/bootenv.conf"
fi
if [ -n "$setup" ]; then eval "$setup"; fi
exec chroot "$NEWROOT" "$@"

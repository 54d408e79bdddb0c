#!/bin/bash
# Installs what building and testing bootenv needs on a fresh Debian/Ubuntu
# machine (run as root): btrfs tools, debootstrap for the sandbox roots, GRUB's
# script checker, zstd for the cached bases, attr, acl and libcap2-bin to look
# at what a carry keeps (xattrs, ACLs, capabilities), debhelper and lintian for the
# .deb; for the real-boot test, qemu, sfdisk, OVMF (UEFI firmware), and
# dosfstools and mtools for the images' EFI System Partition (this kind of host
# kernel may have no vfat; mtools reads and writes it in the image file). The
# images carry their own GRUB, installed in them by apt-get: never install
# grub-pc or grub-efi here, which would take over this machine's own boot
# loader. Node.js/npm must already be there.
set -euo pipefail
packages=(btrfs-progs debootstrap grub-common grub2-common zstd util-linux e2fsprogs xz-utils ca-certificates
  build-essential debhelper dpkg-dev fakeroot lintian
  libcap2-bin attr acl
  qemu-system-x86 fdisk ovmf dosfstools mtools)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

#!/bin/bash
# Makes test/fixtures-captured/send-no-data.* (run as root, from the checkout):
# a scratch btrfs, a subvolume "origin" with the files below, a read-only
# snapshot "base" of it, then every kind of change a carry meets, a read-only
# snapshot "current", and `btrfs send --no-data -p base current` saved as is,
# with `btrfs receive --dump` of the same stream beside it as the reference.
# Captured with btrfs-progs 6.2 on Linux 6.18.
set -euo pipefail
out=$(pwd)/test/fixtures-captured
work=$(mktemp -d /var/tmp/bootenv-capture.XXXXXX)
truncate -s 1G "$work/img"
loop=$(losetup --find --show "$work/img")
# Never rm -r across a mount: the image goes only once the filesystem is unmounted.
trap 'cd /; if ! mountpoint -q "$work/top" || umount "$work/top"; then losetup -d "$loop"; rm -rf "$work"; fi' EXIT
mkfs.btrfs -q "$loop"
mkdir "$work/top"
mount -o subvolid=5,strictatime "$loop" "$work/top"
cd "$work/top"
btrfs -q subvolume create origin
o=origin
mkdir -p $o/etc $o/dir-rename/sub $o/dir-delete/sub $o/var/lib/db
for f in keep modify chmod-me chown-me xattr-me rmxattr-me touch-me read-me delete-me rename-me truncate-me type-change capped; do
  echo "$f" > $o/etc/$f
done
head -c 65536 /dev/zero | tr '\0' 'x' > $o/var/lib/db/table
echo a > $o/dir-rename/a; echo b > $o/dir-rename/sub/b
echo c > $o/dir-delete/c; echo d > $o/dir-delete/sub/d
echo pair > $o/etc/pair-a; ln $o/etc/pair-a $o/etc/pair-b
setfattr -n user.remove -v gone $o/etc/rmxattr-me
touch -d '2024-01-01 00:00:00' $o/etc/* $o/var/lib/db/table
sync
btrfs -q subvolume snapshot -r $o base
sleep 1.1
# Changes to existing entries.
printf 'changed\n' > $o/etc/modify
dd if=/dev/urandom of=$o/var/lib/db/table bs=4096 seek=3 count=2 conv=notrunc status=none
truncate -s 2 $o/etc/truncate-me
chmod 600 $o/etc/chmod-me
chown 1000:1000 $o/etc/chown-me
setfattr -n user.note -v "line one" $o/etc/xattr-me
setfattr -x user.remove $o/etc/rmxattr-me
setcap cap_net_raw+ep $o/etc/capped
touch -m $o/etc/touch-me
cat $o/etc/read-me > /dev/null
echo more >> $o/etc/pair-a
rm $o/etc/delete-me
mv $o/etc/rename-me $o/etc/renamed
mv $o/dir-rename $o/dir-renamed
echo a2 >> $o/dir-renamed/a
rm -r $o/dir-delete
rm $o/etc/type-change; mkdir $o/etc/type-change; echo inside > $o/etc/type-change/f
# New entries.
mkdir -p "$o/srv/www"
echo page > "$o/srv/www/index.html"
echo spaced > "$o/srv/with space"
echo nl > "$o/srv/new
line"
ln -s ../etc/keep $o/srv/link
mkfifo $o/srv/fifo
mknod $o/srv/null c 1 3
ln $o/etc/keep $o/srv/keep-link
sync
btrfs -q subvolume snapshot -r $o current
btrfs send -q --no-data -p base -f "$out/send-no-data.btrfs-progs-6.2.stream" current
btrfs receive --dump -f "$out/send-no-data.btrfs-progs-6.2.stream" > "$out/send-no-data.btrfs-progs-6.2.dump.txt"

#!/bin/bash
# Runs agent/raid's tests (real md arrays on loop devices) in qemu on the
# ramdisk's Debian kernel, for hosts whose kernel has no md driver
# (CONFIG_MD unset: the tests skip there). Needs `make initramfs` first
# (build/vmlinuz, build/ironlite-agent.cpio.gz, the kernel .deb in
# build/cache) and, from the host (all in scripts/install-deps):
# busybox-static, qemu-system-x86, util-linux, e2fsprogs, fdisk, gdisk,
# dosfstools, mtools, xfsprogs. `make test-raid-vm` runs it.
#
#   bash agent/raid/testdata/vmtest.sh [-test.run=Regexp]
#
# RAIDTEST_LOG=file keeps the VM's serial console log.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
R=$W/root
mkdir -p "$R/bin" "$R/tmp" "$R/lib/modules/extra"
(cd "$REPO" && CGO_ENABLED=0 go test -c -o "$R/raid.test" ./agent/raid/)
cp /bin/busybox "$R/bin/busybox"
# The tools the tests run: loop devices, partition tables, and making and
# checking the filesystems (mkfs.vfat, mkfs.xfs are also what
# agent/filesystem runs; mmd/mcopy put files into test FAT images).
for b in losetup mke2fs e2fsck blkid sfdisk sgdisk mkfs.vfat fsck.vfat mkfs.xfs xfs_repair mmd mcopy; do
	p=$(PATH=$PATH:/usr/sbin:/sbin command -v "$b") || { echo "vmtest: $b not installed (run scripts/install-deps)" >&2; exit 1; }
	cp -L "$p" "$R/bin/"
	for l in $(ldd "$p" | grep -o '/[^ ]*'); do mkdir -p "$R$(dirname "$l")"; cp -L "$l" "$R$l"; done
done
# mtools and dosfstools convert file names through iconv's CP850 module.
G=/usr/lib/x86_64-linux-gnu/gconv
mkdir -p "$R$G"
cp -L "$G/IBM850.so" "$G/gconv-modules.cache" "$R$G/"
ln -sf mke2fs "$R/bin/mkfs.ext4"
ln -sf e2fsck "$R/bin/fsck.ext4"
# loop and crc32c (raid456 -> libcrc32c needs it) are not in the ramdisk.
KVER=$(cat "$REPO/build/kernel-version")
mkdir -p "$W/k"
dpkg-deb --fsys-tarfile "$REPO"/build/cache/linux-image-"$KVER"_*.deb |
	tar -x -C "$W/k" --wildcards '*drivers/block/loop.ko' '*crypto/crc32c_generic.ko'
find "$W/k" -name '*.ko' -exec cp {} "$R/lib/modules/extra/" \;
cat >"$R/init.sh" <<'EOS'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/bin /usr/sbin /sbin /run
/bin/busybox --install -s /bin 2>/dev/null
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=3g tmpfs /tmp
insmod /lib/modules/extra/loop.ko max_loop=0
insmod /lib/modules/extra/crc32c_generic.ko
for m in md_mod raid0 raid1 raid10 raid456; do modprobe $m || echo "modprobe $m failed"; done
cd /tmp
/raid.test -test.v -test.count=1 -test.timeout=15m $RAIDTEST_ARGS
echo "RAIDTEST-EXIT=$?"
poweroff -f
EOS
chmod +x "$R/init.sh"
(cd "$R" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$W/extra.cpio.gz"
cat "$REPO/build/ironlite-agent.cpio.gz" "$W/extra.cpio.gz" >"$W/initrd.gz"
timeout 900 qemu-system-x86_64 -m 4096 -smp 2 -nographic -no-reboot \
	-kernel "$REPO/build/vmlinuz" -initrd "$W/initrd.gz" \
	-append "console=ttyS0 rdinit=/init.sh panic=-1 quiet loglevel=0 RAIDTEST_ARGS=${1:-}" >"$W/serial.log" 2>&1 || true
[ -z "${RAIDTEST_LOG:-}" ] || cp "$W/serial.log" "$RAIDTEST_LOG"
grep -E "^(---|    ---|ok|FAIL|PASS|panic|\s+\w+_test\.go:)" "$W/serial.log" | grep -v "    --- PASS" || true
grep -q "^RAIDTEST-EXIT=0" "$W/serial.log" || { tail -50 "$W/serial.log"; exit 1; }

#!/usr/bin/env bash
# Build the ironlite deploy ramdisk:
#   build/ironlite-agent.cpio.gz   u-root init + gosh rescue shell + ironlite-agent (uinit)
#                                  + kernel modules (initramfs/modules.list + deps) + mdadm
#                                  + mke2fs/mkfs.ext4, mkfs.xfs, mkfs.fat/mkfs.vfat, mkswap, blkid
#   build/vmlinuz                  the matching Debian kernel
#   build/ramdisk-size.txt         the size report (also printed)
#
# The kernel and modules come from Debian's linux-image-amd64 package, downloaded with
# `apt-get download` (never the build host's /boot: the host may run another kernel).
# Needs: go, apt-get, dpkg-deb, depmod (kmod), gzip. See initramfs/README.md.
#
# Environment:
#   OUT=dir              output directory (default: <repo>/build)
#   KERNEL_PACKAGE=pkg   kernel package (default linux-image-amd64; its dependency
#                        linux-image-<version>-amd64 is what gets unpacked)
#   CACHE=dir            .deb cache (default: $OUT/cache)
#   EXTRA_MODULES="a b"  more modules on top of modules.list
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$REPO/build}
CACHE=${CACHE:-$OUT/cache}
KERNEL_PACKAGE=${KERNEL_PACKAGE:-linux-image-amd64}
MODLIST=$REPO/initramfs/modules.list
export PATH=$PATH:/usr/sbin:/sbin

for tool in go apt-get apt-cache dpkg-deb depmod gzip; do
	command -v "$tool" >/dev/null || { echo "build.sh: missing $tool (apt-get install kmod dpkg apt gzip; Go >= 1.26)" >&2; exit 1; }
done

mkdir -p "$OUT" "$CACHE"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ironlite-initramfs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)

# fetch PKG: download PKG's .deb into the cache (unless there) and print its path.
fetch() {
	local pkg=$1 uri file
	# --print-uris prints nothing when the file is already in cwd: ask from an empty dir.
	mkdir -p "$WORK/uris"
	uri=$(cd "$WORK/uris" && apt-get download --print-uris "$pkg" 2>/dev/null | awk -F"'" 'NR==1{print $2}')
	file=$(cd "$WORK/uris" && apt-get download --print-uris "$pkg" 2>/dev/null | awk 'NR==1{print $2}')
	if [[ -z $file ]]; then
		echo "build.sh: apt cannot find $pkg (run apt-get update?)" >&2
		exit 1
	fi
	if [[ ! -s $CACHE/$file ]]; then
		echo "build.sh: downloading $pkg ($uri)" >&2
		(cd "$CACHE" && apt-get download "$pkg" >/dev/null 2>"$WORK/apt.err") || { cat "$WORK/apt.err" >&2; exit 1; }
	fi
	echo "$CACHE/$file"
}

# --- kernel -----------------------------------------------------------------
# linux-image-amd64 is a metapackage; the kernel is its linux-image-<abi>-amd64 dependency.
KPKG=$(apt-cache depends "$KERNEL_PACKAGE" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
KPKG=${KPKG:-$KERNEL_PACKAGE}
KDEB=$(fetch "$KPKG")
echo "build.sh: kernel package $(basename "$KDEB")"
mkdir -p "$WORK/kernel"
dpkg-deb -x "$KDEB" "$WORK/kernel"
KVER=$(ls "$WORK/kernel/lib/modules" | head -n1)
[[ -n $KVER && -f $WORK/kernel/boot/vmlinuz-$KVER ]] || { echo "build.sh: no kernel in $KDEB" >&2; exit 1; }
KMOD=$WORK/kernel/lib/modules/$KVER
depmod -b "$WORK/kernel" "$KVER"

# --- modules: the list plus the transitive closure from modules.dep -----------
mapfile -t WANT < <({ sed -e 's/#.*//' "$MODLIST"; for m in ${EXTRA_MODULES:-}; do echo "$m"; done; } | tr -s ' \t' '\n' | sed '/^$/d' | tr '-' '_')
awk -v want="${WANT[*]}" '
	function base(p,   n) { n = split(p, a, "/"); sub(/\.ko(\.(xz|gz|zst))?$/, "", a[n]); gsub("-", "_", a[n]); return a[n] }
	BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) wanted[w[i]] = 1 }
	{
		sub(/:$/, "", $1); path = $1; sub(/:.*/, "", path)
		name = base(path); file[name] = path
		deps[path] = ""
		for (i = 2; i <= NF; i++) deps[path] = deps[path] " " $i
	}
	function add(p,   d, k, parts) {
		if (p in seen) return
		seen[p] = 1; print p
		k = split(deps[p], parts, " ")
		for (d = 1; d <= k; d++) add(parts[d])
	}
	END {
		for (m in wanted) {
			if (!(m in file)) { print "MISSING " m > "/dev/stderr"; continue }
			add(file[m])
		}
	}' <(sed 's/:/ /' "$KMOD/modules.dep") >"$WORK/modules.files" 2>"$WORK/modules.missing"
if [[ -s $WORK/modules.missing ]]; then
	# Built into this kernel (modules.builtin) is fine; otherwise the list has a typo.
	while read -r _ m; do
		if grep -q "/${m//_/[-_]}\.ko" "$KMOD/modules.builtin"; then
			echo "build.sh: $m is built into $KVER"
		else
			echo "build.sh: module $m (modules.list) does not exist in $KVER" >&2
			exit 1
		fi
	done <"$WORK/modules.missing"
fi
STAGE=$WORK/stage
SM=$STAGE/lib/modules/$KVER
mkdir -p "$SM"
while read -r f; do
	mkdir -p "$SM/$(dirname "$f")"
	cp "$KMOD/$f" "$SM/$f"
done <"$WORK/modules.files"
cp "$KMOD/modules.builtin" "$KMOD/modules.builtin.modinfo" "$KMOD/modules.order" "$SM/"
# Regenerate modules.dep/alias for exactly what we ship.
depmod -b "$STAGE" "$KVER"
rm -f "$SM"/*.bin # kmodule and our coldplug read the text files only
NMODS=$(wc -l <"$WORK/modules.files")

# --- mdadm and the mkfs tools, with their libraries ----------------------------
# Taken from Debian's packages (not the build host): a fixed, known set. Each tool
# is listed with its package, each library with its package; the check below
# fails the build if a binary needs a library that is not shipped.
#   mdadm                          mdadm      libudev1
#   mke2fs (mkfs.ext4), mke2fs.conf e2fsprogs  libext2fs2 (libext2fs, libe2p) libcom-err2
#   mkfs.xfs                       xfsprogs   libinih1 liburcu8
#   mkfs.fat (mkfs.vfat)           dosfstools
#   mkswap, blkid                  util-linux libselinux1 libpcre2-8-0
#   (shared)                                  libblkid1 libuuid1 libc6
EXTRA=$WORK/extra
mkdir -p "$WORK/deb" "$EXTRA/sbin" "$EXTRA/lib/x86_64-linux-gnu" "$EXTRA/lib64" "$EXTRA/etc"
for p in mdadm libudev1 libc6 e2fsprogs libext2fs2 libcom-err2 libblkid1 libuuid1 xfsprogs libinih1 liburcu8 \
	dosfstools util-linux libselinux1 libpcre2-8-0; do
	dpkg-deb -x "$(fetch "$p")" "$WORK/deb"
done
for bin in mdadm mke2fs mkfs.xfs mkfs.fat mkswap blkid; do
	cp "$WORK/deb/sbin/$bin" "$EXTRA/sbin/$bin" 2>/dev/null || cp "$WORK/deb/usr/sbin/$bin" "$EXTRA/sbin/$bin"
done
ln -s mke2fs "$EXTRA/sbin/mkfs.ext4"
ln -s mkfs.fat "$EXTRA/sbin/mkfs.vfat"
LIBS="libudev.so.1 libc.so.6 libext2fs.so.2 libe2p.so.2 libcom_err.so.2 libblkid.so.1 libuuid.so.1 libinih.so.1 liburcu.so.8 libselinux.so.1 libpcre2-8.so.0"
for lib in $LIBS; do
	cp -L "$WORK/deb/lib/x86_64-linux-gnu/$lib" "$EXTRA/lib/x86_64-linux-gnu/$lib" 2>/dev/null ||
		cp -L "$WORK/deb/usr/lib/x86_64-linux-gnu/$lib" "$EXTRA/lib/x86_64-linux-gnu/$lib"
done
# The loader from the package: its /lib64 entry is an absolute symlink, which
# cp -L would resolve on the build host.
cp -L "$WORK/deb/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$EXTRA/lib64/" 2>/dev/null ||
	cp -L "$WORK/deb/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$EXTRA/lib64/"
# Debian's mke2fs.conf: the ext4 features Debian 12 makes by default, not
# whatever mke2fs was compiled with.
cp "$WORK/deb/etc/mke2fs.conf" "$EXTRA/etc/mke2fs.conf"
mkdir -p "$EXTRA/etc/mdadm"
printf 'DEVICE partitions\nAUTO -all\n' >"$EXTRA/etc/mdadm/mdadm.conf" # assemble nothing by itself
# Every shared library a shipped binary or library needs must be shipped too.
if command -v readelf >/dev/null; then
	for f in "$EXTRA"/sbin/* "$EXTRA"/lib/x86_64-linux-gnu/*; do
		[[ -L $f ]] && continue
		for need in $(readelf -d "$f" | awk -F'[][]' '/NEEDED/{print $2}'); do
			[[ -e $EXTRA/lib/x86_64-linux-gnu/$need || -e $EXTRA/lib64/$need ]] ||
				{ echo "build.sh: $(basename "$f") needs $need, which is not shipped" >&2; exit 1; }
		done
	done
else
	echo "build.sh: readelf (binutils) not found; not checking the shipped libraries" >&2
fi

# --- u-root initramfs ----------------------------------------------------------
# u-root is pinned by go.mod (v0.16.0); build its CLI from this module so the
# command packages resolve against our go.sum (reference/libraries.md §2).
cd "$REPO"
go build -o "$WORK/u-root" github.com/u-root/u-root
GOOS=linux GOARCH=amd64 CGO_ENABLED=0 GOAMD64=v1 "$WORK/u-root" \
	-o "$WORK/ironlite-agent.cpio" \
	-initcmd=init -defaultsh=gosh -uinitcmd=ironlite-agent -skip-ldd \
	-files "$STAGE/lib/modules:lib/modules" \
	-files "$EXTRA/sbin:sbin" \
	-files "$EXTRA/lib/x86_64-linux-gnu:lib/x86_64-linux-gnu" \
	-files "$EXTRA/lib64:lib64" \
	-files "$EXTRA/etc/mdadm:etc/mdadm" \
	-files "$EXTRA/etc/mke2fs.conf:etc/mke2fs.conf" \
	github.com/u-root/u-root/cmds/core/init \
	github.com/u-root/u-root/cmds/core/gosh \
	./agent/cmd/ironlite-agent 2>&1 | { grep -v -e "recommended Go versions" -e "Some packages may not compile" -e "golang.org/doc/install" -e "golang.org/dl/go1" >&2 || true; }

gzip -9 -n -c "$WORK/ironlite-agent.cpio" >"$OUT/ironlite-agent.cpio.gz.tmp"
mv "$OUT/ironlite-agent.cpio.gz.tmp" "$OUT/ironlite-agent.cpio.gz"
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "$KVER" >"$OUT/kernel-version"

# --- size report -------------------------------------------------------------------
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }
CPIO=$(stat -c %s "$WORK/ironlite-agent.cpio")
GZ=$(stat -c %s "$OUT/ironlite-agent.cpio.gz")
KSZ=$(stat -c %s "$OUT/vmlinuz")
MODSZ=$(du -sb "$STAGE/lib/modules" | cut -f1)
MDSZ=$(du -sb "$EXTRA" | cut -f1)
BBSZ=$(cpio -it --quiet <"$WORK/ironlite-agent.cpio" >/dev/null 2>&1 && cd "$WORK" && mkdir -p x && cd x && cpio -id --quiet bbin/bb <../ironlite-agent.cpio 2>/dev/null && stat -c %s bbin/bb || echo 0)
TOTAL=$((GZ + KSZ))
LIMIT=$((40 * 1048576))
{
	echo "ironlite ramdisk ($(date -u +%Y-%m-%dT%H:%M:%SZ), kernel $KVER from $(basename "$KDEB"))"
	printf '  %-34s %12s  %s\n' "build/vmlinuz" "$KSZ" "$(mib "$KSZ")"
	printf '  %-34s %12s  %s\n' "build/ironlite-agent.cpio.gz" "$GZ" "$(mib "$GZ")"
	printf '  %-34s %12s  %s\n' "  uncompressed cpio" "$CPIO" "$(mib "$CPIO")"
	printf '  %-34s %12s  %s\n' "  u-root busybox (init,gosh,agent)" "$BBSZ" "$(mib "$BBSZ")"
	printf '  %-34s %12s  %s\n' "  kernel modules ($NMODS files)" "$MODSZ" "$(mib "$MODSZ")"
	printf '  %-34s %12s  %s\n' "  mdadm, mkfs tools, blkid + libs" "$MDSZ" "$(mib "$MDSZ")"
	printf '  %-34s %12s  %s  (limit %s)\n' "kernel + initramfs (compressed)" "$TOTAL" "$(mib "$TOTAL")" "$(mib "$LIMIT")"
	echo "  built in $(($(date +%s) - START)) s"
} | tee "$OUT/ramdisk-size.txt"
if ((TOTAL > LIMIT)); then
	echo "build.sh: kernel + initramfs exceed 40 MiB" >&2
	exit 1
fi

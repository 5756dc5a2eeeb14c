#!/bin/busybox sh
# ksm-rs guest init: mount the pseudo filesystems, run /plan.sh, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# Keep kernel chatter below warnings off the console that carries KTAP,
# while WARN/BUG/oops (level <= 4) still appear and fail the run.
echo 5 > /proc/sys/kernel/printk
# A distro-like setup: cgroup v2 with the memory and cpuset controllers for
# child groups, tracefs, and 512 MiB of zram swap.
mkdir -p /sys/fs/cgroup /sys/kernel/tracing
if mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null; then
	echo "+memory +cpuset" > /sys/fs/cgroup/cgroup.subtree_control
fi
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
if [ -e /sys/block/zram0/disksize ] && echo 512M > /sys/block/zram0/disksize &&
   mkswap /dev/zram0 >/dev/null && swapon /dev/zram0; then
	swap="$(($(sed -n 's/^SwapTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo) / 1024)) MiB zram swap"
else
	swap="no swap"
fi
movable=0
for b in /sys/devices/system/memory/memory*; do
	[ "$(cat $b/valid_zones 2>/dev/null)" = Movable ] && movable=$((movable + 1))
done
echo "ksm-rs-guest: booted $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpus, nodes: $(ls -d /sys/devices/system/node/node* 2>/dev/null | wc -l), $swap, $movable movable memory blocks, cgroup controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null)"
cd /tests
set -o pipefail
. /plan.sh
sync
echo "ksm-rs-guest: done"
poweroff -f

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
echo "ksm-rs-guest: booted $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpus, nodes: $(ls -d /sys/devices/system/node/node* 2>/dev/null | wc -l)"
cd /tests
set -o pipefail
. /plan.sh
sync
echo "ksm-rs-guest: done"
poweroff -f

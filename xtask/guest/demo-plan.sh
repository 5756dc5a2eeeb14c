# The demo: four processes hold the same 16 MiB each (two opt in with
# madvise, two with prctl); ksmd merges them while we watch.
K=/sys/kernel/mm/ksm
echo 256 > $K/pages_to_scan
echo 20 > $K/sleep_millisecs
pids=""
for mode in madvise madvise prctl prctl; do
	./ksm-demo $mode 16 &
	pids="$pids $!"
done
sleep 1
echo "demo: 4 processes hold 4 x 16 MiB of the same 64 page patterns; echo 1 > $K/run"
echo 1 > $K/run
show() {
	per=""
	for p in $pids; do
		per="$per $p:$(sed -n 's/^ksm_merging_pages //p' /proc/$p/ksm_stat)"
	done
	echo "demo: t=${1}s full_scans=$(cat $K/full_scans) pages_shared=$(cat $K/pages_shared) pages_sharing=$(cat $K/pages_sharing) pages_unshared=$(cat $K/pages_unshared) pages_volatile=$(cat $K/pages_volatile) general_profit=$(cat $K/general_profit) | merging pages per pid:$per"
}
t=0
last=-1
stable=0
while [ $t -lt 120 ]; do
	sleep 1
	t=$((t + 1))
	show $t
	sharing=$(cat $K/pages_sharing)
	if [ "$sharing" = "$last" ] && [ "$(cat $K/full_scans)" -ge 2 ]; then
		stable=$((stable + 1))
		[ $stable -ge 2 ] && break
	else
		stable=0
	fi
	last=$sharing
done
for p in $pids; do
	echo "demo: /proc/$p/ksm_stat: $(tr '\n' ' ' < /proc/$p/ksm_stat)"
done
echo "demo: converged after ${t}s"
echo "demo: all sysfs files:"
for f in $K/*; do
	echo "demo:     $(basename $f) = $(cat $f 2>/dev/null | head -1)"
done
profit=$(cat $K/general_profit)
echo "demo: memory saved: $((profit / 1024)) KiB of $((4 * 16 * 1024)) KiB ($(cat $K/pages_sharing) pages sharing $(cat $K/pages_shared) KSM pages)"
kill $pids
wait 2>/dev/null
echo 2 > $K/run
echo "demo: after run=2: pages_shared=$(cat $K/pages_shared) pages_sharing=$(cat $K/pages_sharing)"

# Runs one test as KTAP: its own output indented as a subtest, then one
# top-level result line. Exit 0 = pass, 4 (KSFT_SKIP) = skip, else fail.
n=0
run_test() {
	name=$1
	limit=$2
	shift 2
	n=$((n + 1))
	echo "# [$n] $name"
	start=$(date +%s)
	timeout "$limit" "$@" 2>&1 < /dev/null | sed 's/^/    /'
	rc=$?
	secs=$(( $(date +%s) - start ))
	case $rc in
	0) echo "ok $n $name # time=${secs}s" ;;
	4) echo "ok $n $name # SKIP (exit 4)" ;;
	124|143) echo "not ok $n $name # timeout after ${limit}s" ;;
	*) echo "not ok $n $name # exit=$rc time=${secs}s" ;;
	esac
}

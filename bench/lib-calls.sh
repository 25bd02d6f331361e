# Helpers of bench/calls.sh (sourced, not run). The conventions are those of
# bench/register.sh: processes pinned with taskset, CPU from /proc/PID/stat
# (utime+stime of a whole process tree), cores' busy share from /proc/stat,
# free ports checked in /proc/net/udp, every wait bounded.
# Expects: HZ, STARTED_PIDS (array), SUMMARY (file).

log() { printf '%s\n' "$*" | tee -a "$SUMMARY" >&2; }
say() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }
calc() { awk "BEGIN { printf \"$1\", ($2) }"; }

# udp_bound PORT: true if something listens on 127.0.0.1/any UDP PORT.
udp_bound() {
	local hex
	hex=$(printf '%04X' "$1")
	awk -v h=":$hex" 'NR>1 && substr($2, length($2)-4)==h {f=1} END{exit !f}' /proc/net/udp /proc/net/udp6 2>/dev/null
}

# free_udp_port [N]: the first of N (default 2) consecutive UDP ports nobody listens on, in
# 10000-19999 (Confab's relay ports and the kernel's ephemeral ports are above 20000 here).
free_udp_port() {
	local i p k n=${1:-2} ok
	for i in $(seq 1 100); do
		p=$((10000 + (RANDOM % 9990)))
		ok=1
		for k in $(seq 0 $((n - 1))); do udp_bound $((p + k)) && { ok=0; break; }; done
		if [ "$ok" = 1 ]; then echo "$p"; return 0; fi
	done
	echo "no free UDP port found" >&2; return 1
}

# wait_udp_bound PORT PID SECS: until something is bound to PORT (or PID died / timeout).
wait_udp_bound() {
	local port=$1 pid=$2 secs=$3 i
	for i in $(seq 1 $((secs * 10))); do
		kill -0 "$pid" 2>/dev/null || return 1
		if udp_bound "$port"; then return 0; fi
		sleep 0.1
	done
	return 1
}

# tree_pids and cpu_ticks: bench/lib-proc.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-proc.sh"

# tree_ticks ROOT_PID: CPU ticks of the whole process tree (a forking server's children too).
tree_ticks() { cpu_ticks $(tree_pids "$1"); }

# thread_ticks ROOT_PID: "name ticks" per thread name (digits stripped, so pools add up),
# summed over every thread of the tree. Threads that already exited are not listed (their
# time stays in the process's total).
thread_ticks() {
	local p t
	for p in $(tree_pids "$1"); do
		for t in /proc/"$p"/task/*; do
			awk '{ line=$0; n=line; sub(/^[0-9]+ \(/, "", n); sub(/\) .*$/, "", n); gsub(/[0-9.]+$/, "", n); gsub(/-$/, "", n); gsub(/ /, "_", n);
				sub(/^[0-9]+ \(.*\) /, "", line); split(line, f, " "); print n, f[12]+f[13] }' "$t/stat" 2>/dev/null || true
		done
	done | awk '{ s[$1] += $2 } END { for (k in s) print k, s[k] }' | sort
}

# idle_ticks ROOT_PID SECS: ticks the tree used while idle over SECS seconds.
idle_ticks() {
	local a b
	a=$(tree_ticks "$1"); sleep "$2"; b=$(tree_ticks "$1")
	echo $((b - a))
}

# settle ROOT_PID MIN_SECS IDLE_TICKS_PER_S TIMELINE: after the load, samples the tree's CPU
# each second for at least MIN_SECS (timers that fire late, e.g. 32 s transaction timers,
# belong to the run), then until a second uses no more than the idle rate + 1 tick (at most
# 15 s more). Appends "+Ns ticks" lines to TIMELINE; prints the final ticks and the seconds
# waited.
settle() {
	local root=$1 min=$2 idle=$3 timeline=$4 prev now i=0
	prev=$(tree_ticks "$root")
	while [ "$i" -lt $((min + 15)) ]; do
		sleep 1
		i=$((i + 1))
		now=$(tree_ticks "$root")
		echo "+${i}s $((now - prev))" >>"$timeline"
		if [ "$i" -ge "$min" ] && [ $((now - prev)) -le $((idle + 1)) ]; then break; fi
		prev=$now
	done
	echo "$now $i"
}

# fd_count ROOT_PID: open file descriptors of the whole tree (sockets included).
fd_count() {
	local p n=0 c
	for p in $(tree_pids "$1"); do
		c=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
		n=$((n + c))
	done
	echo "$n"
}

# core_busy N: "busy total" jiffies of core N from /proc/stat (steal counts as busy).
core_busy() {
	awk -v c="cpu$1" '$1==c { b=$2+$3+$4+$7+$8+$9; print b, b+$5+$6 }' /proc/stat
}
# busy_pct "B0 T0" "B1 T1": percentage of the interval the core was busy.
busy_pct() {
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t=y[2]-x[2]; printf "%.0f", (t > 0 ? 100 * (y[1]-x[1]) / t : 0) }'
}

# stop_pid PID: TERM, wait up to 5 s, then KILL.
stop_pid() {
	local p=$1 i
	kill -TERM "$p" 2>/dev/null || return 0
	for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}

# cleanup_started: TERM then KILL every process this script started (trap EXIT).
cleanup_started() {
	local p
	for p in "${STARTED_PIDS[@]}"; do
		if kill -0 "$p" 2>/dev/null; then kill -TERM "$p" 2>/dev/null || true; fi
	done
	sleep 0.5
	for p in "${STARTED_PIDS[@]}"; do
		if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
	done
}

# ---------------------------------------------------------------- SIPp outputs
# sipp_field STATCSV COLUMN: value of a column of the last line of a SIPp statistics file.
sipp_field() {
	awk -F';' -v col="$2" 'NR==1 { for (i=1;i<=NF;i++) if ($i==col) c=i; next } { last=$c } END { print (c && last!="") ? last : 0 }' "$1" 2>/dev/null || echo 0
}
# sipp_elapsed STATCSV: seconds between the statistics' StartTime and the last CurrentTime.
sipp_elapsed() {
	awk -F';' 'NR==1 { next } { split($1, s, "\t"); split($3, c, "\t"); st=s[3]; cu=c[3] } END { if (st!="") printf "%.3f", cu - st; else print 0 }' "$1" 2>/dev/null || echo 0
}
# times_cpu FILE: CPU seconds of children (user + sys) from the output of `times`.
times_cpu() {
	awk 'NR==2 { t=0; for (i=1;i<=2;i++) { v=$i; m=v; sub(/m.*/, "", m); s=v; sub(/^[0-9]+m/, "", s); sub(/s$/, "", s); t+=m*60+s } printf "%.2f", t }' "$1" 2>/dev/null || echo 0
}
# rtt_pct RTTFILE RTD: "p50 p99" in ms of response-time RTD from SIPp's rtt file.
rtt_pct() {
	[ -f "$1" ] || { echo "- -"; return; }
	awk -F';' -v r="$2" 'NR>1 && $3==r { print $2 }' "$1" | sort -g | awk '{ v[NR]=$1 } END { if (NR==0) { print "- -"; exit } i50=int(NR*0.50); if (i50<1) i50=1; i99=int(NR*0.99); if (i99<1) i99=1; printf "%s %s\n", (v[i50] < 1 ? "<1" : v[i50]), (v[i99] < 1 ? "<1" : v[i99]) }'
}

# ---------------------------------------------------------------- users
# ha1 USER PASSWORD: MD5(USER:bench.confab:PASSWORD).
ha1() { printf '%s:bench.confab:%s' "$1" "$2" | md5sum | cut -c1-32; }

#!/usr/bin/env bash
# Authenticated REGISTER benchmark: Confab vs Kamailio under the same SIPp load.
#
#   bench/register.sh [options]        (bench/register.sh --help for the list)
#
# Method (docs: bench/README.md, shared design TESTING.md "Benchmarks, not timed tests"):
# each server pinned to core 1, SIPp to core 0, everything on 127.0.0.1. At a fixed
# offered load that both sustain, the server's CPU time (utime+stime of all its
# processes, read from /proc, until its timers settle after the load) divided by the
# successful registrations gives µs per REGISTER and capacity per core = 1e6 / µs.
# Then a short ramp per server finds the highest rate with no failures, and says
# which side ran out of CPU; a bare UDP echo measures the machine's floor; and
# 100,000 contacts are registered into Confab to measure its memory per contact.
# Prints figures; never fails a build on them (exit status is about the run itself).

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

# ---------------------------------------------------------------- options
RATE=5000          # offered REGISTER/s in the fixed-load run
DURATION=20        # seconds of the fixed-load run
USERS=1000         # users cycled through by the fixed-load run and the ramp
RAMP="4000 6000 8000 10000 12000 14000"
RAMP_SECS=4
MEM_CONTACTS=100000
MEM_USERS=2000     # memory run: MEM_USERS users x (MEM_CONTACTS/MEM_USERS) contacts each
MEM_RATE=2500      # REGISTER/s in the memory runs (many contacts per AoR cost more per REGISTER)
FLOOR_RATE=50000   # datagrams/s sent to the echo floor
FLOOR_SECS=4
MEM_WAIT=35        # seconds after the memory load until the last RSS reading
ONLY=both          # kamailio | confab | both
DO_RAMP=1
DO_MEM=1
DO_FLOOR=1
DO_BUILD=1
CONFAB_BIN="$ROOT/target/release/confab"
TOOLS_DIR="$ROOT/target/release"
SERVER_CORE=1
LOAD_CORE=0
RESULTS_BASE="$HERE/results"

usage() {
	cat <<EOF
usage: bench/register.sh [options]
  --rate N            offered REGISTER/s in the fixed-load run      (default $RATE)
  --duration S        seconds of the fixed-load run                  (default $DURATION)
  --users N           users the fixed-load run and ramp cycle over   (default $USERS)
  --ramp "R1 R2 ..."  ramp steps in REGISTER/s                       (default "$RAMP")
  --ramp-secs S       seconds per ramp step                          (default $RAMP_SECS)
  --no-ramp           skip the ramp
  --mem-contacts N    contacts registered into Confab for memory     (default $MEM_CONTACTS)
  --mem-users N       users those contacts are spread over           (default $MEM_USERS)
  --mem-rate N        REGISTER/s in the memory runs                  (default $MEM_RATE)
  --mem-wait S        Confab RSS read again S s after the load        (default $MEM_WAIT)
  --no-mem            skip the memory run
  --floor-rate N      datagrams/s for the UDP echo floor             (default $FLOOR_RATE)
  --no-floor          skip the floor
  --only WHICH        kamailio | confab | both                       (default $ONLY)
  --confab PATH       confab binary                                  (default target/release/confab)
  --no-build          do not run cargo build first
  --results DIR       where raw outputs go       (default bench/results/<timestamp>)
EOF
}

RESULTS=""
while [ $# -gt 0 ]; do
	case "$1" in
	--rate) RATE="$2"; shift 2 ;;
	--duration) DURATION="$2"; shift 2 ;;
	--users) USERS="$2"; shift 2 ;;
	--ramp) RAMP="$2"; shift 2 ;;
	--ramp-secs) RAMP_SECS="$2"; shift 2 ;;
	--no-ramp) DO_RAMP=0; shift ;;
	--mem-contacts) MEM_CONTACTS="$2"; shift 2 ;;
	--mem-users) MEM_USERS="$2"; shift 2 ;;
	--mem-rate) MEM_RATE="$2"; shift 2 ;;
	--mem-wait) MEM_WAIT="$2"; shift 2 ;;
	--no-mem) DO_MEM=0; shift ;;
	--floor-rate) FLOOR_RATE="$2"; shift 2 ;;
	--no-floor) DO_FLOOR=0; shift ;;
	--only) ONLY="$2"; shift 2 ;;
	--confab) CONFAB_BIN="$2"; shift 2 ;;
	--no-build) DO_BUILD=0; shift ;;
	--results) RESULTS="$2"; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
	esac
done
for v in RATE DURATION USERS RAMP_SECS MEM_CONTACTS MEM_USERS MEM_RATE MEM_WAIT FLOOR_RATE; do
	if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then echo "--${v,,} must be a positive integer" >&2; exit 2; fi
done
case "$ONLY" in kamailio | confab | both) ;; *) echo "--only: kamailio, confab or both" >&2; exit 2 ;; esac
[ "$DURATION" -le 300 ] || { echo "--duration at most 300 s" >&2; exit 2; }
[ "$RAMP_SECS" -le 60 ] || { echo "--ramp-secs at most 60 s" >&2; exit 2; }
[ "$MEM_WAIT" -le 300 ] && [ "$MEM_WAIT" -ge 5 ] || { echo "--mem-wait between 5 and 300 s" >&2; exit 2; }
set -- $RAMP
[ $# -le 12 ] || { echo "--ramp: at most 12 steps" >&2; exit 2; }
for r in $RAMP; do [[ "$r" =~ ^[1-9][0-9]*$ ]] || { echo "--ramp: positive integers" >&2; exit 2; }; done
[ "$MEM_CONTACTS" -ge "$MEM_USERS" ] || { echo "--mem-contacts must be >= --mem-users" >&2; exit 2; }

want() { [ "$ONLY" = both ] || [ "$ONLY" = "$1" ]; }

# ---------------------------------------------------------------- tools
missing=()
for t in sipp taskset awk md5sum getconf; do command -v "$t" >/dev/null || missing+=("$t"); done
if want kamailio && ! command -v kamailio >/dev/null && ! [ -x /usr/sbin/kamailio ]; then missing+=(kamailio); fi
if [ ${#missing[@]} -gt 0 ]; then
	echo "missing tools: ${missing[*]}" >&2
	echo "install them with:  apt-get install -y sip-tester kamailio util-linux coreutils gawk" >&2
	exit 2
fi
KAMAILIO="$(command -v kamailio || echo /usr/sbin/kamailio)"
KAM_MODULES=/usr/lib/x86_64-linux-gnu/kamailio/modules
if want kamailio; then
	for m in sl pv maxfwd textops db_text usrloc registrar auth auth_db kex corex ctl; do
		[ -f "$KAM_MODULES/$m.so" ] || { echo "Kamailio module $m.so missing in $KAM_MODULES (apt-get install -y kamailio)" >&2; exit 2; }
	done
fi
if [ "$(nproc)" -lt 2 ]; then echo "needs 2 cores (server on core $SERVER_CORE, SIPp on core $LOAD_CORE)" >&2; exit 2; fi
HZ="$(getconf CLK_TCK)"
# The machine may be shared: run the server and SIPp at a raised priority where allowed
# (root), so other work on their cores disturbs the ramp less. CPU time per operation,
# the main figure, does not depend on it.
PRIO=()
if nice -n -15 true 2>/dev/null; then PRIO=(nice -n -15); fi

# ---------------------------------------------------------------- results, cleanup
RESULTS="${RESULTS:-$RESULTS_BASE/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RESULTS"
RESULTS="$(cd "$RESULTS" && pwd)"
SUMMARY="$RESULTS/summary.txt"
: >"$SUMMARY"

STARTED_PIDS=()
cleanup() {
	local p
	for p in "${STARTED_PIDS[@]}"; do
		if kill -0 "$p" 2>/dev/null; then kill -TERM "$p" 2>/dev/null || true; fi
	done
	sleep 0.5
	for p in "${STARTED_PIDS[@]}"; do
		if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
	done
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

log() { printf '%s\n' "$*" | tee -a "$SUMMARY" >&2; }
say() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }

# ---------------------------------------------------------------- build
CONFAB_OK=0
if [ "$DO_BUILD" = 1 ]; then
	log "building confab-bench (and confab) in release mode ..."
	(cd "$ROOT" && timeout 1800 cargo build --release -p confab-bench) >"$RESULTS/build-tools.log" 2>&1 ||
		{ log "cargo build -p confab-bench failed: see $RESULTS/build-tools.log"; exit 1; }
	if want confab; then
		(cd "$ROOT" && timeout 1800 cargo build --release -p confab) >"$RESULTS/build-confab.log" 2>&1 ||
			log "cargo build -p confab failed (see $RESULTS/build-confab.log); the Confab half will be skipped"
	fi
fi
if want confab; then
	if [ -x "$CONFAB_BIN" ] && "$CONFAB_BIN" --help 2>/dev/null | grep -q serve; then
		CONFAB_OK=1
	else
		log "Confab binary $CONFAB_BIN missing or has no 'serve' command yet: the Confab half is skipped"
	fi
fi
for b in udp-echo udp-load; do
	if [ "$DO_FLOOR" = 1 ] && ! [ -x "$TOOLS_DIR/$b" ]; then
		log "$TOOLS_DIR/$b missing (cargo build --release -p confab-bench): floor skipped"; DO_FLOOR=0
	fi
done

# ---------------------------------------------------------------- helpers
# free_udp_port: a UDP port on 127.0.0.1 nobody listens on (checked in /proc/net/udp).
free_udp_port() {
	local i p hex
	for i in $(seq 1 50); do
		p=$((20000 + (RANDOM % 30000)))
		hex=$(printf '%04X' "$p")
		if ! awk -v h=":$hex" 'NR>1 && substr($2, length($2)-4)==h {f=1} END{exit !f}' /proc/net/udp /proc/net/udp6 2>/dev/null; then
			echo "$p"; return 0
		fi
	done
	echo "no free UDP port found" >&2; return 1
}

# wait_udp_bound PORT PID SECS: until something is bound to PORT (or PID died / timeout).
wait_udp_bound() {
	local port=$1 pid=$2 secs=$3 hex i
	hex=$(printf '%04X' "$port")
	for i in $(seq 1 $((secs * 10))); do
		kill -0 "$pid" 2>/dev/null || return 1
		if awk -v h=":$hex" 'NR>1 && substr($2, length($2)-4)==h {f=1} END{exit !f}' /proc/net/udp; then return 0; fi
		sleep 0.1
	done
	return 1
}

# tree_pids and cpu_ticks: bench/lib-proc.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-proc.sh"

# server_ticks ROOT_PID: CPU ticks of the whole process tree.
server_ticks() { cpu_ticks $(tree_pids "$1"); }

# settle ROOT_PID IDLE_TICKS_PER_S: after the load, waits (1 s steps, at most 10 s) until
# the server uses no more than its idle rate + 1 tick per second; prints the final ticks.
settle() {
	local root=$1 idle=$2 prev now i
	prev=$(server_ticks "$root")
	for i in $(seq 1 10); do
		sleep 1
		now=$(server_ticks "$root")
		if [ $((now - prev)) -le $((idle + 1)) ]; then break; fi
		prev=$now
	done
	echo "$now"
}

# idle_rate ROOT_PID: ticks per second used while idle (over 2 s).
idle_rate() {
	local a b
	a=$(server_ticks "$1"); sleep 2; b=$(server_ticks "$1")
	echo $(((b - a + 1) / 2))
}

# core_busy N: "busy total" jiffies of core N from /proc/stat (steal counts as busy).
core_busy() {
	awk -v c="cpu$1" '$1==c { b=$2+$3+$4+$7+$8+$9; print b, b+$5+$6 }' /proc/stat
}
# busy_pct "B0 T0" "B1 T1": percentage of the interval the core was busy.
busy_pct() {
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t=y[2]-x[2]; printf "%.0f", (t > 0 ? 100 * (y[1]-x[1]) / t : 0) }'
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

calc() { awk "BEGIN { printf \"$1\", ($2) }"; }

# ---------------------------------------------------------------- users
# SIPp injection files: field0 user, field1 the whole [authentication] keyword,
# field2 the Contact's user part.
make_users_csv() { # FILE USERS
	awk -v n="$2" 'BEGIN { print "SEQUENTIAL"; for (i=1;i<=n;i++) printf "u%d;[authentication username=u%d password=pw%d];u%d\n", i, i, i, i }' >"$1"
}
make_mem_csv() { # FILE USERS CONTACTS: CONTACTS lines, user i gets contacts ui-c1, ui-c2, ...
	awk -v n="$2" -v c="$3" 'BEGIN { print "SEQUENTIAL"; for (k=0;k<c;k++) { i=(k%n)+1; j=int(k/n)+1; printf "u%d;[authentication username=u%d password=pw%d];u%d-c%d\n", i, i, i, i, j } }' >"$1"
}

# ha1_lines USERS: "i ha1" for each user, HA1 = MD5(ui:bench.confab:pwi).
ha1_lines() {
	local n=$1 i
	if command -v python3 >/dev/null && python3 -c 'import hashlib' 2>/dev/null; then
		python3 -c '
import hashlib, sys
for i in range(1, int(sys.argv[1]) + 1):
    print(i, hashlib.md5(f"u{i}:bench.confab:pw{i}".encode()).hexdigest())' "$n"
	else
		for i in $(seq 1 "$n"); do
			printf '%d %s\n' "$i" "$(printf 'u%d:bench.confab:pw%d' "$i" "$i" | md5sum | cut -c1-32)"
		done
	fi
}

# ---------------------------------------------------------------- SIPp
SIPP_SCENARIO="$HERE/sipp/register_auth.xml"
# run_sipp DIR SERVER_PORT RATE TOTAL CSV: runs SIPp pinned to the load core, writes
# DIR/{stat.csv,screen.log,sipp.out,sipp.times,*_rtt.csv}. Bounded by -timeout and timeout(1).
run_sipp() {
	local dir=$1 port=$2 rate=$3 total=$4 csv=$5 lport limit
	mkdir -p "$dir"
	lport=$(free_udp_port)
	limit=$((total / rate + 30))
	cp "$SIPP_SCENARIO" "$dir/register_auth.xml"
	core_busy "$SERVER_CORE" >"$dir/core-server.before"; core_busy "$LOAD_CORE" >"$dir/core-load.before"
	(
		cd "$dir"
		ulimit -n 65536 2>/dev/null || true
		timeout $((limit + 15)) "${PRIO[@]}" taskset -c "$LOAD_CORE" sipp "127.0.0.1:$port" \
			-sf register_auth.xml -inf "$csv" -i 127.0.0.1 -p "$lport" -t u1 \
			-r "$rate" -rp 1000 -m "$total" -l $((rate * 2 > 1000 ? rate * 2 : 1000)) \
			-auth_uri bench.confab -recv_timeout 4000 -timeout "${limit}s" -max_retrans 3 \
			-buff_size 4194304 -max_recv_loops 10000 -max_sched_loops 10000 \
			-nostdin -trace_stat -stf stat.csv -fd 1 -trace_screen -screen_file screen.log \
			-trace_rtt -rtt_freq 1000 >sipp.out 2>&1 || echo "sipp exit $?" >>sipp.out
		times >sipp.times
	)
	core_busy "$SERVER_CORE" >"$dir/core-server.after"; core_busy "$LOAD_CORE" >"$dir/core-load.after"
}

# sipp_field DIR COLUMN: value of a column of the last line of DIR/stat.csv.
sipp_field() {
	awk -F';' -v col="$2" 'NR==1 { for (i=1;i<=NF;i++) if ($i==col) c=i; next } { last=$c } END { print (c && last!="") ? last : 0 }' "$1/stat.csv" 2>/dev/null || echo 0
}
# sipp_elapsed DIR: seconds between the stats' StartTime and the last CurrentTime.
sipp_elapsed() {
	awk -F';' 'NR==1 { next } { split($1, s, "\t"); split($3, c, "\t"); st=s[3]; cu=c[3] } END { if (st!="") printf "%.3f", cu - st; else print 0 }' "$1/stat.csv" 2>/dev/null || echo 0
}
# sipp_cpu DIR: CPU seconds SIPp used (from `times` of its subshell: children's user + sys).
sipp_cpu() {
	awk 'NR==2 { t=0; for (i=1;i<=2;i++) { v=$i; m=v; sub(/m.*/, "", m); s=v; sub(/^[0-9]+m/, "", s); sub(/s$/, "", s); t+=m*60+s } printf "%.2f", t }' "$1/sipp.times" 2>/dev/null || echo 0
}
# sipp_rtt DIR: "p50 p99" of the whole registration (RTD 1) in ms, from the rtt file.
sipp_rtt() {
	local f
	f=$(ls "$1"/*_rtt.csv 2>/dev/null | head -1)
	if [ -z "$f" ]; then echo "- -"; return; fi
	awk -F';' 'NR>1 && $3==1 { print $2 }' "$f" | sort -g | awk '{ v[NR]=$1 } END { if (NR==0) { print "- -"; exit } i50=int(NR*0.50); if (i50<1) i50=1; i99=int(NR*0.99); if (i99<1) i99=1; printf "%s %s\n", (v[i50] < 1 ? "<1" : v[i50]), (v[i99] < 1 ? "<1" : v[i99]) }'
}

# measure NAME ROOT_PID PORT RATE TOTAL CSV DIR [IDLE]: one load run; writes DIR/result with
# key=value lines: offered, successful, failed, retrans, elapsed, server_cpu, sipp_cpu, p50, p99.
measure() {
	local name=$1 root=$2 port=$3 rate=$4 total=$5 csv=$6 dir=$7 idle=${8:-} t0 t1 ok fail retr el scpu pcpu rtt
	mkdir -p "$dir"
	[ -n "$idle" ] || idle=$(idle_rate "$root")
	t0=$(server_ticks "$root")
	run_sipp "$dir" "$port" "$rate" "$total" "$csv"
	t1=$(settle "$root" "$idle")
	ok=$(sipp_field "$dir" 'SuccessfulCall(C)')
	fail=$(sipp_field "$dir" 'FailedCall(C)')
	retr=$(sipp_field "$dir" 'Retransmissions(C)')
	el=$(sipp_elapsed "$dir")
	scpu=$(calc '%.3f' "($t1 - $t0) / $HZ")
	pcpu=$(sipp_cpu "$dir")
	rtt=$(sipp_rtt "$dir")
	{
		echo "name=$name"; echo "offered=$rate"; echo "total=$total"; echo "successful=$ok"; echo "failed=$fail"
		echo "retrans=$retr"; echo "elapsed=$el"; echo "server_cpu=$scpu"; echo "sipp_cpu=$pcpu"
		echo "idle_ticks_per_s=$idle"; echo "p50=${rtt% *}"; echo "p99=${rtt#* }"
		echo "server_core_busy=$(busy_pct "$(cat "$dir/core-server.before")" "$(cat "$dir/core-server.after")")"
		echo "load_core_busy=$(busy_pct "$(cat "$dir/core-load.before")" "$(cat "$dir/core-load.after")")"
	} >"$dir/result"
}
get() { awk -F= -v k="$2" '$1==k { print $2 }' "$1/result"; }

# ramp NAME ROOT_PID PORT CSV DIR: steps through RAMP; records the highest step with no
# failure whose achieved rate is within 5 % of the offer, and which core was full.
# The machine is shared: a core can be full of someone else's work, so both the
# process's own share and the whole core's busy share are reported.
ramp() {
	local name=$1 root=$2 port=$3 csv=$4 dir=$5 r best=0 limit="" ok fail el ach scpu pcpu spct ppct sbusy lbusy retr line idle
	: >"$dir/ramp.txt"
	idle=$(idle_rate "$root")
	for r in $RAMP; do
		measure "$name" "$root" "$port" "$r" $((r * RAMP_SECS)) "$csv" "$dir/ramp-$r" "$idle"
		ok=$(get "$dir/ramp-$r" successful); fail=$(get "$dir/ramp-$r" failed); retr=$(get "$dir/ramp-$r" retrans)
		el=$(get "$dir/ramp-$r" elapsed); scpu=$(get "$dir/ramp-$r" server_cpu); pcpu=$(get "$dir/ramp-$r" sipp_cpu)
		sbusy=$(get "$dir/ramp-$r" server_core_busy); lbusy=$(get "$dir/ramp-$r" load_core_busy)
		ach=$(calc '%.0f' "$el > 0 ? $ok / $el : 0")
		spct=$(calc '%.0f' "$el > 0 ? 100 * $scpu / $el : 0")
		ppct=$(calc '%.0f' "$el > 0 ? 100 * $pcpu / $el : 0")
		line=$(printf '  %-8s %6d/s: ok %7d failed %5d retrans %6d achieved %6d/s | server %3d%% (core %3d%%) | SIPp %3d%% (core %3d%%)' \
			"$name" "$r" "$ok" "$fail" "$retr" "$ach" "$spct" "$sbusy" "$ppct" "$lbusy")
		echo "$line" >>"$dir/ramp.txt"; log "$line"
		if [ "$fail" -eq 0 ] && [ "$ach" -ge $((r * 95 / 100)) ]; then
			best=$r
		else
			break
		fi
	done
	if [ "$sbusy" -ge 90 ] && [ "$lbusy" -ge 90 ]; then limit="both cores full: server ${spct}% of its core (core ${sbusy}% busy), SIPp ${ppct}% (core ${lbusy}%)"
	elif [ "$sbusy" -ge 90 ]; then limit="the server's core was full: server ${spct}% of it (core ${sbusy}% busy); SIPp ${ppct}%"
	elif [ "$lbusy" -ge 90 ]; then limit="SIPp's core was full: SIPp ${ppct}% of it (core ${lbusy}% busy); server ${spct}%"
	elif [ "$best" = "${RAMP##* }" ]; then limit="ramp ended before either core was full (server ${spct}%, SIPp ${ppct}%)"
	else limit="neither core full (server ${spct}%/core ${sbusy}%, SIPp ${ppct}%/core ${lbusy}%): losses or SIPp pacing, not CPU"
	fi
	if [ "$spct" -lt $((sbusy - 15)) ] || [ "$ppct" -lt $((lbusy - 15)) ]; then
		limit="$limit; other processes used these cores too (shared machine)"
	fi
	echo "best=$best" >"$dir/ramp.result"; echo "limit=$limit" >>"$dir/ramp.result"
}

stop_pid() { # PID: TERM, wait up to 5 s, then KILL
	local p=$1 i
	kill -TERM "$p" 2>/dev/null || return 0
	for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}

USERS_CSV="$RESULTS/users.csv"
make_users_csv "$USERS_CSV" "$USERS"
TOTAL=$((RATE * DURATION))
# Memory runs: a warm-up registers one contact for each of MEM_USERS users, then
# MEM_CONTACTS new contacts (ui-c1, ui-c2, ...) spread over the same users.
PER=$(((MEM_CONTACTS + MEM_USERS - 1) / MEM_USERS))
if [ "$DO_MEM" = 1 ]; then
	make_users_csv "$RESULTS/mem-warm.csv" "$MEM_USERS"
	make_mem_csv "$RESULTS/mem-contacts.csv" "$MEM_USERS" "$MEM_CONTACTS"
fi
log "results: $RESULTS"
log "load: $RATE REGISTER/s for $DURATION s ($TOTAL registrations over $USERS users), server on core $SERVER_CORE, SIPp on core $LOAD_CORE"

# ================================================================= Kamailio
KAM_DONE=0
KMEM_LINE=""
# kam_shm_used DIR: bytes of Kamailio shared memory in use (real_used, with allocator overhead).
kam_shm_used() {
	timeout 10 kamcmd -s "unix:$1/ctl.sock" core.shmmem 2>/dev/null | awk '$1=="real_used:" { print $2 }'
}
# kam_start DIR USERS: writes DIR/db (db_text version + subscriber with USERS users, HA1
# only), starts Kamailio pinned; sets KPID and KPORT.
kam_start() {
	local dir=$1 n=$2
	mkdir -p "$dir/db"
	{
		echo 'id(int,auto) table_name(string) table_version(int) '
		echo '1:subscriber:7'
		echo '2:location:9'
	} >"$dir/db/version"
	{
		echo 'id(int,auto) username(string) domain(string) password(string,null) ha1(string) ha1b(string,null) '
		ha1_lines "$n" | awk '{ printf "%d:u%d:bench.confab::%s:\n", $1, $1, $2 }'
	} >"$dir/db/subscriber"
	KPORT=$(free_udp_port)
	log "Kamailio: starting on 127.0.0.1:$KPORT with $n users (2 children, auth_db + db_text, usrloc in memory)"
	"${PRIO[@]}" taskset -c "$SERVER_CORE" "$KAMAILIO" -f "$HERE/kamailio/kamailio.cfg" -DD -E -w "$dir" -m 1024 -M 16 -b 4194304 \
		-A "BENCH_LISTEN=udp:127.0.0.1:$KPORT" -A "BENCH_DBURL=\"text://$dir/db\"" \
		-A "BENCH_CTL=\"unix:$dir/ctl.sock\"" >"$dir/kamailio.log" 2>&1 &
	KPID=$!
	STARTED_PIDS+=("$KPID")
	if ! wait_udp_bound "$KPORT" "$KPID" 10; then
		log "Kamailio did not start: see $dir/kamailio.log"; tail -5 "$dir/kamailio.log" >&2; exit 1
	fi
	sleep 1
}
if want kamailio; then
	KDIR="$RESULTS/kamailio"
	kam_start "$KDIR" "$USERS"
	log "Kamailio: fixed load ..."
	measure kamailio "$KPID" "$KPORT" "$RATE" "$TOTAL" "$USERS_CSV" "$KDIR/fixed"
	if [ "$DO_RAMP" = 1 ]; then
		log "Kamailio: ramp ($RAMP_SECS s steps) ..."
		ramp kamailio "$KPID" "$KPORT" "$USERS_CSV" "$KDIR"
	fi
	stop_pid "$KPID"
	KAM_DONE=1
	if [ "$DO_MEM" = 1 ] && command -v kamcmd >/dev/null; then
		# The same contacts as Confab's memory run; Kamailio keeps them in shared memory.
		KMDIR="$RESULTS/kamailio-mem"
		kam_start "$KMDIR" "$MEM_USERS"
		log "Kamailio memory: warm-up, then $MEM_CONTACTS new contacts ..."
		run_sipp "$KMDIR/warm" "$KPORT" "$MEM_RATE" "$MEM_USERS" "$RESULTS/mem-warm.csv"
		sleep 2
		K0=$(kam_shm_used "$KMDIR")
		measure kamailio-mem "$KPID" "$KPORT" "$MEM_RATE" "$MEM_CONTACTS" "$RESULTS/mem-contacts.csv" "$KMDIR/load"
		K1=$(kam_shm_used "$KMDIR")
		KMOK=$(get "$KMDIR/load" successful); KMFAIL=$(get "$KMDIR/load" failed)
		if [ -n "$K0" ] && [ -n "$K1" ]; then
			KMEM_LINE=$(printf 'Kamailio memory: %d contacts, %d registered, %d failed: shared memory in use %d -> %d KiB = %d bytes/contact (usrloc in shm; pkg memory not counted)' \
				"$MEM_CONTACTS" "$KMOK" "$KMFAIL" $((K0 / 1024)) $((K1 / 1024)) $(((K1 - K0) / MEM_CONTACTS)))
		fi
		stop_pid "$KPID"
	fi
fi

# ================================================================= Confab
CONFAB_DONE=0
MEM_LINE=""
confab_config() { # DIR PORT MAX_CONTACTS
	cat >"$1/confab.toml" <<EOF
# Written by bench/register.sh
[server]
data_dir = "$1/data"
domain = "bench.confab"

[sip]
udp = ["127.0.0.1:$2"]
tcp = []
tls = []
ws = []
wss = []
advertised_address = "127.0.0.1"

[registrar]
min_expires = 60
max_expires = 7200
default_expires = 3600
max_contacts_per_aor = $3

[auth]
# The benchmark is one source sending many registrations: never ban it.
max_failures = 1000000000
ban_secs = 0
# MD5 only, like Kamailio here and like SIPp understands: one challenge per 401.
algorithms = ["MD5"]

[log]
level = "warn"
EOF
}
# confab_users DIR USERS: creates users u1..uN with passwords pw1..pwN in the data directory
# of DIR/confab.toml (its [server] domain is the realm the HA1s are computed for).
confab_users() {
	local dir=$1 n=$2 i start
	local cfg="$dir/confab.toml"
	mkdir -p "$dir/data"
	start=$(date +%s)
	if "$CONFAB_BIN" user --help 2>&1 | grep -qw import; then
		awk -v n="$n" 'BEGIN { print "username,password"; for (i=1;i<=n;i++) printf "u%d,pw%d\n", i, i }' >"$dir/users-import.csv"
		timeout 600 "$CONFAB_BIN" --config "$cfg" user import "$dir/users-import.csv" >"$dir/user-import.log" 2>&1 ||
			{ log "confab user import failed: see $dir/user-import.log"; return 1; }
		log "Confab: imported $n users in $(($(date +%s) - start)) s (confab user import)"
	else
		for i in $(seq 1 "$n"); do
			if [ $(($(date +%s) - start)) -gt 600 ]; then log "Confab: user creation took over 600 s; stopped at $i"; return 1; fi
			"$CONFAB_BIN" --config "$cfg" user add "u$i" --password "pw$i" >>"$dir/user-add.log" 2>&1 ||
				{ log "confab user add u$i failed: see $dir/user-add.log"; return 1; }
		done
		log "Confab: added $n users in $(($(date +%s) - start)) s (confab user add, one process each)"
	fi
}
confab_start() { # DIR PORT: starts confab pinned; sets CPID
	"${PRIO[@]}" taskset -c "$SERVER_CORE" "$CONFAB_BIN" serve --config "$1/confab.toml" >"$1/confab.log" 2>&1 &
	CPID=$!
	STARTED_PIDS+=("$CPID")
	if ! wait_udp_bound "$2" "$CPID" 15; then
		log "Confab did not start: see $1/confab.log"; tail -5 "$1/confab.log" >&2; return 1
	fi
	sleep 1
}

# Users are created once, in a template data directory each instance gets a copy of.
CONFAB_USERS_OK=0
if want confab && [ "$CONFAB_OK" = 1 ]; then
	UDIR="$RESULTS/confab-users"
	mkdir -p "$UDIR"
	NU=$USERS
	if [ "$DO_MEM" = 1 ] && [ "$MEM_USERS" -gt "$NU" ]; then NU=$MEM_USERS; fi
	confab_config "$UDIR" 0 10
	if confab_users "$UDIR" "$NU"; then CONFAB_USERS_OK=1; fi
fi
confab_data() { # DIR: a copy of the template data directory for DIR/confab.toml
	rm -rf "$1/data"
	cp -a "$RESULTS/confab-users/data" "$1/data"
}

if want confab && [ "$CONFAB_OK" = 1 ] && [ "$CONFAB_USERS_OK" = 1 ]; then
	CDIR="$RESULTS/confab"
	mkdir -p "$CDIR"
	CPORT=$(free_udp_port)
	confab_config "$CDIR" "$CPORT" 10
	confab_data "$CDIR"
	if confab_start "$CDIR" "$CPORT"; then
		log "Confab: started on 127.0.0.1:$CPORT, fixed load ..."
		measure confab "$CPID" "$CPORT" "$RATE" "$TOTAL" "$USERS_CSV" "$CDIR/fixed"
		if [ "$DO_RAMP" = 1 ]; then
			log "Confab: ramp ($RAMP_SECS s steps) ..."
			ramp confab "$CPID" "$CPORT" "$USERS_CSV" "$CDIR"
		fi
		stop_pid "$CPID"
		CONFAB_DONE=1
	fi

	if [ "$DO_MEM" = 1 ]; then
		MDIR="$RESULTS/confab-mem"
		mkdir -p "$MDIR"
		MPORT=$(free_udp_port)
		confab_config "$MDIR" "$MPORT" $((PER + 10))
		confab_data "$MDIR"
		if confab_start "$MDIR" "$MPORT"; then
			log "Confab memory: warm-up (one contact for each of $MEM_USERS users), then $MEM_CONTACTS new contacts ..."
			run_sipp "$MDIR/warm" "$MPORT" "$MEM_RATE" "$MEM_USERS" "$RESULTS/mem-warm.csv"
			sleep 2
			R0=$(rss_kib "$CPID"); H0=$(hwm_kib "$CPID")
			measure confab-mem "$CPID" "$MPORT" "$MEM_RATE" "$MEM_CONTACTS" "$RESULTS/mem-contacts.csv" "$MDIR/load"
			sleep 1
			R1=$(rss_kib "$CPID"); H1=$(hwm_kib "$CPID")
			# Transactions (Timer J = 64*T1 = 32 s for non-INVITE over UDP) and other short-lived
			# state are still held right after the load; sample until MEM_WAIT s after it.
			: >"$MDIR/rss-timeline.txt"
			for i in $(seq 5 5 "$MEM_WAIT"); do
				sleep 5
				echo "+${i}s VmRSS $(rss_kib "$CPID") KiB" >>"$MDIR/rss-timeline.txt"
			done
			R2=$(rss_kib "$CPID"); H2=$(hwm_kib "$CPID")
			# Diagnostic: half as many registrations again, refreshing the same contacts (no new
			# contact): growth here is per-registration state, not per-contact state.
			measure confab-mem-refresh "$CPID" "$MPORT" "$MEM_RATE" $((MEM_CONTACTS / 2)) "$RESULTS/mem-contacts.csv" "$MDIR/refresh"
			sleep 1
			R3=$(rss_kib "$CPID")
			MOK=$(get "$MDIR/load" successful); MFAIL=$(get "$MDIR/load" failed)
			ROK=$(get "$MDIR/refresh" successful)
			{
				echo "rss_before_kib=$R0"; echo "hwm_before_kib=$H0"; echo "rss_after_kib=$R1"; echo "hwm_after_kib=$H1"
				echo "rss_after_${MEM_WAIT}s_kib=$R2"; echo "hwm_after_${MEM_WAIT}s_kib=$H2"
				echo "rss_after_refresh_kib=$R3"; echo "refresh_successful=$ROK"
				echo "contacts=$MEM_CONTACTS"; echo "successful=$MOK"; echo "failed=$MFAIL"
			} >"$MDIR/mem.result"
			PERR=$(calc '%.0f' "$ROK > 0 ? ($R3 - $R2) * 1024 / $ROK : 0")
			PERC=$(calc '%.0f' "($R1 - $R0) * 1024 / $MEM_CONTACTS")
			PERL=$(calc '%.0f' "($R2 - $R0) * 1024 / $MEM_CONTACTS")
			PERH=$(calc '%.0f' "($H2 - $H0) * 1024 / $MEM_CONTACTS")
			MEM_LINE=$(printf 'Confab memory: %d contacts (%d users x %d), %d registered, %d failed:\n  VmRSS %d KiB before, %d KiB right after = %d bytes/contact, %d KiB %d s later = %d bytes/contact (target < 1024)\n  VmHWM %d -> %d KiB = %d bytes/contact\n  then %d refreshes of the same contacts (no new contact): VmRSS %d -> %d KiB = %d bytes per registration' \
				"$MEM_CONTACTS" "$MEM_USERS" "$PER" "$MOK" "$MFAIL" "$R0" "$R1" "$PERC" "$R2" "$MEM_WAIT" "$PERL" "$H0" "$H2" "$PERH" "$ROK" "$R2" "$R3" "$PERR")
			stop_pid "$CPID"
		fi
	fi
fi

# ================================================================= floor
FLOOR_PLAIN=""; FLOOR_MMSG=""
if [ "$DO_FLOOR" = 1 ]; then
	FDIR="$RESULTS/floor"
	mkdir -p "$FDIR"
	for mode in plain mmsg; do
		FPORT=$(free_udp_port)
		"${PRIO[@]}" taskset -c "$SERVER_CORE" "$TOOLS_DIR/udp-echo" --bind "127.0.0.1:$FPORT" --mode "$mode" --idle-secs 2 --max-secs $((FLOOR_SECS + 30)) >"$FDIR/echo-$mode.out" 2>&1 &
		EPID=$!
		STARTED_PIDS+=("$EPID")
		wait_udp_bound "$FPORT" "$EPID" 5 || { log "udp-echo did not start"; continue; }
		"${PRIO[@]}" taskset -c "$LOAD_CORE" "$TOOLS_DIR/udp-load" --target "127.0.0.1:$FPORT" --rate "$FLOOR_RATE" --secs "$FLOOR_SECS" --size 450 >"$FDIR/load-$mode.out" 2>&1 || true
		wait "$EPID" 2>/dev/null || true
		v=$(sed -n 's/.*us_per_datagram=\([0-9.]*\).*/\1/p' "$FDIR/echo-$mode.out")
		if [ "$mode" = plain ]; then FLOOR_PLAIN=$v; else FLOOR_MMSG=$v; fi
	done
fi

# ================================================================= report
say ""
say "==== Authenticated REGISTER (401 + REGISTER + 200), $RATE/s offered for $DURATION s, $USERS users ===="
row() { # LABEL KEY [FORMAT]
	local label=$1 key=$2 k="-" c="-"
	[ "$KAM_DONE" = 1 ] && k=$(get "$RESULTS/kamailio/fixed" "$key")
	[ "$CONFAB_DONE" = 1 ] && c=$(get "$RESULTS/confab/fixed" "$key")
	printf '%-34s %12s %12s\n' "$label" "$k" "$c" | tee -a "$SUMMARY"
}
derived() { # LABEL EXPR-over-(ok,cpu,...) FORMAT
	local label=$1 expr=$2 fmt=$3 k="-" c="-" d
	for d in kamailio confab; do
		local done_var=0 v="-"
		[ "$d" = kamailio ] && done_var=$KAM_DONE
		[ "$d" = confab ] && done_var=$CONFAB_DONE
		if [ "$done_var" = 1 ]; then
			local f="$RESULTS/$d/fixed"
			v=$(awk -v ok="$(get "$f" successful)" -v fail="$(get "$f" failed)" -v cpu="$(get "$f" server_cpu)" \
				-v scpu="$(get "$f" sipp_cpu)" -v el="$(get "$f" elapsed)" \
				"BEGIN { printf \"$fmt\", ($expr) }")
		fi
		[ "$d" = kamailio ] && k=$v || c=$v
	done
	printf '%-34s %12s %12s\n' "$label" "$k" "$c" | tee -a "$SUMMARY"
}
printf '%-34s %12s %12s\n' "" "Kamailio" "Confab" | tee -a "$SUMMARY"
row "offered REGISTER/s" offered
row "successful" successful
row "failed" failed
derived "failed share" 'ok + fail > 0 ? 100 * fail / (ok + fail) : 0' '%.3f %%'
row "SIPp retransmissions" retrans
row "server CPU s" server_cpu
derived "µs CPU / REGISTER" 'ok > 0 ? cpu * 1e6 / ok : 0' '%.1f'
derived "capacity / core (REG/s)" 'cpu > 0 ? ok / cpu : 0' '%.0f'
row "SIPp CPU s" sipp_cpu
derived "SIPp µs / REGISTER" 'ok > 0 ? scpu * 1e6 / ok : 0' '%.1f'
row "server core busy % (all procs)" server_core_busy
row "SIPp core busy % (all procs)" load_core_busy
row "p50 registration ms (1 ms res.)" p50
row "p99 registration ms (1 ms res.)" p99

US_K=""; US_C=""
if [ "$KAM_DONE" = 1 ]; then
	US_K=$(awk -v ok="$(get "$RESULTS/kamailio/fixed" successful)" -v cpu="$(get "$RESULTS/kamailio/fixed" server_cpu)" 'BEGIN { if (ok > 0) printf "%.3f", cpu * 1e6 / ok }')
fi
if [ "$CONFAB_DONE" = 1 ]; then
	US_C=$(awk -v ok="$(get "$RESULTS/confab/fixed" successful)" -v cpu="$(get "$RESULTS/confab/fixed" server_cpu)" 'BEGIN { if (ok > 0) printf "%.3f", cpu * 1e6 / ok }')
fi
say ""
if [ -n "$US_K" ] && [ -n "$US_C" ]; then
	say "$(calc 'Confab capacity per core = %.1f× Kamailio'"'"'s (target ≥ 3×)' "$US_K / $US_C")"
else
	say "Confab capacity per core = n/a (Kamailio measured: $([ -n "$US_K" ] && echo yes || echo no), Confab measured: $([ -n "$US_C" ] && echo yes || echo no)) (target ≥ 3×)"
fi

if [ "$DO_RAMP" = 1 ]; then
	say ""
	say "Ramp ($RAMP_SECS s steps; a step passes with no failure and ≥ 95 % of the offer achieved):"
	for d in kamailio confab; do
		if [ -f "$RESULTS/$d/ramp.result" ]; then
			say "$(printf '  %-8s highest rate with no failures: %s REGISTER/s; %s' "$d" \
				"$(awk -F= '$1=="best" {print $2}' "$RESULTS/$d/ramp.result")" \
				"$(awk -F= '$1=="limit" {sub(/^limit=/, ""); print}' "$RESULTS/$d/ramp.result")")"
		fi
	done
fi

if [ "$DO_FLOOR" = 1 ] && [ -n "$FLOOR_PLAIN" ]; then
	say ""
	say "Floor: bare UDP echo on core $SERVER_CORE, $FLOOR_RATE datagrams/s of 450 bytes: $FLOOR_PLAIN µs per datagram in+out (recv_from/send_to), ${FLOOR_MMSG:--} µs (recvmmsg/sendmmsg, 32)"
	for pair in "Kamailio:$US_K" "Confab:$US_C"; do
		n=${pair%%:*}; u=${pair#*:}
		[ -n "$u" ] || continue
		rp=$(calc '%.1f' "$u / (2 * $FLOOR_PLAIN)")
		rm_=$(awk -v u="$u" -v f="${FLOOR_MMSG:-0}" 'BEGIN { if (f > 0) printf "%.1f", u / (2 * f); else printf "-" }')
		say "$(printf '  %-8s %.1f µs per REGISTER = %s× the floor of 2 datagram pairs (%s× the mmsg floor)' "$n" "$u" "$rp" "$rm_")"
	done
fi

if [ -n "$MEM_LINE$KMEM_LINE" ]; then say ""; fi
if [ -n "$MEM_LINE" ]; then say "$MEM_LINE"; fi
if [ -n "$KMEM_LINE" ]; then say "$KMEM_LINE"; fi
if want confab && [ "$CONFAB_OK" != 1 ]; then
	say ""
	say "Confab was not measured: no working $CONFAB_BIN with a 'serve' command (build: cargo build --release -p confab)."
elif want confab && [ "$CONFAB_DONE" != 1 ]; then
	say ""
	say "Confab was not measured: it did not start or its users could not be created (logs under $RESULTS/confab*)."
fi
say ""
say "raw outputs: $RESULTS"

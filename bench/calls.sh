#!/usr/bin/env bash
# Authenticated call benchmark: Confab (B2BUA anchoring media) vs Kamailio (authenticating
# stateful proxy, no media) under the same SIPp load.
#
#   bench/calls.sh [options]        (bench/calls.sh --help for the list)
#
# One call: INVITE (SDP offer) -> 407 -> ACK -> INVITE with Proxy-Authorization -> 180 ->
# 200 (SDP answer) -> ACK -> hold (1 s) -> BYE -> 200. The caller is SIPp with
# bench/sipp/call_auth.xml; the callee is a second SIPp (bench/sipp/uas_answer.xml) that
# first registers (bench/sipp/uas_register.xml) so the server routes the calls to it.
# Method (docs: bench/README.md, shared design TESTING.md "Benchmarks, not timed tests"):
# each server pinned to core 1, both SIPps to core 0, everything on 127.0.0.1. At a fixed
# offered rate that both sustain, the server's CPU time (utime+stime of all its processes
# and threads from /proc, until its timers have fired after the load) divided by the
# successful calls gives µs per call and capacity per core = 1e6 / µs. Then a short ramp
# per server finds the highest rate with no failed call, and a bare UDP echo measures the
# machine's floor. No RTP is sent: this measures signalling (with Confab allocating relay
# ports for every call, since each INVITE carries an SDP offer).
# Prints figures; never fails a build on them (exit status is about the run itself).

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

# ---------------------------------------------------------------- options
RATE=300           # offered calls/s in the fixed-load run
DURATION=20        # seconds of calls started in the fixed-load run
HOLD_MS=1000       # pause between the ACK and the BYE
CALLERS=200        # caller users u1..uN (cycled through)
CALLEES=1          # callee users callee1..calleeN, all registered by the one callee SIPp
TAIL=35            # seconds the server's CPU is still counted after the load (32 s timers)
RAMP="500 1000 1500 2000 2500 3000 3500 4000"
RAMP_SECS=4
FLOOR_RATE=50000
FLOOR_SECS=4
ONLY=both
DO_RAMP=1
DO_FLOOR=1
DO_BUILD=1
CONFAB_BIN="$ROOT/target/release/confab"
TOOLS_DIR="$ROOT/target/release"
SERVER_CORE=1
LOAD_CORE=0
RELAY_MIN=40000    # Confab's relay port range in these runs
RELAY_MAX=59999
RESULTS_BASE="$HERE/results"

usage() {
	cat <<EOF
usage: bench/calls.sh [options]
  --rate N            offered calls/s in the fixed-load run           (default $RATE)
  --duration S        seconds of calls started in the fixed-load run  (default $DURATION)
  --hold-ms MS        pause between ACK and BYE                       (default $HOLD_MS)
  --callers N         caller users u1..uN                             (default $CALLERS)
  --callees N         callee users (see README: >1 breaks digest uri) (default $CALLEES)
  --tail S            seconds of server CPU counted after the load    (default $TAIL)
  --ramp "R1 R2 ..."  ramp steps in calls/s                           (default "$RAMP")
  --ramp-secs S       seconds of calls started per ramp step          (default $RAMP_SECS)
  --no-ramp           skip the ramp
  --floor-rate N      datagrams/s for the UDP echo floor              (default $FLOOR_RATE)
  --no-floor          skip the floor
  --only WHICH        kamailio | confab | both                        (default $ONLY)
  --confab PATH       confab binary                    (default target/release/confab)
  --no-build          do not run cargo build first
  --results DIR       where raw outputs go     (default bench/results/calls-<timestamp>)
EOF
}

RESULTS=""
while [ $# -gt 0 ]; do
	case "$1" in
	--rate) RATE="$2"; shift 2 ;;
	--duration) DURATION="$2"; shift 2 ;;
	--hold-ms) HOLD_MS="$2"; shift 2 ;;
	--callers) CALLERS="$2"; shift 2 ;;
	--callees) CALLEES="$2"; shift 2 ;;
	--tail) TAIL="$2"; shift 2 ;;
	--ramp) RAMP="$2"; shift 2 ;;
	--ramp-secs) RAMP_SECS="$2"; shift 2 ;;
	--no-ramp) DO_RAMP=0; shift ;;
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
for v in RATE DURATION CALLERS CALLEES RAMP_SECS FLOOR_RATE; do
	if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then echo "--${v,,} must be a positive integer" >&2; exit 2; fi
done
for v in HOLD_MS TAIL; do
	if ! [[ "${!v}" =~ ^[0-9]+$ ]]; then echo "--${v,,} must be a non-negative integer" >&2; exit 2; fi
done
case "$ONLY" in kamailio | confab | both) ;; *) echo "--only: kamailio, confab or both" >&2; exit 2 ;; esac
[ "$DURATION" -le 300 ] || { echo "--duration at most 300 s" >&2; exit 2; }
[ "$RAMP_SECS" -le 60 ] || { echo "--ramp-secs at most 60 s" >&2; exit 2; }
[ "$HOLD_MS" -le 60000 ] || { echo "--hold-ms at most 60000" >&2; exit 2; }
[ "$TAIL" -le 120 ] || { echo "--tail at most 120 s" >&2; exit 2; }
[ "$CALLERS" -le 100000 ] && [ "$CALLEES" -le 1000 ] || { echo "--callers at most 100000, --callees at most 1000" >&2; exit 2; }
set -- $RAMP
[ $# -le 12 ] || { echo "--ramp: at most 12 steps" >&2; exit 2; }
for r in $RAMP; do [[ "$r" =~ ^[1-9][0-9]*$ ]] && [ "$r" -le 20000 ] || { echo "--ramp: positive integers up to 20000" >&2; exit 2; }; done
[ "$RATE" -le 20000 ] || { echo "--rate at most 20000" >&2; exit 2; }

want() { [ "$ONLY" = both ] || [ "$ONLY" = "$1" ]; }

# ---------------------------------------------------------------- tools
missing=()
for t in sipp taskset awk md5sum getconf timeout; do command -v "$t" >/dev/null || missing+=("$t"); done
if want kamailio && ! command -v kamailio >/dev/null && ! [ -x /usr/sbin/kamailio ]; then missing+=(kamailio); fi
if [ ${#missing[@]} -gt 0 ]; then
	echo "missing tools: ${missing[*]}" >&2
	echo "install them with:  apt-get install -y sip-tester kamailio util-linux coreutils gawk" >&2
	exit 2
fi
KAMAILIO="$(command -v kamailio || echo /usr/sbin/kamailio)"
KAM_MODULES=/usr/lib/x86_64-linux-gnu/kamailio/modules
if want kamailio; then
	for m in kex corex tm sl rr pv maxfwd textops siputils db_text usrloc registrar auth auth_db; do
		[ -f "$KAM_MODULES/$m.so" ] || { echo "Kamailio module $m.so missing in $KAM_MODULES (apt-get install -y kamailio)" >&2; exit 2; }
	done
fi
if [ "$(nproc)" -lt 2 ]; then echo "needs 2 cores (server on core $SERVER_CORE, SIPp on core $LOAD_CORE)" >&2; exit 2; fi
HZ="$(getconf CLK_TCK)"
# Raised priority where allowed (root), as bench/register.sh does: other work on a shared
# machine disturbs the runs less. CPU time per call, the main figure, does not depend on it.
PRIO=()
if nice -n -15 true 2>/dev/null; then PRIO=(nice -n -15); fi
# SIPp refuses to start if its socket limit exceeds the open-file limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
MAX_SOCKET=$(($(ulimit -n) > 2000 ? 1000 : $(ulimit -n) / 2))

# ---------------------------------------------------------------- results, cleanup
RESULTS="${RESULTS:-$RESULTS_BASE/calls-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RESULTS"
RESULTS="$(cd "$RESULTS" && pwd)"
SUMMARY="$RESULTS/summary.txt"
: >"$SUMMARY"

STARTED_PIDS=()
# shellcheck source=bench/lib-calls.sh
. "$HERE/lib-calls.sh"
trap cleanup_started EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# ---------------------------------------------------------------- build
CONFAB_OK=0
if [ "$DO_BUILD" = 1 ]; then
	if [ "$DO_FLOOR" = 1 ]; then
		log "building confab-bench in release mode ..."
		(cd "$ROOT" && timeout 1800 cargo build --release -p confab-bench) >"$RESULTS/build-tools.log" 2>&1 ||
			log "cargo build -p confab-bench failed (see $RESULTS/build-tools.log)"
	fi
	if want confab; then
		log "building confab in release mode ..."
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

# ---------------------------------------------------------------- users, SIPp
# Injection files. Callers: field0 user, field1 the whole [authentication] keyword (SIPp does
# not expand [fieldN] inside it), field2 the callee. Callees: field0, field1 alike.
CALLS_CSV="$RESULTS/calls.csv"
CALLEES_CSV="$RESULTS/callees.csv"
awk -v n="$CALLERS" -v m="$CALLEES" 'BEGIN { print "SEQUENTIAL"; for (i=1;i<=n;i++) printf "u%d;[authentication username=u%d password=pw%d];callee%d\n", i, i, i, ((i-1)%m)+1 }' >"$CALLS_CSV"
awk -v m="$CALLEES" 'BEGIN { print "SEQUENTIAL"; for (i=1;i<=m;i++) printf "callee%d;[authentication username=callee%d password=pwc%d]\n", i, i, i }' >"$CALLEES_CSV"
# SIPp computes one digest uri for the whole run (-auth_uri); it is the INVITE's
# Request-URI only when every call goes to callee1.
AUTH_URI="callee1@bench.confab"
if [ "$CALLEES" -gt 1 ]; then log "note: with --callees $CALLEES the digest uri (sip:$AUTH_URI) differs from most Request-URIs"; fi
SIPP_COMMON=(-i 127.0.0.1 -t u1 -nostdin -max_socket "$MAX_SOCKET" -buff_size 4194304
	-max_recv_loops 10000 -max_sched_loops 10000 -trace_err -max_log_size 20000000)

# register_callees NAME SERVER_PORT UAS_PORT DIR: registers the callees from UAS_PORT.
register_callees() {
	local name=$1 port=$2 uport=$3 dir=$4 ok
	mkdir -p "$dir"
	(
		cd "$dir"
		timeout 60 taskset -c "$LOAD_CORE" sipp "127.0.0.1:$port" -sf "$HERE/sipp/uas_register.xml" \
			-inf "$CALLEES_CSV" "${SIPP_COMMON[@]}" -p "$uport" -r 100 -m "$CALLEES" \
			-auth_uri bench.confab -recv_timeout 5000 -timeout 30s \
			-trace_stat -stf stat.csv -fd 1 >sipp.out 2>&1 || echo "sipp exit $?" >>sipp.out
	)
	ok=$(sipp_field "$dir/stat.csv" 'SuccessfulCall(C)')
	if [ "$ok" != "$CALLEES" ]; then
		log "$name: only $ok of $CALLEES callee registrations succeeded (see $dir)"; return 1
	fi
}

# start_uas DIR UAS_PORT MEDIA_PORT SECS: the callee SIPp, in the background; sets UASPID.
start_uas() {
	local dir=$1 uport=$2 mport=$3 secs=$4
	mkdir -p "$dir"
	(
		cd "$dir"
		exec timeout $((secs + 10)) "${PRIO[@]}" taskset -c "$LOAD_CORE" sipp -sf "$HERE/sipp/uas_answer.xml" \
			"${SIPP_COMMON[@]}" -p "$uport" -mp "$mport" -s callee -timeout "${secs}s" \
			-trace_stat -stf stat.csv -fd 1 >sipp.out 2>&1
	) &
	UASPID=$!
	STARTED_PIDS+=("$UASPID")
	if ! wait_udp_bound "$uport" "$UASPID" 10; then log "callee SIPp did not start: see $dir/sipp.out"; return 1; fi
}
# uas_ticks: CPU ticks of the callee SIPp (the timeout wrapper and sipp under it).
uas_ticks() { tree_ticks "$UASPID"; }

# run_uac DIR SERVER_PORT RATE TOTAL: the caller SIPp, pinned to the load core; writes
# DIR/{stat.csv,screen.log,sipp.out,sipp.times,*_rtt.csv}. Bounded by -timeout and timeout(1).
run_uac() {
	local dir=$1 port=$2 rate=$3 total=$4 lport mport limit conc
	mkdir -p "$dir"
	lport=$(free_udp_port 1)
	mport=$(free_udp_port 4)
	limit=$((total / rate + HOLD_MS / 1000 + 30))
	conc=$((rate * (HOLD_MS / 1000 + 4)))
	[ "$conc" -ge 1000 ] || conc=1000
	(
		cd "$dir"
		timeout $((limit + 15)) "${PRIO[@]}" taskset -c "$LOAD_CORE" sipp "127.0.0.1:$port" \
			-sf "$HERE/sipp/call_auth.xml" -inf "$CALLS_CSV" "${SIPP_COMMON[@]}" -p "$lport" -mp "$mport" \
			-r "$rate" -rp 1000 -m "$total" -l "$conc" -d "$HOLD_MS" \
			-auth_uri "$AUTH_URI" -recv_timeout 10000 -timeout "${limit}s" \
			-trace_stat -stf stat.csv -fd 1 -trace_screen -screen_file screen.log \
			-trace_rtt -rtt_freq 200 >sipp.out 2>&1 || echo "sipp exit $?" >>sipp.out
		times >sipp.times
	)
}

# measure NAME SERVER_PID SERVER_PORT RATE SECS MIN_TAIL DIR: one load run; writes DIR/result
# (key=value): offered, total, successful, failed, callee_failed, retrans, elapsed,
# server_cpu_raw, idle_cpu, server_cpu, sipp_cpu, p50/p99 set-up and BYE, peak calls, busy %.
measure() {
	local name=$1 spid=$2 port=$3 rate=$4 secs=$5 tail=$6 dir=$7
	local total t0 t1 w0 w1 waited u0 u1 uf0 uf1 ur0 ur1 ok fail retr el raw idle net ucpu scpu s cb0 cb1 lb0 lb1 fd0 fdpid i
	total=$((rate * secs))
	mkdir -p "$dir"
	: >"$dir/cpu-timeline.txt"
	: >"$dir/fd-timeline.txt"
	uf0=$(sipp_field "$UAS_STAT" 'FailedCall(C)'); ur0=$(sipp_field "$UAS_STAT" 'Retransmissions(C)')
	u0=$(uas_ticks)
	cb0=$(core_busy "$SERVER_CORE"); lb0=$(core_busy "$LOAD_CORE")
	# Open descriptors of the server each second during the load: a media-anchoring server
	# holds relay sockets for every call up (Kamailio's stay flat).
	fd0=$(fd_count "$spid")
	(
		for i in $(seq 1 $((secs + HOLD_MS / 1000 + 45))); do
			echo "$(fd_count "$spid")" >>"$dir/fd-timeline.txt"
			sleep 1
		done
	) &
	fdpid=$!
	STARTED_PIDS+=("$fdpid")
	thread_ticks "$spid" >"$dir/threads.before"
	t0=$(tree_ticks "$spid"); w0=$(date +%s.%N)
	run_uac "$dir" "$port" "$rate" "$total"
	kill "$fdpid" 2>/dev/null || true
	wait "$fdpid" 2>/dev/null || true
	cb1=$(core_busy "$SERVER_CORE"); lb1=$(core_busy "$LOAD_CORE")
	s=$(settle "$spid" "$tail" "$IDLE_PER_S_INT" "$dir/cpu-timeline.txt")
	t1=${s% *}; waited=${s#* }
	thread_ticks "$spid" >"$dir/threads.after"
	# CPU seconds per thread name over the run, largest first.
	awk -v hz="$HZ" 'NR==FNR { b[$1]=$2; next } { d=$2-b[$1]; if (d > 0) printf "%s %.2f\n", $1, d/hz }' \
		"$dir/threads.before" "$dir/threads.after" | sort -k2 -rn >"$dir/threads.txt"
	w1=$(date +%s.%N)
	u1=$(uas_ticks)
	sleep 1.2 # the callee's statistics file is rewritten every second
	uf1=$(sipp_field "$UAS_STAT" 'FailedCall(C)'); ur1=$(sipp_field "$UAS_STAT" 'Retransmissions(C)')
	ok=$(sipp_field "$dir/stat.csv" 'SuccessfulCall(C)')
	fail=$(sipp_field "$dir/stat.csv" 'FailedCall(C)')
	retr=$(sipp_field "$dir/stat.csv" 'Retransmissions(C)')
	el=$(sipp_elapsed "$dir/stat.csv")
	raw=$(calc '%.3f' "($t1 - $t0) / $HZ")
	idle=$(calc '%.3f' "$IDLE_PER_S * ($w1 - $w0) / $HZ")
	net=$(calc '%.3f' "($raw - $idle) > 0 ? $raw - $idle : 0")
	ucpu=$(times_cpu "$dir/sipp.times")
	scpu=$(calc '%.2f' "$ucpu + ($u1 - $u0) / $HZ")
	local rtt1 rtt2 peak
	rtt1=$(rtt_pct "$(ls "$dir"/*_rtt.csv 2>/dev/null | head -1)" 1)
	rtt2=$(rtt_pct "$(ls "$dir"/*_rtt.csv 2>/dev/null | head -1)" 2)
	local r503
	r503=$(cat "$dir"/*_errors.log 2>/dev/null | grep -c "received 'SIP/2.0 503" || true)
	peak=$(awk -F';' 'NR==1 { for (i=1;i<=NF;i++) if ($i=="CurrentCall") c=i; next } c && $c+0 > m { m=$c+0 } END { print m+0 }' "$dir/stat.csv" 2>/dev/null || echo 0)
	{
		echo "name=$name"; echo "offered=$rate"; echo "secs=$secs"; echo "total=$total"
		echo "successful=$ok"; echo "failed=$fail"; echo "callee_failed=$((uf1 - uf0))"
		echo "retrans=$((retr + ur1 - ur0))"; echo "elapsed=$el"; echo "peak_calls=$peak"
		echo "server_cpu_raw=$raw"; echo "idle_cpu=$idle"; echo "server_cpu=$net"; echo "settle_secs=$waited"
		echo "sipp_cpu=$scpu"; echo "uac_cpu=$ucpu"; echo "uas_cpu=$(calc '%.2f' "($u1 - $u0) / $HZ")"
		echo "setup_p50=${rtt1% *}"; echo "setup_p99=${rtt1#* }"; echo "bye_p50=${rtt2% *}"; echo "bye_p99=${rtt2#* }"
		echo "server_core_busy=$(busy_pct "$cb0" "$cb1")"; echo "load_core_busy=$(busy_pct "$lb0" "$lb1")"
		echo "server_own_pct=$(calc '%.0f' "$el > 0 ? 100 * $raw / $el : 0")"
		echo "responses_503=${r503:-0}"; echo "fds_idle=$fd0"; echo "fds_peak=$(sort -n "$dir/fd-timeline.txt" | tail -1)"
	} >"$dir/result"
}
get() { awk -F= -v k="$2" '$1==k { print $2 }' "$1/result"; }

# ramp NAME SERVER_PID PORT DIR: steps through RAMP (no CPU tail: each step waits only until
# the server is idle again); records the highest step with no failed call on either side and
# the calls started at ≥ 95 % of the offered rate; says which core was full where it stopped.
ramp() {
	local name=$1 spid=$2 port=$3 dir=$4 r best=0 limit="" ok fail cfail el pace spct ppct sbusy lbusy retr line total hold_s d us
	: >"$dir/ramp.txt"
	hold_s=$(calc '%.3f' "$HOLD_MS / 1000")
	for r in $RAMP; do
		d="$dir/ramp-$r"
		measure "$name" "$spid" "$port" "$r" "$RAMP_SECS" 0 "$d"
		ok=$(get "$d" successful); fail=$(get "$d" failed); cfail=$(get "$d" callee_failed); retr=$(get "$d" retrans)
		total=$(get "$d" total); el=$(get "$d" elapsed)
		sbusy=$(get "$d" server_core_busy); lbusy=$(get "$d" load_core_busy)
		# Pace: the calls were started over (elapsed - hold - set-up) seconds; SIPp falling
		# behind the offer shows as a longer run.
		pace=$(calc '%.0f' "($el - $hold_s) > 0 ? $total / ($el - $hold_s) : 0")
		spct=$(calc '%.0f' "$el > 0 ? 100 * $(get "$d" server_cpu_raw) / $el : 0")
		ppct=$(calc '%.0f' "$el > 0 ? 100 * $(get "$d" sipp_cpu) / $el : 0")
		us=$(calc '%.0f' "$ok > 0 ? $(get "$d" server_cpu) * 1e6 / $ok : 0")
		line=$(printf '  %-8s %5d/s: ok %6d failed %4d (callee %4d) retrans %5d paced %5d/s peak %5d calls | server %3d%% (core %3d%%) %4d µs/call | SIPp %3d%% (core %3d%%)' \
			"$name" "$r" "$ok" "$fail" "$cfail" "$retr" "$pace" "$(get "$d" peak_calls)" "$spct" "$sbusy" "$us" "$ppct" "$lbusy")
		echo "$line" >>"$dir/ramp.txt"; log "$line"
		if [ "$fail" -eq 0 ] && [ "$cfail" -eq 0 ] && [ "$ok" -eq "$total" ] && [ "$pace" -ge $((r * 95 / 100)) ]; then
			best=$r
		else
			break
		fi
	done
	if [ "$sbusy" -ge 90 ] && [ "$lbusy" -ge 90 ]; then limit="both cores full: server ${spct}% of its core (core ${sbusy}% busy), SIPp ${ppct}% (core ${lbusy}%)"
	elif [ "$sbusy" -ge 90 ]; then limit="the server's core was full: server ${spct}% of it (core ${sbusy}% busy); SIPp ${ppct}%"
	elif [ "$lbusy" -ge 90 ]; then limit="SIPp's core was full: SIPp ${ppct}% of it (core ${lbusy}% busy); server ${spct}%"
	elif [ "$best" = "${RAMP##* }" ]; then limit="ramp ended before either core was full (server ${spct}%, SIPp ${ppct}%)"
	else limit="neither core full (server ${spct}%/core ${sbusy}%, SIPp ${ppct}%/core ${lbusy}%): losses, timeouts or SIPp pacing, not CPU"
	fi
	if [ "$spct" -lt $((sbusy - 15)) ] || [ "$ppct" -lt $((lbusy - 15)) ]; then
		limit="$limit; other processes used these cores too (shared machine)"
	fi
	echo "best=$best" >"$dir/ramp.result"; echo "limit=$limit" >>"$dir/ramp.result"
}

# session NAME SERVER_PID SERVER_PORT DIR: registers the callees, starts the callee SIPp, runs
# the fixed load and the ramp against one server, stops the callee SIPp.
session() {
	local name=$1 spid=$2 port=$3 dir=$4 uport umport budget idle10
	uport=$(free_udp_port 1)
	umport=$(free_udp_port 4)
	register_callees "$name" "$port" "$uport" "$dir/register" || return 1
	# The callee SIPp lives for the whole session; it is stopped at the end.
	budget=$((DURATION + HOLD_MS / 1000 + TAIL + 60))
	if [ "$DO_RAMP" = 1 ]; then set -- $RAMP; budget=$((budget + $# * (RAMP_SECS + HOLD_MS / 1000 + 40))); fi
	start_uas "$dir/callee" "$uport" "$umport" "$budget" || return 1
	UAS_STAT="$dir/callee/stat.csv"
	sleep 1
	# The server's CPU while idle (timers, keep-alives) over 10 s: subtracted from each run's
	# CPU in proportion to the run's wall time (the tail after the load is long).
	idle10=$(idle_ticks "$spid" 10)
	IDLE_PER_S=$(calc '%.3f' "$idle10 / 10")
	IDLE_PER_S_INT=$(((idle10 + 9) / 10))
	echo "idle_ticks_per_10s=$idle10" >"$dir/idle.txt"
	log "$name: fixed load, $RATE calls/s for $DURATION s, hold $HOLD_MS ms, CPU counted until ≥ $TAIL s after ..."
	measure "$name" "$spid" "$port" "$RATE" "$DURATION" "$TAIL" "$dir/fixed"
	log "$(printf '  %-8s %d/%d calls ok, %d failed (callee side %d), %s s server CPU (%s s idle subtracted)' "$name" \
		"$(get "$dir/fixed" successful)" "$(get "$dir/fixed" total)" "$(get "$dir/fixed" failed)" \
		"$(get "$dir/fixed" callee_failed)" "$(get "$dir/fixed" server_cpu)" "$(get "$dir/fixed" idle_cpu)")"
	if [ "$DO_RAMP" = 1 ]; then
		log "$name: ramp ($RAMP_SECS s steps) ..."
		ramp "$name" "$spid" "$port" "$dir"
	fi
	stop_pid "$UASPID"
}

log "results: $RESULTS"
log "load: $RATE calls/s for $DURATION s, hold $HOLD_MS ms, $CALLERS callers -> $CALLEES callee(s); server on core $SERVER_CORE, SIPp on core $LOAD_CORE"

# ================================================================= Kamailio
KAM_DONE=0
if want kamailio; then
	KDIR="$RESULTS/kamailio"
	mkdir -p "$KDIR/db"
	{
		echo 'id(int,auto) table_name(string) table_version(int) '
		echo '1:subscriber:7'
		echo '2:location:9'
	} >"$KDIR/db/version"
	{
		echo 'id(int,auto) username(string) domain(string) password(string,null) ha1(string) ha1b(string,null) '
		if command -v python3 >/dev/null; then
			python3 -c '
import hashlib, sys
n, m = int(sys.argv[1]), int(sys.argv[2])
users = [(f"u{i}", f"pw{i}") for i in range(1, n + 1)] + [(f"callee{i}", f"pwc{i}") for i in range(1, m + 1)]
for k, (u, p) in enumerate(users, 1):
    h = hashlib.md5((u + ":bench.confab:" + p).encode()).hexdigest()
    print(f"{k}:{u}:bench.confab::{h}:")' "$CALLERS" "$CALLEES"
		else
			k=0
			for i in $(seq 1 "$CALLERS"); do k=$((k + 1)); echo "$k:u$i:bench.confab::$(ha1 "u$i" "pw$i"):"; done
			for i in $(seq 1 "$CALLEES"); do k=$((k + 1)); echo "$k:callee$i:bench.confab::$(ha1 "callee$i" "pwc$i"):"; done
		fi
	} >"$KDIR/db/subscriber"
	KPORT=$(free_udp_port 1)
	log "Kamailio: starting on 127.0.0.1:$KPORT (stateful proxy: tm, rr, auth_db + db_text, usrloc in memory, 2 children)"
	"${PRIO[@]}" taskset -c "$SERVER_CORE" "$KAMAILIO" -f "$HERE/kamailio-proxy/kamailio.cfg" -DD -E -w "$KDIR" -m 1024 -M 16 -b 4194304 \
		-A "BENCH_LISTEN=udp:127.0.0.1:$KPORT" -A "BENCH_DBURL=\"text://$KDIR/db\"" >"$KDIR/kamailio.log" 2>&1 &
	KPID=$!
	STARTED_PIDS+=("$KPID")
	if ! wait_udp_bound "$KPORT" "$KPID" 10; then
		log "Kamailio did not start: see $KDIR/kamailio.log"; tail -5 "$KDIR/kamailio.log" >&2
	else
		sleep 1
		if session kamailio "$KPID" "$KPORT" "$KDIR"; then KAM_DONE=1; fi
	fi
	stop_pid "$KPID"
fi

# ================================================================= Confab
CONFAB_DONE=0
# confab_config DIR PORT: DIR/confab.toml. The [calls]/[media] keys the benchmark wants are
# added one by one and kept only if `confab config check` accepts them, so the script runs
# against whatever configuration keys the binary has.
confab_config() {
	local dir=$1 port=$2 f="$1/confab.toml" cand sect line
	cat >"$f" <<EOF
# Written by bench/calls.sh
[server]
data_dir = "$dir/data"
domain = "bench.confab"

[sip]
udp = ["127.0.0.1:$port"]
tcp = []
tls = []
ws = []
wss = []
advertised_address = "127.0.0.1"

[auth]
# The benchmark is one source making many calls: never ban it.
max_failures = 1000000000
ban_secs = 0
# SIPp reads only the first challenge: MD5 first.
algorithms = ["MD5", "SHA-256"]

[log]
level = "warn"
EOF
	# Optional keys (section|lines, \n between lines): flood limits per source off (all calls come from one
	# address), room for the ramp's concurrent calls, the relay on 127.0.0.1 with ports
	# clear of the SIP ports (10000-19999) and of Confab's default relay range (20000-29999,
	# which tests and relay benchmarks running at the same time on a shared machine use):
	# 20,000 ports, 4 per call (RTP+RTCP facing each side), ~5,000 calls at once. The range
	# lies in the kernel's ephemeral range; Confab skips ports something else holds.
	: >"$dir/config-keys.txt"
	for cand in \
		"calls|max_ringing_per_source = 0" \
		"calls|invites_per_second_per_source = 0" \
		"calls|max_calls = 100000" \
		"media|bind = \"127.0.0.1\"" \
		"media|advertised_address = \"127.0.0.1\"" \
		"media|port_min = $RELAY_MIN\nport_max = $RELAY_MAX"; do
		sect=${cand%%|*}; line=${cand#*|}
		cp "$f" "$f.try"
		if grep -q "^\[$sect\]" "$f.try"; then
			awk -v s="[$sect]" -v l="$line" '{ print } $0==s { print l }' "$f" >"$f.try"
		else
			printf '\n[%s]\n%b\n' "$sect" "$line" >>"$f.try"
		fi
		if "$CONFAB_BIN" --config "$f.try" config check >/dev/null 2>&1; then
			mv "$f.try" "$f"; echo "kept    [$sect] $line" >>"$dir/config-keys.txt"
		else
			echo "refused [$sect] $line" >>"$dir/config-keys.txt"
		fi
	done
	rm -f "$f.try"
	"$CONFAB_BIN" --config "$f" config check >"$dir/config-check.txt" 2>&1
}
# confab_users DIR: callers u1..uN (pw1..) and callees (pwc1..): `confab user import` when
# the binary has it, else one `confab user add` each.
confab_users() {
	local dir=$1 i start
	mkdir -p "$dir/data"
	start=$(date +%s)
	if "$CONFAB_BIN" user --help 2>&1 | grep -qw import; then
		awk -v n="$CALLERS" -v m="$CALLEES" 'BEGIN { print "username,password"; for (i=1;i<=n;i++) printf "u%d,pw%d\n", i, i; for (i=1;i<=m;i++) printf "callee%d,pwc%d\n", i, i }' >"$dir/users-import.csv"
		timeout 600 "$CONFAB_BIN" --config "$dir/confab.toml" user import "$dir/users-import.csv" >"$dir/user-import.log" 2>&1 ||
			{ log "confab user import failed: see $dir/user-import.log"; return 1; }
		log "Confab: imported $((CALLERS + CALLEES)) users in $(($(date +%s) - start)) s"
		return 0
	fi
	for u in $(seq 1 "$CALLERS" | sed 's/^/u/') $(seq 1 "$CALLEES" | sed 's/^/callee/'); do
		if [ $(($(date +%s) - start)) -gt 600 ]; then log "Confab: user creation took over 600 s; stopped at $u"; return 1; fi
		case "$u" in u*) pw="pw${u#u}" ;; *) pw="pwc${u#callee}" ;; esac
		"$CONFAB_BIN" --config "$dir/confab.toml" user add "$u" --password "$pw" >>"$dir/user-add.log" 2>&1 ||
			{ log "confab user add $u failed: see $dir/user-add.log"; return 1; }
	done
	log "Confab: added $((CALLERS + CALLEES)) users in $(($(date +%s) - start)) s"
}

if want confab && [ "$CONFAB_OK" = 1 ]; then
	CDIR="$RESULTS/confab"
	mkdir -p "$CDIR"
	CPORT=$(free_udp_port 1)
	if confab_config "$CDIR" "$CPORT"; then
		log "Confab: config $CDIR/confab.toml ($(grep -c '^kept' "$CDIR/config-keys.txt") optional keys accepted, see config-keys.txt)"
		INUSE=$(awk -v lo="$RELAY_MIN" -v hi="$RELAY_MAX" '
			function hex(h,   i, v) { v = 0; for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789ABCDEF", toupper(substr(h, i, 1))) - 1; return v }
			FNR>1 { split($2, a, ":"); p = hex(a[2]); if (p >= lo && p <= hi) n++ } END { print n+0 }' /proc/net/udp /proc/net/udp6)
		log "Confab: relay ports $RELAY_MIN-$RELAY_MAX; $INUSE of them already bound by other processes"
		if confab_users "$CDIR"; then
			"${PRIO[@]}" taskset -c "$SERVER_CORE" "$CONFAB_BIN" serve --config "$CDIR/confab.toml" >"$CDIR/confab.log" 2>&1 &
			CPID=$!
			STARTED_PIDS+=("$CPID")
			if ! wait_udp_bound "$CPORT" "$CPID" 15; then
				log "Confab did not start: see $CDIR/confab.log"; tail -5 "$CDIR/confab.log" >&2
			else
				sleep 1
				log "Confab: started on 127.0.0.1:$CPORT"
				if session confab "$CPID" "$CPORT" "$CDIR"; then CONFAB_DONE=1; fi
			fi
			stop_pid "$CPID"
		fi
	else
		log "Confab: the configuration is refused: see $CDIR/config-check.txt"
	fi
fi

# ================================================================= floor
FLOOR_PLAIN=""
if [ "$DO_FLOOR" = 1 ]; then
	FDIR="$RESULTS/floor"
	mkdir -p "$FDIR"
	FPORT=$(free_udp_port 1)
	"${PRIO[@]}" taskset -c "$SERVER_CORE" "$TOOLS_DIR/udp-echo" --bind "127.0.0.1:$FPORT" --mode plain --idle-secs 2 --max-secs $((FLOOR_SECS + 30)) >"$FDIR/echo.out" 2>&1 &
	EPID=$!
	STARTED_PIDS+=("$EPID")
	if wait_udp_bound "$FPORT" "$EPID" 5; then
		"${PRIO[@]}" taskset -c "$LOAD_CORE" "$TOOLS_DIR/udp-load" --target "127.0.0.1:$FPORT" --rate "$FLOOR_RATE" --secs "$FLOOR_SECS" --size 450 >"$FDIR/load.out" 2>&1 || true
		wait "$EPID" 2>/dev/null || true
		FLOOR_PLAIN=$(sed -n 's/.*us_per_datagram=\([0-9.]*\).*/\1/p' "$FDIR/echo.out")
	else
		log "udp-echo did not start"
	fi
fi

# ================================================================= report
say ""
say "==== Authenticated calls (INVITE/407/ACK/INVITE/180/200/ACK, ${HOLD_MS} ms hold, BYE/200), $RATE/s offered for $DURATION s ===="
say "     SDP offer PCMU + telephone-event on every INVITE; no RTP sent (signalling benchmark)"
done_of() { [ "$1" = kamailio ] && echo "$KAM_DONE" || echo "$CONFAB_DONE"; }
row() { # LABEL KEY
	local label=$1 key=$2 k="-" c="-"
	[ "$KAM_DONE" = 1 ] && k=$(get "$RESULTS/kamailio/fixed" "$key")
	[ "$CONFAB_DONE" = 1 ] && c=$(get "$RESULTS/confab/fixed" "$key")
	printf '%-36s %12s %12s\n' "$label" "$k" "$c" | tee -a "$SUMMARY"
}
derived() { # LABEL EXPR FORMAT  (variables: ok, fail, cfail, total, cpu, raw, scpu, el)
	local label=$1 expr=$2 fmt=$3 out=() d f v
	for d in kamailio confab; do
		v="-"
		if [ "$(done_of "$d")" = 1 ]; then
			f="$RESULTS/$d/fixed"
			v=$(awk -v ok="$(get "$f" successful)" -v fail="$(get "$f" failed)" -v cfail="$(get "$f" callee_failed)" \
				-v total="$(get "$f" total)" -v cpu="$(get "$f" server_cpu)" -v raw="$(get "$f" server_cpu_raw)" \
				-v scpu="$(get "$f" sipp_cpu)" -v el="$(get "$f" elapsed)" \
				"BEGIN { printf \"$fmt\", ($expr) }")
		fi
		out+=("$v")
	done
	printf '%-36s %12s %12s\n' "$label" "${out[0]}" "${out[1]}" | tee -a "$SUMMARY"
}
printf '%-36s %12s %12s\n' "" "Kamailio" "Confab" | tee -a "$SUMMARY"
row "offered calls/s" offered
row "calls attempted" total
row "successful calls" successful
row "failed calls (caller side)" failed
row "failed calls (callee side)" callee_failed
derived "failed share" 'total > 0 ? 100 * (total - ok) / total : 0' '%.3f %%'
row "SIPp retransmissions" retrans
row "503 responses (e.g. relay ports)" responses_503
row "peak concurrent calls" peak_calls
row "server open fds idle" fds_idle
row "server open fds peak (relay sockets)" fds_peak
row "server CPU s (raw, until settled)" server_cpu_raw
row "  idle baseline subtracted, s" idle_cpu
row "  seconds waited after the load" settle_secs
row "server CPU s" server_cpu
derived "µs CPU / call" 'ok > 0 ? cpu * 1e6 / ok : 0' '%.1f'
derived "capacity / core (calls/s)" 'cpu > 0 ? ok / cpu : 0' '%.0f'
row "SIPp CPU s (caller + callee)" sipp_cpu
derived "SIPp µs / call" 'ok > 0 ? scpu * 1e6 / ok : 0' '%.1f'
row "server core busy % during load" server_core_busy
row "SIPp core busy % during load" load_core_busy
row "p50 call set-up ms (INVITE..200)" setup_p50
row "p99 call set-up ms" setup_p99
row "p50 BYE ms" bye_p50
row "p99 BYE ms" bye_p99

us_of() { # NAME: µs per call of the fixed run, or empty
	[ "$(done_of "$1")" = 1 ] || return 0
	awk -v ok="$(get "$RESULTS/$1/fixed" successful)" -v cpu="$(get "$RESULTS/$1/fixed" server_cpu)" 'BEGIN { if (ok > 0 && cpu > 0) printf "%.3f", cpu * 1e6 / ok }'
}
US_K=$(us_of kamailio); US_C=$(us_of confab)
say ""
if [ -n "$US_K" ] && [ -n "$US_C" ]; then
	say "$(calc 'Confab capacity per core = %.1f× Kamailio'"'"'s (target ≥ 2×)' "$US_K / $US_C")"
else
	say "Confab capacity per core = n/a (Kamailio measured: $([ -n "$US_K" ] && echo yes || echo no), Confab measured: $([ -n "$US_C" ] && echo yes || echo no)) (target ≥ 2×)"
fi
for d in kamailio confab; do
	[ "$(done_of "$d")" = 1 ] || continue
	f="$RESULTS/$d/fixed"
	share=$(calc '%.3f' "$(get "$f" total) > 0 ? 100 * ($(get "$f" total) - $(get "$f" successful)) / $(get "$f" total) : 0")
	ok01=$(awk -v s="$share" -v c="$(get "$f" callee_failed)" -v t="$(get "$f" total)" 'BEGIN { print (s < 0.1 && (t == 0 || 100 * c / t < 0.1)) ? "under" : "NOT under" }')
	say "$(printf '  %-8s failed calls %s %% (%s 0.1 %%)' "$d" "$share" "$ok01")"
done

if [ "$CONFAB_DONE" = 1 ] && [ -s "$RESULTS/confab/fixed/threads.txt" ]; then
	say "  Confab CPU s by thread over the fixed run: $(awk '{ printf "%s%s %s", (NR>1 ? ", " : ""), $1, $2 }' "$RESULTS/confab/fixed/threads.txt")"
fi

if [ "$DO_RAMP" = 1 ]; then
	say ""
	say "Ramp ($RAMP_SECS s of calls per step; a step passes with every call completed on both sides, none failed, paced at ≥ 95 % of the offer):"
	for d in kamailio confab; do
		if [ -f "$RESULTS/$d/ramp.result" ]; then
			say "$(printf '  %-8s highest rate with no failures: %s calls/s; %s' "$d" \
				"$(awk -F= '$1=="best" {print $2}' "$RESULTS/$d/ramp.result")" \
				"$(awk -F= '$1=="limit" {sub(/^limit=/, ""); print}' "$RESULTS/$d/ramp.result")")"
		fi
	done
fi

if [ -n "$FLOOR_PLAIN" ]; then
	say ""
	say "Floor: bare UDP echo on core $SERVER_CORE, $FLOOR_RATE datagrams/s of 450 bytes: $FLOOR_PLAIN µs per datagram in+out."
	say "  A call through the server is about 8 datagrams in and 8 out (INVITE, ACK, INVITE, 180, 200, ACK, BYE, 200 in;"
	say "  407, 100, INVITE, 180, 200, ACK, BYE, 200 out), i.e. ~8 echo pairs:"
	for pair in "Kamailio:$US_K" "Confab:$US_C"; do
		n=${pair%%:*}; u=${pair#*:}
		[ -n "$u" ] || continue
		say "$(printf '  %-8s %.1f µs per call = %s× the floor of 8 datagram pairs' "$n" "$u" "$(calc '%.1f' "$u / (8 * $FLOOR_PLAIN)")")"
	done
fi

if want confab && [ "$CONFAB_OK" = 1 ] && [ "$CONFAB_DONE" != 1 ]; then
	say ""
	say "Confab was not measured to the end: see $RESULTS/confab (callee registration, confab.log, fixed/sipp.out, fixed/*_errors.log)."
elif want confab && [ "$CONFAB_OK" != 1 ]; then
	say ""
	say "Confab was not measured: no working $CONFAB_BIN with a 'serve' command (build: cargo build --release -p confab)."
fi
say ""
say "raw outputs: $RESULTS"

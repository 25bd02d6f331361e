#!/usr/bin/env bash
# Media relay benchmark: CPU per relayed RTP packet vs a bare UDP echo floor, and capacity.
#
#   crates/media/bench/media.sh [options]        (--help for the list)
#
# Method (shared design TESTING.md, "Benchmarks, not timed tests"): the server under test is
# pinned to one core, the load generator (rtp-load, batched sockets) to the other; everything
# on 127.0.0.1. N concurrent G.711 calls, 20 ms packets both ways (100 packets/s per call,
# 172 bytes). After a warm-up in which every relay leg latches to the generator's sockets, a
# window of fixed offered load is measured: the server's CPU seconds (utime+stime of all its
# threads, /proc/PID/stat) divided by the packets it delivered in the window gives µs per packet
# (one datagram in and one out). The floor is rtp-echo-floor: a bare epoll + recvfrom/sendto
# echo over as many sockets, driven by the same generator in the same run; the ratio
# relay/floor is what the code controls. The relay runs twice per repetition: with its default
# 200 µs coalescing under load ("relay") and without ("relay-nc"), since on this virtual machine
# a wake-up costs more than a datagram and the figures depend on how often the server sleeps. Then a ramp finds the largest N the one-core relay
# carries with under 0.1 % loss, and says which side ran out of CPU.
# Prints figures; never fails on them (exit status is about the run itself).

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"

CALLS="300 900 1500"            # fixed-load comparisons (calls; the floor takes up to 2,500)
REPEAT=2                        # floor/relay alternations per fixed load
SECONDS_RUN=10
WARMUP=2
RAMP="1500 2000 2500 3000"       # ramp steps (calls; the relay range takes up to 3,190)
RAMP_SECS=6
DO_RAMP=1
DO_BUILD=1
RELAY_PORTS="20000 32767"        # the relay's range (4 ports per call), below the ephemeral range
FLOOR_PORT=10000                 # the floor's first port (4 port numbers per call)
SERVER_CORE=1
LOAD_CORE=0
BIN="$ROOT/target/release"
RESULTS=""

usage() {
	cat <<EOF
usage: crates/media/bench/media.sh [options]
  --calls "N1 N2"     fixed loads for relay vs floor (calls)   (default "$CALLS")
  --repeat K          alternations per fixed load              (default $REPEAT)
  --seconds S         measured window                          (default $SECONDS_RUN)
  --warmup S          warm-up before the window                (default $WARMUP)
  --ramp "N1 N2 ..."  ramp steps (calls)                       (default "$RAMP")
  --ramp-secs S       window per ramp step                     (default $RAMP_SECS)
  --no-ramp           skip the ramp
  --relay-ports "A B" the relay's port range                     (default "$RELAY_PORTS")
  --no-build          do not run cargo build first
  --results DIR       raw outputs (default crates/media/bench/results/<timestamp>)
EOF
}

while [ $# -gt 0 ]; do
	case "$1" in
	--calls) CALLS="$2"; shift 2 ;;
	--repeat) REPEAT="$2"; shift 2 ;;
	--seconds) SECONDS_RUN="$2"; shift 2 ;;
	--warmup) WARMUP="$2"; shift 2 ;;
	--ramp) RAMP="$2"; shift 2 ;;
	--ramp-secs) RAMP_SECS="$2"; shift 2 ;;
	--no-ramp) DO_RAMP=0; shift ;;
	--relay-ports) RELAY_PORTS="$2"; shift 2 ;;
	--no-build) DO_BUILD=0; shift ;;
	--results) RESULTS="$2"; shift 2 ;;
	--help|-h) usage; exit 0 ;;
	*) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
done

[ -n "$RESULTS" ] || RESULTS="$HERE/results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RESULTS"

if [ "$DO_BUILD" = 1 ]; then
	(cd "$ROOT" && cargo build --release -p confab-media --bins)
fi
for b in relay-bench-server rtp-echo-floor rtp-load; do
	[ -x "$BIN/$b" ] || { echo "missing $BIN/$b" >&2; exit 1; }
done

SPID=""
cleanup() {
	exec 9>&- 2>/dev/null || true
	if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then kill "$SPID" 2>/dev/null || true; fi
}
trap cleanup EXIT

field() { # field NAME LINE
	sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"
}

# run KIND CALLS SECONDS TAG -> prints the generator's result line
run() {
	local kind="$1" calls="$2" secs="$3" tag="$4"
	local dir="$RESULTS/$tag"
	mkdir -p "$dir"
	rm -f "$dir/ctl"
	mkfifo "$dir/ctl"
	local life=$((WARMUP + secs + 60))
	if [ "$kind" = relay ] || [ "$kind" = relay-nc ]; then
		local coalesce=()
		[ "$kind" = relay-nc ] && coalesce=(--coalesce-us 0)
		taskset -c "$SERVER_CORE" "$BIN/relay-bench-server" --sessions "$calls" --workers 1 "${coalesce[@]}" \
			--port-min "${RELAY_PORTS% *}" --port-max "${RELAY_PORTS#* }" --lifetime "$life" <"$dir/ctl" >"$dir/ports" 2>"$dir/server.err" &
	else
		taskset -c "$SERVER_CORE" "$BIN/rtp-echo-floor" --calls "$calls" --port-min "$FLOOR_PORT" \
			--lifetime "$life" <"$dir/ctl" >"$dir/ports" 2>"$dir/server.err" &
	fi
	SPID=$!
	exec 9>"$dir/ctl"
	local i
	for i in $(seq 1 200); do
		grep -q '^ready$' "$dir/ports" 2>/dev/null && break
		kill -0 "$SPID" 2>/dev/null || break
		sleep 0.05
	done
	if ! grep -q '^ready$' "$dir/ports"; then
		# Not fatal: e.g. ports of the range held by other processes. The step is reported failed.
		echo "$kind with $calls calls did not start: $(head -c 300 "$dir/server.err")" >&2
		exec 9>&-
		wait "$SPID" 2>/dev/null || true
		SPID=""
		echo "label=$kind calls=$calls status=failed"
		return 0
	fi
	taskset -c "$LOAD_CORE" "$BIN/rtp-load" --targets "$dir/ports" --server-pid "$SPID" --label "$kind" \
		--seconds "$secs" --warmup "$WARMUP" --sockets 16 >"$dir/load.out"
	exec 9>&-
	for i in $(seq 1 100); do
		kill -0 "$SPID" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$SPID" 2>/dev/null && kill "$SPID" 2>/dev/null || true
	wait "$SPID" 2>/dev/null || true
	SPID=""
	cat "$dir/load.out"
}

echo "# media relay benchmark — results in $RESULTS"
echo "# host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); server core $SERVER_CORE, generator core $LOAD_CORE"
echo
echo "## Fixed load: server CPU per packet (one in + one out), relay vs bare echo floor"
echo "## (relay: default 200 µs coalescing under load; relay-nc: coalescing off)"
printf '%-6s %-8s %9s %9s %10s %9s %9s %9s %9s %s\n' calls kind pps_out loss_% server_cpu us/pkt p50_us p99_us gen_us lag_ms
SUMMARY=()
for calls in $CALLS; do
	floor_sum=0; relay_sum=0; nc_sum=0; n=0
	for r in $(seq 1 "$REPEAT"); do
		declare -A got=()
		for kind in floor relay relay-nc; do
			line=$(run "$kind" "$calls" "$SECONDS_RUN" "fixed-$calls-$kind-$r")
			us=$(field server_us_per_pkt "$line")
			if [ -z "$us" ] || [ "$us" = nan ]; then
				echo "$calls $kind: no measurement"
				continue
			fi
			got[$kind]=$us
			printf '%-6s %-8s %9s %9s %10s %9s %9s %9s %9s %s\n' "$calls" "$kind" \
				"$(field delivered_pps "$line")" "$(field loss_pct "$line")" "$(field server_cpu_s "$line")" "$us" \
				"$(field p50_us "$line")" "$(field p99_us "$line")" "$(field gen_us_per_pkt "$line")" \
				"$(field gen_max_lag_ms "$line")"
		done
		# A repetition counts only when both sides were measured.
		if [ -n "${got[floor]:-}" ] && [ -n "${got[relay]:-}" ] && [ -n "${got[relay-nc]:-}" ]; then
			floor_sum=$(echo "$floor_sum + ${got[floor]}" | bc -l)
			relay_sum=$(echo "$relay_sum + ${got[relay]}" | bc -l)
			nc_sum=$(echo "$nc_sum + ${got[relay-nc]}" | bc -l)
			n=$((n + 1))
		fi
		unset got
	done
	if [ "$n" -gt 0 ]; then
		SUMMARY+=("$calls calls: floor $(echo "scale=2; $floor_sum / $n" | bc -l) µs/pkt; relay $(echo "scale=2; $relay_sum / $n" | bc -l) µs/pkt, ratio $(echo "scale=2; $relay_sum / $floor_sum" | bc -l); relay without coalescing $(echo "scale=2; $nc_sum / $n" | bc -l) µs/pkt, ratio $(echo "scale=2; $nc_sum / $floor_sum" | bc -l) (target ≤ 1.5; $n runs each)")
	else
		SUMMARY+=("$calls calls: no complete measurement")
	fi
done
echo
printf '%s\n' "${SUMMARY[@]}"

if [ "$DO_RAMP" = 1 ]; then
	echo
	echo "## Ramp: largest N the one-core relay carries with < 0.1 % loss"
	printf '%-6s %9s %9s %9s %9s %9s %9s %9s %s\n' calls pps_out loss_% server_% us/pkt p99_us gen_% lag_ms status
	best=0
	for calls in $RAMP; do
		line=$(run relay "$calls" "$RAMP_SECS" "ramp-$calls")
		if [ "$(field status "$line")" = failed ]; then
			echo "$calls: server did not start (see above)"
			continue
		fi
		loss=$(field loss_pct "$line")
		scpu=$(echo "scale=0; 100 * $(field server_cpu_s "$line") / $RAMP_SECS" | bc -l)
		gcpu=$(echo "scale=0; 100 * $(field gen_cpu_s "$line") / $RAMP_SECS" | bc -l)
		# A step counts only if the generator offered the load: it delivered >= 98 % of the
		# offered packets/s or lost them (a starved generator under-offers and proves nothing).
		# A generator stalled for more than 100 ms (another process on its core) may overflow its
		# own receive buffers: such a step proves nothing either way ("gen-lag").
		status=$(awk -v d="$(field delivered_pps "$line")" -v o="$(field offered_pps "$line")" -v l="$loss" \
			-v lag="$(field gen_max_lag_ms "$line")" \
			'BEGIN { if (lag > 100) print "gen-lag"; else if (l >= 0.1) print "loss"; else if (d < 0.98 * o) print "gen-short"; else print "ok" }')
		printf '%-6s %9s %9s %9s %9s %9s %9s %9s %s\n' "$calls" "$(field delivered_pps "$line")" "$loss" "$scpu" \
			"$(field server_us_per_pkt "$line")" "$(field p99_us "$line")" "$gcpu" "$(field gen_max_lag_ms "$line")" "$status"
		if [ "$status" = ok ]; then best=$calls; fi
	done
	echo
	echo "largest N with < 0.1 % loss: $best calls ($((best * 100)) packets/s relayed)"
	echo "(server_% near 100: the relay's core ran out; gen_% near 100, gen-short or gen-lag: the"
	echo " generator did, or another process took its core; loss without either: the relay dropped;"
	echo " the relay's own counters are in each step's server.err)"
fi

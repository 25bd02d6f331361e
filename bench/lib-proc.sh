# Process accounting shared by the benchmarks (sourced by register.sh and lib-calls.sh).

# tree_pids PID: PID and all its descendants.
tree_pids() {
	ps -e -o pid=,ppid= | awk -v root="$1" '
		{ parent[$1]=$2; order[NR]=$1 }
		END {
			if (!(root in parent)) exit
			keep[root]=1; changed=1
			while (changed) { changed=0; for (i=1;i<=NR;i++) { p=order[i]; if (!(p in keep) && (parent[p] in keep)) { keep[p]=1; changed=1 } } }
			for (p in keep) print p
		}'
}

# cpu_ticks PID...: utime+stime (clock ticks; all threads of each process) summed.
cpu_ticks() {
	local p total=0 t
	for p in "$@"; do
		t=$(awk '{line=$0; sub(/^[0-9]+ \(.*\) /, "", line); split(line, f, " "); print f[12]+f[13]}' "/proc/$p/stat" 2>/dev/null || echo 0)
		total=$((total + ${t:-0}))
	done
	echo "$total"
}

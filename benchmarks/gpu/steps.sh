# The GPU check's step runner, sourced by benchmarks/gpu/gpu_check.sh (and by tests/test_gpu_check.py, which
# kills a sleeping pytest with it). Needs OUT, PY, MODE, START and SKIP (" name name "); GPU_CHECK_LIMIT_SCALE=N
# multiplies every step's limit (default 1; for a rehearsal on a CPU that others load).

step() {  # step NAME LIMIT_S COMMAND...: runs it, logs to $OUT/NAME.log, records "name rc seconds", rewrites the report
  local name=$1 limit=$(( $2 * ${GPU_CHECK_LIMIT_SCALE:-1} )); shift 2  # the scale: a rehearsal on a loaded CPU
  if [[ "$SKIP" == *" $name "* ]]; then echo "== $name: skipped"; return 0; fi
  local t0=$(date +%s)
  local shown="$*"
  echo "== $name (limit ${limit}s): ${shown%%$'\n'*}"  # its first line
  # SIGINT at the limit: pytest then still writes its junit XML (KeyboardInterrupt), Python prints where it was;
  # SIGKILL 10 s later. (timeout gives the command SIGINT's default action even when this shell ignores it.)
  timeout -s INT -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/steps.tsv"
  echo "   rc=$rc$( { [ $rc = 124 ] || [ $rc = 137 ]; } && echo ' (time limit)'), $(( $(date +%s) - t0 )) s; tail:"
  tail -n 3 "$OUT/$name.log" | sed 's/^/   | /'
  report --quiet  # partial results survive a device taken away before the end
}

report() {  # report [--quiet]: $OUT/gpu_check.json and $OUT/summary.md from what is there now
  $PY benchmarks/gpu/gpu_check_report.py "$OUT" --mode "$MODE" --seconds "$(( $(date +%s) - START ))" "$@"
}

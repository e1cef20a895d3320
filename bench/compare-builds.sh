#!/bin/bash
# Catch-up and tail consume of one broker build, for before/after tables in docs/BENCHMARKS.md.
# Run it alternately for two builds, e.g. three times each:
#   for i in 1 2 3; do bench/compare-builds.sh old /tmp/old/gregor; bench/compare-builds.sh new target/release/gregor; done
# usage: compare-builds.sh LABEL GREGOR_BINARY [extra broker args, e.g. --set name=value]
set -euo pipefail
label=$1; G=$2; shift 2
data=$(mktemp -d /tmp/gregor-compare.XXXXXX)
port=${COMPARE_PORT:-19200}
"$G" broker --data-dir "$data" --listen 127.0.0.1:$port "$@" > "$data.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true; wait $broker 2>/dev/null || true; rm -rf "$data" "$data.log" "$data.produce.json"' EXIT
sleep 1.5
B=(--bootstrap 127.0.0.1:$port --no-progress --json)
mbs() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['mb_per_sec']))"; }
# Catch-up: consume from the start what was just written (most of it only on disk).
t=catchup-$RANDOM
"$G" bench produce "${B[@]}" --topic $t --partitions 6 --producers 4 --messages 1500000 --size 1024 > /dev/null
catchup=$("$G" bench consume "${B[@]}" --topic $t --partitions 6 --messages 1500000 --size 1024 | mbs)
# Tail: consume from the end while 4 producers write flat out.
t=tail-$RANDOM
"$G" bench produce "${B[@]}" --topic $t --partitions 6 --messages 6 --size 1024 > /dev/null
"$G" bench produce "${B[@]}" --topic $t --partitions 6 --producers 4 --size 1024 --duration-secs 6 > "$data.produce.json" &
producers=$!
sleep 1
tail=$("$G" bench consume "${B[@]}" --topic $t --partitions 6 --messages 1000000000 --size 1024 --from-latest --duration-secs 4 --timeout-secs 5 | mbs)
wait $producers
produced=$(mbs < "$data.produce.json")
echo "$label catchup_mb_s=$catchup tail_mb_s=$tail tail_producers_mb_s=$produced"

#!/usr/bin/env bash
# capture_file.sh - the file benchmark side by side in one run: our pipeline on one core and on
# two cores (wall clock) against libpcap's count-only loop (pcap_count) and tcpdump -r, rounds
# interleaved so that drift on a shared machine hits every tool alike. Prints every run and a
# median table. Run it on a quiet machine (here: `xbench bench/capture_file.sh ...`).
#
# Usage: bench/capture_file.sh FILE [ROUNDS=5]
# Env:   CAPTURE_FILE=path of the capture_file binary (default target/release/capture_file)
#        PCAP_COUNT=path of a libpcap count-only loop printing "packets bytes secs pps ..."
#                   (default /tmp/pcap_count; e.g. cc -O2 -o /tmp/pcap_count pcap_count.c -lpcap)
#        EXTRA="--work table" extra capture_file options
set -euo pipefail
FILE=${1:?usage: capture_file.sh FILE [ROUNDS]}
ROUNDS=${2:-5}
CF=${CAPTURE_FILE:-target/release/capture_file}
PC=${PCAP_COUNT:-/tmp/pcap_count}
EXTRA=${EXTRA:-}
[ -x "$CF" ] || { echo "no $CF (cargo build --release -p mplane-bench --bin capture_file)" >&2; exit 1; }
[ -x "$PC" ] || { echo "no $PC (a libpcap count-only loop)" >&2; exit 1; }
command -v tcpdump >/dev/null || { echo "tcpdump not installed" >&2; exit 1; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
now() { date +%s.%N; }
for r in $(seq 1 "$ROUNDS"); do
  # libpcap count-only loop, core 0: its own clock (open + loop)
  s=$(taskset -c 0 "$PC" "$FILE" | awk '{print $3}'); echo "$s" >>"$W/pcap_count"
  # tcpdump reading and writing nothing, core 0: wall clock of the process
  t0=$(now); taskset -c 0 tcpdump -n -r "$FILE" -w /dev/null 2>/dev/null; t1=$(now)
  echo "$t1 - $t0" | bc -l >>"$W/tcpdump"
  # our pipeline, one worker on core 0, and two workers on both cores (wall clock of the run)
  # shellcheck disable=SC2086
  s=$(taskset -c 0 "$CF" "$FILE" --workers 1 --runs 1 $EXTRA | awk '/^workers=1 run=/{for(i=1;i<=NF;i++) if($i ~ /^secs=/) {sub("secs=","",$i); print $i}}')
  echo "$s" >>"$W/ours1"
  # shellcheck disable=SC2086
  s=$("$CF" "$FILE" --workers 2 --runs 1 $EXTRA | awk '/^workers=2 run=/{for(i=1;i<=NF;i++) if($i ~ /^secs=/) {sub("secs=","",$i); print $i}}')
  echo "$s" >>"$W/ours2"
  p=$(tail -1 "$W/pcap_count"); t=$(tail -1 "$W/tcpdump"); o1=$(tail -1 "$W/ours1"); o2=$(tail -1 "$W/ours2")
  # ratios within the round (paired): drift of the machine's speed between rounds cancels out
  echo "$p / $o1" | bc -l >>"$W/r_pcap"; echo "$o1 / $o2" | bc -l >>"$W/r_two"; echo "$t / $o1" | bc -l >>"$W/r_td"
  printf 'round %s: pcap_count %.3f s, tcpdump %.3f s, ours 1 core %.3f s, ours 2 cores %.3f s\n' \
    "$r" "$p" "$t" "$o1" "$o2"
done
N=$(taskset -c 0 "$PC" "$FILE" | awk '{print $1}')
med() { sort -g "$W/$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
P=$(med pcap_count); T=$(med tcpdump); O1=$(med ours1); O2=$(med ours2)
echo "packets=$N rounds=$ROUNDS (medians)"
printf '| %-40s | %8s | %8s |\n' "tool" "wall s" "Mpps"
for row in "pcap_count (libpcap pcap_next_ex, count only), core 0:$P" \
           "tcpdump -n -r FILE -w /dev/null, core 0:$T" \
           "capture_file, 1 worker, core 0:$O1" \
           "capture_file, 2 workers, 2 cores:$O2"; do
  name=${row%:*}; s=${row##*:}
  printf '| %-40s | %8.3f | %8.2f |\n' "$name" "$s" "$(echo "$N / $s / 1000000" | bc -l)"
done
printf 'ratios of medians: 1 core / pcap_count = %.2f x, 2 cores / 1 core = %.2f x, 1 core / tcpdump = %.2f x\n' \
  "$(echo "$P / $O1" | bc -l)" "$(echo "$O1 / $O2" | bc -l)" "$(echo "$T / $O1" | bc -l)"
printf 'medians of per-round ratios: 1 core / pcap_count = %.2f x, 2 cores / 1 core = %.2f x, 1 core / tcpdump = %.2f x\n' \
  "$(med r_pcap)" "$(med r_two)" "$(med r_td)"

#!/bin/sh
# Report: prints the per-region totals and checks that no order was lost on the way.
set -eu
dir=/tmp/taskfleet-etl/$TASKFLEET_WORKFLOW_ID
expected=$(($(wc -l < "$dir/orders.csv") - 1))
merged=$(awk -F, '{ n += $2 } END { print n }' "$dir/totals.csv")
echo "region   orders   amount"
awk -F, '{ printf "%-8s %6d %10.2f\n", $1, $2, $3 }' "$dir/totals.csv"
if [ "$merged" -ne "$expected" ]; then
  echo "lost orders: extracted $expected, merged $merged" >&2
  exit 1
fi
printf '{"orders": %d, "regions": %d}\n' "$merged" "$(wc -l < "$dir/totals.csv")" > "$TASKFLEET_OUTPUT"

#!/bin/sh
# Merge: combines the per-shard totals into one total per region.
set -eu
dir=/tmp/taskfleet-etl/$TASKFLEET_WORKFLOW_ID
cat "$dir"/shard-*.csv | awk -F, '{ count[$1] += $2; total[$1] += $3 }
  END { for (region in total) printf "%s,%d,%.2f\n", region, count[region], total[region] }' \
  | sort > "$dir/totals.csv"
orders=$(awk -F, '{ n += $2 } END { print n }' "$dir/totals.csv")
printf '{"orders": %d, "file": "%s"}\n' "$orders" "$dir/totals.csv" > "$TASKFLEET_OUTPUT"

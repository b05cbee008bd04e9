#!/bin/sh
# Extract: writes N synthetic orders (id,region,amount) for one day as CSV.
set -eu
day=$1 rows=$2
dir=/tmp/taskfleet-etl/$TASKFLEET_WORKFLOW_ID
mkdir -p "$dir"
awk -v rows="$rows" -v seed="$(echo "$day" | tr -d -)" 'BEGIN {
  srand(seed); split("north south east west", regions, " ");
  print "id,region,amount";
  for (i = 1; i <= rows; i++) printf "%d,%s,%.2f\n", i, regions[int(rand() * 4) + 1], rand() * 500;
}' > "$dir/orders.csv"
printf '{"day": "%s", "rows": %d, "file": "%s"}\n' "$day" "$rows" "$dir/orders.csv" > "$TASKFLEET_OUTPUT"

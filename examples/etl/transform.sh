#!/bin/sh
# Transform one shard: the orders whose id falls in this shard, totalled per region.
set -eu
shard=$1 shards=$2
dir=/tmp/taskfleet-etl/$TASKFLEET_WORKFLOW_ID
awk -F, -v shard="$shard" -v shards="$shards" 'NR > 1 && $1 % shards == shard {
  total[$2] += $3; count[$2]++
} END {
  for (region in total) printf "%s,%d,%.2f\n", region, count[region], total[region]
}' "$dir/orders.csv" | sort > "$dir/shard-$shard.csv"
lines=$(wc -l < "$dir/shard-$shard.csv")
printf '{"shard": %d, "regions": %d, "file": "%s"}\n' "$shard" "$lines" "$dir/shard-$shard.csv" > "$TASKFLEET_OUTPUT"

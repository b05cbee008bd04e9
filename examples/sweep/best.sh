#!/bin/sh
# Fan-in: reads every trial's output and keeps the one with the smallest error.
set -eu
# $TASKFLEET_INPUTS is one JSON object: {"trial-s1-n10k": {"seed": 1, ...}, ...}.
tr '{},' '\n\n\n' < "$TASKFLEET_INPUTS" | awk -F: '
  /"seed"/ { seed = $2 } /"samples"/ { samples = $2 } /"pi"/ { pi = $2 }
  /"error"/ { if (best == "" || $2 + 0 < best + 0) { best = $2; line = sprintf("{\"seed\": %d, \"samples\": %d, \"pi\": %s, \"error\": %s}", seed, samples, pi, $2) } }
  END { print line }' > "$TASKFLEET_OUTPUT"
cat "$TASKFLEET_OUTPUT"

#!/bin/sh
# One trial: estimates pi from N random points with the given seed.
set -eu
seed=$1 samples=$2
awk -v seed="$seed" -v n="$samples" 'BEGIN {
  srand(seed); inside = 0;
  for (i = 0; i < n; i++) { x = rand(); y = rand(); if (x * x + y * y <= 1) inside++ }
  pi = 4 * inside / n; error = pi - 3.141592653589793; if (error < 0) error = -error;
  printf "{\"seed\": %d, \"samples\": %d, \"pi\": %.6f, \"error\": %.6f}\n", seed, n, pi, error
}' > "$TASKFLEET_OUTPUT"

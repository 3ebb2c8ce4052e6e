#!/usr/bin/env bash
# The layers never call each other: batch, speed and serving meet only through `view` types and
# the formats in `storage`. Serving may read the speed layer's published status types
# (`speed::stats`, re-exported as `speed::Snapshot`…) and updates (`SpeedUpdate`), nothing else.
# Fails, naming file and line, on any other import between them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bad=0
check() { # LAYER PATTERN WHY
  local hits
  hits=$(grep -rnE "$2" "src/$1" --include=*.rs || true)
  if [ -n "$hits" ]; then
    echo "$hits" | sed "s|\$| <- $3|" >&2
    bad=1
  fi
}
check batch 'crate::(speed|serving)\b|use crate::\{[^}]*\b(speed|serving)\b' "the batch layer imports another layer"
check speed 'crate::(batch|serving)\b|use crate::\{[^}]*\b(batch|serving)\b' "the speed layer imports another layer"
check serving 'crate::batch\b|use crate::\{[^}]*\bbatch\b' "serving imports the batch layer"
check serving 'crate::speed::(views|source|checkpointer|replay|run)\b' "serving imports the speed layer's internals"
[ $bad = 0 ] && echo "layers: batch, speed and serving import none of each other"
exit $bad

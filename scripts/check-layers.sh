#!/usr/bin/env bash
# The layers never call each other: batch, speed and serving meet only through `view` types and
# the formats in `storage`. Serving may read the speed layer's published status types
# (`speed::stats`, re-exported as `speed::Snapshot`…) and updates (`SpeedUpdate`), nothing else.
# Below the layers, the shared parts import none of them: the event schema and decoder
# (`event`), the view definition (`view`), the formats (`storage`) and the configuration
# (`config.rs`). Fails, naming file and line, on any import that breaks this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bad=0
check() { # PATH PATTERN WHY (PATH: a folder or a file under src/)
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
any_layer='crate::(batch|speed|serving|run)\b|use crate::\{[^}]*\b(batch|speed|serving|run)\b'
for shared in event view storage config.rs; do
  check "$shared" "$any_layer" "$shared imports a layer"
done
[ $bad = 0 ] && echo "layers: batch, speed and serving import none of each other; event, view, storage and config import no layer"
exit $bad

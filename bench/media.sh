#!/usr/bin/env bash
# The media benchmark: relayed G.711 calls vs a bare UDP echo floor (see crates/media/bench/).
exec "$(dirname "$0")/../crates/media/bench/media.sh" "$@"

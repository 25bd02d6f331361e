#!/bin/sh
# Copies the RFC 4475 and RFC 5118 torture messages into the fuzz corpora (not committed).
# Run from anywhere: fuzz/seed-corpus.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data="$here/../../shared/testdata"
[ -d "$data/rfc4475" ] || { echo "no test data at $data" >&2; exit 1; }
mkdir -p "$here/corpus/message" "$here/corpus/uri" "$here/corpus/header_values"
cp "$data"/rfc4475/* "$data"/rfc5118/* "$here/corpus/message/"
# URIs and header values: every Request-URI and every header value of those messages.
for f in "$data"/rfc4475/* "$data"/rfc5118/*; do
    name=$(basename "$f")
    head -n 1 "$f" | tr -d '\r' | awk '{print $2}' > "$here/corpus/uri/$name"
    i=0
    sed -n '2,/^\r\{0,1\}$/p' "$f" | tr -d '\r' | while IFS= read -r line; do
        i=$((i + 1))
        printf '%s' "${line#*:}" | sed 's/^[ \t]*//' > "$here/corpus/header_values/$name.$i"
    done
done
echo "corpus ready under $here/corpus"

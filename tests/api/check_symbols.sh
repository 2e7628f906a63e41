#!/bin/sh
# libtessera.so exports exactly the public API: every defined dynamic symbol
# is a tsr_ function declared in a public header, and every tsr_ function
# the public headers declare is exported (a declaration without TSR_API is
# hidden, and fails here by name).
#   check_symbols.sh LIBTESSERA_SO NM CC INCLUDE_DIR
set -u
lib=$1
nm=$2
cc=$3
include_dir=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$nm" -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' |
    sort -u >"$tmp/exported"
if [ ! -s "$tmp/exported" ]; then
    echo "FAIL: $nm found no exported symbols in $lib" >&2
    exit 1
fi

# The functions the public headers declare, after preprocessing (macros
# expanded, comments gone); system headers declare no tsr_ names.
for h in $(cd "$include_dir" && find . -name '*.h' | sed 's|^\./||'); do
    printf '#include "%s"\n' "$h" | "$cc" -E -P -I "$include_dir" -x c - || exit 1
done | grep -o '\btsr_[A-Za-z0-9_]*[[:space:]]*(' | sed 's/[[:space:]]*($//' |
    sort -u >"$tmp/declared"

failed=0
extra=$(comm -23 "$tmp/exported" "$tmp/declared")
if [ -n "$extra" ]; then
    echo "FAIL: $lib exports symbols that no public header declares" \
        "(give them hidden visibility, or declare them public with TSR_API):" >&2
    echo "$extra" | sed 's/^/  /' >&2
    failed=1
fi
missing=$(comm -13 "$tmp/exported" "$tmp/declared")
if [ -n "$missing" ]; then
    echo "FAIL: public functions not exported by $lib (a declaration without TSR_API," \
        "or declared but never defined):" >&2
    echo "$missing" | sed 's/^/  /' >&2
    failed=1
fi
unprefixed=$(grep -v '^tsr_' "$tmp/exported")
if [ -n "$unprefixed" ]; then
    echo "FAIL: exported symbols without the tsr_ prefix:" >&2
    echo "$unprefixed" | sed 's/^/  /' >&2
    failed=1
fi
[ $failed -eq 0 ] && echo "ok: $lib exports exactly the $(wc -l <"$tmp/declared") public functions"
exit $failed

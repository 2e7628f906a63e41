#!/bin/sh
# Every public header compiles on its own, as C11 and (when a C++ compiler
# is installed) as C++11, with warnings as errors: a user can include any
# one of them first.
#   check_headers.sh CC INCLUDE_DIR
set -u
cc=$1
include_dir=$2
cxx=$(command -v c++ || command -v g++ || command -v clang++ || true)
headers=$(cd "$include_dir" && find . -name '*.h' | sed 's|^\./||' | sort)
if [ -z "$headers" ]; then
    echo "no headers under $include_dir" >&2
    exit 1
fi
failed=0
for h in $headers; do
    if ! printf '#include "%s"\n' "$h" |
        "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I "$include_dir" -x c -; then
        echo "FAIL: $h does not compile alone as C11" >&2
        failed=1
    fi
    if [ -n "$cxx" ] && ! printf '#include "%s"\n' "$h" |
        "$cxx" -std=c++11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I "$include_dir" -x c++ -; then
        echo "FAIL: $h does not compile alone as C++11" >&2
        failed=1
    fi
done
[ -n "$cxx" ] || echo "SKIP: no C++ compiler (c++, g++, clang++); headers checked as C only"
[ $failed -eq 0 ] && echo "ok: $(echo "$headers" | wc -l) public headers compile alone"
exit $failed

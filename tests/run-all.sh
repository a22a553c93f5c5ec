#!/bin/bash
# Builds tcp-audit and runs its whole test suite; the last line printed is
# "N passed, N failed[, N skipped]", counting test cases.
#   tests/run-all.sh             the normal build, in build/
#   tests/run-all.sh --sanitize  an AddressSanitizer + UBSan build, in build-asan/
#   tests/run-all.sh --valgrind  the normal build, tcp-audit and the C tests under
#                                valgrind memcheck (all but the fuzz runs)
# Extra arguments go to `meson test` (e.g. --suite unit).
set -u
cd "$(dirname "$0")/.." || exit 1

dir=build
setup=(-Dwerror=true)
if [ "${1:-}" = "--sanitize" ]; then
	shift
	dir=build-asan
	setup+=(-Db_sanitize=address,undefined -Dbuildtype=debug)
fi
test_args=()
junit=testlog.junit.xml
if [ "${1:-}" = "--valgrind" ]; then
	shift
	test_args=(--setup valgrind --no-suite fuzz)
	junit=testlog-valgrind.junit.xml
fi

if [ -d "$dir" ]; then
	meson setup --reconfigure "$dir" "${setup[@]}" >/dev/null || exit 1
else
	meson setup "$dir" "${setup[@]}" >/dev/null || exit 1
fi
ninja -C "$dir" || { echo "0 passed, 1 failed"; exit 1; }

rm -f "$dir/meson-logs/$junit" # never count an older run's results
meson test -C "$dir" --print-errorlogs "${test_args[@]}" "$@"
status=$?

python3 - "$dir/meson-logs/$junit" "$status" <<'PY'
import sys
import xml.etree.ElementTree as ET
passed = failed = skipped = 0
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    root = None
for case in (root.iter("testcase") if root is not None else []):
    if case.find("failure") is not None or case.find("error") is not None:
        failed += 1
    elif case.find("skipped") is not None:
        skipped += 1
    else:
        passed += 1
if sys.argv[2] != "0" and failed == 0:
    failed = 1  # a test program failed without reporting a failing case
print("%d passed, %d failed%s" % (passed, failed, ", %d skipped" % skipped if skipped else ""))
PY
exit $status

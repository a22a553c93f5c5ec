#!/bin/sh
# exe_wrapper of `meson test --setup valgrind`: C test programs run under
# valgrind; the Python tests run as they are (they start tcp-audit under
# valgrind themselves, through TCP_AUDIT_WRAPPER).
case "$(basename "$1")" in
python*) exec "$@" ;;
*) exec $TCP_AUDIT_WRAPPER "$@" ;;
esac

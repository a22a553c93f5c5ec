#!/bin/sh
# Sets the version in its one place (meson.build's project()) and adds the
# matching debian/changelog entry (the package build checks that they agree).
#   packaging/set-version.sh 0.2.0 "What changed."
set -eu
[ $# -eq 2 ] || { echo "usage: $0 VERSION TEXT" >&2; exit 2; }
cd "$(dirname "$0")/.."
sed -i "0,/^  version : '[^']*',/s//  version : '$1',/" meson.build
grep -q "^  version : '$1',\$" meson.build || { echo "$0: cannot set the version in meson.build" >&2; exit 1; }
{
	printf 'tcp-audit (%s) unstable; urgency=medium\n\n  * %s\n\n -- %s  %s\n\n' "$1" "$2" \
		"$(sed -n 's/^ -- \(.*>\)  .*/\1/p' debian/changelog | head -n 1)" "$(date -R)"
	cat debian/changelog
} > debian/changelog.new
mv debian/changelog.new debian/changelog

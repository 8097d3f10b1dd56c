#!/bin/sh
# Prints the package version for the checkout in the current directory, from
# `git describe --tags --dirty` (tags are vX.Y.Z):
#   v0.4.0                 -> 0.4.0
#   v0.4.0-3-gabc1234      -> 0.4.0+3.gabc1234
#   v0.4.0-3-gabc1234-dirty -> 0.4.0+3.gabc1234.dirty
#   no tag (abc1234)       -> 0.0.0+git20261130.abc1234
# Both dpkg and rpm order these as the tags and commit counts say.
set -eu
d=$(git describe --tags --dirty --match 'v[0-9]*' 2>/dev/null || true)
case "$d" in
v[0-9]*)
	d=${d#v}
	base=${d%%-*}
	rest=${d#"$base"}
	rest=$(printf '%s' "$rest" | sed 's/^-//; s/-/./g')
	if [ -n "$rest" ]; then echo "$base+$rest"; else echo "$base"; fi
	;;
*)
	h=$(git rev-parse --short=7 HEAD 2>/dev/null || echo unknown)
	t=$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date -u +%Y%m%d)
	dirty=$(git diff --quiet HEAD 2>/dev/null || echo .dirty)
	echo "0.0.0+git$t.$h$dirty"
	;;
esac

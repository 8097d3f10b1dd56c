#!/bin/sh
# smelter package: before removal (deb: "remove"; rpm: $1 = 0 on erase, 1 on upgrade).
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now smelter-gateway.service smelter-collector.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0

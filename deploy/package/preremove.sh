#!/bin/sh
# smelter package: before removal (deb: "remove"; rpm: $1 = 0 on erase, 1 on upgrade).
set -e
case "$1" in
remove | 0)
	# Debian: deb-systemd-invoke stops (honouring policy-rc.d) and
	# deb-systemd-helper disables, with or without systemd running; RPM
	# distributions have systemctl only
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		if [ -d /run/systemd/system ]; then
			deb-systemd-invoke stop smelter-gateway.service smelter-collector.service >/dev/null 2>&1 || true
		fi
		deb-systemd-helper disable smelter-gateway.service smelter-collector.service >/dev/null 2>&1 || true
	elif [ -d /run/systemd/system ]; then
		systemctl disable --now smelter-gateway.service smelter-collector.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0

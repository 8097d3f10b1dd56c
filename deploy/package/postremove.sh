#!/bin/sh
# smelter package: after removal. The smelter user, /etc/smelter and
# /var/lib/smelter (the spool: unsent data) are kept; delete them by hand.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0

#!/bin/sh
# smelter package: after install or upgrade (deb: "configure"; rpm: $1 = 1 or 2).
set -e

if ! getent group smelter >/dev/null; then
	groupadd --system smelter
fi
if ! getent passwd smelter >/dev/null; then
	useradd --system --gid smelter --home-dir /var/lib/smelter --no-create-home \
		--shell /usr/sbin/nologin --comment "Smelter telemetry" smelter
fi
# serial ports for Modbus RTU
if getent group dialout >/dev/null; then
	usermod -a -G dialout smelter
fi

# data directories (systemd's StateDirectory= creates them too; this covers
# running the binaries by hand as smelter)
install -d -o smelter -g smelter -m 0750 /var/lib/smelter /var/lib/smelter/gateway /var/lib/smelter/collector
# the environment files may hold passwords: readable by the service only
for f in /etc/smelter/gateway.env /etc/smelter/collector.env; do
	if [ -f "$f" ]; then
		chown root:smelter "$f"
		chmod 0640 "$f"
	fi
done

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	# an upgrade restarts running services: the gateway flushes its spool on
	# SIGTERM and resumes from it; a fresh install starts nothing (edit
	# /etc/smelter first, then systemctl enable --now smelter-gateway).
	# Debian's deb-systemd-invoke honours policy-rc.d (chroots, image builds);
	# systemctl is the RPM distributions' way.
	if command -v deb-systemd-invoke >/dev/null 2>&1; then
		deb-systemd-invoke try-restart smelter-gateway.service smelter-collector.service >/dev/null 2>&1 || true
	else
		systemctl try-restart smelter-gateway.service smelter-collector.service >/dev/null 2>&1 || true
	fi
fi
exit 0

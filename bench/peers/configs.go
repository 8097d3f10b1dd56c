package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The workloads, written once for each side with the same devices, points,
// intervals and scaling.

// modbusDevice is one polled device: a connection to addr, unit id unit.
type modbusDevice struct {
	addr string
	unit int
}

// opcuaDevice is one OPC UA session: nodes ns=1;s=v<first>..v<first+nodes-1>
// of endpoint.
type opcuaDevice struct {
	endpoint     string
	first, nodes int
}

// The point and node names both sides use.
func signalName(i int) string { return fmt.Sprintf("s%05d", i) }
func nodeID(i int) string     { return fmt.Sprintf("v%05d", i) }

// smelterHead is the common part of every gateway configuration: JetStream
// uplink only, spool with its defaults (fsync interval), no HTTP front.
func smelterHead(dataDir, natsURL string) string {
	return fmt.Sprintf(`gateway: {id: gw-peers, site: bench, data_dir: %q}
http: {listen: "off"}
log: {level: warn}
uplinks:
  nats: {url: %q, max_pending: 1024}
devices:
`, dataDir, natsURL)
}

// writeSmelterModbus writes gateway.yaml and its template into dir: each
// device polls regs holding registers (uint16, x0.1, kW) as one request
// every interval.
func writeSmelterModbus(dir, natsURL string, devs []modbusDevice, regs int, interval time.Duration) (string, error) {
	var tpl strings.Builder
	tpl.WriteString("template: peers\nclass: generic\npoints:\n")
	for i := range regs {
		fmt.Fprintf(&tpl, "  - {signal: %s, table: holding, address: %d, type: uint16, scale: 0.1, unit: kW}\n", signalName(i), i)
	}
	if err := os.WriteFile(filepath.Join(dir, "peers.yaml"), []byte(tpl.String()), 0o600); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(smelterHead(filepath.Join(dir, "data"), natsURL))
	for i, d := range devs {
		fmt.Fprintf(&b, "  - {id: dev-%03d, class: generic, poll_interval: %s, template: peers.yaml, modbus: {address: %q, unit_id: %d}}\n",
			i, interval, d.addr, d.unit)
	}
	return writeFile(dir, "gateway.yaml", b.String())
}

// writeSmelterOPCUA writes gateway.yaml into dir: one device per session,
// every node subscribed with a sampling and publishing interval of interval,
// queue size 10 (what Telegraf's opcua_listener asks for: gopcua's default);
// isolation is the devices' opcua.isolation (process: a session
// worker process per device, the gateway's default; none: sessions in the
// gateway's process, as Telegraf runs them).
func writeSmelterOPCUA(dir, natsURL string, devs []opcuaDevice, interval time.Duration, isolation string) (string, error) {
	var b strings.Builder
	b.WriteString(smelterHead(filepath.Join(dir, "data"), natsURL))
	for i, d := range devs {
		fmt.Fprintf(&b, "  - id: ua-%02d\n    class: generic\n    opcua: {endpoint: %q, publish_interval: %s, isolation: %s}\n    points:\n",
			i, d.endpoint, interval, isolation)
		for n := d.first; n < d.first+d.nodes; n++ {
			fmt.Fprintf(&b, "      - {signal: %s, node_id: \"ns=1;s=%s\", unit: kW, sampling_interval: %s, queue_size: 10}\n",
				signalName(n), nodeID(n), interval)
		}
	}
	return writeFile(dir, "gateway.yaml", b.String())
}

// telegrafHead is the agent and output part of every Telegraf
// configuration: outputs.nats (core NATS) with the JSON serializer, one
// message per metric (Telegraf's default), flushed every second or whenever
// 1,000 metrics are buffered; a 100,000-metric buffer (Telegraf's default is
// 10,000, too small for 100,000 OPC UA values/s). PEERS_TELEGRAF_DEBUG=1 in
// the environment turns Telegraf's debug log on.
func telegrafHead(natsURL, subject string, interval time.Duration) string {
	debug := os.Getenv("PEERS_TELEGRAF_DEBUG") != ""
	return fmt.Sprintf(`[agent]
  interval = %q
  round_interval = true
  collection_jitter = "0s"
  flush_interval = "1s"
  flush_jitter = "0s"
  metric_batch_size = 1000
  metric_buffer_limit = 100000
  omit_hostname = true
  quiet = %t
  debug = %t

[[outputs.nats]]
  servers = [%q]
  subject = %q
  data_format = "json"
`, interval.String(), !debug, debug, natsURL, subject)
}

// writeTelegrafModbus writes telegraf.conf into dir: one inputs.modbus per
// device (its own connection, as the gateway has), one request of regs
// holding registers (UINT16 x0.1: FLOAT64 fields).
func writeTelegrafModbus(dir, natsURL, subject string, devs []modbusDevice, regs int, interval time.Duration) (string, error) {
	var fields strings.Builder
	for i := range regs {
		if i > 0 {
			fields.WriteString(",\n")
		}
		fmt.Fprintf(&fields, "      {address=%d, name=%q, type=\"UINT16\", scale=0.1}", i, signalName(i))
	}
	var b strings.Builder
	b.WriteString(telegrafHead(natsURL, subject, interval))
	for i, d := range devs {
		fmt.Fprintf(&b, `
[[inputs.modbus]]
  name = "dev-%03d"
  controller = "tcp://%s"
  timeout = "1s"
  configuration_type = "request"
  [[inputs.modbus.request]]
    slave_id = %d
    register = "holding"
    byte_order = "ABCD"
    fields = [
%s
    ]
`, i, d.addr, d.unit, fields.String())
	}
	return writeFile(dir, "telegraf.conf", b.String())
}

// writeTelegrafOPCUA writes telegraf.conf into dir: one inputs.opcua_listener
// per session, subscription interval and sampling interval interval,
// SecurityPolicy None, anonymous, source timestamps.
func writeTelegrafOPCUA(dir, natsURL, subject string, devs []opcuaDevice, interval time.Duration) (string, error) {
	var b strings.Builder
	b.WriteString(telegrafHead(natsURL, subject, interval))
	for i, d := range devs {
		fmt.Fprintf(&b, `
[[inputs.opcua_listener]]
  name = "ua-%02d"
  endpoint = %q
  security_policy = "None"
  security_mode = "None"
  auth_method = "Anonymous"
  connect_timeout = "30s"
  request_timeout = "30s"
  subscription_interval = %q
  timestamp = "source"
  [[inputs.opcua_listener.group]]
    name = "ua-%02d"
    namespace = "1"
    identifier_type = "s"
    sampling_interval = %q
    nodes = [
`, i, d.endpoint, interval.String(), i, interval.String())
		for n := d.first; n < d.first+d.nodes; n++ {
			fmt.Fprintf(&b, "      {name=%q, identifier=%q},\n", signalName(n), nodeID(n))
		}
		b.WriteString("    ]\n")
	}
	return writeFile(dir, "telegraf.conf", b.String())
}

func writeFile(dir, name, text string) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, []byte(text), 0o600)
}

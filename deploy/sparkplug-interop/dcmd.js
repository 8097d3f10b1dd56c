// dcmd.js: a Sparkplug host application's plain write, as Eclipse Tahu
// encodes it: for every JSON line on stdin {"device": "sp-1", "metric":
// "pressure_setpoint", "value": 0.75} it publishes one DCMD (the metric by
// name, type Double, QoS 0 as Sparkplug requires) on
// spBv1.0/<group>/DCMD/<node>/<device> with MQTT.js and Tahu's
// sparkplug-payload encoder, and prints {"sent": n}. It prints
// {"ready": true} once connected. Smelter refuses such a DCMD: it carries
// no signature (docs/commands.md, "Sparkplug DCMD";
// TestInteropSparkplugTahuPlainDCMDRefused in internal/gateway).
//
//   node dcmd.js --url mqtt://127.0.0.1:1883 --group plant --node gw-1
"use strict";
const mqtt = require("mqtt");
const readline = require("readline");
const sparkplug = require("sparkplug-payload").get("spBv1.0");

function arg(name, def) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const group = arg("group", "plant");
const node = arg("node", "gw-1");
const client = mqtt.connect(arg("url", "mqtt://127.0.0.1:1883"), { clientId: arg("client-id", "tahu-host-" + process.pid), clean: true });
let sent = 0;

client.on("connect", () => {
  process.stdout.write(JSON.stringify({ ready: true }) + "\n");
});
client.on("error", (err) => {
  process.stderr.write("mqtt: " + err.message + "\n");
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const w = JSON.parse(line);
  const now = Date.now();
  const payload = sparkplug.encodePayload({
    timestamp: now,
    metrics: [{ name: w.metric, type: "Double", value: w.value, timestamp: now }],
  });
  client.publish("spBv1.0/" + group + "/DCMD/" + node + "/" + w.device, payload, { qos: 0 }, (err) => {
    if (err) process.stderr.write("publish: " + err.message + "\n");
    sent++;
    process.stdout.write(JSON.stringify({ sent: sent }) + "\n");
  });
}).on("close", () => client.end());

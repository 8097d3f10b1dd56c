// edge.js: a Sparkplug B edge node built on Eclipse Tahu's sparkplug-client,
// with one device "compressor-9" (metrics Outputs/Pressure in bar,
// Outputs/Temperature in degF as engUnit, Outputs/Loaded). It publishes its
// NBIRTH and DBIRTH on connect and again on an NCMD rebirth, then reads JSON
// lines on stdin: {"pressure": 7.1, "temperature": 260, "loaded": true,
// "ts": 1700000000000} publishes one DDATA (by name, as Tahu does). It
// prints {"event": "birth"} after each birth sequence and {"event": "ddata"}
// after each DDATA.
//
//   node edge.js --url mqtt://127.0.0.1:1883 --group plant --node tahu-edge-1
"use strict";
const sparkplug = require("sparkplug-client");

function arg(name, def) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const device = "compressor-9";
const client = sparkplug.newClient({
  serverUrl: arg("url", "mqtt://127.0.0.1:1883"),
  username: "",
  password: "",
  groupId: arg("group", "plant"),
  edgeNode: arg("node", "tahu-edge-1"),
  clientId: arg("client-id", "tahu-edge-" + process.pid),
  version: "spBv1.0",
  publishDeath: true,
});

let last = { pressure: 7.0, temperature: 180, loaded: true, ts: Date.now() };

function birth() {
  const now = Date.now();
  client.publishNodeBirth({
    timestamp: now,
    metrics: [{ name: "Node Control/Rebirth", type: "Boolean", value: false, timestamp: now }],
  });
  client.publishDeviceBirth(device, {
    timestamp: now,
    metrics: [
      { name: "Outputs/Pressure", type: "Double", value: last.pressure, timestamp: last.ts },
      { name: "Outputs/Temperature", type: "Float", value: last.temperature, timestamp: last.ts,
        properties: { engUnit: { type: "String", value: "degF" }, engLow: { type: "Double", value: 32 }, engHigh: { type: "Double", value: 300 } } },
      { name: "Outputs/Loaded", type: "Boolean", value: last.loaded, timestamp: last.ts },
    ],
  });
  process.stdout.write(JSON.stringify({ event: "birth" }) + "\n");
}

client.on("birth", birth);
client.on("ncmd", (payload) => {
  for (const m of payload.metrics || []) {
    if (m.name === "Node Control/Rebirth" && m.value) birth();
  }
});
client.on("error", (e) => process.stderr.write("sparkplug-client: " + e + "\n"));

let buf = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  buf += chunk;
  let i;
  while ((i = buf.indexOf("\n")) >= 0) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    if (!line.trim()) continue;
    const v = JSON.parse(line);
    last = Object.assign(last, v);
    client.publishDeviceData(device, {
      timestamp: Date.now(),
      metrics: [
        { name: "Outputs/Pressure", type: "Double", value: last.pressure, timestamp: last.ts },
        { name: "Outputs/Temperature", type: "Float", value: last.temperature, timestamp: last.ts },
        { name: "Outputs/Loaded", type: "Boolean", value: last.loaded, timestamp: last.ts },
      ],
    });
    process.stdout.write(JSON.stringify({ event: "ddata" }) + "\n");
  }
});
process.stdin.on("end", () => {
  client.stop();
  setTimeout(() => process.exit(0), 200);
});

// decode.js: subscribes to a Sparkplug group with MQTT.js and decodes every
// message with Eclipse Tahu's sparkplug-payload, printing one JSON line per
// message on stdout: {"topic", "qos", "retain", "payload"} (64-bit values as
// strings), after a first line {"ready": true} once subscribed.
//
// Sparkplug data messages carry metrics by alias without a datatype (the
// specification: the datatype SHOULD NOT be included in NDATA/DDATA), so a
// host decodes them with what the births said. Tahu's decodePayload is
// stateless and reads a value by the metric's own datatype; like a host,
// this script keeps each edge node's alias -> datatype table from its
// NBIRTH/DBIRTH and fills in the datatype of data metrics that lack one
// before handing the message to Tahu's decoder ("typedFromBirth" counts
// them).
//
//   node decode.js --url mqtt://127.0.0.1:1883 --group plant
"use strict";
const mqtt = require("mqtt");
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const Payload = require("sparkplug-payload/lib/sparkplugPayloadProto").org.eclipse.tahu.protobuf.Payload;

const types = new Map(); // "<group>/<edge node>" -> Map(alias -> datatype)

function withBirthTypes(topic, message) {
  const t = topic.split("/");
  const node = t[1] + "/" + t[3];
  const raw = Payload.decode(message);
  let n = 0;
  if (t[2] === "NBIRTH") types.set(node, new Map());
  const table = types.get(node) || new Map();
  types.set(node, table);
  for (const m of raw.metrics || []) {
    const alias = m.alias === undefined || m.alias === null ? null : String(m.alias);
    if (t[2] === "NBIRTH" || t[2] === "DBIRTH") {
      if (alias !== null && m.datatype) table.set(alias, m.datatype);
    } else if (!m.datatype && alias !== null && table.has(alias)) {
      m.datatype = table.get(alias);
      n++;
    }
  }
  return { bytes: n > 0 ? Payload.encode(raw).finish() : message, typed: n };
}

function arg(name, def) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const url = arg("url", "mqtt://127.0.0.1:1883");
const group = arg("group", "plant");
const client = mqtt.connect(url, { clientId: arg("client-id", "tahu-decoder-" + process.pid), clean: true });

function plain(v) {
  if (v === null || v === undefined) return v;
  if (typeof v === "object" && typeof v.toNumber === "function") return v.toString(); // Long
  if (Buffer.isBuffer(v)) return v.toString("base64");
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === "object") {
    const o = {};
    for (const k of Object.keys(v)) o[k] = plain(v[k]);
    return o;
  }
  return v;
}

client.on("connect", () => {
  client.subscribe("spBv1.0/" + group + "/#", { qos: 1 }, (err) => {
    if (err) {
      process.stderr.write("subscribe: " + err + "\n");
      process.exit(1);
    }
    process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  });
});
client.on("message", (topic, message, packet) => {
  let payload;
  let typed = 0;
  try {
    const w = withBirthTypes(topic, message);
    typed = w.typed;
    payload = plain(sparkplug.decodePayload(w.bytes));
  } catch (e) {
    payload = { error: String(e) };
  }
  process.stdout.write(JSON.stringify({ topic, qos: packet.qos, retain: packet.retain, typedFromBirth: typed, payload }) + "\n");
});
client.on("error", (e) => process.stderr.write("mqtt: " + e + "\n"));
process.stdin.on("end", () => client.end(true, () => process.exit(0))); // the test closes stdin to stop
process.stdin.resume();

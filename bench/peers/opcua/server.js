#!/usr/bin/env node
// A node-opcua server for make bench-peers: NODES Double variables that all
// change every INTERVAL ms, the same server for smelter-gateway and for
// Telegraf's opcua_listener. node-opcua comes from deploy/opcua-interop
// (NODE_PATH=deploy/opcua-interop/node_modules).
//
//   node server.js --pki DIR [--nodes 10000] [--interval 100] [--port 0]
//
// Variables: ns=1;s=v00000 .. v<NODES-1>, Double, SecurityPolicy None,
// anonymous login. On tick n every variable i takes the value (n + i) % 1000,
// so every tick changes every value. The variables are exception-based
// (MinimumSamplingInterval 0): node-opcua reports each change, coalesced over
// the requested sampling interval, instead of running a timer per item. A tick that takes longer than INTERVAL
// delays the next one: the server's real update rate is what it reports.
//
// Stdout, one JSON line each:
//   {"endpoint":"opc.tcp://127.0.0.1:PORT","namespace":1,"nodes":NODES}  once listening
//   {"updates":U}                                                          every 200 ms: values set so far
// It stops on SIGTERM, SIGINT or when stdin closes (never outlives the driver).
"use strict";

const path = require("path");
const {
    OPCUAServer,
    OPCUACertificateManager,
    SecurityPolicy,
    MessageSecurityMode,
    DataType,
    Variant,
    StatusCodes,
} = require("node-opcua");

function usage(msg) {
    process.stderr.write(`server.js: ${msg}\nusage: node server.js --pki DIR [--nodes 10000] [--interval 100] [--port 0]\n`);
    process.exit(2);
}

function parseArgs(argv) {
    const out = { pki: "", nodes: 10000, interval: 100, port: 0 };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (i + 1 >= argv.length) usage(`${a}: missing value`);
        const v = argv[++i];
        switch (a) {
            case "--pki": out.pki = v; break;
            case "--nodes": out.nodes = Number(v); break;
            case "--interval": out.interval = Number(v); break;
            case "--port": out.port = Number(v); break;
            default: usage(`unknown argument ${a}`);
        }
    }
    if (!out.pki) usage("--pki: missing");
    if (!Number.isInteger(out.nodes) || out.nodes < 1 || out.nodes > 100000) usage(`--nodes: ${out.nodes} is not 1..100000`);
    if (!Number.isInteger(out.interval) || out.interval < 10) usage(`--interval: ${out.interval} is not an integer >= 10 (ms)`);
    if (!Number.isInteger(out.port) || out.port < 0 || out.port > 65535) usage(`--port: ${out.port} is not 0..65535`);
    return out;
}

const nodeName = (i) => "v" + String(i).padStart(5, "0");

async function main() {
    const args = parseArgs(process.argv.slice(2));
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(args.pki, "server"),
        automaticallyAcceptUnknownCertificate: true,
    });
    await serverCertificateManager.initialize();
    const server = new OPCUAServer({
        host: "127.0.0.1",
        hostname: "127.0.0.1",
        port: args.port,
        securityPolicies: [SecurityPolicy.None],
        securityModes: [MessageSecurityMode.None],
        allowAnonymous: true,
        serverCertificateManager,
        serverCapabilities: {
            maxSessions: 100,
            maxMonitoredItems: 1000000,
            maxMonitoredItemsPerSubscription: 100000,
            operationLimits: { maxMonitoredItemsPerCall: 100000, maxNodesPerRead: 100000 },
        },
        serverInfo: { applicationUri: "urn:smelter:bench-peers:node-opcua", productUri: "urn:smelter:bench-peers" },
        buildInfo: { productName: "smelter-bench-peers" },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.getOwnNamespace();
    const folder = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "bench" });
    const vars = [];
    for (let i = 0; i < args.nodes; i++) {
        vars.push(
            ns.addVariable({
                componentOf: folder,
                browseName: nodeName(i),
                nodeId: `s=${nodeName(i)}`,
                dataType: "Double",
                minimumSamplingInterval: 0, // exception-based: no sampling timer per item (node-opcua), changes coalesced over the sampling interval
                value: new Variant({ dataType: DataType.Double, value: i % 1000 }),
            }),
        );
    }
    let tick = 0;
    let updates = 0;
    const update = () => {
        tick++;
        const now = new Date();
        for (let i = 0; i < vars.length; i++) {
            vars[i].setValueFromSource(new Variant({ dataType: DataType.Double, value: (tick + i) % 1000 }), StatusCodes.Good, now);
        }
        updates += vars.length;
    };
    await server.start();
    const endpoint = `opc.tcp://127.0.0.1:${server.endpoints[0].port}`;
    process.stdout.write(JSON.stringify({ endpoint, namespace: ns.index, nodes: args.nodes }) + "\n");
    const timer = setInterval(update, args.interval);
    const report = setInterval(() => process.stdout.write(JSON.stringify({ updates }) + "\n"), 200);

    let stopping = false;
    const stop = async () => {
        if (stopping) return;
        stopping = true;
        clearInterval(timer);
        clearInterval(report);
        try {
            await server.shutdown(0);
        } finally {
            process.exit(0);
        }
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
    process.stdin.on("end", stop);
    process.stdin.on("error", stop);
    process.stdin.resume();
}

main().catch((err) => {
    process.stderr.write(`server.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
});

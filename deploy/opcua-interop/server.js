#!/usr/bin/env node
// A node-opcua server: the second, independent OPC UA stack that the
// gateway's driver is proven against (internal/opcua/interop_node_test.go).
//
//   node server.js --pki DIR [--port 0] [--user-trust DIR] [--host 127.0.0.1]
//
// --pki DIR         this server's own PKI (created on first start; a temp dir in tests):
//                   DIR/server (application instance certificate, client certificates
//                   accepted automatically), DIR/user (X.509 user certificates)
// --port N          TCP port, 0 (default) picks a free one
// --user-trust DIR  X.509 user certificates (DER or PEM, any name) allowed to log in;
//                   without it no certificate login succeeds
// --host ADDR       listen address (default 127.0.0.1)
// --namespace URI=V registers namespace URI (repeatable, in the order given, before
//                   urn:smelter:interop) with a Double variable s=Temp of value V: a test
//                   restarts the server with another order to reorder its NamespaceArray
//
// Username login: SMELTER_INTEROP_USER and SMELTER_INTEROP_PASSWORD (both set).
// Anonymous login is always allowed.
//
// Once listening it prints one JSON line on stdout:
//   {"endpoint":"opc.tcp://127.0.0.1:PORT","port":PORT,"certificate":"DIR/server_cert.der",
//    "namespace":"urn:smelter:interop","policies":[...]}
// then one {"event":"session_activated",...} line per activated session, naming the
// channel's policy and mode as the server sees them and the login (anonymous, username
// with the user name, certificate with the SHA-1 thumbprint), so a test can check what
// the server itself negotiated. It stops on SIGTERM, SIGINT or when stdin closes (so it
// never outlives its parent).
//
// Test control: one JSON command per stdin line, each answered by
// {"event":"done","cmd":...} (or {"event":"error",...}) on stdout:
//   {"cmd":"add","name":"late","value":42}            adds the Double AnalogItem ns;s=bf-2.late
//   {"cmd":"status","name":"top_pressure","status":"BadSensorFailure"}  sets a node's StatusCode
//   {"cmd":"status","name":"top_pressure","status":"Good","value":211}  and back, with a value
//   {"cmd":"unit","name":"top_pressure","unit":"bar","value":2.1}  changes its value and EngineeringUnits
//   {"cmd":"unit",...,"semantics":true}               and sets the SemanticsChanged bit (0x4000) on the
//                                                     value itself, so that Read results carry it too
//                                                     (node-opcua sets it on notifications only)
//   {"cmd":"eu","name":"top_pressure","eu":{...}}     sets its EngineeringUnits property to any value,
//                                                     a usable one or not (the value stays):
//       {"type":"info","namespaceUri":"...","unitId":-1,"displayName":"bar"}  an EUInformation
//       {"type":"string","value":"kPa"}   a String   {"type":"double","value":42}  a Double
//       {"type":"null"}                   a Null variant
//   {"cmd":"range","name":"top_pressure","low":"NaN","high":"NaN"}  sets its EURange (numbers, or the
//                                                     texts "NaN", "Infinity", "-Infinity")
//   {"cmd":"fault"}                                    raises the fault the AcknowledgeFault method clears
//   {"cmd":"namespace","uri":"urn:x","value":2.5}      registers namespace urn:x on the live server (appended
//                                                     to its NamespaceArray) with a Double variable s=Temp
//   {"cmd":"addeu","name":"blast_setpoint","unit":"bar","value":8}  gives a variable without
//                                                     EngineeringUnits (blast_setpoint, fault) that
//                                                     property (a HasProperty reference to a new node)
//                                                     and the value, in one tick
//
// Methods (commands, docs/commands.md "OPC UA method calls") on the asset folder ns;s=bf-2:
//   ns;s=bf-2.SetBlastSetpoint(value: Float)  sets the Double variable ns;s=bf-2.blast_setpoint;
//                                             a value above 1000 answers BadOutOfRange
//   ns;s=bf-2.AcknowledgeFault()              sets the Double variable ns;s=bf-2.fault to 0
// and {"event":"called","method":...,"value":...} is printed for each call that ran.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const {
    OPCUAServer,
    OPCUACertificateManager,
    SecurityPolicy,
    MessageSecurityMode,
    DataType,
    Variant,
    StatusCode,
    StatusCodes,
    standardUnits,
    Range,
} = require("node-opcua");

function usage(msg) {
    process.stderr.write(`server.js: ${msg}\nusage: node server.js --pki DIR [--port 0] [--user-trust DIR] [--host 127.0.0.1] [--namespace URI=V ...]\n`);
    process.exit(2);
}

function parseArgs(argv) {
    const out = { port: 0, host: "127.0.0.1", pki: "", userTrust: "", namespaces: [] };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) usage(`${a}: missing value`);
            return argv[++i];
        };
        switch (a) {
            case "--port": {
                const v = next();
                out.port = Number(v);
                if (!Number.isInteger(out.port) || out.port < 0 || out.port > 65535) usage(`--port: ${v} is not 0..65535`);
                break;
            }
            case "--host": out.host = next(); break;
            case "--pki": out.pki = next(); break;
            case "--user-trust": out.userTrust = next(); break;
            case "--namespace": {
                const v = next();
                const eq = v.lastIndexOf("=");
                const value = Number(v.slice(eq + 1));
                if (eq <= 0 || !Number.isFinite(value)) usage(`--namespace: ${v} is not URI=NUMBER`);
                out.namespaces.push({ uri: v.slice(0, eq), value });
                break;
            }
            default: usage(`unknown argument ${a}`);
        }
    }
    if (!out.pki) usage("--pki: missing");
    return out;
}

// The variables: one asset folder, AnalogItems with EngineeringUnits (UNECE
// codes) and EURange. Constant values let a test check exact numbers across
// an encrypted channel; "tick" and "hot_blast_temp" change every 100 ms.
const ASSET = "bf-2";
const VARIABLES = [
    { name: "hot_blast_temp", unit: standardUnits.degree_celsius, range: [900, 1350], value: (n) => 1183.5 + (n % 20) / 4 },
    { name: "top_pressure", unit: standardUnits.kilopascal, range: [0, 320], value: () => 210 },
    { name: "top_gas_co", unit: standardUnits.percent, range: [0, 40], value: () => 22.5 },
    { name: "tick", unit: standardUnits.second, range: [0, 1e9], value: (n) => n },
];

function loadCertificates(dir) {
    if (!dir) return [];
    let names;
    try {
        names = fs.readdirSync(dir);
    } catch (err) {
        usage(`--user-trust: ${err.message}`);
    }
    const out = [];
    for (const f of names) {
        const p = path.join(dir, f);
        if (!fs.statSync(p).isFile()) continue;
        const data = fs.readFileSync(p);
        const text = data.toString("latin1");
        const m = text.match(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/);
        if (m) {
            out.push(Buffer.from(m[1].replace(/\s+/g, ""), "base64"));
        } else if (data[0] === 0x30) {
            out.push(data); // DER
        }
    }
    return out;
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    fs.mkdirSync(args.pki, { recursive: true });

    // Client (application instance) certificates are accepted automatically:
    // this server exists for tests of the client's security.
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(args.pki, "server"),
        automaticallyAcceptUnknownCertificate: true,
    });
    // X.509 user certificates: only those from --user-trust.
    const userCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(args.pki, "user"),
        automaticallyAcceptUnknownCertificate: false,
    });
    await serverCertificateManager.initialize();
    await userCertificateManager.initialize();
    for (const der of loadCertificates(args.userTrust)) {
        await userCertificateManager.trustCertificate(der);
    }

    const user = process.env.SMELTER_INTEROP_USER || "";
    const password = process.env.SMELTER_INTEROP_PASSWORD || "";
    const policies = [
        SecurityPolicy.None,
        SecurityPolicy.Basic256Sha256,
        SecurityPolicy.Aes128_Sha256_RsaOaep,
        SecurityPolicy.Aes256_Sha256_RsaPss,
    ];
    const server = new OPCUAServer({
        host: args.host,
        hostname: args.host,
        port: args.port,
        securityPolicies: policies,
        securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
        allowAnonymous: true,
        serverCertificateManager,
        userCertificateManager,
        userManager: {
            isValidUser: (u, p) => user !== "" && password !== "" && u === user && p === password,
        },
        serverInfo: { applicationUri: "urn:smelter:interop:node-opcua", productUri: "urn:smelter:interop" },
        buildInfo: { productName: "smelter-opcua-interop" },
        disableDiscovery: false,
    });
    await server.initialize();

    const addressSpace = server.engine.addressSpace;
    const addTempNamespace = (uri, value) => {
        if (!uri || !Number.isFinite(value)) throw new Error("namespace needs uri and a numeric value");
        if (addressSpace.getNamespaceIndex(uri) >= 0) throw new Error(`namespace ${uri} exists`);
        addressSpace.registerNamespace(uri).addVariable({
            organizedBy: addressSpace.rootFolder.objects,
            browseName: "Temp",
            nodeId: "s=Temp",
            dataType: "Double",
            minimumSamplingInterval: 50,
            value: new Variant({ dataType: DataType.Double, value }),
        });
    };
    for (const x of args.namespaces) addTempNamespace(x.uri, x.value);
    const ns = addressSpace.registerNamespace("urn:smelter:interop");
    const folder = ns.addFolder(addressSpace.rootFolder.objects, { browseName: ASSET, nodeId: `s=${ASSET}` });
    let n = 0;
    const vars = VARIABLES.map((v) =>
        ns.addAnalogDataItem({
            componentOf: folder,
            browseName: v.name,
            nodeId: `s=${ASSET}.${v.name}`,
            dataType: "Double",
            engineeringUnits: v.unit,
            engineeringUnitsRange: { low: v.range[0], high: v.range[1] },
            minimumSamplingInterval: 50,
            value: new Variant({ dataType: DataType.Double, value: v.value(0) }),
        }),
    );
    // Commands: a setpoint set by a method with a Float argument (the
    // driver converts to the argument's DataType) and an action without
    // argument.
    const plain = (name, value) =>
        ns.addVariable({
            componentOf: folder,
            browseName: name,
            nodeId: `s=${ASSET}.${name}`,
            dataType: "Double",
            minimumSamplingInterval: 50,
            value: new Variant({ dataType: DataType.Double, value }),
        });
    const setpoint = plain("blast_setpoint", 800);
    const fault = plain("fault", 1);
    const unitless = new Map([["blast_setpoint", setpoint], ["fault", fault]]);
    const setter = ns.addMethod(folder, {
        browseName: "SetBlastSetpoint",
        nodeId: `s=${ASSET}.SetBlastSetpoint`,
        inputArguments: [{ name: "value", dataType: DataType.Float, description: { text: "blast setpoint" } }],
        outputArguments: [],
    });
    setter.bindMethod((inputArguments, context, callback) => {
        const v = inputArguments[0].value;
        if (v > 1000) {
            callback(null, { statusCode: StatusCodes.BadOutOfRange });
            return;
        }
        setpoint.setValueFromSource(new Variant({ dataType: DataType.Double, value: v }), StatusCodes.Good, new Date());
        process.stdout.write(JSON.stringify({ event: "called", method: "SetBlastSetpoint", value: v }) + "\n");
        callback(null, { statusCode: StatusCodes.Good, outputArguments: [] });
    });
    const ack = ns.addMethod(folder, {
        browseName: "AcknowledgeFault",
        nodeId: `s=${ASSET}.AcknowledgeFault`,
        inputArguments: [],
        outputArguments: [],
    });
    ack.bindMethod((inputArguments, context, callback) => {
        fault.setValueFromSource(new Variant({ dataType: DataType.Double, value: 0 }), StatusCodes.Good, new Date());
        process.stdout.write(JSON.stringify({ event: "called", method: "AcknowledgeFault" }) + "\n");
        callback(null, { statusCode: StatusCodes.Good, outputArguments: [] });
    });

    const timer = setInterval(() => {
        n++;
        VARIABLES.forEach((v, i) => {
            const value = v.value(n);
            if (vars[i].readValue().value.value !== value) {
                vars[i].setValueFromSource(new Variant({ dataType: DataType.Double, value }), StatusCodes.Good, new Date());
            }
        });
    }, 100);

    // Report each activated session as the server sees it: channel policy
    // and mode, login kind and identity. Passwords are never printed.
    server.on("session_activated", (session, token) => {
        const channel = session.channel;
        const ev = {
            event: "session_activated",
            policy: channel ? String(channel.securityPolicy).replace(/^.*#/, "") : "",
            mode: channel ? MessageSecurityMode[channel.securityMode] : "",
            login: "anonymous",
            user: "",
        };
        if (token && token.certificateData && token.certificateData.length > 0) {
            ev.login = "certificate";
            ev.user = crypto.createHash("sha1").update(token.certificateData).digest("hex");
        } else if (token && typeof token.userName === "string" && token.userName !== "") {
            ev.login = "username";
            ev.user = token.userName;
        }
        process.stdout.write(JSON.stringify(ev) + "\n");
    });

    await server.start();

    const port = server.endpoints[0].port;
    const certFile = path.join(args.pki, "server_cert.der");
    fs.writeFileSync(certFile, server.getCertificate());
    const endpoint = `opc.tcp://${args.host}:${port}`;
    process.stdout.write(
        JSON.stringify({
            endpoint,
            port,
            certificate: certFile,
            namespace: "urn:smelter:interop",
            nodes: VARIABLES.map((v) => `ns=${ns.index};s=${ASSET}.${v.name}`),
            policies: policies.map((p) => p.replace(/^.*#/, "")),
            username: user !== "" && password !== "",
        }) + "\n",
    );

    let stopping = false;
    const stop = async () => {
        if (stopping) return;
        stopping = true;
        clearInterval(timer);
        try {
            await server.shutdown(0);
        } finally {
            process.exit(0);
        }
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
    const reply = (ev) => process.stdout.write(JSON.stringify(ev) + "\n");
    const byName = new Map(VARIABLES.map((v, i) => [v.name, vars[i]]));
    const control = (line) => {
        let c;
        try {
            c = JSON.parse(line);
        } catch (err) {
            reply({ event: "error", error: `not JSON: ${err.message}` });
            return;
        }
        try {
            switch (c.cmd) {
                case "add": {
                    if (byName.has(c.name)) throw new Error(`${c.name} exists`);
                    const v = ns.addAnalogDataItem({
                        componentOf: folder,
                        browseName: c.name,
                        nodeId: `s=${ASSET}.${c.name}`,
                        dataType: "Double",
                        engineeringUnits: standardUnits.kilowatt,
                        engineeringUnitsRange: { low: 0, high: 1e6 },
                        minimumSamplingInterval: 50,
                        value: new Variant({ dataType: DataType.Double, value: Number(c.value) }),
                    });
                    byName.set(c.name, v);
                    break;
                }
                case "status": {
                    const v = byName.get(c.name);
                    if (!v) throw new Error(`no variable ${c.name}`);
                    const code = StatusCodes[c.status];
                    if (!code) throw new Error(`no status ${c.status}`);
                    const cur = v.readValue().value.value;
                    const value = c.value === undefined ? cur : Number(c.value);
                    v.setValueFromSource(new Variant({ dataType: DataType.Double, value }), code, new Date());
                    break;
                }
                case "unit": {
                    // changes a variable's value and EngineeringUnits in one
                    // tick (node-opcua flags the value SemanticsChanged)
                    const v = byName.get(c.name);
                    if (!v) throw new Error(`no variable ${c.name}`);
                    const eu = standardUnits[c.unit];
                    if (!eu) throw new Error(`no unit ${c.unit}`);
                    const k = VARIABLES.findIndex((x) => x.name === c.name);
                    if (k >= 0) VARIABLES[k].value = () => Number(c.value); // the 100 ms updater keeps it
                    const st = c.semantics ? StatusCode.makeStatusCode(StatusCodes.Good, "SemanticChanged") : StatusCodes.Good;
                    v.setValueFromSource(new Variant({ dataType: DataType.Double, value: Number(c.value) }), st, new Date());
                    v.engineeringUnits.setValueFromSource(new Variant({ dataType: DataType.ExtensionObject, value: eu }));
                    break;
                }
                case "eu": {
                    // any EngineeringUnits value, usable or not: node-opcua
                    // refuses a value of the wrong DataType through
                    // setValueFromSource, so that one is put in place as
                    // a hostile server would
                    const v = byName.get(c.name);
                    if (!v) throw new Error(`no variable ${c.name}`);
                    const e = c.eu || {};
                    let variant;
                    switch (e.type) {
                        case "info": {
                            const EUInformation = standardUnits.kilopascal.constructor;
                            variant = new Variant({
                                dataType: DataType.ExtensionObject,
                                value: new EUInformation({
                                    namespaceUri: e.namespaceUri === undefined ? "http://www.opcfoundation.org/UA/units/un/cefact" : e.namespaceUri,
                                    unitId: Number(e.unitId),
                                    displayName: { text: e.displayName || "" },
                                    description: { text: e.description || "" },
                                }),
                            });
                            break;
                        }
                        case "string":
                            variant = new Variant({ dataType: DataType.String, value: String(e.value) });
                            break;
                        case "double":
                            variant = new Variant({ dataType: DataType.Double, value: Number(e.value) });
                            break;
                        case "null":
                            variant = new Variant({ dataType: DataType.Null });
                            break;
                        default:
                            throw new Error(`unknown eu type ${e.type}`);
                    }
                    const prop = v.engineeringUnits;
                    let set = false;
                    if (e.type === "info") {
                        try {
                            prop.setValueFromSource(variant, StatusCodes.Good, new Date());
                            set = true;
                        } catch (err) {
                            set = false;
                        }
                    }
                    if (!set) {
                        const dv = prop.$dataValue;
                        dv.value = variant;
                        dv.statusCode = StatusCodes.Good;
                        dv.sourceTimestamp = new Date();
                        dv.serverTimestamp = new Date();
                    }
                    break;
                }
                case "range": {
                    const v = byName.get(c.name);
                    if (!v) throw new Error(`no variable ${c.name}`);
                    const low = Number(c.low), high = Number(c.high); // Number("NaN") is NaN
                    v.euRange.setValueFromSource(new Variant({ dataType: DataType.ExtensionObject, value: new Range({ low, high }) }));
                    break;
                }
                case "addeu": {
                    const v = unitless.get(c.name);
                    if (!v) throw new Error(`no variable without EngineeringUnits named ${c.name}`);
                    const eu = standardUnits[c.unit];
                    if (!eu) throw new Error(`no unit ${c.unit}`);
                    if (v.getPropertyByName && v.getPropertyByName("EngineeringUnits")) throw new Error(`${c.name} has EngineeringUnits`);
                    v.setValueFromSource(new Variant({ dataType: DataType.Double, value: Number(c.value) }), StatusCodes.Good, new Date());
                    ns.addVariable({
                        propertyOf: v,
                        browseName: { name: "EngineeringUnits", namespaceIndex: 0 },
                        nodeId: `s=${ASSET}.${c.name}.EngineeringUnits`,
                        dataType: "EUInformation",
                        value: new Variant({ dataType: DataType.ExtensionObject, value: eu }),
                    });
                    break;
                }
                case "fault":
                    fault.setValueFromSource(new Variant({ dataType: DataType.Double, value: 1 }), StatusCodes.Good, new Date());
                    break;
                case "namespace":
                    // registered on the live server: appended to the NamespaceArray, as
                    // OPC 10000-5 6.3.1 allows while sessions are open
                    addTempNamespace(c.uri, Number(c.value));
                    break;
                default:
                    throw new Error(`unknown cmd ${c.cmd}`);
            }
            reply({ event: "done", cmd: c.cmd, name: c.name });
        } catch (err) {
            reply({ event: "error", cmd: c.cmd, error: err.message });
        }
    };
    let pending = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (chunk) => {
        pending += chunk;
        let i;
        while ((i = pending.indexOf("\n")) >= 0) {
            const line = pending.slice(0, i).trim();
            pending = pending.slice(i + 1);
            if (line) control(line);
        }
    });
    process.stdin.on("end", stop);
    process.stdin.on("error", stop);
    process.stdin.resume();
}

main().catch((err) => {
    process.stderr.write(`server.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
});

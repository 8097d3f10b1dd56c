// Smelter dashboard: plain JavaScript, no libraries, no build step.
// Data comes from /api/v1 (docs/api.md); live updates from the
// /api/v1/events Server-Sent Events stream, read with fetch so that the
// bearer token travels in a header, never in a URL.
'use strict';

// ---------- token ----------
const TOKEN_KEY = 'smelter.token';
(function takeTokenFromURL() {
  const u = new URL(location.href);
  const t = u.searchParams.get('token');
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t);
    u.searchParams.delete('token');
    history.replaceState(null, '', u.pathname + u.search + u.hash);
  }
})();
const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
function headers(extra) {
  const h = Object.assign({ Accept: 'application/json' }, extra || {});
  if (token()) h.Authorization = 'Bearer ' + token();
  return h;
}

class Unauthorized extends Error {}
async function api(path) {
  const r = await fetch(path, { headers: headers(), cache: 'no-store' });
  if (r.status === 401) { askToken(); throw new Unauthorized('unauthorized'); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// apiAll reads every page of a paged list endpoint (docs/api.md, "Paging"):
// it follows next until the last page and returns the last answer with
// field holding every item. Pages are of the server's default size.
async function apiAll(path, field) {
  const sep = path.includes('?') ? '&' : '?';
  let items = [];
  let cursor = '';
  for (;;) {
    const r = await api(cursor ? path + sep + 'cursor=' + encodeURIComponent(cursor) : path);
    items = items.concat(r[field]);
    if (!r.next) { r[field] = items; return r; }
    cursor = r.next;
  }
}

// post sends JSON; the answer's body is returned with its status, so a
// refusal (403) shows its reason where the command was made.
async function post(path, body) {
  const r = await fetch(path, { method: 'POST', headers: headers({ 'Content-Type': 'application/json' }), body: JSON.stringify(body), cache: 'no-store' });
  if (r.status === 401) { askToken(); throw new Unauthorized('unauthorized'); }
  let out = {};
  try { out = await r.json(); } catch (e) { out = { error: r.statusText }; }
  return { status: r.status, body: out };
}

// session: who the token is (viewer or operator) and whether this
// collector serves commands and the audit trail (GET /api/v1/session).
let sessionCache = null;
async function session() {
  if (!sessionCache || sessionCache.token !== token()) {
    sessionCache = { token: token(), s: await api('/api/v1/session') };
  }
  return sessionCache.s;
}

let loginOpen = false;
function askToken(rejected) {
  const dlg = document.getElementById('login');
  document.getElementById('login-error').hidden = !(rejected || token());
  if (loginOpen) return;
  loginOpen = true;
  dlg.showModal();
}
document.getElementById('login-form').addEventListener('submit', () => {
  sessionStorage.setItem(TOKEN_KEY, document.getElementById('login-token').value.trim());
  loginOpen = false;
  start();
});

// ---------- formatting ----------
// Units are UCUM codes (docs/schema.md); UNITS spells the common ones the
// way operators write them, unit() the rest: [..] marks a special unit
// ([ppm], [in_i]) and {..} an annotation, neither is shown raw.
const UNITS = { Cel: '°C', 'm3/min': 'm³/min', '/min': 'rpm', 'kW.h': 'kWh', 'W/m2': 'W/m²', '1': '', 'g/kW.h': 'g/kWh',
  'kW/(m3/min)': 'kW/(m³/min)', 'm3/h': 'm³/h', 'kg/h': 'kg/h', 'MOhm': 'MΩ', 'deg': '°', 'm/s': 'm/s', 'L/h': 'L/h',
  '[ppm]': 'ppm', 'MJ/m3': 'MJ/m³', m3: 'm³', '%/K': '%/K', 'kV.A': 'kVA', '[kn_i]': 'kn', '[nmi_i]': 'nm',
  'kg/[nmi_i]': 'kg/nm', 'g/(t.[nmi_i])': 'g/(t·nm)', 'g/(kW.h)': 'g/kWh', t: 't' };
function unit(u) {
  if (!u) return '';
  if (u in UNITS) return UNITS[u];
  return u.replace(/\{([^}]*)\}/g, ' $1').replace(/\[([^\]_]+)(_[a-z]+)?\]/g, '$1')
    .replace(/m3/g, 'm³').replace(/m2/g, 'm²').replace(/\./g, '·').trim();
}
// Messages come from the collector with UCUM codes after numbers ("125 Cel
// above trip limit 118 Cel"); show those codes as units too.
const UNIT_IN_TEXT = new RegExp('(\\d) (' + Object.keys(UNITS).filter((u) => u !== '1' && u !== '%')
  .sort((a, b) => b.length - a.length).map((u) => u.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('|') + ')(?=[\\s,;:)]|$)', 'g');
const prettyUnits = (msg) => String(msg ?? '').replace(UNIT_IN_TEXT, (_, d, u) => d + ' ' + unit(u));
// One number format per unit: the decimals an operator reads that unit
// with. Units not listed fall back to num() (three significant digits).
const DECIMALS = { Cel: 1, K: 1, MPa: 3, kPa: 0, bar: 2, kW: 1, MW: 2, W: 0, '%': 1, 'm3/min': 2, 'm3/h': 0, '/min': 0,
  A: 1, V: 0, Hz: 2, 'mm/s': 2, 't/h': 1, '[ppm]': 0, 'kg/t': 0, 'kg/h': 0, mm: 0, 'W/m2': 0, 'kW.h': 0, MOhm: 1, deg: 1,
  'm/s': 1, h: 1, L: 0, 'L/h': 1, 'g/kW.h': 0, 'kW/(m3/min)': 2, 'mm/min': 0, m: 1, s: 0, 'MJ/m3': 1, '%/K': 2, m3: 0, '1': 0,
  '[kn_i]': 1, '[nmi_i]': 1, 'kg/[nmi_i]': 1, 'g/(t.[nmi_i])': 2, 'g/(kW.h)': 1, t: 2 };
// position is the one exception: a tenth of a degree is 11 km
// and a wind turbine's rotor turns at 10-20 rpm; unit "1" is a count or a
// code (0 decimals) except for the power factor, a ratio
const SIGNAL_DECIMALS = { latitude: 5, longitude: 5, rotor_speed: 1, power_factor: 2, draught: 2 };
// units whose decimals follow the magnitude, one rule for every value in
// that unit: tonnes are whole from 100 t (capacity 63,500 t, cargo
// 58,000 t), with 2 decimals below (a window's CO2, 12.35 t)
const DECIMALS_BY_SIZE = { t: (v) => (Math.abs(v) >= 100 ? 0 : 2) };
function fmt(v, u, signal) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  const d = SIGNAL_DECIMALS[signal] ?? (DECIMALS_BY_SIZE[u] ? DECIMALS_BY_SIZE[u](v) : DECIMALS[u]);
  if (d === undefined) return num(v);
  return v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d, useGrouping: Math.abs(v) >= 10000 });
}
const withUnit = (v, u, signal) => { const x = fmt(v, u, signal), uu = unit(u); return uu ? x + ' ' + uu : x; };
// changeCell is an audit record's "old → new" cell (HTML). A failed or
// rejected record has no new value (nothing was written, or the outcome is
// unknown): it shows the target asked for, marked so, never as the
// device's value.
const changeCell = (r) => {
  const val = (v) => (v === undefined ? '' : withUnit(v, r.unit, r.signal));
  if (r.new !== undefined) return esc(val(r.old)) + ' → ' + esc(val(r.new));
  if (r.target !== undefined) return (r.old !== undefined ? esc(val(r.old)) + ' → ' : '') + '<span class="muted" title="asked for; not the device\'s value">' + esc(val(r.target)) + ' (asked)</span>';
  if (r.old !== undefined) return esc(val(r.old));
  return r.old_label ? esc(r.old_label + ' → ' + r.new_label) : '';
};
function num(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  const a = Math.abs(v);
  if (a >= 10000) return Math.round(v).toLocaleString('en-US');
  if (a >= 1000) return v.toFixed(0);
  if (a >= 100) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  if (a === 0) return '0';
  return v.toPrecision(3);
}
function ago(ms) {
  if (ms === null || ms === undefined || ms < 0) return '–';
  const s = Math.round(ms / 1000);
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return (s / 3600).toFixed(1) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}
const pad2 = (n) => String(n).padStart(2, '0');
function clock(ms) {
  if (!ms) return '–';
  const d = new Date(ms);
  return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
}
function dateTime(ms) {
  if (!ms) return '–';
  const d = new Date(ms);
  return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + clock(ms);
}
function dur(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const label = (s) => String(s).replace(/_/g, ' ');
// KPI values: a ratio (unit "1") reads as a percentage; excess_air is the
// air ratio lambda = 21/(21 - O2) and reads as excess air (lambda - 1) in %,
// so the name and the unit agree (lambda 1.195 = excess air 19.5 %).
const KPI_FMT = {
  ie_class: (v) => (v > 0 ? 'IE' + v : 'below IE1'),
  excess_air: (v) => ((v - 1) * 100).toFixed(1) + ' %',
};
const KPI_NOTE = { excess_air: (v) => 'air ratio λ ' + v.toFixed(2) };
function kpiVal(k) {
  if (k.status === 'n/a') return 'n/a';
  if (KPI_FMT[k.name]) return KPI_FMT[k.name](k.value);
  if (k.unit === '1') return (k.value * 100).toFixed(1) + ' %';
  return withUnit(k.value, k.unit);
}

// nameplate ratings with the catalog's units; fuel_type names its fuel,
// ship_type the CII ship type (MEPC.353(78))
const FUEL_NAME = { hfo: 'HFO', lfo: 'LFO', mdo_mgo: 'MDO/MGO', lng: 'LNG' };
const fuelName = (n) => FUEL_NAME[n] || label(n);
function rating(k, x) {
  const fuel = k === 'fuel_type' && S.catalog?.fuels?.[String(x)];
  if (fuel) return fuelName(fuel);
  const r = S.catalog?.ratings?.[k];
  if (r && r.codes && r.codes[String(x)]) return r.codes[String(x)]; // ship_type: the catalog's code names
  return r ? withUnit(x, r.unit) : num(x);
}
// fuel codes (the catalog's fuels) label the fuel-type signals
// (me_fuel_type ...) by the fuel's name, in values and on chart axes
function fuelCodes(signal) {
  if (!/(^|_)fuel_type$/.test(signal || '') || !S.catalog?.fuels) return null;
  const out = {};
  for (const [c, n] of Object.entries(S.catalog.fuels)) out[c] = fuelName(n);
  return out;
}

// ---------- KPI windows ----------
// Windows are tumbling, aligned to the epoch, in plant time (kpi.window and
// kpi.windows of the collector's configuration).
function windowOf(cls) {
  const w = S.catalog?.kpi_windows;
  if (!w) return 15 * 60000;
  return (w.by_class && w.by_class[cls]) || w.default_ms;
}
const nextWindowEnd = (cls, t) => Math.floor(t / windowOf(cls)) * windowOf(cls) + windowOf(cls);
function durShort(ms) {
  if (ms % 3600000 === 0) return ms / 3600000 + ' h';
  if (ms % 60000 === 0) return ms / 60000 + ' min';
  return Math.round(ms / 1000) + ' s';
}
const PARTIAL = 0.95; // a window covered less than this is shown as partial

// ---------- classes ----------
const CLASS_ORDER = ['blast_furnace', 'boiler', 'air_compressor', 'motor', 'diesel_engine', 'wind_turbine', 'pv_string',
  'cnc_machine', 'engineering_machine', 'ship', 'generic'];
const CLASS_TITLE = { blast_furnace: 'Blast furnaces', boiler: 'Industrial boilers', air_compressor: 'Air compressors',
  motor: 'Motors', diesel_engine: 'Diesel engines', wind_turbine: 'Wind turbines', pv_string: 'PV strings',
  cnc_machine: 'CNC machine tools', engineering_machine: 'Engineering machinery', ship: 'Ships', generic: 'Other equipment' };
const KEY_SIGNALS = {
  air_compressor: ['discharge_pressure', 'discharge_temp', 'input_power', 'free_air_delivery'],
  motor: ['power', 'current_a', 'winding_temp', 'vibration'],
  boiler: ['steam_pressure', 'steam_flow', 'flue_gas_temp', 'flue_o2'],
  pv_string: ['ac_power', 'string_current', 'irradiance_poa', 'module_temp'],
  wind_turbine: ['wind_speed', 'power', 'rotor_speed', 'gearbox_temp'],
  diesel_engine: ['speed', 'load', 'power', 'fuel_rate'],
  blast_furnace: ['hot_blast_temp', 'blast_volume', 'top_pressure', 'hot_metal_temp'],
  cnc_machine: ['program_state', 'spindle_speed', 'spindle_load', 'part_count'],
  engineering_machine: ['engine_hours', 'fuel_used', 'hydraulic_oil_temp', 'fault_code'],
  ship: ['sog', 'me_speed', 'shaft_power', 'me_fuel_flow'],
};
const classRank = (c) => { const i = CLASS_ORDER.indexOf(c); return i < 0 ? 99 : i; };
const classTitle = (c) => CLASS_TITLE[c] || label(c);

// ---------- state ----------
const S = {
  assets: new Map(), // "site/id" -> AssetOut
  // gateway list, "id" -> GatewayView: from the stream's gateways.snapshot,
  // kept by its gateways.delta events (or /api/v1/gateways before the first
  // snapshot)
  gateways: new Map(),
  gwLive: false, // a snapshot arrived on this stream
  // the server's clock as this browser's clock plus an offset, taken from
  // every gateway event's "now": silence is judged on it, never on this
  // browser's clock alone (a browser set 10 min off must not call every
  // gateway silent)
  clockOffset: 0,
  silentAfter: 30000, // ms, the collector's http.gateway_silent_after: from the snapshot (or /api/v1/gateways)
  // ms a gateway's measured clock may lie off before the collector marks it
  // (clock_skew; http.gateway_clock_tolerance, 0: nothing marked): from the
  // snapshot (or /api/v1/gateways)
  clockTolerance: 2000,
  // ms a gateway's counters and last message may lag: the stream sends a
  // change of them alone at most this often (from the snapshot; 0 before)
  gwRefresh: 0,
  activeAlerts: 0,
  catalog: null,
  view: null, // current page controller {render(), onAssets(list), onAlert(a), onKPI(k), onGateways()}
};
const akey = (a) => a.site + '/' + a.id;

// Data clock. Readings carry the time of the plant that produced them: a
// demo plant may run at another time of day or faster than real time. The
// API serves each asset's data clock (data_now, clock_rate); ages and chart
// ends run on it, never on this browser's clock against source time.
function stamp(a) { a._got = Date.now(); return a; }
function dataNow(a) {
  if (!a || !a.data_now) return Date.now();
  return a.data_now + (Date.now() - a._got) * (a.clock_rate || 1);
}
const ageOf = (a) => (a && a.last_ts ? dataNow(a) - a.last_ts : null);
function plantNow() {
  let t = 0;
  for (const a of S.assets.values()) if (a.data_now) t = Math.max(t, dataNow(a));
  return t || Date.now();
}
function freshness(a) {
  if (!a.last_ts) return 'no data yet';
  return a.silent ? 'no data for ' + dur(ageOf(a)) : 'updated ' + ago(ageOf(a));
}

// Gateways. Silence needs no message from the server: a gateway not
// reported offline is silent once the server's clock is more than
// silentAfter past its last message.
const serverNow = () => Date.now() + S.clockOffset;
function setServerClock(now) { if (now) S.clockOffset = now - Date.now(); }
function gwStatus(g) {
  if (g.status === 'offline') return 'offline';
  return serverNow() - g.last_recv > S.silentAfter ? 'silent' : 'online';
}

async function loadAssets() {
  const r = await apiAll('/api/v1/assets', 'assets');
  S.assets = new Map(r.assets.map((a) => [akey(a), stamp(a)]));
}
async function loadAlertCount() {
  const r = await api('/api/v1/alerts?active=true&limit=1');
  setAlertCount(r.total);
}
function setAlertCount(n) {
  S.activeAlerts = n;
  const el = document.getElementById('nav-alerts');
  el.hidden = !n;
  el.textContent = n;
}

// ---------- live stream ----------
let streamCtl = null;
let lastEventID = '';
// Reconnect delay: the server's Retry-After when it refuses the stream (503
// beyond max_streams), else doubling from 2 s to 30 s while the stream keeps
// failing, back to 2 s once one opened.
let streamRetryMS = 2000;
function setConn(state, text) {
  const c = document.getElementById('conn');
  c.className = 'conn ' + state;
  document.getElementById('conn-text').textContent = text;
}
async function stream() {
  if (streamCtl) streamCtl.abort();
  const ctl = new AbortController();
  streamCtl = ctl;
  const h = headers({ Accept: 'text/event-stream' });
  if (lastEventID) h['Last-Event-ID'] = lastEventID;
  try {
    S.gwLive = false;
    const r = await fetch('/api/v1/events?gateways=delta', { headers: h, signal: ctl.signal, cache: 'no-store' });
    if (r.status === 401) { setConn('down', 'signed out'); askToken(); return; }
    if (!r.ok || !r.body) {
      const after = Number(r.headers.get('Retry-After'));
      retry(ctl, after > 0 ? Math.min(after, 300) * 1000 : backoff(),
        r.status >= 400 && r.status < 500 && r.status !== 429 ? 'refused (' + r.status + ')' : 'reconnecting');
      return;
    }
    streamRetryMS = 2000;
    setConn('live', 'live');
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        dispatch(block);
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  if (ctl.signal.aborted) return;
  retry(ctl, backoff(), 'reconnecting');
}
function backoff() {
  const d = streamRetryMS;
  streamRetryMS = Math.min(streamRetryMS * 2, 30000);
  return d;
}
function retry(ctl, ms, text) {
  setConn('down', text);
  setTimeout(() => { if (streamCtl === ctl) stream(); }, ms);
}
function dispatch(block) {
  let type = 'message', data = '', id = '';
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const c = line.indexOf(':');
    const f = c < 0 ? line : line.slice(0, c);
    const v = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
    if (f === 'event') type = v; else if (f === 'data') data += v; else if (f === 'id') id = v;
  }
  if (id) lastEventID = id;
  if (!data) return;
  const msg = JSON.parse(data);
  switch (type) {
    case 'assets':
      for (const a of msg) S.assets.set(akey(a), stamp(a));
      S.view?.onAssets?.(msg);
      break;
    case 'gateways.snapshot':
      setServerClock(msg.now);
      S.silentAfter = msg.silent_after_ms || S.silentAfter;
      S.clockTolerance = msg.clock_tolerance_ms ?? S.clockTolerance;
      S.gwRefresh = msg.refresh_ms || 0;
      S.gateways = new Map(msg.gateways.map((g) => [g.id, g]));
      S.gwLive = true;
      S.view?.onGateways?.();
      break;
    case 'gateways.delta':
      setServerClock(msg.now);
      for (const id of msg.removed) S.gateways.delete(id);
      for (const g of msg.changed) S.gateways.set(g.id, g);
      S.view?.onGateways?.(msg);
      break;
    case 'alert':
      setAlertCount(Math.max(0, S.activeAlerts + (msg.state === 'raised' ? 1 : msg.state === 'cleared' ? -1 : 0)));
      S.view?.onAlert?.(msg);
      break;
    case 'kpi':
      S.view?.onKPI?.(msg);
      break;
    case 'resync':
      loadAssets().then(() => S.view?.render());
      loadAlertCount();
      break;
  }
}

// ---------- router ----------
const main = document.getElementById('main');
function route() {
  const h = location.hash.replace(/^#\/?/, '');
  const parts = h.split('/').filter(Boolean).map(decodeURIComponent);
  let view;
  switch (parts[0]) {
    case 'asset': view = assetPage(parts[1], parts[2]); break;
    case 'alerts': view = alertsPage(); break;
    case 'energy': view = energyPage(); break;
    case 'gateways': view = gatewaysPage(); break;
    case 'history': view = historyPage(); break; // history.js
    default: view = fleetPage();
  }
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.route === view.name);
  S.view?.leave?.();
  S.view = view;
  view.render();
}
window.addEventListener('hashchange', route);
// keep relative times fresh
setInterval(() => S.view?.clock?.(), 1000);

// ---------- fleet ----------
function fleetPage() {
  return {
    name: 'fleet',
    render() {
      document.title = 'Smelter · Fleet';
      const assets = [...S.assets.values()];
      const sites = new Map();
      for (const a of assets) {
        if (!sites.has(a.site)) sites.set(a.site, new Map());
        const cls = sites.get(a.site);
        if (!cls.has(a.class)) cls.set(a.class, []);
        cls.get(a.class).push(a);
      }
      let html = '<h1>Fleet overview</h1>' + summaryHTML();
      if (!assets.length) html += '<div class="empty">No asset has reported yet. Point a gateway at this collector\'s broker; assets appear with their first batch.</div>';
      for (const site of [...sites.keys()].sort()) {
        const cls = sites.get(site);
        const count = [...cls.values()].reduce((s, l) => s + l.length, 0);
        html += `<section class="site" data-site="${esc(site)}"><h2>Site ${esc(site)} <small>${count} assets</small></h2><div class="classes">`;
        for (const c of [...cls.keys()].sort((a, b) => classRank(a) - classRank(b) || a.localeCompare(b))) {
          const list = cls.get(c).sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
          html += `<div class="class-group" data-class="${esc(c)}"><h3>${esc(classTitle(c))} <span class="muted">· ${list.length}</span></h3><div class="cards">`;
          html += list.map(card).join('') + '</div></div>';
        }
        html += '</div></section>';
      }
      main.innerHTML = html;
    },
    onAssets(list) {
      let structural = false;
      for (const a of list) {
        const el = main.querySelector(`.card[data-asset="${CSS.escape(akey(a))}"]`);
        if (!el) { structural = true; break; }
        el.outerHTML = card(a);
      }
      if (structural) this.render(); else this.updateSummary();
    },
    updateSummary() {
      const el = main.querySelector('.summary');
      if (el) el.outerHTML = summaryHTML();
    },
    onAlert() { this.updateSummary(); },
    clock() {
      for (const el of main.querySelectorAll('.card [data-age]')) {
        const a = S.assets.get(el.dataset.age);
        if (a) el.textContent = freshness(a);
      }
    },
  };
}
function summaryHTML() {
  const assets = [...S.assets.values()];
  const n = { ok: 0, warn: 0, alarm: 0, stale: 0 };
  for (const a of assets) n[a.status] = (n[a.status] || 0) + 1;
  return '<div class="summary">' + stat('', assets.length, 'assets', '#/') + stat('ok', n.ok, 'ok', '#/') +
    stat('warn', n.warn, 'warning', '#/alerts') + stat('alarm', n.alarm, 'alarm', '#/alerts') + stat('stale', n.stale, 'stale', '#/gateways') +
    stat(S.activeAlerts ? 'alarm' : '', S.activeAlerts, 'active alerts', '#/alerts') + '</div>';
}
function stat(cls, n, l, href) {
  return `<a class="stat ${cls}" href="${href}"><div class="n">${n}</div><div class="l">${esc(l)}</div></a>`;
}
function signalValue(s) {
  if (!s) return '<span class="muted">–</span>';
  if (s.value === null) return `<span class="q-${esc(s.quality)}">${esc(s.quality)}</span>`;
  const code = fuelCodes(s.signal)?.[String(s.value)];
  const txt = s.text ? esc(label(s.text)) : code ? esc(code) : esc(fmt(s.value, s.unit, s.signal));
  const u = s.text || code ? '' : unit(s.unit);
  return `<span class="q-${esc(s.quality)}" data-signal="${esc(s.signal)}" data-value="${s.value}">${txt}</span>${u ? `<span class="u">${esc(u)}</span>` : ''}`;
}
function card(a) {
  const sigs = new Map(a.signals.map((s) => [s.signal, s]));
  let keys = (KEY_SIGNALS[a.class] || []).filter((k) => sigs.has(k));
  if (keys.length < 4) keys = keys.concat(a.signals.map((s) => s.signal).filter((k) => !keys.includes(k))).slice(0, 4);
  const vals = keys.map((k) => `<div><div class="k">${esc(label(k))}</div><div class="v">${signalValue(sigs.get(k))}</div></div>`).join('');
  const st = a.status;
  const alerts = a.alerts ? `<span class="pill ${esc(a.severity)}">${a.alerts} alert${a.alerts > 1 ? 's' : ''}</span>` : (a.silent ? 'silent' : a.running ? 'running' : 'not running');
  return `<a class="card ${esc(st)}" href="#/asset/${encodeURIComponent(a.site)}/${encodeURIComponent(a.id)}" data-asset="${esc(akey(a))}" data-status="${esc(st)}">
    <div class="head"><span class="id">${esc(a.id)}</span><span class="pill ${esc(st)}">${esc(st)}</span></div>
    <div class="vals">${vals || '<div class="muted">no values yet</div>'}</div>
    <div class="foot"><span data-age="${esc(akey(a))}"${a.silent ? ' class="silent"' : ''}>${esc(freshness(a))}</span><span>${alerts}</span></div></a>`;
}

// ---------- charts ----------
// drawChart draws series [{t, v, min, max}] (v null = gap) on a canvas
// between t0 and t1, with a min/max band, axes and an optional limit line.
// Telemetry is sampled and held: a reading stands until the next one, so
// values are drawn as steps (report-by-exception and OPC UA change-only
// signals send nothing while unchanged: a sloped line between two far
// samples would invent values). opts.holdTo extends the newest value to
// that time while the signal is good; opts.line draws straight segments
// (KPI trends, one point per window); a lone sample shows as its value.
function drawChart(cv, pts, t0, t1, opts) {
  opts = opts || {};
  const dpr = window.devicePixelRatio || 1;
  const W = cv.clientWidth, H = cv.clientHeight;
  if (!W || !H) return;
  if (cv.width !== Math.round(W * dpr) || cv.height !== Math.round(H * dpr)) { cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr); }
  const g = cv.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  g.font = '11px system-ui, sans-serif';
  let L = opts.compact ? 4 : 46;
  if (opts.states) L = Math.max(L, 10 + Math.max(...opts.states.map((st) => g.measureText(label(st)).width)));
  if (opts.codes) L = Math.max(L, 10 + Math.max(...Object.values(opts.codes).map((c) => g.measureText(c).width)));
  const R = 6, T = 6, B = opts.compact ? 4 : 18;
  const vis = pts.filter((p) => p.t >= t0 - 60000 && p.t <= t1);
  let lo = Infinity, hi = -Infinity;
  for (const p of vis) {
    if (p.v === null) continue;
    lo = Math.min(lo, p.min ?? p.v); hi = Math.max(hi, p.max ?? p.v);
  }
  let codeTicks = null;
  if (opts.codes && lo <= hi) { // the codes the data takes, labelled
    codeTicks = Object.keys(opts.codes).map(Number).filter((c) => c >= lo && c <= hi).sort((a, b) => a - b);
    if (!codeTicks.length) codeTicks = null;
  }
  for (const l of opts.lines || []) { if (l.v !== null && l.v !== undefined) { lo = Math.min(lo, l.v); hi = Math.max(hi, l.v); } }
  g.fillStyle = '#8792a2';
  if (lo === Infinity) { g.textAlign = 'left'; g.fillText('no data in this window', L + 8, T + 16); return; }
  if (hi - lo < 1e-9) { const d = Math.abs(hi) * 0.05 || 1; lo -= d; hi += d; }
  if (opts.states) { lo = -0.3; hi = opts.states.length - 0.7; } else if (codeTicks) { lo = codeTicks[0] - 0.3; hi = codeTicks[codeTicks.length - 1] + 0.3; } else { const padv = (hi - lo) * 0.08; lo -= padv; hi += padv; }
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  // grid
  g.strokeStyle = '#edf0f3'; g.lineWidth = 1;
  if (!opts.compact) {
    const ticks = opts.states ? opts.states.map((_, i) => i) : codeTicks || niceTicks(lo, hi, 4);
    for (const v of ticks) {
      const yy = Math.round(y(v)) + 0.5;
      g.beginPath(); g.moveTo(L, yy); g.lineTo(W - R, yy); g.stroke();
      g.textAlign = 'right'; g.fillText(opts.states ? label(opts.states[v]) : codeTicks ? opts.codes[v] : tickLabel(v, ticks), L - 5, yy + 4);
    }
    g.textAlign = 'center';
    const span = t1 - t0;
    const step = [10000, 30000, 60000, 120000, 300000, 600000, 900000, 1800000, 3600000, 3 * 3600000, 6 * 3600000, 12 * 3600000,
      86400000, 7 * 86400000, 30 * 86400000].find((st) => span / st <= 7) || 61 * 86400000;
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      const d = new Date(t);
      const txt = step >= 86400000 ? d.getDate() + ' ' + d.toLocaleString('en', { month: 'short' })
        : pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + (step < 60000 ? ':' + pad2(d.getSeconds()) : '');
      const half = g.measureText(txt).width / 2;
      if (x(t) - half >= L && x(t) + half <= W) g.fillText(txt, x(t), H - 4);
    }
  }
  // limit lines
  for (const l of opts.lines || []) {
    if (l.v === null || l.v === undefined) continue;
    g.strokeStyle = l.color || '#c92a2a'; g.setLineDash([4, 3]);
    g.beginPath(); g.moveTo(L, y(l.v)); g.lineTo(W - R, y(l.v)); g.stroke(); g.setLineDash([]);
  }
  const color = opts.color || '#1c6dd0';
  // min/max band, per contiguous run
  const runs = [];
  let run = [];
  for (const p of vis) { if (p.v === null) { if (run.length) runs.push(run); run = []; } else run.push(p); }
  if (run.length) runs.push(run);
  g.fillStyle = color + '22';
  for (const r of runs) {
    if (r.length < 2 || r[0].min === undefined) continue;
    g.beginPath();
    r.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p.max)) : g.moveTo(x(p.t), y(p.max))));
    for (let i = r.length - 1; i >= 0; i--) g.lineTo(x(r[i].t), y(r[i].min));
    g.closePath(); g.fill();
  }
  g.strokeStyle = color; g.lineWidth = 1.6; g.lineJoin = 'round';
  runs.forEach((r, ri) => {
    g.beginPath();
    r.forEach((p, i) => {
      if (!i) { g.moveTo(x(p.t), y(p.v)); return; }
      if (!opts.line) g.lineTo(x(p.t), y(r[i - 1].v));
      g.lineTo(x(p.t), y(p.v));
    });
    const lastP = r[r.length - 1];
    const newest = ri === runs.length - 1 && lastP === vis[vis.length - 1];
    const hold = newest && opts.holdTo && opts.holdTo > lastP.t;
    if (hold) g.lineTo(x(opts.holdTo), y(lastP.v));
    g.stroke();
    if (r.length === 1 && !hold) {
      // a lone sample: a short level mark and its value, not a dot
      const xx = x(r[0].t), yy = y(r[0].v);
      g.beginPath(); g.moveTo(Math.max(L, xx - 6), yy); g.lineTo(Math.min(W - R, xx + 6), yy); g.stroke();
      if (!opts.compact && opts.fmt) {
        g.fillStyle = color; g.textAlign = xx > W - 80 ? 'right' : 'left';
        g.fillText(opts.fmt(r[0].v), xx + (xx > W - 80 ? -9 : 9), yy - 5);
      }
    }
  });
  // gaps: shade where only bad or stale data arrived
  g.fillStyle = 'rgba(201, 42, 42, 0.10)';
  for (const p of vis) if (p.v === null && p.n === 0 && p.bad) g.fillRect(x(p.t), T, Math.max(2, x(p.t + 1000) - x(p.t)), H - T - B);
}

// tickLabel writes every tick of one axis with the same decimals, those its
// step needs (900, 1000, 1100; 3.0, 3.2, 3.4).
function tickLabel(v, ticks) {
  const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
  let d = 0;
  while (d < 6 && Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) > 1e-6 * 10 ** d) d++;
  return v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d, useGrouping: Math.abs(v) >= 10000 });
}

// niceTicks returns round tick values within [lo, hi].
function niceTicks(lo, hi, n) {
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

// ---------- asset page ----------
function assetPage(site, id) {
  const key = site + '/' + id;
  let detail = null, hist = new Map(), kpiWins = [], windowMS = 15 * 60000, timer = null, sess = {};
  const base = `/api/v1/assets/${encodeURIComponent(site)}/${encodeURIComponent(id)}`;
  const v = {
    name: 'fleet',
    async render() {
      document.title = 'Smelter · ' + id;
      main.innerHTML = '<p class="muted">Loading…</p>';
      try {
        const [d, h, k] = await Promise.all([
          api(`/api/v1/assets/${encodeURIComponent(site)}/${encodeURIComponent(id)}`),
          api(`/api/v1/assets/${encodeURIComponent(site)}/${encodeURIComponent(id)}/history?since=1h`),
          api(`/api/v1/assets/${encodeURIComponent(site)}/${encodeURIComponent(id)}/kpis`),
        ]);
        detail = stamp(d); kpiWins = k.windows;
        hist = new Map(h.series.map((s) => [s.signal, s.points]));
        sess = await session();
      } catch (e) {
        if (!(e instanceof Unauthorized)) main.innerHTML = `<div class="empty">${esc(e.message)}</div>`;
        return;
      }
      this.layout();
    },
    layout() {
      const a = detail;
      const np = Object.entries(a.nameplate || {}).map(([k, x]) => `${esc(label(k))} <b>${esc(rating(k, x))}</b>`).join(' · ');
      let html = `<div class="crumbs"><a href="#/">Fleet</a> / ${esc(a.site)} / ${esc(classTitle(a.class))}</div>
        <div class="asset-head"><h1>${esc(a.id)}</h1><span class="pill ${esc(a.status)}" id="a-status">${esc(a.status)}</span></div>
        <div class="facts"><span>class <b>${esc(label(a.class))}</b></span><span>path <b>${esc((a.path || []).filter((p) => p !== '_').join(' / '))}</b></span>
        <span>gateway <b>${esc(a.gateway || '–')}</b></span><span>state <b id="a-run">${a.running ? 'running' : 'not running'}</b></span>
        <span>last data <b id="a-age">${esc(ago(ageOf(a)))}</b></span>${np ? `<span>${np}</span>` : ''}</div>
        <div id="a-alerts"></div>
        ${sess.commands && (a.writable || []).length ? '<h2>Commands</h2><div id="a-commands"></div>' : ''}
        ${a.class === 'ship' ? '<h2>Voyage report</h2><div id="a-voyage"></div>' : ''}
        <h2>Energy KPIs</h2><div id="a-kpis"></div>
        <div class="toolbar"><h2 class="flush">Signals</h2><div class="seg" id="a-win">
          <button data-w="300000">5 min</button><button data-w="900000">15 min</button><button data-w="3600000">1 h</button></div>
          <span class="muted">values hold until the next reading (steps) · band: min–max per bucket · red shade: bad or stale readings</span></div>
        <div class="charts" id="a-charts"></div>
        ${sess.audit ? '<h2>Command audit trail</h2><div id="a-audit"></div>' : ''}`;
      main.innerHTML = html;
      this.drawCommands(); this.drawAudit();
      main.querySelector('#a-win').addEventListener('click', (e) => {
        if (!e.target.dataset.w) return;
        windowMS = +e.target.dataset.w; this.drawCharts();
      });
      this.drawAlerts(); this.drawKPIs(); this.drawVoyage();
      const sigs = a.signals.filter((s) => hist.has(s.signal));
      main.querySelector('#a-charts').innerHTML = sigs.map((s) => `<div class="chart" data-chart="${esc(s.signal)}">
        <div class="title"><span class="name">${esc(label(s.signal))}</span><span class="now" data-now="${esc(s.signal)}"></span></div>
        <canvas></canvas><div class="muted small">${esc(s.description || '')}</div></div>`).join('') ||
        '<div class="empty">No signal history yet.</div>';
      this.drawCharts();
      historyAssetHook(main, site, id, () => this.drawCharts()); // history.js: 6h..1y ranges
      if (!timer) { timer = new ResizeObserver(() => this.drawCharts()); timer.observe(main); }
    },
    // one form per writable signal (operators only); Review opens the
    // confirm step with the point's limits and its current value
    drawCommands() {
      const el = main.querySelector('#a-commands');
      if (!el) return;
      el.innerHTML = `<div class="panel cmds">` + detail.writable.map((w) => {
        const input = w.states
          ? `<select name="value">${(w.write.allowed || []).map((x) => `<option>${esc(x)}</option>`).join('')}</select>`
          : `<input name="value" type="number" step="any" required${w.write.min !== undefined ? ` min="${w.write.min}"` : ''}${w.write.max !== undefined ? ` max="${w.write.max}"` : ''}>`;
        return `<form class="cmd" data-signal="${esc(w.signal)}"><span class="name">${esc(label(w.signal))}</span>
          <span class="muted">now <b data-cmd-now="${esc(w.signal)}">${this.currentText(w)}</b></span>
          <label>new value ${input}${w.states ? '' : ` <span class="u">${esc(unit(w.unit))}</span>`}</label>
          <button type="submit">Review…</button></form>`;
      }).join('') + `<div id="cmd-confirm" hidden></div><div id="cmd-result"></div></div>`;
      for (const f of el.querySelectorAll('form.cmd')) {
        f.addEventListener('submit', (e) => { e.preventDefault(); this.confirmCommand(f.dataset.signal, f.elements.value.value); });
      }
    },
    currentText(w) {
      const s = detail.signals.find((x) => x.signal === w.signal);
      if (!s) return '–';
      return s.text || (s.states && s.value !== null ? label(s.states[s.value] ?? s.value) : withUnit(s.value, s.unit || w.unit, w.signal));
    },
    limitsText(w) {
      const l = w.write, u = (x) => withUnit(x, w.unit, w.signal), out = [];
      if (l.min !== undefined) out.push(['min', u(l.min)]);
      if (l.max !== undefined) out.push(['max', u(l.max)]);
      if (l.allowed) out.push(['allowed states', l.allowed.map(label).join(', ')]);
      out.push(['max step', l.max_step ? u(l.max_step) : 'no limit']);
      out.push(['min interval', l.min_interval_ms ? dur(l.min_interval_ms) : 'no limit']);
      return out;
    },
    confirmCommand(signal, raw) {
      const w = detail.writable.find((x) => x.signal === signal);
      const box = main.querySelector('#cmd-confirm');
      const value = w.states ? raw : Number(raw);
      const shown = w.states ? label(raw) : withUnit(value, w.unit, w.signal);
      box.innerHTML = `<div class="confirm" data-signal="${esc(signal)}"><h3>Send this command to ${esc(id)}?</h3>
        <table class="kv"><tr><th>signal</th><td>${esc(label(signal))}</td></tr>
        <tr><th>current value</th><td data-confirm-now>${esc(this.currentText(w))}</td></tr>
        <tr><th>new value</th><td data-confirm-new><b>${esc(shown)}</b></td></tr>
        ${this.limitsText(w).map(([k, x]) => `<tr><th>${esc(k)}</th><td data-limit="${esc(k)}">${esc(x)}</td></tr>`).join('')}
        <tr><th>requester</th><td>${esc(sess.name || '')}</td></tr></table>
        <p class="muted small">The gateway checks the limits again, writes, reads back and audits every step.</p>
        <div class="actions"><button type="button" data-act="send">Send command</button> <button type="button" data-act="cancel">Cancel</button></div></div>`;
      box.hidden = false;
      box.querySelector('[data-act=cancel]').onclick = () => { box.hidden = true; box.innerHTML = ''; };
      box.querySelector('[data-act=send]').onclick = async (e) => {
        e.target.disabled = true;
        const body = { signal, value, unit: w.states ? '' : w.unit };
        const out = main.querySelector('#cmd-result');
        out.innerHTML = '<p class="muted">Sending…</p>';
        let r;
        try { r = await post(base + '/commands', body); } catch (err) { return; }
        box.hidden = true; box.innerHTML = '';
        out.innerHTML = this.resultHTML(r, w);
        this.drawAudit();
      };
    },
    resultHTML(r, w) {
      if (r.status !== 200) return `<div class="result" data-verdict="error"><span class="pill alarm">error ${r.status}</span> ${esc(r.body.error || '')}</div>`;
      const x = r.body, u = (v) => withUnit(v, x.unit || w.unit, w.signal);
      const cls = { verified: 'ok', written: 'warn', rejected: 'alarm', failed: 'alarm' }[x.verdict] || 'na';
      const change = x.old !== undefined && x.new !== undefined ? ` · ${esc(u(x.old))} → ${esc(u(x.new))}` : '';
      return `<div class="result" data-verdict="${esc(x.verdict)}"><span class="pill ${cls}">${esc(x.verdict)}</span>
        command <code>${esc(x.id)}</code>${change}${x.read_back !== undefined ? ` · read back ${esc(u(x.read_back))}` : ''}${x.duplicate ? ' · earlier outcome (retry)' : ''}
        ${x.reason ? `<div class="msg">${esc(prettyUnits(x.reason))}</div>` : ''}</div>`;
    },
    async drawAudit(before) {
      const el = main.querySelector('#a-audit');
      if (!el) return;
      let page;
      try { page = await api(base + '/audit?limit=20' + (before ? '&before=' + before : '')); } catch (e) {
        if (!(e instanceof Unauthorized)) el.innerHTML = `<div class="empty">${esc(e.message)}</div>`;
        return;
      }
      if (!page.records.length && !before) { el.innerHTML = '<div class="empty" id="audit-empty">No command for this asset in the audit stream.</div>'; return; }
      const cls = { verified: 'ok', written: 'warn', rejected: 'alarm', failed: 'alarm', received: 'na', accepted: 'info' };
      el.innerHTML = `<div class="table-wrap"><table class="audit"><thead><tr><th>time</th><th>command</th><th>requester</th><th>signal</th><th>requested</th><th>verdict</th><th>old → new</th><th>reason</th></tr></thead><tbody>` +
        page.records.map((r) => `<tr data-audit-id="${esc(r.id)}" data-verdict="${esc(r.verdict)}"><td>${esc(dateTime(Date.parse(r.at)))}</td><td><code>${esc(r.id)}</code></td>
          <td>${esc(r.requester || '')}${r.verdict === 'rejected' && !r.signer ? ' <span class="pill alarm" title="no trusted key signed it">unauthorized</span>' : ''}</td><td>${esc(label(r.signal || ''))}</td>
          <td>${esc(r.requested || '')} ${esc(unit(r.requested_unit || ''))}</td><td><span class="pill ${cls[r.verdict] || 'na'}">${esc(r.verdict)}</span>${r.duplicate ? ' <span class="muted small">retry</span>' : ''}</td>
          <td>${changeCell(r)}</td>
          <td class="msg">${esc(prettyUnits(r.reason || ''))}</td></tr>`).join('') +
        `</tbody></table></div>${page.before ? `<div class="actions"><button type="button" id="audit-older" data-before="${page.before}">Older</button></div>` : ''}`;
      const older = el.querySelector('#audit-older');
      if (older) older.onclick = () => this.drawAudit(older.dataset.before);
    },
    drawAlerts() {
      const al = detail.active_alerts;
      main.querySelector('#a-alerts').innerHTML = al.length ? `<div class="panel"><h3>Active alerts</h3>${alertTable(al, false)}</div>` : '';
    },
    drawKPIs() {
      const el = main.querySelector('#a-kpis');
      const last = kpiWins[kpiWins.length - 1];
      const w = windowOf(detail.class);
      if (!last) {
        el.innerHTML = `<div class="empty" id="a-kpi-empty">No KPI window finished yet for this asset. Its KPIs are computed over ${esc(durShort(w))} windows of plant time; the first ends at ${esc(clock(nextWindowEnd(detail.class, dataNow(detail))))}.</div>`;
        return;
      }
      const cov = (last.coverage * 100).toFixed(0);
      const partial = last.coverage < PARTIAL;
      if (last.kpis.every((k) => k.status === 'n/a')) {
        const why = partial
          ? `was partial (${cov} % covered${kpiWins.length === 1 ? ': the collector started in the middle of it' : ': readings were missing'})`
          : 'held too little usable data to judge (the asset was not running, its readings were not good, or, for a PV string, less than 0.02 kWh/m² of sunlight)';
        el.innerHTML = `<div class="empty" id="a-kpi-empty">The window ${esc(clock(last.start))}–${esc(clock(last.end))} ${esc(why)}: nothing to judge yet. The next window ends at ${esc(clock(last.end + w))}.</div>`;
        return;
      }
      el.innerHTML = `<p class="muted">window ${clock(last.start)}–${clock(last.end)} (${esc(durShort(w))}) · coverage ${cov} %${partial ? ' <span class="pill na">partial window</span>' : ''} · ${kpiWins.length} window(s) kept</p><div class="kpis">` +
        last.kpis.map((k) => `<div class="kpi" data-kpi="${esc(k.name)}"><div class="title">
          <span>${esc(label(k.name))}</span><span class="pill ${esc(k.status === 'n/a' ? 'na' : k.status)}">${esc(k.status)}</span></div>
          <div class="big">${esc(kpiVal(k))}</div>
          <div class="muted small">${[KPI_NOTE[k.name] && k.status !== 'n/a' ? KPI_NOTE[k.name](k.value) : '', k.ref !== undefined ? 'rated ' + kpiVal({ ...k, value: k.ref }) : '',
            k.limit !== undefined ? 'limit ' + kpiVal({ ...k, value: k.limit }) : ''].filter(Boolean).map(esc).join(' · ')}</div>
          ${k.message ? `<div class="msg">${esc(prettyUnits(k.message))}</div>` : ''}<canvas></canvas></div>`).join('') + '</div>';
      for (const box of el.querySelectorAll('.kpi')) {
        const name = box.dataset.kpi;
        const pts = kpiWins.map((w) => { const k = w.kpis.find((x) => x.name === name); return { t: w.end, v: k && k.status !== 'n/a' ? k.value : null }; });
        const lim = last.kpis.find((x) => x.name === name)?.limit;
        const t1 = last.end, t0 = kpiWins[0].start;
        if (pts.filter((p) => p.v !== null).length < 2) {
          // one window is its big number above, not a trend
          box.querySelector('canvas').replaceWith(Object.assign(document.createElement('div'), { className: 'muted small', textContent: 'trend after the next window' }));
          continue;
        }
        drawChart(box.querySelector('canvas'), pts, t0, t1, { compact: true, line: true, lines: [{ v: lim }], color: '#e8590c' });
      }
    },
    drawVoyage() {
      const el = main.querySelector('#a-voyage');
      if (el) voyageReport(el, detail, kpiWins);
    },
    drawCharts() {
      if (!detail || historyActive(main)) return;
      // zoom to the data while there is less of it than the window
      const t1 = dataNow(detail);
      let first = Infinity;
      for (const pts of hist.values()) if (pts.length) first = Math.min(first, pts[0].t);
      const t0 = Math.max(t1 - windowMS, Math.min(first - 5000, t1 - 60000));
      for (const b of main.querySelectorAll('#a-win button')) b.classList.toggle('on', +b.dataset.w === windowMS);
      const sigs = new Map(detail.signals.map((s) => [s.signal, s]));
      for (const box of main.querySelectorAll('.chart')) {
        const name = box.dataset.chart, s = sigs.get(name);
        box.querySelector('[data-now]').innerHTML = s ? signalValue(s) : '';
        const pts = (hist.get(name) || []).filter((p) => p.t >= t1 - 3600000);
        hist.set(name, pts);
        const holdTo = s && s.quality === 'good' && !detail.silent ? t1 : 0;
        const codes = fuelCodes(name);
        drawChart(box.querySelector('canvas'), pts, t0, t1, { states: s && s.states, codes, holdTo,
          fmt: (x) => (s && s.states ? label(s.states[x] ?? x) : codes && codes[x] ? codes[x] : withUnit(x, s && s.unit, name)) });
      }
    },
    onAssets(list) {
      const a = list.find((x) => akey(x) === key);
      if (!a || !detail) return;
      for (const s of a.signals) {
        const pts = hist.get(s.signal);
        if (!pts) continue;
        const b = s.ts - (s.ts % 1000);
        const last = pts[pts.length - 1];
        const p = { t: b, v: s.value, min: s.value, max: s.value, n: s.value === null ? 0 : 1, bad: s.value === null ? 1 : 0 };
        if (!last || b > last.t) pts.push(p);
        const d = detail.signals.find((x) => x.signal === s.signal);
        if (d) Object.assign(d, { value: s.value, text: s.text, quality: s.quality, ts: s.ts });
      }
      Object.assign(detail, { status: a.status, running: a.running, last_ts: a.last_ts, alerts: a.alerts, silent: a.silent,
        data_now: a.data_now, clock_rate: a.clock_rate, _got: a._got });
      const st = main.querySelector('#a-status');
      if (st) { st.className = 'pill ' + a.status; st.textContent = a.status; }
      const run = main.querySelector('#a-run');
      if (run) run.textContent = a.running ? 'running' : 'not running';
      for (const w of detail.writable || []) {
        const n = main.querySelector(`[data-cmd-now="${CSS.escape(w.signal)}"]`);
        if (n) n.textContent = this.currentText(w);
      }
      this.drawVoyage();
      this.drawCharts();
    },
    async onAlert(al) {
      if (al.site !== site || al.asset !== id || !detail) return;
      const d = await api(`/api/v1/assets/${encodeURIComponent(site)}/${encodeURIComponent(id)}`);
      detail.active_alerts = d.active_alerts;
      this.drawAlerts();
      if (al.kind === 'command') this.drawAudit();
    },
    onKPI(k) {
      if (k.site !== site || k.asset !== id || !detail) return;
      kpiWins.push(k);
      this.drawKPIs(); this.drawVoyage();
    },
    clock() {
      const el = main.querySelector('#a-age');
      if (el && detail) el.textContent = detail.silent ? 'none for ' + dur(ageOf(detail)) : ago(ageOf(detail));
    },
    leave() { if (timer) timer.disconnect(); timer = null; },
  };
  return v;
}

// ---------- voyage report (class ship) ----------
// A ship's page reads like a noon report: where she is and how she goes,
// what the main engine does against its load diagram, what she burns and
// emits, and the current voyage leg's EEOI and CII (docs/rules.md).
function dm(deg, pos, neg) {
  if (deg === null || deg === undefined) return '–';
  const h = deg < 0 ? neg : pos, a = Math.abs(deg), d = Math.floor(a), m = (a - d) * 60;
  return `${d}° ${m.toFixed(2).padStart(5, '0')}′ ${h}`;
}
function voyageReport(el, a, wins) {
  const sig = new Map(a.signals.map((s) => [s.signal, s]));
  const val = (n) => { const s = sig.get(n); return s && s.quality === 'good' ? s.value : null; };
  const show = (n) => { const s = sig.get(n); return s ? withUnit(val(n), s.unit, n) : '–'; };
  const last = wins[wins.length - 1];
  const kpi = (n) => last?.kpis.find((k) => k.name === n && k.status !== 'n/a');
  const fuel = (code) => (code === null ? '–' : fuelName(S.catalog?.fuels?.[String(code)] || 'fuel ' + code));
  const np = a.nameplate || {}, mcr = np.rated_power, nmcr = np.rated_speed;
  const rpm = val('me_speed'), pw = val('shaft_power');
  const load = mcr && pw !== null ? pw / mcr : null;
  // load diagram: line 4 (torque/speed limit) P = MCR (n/n_MCR)^2, line 7 100 % MCR
  const lim4 = mcr && nmcr && rpm !== null ? Math.min(mcr, mcr * (rpm / nmcr) ** 2) : null;
  const sog = val('sog');
  let phase = 'at sea';
  if (sog !== null && sog < 1) phase = rpm ? 'stopped, engine turning' : 'at berth or anchor';
  else if (sog !== null && sog < 8) phase = 'manoeuvring';
  const consumers = [['main engine', 'me_fuel_flow', 'me_fuel_type'], ['auxiliary engines', 'ae_fuel_flow', 'ae_fuel_type'], ['boiler', 'boiler_fuel_flow', 'boiler_fuel_type']];
  const total = consumers.reduce((t, c) => t + (val(c[1]) || 0), 0);
  const exh = [1, 2, 3, 4, 5, 6].map((i) => val('exhaust_temp_cyl_' + i));
  const good = exh.filter((x) => x !== null), mean = good.length ? good.reduce((x, y) => x + y, 0) / good.length : null;
  const cii = kpi('cii'), eeoi = kpi('eeoi'), leg = kpi('leg_distance'), sfoc = kpi('sfoc'), fpm = kpi('fuel_per_nm'), co2 = kpi('co2');
  const kv = (k) => (k ? kpiVal(k) : 'n/a');
  const row = (l, v, id) => `<tr${id ? ` data-voyage="${esc(id)}"` : ''}><th>${esc(l)}</th><td>${v}</td></tr>`;
  el.innerHTML = `<div class="voyage">
    <div class="panel"><h3>Position and passage</h3><table class="kv">
      ${row('state', esc(phase), 'phase')}
      ${row('position', esc(dm(val('latitude'), 'N', 'S') + '  ' + dm(val('longitude'), 'E', 'W')), 'position')}
      ${row('speed over ground / through water', esc(show('sog') + ' / ' + show('stw')), 'speed')}
      ${row('heading / course over ground', esc(show('heading') + ' / ' + show('cog')))}
      ${row('draught · depth below keel', esc(show('draught') + ' · ' + show('water_depth')))}
      ${row('cargo on board', esc(show('cargo')), 'cargo')}</table></div>
    <div class="panel"><h3>Main engine</h3><table class="kv">
      ${row('speed · shaft power', esc(show('me_speed') + ' · ' + show('shaft_power')))}
      ${row('load (of MCR ' + (mcr ? withUnit(mcr, 'kW') : '–') + ')', esc(load === null ? '–' : (load * 100).toFixed(1) + ' %'), 'load')}
      ${row('load diagram limit at this speed', esc(lim4 === null ? '–' : withUnit(lim4, 'kW') + (pw !== null && pw > lim4 ? ' — overload' : ' — inside')), 'diagram')}
      ${row('SFOC (last window)', esc(kv(sfoc)) + (sfoc?.ref !== undefined ? ` <span class="muted small">shop test on this fuel ${esc(kpiVal({ ...sfoc, value: sfoc.ref }))}</span>` : ''), 'sfoc')}
      ${row('scavenge air · jacket water · lube oil', esc(show('scavenge_air_pressure') + ' · ' + show('jacket_water_temp') + ' · ' + show('lube_oil_pressure')))}
      </table>
      <div class="cyl" data-voyage="cylinders">${exh.map((x, i) => {
        const dev = x !== null && mean !== null ? x - mean : null;
        return `<div class="${dev !== null && Math.abs(dev) > 40 ? 'off' : ''}"><span class="muted small">cyl ${i + 1}</span><b>${esc(fmt(x, 'Cel'))}</b><span class="small">${dev === null ? '' : (dev >= 0 ? '+' : '') + dev.toFixed(0) + ' K'}</span></div>`;
      }).join('')}</div></div>
    <div class="panel"><h3>Fuel and emissions</h3><table class="kv">
      ${consumers.map(([l, f, ty]) => row(l, esc(show(f) + ' · ' + fuel(val(ty))))).join('')}
      ${row('total · per day', esc(withUnit(total, 'kg/h') + ' · ' + (total * 24 / 1000).toFixed(1) + ' t/day'), 'fuel-total')}
      ${row('fuel per nautical mile (last window)', esc(kv(fpm)), 'fuel-per-nm')}
      ${row('CO2 (last window, IMO C_F)', esc(kv(co2)), 'co2')}</table></div>
    <div class="panel"><h3>Voyage leg</h3><table class="kv">
      ${row('distance sailed this leg', esc(kv(leg)), 'leg')}
      ${row('EEOI (MEPC.1/Circ.684)', esc(eeoi ? kv(eeoi) : 'n/a (in ballast, or no cargo figure)'), 'eeoi')}
      ${row('attained CII of the leg (MEPC.352(78))', esc(cii ? kv(cii) : 'n/a (from 20 nm of leg)') +
        (cii && cii.ref ? ` <span class="muted small">${esc((cii.value / cii.ref).toFixed(2))} × required ${esc(kpiVal({ ...cii, value: cii.ref }))}</span>` : ''), 'cii')}
      </table><p class="muted small">A leg runs from one departure to the next (passage, manoeuvring and port stay); its CII is not the regulatory annual rating.</p></div>
  </div>`;
}

// ---------- alerts ----------
function alertTable(list, withAsset) {
  if (!list.length) return '<div class="empty">No alerts match.</div>';
  // an active alert's duration runs on its own asset's data clock: a
  // gateway at another speed (or a real-time one beside a fast demo) keeps
  // its own time
  const nowOf = (a) => {
    const as = S.assets.get(a.site + '/' + a.asset);
    return as && as.data_now ? dataNow(as) : plantNow();
  };
  return `<div class="table-wrap"><table><thead><tr><th>Severity</th><th>State</th>${withAsset ? '<th>Asset</th>' : ''}<th>Rule</th><th>Message</th>
    <th>Raised</th><th>Cleared</th><th class="num">Duration</th></tr></thead><tbody>` +
    list.map((a) => {
      const active = a.state !== 'cleared';
      return `<tr data-alert-key="${esc(a.key)}" data-asset="${esc(a.site + '/' + a.asset)}" data-rule="${esc(a.rule)}" data-state="${esc(a.state)}">
      <td><span class="pill ${esc(a.severity)}">${esc(a.severity)}</span></td>
      <td>${active ? '<b>active</b>' : '<span class="pill cleared">cleared</span>'}</td>
      ${withAsset ? `<td><a href="#/asset/${encodeURIComponent(a.site)}/${encodeURIComponent(a.asset)}">${esc(a.asset)}</a><div class="muted small">${esc(a.site)} · ${esc(label(a.class))}</div></td>` : ''}
      <td>${esc(a.rule)}${a.signal ? `<div class="muted small">${esc(a.signal)}</div>` : ''}</td>
      <td>${esc(prettyUnits(a.message))}</td>
      <td title="${esc(dateTime(a.raised_at))}">${esc(clock(a.raised_at))}</td>
      <td title="${esc(dateTime(a.cleared_at))}">${a.cleared_at ? esc(clock(a.cleared_at)) : '–'}</td>
      <td class="num">${esc(dur((a.cleared_at || nowOf(a)) - a.raised_at))}</td></tr>`;
    }).join('') + '</tbody></table></div>';
}
function alertsPage() {
  const f = { active: 'true', severity: '', class: '', site: '' };
  let pending = null;
  return {
    name: 'alerts',
    async render() {
      document.title = 'Smelter · Alerts';
      const sites = [...new Set([...S.assets.values()].map((a) => a.site))].sort();
      const classes = [...new Set([...S.assets.values()].map((a) => a.class))].sort((a, b) => classRank(a) - classRank(b));
      const opt = (v, l, cur) => `<option value="${esc(v)}"${v === cur ? ' selected' : ''}>${esc(l)}</option>`;
      main.innerHTML = `<h1>Alerts</h1><div class="toolbar" id="al-filters">
        <label>Show <select name="active">${opt('true', 'active', f.active)}${opt('', 'active and recent', f.active)}${opt('false', 'cleared', f.active)}</select></label>
        <label>Severity <select name="severity">${opt('', 'all', f.severity)}${opt('warn', 'warn and above', f.severity)}${opt('alarm', 'alarm and above', f.severity)}${opt('trip', 'trip', f.severity)}</select></label>
        <label>Class <select name="class">${opt('', 'all', f.class)}${classes.map((c) => opt(c, classTitle(c), f.class)).join('')}</select></label>
        <label>Site <select name="site">${opt('', 'all', f.site)}${sites.map((s) => opt(s, s, f.site)).join('')}</select></label>
        <span class="muted" id="al-count"></span></div><div id="al-list"><p class="muted">Loading…</p></div>`;
      main.querySelector('#al-filters').addEventListener('change', (e) => { f[e.target.name] = e.target.value; this.load(); });
      await this.load();
    },
    async load() {
      const q = new URLSearchParams();
      for (const [k, x] of Object.entries(f)) if (x) q.set(k, x);
      let r;
      try { r = await api('/api/v1/alerts?' + q); } catch (e) { return; }
      if (f.active === 'true' && !f.severity && !f.class && !f.site) setAlertCount(r.total);
      const list = main.querySelector('#al-list');
      if (!list) return;
      main.querySelector('#al-count').textContent = r.total + ' alert' + (r.total === 1 ? '' : 's') + (r.total > r.alerts.length ? ` (showing ${r.alerts.length})` : '');
      list.innerHTML = alertTable(r.alerts, true);
    },
    onAlert() {
      if (pending) return;
      pending = setTimeout(() => { pending = null; this.load(); }, 300);
    },
    leave() { if (pending) clearTimeout(pending); },
  };
}

// ---------- energy ----------
function energyPage() {
  return {
    name: 'energy',
    async render() {
      document.title = 'Smelter · Energy';
      let r;
      try { r = await api('/api/v1/kpis/rollup?top=10'); } catch (e) { return; }
      let html = '<h1>Energy efficiency</h1><p class="muted">Latest finished KPI window per asset, ranked worst first. Red bars are outside their limit (docs/rules.md lists formulas and limits).</p>';
      const wins = r.windows || S.catalog?.kpi_windows;
      const pending = [...new Set([...S.assets.values()].map((a) => a.class))]
        .filter((c) => c !== 'generic' && !r.classes.some((x) => x.class === c)).sort((a, b) => classRank(a) - classRank(b));
      const t = plantNow();
      const pendingList = pending.map((c) => `${esc(classTitle(c))} (${esc(durShort(windowOf(c)))}, ends ${esc(clock(nextWindowEnd(c, t)))})`).join(' · ');
      if (!r.classes.length) {
        const by = Object.entries(wins?.by_class || {}).map(([c, ms]) => `${esc(classTitle(c))} ${esc(durShort(ms))}`).join(', ');
        html += `<div class="empty" id="energy-empty">No KPI window has finished yet. KPIs are computed over tumbling windows of plant time: ${esc(durShort(wins?.default_ms || 900000))}${by ? ' (' + by + ')' : ''}.${pendingList ? ' First windows end: ' + pendingList + '.' : ''}</div>`;
      } else if (pending.length) {
        html += `<p class="muted" id="energy-pending">Waiting for a first window with usable data: ${pendingList}.</p>`;
      }
      html += '<div class="energy">';
      for (const c of r.classes.sort((a, b) => classRank(a.class) - classRank(b.class))) {
        // the key KPI (kpi.KeyKPI, sent as key) comes first
        const kpis = c.kpis.slice().sort((a, b) => !!b.key - !!a.key);
        html += `<div class="panel" data-class="${esc(c.class)}"><h2>${esc(classTitle(c.class))}</h2>`;
        for (const k of kpis) {
          const maxv = Math.max(...k.ranking.map((e) => Math.abs(e.value)), 1e-9);
          const fmtv = (v) => kpiVal({ name: k.name, value: v, unit: k.unit, status: 'ok' });
          // long units sit in the heading; % and ratios keep their sign
          const fmtShort = (v) => (k.unit && k.unit !== '1' && k.unit !== '%' ? fmtv(v).replace(' ' + unit(k.unit), '') : fmtv(v));
          const u = k.unit && k.unit !== '1' && k.unit !== '%' ? ` <span class="muted">(${esc(unit(k.unit))})</span>` : '';
          html += `<div class="kpi-row" data-kpi="${esc(k.name)}"><h3>${esc(label(k.name))}${u} ${k.key ? '<span class="pill info">key KPI</span>' : ''}
            ${k.out_of_limit ? `<span class="pill high">${k.out_of_limit} out of limit</span>` : ''}</h3>
            <div class="stats">${k.count} asset(s) · mean ${esc(fmtv(k.mean))} · min ${esc(fmtv(k.min))} · max ${esc(fmtv(k.max))}${k.worse === 'high' || k.worse === 'low' ? ` · worse when ${esc(k.worse)}` : ''}</div>
            <ul class="rank">${k.ranking.map((e) => `<li data-asset="${esc(e.site + '/' + e.asset)}"><a href="#/asset/${encodeURIComponent(e.site)}/${encodeURIComponent(e.asset)}"><span class="site">${esc(e.site)}/</span>${esc(e.asset)}</a>
              <div class="bar" title="${esc(e.message || '')}"><span class="${esc(e.status)}" data-w="${Math.max(2, (100 * Math.abs(e.value)) / maxv).toFixed(1)}"></span></div>
              <span class="val">${esc(fmtShort(e.value))}${e.coverage < PARTIAL ? ` <span class="pill na" title="window ${esc(clock(e.end - windowOf(c.class)))}–${esc(clock(e.end))} covered ${(e.coverage * 100).toFixed(0)} %">partial</span>` : ''}</span></li>`).join('')}</ul></div>`;
        }
        html += '</div>';
      }
      main.innerHTML = html + '</div>';
      // the CSP forbids style attributes; the CSSOM is allowed
      for (const s of main.querySelectorAll('.rank .bar span')) s.style.width = s.dataset.w + '%';
    },
    onKPI() { this.render(); },
  };
}

// ---------- gateways ----------
const statusPill = (st) => `<span class="pill ${esc(st === 'online' ? 'ok' : st)}">${esc(st)}</span>`;
function gatewaysPage() {
  return {
    name: 'gateways',
    async render() {
      document.title = 'Smelter · Gateways';
      if (!S.gwLive) { // the stream's snapshot has not arrived yet
        let r;
        try { r = await apiAll('/api/v1/gateways', 'gateways'); } catch (e) { return; }
        if (!S.gwLive) {
          setServerClock(r.generated_at);
          S.silentAfter = r.silent_after_ms || S.silentAfter;
          S.clockTolerance = r.clock_tolerance_ms ?? S.clockTolerance;
          S.gateways = new Map(r.gateways.map((g) => [g.id, g]));
        }
      }
      this.draw();
    },
    draw() {
      const g = [...S.gateways.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      main.innerHTML = '<h1>Gateways</h1>' + (g.length ? `<div class="table-wrap"><table><thead><tr><th>Gateway</th><th>Site</th><th>Status</th>
        <th class="num">Assets</th><th class="num">Last seq</th><th class="num">Batches</th><th class="num">Births</th><th class="num">Deaths</th>
        <th>Last message</th><th>Clock</th><th>Last death</th></tr></thead><tbody>` + g.map(gatewayRow).join('') + '</tbody></table></div>'
        : '<div class="empty">No gateway has published yet.</div>') +
        `<p class="muted">Status: <b>online</b> while messages arrive; <b>silent</b> after ${esc(dur(S.silentAfter))} without any; <b>offline</b> when the gateway's status (MQTT last will) says so.` +
        (S.gwLive && S.gwRefresh ? ` <span id="gw-lag">Counters and last message lag by up to ${esc(dur(S.gwRefresh))}; a change of status, site, assets, births or deaths shows at once.</span>` : '') + '</p>' +
        `<p class="muted" id="gw-clock-note">Clock: the gateway's time stamps against this collector's clock, the median of its last 5 live batches of the last minute (one odd batch does not move it; a gateway shown ahead is at least that far ahead, one shown behind may also be delayed). A silent or offline gateway shows its last, unmarked.` +
        (S.clockTolerance > 0 ? ` Marked beyond ${esc(clockOff(S.clockTolerance))} either way.` : ' Nothing is marked (http.gateway_clock_tolerance 0).') + '</p>';
    },
    // time passing turns gateways silent here, with no message from the server
    clock() {
      for (const tr of main.querySelectorAll('tr[data-gateway]')) {
        const x = S.gateways.get(tr.dataset.gateway);
        if (!x) continue;
        const pill = statusPill(gwStatus(x));
        const td = tr.children[2];
        if (td.innerHTML !== pill) td.innerHTML = pill;
        tr.querySelector('[data-recv]').textContent = ago(serverNow() - x.last_recv);
        const clk = gwClock(x), cell = tr.querySelector('[data-clock]'); // a silent gateway's clock is no longer marked
        if (cell.innerHTML !== clk) cell.innerHTML = clk;
      }
    },
    // a delta that changes listed gateways only rewrites their rows; one
    // that adds or removes a gateway redraws the (sorted) table
    onGateways(delta) {
      const rows = delta && !delta.removed.length && delta.changed.map((x) => [x, main.querySelector(`tr[data-gateway="${CSS.escape(x.id)}"]`)]);
      if (!rows || rows.some(([, tr]) => !tr)) { this.draw(); return; }
      for (const [x, tr] of rows) tr.outerHTML = gatewayRow(x);
    },
  };
}
const gatewayRow = (x) => `<tr data-gateway="${esc(x.id)}">
  <td><b>${esc(x.id)}</b></td><td>${esc(x.site)}</td><td>${statusPill(gwStatus(x))}</td>
  <td class="num">${x.assets}</td><td class="num">${x.last_seq}</td><td class="num">${x.batches}</td><td class="num">${x.births}</td><td class="num">${x.deaths}</td>
  <td data-recv>${esc(ago(serverNow() - x.last_recv))}</td><td data-clock>${gwClock(x)}</td><td class="muted">${esc(x.last_death || '–')}</td></tr>`;
// a gateway's measured clock offset (clock_offset_ms: + ahead, - behind),
// a warning pill when the collector marks it (clock_skew) and the gateway
// is online; a silent or offline gateway's is its last, not current, and
// never marked (the collector does not count it either)
// The collector bounds an offset to 7 days either way (ClockOffsetLimit in
// gwclock.go; TestPageClockOffsetLimitMatches keeps the two equal): at the
// bound the clock is at least that far off.
const clockOffLimit = 7 * 24 * 3600 * 1000;
function clockOff(ms) {
  const a = Math.abs(ms);
  if (a >= clockOffLimit) return '7 d or more';
  if (a < 1000) return Math.round(a) + ' ms';
  if (a < 10000) return (a / 1000).toFixed(1) + ' s';
  return dur(a);
}
function gwClock(x) {
  if (x.clock_offset_ms === undefined || x.clock_offset_ms === null) return '<span class="muted">–</span>';
  const off = x.clock_offset_ms;
  const text = (off >= 0 ? '+' : '−') + clockOff(off);
  const st = gwStatus(x);
  const why = [st !== 'online' ? `last measured, not current: the gateway is ${st}` : '',
    x.clock_ahead_total ? `${x.clock_ahead_total} messages dated ahead of the collector's clock, set to their arrival` : ''].filter(Boolean).join('; ');
  const n = why ? ` title="${esc(why)}"` : '';
  if (st !== 'online') return `<span class="muted"${n}>${esc(text)} (last)</span>`;
  if (x.clock_skew) return `<span class="pill warn"${n}>clock ${esc(clockOff(off))} ${esc(x.clock_skew)}</span>`;
  return `<span class="muted"${n}>${esc(text)}</span>`;
}

// ---------- start ----------
async function start() {
  try {
    const [, , cat] = await Promise.all([loadAssets(), loadAlertCount(), api('/api/v1/catalog')]);
    S.catalog = cat;
  } catch (e) {
    if (!(e instanceof Unauthorized)) main.innerHTML = `<div class="empty">Cannot reach the collector API: ${esc(e.message)}</div>`;
    return;
  }
  route();
  stream();
  historyAvailable(); // history.js: the History link when there is a database
}
start();

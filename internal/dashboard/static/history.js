'use strict';
// History views (docs/history.md, docs/dashboard.md): shown only when the
// collector has a history database (GET /api/v1/history/status answers;
// without one it is a 404 and everything stays as it was). Loaded before
// app.js; it uses app.js's helpers (api, headers, esc, drawChart, ...) at
// run time only.

// historyStatus: null before the first check, false without a database,
// else the status answer.
let historyStatus = null;
async function historyAvailable() {
  if (historyStatus !== null) return historyStatus;
  try {
    const r = await fetch('/api/v1/history/status', { headers: headers(), cache: 'no-store' });
    if (r.status === 401) return false; // not signed in yet: ask again later
    historyStatus = r.ok ? await r.json() : false;
  } catch (e) {
    return false;
  }
  const nav = document.getElementById('nav-history');
  if (nav) nav.hidden = !historyStatus;
  return historyStatus;
}

const HISTORY_RANGES = [['6h', 6 * 3600e3], ['24h', 24 * 3600e3], ['7d', 7 * 86400e3], ['30d', 30 * 86400e3], ['1y', 365 * 86400e3]];

// csvLink is an <a> to an API CSV answer that downloads it with the bearer
// token (a plain link cannot carry the Authorization header).
function csvLink(path, text) {
  return `<a class="csv" href="${esc(path)}" data-csv="${esc(path)}">${esc(text || 'CSV')}</a>`;
}
document.addEventListener('click', async (e) => {
  const a = e.target.closest && e.target.closest('a[data-csv]');
  if (!a) return;
  e.preventDefault();
  const r = await fetch(a.dataset.csv, { headers: headers({ Accept: 'text/csv' }), cache: 'no-store' });
  if (!r.ok) return;
  const name = (r.headers.get('Content-Disposition') || '').match(/filename="([^"]+)"/)?.[1] || 'history.csv';
  const url = URL.createObjectURL(await r.blob());
  const dl = Object.assign(document.createElement('a'), { href: url, download: name });
  document.body.appendChild(dl); dl.click(); dl.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
});

// historyAssetHook adds the long ranges to an asset page's chart window
// selector. While one is chosen the charts show the database's series
// (raw, 1-minute or 1-hour rollups, as the API picks from the range) with a
// CSV link each; the memory windows (5 min .. 1 h) switch back to live.
async function historyAssetHook(root, site, id, redraw) {
  if (!(await historyAvailable())) return;
  const seg = root.querySelector('#a-win');
  if (!seg || seg.dataset.hist !== undefined) return;
  seg.dataset.hist = '';
  seg.insertAdjacentHTML('beforeend', HISTORY_RANGES.map(([r]) => `<button data-range="${r}">${r}</button>`).join(''));
  seg.addEventListener('click', async (e) => {
    const range = e.target.dataset.range;
    if (!range) { // a memory window: live charts again
      if (e.target.dataset.w) { seg.dataset.hist = ''; for (const c of root.querySelectorAll('.chart .hist-note')) c.remove(); redraw(); }
      return;
    }
    seg.dataset.hist = range;
    for (const b of seg.querySelectorAll('button')) b.classList.toggle('on', b.dataset.range === range);
    await historyCharts(root, site, id, range);
  });
}
// historyActive tells app.js's live chart drawing to stand aside.
function historyActive(root) {
  return !!root.querySelector('#a-win')?.dataset.hist;
}

async function historyCharts(root, site, id, range) {
  const span = HISTORY_RANGES.find(([r]) => r === range)[1];
  for (const box of root.querySelectorAll('.chart')) {
    const sig = box.dataset.chart;
    const q = new URLSearchParams({ site, asset: id, signal: sig, range });
    let s;
    try { s = await api('/api/v1/history/series?' + q); } catch (e) { continue; }
    if (root.querySelector('#a-win')?.dataset.hist !== range) return; // switched meanwhile
    const pts = s.points.map((p) => ({ t: p.ts, v: p.mean, min: p.min ?? undefined, max: p.max ?? undefined, n: p.count, bad: p.count ? 0 : 1 }));
    let note = box.querySelector('.hist-note');
    if (!note) { note = Object.assign(document.createElement('div'), { className: 'muted small hist-note' }); box.appendChild(note); }
    q.set('format', 'csv');
    note.innerHTML = `${esc(s.points.length)} points · ${esc(s.resolution === 'raw' ? 'every reading' : s.resolution + ' rollup')} (${esc(s.table)})${s.truncated ? ' · truncated' : ''} · ` +
      csvLink('/api/v1/history/series?' + q, 'CSV');
    box.dataset.resolution = s.resolution;
    drawChart(box.querySelector('canvas'), pts, s.to - span, s.to, { line: s.resolution !== 'raw' });
  }
}

// ---------- history page: alert history and KPI trends ----------
function historyPage() {
  const f = { asset: '', severity: '', state: '', range: '30d' };
  const k = { asset: '', kpi: '', range: '30d' };
  const opt = (v, l, cur) => `<option value="${esc(v)}"${v === cur ? ' selected' : ''}>${esc(l)}</option>`;
  const assetOpts = (cur) => [...S.assets.values()].sort((a, b) => akey(a).localeCompare(akey(b)))
    .map((a) => opt(akey(a), a.id + ' (' + a.site + ')', cur)).join('');
  const rangeOpts = (cur) => [['24h', 'last 24 h'], ['7d', 'last 7 days'], ['30d', 'last 30 days'], ['90d', 'last 90 days'], ['1y', 'last year']]
    .map(([v, l]) => opt(v, l, cur)).join('');
  return {
    name: 'history',
    async render() {
      document.title = 'Smelter · History';
      if (!(await historyAvailable())) {
        main.innerHTML = '<div class="empty">This collector keeps no history database (see docs/history.md): the dashboard shows the last hour from memory.</div>';
        return;
      }
      main.innerHTML = `<h1>History</h1>
        <h2>Alert history</h2><div class="toolbar" id="ah-filters">
        <label>Asset <select name="asset">${opt('', 'all', f.asset)}${assetOpts(f.asset)}</select></label>
        <label>Severity <select name="severity">${opt('', 'all', f.severity)}${opt('warn', 'warn and above', f.severity)}${opt('alarm', 'alarm and above', f.severity)}${opt('trip', 'trip', f.severity)}</select></label>
        <label>State <select name="state">${opt('', 'all', f.state)}${opt('active', 'active', f.state)}${opt('cleared', 'cleared', f.state)}</select></label>
        <label>Range <select name="range">${rangeOpts(f.range)}</select></label>
        <span class="muted" id="ah-count"></span><span id="ah-csv"></span></div><div id="ah-list"><p class="muted">Loading…</p></div>
        <h2>KPI trends</h2><div class="toolbar" id="kh-filters">
        <label>Asset <select name="asset">${opt('', 'fleet (mean of assets)', k.asset)}${assetOpts(k.asset)}</select></label>
        <label>KPI <select name="kpi">${opt('', 'all', k.kpi)}</select></label>
        <label>Range <select name="range">${rangeOpts(k.range)}</select></label><span id="kh-csv"></span></div>
        <div class="charts" id="kh-charts"></div>`;
      main.querySelector('#ah-filters').addEventListener('change', (e) => { f[e.target.name] = e.target.value; this.loadAlerts(); });
      main.querySelector('#kh-filters').addEventListener('change', (e) => { k[e.target.name] = e.target.value; this.loadKPIs(); });
      await Promise.all([this.loadAlerts(), this.loadKPIs()]);
    },
    async loadAlerts() {
      const q = new URLSearchParams({ range: f.range, limit: '500' });
      if (f.asset) { const [site, asset] = f.asset.split('/'); q.set('site', site); q.set('asset', asset); }
      if (f.severity) q.set('severity', f.severity);
      if (f.state) q.set('state', f.state);
      let r;
      try { r = await api('/api/v1/history/alerts?' + q); } catch (e) { main.querySelector('#ah-list').innerHTML = `<div class="empty">${esc(e.message)}</div>`; return; }
      const list = main.querySelector('#ah-list');
      if (!list) return;
      main.querySelector('#ah-count').textContent = r.alerts.length + ' occurrence' + (r.alerts.length === 1 ? '' : 's');
      q.set('format', 'csv');
      main.querySelector('#ah-csv').innerHTML = csvLink('/api/v1/history/alerts?' + q, 'CSV');
      list.innerHTML = alertTable(r.alerts.map((a) => ({ ...a, severity: a.max_severity })), true);
      // months apart: raised and cleared with their dates
      for (const td of list.querySelectorAll('td[title]')) if (td.title !== '–') td.textContent = td.title;
    },
    async loadKPIs() {
      const q = new URLSearchParams({ range: k.range });
      if (k.asset) { const [site, asset] = k.asset.split('/'); q.set('site', site); q.set('asset', asset); }
      if (k.kpi) q.set('kpi', k.kpi);
      let r;
      const el = main.querySelector('#kh-charts');
      try { r = await api('/api/v1/history/kpis?' + q); } catch (e) { el.innerHTML = `<div class="empty">${esc(e.message)}</div>`; return; }
      q.set('format', 'csv');
      main.querySelector('#kh-csv').innerHTML = csvLink('/api/v1/history/kpis?' + q, 'CSV');
      const by = new Map();
      for (const p of r.points) { if (!by.has(p.name)) by.set(p.name, []); by.get(p.name).push(p); }
      const sel = main.querySelector('#kh-filters select[name=kpi]');
      for (const n of [...by.keys()].sort()) {
        if (![...sel.options].some((o) => o.value === n)) sel.insertAdjacentHTML('beforeend', opt(n, label(n), k.kpi));
      }
      el.innerHTML = [...by.keys()].map((n) => `<div class="chart" data-kpi-trend="${esc(n)}"><div class="title"><span class="name">${esc(label(n))}</span>
        <span class="muted small">${esc(by.get(n).length)} windows${r.fleet ? ' · fleet mean, band min–max' : ''}</span></div><canvas></canvas></div>`).join('') ||
        '<div class="empty">No KPI windows stored in this range.</div>';
      for (const box of el.querySelectorAll('.chart')) {
        const pts = by.get(box.dataset.kpiTrend).map((p) => ({ t: p.end, v: p.value, min: p.min ?? undefined, max: p.max ?? undefined }));
        drawChart(box.querySelector('canvas'), pts, r.from, r.to, { line: true, color: '#e8590c' });
      }
    },
  };
}

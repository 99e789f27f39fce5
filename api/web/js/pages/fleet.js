// Fleet: every machine by site and line, with status, health, P(fail within 7 days),
// RUL median and 90 % interval, and open alerts; sort, filter, search. Live: the
// fleetChanged subscription (rows of the machines that changed) and alertRaised.
// A long list keeps only the rows near the view in the page (a plant of 2,000 machines
// scrolls as smoothly as one of 50); its rows carry aria-rowindex.
import { gql, onReconnect, subscribe } from '../api.js';
import { field, fill, h, hours, notice, pageTitle, pct, select, severityBadge, statusBadge, when }
  from '../ui.js';

const TABLE = 'query Fleet { fleetTable { machines at rows } }';
const OPEN = `query FleetAlerts { alerts(filter: {status: ["open", "acknowledged"]}, limit: 1000) {
  alertId machineId severity status } }`;
const CHANGED = 'subscription FleetChanged { fleetChanged(everyMs: 1000) { rows } }';
const ALERTS = 'subscription FleetAlerts { alertRaised { alertId machineId severity status } }';
const RANK = { low: 1, medium: 2, high: 3, critical: 4 };
const FLASH = new Set(['status', 'failProbability7d', 'rulMedianHours', 'alerts']);
// (cells that flash when they change; health and time change with every reading)
const AT_RISK = 0.3;
const ROW_PX = 34; // app.css gives every body row of the fleet table this height
const WINDOW_AT = 300; // with more rows than this only those near the view are drawn
const SPARE = 40; // rows drawn above and below the view

const COLUMNS = [
  ['id', 'Machine'],
  ['site', 'Site'],
  ['line', 'Line'],
  ['status', 'Status'],
  ['healthScore', 'Health'],
  ['failProbability7d', 'P(fail 7 d)'],
  ['rulMedianHours', 'RUL median [90 %]'],
  ['failureMode', 'Likely failure'],
  ['alerts', 'Open alerts'],
  ['lastUpdate', 'Updated'],
];

export function title() {
  return 'Fleet';
}

function cellsOf(row, count, worst) {
  const interval = row.rulMedianHours === null ? ''
    : ` [${hours(row.rulLowerHours)} – ${hours(row.rulUpperHours)}]`;
  return {
    status: statusBadge(row.status),
    healthScore: row.healthScore === null ? '–' : Math.round(row.healthScore),
    failProbability7d: pct(row.failProbability7d),
    rulMedianHours: row.rulMedianHours === null ? '–' : `${hours(row.rulMedianHours)}${interval}`,
    failureMode: row.failureMode ? row.failureMode.replaceAll('_', ' ') : '–',
    alerts: count ? [String(count), ' ', severityBadge(worst)] : '0',
    lastUpdate: when(row.lastUpdate),
  };
}

function textOf(content) {
  return Array.isArray(content) ? content.map((c) => c.textContent ?? c).join('')
    : (content.textContent ?? String(content));
}

class FleetPage {
  constructor(main) {
    this.rows = new Map(); // id -> row, in the plant's order
    this.alerts = new Map(); // alertId -> {machineId, severity}
    this.shown = new Map(); // id -> its <tr>, for the rows in the page
    this.made = new Map(); // id -> its <tr>, made once (a long list's rows come and go)
    this.items = []; // what the table lists: {group} or {row}
    this.drawn = null; // [first, last) of items in the page
    this.state = { sort: null, descending: false, search: '', site: '', line: '', status: '',
      risky: false };
    this.build(main);
  }

  build(main) {
    this.summary = h('p', { class: 'summary', 'aria-live': 'polite' });
    this.message = h('div');
    this.tbody = h('tbody');
    this.head = h('tr');
    this.table = h('table', { class: 'fleet', 'aria-label': 'Machines' },
      h('thead', {}, this.head), this.tbody);
    this.scroller = h('div', { class: 'scroll' }, this.table);
    this.scroller.addEventListener('scroll', () => this.later(() => this.drawWindow()));
    const search = h('input', { type: 'search', name: 'search', placeholder: 'id or name' });
    this.site = select('site', [['', 'all sites']]);
    this.line = select('line', [['', 'all lines']]);
    const status = select('status', [['', 'any status'], 'alarm', 'warning', 'running', 'idle',
      'offline', 'unknown']);
    const risky = h('input', { type: 'checkbox', name: 'risky' });
    const on = (el, event, change) => el.addEventListener(event, () => { change(); this.render(); });
    on(search, 'input', () => { this.state.search = search.value.trim(); });
    on(this.site, 'change', () => { this.state.site = this.site.value; this.fillChoices(); });
    on(this.line, 'change', () => { this.state.line = this.line.value; });
    on(status, 'change', () => { this.state.status = status.value; });
    on(risky, 'change', () => { this.state.risky = risky.checked; });
    main.append(
      pageTitle('Fleet'),
      h('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
        field('Search', search), field('Site', this.site), field('Line', this.line),
        field('Status', status),
        h('label', { class: 'check' }, risky, ` at risk only (P(fail 7 d) ≥ ${pct(AT_RISK)})`)),
      this.summary, this.message, this.scroller);
    this.renderHead();
  }

  openAlerts(machineId) {
    let count = 0;
    let worst = null;
    for (const a of this.alerts.values()) {
      if (a.machineId !== machineId) continue;
      count += 1;
      if (!worst || RANK[a.severity] > RANK[worst]) worst = a.severity;
    }
    return { count, worst };
  }

  paint(tr, row) {
    const { count, worst } = this.openAlerts(row.id);
    for (const [key, content] of Object.entries(cellsOf(row, count, worst))) {
      const td = tr.querySelector(`[data-field="${key}"]`);
      const text = textOf(content);
      if (td.dataset.text === text) continue;
      const changed = td.dataset.text !== undefined && FLASH.has(key);
      td.dataset.text = text;
      fill(td, content);
      if (changed) { // two names, so that the animation starts again without a reflow
        const again = td.classList.contains('flash') ? 'flash-again' : 'flash';
        td.classList.remove('flash', 'flash-again');
        td.classList.add(again);
      }
    }
    tr.dataset.status = row.status;
  }

  rowFor(row, index) {
    let tr = this.made.get(row.id);
    if (!tr) {
      tr = h('tr', { dataset: { machine: row.id } },
        h('th', { scope: 'row' },
          h('a', { href: `#/machine/${encodeURIComponent(row.id)}` }, row.id),
          row.name !== row.id ? h('span', { class: 'sub' }, ` ${row.name}`) : null),
        h('td', {}, row.site),
        h('td', {}, row.line),
        ...COLUMNS.slice(3).map(([key]) => h('td', { dataset: { field: key } })));
      this.made.set(row.id, tr);
    }
    tr.setAttribute('aria-rowindex', String(index + 2));
    this.paint(tr, row); // (only the cells whose text changed are written)
    return tr;
  }

  wanted(row) {
    const { search, site, line, status, risky } = this.state;
    const q = search.toLowerCase();
    if (q && !row.id.toLowerCase().includes(q) && !row.name.toLowerCase().includes(q)) return false;
    if (site && row.site !== site) return false;
    if (line && row.line !== line) return false;
    if (status && row.status !== status) return false;
    return !risky || (row.failProbability7d || 0) >= AT_RISK;
  }

  value(row, key) {
    return key === 'alerts' ? this.openAlerts(row.id).count : row[key];
  }

  /** What the table lists, in order: rows, and (in the plant's order) a heading per line. */
  listing() {
    const list = [...this.rows.values()].filter((row) => this.wanted(row));
    const { sort, descending } = this.state;
    if (sort) {
      const sign = descending ? -1 : 1;
      list.sort((a, b) => {
        const [x, y] = [this.value(a, sort), this.value(b, sort)];
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * sign;
      });
    }
    const items = [];
    let group = null;
    for (const row of list) {
      if (!sort && `${row.site} › ${row.line}` !== group) {
        group = `${row.site} › ${row.line}`;
        items.push({ group });
      }
      items.push({ row });
    }
    return { items, count: list.length };
  }

  render() {
    const { items, count } = this.listing();
    this.items = items;
    this.drawn = null;
    this.drawWindow();
    this.renderSummary(count);
    this.table.dataset.rows = String(count);
    this.table.setAttribute('aria-rowcount', String(items.length + 1));
  }

  /** Draw the items near the view (all of them when they are few). */
  drawWindow() {
    const n = this.items.length;
    let [first, last] = [0, n];
    if (n > WINDOW_AT) {
      const top = Math.floor(this.scroller.scrollTop / ROW_PX);
      const seen = Math.ceil(this.scroller.clientHeight / ROW_PX);
      if (this.drawn && top - SPARE / 2 >= this.drawn[0]
        && top + seen + SPARE / 2 <= this.drawn[1]) return; // still inside what is drawn
      first = Math.max(0, top - SPARE);
      last = Math.min(n, top + seen + SPARE);
    }
    this.drawn = [first, last];
    const body = document.createDocumentFragment();
    const spacer = (count) => {
      const tr = h('tr', { class: 'spacer', 'aria-hidden': 'true' },
        h('td', { colspan: COLUMNS.length }));
      tr.style.height = `${count * ROW_PX}px`;
      return tr;
    };
    if (first > 0) body.append(spacer(first));
    this.shown.clear();
    for (let i = first; i < last; i += 1) {
      const item = this.items[i];
      if (item.group) {
        body.append(h('tr', { class: 'group', 'aria-rowindex': i + 2 },
          h('th', { colspan: COLUMNS.length, scope: 'rowgroup' }, item.group)));
      } else {
        const tr = this.rowFor(item.row, i);
        this.shown.set(item.row.id, tr);
        body.append(tr);
      }
    }
    if (last < n) body.append(spacer(n - last));
    this.tbody.replaceChildren(body);
  }

  renderSummary(listed) {
    const counts = {};
    let risk = 0;
    for (const row of this.rows.values()) {
      counts[row.status] = (counts[row.status] || 0) + 1;
      if ((row.failProbability7d || 0) >= AT_RISK) risk += 1;
    }
    const key = JSON.stringify([listed, counts, risk, this.alerts.size]);
    if (this.summary.dataset.key === key) return; // nothing to redraw
    this.summary.dataset.key = key;
    fill(this.summary,
      `${this.rows.size} machines (${listed} listed) · `,
      ...['alarm', 'warning', 'running', 'idle', 'offline', 'unknown']
        .filter((s) => counts[s])
        .flatMap((s) => [statusBadge(s), ` ${counts[s]} `]),
      `· ${risk} at risk · ${this.alerts.size} open alerts`);
  }

  renderHead() {
    const { sort, descending } = this.state;
    fill(this.head, COLUMNS.map(([key, label]) => {
      const sorted = sort === key;
      const button = h('button', { type: 'button', class: 'sort' }, label,
        h('span', { 'aria-hidden': 'true' }, sorted ? (descending ? ' ▼' : ' ▲') : ''));
      button.addEventListener('click', () => {
        if (this.state.sort === key && this.state.descending) {
          this.state.sort = null; // third click: back to the plant's order
        } else {
          this.state.descending = this.state.sort === key;
          this.state.sort = key;
        }
        this.renderHead();
        this.render();
      });
      return h('th', {
        scope: 'col',
        'aria-sort': sorted ? (descending ? 'descending' : 'ascending') : 'none',
      }, button);
    }));
  }

  fillChoices() {
    const sites = [...new Set([...this.rows.values()].map((r) => r.site))];
    fill(this.site, h('option', { value: '' }, 'all sites'),
      sites.map((s) => h('option', { value: s }, s)));
    this.site.value = this.state.site;
    const lines = [...new Set([...this.rows.values()]
      .filter((r) => !this.state.site || r.site === this.state.site).map((r) => r.line))];
    fill(this.line, h('option', { value: '' }, 'all lines'),
      lines.map((l) => h('option', { value: l }, l)));
    this.line.value = lines.includes(this.state.line) ? this.state.line : '';
  }

  /** ``draw()`` at the next frame, once however often asked before it. */
  later(draw) {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      draw();
    });
  }

  update(changed) {
    let relist = false;
    for (const row of changed) {
      const known = this.rows.get(row.id);
      if (known && known.version !== null && row.version !== null && row.version < known.version
        && row.rulPredictedAt === known.rulPredictedAt) continue;
      const was = known !== undefined && this.wanted(known);
      this.rows.set(row.id, row);
      const tr = this.shown.get(row.id);
      if (this.wanted(row) !== was) relist = true; // it joins or leaves the list
      else if (tr) this.paint(tr, row); // (the order is kept: rows do not jump while read)
    }
    if (relist) this.later(() => this.render());
    else this.renderSummary(Number(this.table.dataset.rows));
  }

  alertChanged(a) {
    if (a.status === 'resolved' || a.status === 'false_positive') this.alerts.delete(a.alertId);
    else this.alerts.set(a.alertId, a);
    const tr = this.shown.get(a.machineId);
    if (tr) this.paint(tr, this.rows.get(a.machineId));
    this.renderSummary(Number(this.table.dataset.rows));
  }

  async load() {
    // the machines and their open alerts come from different services: either may fail
    const [machines, open] = await Promise.allSettled([gql(TABLE), gql(OPEN)]);
    this.message.replaceChildren();
    if (machines.status === 'fulfilled') {
      this.rows.clear();
      this.made.clear();
      for (const row of machines.value.fleetTable.rows) this.rows.set(row.id, row);
    } else {
      this.message.append(notice(`The fleet could not be read: ${machines.reason.message}`));
    }
    if (open.status === 'fulfilled') {
      this.alerts.clear();
      for (const a of open.value.alerts) this.alerts.set(a.alertId, a);
    } else {
      this.message.append(notice(`Open alerts unavailable: ${open.reason.message}`));
    }
    this.fillChoices();
    this.render();
    this.table.dataset.ready = 'true';
    performance.mark('twinfleet:fleet-shown'); // bench/ui.py measures up to here
  }
}

export async function mount(main) {
  const page = new FleetPage(main);
  const stops = [
    subscribe(CHANGED, {}, (data) => page.update(data.fleetChanged.rows),
      (error) => fill(page.message, notice(`Live updates refused: ${error.message}`))),
    subscribe(ALERTS, {}, (data) => page.alertChanged(data.alertRaised)),
    onReconnect(() => page.load()),
  ];
  await page.load();
  return () => stops.forEach((stop) => stop());
}

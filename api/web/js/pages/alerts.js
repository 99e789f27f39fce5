// Alerts: the alert book with priority, count, escalation level and age; operators
// acknowledge, shelve, resolve or mark false positive, saying why (who and why are kept
// and shown). Viewers see no controls. Live: alertRaised (every change of every alert).
import { can, gql, onReconnect, subscribe } from '../api.js';
import { age, ask, field, fill, h, notice, pageTitle, select, severityBadge, when } from '../ui.js';

const FIELDS = `alertId machineId ruleId kind subject severity status message count value
  firstRaisedAt lastRaisedAt acknowledgedAt acknowledgedBy resolvedAt resolvedBy note
  escalationLevel workorderId shelved shelvedUntil shelvedBy shelveReason`;
const LIST = `query Alerts($status: [String!]) {
  alerts(filter: {status: $status}, limit: 200) { ${FIELDS} } }`;
const LIVE = `subscription AlertsLive { alertRaised { ${FIELDS} } }`;
const ACTIONS = {
  acknowledge: `mutation($id: ID!, $note: String) { acknowledgeAlert(alertId: $id, note: $note) {
    ${FIELDS} } }`,
  resolve: `mutation($id: ID!, $note: String, $fp: Boolean!) {
    resolveAlert(alertId: $id, note: $note, falsePositive: $fp) { ${FIELDS} } }`,
  shelve: `mutation($id: ID!, $minutes: Float!, $reason: String!) {
    shelveAlert(alertId: $id, minutes: $minutes, reason: $reason) { ${FIELDS} } }`,
  unshelve: `mutation($id: ID!, $note: String) { unshelveAlert(alertId: $id, note: $note) {
    ${FIELDS} } }`,
};
const VIEWS = {
  open: ['open', 'acknowledged'],
  closed: ['resolved', 'false_positive'],
  all: null,
};
const RANK = { critical: 4, high: 3, medium: 2, low: 1 };
const CLOSED = new Set(['resolved', 'false_positive']);

export function title() {
  return 'Alerts';
}

function who(a) {
  const parts = [];
  if (a.acknowledgedBy) parts.push(`acknowledged by ${a.acknowledgedBy}`);
  if (a.shelved) parts.push(`shelved by ${a.shelvedBy} until ${when(a.shelvedUntil)}: ${a.shelveReason}`);
  if (a.resolvedBy) parts.push(`${a.status === 'false_positive' ? 'false positive' : 'resolved'} by ${a.resolvedBy}`);
  if (a.note) parts.push(`“${a.note}”`);
  return parts.join(' · ') || '–';
}

/** Ask the operator for what ``kind`` needs (a note; for shelving minutes and a reason);
 * the mutation's variables, or null when cancelled. */
async function askFor(a, kind) {
  if (kind === 'shelve') {
    const form = await ask(`Shelve ${a.alertId}`, [
      { name: 'minutes', label: 'For how many minutes', type: 'number', required: true,
        value: 60, min: 1, max: 1440, step: 1 },
      { name: 'reason', label: 'Why', type: 'textarea', required: true }], 'Shelve');
    return form && { id: a.alertId, minutes: Number(form.minutes), reason: form.reason };
  }
  const label = { acknowledge: 'Acknowledge', resolve: 'Resolve', falsePositive:
    'Mark false positive', unshelve: 'Unshelve' }[kind];
  const form = await ask(`${label} ${a.alertId}`, [
    { name: 'note', label: 'Why (a note kept with the alert)', type: 'textarea',
      required: kind === 'falsePositive' }], label);
  if (!form) return null;
  const variables = { id: a.alertId, note: form.note };
  if (kind === 'resolve' || kind === 'falsePositive') variables.fp = kind === 'falsePositive';
  return variables;
}

class AlertsPage {
  constructor(main) {
    this.alerts = new Map();
    this.state = { view: 'open', severity: '', machine: '' };
    this.operator = can('operator');
    this.tbody = h('tbody');
    this.message = h('div');
    this.summary = h('p', { class: 'summary', 'aria-live': 'polite' });
    const view = select('view', [['open', 'open and acknowledged'], ['closed', 'closed'],
      ['all', 'all']], 'open');
    const severity = select('severity', [['', 'any priority'], 'low', 'medium', 'high',
      'critical']);
    const machine = h('input', { type: 'search', name: 'machine', placeholder: 'machine id' });
    view.addEventListener('change', () => { this.state.view = view.value; this.load(); });
    severity.addEventListener('change', () => { this.state.severity = severity.value;
      this.render(); });
    machine.addEventListener('input', () => { this.state.machine = machine.value.trim();
      this.render(); });
    const heads = ['Priority', 'Machine', 'Alert', 'Count', 'Escalation', 'Age', 'Status',
      'Who and why', ...(this.operator ? ['Actions'] : [])];
    main.append(
      pageTitle('Alerts'),
      h('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
        field('Show', view), field('At least', severity), field('Machine', machine)),
      this.summary, this.message,
      h('div', { class: 'scroll' }, h('table', { class: 'alerts', 'aria-label': 'Alerts' },
        h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col' }, t)))),
        this.tbody)));
  }

  wanted(a) {
    const { view, severity, machine } = this.state;
    const statuses = VIEWS[view];
    if (statuses && !statuses.includes(a.status)) return false;
    if (severity && RANK[a.severity] < RANK[severity]) return false;
    return !machine || a.machineId.toLowerCase().includes(machine.toLowerCase());
  }

  async act(a, kind) {
    const variables = await askFor(a, kind);
    if (!variables) return;
    try {
      const data = await gql(ACTIONS[kind === 'falsePositive' ? 'resolve' : kind], variables);
      this.changed(Object.values(data)[0]);
      this.message.replaceChildren();
    } catch (error) {
      fill(this.message, notice(`${a.alertId}: ${error.message}`));
    }
  }

  controls(a) {
    if (CLOSED.has(a.status)) return '';
    const button = (kind, text) => h('button', { type: 'button', onclick: () => this.act(a, kind),
      dataset: { action: kind } }, text);
    return h('div', { class: 'actions' },
      a.status === 'open' ? button('acknowledge', 'Acknowledge') : null,
      a.shelved ? button('unshelve', 'Unshelve') : button('shelve', 'Shelve'),
      button('resolve', 'Resolve'),
      button('falsePositive', 'False positive'));
  }

  row(a) {
    return h('tr', { dataset: { alert: a.alertId, status: a.status } },
      h('td', {}, severityBadge(a.severity)),
      h('th', { scope: 'row' }, h('a', { href: `#/machine/${encodeURIComponent(a.machineId)}` },
        a.machineId)),
      h('td', {}, a.message, h('span', { class: 'sub' },
        ` ${[a.ruleId, a.subject].filter(Boolean).join(' · ')}`)),
      h('td', { dataset: { field: 'count' } }, `×${a.count}`),
      h('td', {}, a.escalationLevel ? `level ${a.escalationLevel}` : '–'),
      h('td', {}, age(a.firstRaisedAt)),
      h('td', { dataset: { field: 'status' } },
        a.shelved ? '⏸ shelved' : a.status.replaceAll('_', ' ')),
      h('td', { dataset: { field: 'who' } }, who(a)),
      this.operator ? h('td', {}, this.controls(a)) : null);
  }

  render() {
    const list = [...this.alerts.values()].filter((a) => this.wanted(a)).sort((x, y) =>
      (RANK[y.severity] - RANK[x.severity]) || (x.lastRaisedAt < y.lastRaisedAt ? 1 : -1));
    this.tbody.replaceChildren(...list.map((a) => this.row(a)));
    const open = [...this.alerts.values()].filter((a) => !CLOSED.has(a.status));
    fill(this.summary, `${list.length} listed · ${open.length} open, of which `
      + `${open.filter((a) => a.severity === 'critical').length} critical and `
      + `${open.filter((a) => a.status === 'open').length} not yet acknowledged`);
  }

  changed(a) {
    this.alerts.set(a.alertId, a);
    this.render();
  }

  async load() {
    try {
      const data = await gql(LIST, { status: VIEWS[this.state.view] });
      this.alerts.clear();
      data.alerts.forEach((a) => this.alerts.set(a.alertId, a));
      this.message.replaceChildren();
    } catch (error) {
      fill(this.message, notice(`The alerts could not be read: ${error.message}`));
    }
    this.render();
    this.tbody.dataset.ready = 'true';
  }
}

export async function mount(main) {
  const page = new AlertsPage(main);
  const ticker = setInterval(() => page.render(), 60000); // ages move on
  const stops = [
    subscribe(LIVE, {}, (data) => page.changed(data.alertRaised),
      (error) => fill(page.message, notice(`Live updates refused: ${error.message}`))),
    onReconnect(() => page.load()),
  ];
  await page.load();
  return () => {
    clearInterval(ticker);
    stops.forEach((stop) => stop());
  };
}

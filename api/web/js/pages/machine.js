// Machine: live sensor values against their limits, trends from the history, the RUL as
// a survival curve with its 90 % interval, P(fail) at 1/7/30 days, contributing factors,
// recommended actions, model version; its anomalies, alerts and work orders. Live:
// assetStateChanged (values, health, status), anomalyDetected, alertRaised,
// workOrderChanged, and fleetChanged for this machine (a new RUL prediction).
import { can, gql, onReconnect, subscribe } from '../api.js';
import { rulPanel } from '../rul.js';
import { trends } from '../trends.js';
import { age, fill, h, notice, num, pageTitle, severityBadge, statusBadge, when } from '../ui.js';

const RUL = `rul { medianHours confidenceInterval { lower upper confidence } failureMode
  failureModeShares { failureMode share }
  modelVersion predictionTimestamp ageHours survivalCurve { hours survivalProbability }
  failureProbabilities { horizonHours probability }
  contributingFactors { factor importance currentValue threshold } }`;
const MACHINE = `query Machine($id: ID!) {
  asset(id: $id) { id name type kind site line critical status healthScore version lastUpdate
    currentState { sensors { sensorId name unit value timestamp quality stale } }
    ${RUL}
    anomalies(limit: 20) { id sensorId timestamp type severity anomalyScore value reason
      acknowledged acknowledgedBy } }
  sensorLimits(assetId: $id) { name kind unit normalLow normalHigh criticalLow criticalHigh rated }
  recommendedActions(assetId: $id) { priority action estimatedDowntimeHours estimatedCost }
}`;
const LIMITS = `query MachineSensors($id: ID!) { sensorLimits(assetId: $id) {
  name kind unit normalLow normalHigh criticalLow criticalHigh rated } }`;
const RUL_ONLY = `query MachineRul($id: ID!) { asset(id: $id) { ${RUL} }
  recommendedActions(assetId: $id) { priority action estimatedDowntimeHours estimatedCost } }`;
const WORK = `query MachineWork($id: ID!) {
  alerts(filter: {machineId: $id}, limit: 50) { alertId severity status message count
    lastRaisedAt acknowledgedBy }
  workOrders(filter: {assetId: $id}, limit: 50) { workorderId type priority title status
    scheduledDate dueBy assignedTechnicianId }
}`;
const STATE = `subscription MachineState($id: ID!) { assetStateChanged(assetId: $id) {
  version healthScore status lastUpdate changedSensors { sensorId value timestamp quality } } }`;
const ANOMALY = `subscription MachineAnomaly($id: ID!) { anomalyDetected(assetId: $id) {
  id sensorId timestamp type severity anomalyScore value reason acknowledged acknowledgedBy } }`;
const ALERT = `subscription MachineAlert($id: String) { alertRaised(machineId: $id) {
  alertId severity status message count lastRaisedAt acknowledgedBy } }`;
const ORDER = `subscription MachineOrder($id: String) { workOrderChanged(assetId: $id) {
  workorderId type priority title status scheduledDate dueBy assignedTechnicianId } }`;
const RUL_CHANGED = `subscription MachineRulChanged($id: ID!) {
  fleetChanged(everyMs: 1000, assetId: $id) { rows } }`;
const ACK = `mutation Ack($id: ID!, $note: String) { acknowledgeAnomaly(anomalyId: $id, note: $note) {
  id acknowledged acknowledgedBy } }`;

export function title(params) {
  return `Machine ${params.id}`;
}

function limitState(value, s) {
  if (value === null || value === undefined) return ['none', '–', 'no value'];
  if ((s.criticalHigh !== null && value >= s.criticalHigh)
    || (s.criticalLow !== null && value <= s.criticalLow)) return ['critical', '✖', 'beyond critical'];
  if ((s.normalHigh !== null && value > s.normalHigh)
    || (s.normalLow !== null && value < s.normalLow)) return ['warning', '▲', 'outside normal'];
  return ['ok', '✓', 'normal'];
}

function range(lo, hi) {
  if (lo === null && hi === null) return '–';
  return `${lo === null ? '…' : num(lo, 1)} – ${hi === null ? '…' : num(hi, 1)}`;
}

function table(heads, rows) {
  return h('table', {}, h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows));
}

class MachinePage {
  constructor(main, data, trend) {
    this.id = data.asset.id;
    this.asset = data.asset;
    this.limits = Object.fromEntries(data.sensorLimits.map((s) => [s.name, s]));
    this.anomalies = data.asset.anomalies;
    this.alerts = new Map();
    this.orders = new Map();
    this.sensorRows = new Map();
    this.stopRul = () => {};
    this.lastRul = this.asset.rul ? this.asset.rul.predictionTimestamp : null;
    this.trend = trend;
    this.build(main);
    this.paintFacts();
    this.paintRul(this.asset.rul, data.recommendedActions);
    this.paintAnomalies();
    this.loadWork();
  }

  build(main) {
    [this.facts, this.sensorsBody] = [h('dl', { class: 'facts' }), h('tbody')];
    [this.rulBox, this.anomaliesBox] = [h('div', { class: 'rul' }), h('div')];
    [this.alertsBox, this.ordersBox, this.message] = [h('div'), h('div'), h('div')];
    for (const s of this.asset.currentState.sensors) {
      const l = this.limits[s.name];
      const tr = h('tr', { dataset: { sensor: s.sensorId } },
        h('th', { scope: 'row' }, s.name), h('td', { dataset: { field: 'value' } }),
        h('td', {}, range(l.normalLow, l.normalHigh)),
        h('td', {}, range(l.criticalLow, l.criticalHigh)),
        h('td', { dataset: { field: 'state' } }), h('td', { dataset: { field: 'quality' } }),
        h('td', { dataset: { field: 'time' } }));
      this.sensorRows.set(s.sensorId, { tr, name: s.name, unit: s.unit });
      this.sensorsBody.append(tr);
      this.paintSensor(s.sensorId, s);
    }
    const section = (id, title, ...content) => h('section', { 'aria-labelledby': id },
      h('h2', { id }, title), ...content);
    main.append(
      pageTitle(`${this.asset.id} · ${this.asset.name}`), this.message, this.facts,
      section('live-title', 'Live sensors', h('table', { class: 'sensors' },
        h('thead', {}, h('tr', {}, ['Sensor', 'Value', 'Normal', 'Critical', 'State', 'Quality',
          'Time'].map((t) => h('th', { scope: 'col' }, t)))), this.sensorsBody)),
      section('rul-title', 'Remaining useful life', this.rulBox),
      this.trend.section,
      section('anomalies-title', 'Anomalies', this.anomaliesBox),
      section('alerts-title', 'Alerts', this.alertsBox),
      section('orders-title', 'Work orders', this.ordersBox));
  }

  paintFacts() {
    const a = this.asset;
    const fact = (term, field, value) => [h('dt', {}, term),
      h('dd', field ? { dataset: { field } } : {}, value)];
    fill(this.facts,
      fact('Status', 'status', statusBadge(a.status)),
      fact('Health', 'health', a.healthScore === null ? '–' : num(a.healthScore, 0)),
      fact('Type', null, `${a.type} (${a.kind})${a.critical ? ', critical' : ''}`),
      fact('Site › line', null, `${a.site} › ${a.line}`),
      fact('Twin version', 'version', a.version ?? '–'),
      fact('Data time', 'lastUpdate', when(a.lastUpdate)));
  }

  paintSensor(sensorId, reading) {
    const row = this.sensorRows.get(sensorId);
    if (!row) return;
    const [kind, icon, word] = limitState(reading.value, this.limits[row.name]);
    const cells = row.tr.children;
    fill(cells[1], reading.value === null ? '–' : `${num(reading.value, 2)} ${row.unit}`);
    cells[1].dataset.value = reading.value === null ? '' : String(reading.value);
    fill(cells[4], h('span', { class: `badge limit-${kind}` },
      h('span', { 'aria-hidden': 'true' }, icon), ` ${word}`));
    fill(cells[5], reading.quality || '–');
    fill(cells[6], when(reading.timestamp));
  }

  paintRul(rul, actions) {
    this.stopRul();
    this.stopRul = rulPanel(this.rulBox, rul, actions);
  }

  paintAnomalies() {
    const operator = can('operator');
    const ack = (a) => (a.acknowledged ? `✓ ${a.acknowledgedBy}` : operator
      ? h('button', { type: 'button', onclick: () => this.acknowledge(a) }, 'Acknowledge') : 'no');
    fill(this.anomaliesBox, this.anomalies.length
      ? table(['Time', 'Severity', 'Type', 'Sensor', 'Reason', 'Acknowledged'],
        this.anomalies.slice(0, 20).map((a) => h('tr', { dataset: { anomaly: a.id } },
          h('td', {}, when(a.timestamp)), h('td', {}, severityBadge(a.severity)),
          h('td', {}, a.type), h('td', {}, a.sensorId || 'machine'), h('td', {}, a.reason),
          h('td', {}, ack(a)))))
      : h('p', {}, 'No recent anomalies.'));
  }

  async acknowledge(a) {
    try {
      const done = await gql(ACK, { id: a.id });
      Object.assign(a, done.acknowledgeAnomaly);
      this.paintAnomalies();
    } catch (error) {
      fill(this.message, notice(`Not acknowledged: ${error.message}`));
    }
  }

  paintWork() {
    const open = [...this.alerts.values()]
      .sort((x, y) => (x.lastRaisedAt < y.lastRaisedAt ? 1 : -1));
    fill(this.alertsBox, open.length ? h('ul', { class: 'plain' }, open.map((a) => h('li', {},
      severityBadge(a.severity), ` ${a.message} · ${a.status.replaceAll('_', ' ')} · ×${a.count}`
      + ` · ${age(a.lastRaisedAt)} ago${a.acknowledgedBy ? ` · seen by ${a.acknowledgedBy}` : ''}`)))
      : h('p', {}, 'No alerts.'));
    const orders = [...this.orders.values()];
    fill(this.ordersBox, orders.length ? h('ul', { class: 'plain' }, orders.map((o) => h('li', {},
      `${o.workorderId} · ${o.type} · ${o.priority} · ${o.title} · ${o.status.replaceAll('_', ' ')}`
      + (o.scheduledDate ? ` · planned ${when(o.scheduledDate)}` : '')
      + (o.assignedTechnicianId ? ` · ${o.assignedTechnicianId}` : '')
      + (o.dueBy ? ` · due by ${when(o.dueBy)}` : ''))))
      : h('p', {}, 'No work orders.'));
  }

  async loadWork() {
    try {
      const work = await gql(WORK, { id: this.id });
      this.alerts.clear();
      work.alerts.forEach((a) => this.alerts.set(a.alertId, a));
      this.orders.clear();
      work.workOrders.forEach((o) => this.orders.set(o.workorderId, o));
    } catch (error) {
      fill(this.alertsBox, notice(`Alerts and work orders unavailable: ${error.message}`));
      return;
    }
    this.paintWork();
  }

  async reloadRul() {
    const fresh = await gql(RUL_ONLY, { id: this.id });
    this.asset.rul = fresh.asset.rul;
    this.paintRul(this.asset.rul, fresh.recommendedActions);
  }

  async reloadAll() {
    const fresh = await gql(MACHINE, { id: this.id });
    Object.assign(this.asset, fresh.asset);
    this.paintFacts();
    fresh.asset.currentState.sensors.forEach((s) => this.paintSensor(s.sensorId, s));
    this.anomalies.splice(0, this.anomalies.length, ...fresh.asset.anomalies);
    this.paintAnomalies();
    this.paintRul(this.asset.rul, fresh.recommendedActions);
    this.loadWork();
    this.trend.reload();
  }

  stateChanged(u) {
    if (this.asset.version !== null && u.version < this.asset.version) return;
    Object.assign(this.asset, { version: u.version, healthScore: u.healthScore, status: u.status,
      lastUpdate: u.lastUpdate });
    this.paintFacts();
    u.changedSensors.forEach((s) => this.paintSensor(s.sensorId, s));
  }

  rowChanged(row) {
    if (row && row.rulPredictedAt && row.rulPredictedAt !== this.lastRul) {
      this.lastRul = row.rulPredictedAt;
      this.reloadRul();
    }
  }

  /** The page's subscriptions; returns a function that ends them. */
  follow() {
    const id = this.id;
    const stops = [
      subscribe(STATE, { id }, (d) => this.stateChanged(d.assetStateChanged),
        (error) => fill(this.message, notice(`Live values refused: ${error.message}`))),
      subscribe(ANOMALY, { id }, (d) => { this.anomalies.unshift(d.anomalyDetected);
        this.paintAnomalies(); }),
      subscribe(ALERT, { id }, (d) => { this.alerts.set(d.alertRaised.alertId, d.alertRaised);
        this.paintWork(); }),
      subscribe(ORDER, { id }, (d) => {
        this.orders.set(d.workOrderChanged.workorderId, d.workOrderChanged);
        this.paintWork();
      }),
      subscribe(RUL_CHANGED, { id }, (d) => this.rowChanged(d.fleetChanged.rows[0])),
      onReconnect(() => this.reloadAll()),
    ];
    return () => {
      stops.forEach((stop) => stop());
      this.trend.destroy();
      this.stopRul();
    };
  }
}

export async function mount(main, params) {
  const { id } = params;
  const range = params.query.get('range') || '24h';
  // the history is what takes longest: it is asked for as soon as the sensors are known,
  // while the rest of the machine is read
  const early = gql(LIMITS, { id }).then((d) => trends(id, d.sensorLimits, range), () => null);
  const data = await gql(MACHINE, { id });
  const trend = await early;
  if (!data.asset) {
    main.append(pageTitle(`Machine ${id}`), notice(`There is no machine ${id}.`));
    return () => {};
  }
  return new MachinePage(main, data, trend || trends(id, data.sensorLimits, range)).follow();
}

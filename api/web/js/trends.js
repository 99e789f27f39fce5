// The machine page's trend charts: one per sensor, from the history (sensorTrends: every
// sensor's series in one answer, by columns; the resolution follows the range as in
// GET /api/v1/sensors/{id}/timeseries: raw up to 2 hours, 1-minute buckets up to 3 days,
// else hourly), anomalies marked, cursors in step. Zoom: drag across a chart, the mouse
// wheel, or the buttons; pan: Shift + drag, or the buttons. Every change of range fetches
// that range again.
import { gql } from './api.js';
import { trendChart } from './charts.js';
import { fill, h, notice } from './ui.js';

const HOUR = 3600;
export const RANGES = { '6h': 6 * HOUR, '24h': 24 * HOUR, '7d': 168 * HOUR, '30d': 720 * HOUR };

const TRENDS = `query Trends($id: ID!, $start: DateTime, $end: DateTime) {
  sensorTrends(assetId: $id, start: $start, end: $end) }`;

function seriesOf(doc) {
  const t = doc.time.map((iso) => Date.parse(iso) / 1000);
  if (doc.aggregation === 'raw') return { t, value: doc.value };
  return { t, avg: doc.avg, min: doc.min, max: doc.max };
}

function utc(seconds) {
  return new Date(seconds * 1000).toISOString().slice(0, 16).replace('T', ' ');
}

class Trends {
  constructor(machineId, sensors, initial) {
    this.machineId = machineId;
    this.sensors = sensors;
    this.charts = [];
    this.loading = 0;
    const span = RANGES[initial] || RANGES['24h'];
    this.range = { min: Date.now() / 1000 - span, max: Date.now() / 1000 };
    this.status = h('p', { class: 'range', 'aria-live': 'polite' });
    this.holder = h('div', { class: 'trends' });
    const button = (text, act, label) => h('button', { type: 'button', onclick: act,
      'aria-label': label }, text);
    const buttons = h('div', { class: 'toolbar', role: 'group', 'aria-label': 'Trend range' },
      Object.keys(RANGES).map((key) => button(`last ${key}`, () => {
        const now = Date.now() / 1000;
        this.setRange(now - RANGES[key], now);
      })),
      button('← earlier', () => this.shift(-0.5), 'earlier'),
      button('later →', () => this.shift(0.5), 'later'),
      button('zoom in', () => this.zoom(0.5)),
      button('zoom out', () => this.zoom(2)));
    this.section = h('section', { 'aria-labelledby': 'trends-title' },
      h('h2', { id: 'trends-title' }, 'Trends'),
      h('p', { class: 'hint' }, 'Drag across a chart or use the wheel to zoom, Shift + drag '
        + 'to pan. The resolution follows the range (raw, 1-minute or hourly). ▲ marks an '
        + 'anomaly; dashed lines are the normal limits, dotted ones the critical limits.'),
      buttons, this.status, this.holder);
    this.load();
  }

  async load() {
    const mine = ++this.loading;
    const start = new Date(this.range.min * 1000).toISOString();
    const end = new Date(this.range.max * 1000).toISOString();
    fill(this.status, `${utc(this.range.min)} – ${utc(this.range.max)} UTC`);
    let answer;
    try {
      answer = (await gql(TRENDS, { id: this.machineId, start, end })).sensorTrends;
    } catch (error) {
      answer = Object.fromEntries(this.sensors.map((s) => [s.name, { error: error.message }]));
    }
    if (mine !== this.loading) return; // a newer range was asked for meanwhile
    const docs = this.sensors.map((s) => answer[s.name] || { error: 'no answer' });
    this.destroy();
    const figures = docs.map((doc, i) => this.figure(this.sensors[i], doc));
    this.holder.replaceChildren(...figures.map((f) => f.box));
    for (const f of figures) if (f.draw) this.charts.push(f.draw()); // in the page: sized
    this.holder.dataset.ready = 'true';
    performance.mark('twinfleet:trends-shown'); // bench/ui.py measures up to here
  }

  /** A sensor's figure, and how to draw its chart once the figure is in the page. */
  figure(sensor, doc) {
    const box = h('figure', { class: 'trend', dataset: { sensor: sensor.name } });
    if (doc.error) {
      box.append(notice(`${sensor.name}: ${doc.error}`));
      return { box };
    }
    const anomalies = doc.anomalies.map((a) => ({ t: Date.parse(a.timestamp) / 1000,
      value: a.value }));
    box.dataset.points = String(doc.dataPoints);
    box.dataset.aggregation = doc.aggregation;
    const what = doc.aggregation === 'raw' ? 'readings' : `${doc.aggregation} buckets`;
    box.append(h('figcaption', {}, `${sensor.name} (${sensor.unit}) · ${doc.dataPoints} `
      + `${what} · ${anomalies.length} anomalies`));
    if (!doc.dataPoints) {
      box.append(h('p', { class: 'hint' }, 'No readings in this range.'));
      return { box };
    }
    const s = doc.statistics;
    const plot = h('div', { role: 'img', 'aria-label': `${sensor.name} over the range: `
      + `min ${s.overall_min ?? '–'}, max ${s.overall_max ?? '–'}, `
      + `${anomalies.length} anomalies marked` });
    box.append(plot);
    const draw = () => trendChart(plot, {
      label: sensor.name,
      unit: sensor.unit,
      series: seriesOf(doc),
      anomalies,
      limits: sensor,
      sync: `trend-${this.machineId}`,
      onRange: (min, max) => this.setRange(min, max),
    });
    return { box, draw };
  }

  setRange(min, max) {
    const width = Math.max(max - min, 600);
    this.range.max = Math.min(min + width, Date.now() / 1000);
    this.range.min = this.range.max - width;
    this.load();
  }

  shift(part) {
    const width = this.range.max - this.range.min;
    this.setRange(this.range.min + part * width, this.range.max + part * width);
  }

  zoom(factor) {
    const mid = (this.range.min + this.range.max) / 2;
    const half = ((this.range.max - this.range.min) / 2) * factor;
    this.setRange(mid - half, mid + half);
  }

  destroy() {
    this.charts.splice(0).forEach((c) => c.destroy());
  }
}

/** The trends of ``machineId``'s ``sensors`` (with their limits) over the last
 * ``initial`` (a key of RANGES): ``{section, reload(), destroy()}``. */
export function trends(machineId, sensors, initial = '24h') {
  const t = new Trends(machineId, sensors, initial);
  return { section: t.section, reload: () => t.load(), destroy: () => t.destroy() };
}

// Charts on uPlot: a sensor's trend (values or min/avg/max buckets, its limits, its
// anomalies marked), a survival curve with its median and 90 % interval, and what-if
// projections against the baseline. Times on the axes are UTC, like the rest of the UI.
import uPlot from '../vendor/uplot-1.6.32/uPlot.esm.js';

const UTC = (ts) => uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC');
const COLOURS = { line: '#1f6feb', band: 'rgba(31,111,235,0.15)', normal: '#9a6700',
  critical: '#cf222e', anomaly: '#cf222e', median: '#0a3069', interval: 'rgba(9,105,218,0.12)',
  baseline: '#6e7781', scenario: '#bf3989' };

function utcText(ts, withDate) {
  const iso = new Date(ts * 1000).toISOString();
  return withDate ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : iso.slice(11, 16);
}

/** Time axis labels in UTC, 24-hour: "HH:MM", with "MM-DD" over more than two days. */
function timeLabels(u, splits) {
  const withDate = u.scales.x.max - u.scales.x.min > 2 * 86400;
  return splits.map((ts) => utcText(ts, withDate));
}

function widthOf(el) {
  return Math.max(280, Math.floor(el.getBoundingClientRect().width || el.clientWidth || 600));
}

/** Keep ``chart`` as wide as ``el``; returns a function that stops watching. */
function fitWidth(chart, el, height) {
  const observer = new ResizeObserver(() => {
    const width = widthOf(el);
    if (Math.abs(width - chart.width) > 4) chart.setSize({ width, height });
  });
  observer.observe(el);
  return () => observer.disconnect();
}

function hline(u, value, colour, dash) {
  if (value === null || value === undefined) return;
  const y = u.valToPos(value, 'y', true);
  if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) return;
  const ctx = u.ctx;
  ctx.save();
  ctx.strokeStyle = colour;
  ctx.lineWidth = 1.5 * devicePixelRatio;
  ctx.setLineDash(dash.map((d) => d * devicePixelRatio));
  ctx.beginPath();
  ctx.moveTo(u.bbox.left, y);
  ctx.lineTo(u.bbox.left + u.bbox.width, y);
  ctx.stroke();
  ctx.restore();
}

function marker(u, x, y, colour) {
  const ctx = u.ctx;
  const r = 5 * devicePixelRatio;
  ctx.save();
  ctx.fillStyle = colour;
  ctx.beginPath();
  ctx.moveTo(x, y - r);
  ctx.lineTo(x + r, y + r);
  ctx.lineTo(x - r, y + r);
  ctx.closePath();
  ctx.fill();
  ctx.restore();
}

/** Wheel zooms the time axis around the pointer; dragging with Shift pans it. */
function wheelZoomPan(onRange) {
  return {
    hooks: {
      ready: (u) => {
        const over = u.over;
        over.addEventListener('wheel', (e) => {
          e.preventDefault();
          const { min, max } = u.scales.x;
          const at = u.posToVal(e.offsetX, 'x');
          const factor = e.deltaY < 0 ? 0.75 : 1 / 0.75;
          onRange(at - (at - min) * factor, at + (max - at) * factor);
        }, { passive: false });
        over.addEventListener('mousedown', (e) => {
          if (!e.shiftKey) return;
          e.stopPropagation();
          const { min, max } = u.scales.x;
          const perPx = (max - min) / u.bbox.width * devicePixelRatio;
          const x0 = e.clientX;
          const move = (m) => u.setScale('x', {
            min: min - (m.clientX - x0) * perPx, max: max - (m.clientX - x0) * perPx });
          const up = () => {
            document.removeEventListener('mousemove', move);
            document.removeEventListener('mouseup', up);
            onRange(u.scales.x.min, u.scales.x.max);
          };
          document.addEventListener('mousemove', move);
          document.addEventListener('mouseup', up);
        }, true);
      },
    },
  };
}

/**
 * A sensor's trend. ``series``: {t (s), value} for raw readings or {t, avg, min, max}
 * for buckets; ``anomalies``: [{t, value}]; ``limits``: normal and critical.
 * ``onRange(min, max)`` (seconds) when the user zooms (drag to select, wheel) or pans
 * (Shift + drag): the page fetches that range at its resolution.
 */
export function trendChart(el, { label, unit, series, anomalies, limits, sync, onRange }) {
  const height = 170;
  const bucketed = series.min !== undefined;
  const data = bucketed ? [series.t, series.avg, series.min, series.max] : [series.t, series.value];
  const lines = [
    { value: (u, ts) => (ts === null || ts === undefined ? '–' : `${utcText(ts, true)} UTC`) },
    { label: bucketed ? `${label} (avg)` : label, stroke: COLOURS.line, width: 1.5,
      value: (u, v) => (v === null || v === undefined ? '–' : `${v.toFixed(2)} ${unit}`) },
  ];
  if (bucketed) {
    lines.push({ label: 'min', stroke: COLOURS.band, width: 0, points: { show: false } });
    lines.push({ label: 'max', stroke: COLOURS.band, width: 0, points: { show: false } });
  }
  const chart = new uPlot({
    width: widthOf(el),
    height,
    tzDate: UTC,
    cursor: { sync: sync ? { key: sync } : undefined, drag: { x: true, y: false } },
    scales: { x: { time: true } },
    series: lines,
    bands: bucketed ? [{ series: [3, 2], fill: COLOURS.band }] : [],
    axes: [{ space: 70, values: timeLabels }, { label: unit, size: 60 }],
    plugins: [wheelZoomPan(onRange)],
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 4) return;
        const min = u.posToVal(u.select.left, 'x');
        const max = u.posToVal(u.select.left + u.select.width, 'x');
        u.setSelect({ width: 0, height: 0 }, false);
        onRange(min, max);
      }],
      draw: [(u) => {
        hline(u, limits.normalHigh, COLOURS.normal, [6, 4]);
        hline(u, limits.normalLow, COLOURS.normal, [6, 4]);
        hline(u, limits.criticalHigh, COLOURS.critical, [2, 2]);
        hline(u, limits.criticalLow, COLOURS.critical, [2, 2]);
        for (const a of anomalies) {
          const x = u.valToPos(a.t, 'x', true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          const y = a.value === null || a.value === undefined
            ? u.bbox.top + 8 * devicePixelRatio : u.valToPos(a.value, 'y', true);
          marker(u, x, y, COLOURS.anomaly);
        }
      }],
    },
  }, data, el);
  const stop = fitWidth(chart, el, height);
  return { chart, destroy: () => { stop(); chart.destroy(); } };
}

/**
 * The survival curve S(t) with the 90 % interval shaded and the median marked.
 */
export function survivalChart(el, { curve, median, lower, upper }) {
  const height = 220;
  const chart = new uPlot({
    width: widthOf(el),
    height,
    scales: { x: { time: false }, y: { range: [0, 1] } },
    series: [
      { label: 'hours', value: (u, v) => (v === null ? '–' : `${v.toFixed(0)} h`) },
      { label: 'P(still running)', stroke: COLOURS.line, width: 2,
        value: (u, v) => (v === null ? '–' : `${(100 * v).toFixed(1)} %`) },
    ],
    axes: [{ label: 'hours from now' }, { label: 'survival', values: (u, v) => v.map((x) => `${x * 100} %`) }],
    hooks: {
      drawClear: [(u) => {
        const ctx = u.ctx;
        const x0 = u.valToPos(lower, 'x', true);
        const x1 = u.valToPos(upper, 'x', true);
        ctx.save();
        ctx.fillStyle = COLOURS.interval;
        ctx.fillRect(x0, u.bbox.top, Math.max(1, x1 - x0), u.bbox.height);
        ctx.restore();
      }],
      draw: [(u) => {
        const ctx = u.ctx;
        const x = u.valToPos(median, 'x', true);
        ctx.save();
        ctx.strokeStyle = COLOURS.median;
        ctx.lineWidth = 2 * devicePixelRatio;
        ctx.setLineDash([5 * devicePixelRatio, 3 * devicePixelRatio]);
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.fillStyle = COLOURS.median;
        ctx.font = `${12 * devicePixelRatio}px sans-serif`;
        ctx.fillText('median', x + 4 * devicePixelRatio, u.bbox.top + 14 * devicePixelRatio);
        ctx.restore();
      }],
    },
  }, [curve.map((p) => p.hours), curve.map((p) => p.survivalProbability)], el);
  const stop = fitWidth(chart, el, height);
  return { chart, destroy: () => { stop(); chart.destroy(); } };
}

/**
 * What-if against the baseline over the horizon: ``key`` of each step (failureProbability
 * or rulMedian), one line each; with ``band``, the RUL interval of each as a band.
 */
export function projectionChart(el, { baseline, scenario, key, label, band, percent }) {
  const height = 220;
  const x = baseline.map((s) => s.hours / 24);
  const fmt = (v) => (v === null || v === undefined ? '–'
    : percent ? `${(100 * v).toFixed(1)} %` : `${v.toFixed(0)} h`);
  const series = [
    { label: 'days', value: (u, v) => (v === null ? '–' : `${v.toFixed(1)} d`) },
    { label: `${label}, unchanged`, stroke: COLOURS.baseline, width: 2, dash: [6, 4],
      value: (u, v) => fmt(v) },
    { label: `${label}, scenario`, stroke: COLOURS.scenario, width: 2, value: (u, v) => fmt(v) },
  ];
  const data = [x, baseline.map((s) => s[key]), scenario.map((s) => s[key])];
  const bands = [];
  if (band) {
    for (const [steps, colour, name] of [[baseline, 'rgba(110,119,129,0.15)', 'unchanged'],
      [scenario, 'rgba(191,57,137,0.15)', 'scenario']]) {
      data.push(steps.map((s) => s.rulLower), steps.map((s) => s.rulUpper));
      series.push({ label: `${name} 5 %`, stroke: colour, width: 0, points: { show: false },
        value: (u, v) => fmt(v) },
      { label: `${name} 95 %`, stroke: colour, width: 0, points: { show: false },
        value: (u, v) => fmt(v) });
      bands.push({ series: [data.length - 1, data.length - 2], fill: colour });
    }
  }
  const chart = new uPlot({
    width: widthOf(el),
    height,
    scales: { x: { time: false }, y: percent ? { range: [0, 1] } : {} },
    series,
    bands,
    axes: [{ label: 'days from now' },
      { label, values: (u, v) => v.map((t) => (percent ? `${Math.round(t * 100)} %` : `${t} h`)), size: 60 }],
  }, data, el);
  const stop = fitWidth(chart, el, height);
  return { chart, destroy: () => { stop(); chart.destroy(); } };
}

// The machine page's remaining useful life: median and 90 % interval, P(fail) at 1, 7 and
// 30 days, likely failure mode and each mode's share, model version, the survival curve with its interval
// shaded and its median marked, contributing factors and recommended actions.
import { survivalChart } from './charts.js';
import { fill, h, hours, num, pct, severityBadge, when } from './ui.js';

function probabilityAt(rul, horizon) {
  const found = rul.failureProbabilities.find((p) => p.horizonHours === horizon);
  return found ? found.probability : null;
}

function facts(rul) {
  const ci = rul.confidenceInterval;
  const share = `${Math.round(ci.confidence * 100)} %`;
  const fact = (term, field, value) => [h('dt', {}, term),
    h('dd', field ? { dataset: { field } } : {}, value)];
  return h('dl', { class: 'facts', dataset: { median: rul.medianHours, lower: ci.lower,
    upper: ci.upper } },
  fact('Median RUL', 'median', hours(rul.medianHours)),
  fact(`${share} interval`, 'interval', `${hours(ci.lower)} – ${hours(ci.upper)}`),
  ...[[24, '1 day'], [168, '7 days'], [720, '30 days']].map(([horizon, label]) =>
    fact(`P(fail within ${label})`, `p${horizon}`, pct(probabilityAt(rul, horizon), 1))),
  fact('Likely failure mode', null, (rul.failureMode || '–').replaceAll('_', ' ')),
  fact('Model version', 'model', rul.modelVersion),
  fact('Predicted at', null, when(rul.predictionTimestamp)));
}

function modeShares(rul) {
  const shares = rul.failureModeShares || [];
  if (!shares.length) return h('p', {}, 'The model does not tell failure modes apart here.');
  return h('table', { class: 'mode-shares' },
    h('thead', {}, h('tr', {}, ['Failure mode', 'Share of the predicted failure']
      .map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, shares.map((m) => h('tr', { dataset: { mode: m.failureMode } },
      h('th', { scope: 'row' }, m.failureMode.replaceAll('_', ' ')),
      h('td', {}, h('meter', { min: 0, max: 1, value: m.share,
        'aria-label': `share of ${m.failureMode.replaceAll('_', ' ')}` }), ` ${pct(m.share)}`)))));
}

function factors(rul) {
  if (!rul.contributingFactors.length) return h('p', {}, 'None reported.');
  return h('table', {},
    h('thead', {}, h('tr', {}, ['Factor', 'Importance', 'Current', 'Threshold']
      .map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rul.contributingFactors.map((f) => h('tr', {},
      h('th', { scope: 'row' }, f.factor),
      h('td', {}, h('meter', { min: 0, max: 1, value: f.importance,
        'aria-label': `importance of ${f.factor}` }), ` ${pct(f.importance)}`),
      h('td', {}, num(f.currentValue, 2)), h('td', {}, num(f.threshold, 2))))));
}

function actionsList(actions) {
  return h('ul', {}, actions.map((a) => h('li', {}, severityBadge(a.priority), ` ${a.action}`,
    a.estimatedDowntimeHours ? ` · about ${num(a.estimatedDowntimeHours, 1)} h down` : '',
    a.estimatedCost ? ` · parts ${num(a.estimatedCost, 0)}` : '')));
}

/** Draw ``rul`` (null: none yet) and ``actions`` into ``box``; returns a function that
 * removes the chart. */
export function rulPanel(box, rul, actions) {
  if (!rul) {
    fill(box, h('p', {}, 'No RUL prediction yet (the twin needs enough trend data).'));
    return () => {};
  }
  const ci = rul.confidenceInterval;
  const plot = h('div', { class: 'survival', role: 'img', 'aria-label':
    `Survival curve: median ${hours(rul.medianHours)}, ${Math.round(ci.confidence * 100)} % `
    + `interval ${hours(ci.lower)} to ${hours(ci.upper)}` });
  fill(box, facts(rul), plot, h('h3', {}, 'Failure modes'), modeShares(rul),
    h('h3', {}, 'Contributing factors'), factors(rul),
    h('h3', {}, 'Recommended actions'), actionsList(actions));
  const chart = survivalChart(plot, { curve: rul.survivalCurve, median: rul.medianHours,
    lower: ci.lower, upper: ci.upper });
  plot.dataset.drawn = 'true';
  return () => chart.destroy();
}

// What-if (engineers): clone a machine's twin, set a scenario (load factor, ambient
// temperature, maintenance now or in N days, replaced components), run it and the
// unchanged baseline on the clone, and plot failure probability and RUL over the horizon
// against each other. The clone is retired afterwards; the live twin is never touched.
// Live: the chosen machine's health and status (assetStateChanged).
import { can, gql, subscribe } from '../api.js';
import { projectionChart } from '../charts.js';
import { field, fill, h, hours, notice, num, pageTitle, pct, select, statusBadge } from '../ui.js';

const MACHINES = `query WhatIfMachines { fleetTable { rows } }`;
const MODES = `query Modes($id: ID!) { asset(id: $id) { id status healthScore
  rul { failureMode } } }`;
const CLONE = `mutation Clone($id: ID!) { cloneTwin(assetId: $id, ttlSeconds: 600) { id } }`;
const RUN = `mutation Run($clone: ID!, $s: WhatIfScenario) { runWhatIf(cloneId: $clone, scenario: $s) {
  steps { hours healthScore failureProbability rulMedian rulLower rulUpper }
  rulMedianHours rulLowerHours rulUpperHours failureProbabilities { horizonHours probability }
  failureModeShare startWear paths seconds } }`;
const RETIRE = `mutation Retire($clone: ID!) { retireClone(cloneId: $clone) }`;
const STATE = `subscription WhatIfState($id: ID!) { assetStateChanged(assetId: $id) {
  healthScore status lastUpdate } }`;
const FAILURE_MODES = ['bearing_wear', 'seal_leak', 'winding_insulation', 'misalignment'];
// (schemas.common.FailureMode)

export function title() {
  return 'What-if';
}

/** An RUL figure of a projection: null means beyond the horizon. */
function beyond(value, horizonDays) {
  return value === null || value === undefined ? `> ${horizonDays} d` : hours(value);
}

function summary(result, label, horizonDays) {
  const p = (h0) => (result.failureProbabilities.find((x) => x.horizonHours === h0) || {}).probability;
  return h('tr', {},
    h('th', { scope: 'row' }, label),
    h('td', {}, `${beyond(result.rulMedianHours, horizonDays)} [${beyond(result.rulLowerHours,
      horizonDays)} – ${beyond(result.rulUpperHours, horizonDays)}]`),
    h('td', {}, pct(p(24), 1)), h('td', {}, pct(p(168), 1)), h('td', {}, pct(p(720), 1)),
    h('td', {}, Object.entries(result.failureModeShare || {})
      .filter(([, v]) => v > 0.005).map(([k, v]) => `${k.replaceAll('_', ' ')} ${pct(v)}`)
      .join(', ') || '–'));
}

const number = (name, min, max, step, value) => h('input', { name, type: 'number', min, max,
  step, value });

class WhatIfPage {
  constructor(main, rows, chosen) {
    this.charts = [];
    this.stopState = () => {};
    this.machine = select('machine', rows.map((r) => [r.id, `${r.id} · ${r.name}`]), chosen);
    this.now = h('span', { class: 'current', 'aria-live': 'polite' });
    this.inputs = {
      load: number('load', 0.1, 3, 0.05, 1),
      ambient: number('ambient', -40, 80, 1, 25),
      service: select('service', [['none', 'no maintenance'], ['now', 'maintenance now'],
        ['later', 'maintenance in N days']], 'none'),
      days: number('days', 0, 365, 0.5, 7),
      component: select('component', [['', 'the likely failure mode'], ...FAILURE_MODES]),
      horizon: number('horizon', 1, 365, 1, 30),
      paths: number('paths', 50, 5000, 50, 400),
    };
    this.replaced = h('fieldset', { class: 'replaced' }, h('legend', {}, 'Replaced components'),
      FAILURE_MODES.map((m) => h('label', { class: 'check' },
        h('input', { type: 'checkbox', name: 'replaced', value: m }), ` ${m.replaceAll('_', ' ')}`)));
    this.run = h('button', { type: 'submit' }, 'Run');
    this.message = h('div');
    this.results = h('section', { class: 'results', 'aria-live': 'polite',
      'aria-labelledby': 'results-title' });
    const i = this.inputs;
    const form = h('form', { class: 'whatif' },
      field('Machine', this.machine), this.now,
      field('Load factor (1 = as now)', i.load), field('Ambient temperature (°C)', i.ambient),
      field('Maintenance', i.service), field('in days', i.days), field('of', i.component),
      this.replaced, field('Horizon (days)', i.horizon), field('Simulated paths', i.paths),
      this.run);
    form.addEventListener('submit', (event) => { event.preventDefault(); this.runScenario(); });
    this.machine.addEventListener('change', () => this.follow());
    main.append(form, this.message, this.results);
    this.follow();
  }

  /** The chosen machine's status and health now, live. */
  follow() {
    const show = (s) => fill(this.now, 'now: ', statusBadge(s.status),
      ` health ${num(s.healthScore, 0)}`);
    this.stopState();
    fill(this.now, '');
    this.stopState = subscribe(STATE, { id: this.machine.value },
      ({ assetStateChanged }) => show(assetStateChanged));
    gql(MODES, { id: this.machine.value }).then(({ asset }) => asset && show(asset))
      .catch(() => {});
  }

  scenario() {
    const i = this.inputs;
    const s = {
      loadFactor: Number(i.load.value), ambientC: Number(i.ambient.value),
      replaced: [...this.replaced.querySelectorAll('input:checked')].map((c) => c.value),
      horizonDays: Number(i.horizon.value), paths: Number(i.paths.value), seed: 1,
      maintenance: [],
    };
    if (i.service.value !== 'none') {
      s.maintenance.push({ component: i.component.value || null,
        delayDays: i.service.value === 'now' ? 0 : Number(i.days.value) });
    }
    return s;
  }

  async runScenario() {
    this.run.disabled = true;
    this.message.replaceChildren(notice('Cloning the twin and running the scenario…', 'info'));
    let clone = null;
    try {
      clone = (await gql(CLONE, { id: this.machine.value })).cloneTwin.id;
      const s = this.scenario();
      const unchanged = { horizonDays: s.horizonDays, paths: s.paths, seed: s.seed };
      const base = (await gql(RUN, { clone, s: unchanged })).runWhatIf;
      const what = (await gql(RUN, { clone, s })).runWhatIf;
      this.draw(base, what, s.horizonDays);
      this.message.replaceChildren();
    } catch (error) {
      fill(this.message, notice(`The what-if did not run: ${error.message}`));
    } finally {
      this.run.disabled = false;
      if (clone) gql(RETIRE, { clone }).catch(() => {});
    }
  }

  draw(base, what, horizonDays) {
    this.charts.splice(0).forEach((c) => c.destroy());
    const plot = (label) => h('div', { class: 'projection', role: 'img', 'aria-label':
      `${label} over the horizon, scenario against unchanged` });
    const [pf, rul] = [plot('Failure probability'), plot('RUL median and interval')];
    fill(this.results,
      h('h2', { id: 'results-title' }, 'Scenario against unchanged'),
      h('table', { class: 'compare' }, h('thead', {}, h('tr', {}, ['', 'RUL median [interval]',
        'P(fail 1 d)', 'P(fail 7 d)', 'P(fail 30 d)', 'Failure modes']
        .map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, summary(base, 'unchanged', horizonDays),
        summary(what, 'scenario', horizonDays))),
      h('h3', {}, 'Failure probability'), pf, h('h3', {}, 'Remaining useful life'), rul,
      h('p', { class: 'hint' },
        `${what.paths} simulated paths each, ${num(base.seconds + what.seconds, 2)} s.`));
    this.charts.push(projectionChart(pf, { baseline: base.steps, scenario: what.steps,
      key: 'failureProbability', label: 'P(failed)', percent: true }));
    if ([...base.steps, ...what.steps].some((s) => s.rulMedian !== null)) {
      this.charts.push(projectionChart(rul, { baseline: base.steps, scenario: what.steps,
        key: 'rulMedian', label: 'RUL median', band: true }));
    } else {
      rul.replaceWith(h('p', { class: 'hint' }, 'In both runs fewer than half the simulated '
        + `paths fail within ${horizonDays} days: the RUL median lies beyond the horizon.`));
    }
    this.results.dataset.drawn = 'true';
  }

  stop() {
    this.stopState();
    this.charts.forEach((c) => c.destroy());
  }
}

export async function mount(main, params) {
  main.append(pageTitle('What-if'));
  if (!can('engineer')) {
    main.append(notice('What-if needs the engineer role.', 'info'));
    return () => {};
  }
  const rows = (await gql(MACHINES)).fleetTable.rows;
  const page = new WhatIfPage(main, rows, params.query.get('machine') || rows[0]?.id);
  return () => page.stop();
}

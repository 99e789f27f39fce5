// Maintenance: work orders (filter by state, machine, technician; CSV export) and the
// plan as a Gantt chart per technician over the week, drawn on vis-timeline: shifts and
// the lines' maintenance windows behind the work, each order's due-by marked; what could
// not be scheduled and why; replan (operator). Live: workOrderChanged; the plan is read
// again after the changes it makes (the planner publishes every order it places).
import { can, gql, onReconnect, subscribe } from '../api.js';
import { Gantt } from '../gantt.js';
import { field, fill, h, hours, notice, num, pageTitle, select, severityBadge, when } from '../ui.js';

const HORIZON_H = 168;
const ORDER = `workorderId assetId type priority title status scheduledDate scheduledEnd dueBy
  estimatedDurationHours assignedTechnicianId unplacedReason`;
const ORDERS = `query Orders($status: [String!]) {
  workOrders(filter: {status: $status}, limit: 300) { ${ORDER} } }`;
const PLAN = `query Plan($h: Float!) {
  schedule(horizonHours: $h) { plannedAt start horizonHours status solver solveSeconds
    cost { labor parts downtime risk total }
    scheduled { workorderId assetId technicianId start end dueBy }
    unscheduled { workorderId assetId reason risk } }
  planCalendar(horizonHours: $h) { start horizonHours
    technicians { id name skills siteId onShift { start end } }
    lines { siteId lineId windows { start end } } }
}`;
const REPLAN = `mutation Replan($h: Float!) { replan(horizonHours: $h) { plannedAt } }`;
const LIVE = `subscription OrdersLive { workOrderChanged { ${ORDER} } }`;
const STATES = [['open', 'scheduled or in progress'], ['scheduled', 'scheduled'],
  ['in_progress', 'in progress'], ['completed', 'completed'], ['cancelled', 'cancelled'],
  ['all', 'all']];
const STATUS_OF = { open: ['scheduled', 'in_progress'], all: null };

export function title() {
  return 'Maintenance';
}

function orderRow(o) {
  return h('tr', { dataset: { workorder: o.workorderId } },
    h('th', { scope: 'row' }, o.workorderId),
    h('td', {}, h('a', { href: `#/machine/${encodeURIComponent(o.assetId)}` }, o.assetId)),
    h('td', {}, o.type), h('td', {}, severityBadge(o.priority)), h('td', {}, o.title),
    h('td', { dataset: { field: 'status' } }, o.status.replaceAll('_', ' ')),
    h('td', {}, o.assignedTechnicianId || '–'),
    h('td', {}, o.scheduledDate ? `${when(o.scheduledDate)} – ${when(o.scheduledEnd)}` : '–'),
    h('td', {}, when(o.dueBy)), h('td', {}, hours(o.estimatedDurationHours)),
    h('td', {}, o.unplacedReason || ''));
}

function planText(plan) {
  const c = plan.cost;
  return `Planned ${when(plan.plannedAt)} for ${num(plan.horizonHours / 24, 0)} days from `
    + `${when(plan.start)}: ${plan.scheduled.length} visits placed, ${plan.unscheduled.length} `
    + `not placed · expected cost ${num(c.total, 0)} (labour ${num(c.labor, 0)}, parts `
    + `${num(c.parts, 0)}, downtime ${num(c.downtime, 0)}, risk ${num(c.risk, 0)}) · `
    + `${plan.solver} ${plan.status} in ${num(plan.solveSeconds, 2)} s`;
}

function unplaced(plan) {
  if (!plan.unscheduled.length) return h('p', {}, 'Every open order is placed.');
  return h('ul', { class: 'plain' }, plan.unscheduled.map((u) => h('li',
    { dataset: { workorder: u.workorderId } },
    h('span', { class: 'badge sev-high' }, h('span', { 'aria-hidden': 'true' }, '⚠'), ' not placed'),
    ` ${u.workorderId} on ${u.assetId}: ${u.reason} (risk ${num(u.risk, 0)})`)));
}

class MaintenancePage {
  constructor(main) {
    this.orders = new Map();
    this.state = { status: 'open', machine: '', technician: '' };
    this.message = h('div');
    this.planInfo = h('p', { class: 'summary' });
    this.ganttBox = h('div', { class: 'gantt', role: 'img', 'aria-label':
      'Gantt chart of the plan; the same work is listed in the work order table below' });
    this.unscheduledBox = h('div');
    this.tbody = h('tbody');
    this.csv = h('a', { href: '/api/v1/maintenance/workorders?format=csv',
      download: 'workorders.csv', class: 'button' }, 'Export CSV');
    this.chart = new Gantt(this.ganttBox);
    this.build(main);
  }

  build(main) {
    const status = select('status', STATES, 'open');
    const machine = h('input', { type: 'search', name: 'machine', placeholder: 'machine id' });
    this.technician = select('technician', [['', 'anyone']]);
    status.addEventListener('change', () => { this.state.status = status.value;
      this.loadOrders(); });
    machine.addEventListener('input', () => { this.state.machine = machine.value.trim();
      this.renderOrders(); });
    this.technician.addEventListener('change', () => {
      this.state.technician = this.technician.value;
      this.renderOrders();
    });
    const replan = can('operator') ? h('button', { type: 'button' }, 'Replan now') : null;
    if (replan) replan.addEventListener('click', () => this.replan(replan));
    main.append(
      pageTitle('Maintenance'), this.message,
      h('section', { 'aria-labelledby': 'plan-title' },
        h('h2', { id: 'plan-title' }, 'The plan'),
        h('div', { class: 'toolbar' }, replan),
        this.planInfo,
        h('p', { class: 'hint' }, 'Rows: technicians (shaded: on shift) and lines with '
          + 'maintenance windows (shaded: may be stopped). Bars: planned work, by priority; '
          + '⚑: the latest safe finish of an order. Drag to pan, wheel to zoom.'),
        this.ganttBox,
        h('h3', {}, 'Not scheduled'), this.unscheduledBox),
      h('section', { 'aria-labelledby': 'orders-title' },
        h('h2', { id: 'orders-title' }, 'Work orders'),
        h('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
          field('State', status), field('Machine', machine),
          field('Technician', this.technician), this.csv),
        h('div', { class: 'scroll' }, h('table', { class: 'orders', 'aria-label': 'Work orders' },
          h('thead', {}, h('tr', {}, ['Order', 'Machine', 'Type', 'Priority', 'Title', 'State',
            'Technician', 'Planned', 'Due by', 'Duration', 'Why not placed']
            .map((t) => h('th', { scope: 'col' }, t)))), this.tbody))));
  }

  statuses() {
    return STATUS_OF[this.state.status] ?? [this.state.status];
  }

  wanted(o) {
    const statuses = this.statuses();
    const { machine, technician } = this.state;
    if (statuses && !statuses.includes(o.status)) return false;
    if (machine && !o.assetId.toLowerCase().includes(machine.toLowerCase())) return false;
    return !technician || o.assignedTechnicianId === technician;
  }

  renderOrders() {
    const list = [...this.orders.values()].filter((o) => this.wanted(o))
      .sort((a, b) => ((a.scheduledDate || '9') < (b.scheduledDate || '9') ? -1 : 1));
    this.tbody.replaceChildren(...list.map(orderRow));
    const query = new URLSearchParams({ format: 'csv' });
    if (this.statuses()) query.set('status', this.statuses().join(','));
    if (this.state.technician) query.set('technician_id', this.state.technician);
    this.csv.href = `/api/v1/maintenance/workorders?${query}`;
  }

  async loadOrders() {
    try {
      const data = await gql(ORDERS, { status: this.statuses() });
      this.orders.clear();
      data.workOrders.forEach((o) => this.orders.set(o.workorderId, o));
    } catch (error) {
      fill(this.message, notice(`Work orders unavailable: ${error.message}`));
    }
    this.renderOrders();
  }

  async loadPlan() {
    let data;
    try {
      data = await gql(PLAN, { h: HORIZON_H });
    } catch (error) {
      fill(this.planInfo, notice(`The plan is unavailable: ${error.message}`));
      return;
    }
    const plan = data.schedule;
    fill(this.planInfo, planText(plan));
    fill(this.unscheduledBox, unplaced(plan));
    await this.chart.show(plan, data.planCalendar, this.orders);
    const box = this.ganttBox.dataset;
    [box.ready, box.visits] = ['true', String(plan.scheduled.length)];
    box.draws = String(Number(box.draws || 0) + 1);
    fill(this.technician, h('option', { value: '' }, 'anyone'), data.planCalendar.technicians
      .map((t) => h('option', { value: t.id }, `${t.name} (${t.id})`)));
    this.technician.value = this.state.technician;
  }

  async replan(button) {
    button.disabled = true;
    try {
      await gql(REPLAN, { h: HORIZON_H });
      await this.loadPlan();
    } catch (error) {
      fill(this.message, notice(`Not replanned: ${error.message}`));
    } finally {
      button.disabled = false;
    }
  }

  /** A work order changed: list it, and read the plan again once the changes stop for
   * a second (the planner publishes every order it places). */
  orderChanged(o) {
    this.orders.set(o.workorderId, o);
    this.renderOrders();
    clearTimeout(this.planSoon);
    this.planSoon = setTimeout(() => this.loadPlan(), 1000);
  }
}

export async function mount(main) {
  const page = new MaintenancePage(main);
  const stops = [
    subscribe(LIVE, {}, (data) => page.orderChanged(data.workOrderChanged),
      (error) => fill(page.message, notice(`Live updates refused: ${error.message}`))),
    onReconnect(() => { page.loadOrders(); page.loadPlan(); }),
  ];
  await page.loadOrders();
  await page.loadPlan();
  return () => {
    clearTimeout(page.planSoon);
    stops.forEach((stop) => stop());
    page.chart.destroy();
  };
}

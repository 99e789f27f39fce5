// The plan as a Gantt chart on vis-timeline (loaded when first needed): one row per
// technician with their shifts shaded, one per line with maintenance windows (shaded:
// may be stopped), the planned work as bars by priority and each order's latest safe
// finish as a flag. Times are shown in UTC.
import { h, when } from './ui.js';

let visModule = null;
async function vis() {
  if (!visModule) {
    visModule = await import('../vendor/vis-timeline-8.5.4/vis-timeline-graph2d.min.js');
    if (!document.querySelector('link[data-vis]')) {
      document.head.append(h('link', { rel: 'stylesheet', 'data-vis': '',
        href: '/ui/vendor/vis-timeline-8.5.4/vis-timeline-graph2d.min.css' }));
    }
  }
  return visModule;
}

/** The rows and bars of the plan: one row per technician, one per line with windows. */
function rowsAndBars(plan, calendar, orders) {
  const groups = calendar.technicians.map((t) => ({
    id: `t:${t.id}`,
    content: `${t.name} (${t.id}) · ${t.skills.join(', ')}`,
    order: 0,
  }));
  const items = [];
  for (const t of calendar.technicians) {
    t.onShift.forEach((p, i) => items.push({ id: `s:${t.id}:${i}`, group: `t:${t.id}`,
      start: p.start, end: p.end, type: 'background', className: 'shift' }));
  }
  for (const line of calendar.lines.filter((l) => l.windows)) {
    const id = `l:${line.siteId}/${line.lineId}`;
    groups.push({ id, content: `line ${line.siteId} › ${line.lineId}: may stop (shaded)`, order: 1 });
    line.windows.forEach((p, i) => items.push({ id: `${id}:${i}`, group: id, start: p.start,
      end: p.end, type: 'background', className: 'window' }));
  }
  plan.scheduled.forEach((w, i) => {
    const order = orders.get(w.workorderId) || {};
    items.push({
      id: `w:${i}`, group: `t:${w.technicianId}`, start: w.start, end: w.end,
      content: w.assetId,
      className: `work prio-${order.priority || 'medium'}`,
      title: `${w.workorderId} on ${w.assetId}: ${order.title || ''} (${order.priority || '?'})`
        + ` ${when(w.start)} – ${when(w.end)}${w.dueBy ? `, due by ${when(w.dueBy)}` : ''}`,
    });
    if (w.dueBy) {
      items.push({ id: `d:${i}`, group: `t:${w.technicianId}`, start: w.dueBy, type: 'point',
        content: '⚑', className: 'due',
        title: `${w.workorderId} must be finished by ${when(w.dueBy)}` });
    }
  });
  return { groups, items };
}

/** The plan on a vis-timeline, made once and then changed in place (no blank redraw);
 * the window the person zoomed to is kept. */
export class Gantt {
  constructor(el) {
    this.el = el;
    this.timeline = null;
  }

  async show(plan, calendar, orders) {
    const { Timeline, DataSet, moment } = await vis();
    const { groups, items } = rowsAndBars(plan, calendar, orders);
    const start = Date.parse(calendar.start);
    const end = start + calendar.horizonHours * 3600e3;
    if (!this.timeline) {
      this.groups = new DataSet(groups);
      this.items = new DataSet(items);
      this.timeline = new Timeline(this.el, this.items, this.groups, {
        start, end, zoomMin: 3600e3, stack: true, orientation: 'top', groupOrder: 'order',
        moment: (date) => moment(date).utc(), showCurrentTime: false,
        tooltip: { followMouse: true }, margin: { item: 4 },
      });
    } else {
      this.groups.update(groups);
      this.groups.remove(this.groups.getIds().filter((id) => !groups.some((g) => g.id === id)));
      this.items.update(items);
      this.items.remove(this.items.getIds().filter((id) => !items.some((i) => i.id === id)));
    }
    this.timeline.setOptions({ min: start - 24 * 3600e3, max: end + 24 * 3600e3 });
  }

  destroy() {
    if (this.timeline) this.timeline.destroy();
  }
}

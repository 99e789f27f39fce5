// Small DOM and formatting helpers shared by the pages.

/** ``h('td', {class: 'x', dataset: {field: 'health'}}, 'text', child)``: an element. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'text') el.textContent = value;
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace the children of ``el``. */
export function fill(el, ...children) {
  el.replaceChildren();
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

// Status is never told by colour alone: each has an icon and its word.
const STATUS = {
  running: ['✓', 'running'],
  idle: ['–', 'idle'],
  warning: ['▲', 'warning'],
  alarm: ['✖', 'alarm'],
  offline: ['○', 'offline'],
  unknown: ['?', 'unknown'],
};
const SEVERITY = { low: '▽', medium: '◆', high: '▲', critical: '✖' };

export function statusBadge(status) {
  const [icon, word] = STATUS[status] || STATUS.unknown;
  return h('span', { class: `badge status-${status}`, dataset: { status } },
    h('span', { 'aria-hidden': 'true' }, icon), ' ', word);
}

export function severityBadge(severity) {
  return h('span', { class: `badge sev-${severity}`, dataset: { severity } },
    h('span', { 'aria-hidden': 'true' }, SEVERITY[severity] || '•'), ' ', severity);
}

export function num(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  return Number(value).toLocaleString('en', {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

export function pct(p, digits = 0) {
  if (p === null || p === undefined) return '–';
  return `${(100 * p).toFixed(digits)} %`;
}

export function hours(value) {
  if (value === null || value === undefined) return '–';
  if (value >= 48) return `${num(value / 24, 1)} d`;
  return `${num(value, 0)} h`;
}

export function when(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  return d.toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
}

export function age(iso, now = Date.now()) {
  if (!iso) return '–';
  const minutes = Math.max(0, (now - Date.parse(iso)) / 60000);
  if (minutes < 60) return `${Math.round(minutes)} min`;
  if (minutes < 48 * 60) return `${Math.round(minutes / 60)} h`;
  return `${Math.round(minutes / 1440)} d`;
}

/** A message in the page: ``kind`` error or info; errors are announced. */
export function notice(text, kind = 'error') {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

/** A heading that takes the focus when a page opens (keyboard and screen readers). */
export function pageTitle(text) {
  return h('h1', { tabindex: '-1' }, text);
}

/** A labelled form control: ``<label>text <input …></label>``. */
export function field(text, control) {
  return h('label', { class: 'field' }, h('span', {}, text), control);
}

/** A select of ``options`` ([value, text] or value), with ``value`` chosen. */
export function select(name, options, value = '', props = {}) {
  return h('select', { name, ...props },
    options.map((o) => {
      const [v, t] = Array.isArray(o) ? o : [o, o];
      return h('option', { value: v, selected: v === value }, t);
    }));
}

/** Ask for a note (and more fields) in a modal dialog; resolves to the form's values,
 * or null when cancelled. ``fields``: [{name, label, type, required, value}]. */
export function ask(title, fields, confirm = 'Save') {
  return new Promise((resolve) => {
    const form = h('form', { method: 'dialog' },
      h('h2', {}, title),
      fields.map((f) => field(f.label, f.type === 'textarea'
        ? h('textarea', { name: f.name, required: f.required, rows: 3 }, f.value || '')
        : h('input', {
          name: f.name, type: f.type || 'text', required: f.required, value: f.value ?? '',
          min: f.min, max: f.max, step: f.step,
        }))),
      h('div', { class: 'actions' },
        h('button', { type: 'submit', value: 'ok' }, confirm),
        h('button', { type: 'button', value: 'cancel', onclick: () => dialog.close('cancel') },
          'Cancel')));
    const dialog = h('dialog', { 'aria-label': title }, form);
    dialog.addEventListener('close', () => {
      const values = dialog.returnValue === 'ok'
        ? Object.fromEntries(new FormData(form).entries()) : null;
      dialog.remove();
      resolve(values);
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (form.reportValidity()) dialog.close('ok');
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

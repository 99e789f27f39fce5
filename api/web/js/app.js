// The application shell: the session, the header (pages, connection state, who is logged
// in) and the router. Pages are ES modules under ./pages, each exporting
// ``mount(main, params)`` that draws the page and returns a function that stops it
// (unsubscribes, clears timers). Routes are in the URL's fragment: #/fleet,
// #/machine/M-101, #/alerts, #/maintenance, #/whatif, #/login.
import { can, loadSession, logout, onLoggedOut, onStatus, session, startLive } from './api.js';
import { fill, notice } from './ui.js';

const PAGES = {
  fleet: () => import('./pages/fleet.js'),
  machine: () => import('./pages/machine.js'),
  alerts: () => import('./pages/alerts.js'),
  maintenance: () => import('./pages/maintenance.js'),
  whatif: () => import('./pages/whatif.js'),
  login: () => import('./pages/login.js'),
};
const STATES = {
  connecting: ['○', 'connecting…'],
  live: ['●', 'live'],
  reconnecting: ['↻', 'reconnecting…'],
  offline: ['○', 'offline'],
};

const main = document.getElementById('page');
const header = document.querySelector('header.top');
let stopPage = null;
let routing = 0;

function parse(hash) {
  const [path, query = ''] = hash.replace(/^#\/?/, '').split('?');
  const [name, ...rest] = path.split('/');
  return {
    name: name || 'fleet',
    id: rest.length ? decodeURIComponent(rest.join('/')) : null,
    query: new URLSearchParams(query),
  };
}

async function route() {
  const mine = ++routing;
  const params = parse(location.hash);
  if (!session.user && params.name !== 'login') {
    location.replace(`#/login?next=${encodeURIComponent(location.hash || '#/fleet')}`);
    return;
  }
  if (stopPage) {
    const stop = stopPage;
    stopPage = null;
    stop();
  }
  const load = PAGES[params.name];
  header.hidden = !session.user;
  document.querySelectorAll('[data-nav]').forEach((a) => {
    if (a.dataset.nav === params.name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
  if (!load) {
    fill(main, notice(`There is no page "${params.name}".`));
    return;
  }
  const page = await load();
  if (mine !== routing) return; // another route began meanwhile
  // Each page draws into a box of its own: one left behind by a quicker route draws
  // into a box no longer shown, and is stopped as soon as it has started.
  const box = document.createElement('div');
  main.replaceChildren(box);
  document.title = `${page.title(params)} · twinfleet`;
  let stop = null;
  try {
    stop = await page.mount(box, params);
  } catch (error) {
    console.error(error); // a page that fails is a bug: the browser tests fail on it
    box.append(notice(`This page could not be shown: ${error.message}`));
  }
  if (mine !== routing) {
    if (stop) stop();
    return;
  }
  stopPage = stop;
  const heading = box.querySelector('h1');
  if (heading && document.activeElement !== box.querySelector('input')) heading.focus();
}

function showWho() {
  document.getElementById('who').textContent = session.user
    ? `${session.user} (${session.role})` : '';
  document.querySelectorAll('[data-role]').forEach((el) => {
    el.hidden = !can(el.dataset.role);
  });
}

/** After logging in (called by the login page). */
export function loggedIn(next) {
  showWho();
  startLive();
  location.replace(next && next.startsWith('#/') && !next.startsWith('#/login') ? next : '#/fleet');
}

async function start() {
  onStatus((state) => {
    const el = document.getElementById('connection');
    const [icon, text] = STATES[state];
    el.dataset.state = state;
    el.querySelector('.icon').textContent = icon;
    el.querySelector('.text').textContent = text;
  });
  onLoggedOut(() => {
    showWho();
    header.hidden = true;
    route();
  });
  document.getElementById('logout').addEventListener('click', async () => {
    await logout();
    showWho();
    location.replace('#/login');
  });
  try {
    await loadSession();
  } catch (error) {
    fill(main, notice(`The API does not answer: ${error.message}`));
    return;
  }
  showWho();
  if (session.user) startLive();
  window.addEventListener('hashchange', route);
  route();
}

start();

// The dashboard's only way to the API (same origin): the session (log in, out, who),
// GraphQL queries and mutations over HTTP, and live subscriptions over
// graphql-transport-ws (one websocket for every page, reconnected automatically).
//
// The session cookie (HttpOnly) authenticates every request; state-changing requests
// carry the session's CSRF token in X-CSRF-Token, and the websocket's connection_init
// carries it too.
import { createClient } from '../vendor/graphql-ws-6.4.2/client.js';

const RANK = { viewer: 1, operator: 2, engineer: 3, admin: 4 };
const RETRY_MAX_MS = 3000;
const HINT = 'twinfleet.session';
// The cookie is HttpOnly, so the page cannot see whether it has one; it remembers that it
// logged in (in localStorage, nothing secret) so a first visit goes straight to the login
// page instead of asking the API and being refused.

export const session = { user: null, role: null, csrf: null, expiresAt: null };

/** Whether the logged-in user holds ``role`` (roles include the ones below them). */
export function can(role) {
  return (RANK[session.role] || 0) >= RANK[role];
}

export class ApiFailure extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

const loggedOutListeners = new Set();
/** ``fn()`` when the API says the session is gone (401 or a 4401 close). */
export function onLoggedOut(fn) {
  loggedOutListeners.add(fn);
}
function loggedOut() {
  localStorage.removeItem(HINT);
  session.user = session.role = session.csrf = null;
  stopLive();
  loggedOutListeners.forEach((fn) => fn());
}

function remember(doc) {
  localStorage.setItem(HINT, '1');
  session.user = doc.user;
  session.role = doc.role;
  session.csrf = doc.csrf_token;
  session.expiresAt = doc.expires_at;
  return doc;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = 'error';
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message;
      code = body.error.code;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiFailure(message, code, response.status);
}

// -- the session ----------------------------------------------------------------------------
/** The current session, or null when there is none. */
export async function loadSession() {
  if (!localStorage.getItem(HINT)) return null;
  const response = await fetch('/api/v1/session', { credentials: 'same-origin' });
  if (response.status === 401) {
    localStorage.removeItem(HINT);
    return null;
  }
  if (!response.ok) throw await failure(response);
  return remember(await response.json());
}

/** Log in; throws ApiFailure with the API's message when refused. */
export async function login(username, password) {
  const response = await fetch('/api/v1/session', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  if (!response.ok) throw await failure(response);
  return remember(await response.json());
}

export async function logout() {
  const csrf = session.csrf;
  localStorage.removeItem(HINT);
  stopLive();
  await fetch('/api/v1/session', {
    method: 'DELETE',
    credentials: 'same-origin',
    headers: csrf ? { 'x-csrf-token': csrf } : {},
  });
  session.user = session.role = session.csrf = null;
}

// -- HTTP -----------------------------------------------------------------------------------
function headers() {
  const h = { 'content-type': 'application/json' };
  if (session.csrf) h['x-csrf-token'] = session.csrf;
  return h;
}

/** The data of a GraphQL query or mutation; its first error as an ApiFailure. */
export async function gql(query, variables = {}) {
  const response = await fetch('/graphql', {
    method: 'POST',
    credentials: 'same-origin',
    headers: headers(),
    body: JSON.stringify({ query, variables }),
  });
  if (response.status === 401) {
    loggedOut();
    throw await failure(response);
  }
  if (!response.ok) throw await failure(response);
  const body = await response.json();
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    throw new ApiFailure(first.message, (first.extensions || {}).code || 'error', 200);
  }
  return body.data;
}

// -- live -----------------------------------------------------------------------------------
// One graphql-ws client for the whole page. Its state is shown in the header: "live",
// "reconnecting" (the socket closed; it retries every RETRY_MAX_MS at most) or "offline"
// (logged out). After a reconnect every page reloads what it shows, since updates sent
// while the socket was closed are lost.
let client = null;
let everConnected = false;
const active = new Map(); // id -> {request, sink, dispose}
const statusListeners = new Set();
const reconnectListeners = new Set();
let nextId = 1;
export let liveState = 'connecting';

/** ``fn(state)`` on every change of the connection's state. */
export function onStatus(fn) {
  statusListeners.add(fn);
  fn(liveState);
}

/** ``fn()`` after the websocket came back; returns a function that stops it. */
export function onReconnect(fn) {
  reconnectListeners.add(fn);
  return () => reconnectListeners.delete(fn);
}

function setState(state) {
  if (state === liveState) return;
  liveState = state;
  statusListeners.forEach((fn) => fn(state));
}

function wsUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/graphql`;
}

function startLive() {
  if (client) return;
  const made = createClient({
    url: wsUrl(),
    lazy: false,
    keepAlive: 10000,
    retryAttempts: Infinity,
    shouldRetry: () => true,
    retryWait: (retries) =>
      new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** retries, RETRY_MAX_MS))),
    connectionParams: () => ({ csrf_token: session.csrf }),
    onNonLazyError: (error) => refused(made, error),
    on: {
      connecting: () => setState(everConnected ? 'reconnecting' : 'connecting'),
      connected: () => {
        const again = everConnected;
        everConnected = true;
        setState('live');
        if (again) reconnectListeners.forEach((fn) => fn());
      },
      closed: () => {
        if (client === made) setState('reconnecting');
      },
    },
  });
  client = made;
  for (const entry of active.values()) attach(entry);
}

/** The server refused the socket for good: logged out (4401), or anything else, which
 * gets a new client after a pause. */
function refused(which, error) {
  if (client !== which) return;
  client = null;
  which.dispose();
  if (error && error.code === 4401) {
    setState('offline');
    loggedOut();
    return;
  }
  setState('reconnecting');
  setTimeout(() => {
    if (session.user && !client) startLive();
  }, RETRY_MAX_MS);
}

function stopLive() {
  if (client) {
    const old = client;
    client = null;
    old.dispose();
  }
  for (const entry of active.values()) entry.dispose = null;
  everConnected = false;
  setState('offline');
}

function attach(entry) {
  entry.dispose = client.subscribe(entry.request, {
    next: (message) => {
      if (message.errors && message.errors.length) entry.sink.error(message.errors[0]);
      else entry.sink.next(message.data);
    },
    error: (error) => {
      if (Array.isArray(error)) entry.sink.error(error[0]);
      else if (error && error.message) entry.sink.error(error);
      // a closed socket: the client reconnects and subscribes again by itself
    },
    complete: () => {},
  });
}

/**
 * Subscribe to ``query`` with ``variables``: ``onData(data)`` for each message,
 * ``onError(error)`` when the API refuses it. Returns a function that stops it.
 */
export function subscribe(query, variables, onData, onError = () => {}) {
  const id = nextId++;
  const entry = {
    request: { query, variables },
    sink: { next: onData, error: onError },
    dispose: null,
  };
  active.set(id, entry);
  if (!client && session.user) startLive();
  else if (client) attach(entry);
  return () => {
    active.delete(id);
    if (entry.dispose) entry.dispose();
  };
}

export { startLive };

// The rollout dashboard. It loads every flag once, then follows `GET /stream` (Server-Sent Events)
// and refetches only the flag a change names; it polls `GET /flags` slowly only while the stream
// is down. The stream is read with fetch() rather than EventSource so that it carries the admin
// token in `Authorization` like every other request: no token in a URL, a cookie or a log line.
// Every URL is relative (the page lives at `…/ui/`), so the dashboard works under any path prefix.
// Data from the API reaches the page only through textContent and attributes, never as markup.
'use strict';

const TOKEN_KEY = 'rollout-controller.admin-token';
const REQUEST_TIMEOUT_MS = 8000;
const HISTORY_LIMIT = 20;
/** While the stream is down, the whole list is read this often. */
const FALLBACK_POLL_MS = 30_000;
/** Reconnection delays of the stream, then the last one again. */
const RECONNECT_MS = [500, 1000, 2000, 5000, 10_000, 30_000];
/** The server sends a heartbeat every 15 s by default: three missed ones mean a dead stream. */
const STREAM_SILENCE_MS = 50_000;
/** Open cards re-read their guards and holds this often (metric pushes change no version). */
const DETAILS_MS = 10_000;
const FREEZE_MS = 30_000;
/** With at most this many flags every card opens; with more, the operator opens the ones to watch. */
const AUTO_EXPAND = 8;
/** Past this many stale flags after a reconnection, one read of the list beats one read each. */
const REFETCH_ALL_OVER = 50;
/** Points kept per guard chart: the service's history (at most 720) and what the tab reads after. */
const CHART_POINTS = 1000;
/** Past this many points a chart draws its lines without a dot per reading. */
const CHART_DOTS = 120;

/** Which commands each status allows (the state machine of the README). */
const LEGAL = {
  pending: ['start'],
  scheduled: ['cancel'],
  running: ['advance', 'pause', 'rollback'],
  paused: ['resume', 'rollback'],
  rolled_back: ['resume'],
  completed: ['rollback'],
};

const ACTION_LABELS = {
  start: 'Start',
  advance: 'Advance',
  pause: 'Pause',
  resume: 'Resume',
  rollback: 'Roll back',
  cancel: 'Cancel start',
  approve: 'Approve',
  freeze: 'Freeze',
  unfreeze: 'Unfreeze',
};

const STATUS_ORDER = ['running', 'paused', 'rolled_back', 'scheduled', 'pending', 'completed'];

/** The guards, their runbook defaults and units (see docs/guards.md). */
const GUARDS = [
  ['error_rate', 0.01],
  ['bounce_rate', 0.05],
  ['complaint_rate', 0.001],
  ['delivery_rate', 0.95],
  ['p99_latency_ms', 5000],
  ['queue_depth', 10000],
  ['webhook_error_rate', 0.05],
];
const RATE_GUARDS = new Set(['error_rate', 'bounce_rate', 'complaint_rate', 'delivery_rate', 'webhook_error_rate']);
const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
const RUNBOOK_STAGES = [
  { name: 'internal', percent: 0, soak_secs: 3600, internal_only: true },
  { name: '10%', percent: 10, soak_secs: 3600 },
  { name: '50%', percent: 50, soak_secs: 3600 },
  { name: '100%', percent: 100, soak_secs: 22 * 3600 },
];

const $ = (selector, root = document) => root.querySelector(selector);
const byTestId = (id, root = document) => $(`[data-testid="${id}"]`, root);

const ui = {
  signin: byTestId('signin'),
  tokenForm: byTestId('token-form'),
  tokenInput: byTestId('token-input'),
  tokenError: byTestId('token-error'),
  forget: byTestId('forget-token'),
  newFlag: byTestId('new-flag'),
  freezeToggle: byTestId('freeze-toggle'),
  freezeBanner: byTestId('freeze-banner'),
  flags: byTestId('flags'),
  empty: byTestId('empty'),
  summary: byTestId('summary'),
  live: byTestId('live'),
  liveText: byTestId('live-text'),
  banner: byTestId('banner'),
  toasts: byTestId('toasts'),
  dialog: byTestId('confirm-dialog'),
  dialogForm: byTestId('confirm-form'),
  dialogTitle: byTestId('confirm-title'),
  dialogText: byTestId('confirm-text'),
  dialogReason: byTestId('confirm-reason'),
  dialogReasonNote: byTestId('confirm-reason-note'),
  dialogAtField: byTestId('confirm-at-field'),
  dialogAt: byTestId('confirm-at'),
  dialogOk: byTestId('confirm-ok'),
  dialogCancel: byTestId('confirm-cancel'),
  editor: byTestId('editor-dialog'),
  editorForm: byTestId('editor-form'),
  template: $('#flag-card-template'),
  chartTemplate: $('#chart-template'),
};

const state = {
  token: readToken(),
  /** name → {el, flag, health, history, expanded, busy, sig, series, inflight} */
  cards: new Map(),
  /** Whether the first full read of the list is done. */
  loaded: false,
  stream: null,
  streamOpen: false,
  lastEventId: '',
  lastAliveAt: 0,
  reconnects: 0,
  reconnectTimer: 0,
  pollTimer: 0,
  lastOkAt: 0,
  freeze: null,
  /** Server clock minus ours, from the Date header, so "time in stage" is the server's. */
  clockOffsetMs: 0,
  editing: null,
};

// ---------------------------------------------------------------------------------------------
// Token handling

function readToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

function saveToken(token) {
  state.token = token;
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the token lives in this page only.
  }
}

function signOut(message) {
  saveToken('');
  closeStream();
  stopPolling();
  clearTimeout(state.reconnectTimer);
  for (const entry of state.cards.values()) entry.el.remove();
  state.cards.clear();
  state.loaded = false;
  state.lastEventId = '';
  ui.flags.hidden = true;
  ui.empty.hidden = true;
  for (const b of [ui.forget, ui.newFlag, ui.freezeToggle]) b.hidden = true;
  ui.summary.replaceChildren();
  hideBanner();
  setLive('idle', 'Not signed in');
  ui.tokenError.textContent = message || '';
  ui.tokenError.hidden = !message;
  ui.signin.hidden = false;
  ui.tokenInput.value = '';
  ui.tokenInput.focus();
}

function signIn(token) {
  saveToken(token);
  ui.signin.hidden = true;
  ui.tokenError.hidden = true;
  ui.flags.hidden = false;
  for (const b of [ui.forget, ui.newFlag, ui.freezeToggle]) b.hidden = false;
  setLive('idle', 'Connecting…');
  openStream();
  refreshFreeze();
}

ui.tokenForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = ui.tokenInput.value.trim();
  if (!token) {
    ui.tokenError.textContent = 'Paste an admin token first.';
    ui.tokenError.hidden = false;
    return;
  }
  signIn(token);
});

ui.forget.addEventListener('click', () => signOut(''));

/** A refused token ends the session, wherever the refusal came from. */
function handleAuthError(err) {
  if (err.status === 401) {
    signOut('The token was refused (401 unauthorized). Enter a valid admin token.');
    return true;
  }
  if (err.status === 403) {
    signOut('This token may not manage rollouts (403 forbidden). Enter an admin token.');
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// The API, always relative to the page (`…/ui/` → `…/flags`)

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const apiUrl = (path) => `../${path}`;
const flagPath = (name, rest = '') => `flags/${encodeURIComponent(name)}${rest}`;

async function api(method, path, body) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  const headers = { Authorization: `Bearer ${state.token}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  try {
    const resp = await fetch(apiUrl(path), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: 'no-store',
      credentials: 'omit',
    });
    noteServerClock(resp);
    return await readJson(resp);
  } catch (err) {
    if (err instanceof ApiError) throw err;
    if (err && err.name === 'AbortError') {
      throw new ApiError(0, 'timeout', `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`);
    }
    throw new ApiError(0, 'network', 'the service cannot be reached');
  } finally {
    clearTimeout(timer);
  }
}

/** The body of an answer, or its JSON error as an ApiError. */
async function readJson(resp) {
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, (data && data.error) || `http_${resp.status}`,
      (data && data.message) || resp.statusText || 'request failed');
  }
  return data;
}

function noteServerClock(resp) {
  const date = Date.parse(resp.headers.get('date') || '');
  if (!Number.isFinite(date)) return;
  // The header has whole seconds: ignore differences that small.
  const offset = date + 500 - Date.now();
  state.clockOffsetMs = Math.abs(offset) > 2000 ? offset : 0;
}

const serverNow = () => Date.now() + state.clockOffsetMs;

// ---------------------------------------------------------------------------------------------
// The live stream: GET /stream read as Server-Sent Events

function closeStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.streamOpen = false;
}

async function openStream() {
  closeStream();
  clearTimeout(state.reconnectTimer);
  if (!state.token) return;
  const controller = new AbortController();
  state.stream = controller;
  const headers = { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' };
  // The replica replays what we missed when it still holds it, else it starts with a snapshot.
  if (state.lastEventId) headers['Last-Event-ID'] = state.lastEventId;
  try {
    const resp = await fetch(apiUrl('stream'), {
      headers,
      signal: controller.signal,
      cache: 'no-store',
      credentials: 'omit',
    });
    noteServerClock(resp);
    if (!resp.ok) await readJson(resp);
    if (!resp.body) throw new ApiError(0, 'no_stream', 'this browser cannot read a stream');
    state.streamOpen = true;
    state.reconnects = 0;
    state.lastAliveAt = Date.now();
    stopPolling();
    await readEvents(resp.body, controller);
    if (state.stream === controller) streamFailed(new ApiError(0, 'closed', 'the stream ended'));
  } catch (err) {
    if (state.stream !== controller) return; // replaced or signed out on purpose
    if (handleAuthError(err)) return;
    streamFailed(err.name === 'AbortError' ? new ApiError(0, 'silent', 'the stream went silent') : err);
  }
}

async function readEvents(body, controller) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  while (state.stream === controller) {
    const { value, done } = await reader.read();
    if (done) return;
    state.lastAliveAt = Date.now();
    buffer = (buffer + value).replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      onStreamBlock(block);
    }
  }
}

/** One event of the wire format: `event:`, `id:`, `data:` lines; `:` lines are comments. */
function onStreamBlock(block) {
  let type = 'message';
  let id = null;
  const data = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') type = value;
    else if (field === 'id') id = value;
    else if (field === 'data') data.push(value);
  }
  if (id !== null) state.lastEventId = id;
  if (!data.length) {
    markLive();
    return;
  }
  let payload;
  try {
    payload = JSON.parse(data.join('\n'));
  } catch {
    return;
  }
  if (type === 'snapshot') onSnapshot(payload);
  else if (type === 'change') onChange(payload);
  markLive();
}

function streamFailed(err) {
  state.streamOpen = false;
  state.stream = null;
  if (!state.token) return;
  const delay = RECONNECT_MS[Math.min(state.reconnects, RECONNECT_MS.length - 1)];
  state.reconnects += 1;
  setLive('error', `Reconnecting (${err.message})`);
  state.reconnectTimer = setTimeout(openStream, delay);
  // Only while the stream is down: one slow read of the whole list keeps the page roughly true.
  if (!state.pollTimer) state.pollTimer = setTimeout(pollWhileDown, state.loaded ? FALLBACK_POLL_MS : 0);
}

function stopPolling() {
  clearTimeout(state.pollTimer);
  state.pollTimer = 0;
}

async function pollWhileDown() {
  state.pollTimer = 0;
  if (!state.token || state.streamOpen) return;
  await loadAll();
  if (!state.streamOpen && state.token) state.pollTimer = setTimeout(pollWhileDown, FALLBACK_POLL_MS);
}

function markLive() {
  state.lastOkAt = Date.now();
  if (state.streamOpen) {
    hideBanner();
    setLive('ok', 'Live');
  }
}

/** The whole configuration: on the first one read the list; later, only the flags that moved. */
function onSnapshot(snapshot) {
  const versions = new Map((snapshot.flags || []).map((f) => [f.name, f.version]));
  if (!state.loaded) {
    loadAll();
    return;
  }
  for (const name of [...state.cards.keys()]) {
    if (!versions.has(name)) removeCard(name);
  }
  const stale = [...versions].filter(([name, version]) => {
    const entry = state.cards.get(name);
    return !entry || !entry.flag || entry.flag.version < version;
  });
  if (stale.length > REFETCH_ALL_OVER) loadAll();
  else for (const [name] of stale) refreshFlag(name);
  renderSummary();
}

/** One flag changed (or was deleted) on some replica: read only that flag. */
function onChange(change) {
  if (!change || typeof change.name !== 'string') return;
  if (change.deleted) {
    removeCard(change.name);
    renderSummary();
    return;
  }
  const entry = state.cards.get(change.name);
  if (entry && entry.flag && entry.flag.version >= change.version) return;
  refreshFlag(change.name, { details: true });
}

/** Reads every flag once (the first load, and the slow fallback while the stream is down). */
async function loadAll() {
  try {
    const list = await api('GET', 'flags');
    const flags = (list && list.flags) || [];
    const seen = new Set();
    const expand = flags.length <= AUTO_EXPAND;
    for (const flag of flags) {
      seen.add(flag.name);
      upsertFlag(flag, expand);
    }
    for (const name of [...state.cards.keys()]) {
      if (!seen.has(name)) removeCard(name);
    }
    state.loaded = true;
    renderSummary();
    if (!state.streamOpen) {
      showBanner(`The live stream is down: reconnecting, and reading the list every ${FALLBACK_POLL_MS / 1000} s meanwhile.`);
    }
  } catch (err) {
    if (handleAuthError(err)) return;
    showBanner(`Cannot load flags: ${err.message}. The data shown may be stale.`);
    setLive('error', 'Offline');
  }
}

/** Reads one flag (coalesced: at most one request per flag in flight, plus one after it). */
async function refreshFlag(name, { details = false } = {}) {
  let entry = state.cards.get(name);
  if (entry && entry.inflight) {
    entry.again = true;
    entry.againDetails = entry.againDetails || details;
    return;
  }
  if (entry) entry.inflight = true;
  try {
    const flag = await api('GET', flagPath(name));
    entry = upsertFlag(flag, state.cards.size < AUTO_EXPAND);
    renderSummary();
    if (details && entry.expanded) refreshDetails(entry);
  } catch (err) {
    if (handleAuthError(err)) return;
    if (err.status === 404) {
      removeCard(name);
      renderSummary();
    } else {
      toast('error', `Cannot read ${name}: ${err.message}`);
    }
  } finally {
    entry = state.cards.get(name);
    if (entry && entry.inflight) {
      entry.inflight = null;
      if (entry.again) {
        const withDetails = entry.againDetails;
        entry.again = false;
        entry.againDetails = false;
        refreshFlag(name, { details: withDetails });
      }
    }
  }
}

/** Guards and audit log of an open card. */
async function refreshDetails(entry) {
  const name = entry.flag.name;
  const [health, history] = await Promise.allSettled([
    api('GET', flagPath(name, '/health')),
    api('GET', flagPath(name, `/history?limit=${HISTORY_LIMIT}`)),
  ]);
  if (state.cards.get(name) !== entry) return;
  for (const r of [health, history]) {
    if (r.status === 'rejected' && handleAuthError(r.reason)) return;
  }
  applyHealth(entry, health);
  if (history.status === 'fulfilled') {
    entry.history = history.value;
    entry.historyError = null;
  } else {
    entry.historyError = history.reason;
  }
  renderTimeline(entry);
}

function applyHealth(entry, result) {
  if (result.status === 'fulfilled') {
    entry.health = result.value;
    entry.healthError = null;
    recordReadings(entry, result.value);
  } else {
    entry.healthError = result.reason;
  }
  renderGuards(entry);
}

/** Open cards re-read their flag (holds such as a waiting approval) and guards now and then. */
async function refreshOpenCards() {
  if (!state.token || document.hidden) return;
  for (const entry of state.cards.values()) {
    if (!entry.expanded || !entry.flag) continue;
    refreshFlag(entry.flag.name);
    const name = entry.flag.name;
    const health = await Promise.allSettled([api('GET', flagPath(name, '/health'))]);
    if (state.cards.get(name) === entry) applyHealth(entry, health[0]);
  }
}

async function refreshFreeze() {
  if (!state.token) return;
  try {
    renderFreeze(await api('GET', 'freeze'));
  } catch (err) {
    handleAuthError(err);
  }
}

// ---------------------------------------------------------------------------------------------
// Cards

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** Shows `flag` (a FlagBody) unless the card already shows a newer version; returns its entry. */
function upsertFlag(flag, expand) {
  let entry = state.cards.get(flag.name);
  if (!entry) {
    entry = createCard(flag.name, expand);
    state.cards.set(flag.name, entry);
    placeCard(entry);
  }
  if (entry.flag && entry.flag.version > flag.version) return entry;
  const first = !entry.flag;
  entry.flag = flag;
  entry.receivedAt = Date.now();
  updateCard(entry);
  ui.empty.hidden = state.cards.size > 0;
  if (first && entry.expanded) refreshDetails(entry);
  return entry;
}

function placeCard(entry) {
  const name = entry.el.dataset.flag;
  const after = [...state.cards.keys()].sort((a, b) => a.localeCompare(b)).find((n) => n.localeCompare(name) > 0);
  const before = after ? state.cards.get(after).el : null;
  ui.flags.insertBefore(entry.el, before && before.isConnected ? before : null);
}

function removeCard(name) {
  const entry = state.cards.get(name);
  if (!entry) return;
  entry.el.remove();
  state.cards.delete(name);
  ui.empty.hidden = state.cards.size > 0;
}

function renderSummary() {
  const flags = [...state.cards.values()].filter((e) => e.flag).map((e) => e.flag);
  const counts = new Map();
  for (const f of flags) counts.set(f.status, (counts.get(f.status) || 0) + 1);
  const items = [el('li', 'summary-total', `${flags.length} ${flags.length === 1 ? 'flag' : 'flags'}`)];
  for (const status of STATUS_ORDER) {
    if (!counts.has(status)) continue;
    const li = el('li', `summary-item status-${status}`);
    li.append(el('span', 'summary-dot'), el('span', null, `${counts.get(status)} ${status}`));
    items.push(li);
  }
  ui.summary.replaceChildren(...items);
  ui.empty.hidden = !state.loaded || flags.length > 0;
}

function createCard(name, expanded) {
  const card = ui.template.content.firstElementChild.cloneNode(true);
  card.dataset.flag = name;
  const entry = {
    el: card, flag: null, health: null, history: null, busy: false, sig: {}, expanded,
    series: new Map(), seriesKey: '', stageHistory: null, inflight: null, again: false, againDetails: false,
  };
  for (const button of card.querySelectorAll('button[data-action]')) {
    button.addEventListener('click', () => onAction(name, button.dataset.action));
  }
  byTestId('action-edit', card).addEventListener('click', () => {
    const current = state.cards.get(name);
    if (current && current.flag) openEditor(current.flag);
  });
  const toggle = byTestId('toggle', card);
  toggle.addEventListener('click', () => {
    entry.expanded = !entry.expanded;
    setExpanded(entry);
    // A closed card takes no readings: reopened, it starts again from the service's history.
    if (!entry.expanded) entry.seriesKey = '';
    if (entry.expanded && entry.flag) refreshDetails(entry);
  });
  // Approve buttons live in the stage bar, which is redrawn: one listener for all of them.
  byTestId('stage-bar', card).addEventListener('click', (event) => {
    const button = event.target.closest('button[data-approve]');
    if (button) onApprove(name, button.dataset.approve);
  });
  setExpanded(entry);
  return entry;
}

function setExpanded(entry) {
  const toggle = byTestId('toggle', entry.el);
  toggle.setAttribute('aria-expanded', String(entry.expanded));
  toggle.textContent = entry.expanded ? '▾' : '▸';
  byTestId('details', entry.el).hidden = !entry.expanded;
  entry.el.classList.toggle('collapsed', !entry.expanded);
}

function updateCard(entry) {
  const { el: card, flag } = entry;
  const q = (id) => byTestId(id, card);
  card.dataset.status = flag.status;
  q('flag-name').textContent = flag.name;
  q('toggle').setAttribute('aria-label', `Details of ${flag.name}`);
  const badge = q('status-badge');
  badge.textContent = flag.status;
  badge.className = `badge status-${flag.status}`;
  q('version').textContent = `v${flag.version}`;
  q('version').title = `version ${flag.version}, updated ${formatDateTime(flag.updated_at)}`;
  q('stage').textContent = stageLabel(flag);
  q('percent').textContent = `${flag.percent}%`;
  // Internal users have the feature in every live stage, whatever the percentage.
  const internal = flag.definition.internal_users.length;
  const live = ['running', 'paused', 'completed'].includes(flag.status);
  q('percent-note').textContent = live && internal ? `+ ${internal} internal ${internal === 1 ? 'user' : 'users'}` : '';

  const legal = LEGAL[flag.status] || [];
  for (const button of card.querySelectorAll('button[data-action]')) {
    const action = button.dataset.action;
    button.disabled = entry.busy || !legal.includes(action);
    // Start and its cancellation take the same place: only a scheduled flag can be cancelled.
    if (action === 'cancel' || action === 'start') button.hidden = (action === 'cancel') !== (flag.status === 'scheduled');
    button.setAttribute('aria-label', `${ACTION_LABELS[action]} ${flag.name}`);
    button.title = legal.includes(action) ? confirmText(flag, action) : `Not possible while ${flag.status}`;
  }
  q('action-edit').setAttribute('aria-label', `Edit the plan of ${flag.name}`);

  renderGuards(entry);
  updateTimes(entry);
}

function stageLabel(flag) {
  const stages = flag.definition.stages;
  if (flag.status === 'pending') return `not started · ${stages.length} stages`;
  if (flag.status === 'scheduled') return `scheduled · ${stages.length} stages`;
  if (flag.status === 'completed') return `${flag.stage} · completed`;
  const where = `${flag.stage} (${flag.stage_index + 1} of ${stages.length})`;
  return flag.status === 'rolled_back' ? `rolled back from ${where}` : where;
}

/** Time in stage, time to the next advance and the current stage's soak progress; every second. */
function updateTimes(entry) {
  const { el: card, flag } = entry;
  if (!flag) return;
  const now = serverNow();
  const inStage = now - Date.parse(flag.stage_entered_at);
  const timeInStage = byTestId('time-in-stage', card);
  timeInStage.textContent = ['pending', 'scheduled'].includes(flag.status) ? '—' : formatDuration(inStage);
  timeInStage.title = `since ${formatDateTime(flag.stage_entered_at)}`;

  const next = byTestId('next-advance', card);
  const stages = flag.definition.stages;
  const last = flag.stage_index >= stages.length - 1;
  let soakLeftMs = null;
  if (flag.status === 'running' && flag.soak_remaining_secs !== null && flag.soak_remaining_secs !== undefined) {
    soakLeftMs = Math.max(0, flag.soak_remaining_secs * 1000 - (Date.now() - entry.receivedAt));
  }
  next.classList.remove('waiting');
  if (flag.waiting_for && (soakLeftMs === 0 || flag.status !== 'running')) {
    next.textContent = `waiting: ${flag.waiting_for.detail}`;
    next.classList.add('waiting');
  } else if (soakLeftMs === null) {
    next.textContent = {
      pending: 'after start',
      scheduled: flag.scheduled_for ? `starts at ${formatTime(flag.scheduled_for)}` : 'scheduled',
      paused: 'on hold while paused',
      rolled_back: '— (resume restarts the plan)',
      completed: '— (plan finished)',
    }[flag.status] || '—';
  } else if (soakLeftMs > 0) {
    next.textContent = `${last ? 'completes' : 'advances'} in ${formatDuration(soakLeftMs)}`;
  } else {
    next.textContent = 'waiting for healthy guards';
    next.classList.add('waiting');
  }
  renderStages(entry, soakLeftMs);
}

/** The stage the flag enters next, whose approval and holds matter now. */
function nextStageIndex(flag) {
  if (flag.status === 'pending' || flag.status === 'scheduled') return 0;
  if (flag.status === 'running' || flag.status === 'paused') return flag.stage_index + 1;
  return -1;
}

/** The plan as a timeline: one step per stage, the current one filling as its soak passes, with
 *  the marks that say what happens next: scheduled, waiting (and for what), approvals. */
function renderStages(entry, soakLeftMs) {
  const { el: card, flag } = entry;
  const stages = flag.definition.stages;
  const bar = byTestId('stage-bar', card);
  const sig = JSON.stringify([flag.status, flag.stage_index, stages, flag.approvals, flag.waiting_for,
    flag.scheduled_for, entry.busy]);
  const fills = [];
  const upcoming = nextStageIndex(flag);
  const items = stages.map((stage, i) => {
    let cls = 'upcoming';
    let fill = 0;
    if (flag.status === 'completed') {
      cls = 'done';
      fill = 100;
    } else if (flag.status === 'rolled_back') {
      cls = i === flag.stage_index ? 'failed' : 'off';
    } else if (flag.status === 'running' || flag.status === 'paused') {
      if (i < flag.stage_index) {
        cls = 'done';
        fill = 100;
      } else if (i === flag.stage_index) {
        cls = `current ${flag.status}`;
        const soakMs = stage.soak_secs * 1000;
        const leftMs = soakLeftMs === null ? soakMs - (serverNow() - Date.parse(flag.stage_entered_at)) : soakLeftMs;
        fill = soakMs > 0 ? Math.min(100, Math.max(4, 100 * (1 - leftMs / soakMs))) : 100;
      }
    }
    fills.push(fill);
    if (entry.sig.stages === sig) return null;
    const li = el('li', `stage ${cls}`);
    li.dataset.testid = 'plan-stage';
    li.dataset.stage = stage.name;
    const track = el('span', 'stage-track');
    track.append(el('span', 'stage-fill'));
    const who = stage.internal_only ? 'internal users' : `${stage.percent}% of users`;
    const meta = `${who} · soak ${formatSoak(stage.soak_secs)}`;
    li.append(track, el('span', 'stage-name', stage.name), el('span', 'stage-meta', meta));
    const marks = el('span', 'marks');
    if (flag.status === 'scheduled' && i === 0 && flag.scheduled_for) {
      marks.append(mark('scheduled', `scheduled ${formatDateTime(flag.scheduled_for)}`));
    }
    const waiting = flag.waiting_for;
    if (waiting && i === upcoming && (!waiting.stage || waiting.stage === stage.name)) {
      const m = mark('waiting', `waiting for ${waiting.what}`);
      m.title = waiting.detail;
      marks.append(m);
    }
    if (stage.requires_approval) marks.append(...approvalMarks(entry, stage, i, upcoming));
    if (marks.childElementCount) li.append(marks);
    if (cls === 'failed') li.append(el('span', 'stage-flag', 'rolled back here'));
    if (cls.startsWith('current')) li.setAttribute('aria-current', 'step');
    li.title = `${stage.name}: ${meta}`;
    return li;
  });
  if (entry.sig.stages !== sig) {
    bar.replaceChildren(...items);
    entry.sig.stages = sig;
  }
  bar.querySelectorAll('.stage-fill').forEach((node, i) => {
    node.style.width = `${fills[i]}%`;
  });
}

function mark(kind, text) {
  const node = el('span', `mark mark-${kind}`, text);
  node.dataset.testid = `mark-${kind}`;
  return node;
}

/** A stage behind an approval gate: approved once entered; before, who approved and how many
 *  are missing, with the Approve button when it is the next stage. */
function approvalMarks(entry, stage, i, upcoming) {
  const { flag } = entry;
  const needed = Math.max(1, stage.approvals || 1);
  const entered = (flag.status === 'running' || flag.status === 'paused' || flag.status === 'completed'
    || flag.status === 'rolled_back') && i <= flag.stage_index;
  if (entered) return [mark('approved', 'approved')];
  const by = [...new Set((flag.approvals || []).filter((a) => a.stage === stage.name).map((a) => a.by))];
  const out = [];
  if (by.length >= needed) {
    out.push(mark('approved', `approved by ${by.join(', ')}`));
  } else {
    const m = mark('approval', `needs approval ${by.length}/${needed}`);
    if (by.length) m.title = `approved by ${by.join(', ')}`;
    out.push(m);
    if (i === upcoming) {
      const button = el('button', 'btn btn-small btn-primary', 'Approve');
      button.type = 'button';
      button.dataset.approve = stage.name;
      button.dataset.testid = 'approve';
      button.disabled = entry.busy;
      button.setAttribute('aria-label', `Approve entering ${stage.name} of ${flag.name}`);
      out.push(button);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Guards: the table and one chart per guard

/** The freeze, on every replica: a banner saying who froze automatic advances, when and why. */
function renderFreeze(freeze) {
  state.freeze = freeze;
  const frozen = Boolean(freeze && freeze.frozen);
  ui.freezeBanner.hidden = !frozen;
  ui.freezeBanner.textContent = frozen
    ? `Frozen by ${freeze.by} since ${formatTime(freeze.at)}: ${freeze.reason}. Nothing advances or starts automatically; rollbacks still happen.`
    : '';
  ui.freezeToggle.textContent = frozen ? 'Unfreeze' : 'Freeze';
  ui.freezeToggle.dataset.frozen = String(frozen);
  ui.freezeToggle.title = frozen
    ? 'Let the controller advance and start flags again'
    : 'Stop every automatic advance and start, on every replica (rollbacks go on)';
}

/** Each reading of an open card's guards, kept for the current stage entry to chart: the first
 *  of a stage entry also fetches the leader's readings since the stage began, once. */
function recordReadings(entry, health) {
  const key = `${entry.flag.stage_entered_at}|${health.stage}`;
  if (entry.seriesKey !== key) {
    entry.series = new Map();
    entry.seriesKey = key;
    entry.stageHistory = null;
    loadStageHistory(entry, key);
  }
  const t = serverNow();
  for (const g of health.guards) {
    const c = g.comparison || null;
    const point = {
      t,
      v: c && c.treatment !== null && c.treatment !== undefined ? c.treatment : g.value,
      lo: g.interval ? g.interval.lower : null,
      hi: g.interval ? g.interval.upper : null,
      c: c && c.control !== null && c.control !== undefined ? c.control : null,
    };
    if (point.v === null && point.c === null) continue;
    const list = entry.series.get(g.guard) || [];
    list.push(point);
    if (list.length > CHART_POINTS) list.shift();
    entry.series.set(g.guard, list);
  }
}

/** The leader's readings of the stage (`GET /flags/{flag}/health/history`), put before the ones
 *  this tab took; the charts then cover the stage from its start. */
async function loadStageHistory(entry, key) {
  const name = entry.flag.name;
  let reply;
  try {
    reply = await api('GET', flagPath(name, '/health/history'));
  } catch (err) {
    if (!handleAuthError(err)) entry.stageHistory = { error: err };
    return;
  }
  if (state.cards.get(name) !== entry || entry.seriesKey !== key) return;
  const byGuard = new Map();
  for (const r of reply.readings) {
    const t = Date.parse(r.at);
    for (const g of r.guards) {
      if (g.value === null && g.control_value === null) continue;
      const list = byGuard.get(g.guard) || [];
      list.push({ t, v: g.value, lo: g.low, hi: g.high, c: g.control_value });
      byGuard.set(g.guard, list);
    }
  }
  const first = reply.readings.length ? Date.parse(reply.readings[0].at) : null;
  entry.stageHistory = { from: first, stageStart: Date.parse(reply.stage_entered_at) };
  const newest = first === null ? -Infinity : Date.parse(reply.readings[reply.readings.length - 1].at);
  for (const [guard, past] of byGuard) {
    const live = (entry.series.get(guard) || []).filter((p) => p.t > newest);
    entry.series.set(guard, past.concat(live).slice(-CHART_POINTS));
  }
  renderCharts(entry);
}

/** True when the service's history reaches back to the stage's start (its first reading within
 *  a thirtieth of the stage so far, or a minute). */
function coversStage(entry, end) {
  const h = entry.stageHistory;
  if (!h || h.from === null || !Number.isFinite(h.from)) return false;
  return h.from - h.stageStart <= Math.max(60_000, (end - h.stageStart) / 30);
}

function renderGuards(entry) {
  const { el: card, health } = entry;
  const verdict = byTestId('verdict', card);
  const note = byTestId('guards-note', card);
  const windowText = byTestId('guards-window', card);
  const tbody = $('[data-testid="guards"] tbody', card);
  if (entry.healthError) {
    note.textContent = `Guard health unavailable: ${entry.healthError.message}`;
    note.hidden = false;
    return;
  }
  if (!health) return;
  note.textContent = health.guards.length ? '' : 'Every guard is turned off for this stage.';
  note.hidden = health.guards.length > 0;
  renderCharts(entry);
  const sig = JSON.stringify(health);
  if (entry.sig.health === sig) return;
  entry.sig.health = sig;

  const waiting = health.waiting_for_evidence || [];
  verdict.textContent = waiting.length ? `waiting for evidence: ${waiting.join(', ')}` : health.verdict;
  verdict.className = `chip verdict-${health.verdict}`;
  windowText.textContent =
    `Window ${formatSoak(health.window_secs)} since ${formatTime(health.since)} · on breach: ${health.on_breach}`;
  const rows = health.guards.map((g) => {
    const tr = el('tr', `guard-row verdict-${g.verdict}`);
    tr.dataset.testid = 'guard-row';
    tr.dataset.guard = g.guard;
    const name = el('th', 'guard-name', g.guard);
    name.scope = 'row';
    const budget = el('td', 'budget');
    budget.append(budgetMeter(g));
    const samples = el('td', 'num', `${formatCount(g.samples)} / ${formatCount(g.min_samples)}`);
    samples.title = `${g.samples} samples in the window; judged from ${g.min_samples}`;
    const chip = el('span', `chip verdict-${g.verdict}`, g.verdict);
    const verdictCell = el('td');
    verdictCell.append(chip);
    tr.append(name, valueCell(g), el('td', 'num', thresholdText(g)), budget, samples, verdictCell);
    return tr;
  });
  tbody.replaceChildren(...rows);
}

function thresholdText(g) {
  if (g.threshold === null) return 'vs control';
  return `${g.breaches_when === 'below' ? '≥' : '≤'} ${formatGuard(g.guard, g.threshold)}`;
}

/** The value, and under it the confidence interval the sequential test judged. */
function valueCell(g) {
  const cell = el('td', 'num value', g.value === null ? '—' : formatGuard(g.guard, g.value));
  cell.title = g.summary || '';
  if (g.interval) {
    const interval = el('div', 'interval',
      `[${formatGuard(g.guard, g.interval.lower)}, ${formatGuard(g.guard, g.interval.upper)}]`);
    interval.dataset.testid = 'guard-interval';
    cell.append(interval);
  }
  return cell;
}

/** How much of a guard's allowance the value uses: 100% is the threshold. */
function budgetMeter(g) {
  const meter = el('span', 'meter');
  if (g.value === null || g.threshold === null) {
    meter.classList.add('meter-none');
    meter.title = 'no value yet';
    return meter;
  }
  let used;
  if (g.breaches_when === 'below') {
    const allowed = 1 - g.threshold;
    used = allowed > 0 ? (1 - g.value) / allowed : (g.value < g.threshold ? Infinity : 0);
  } else {
    used = g.threshold > 0 ? g.value / g.threshold : (g.value > 0 ? Infinity : 0);
  }
  const shown = Math.max(0, Math.min(1, used));
  const fill = el('span', `meter-fill verdict-${g.verdict}`);
  fill.style.width = `${Math.max(shown * 100, used > 0 ? 3 : 0)}%`;
  meter.append(fill);
  meter.title = Number.isFinite(used) ? `${Math.round(used * 100)}% of the allowance` : 'over the threshold';
  meter.setAttribute('role', 'img');
  meter.setAttribute('aria-label', meter.title);
  return meter;
}

/** One small chart per guard that has readings this stage. */
function renderCharts(entry) {
  const box = byTestId('guard-charts', entry.el);
  const health = entry.health;
  if (!health) return;
  const charts = [];
  for (const g of health.guards) {
    const points = entry.series.get(g.guard);
    if (!points || !points.length) continue;
    charts.push(guardChart(entry, g, points));
  }
  box.replaceChildren(...charts);
  box.hidden = charts.length === 0;
}

const CHART = { w: 300, h: 130, left: 8, right: 64, top: 10, bottom: 22 };

/** Value over the stage with its confidence band against the threshold; control when reported.
 *  Inline SVG built with DOM calls (the namespace comes from the page's own <svg> template). */
function guardChart(entry, g, points) {
  const figure = el('figure', `chart verdict-${g.verdict}`);
  figure.dataset.testid = 'guard-chart';
  figure.dataset.guard = g.guard;
  const svg = ui.chartTemplate.content.firstElementChild.cloneNode(false);
  const ns = svg.namespaceURI;
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const { w, h, left, right, top, bottom } = CHART;
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', g.summary || g.guard);

  const stageStart = Date.parse(entry.flag.stage_entered_at);
  const end = Math.max(serverNow(), points[points.length - 1].t, stageStart + 1000);
  // The whole stage when the readings cover most of it; else only what they cover, labelled as such.
  const watchedFrom = points[0].t;
  const covered = coversStage(entry, end);
  const fromService = Boolean(entry.stageHistory && !entry.stageHistory.error);
  const zoomed = !covered && watchedFrom - stageStart > 0.75 * (end - stageStart);
  const start = zoomed ? watchedFrom - Math.max(1000, 0.05 * (end - watchedFrom)) : stageStart;
  const values = [];
  for (const p of points) values.push(p.v, p.lo, p.hi, p.c);
  if (g.threshold !== null) values.push(g.threshold);
  const finite = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  let lo = Math.min(...finite);
  let hi = Math.max(...finite);
  if (g.breaches_when !== 'below') lo = Math.min(0, lo);
  if (hi === lo) hi = lo + (lo === 0 ? 1 : Math.abs(lo) * 0.1);
  const pad = (hi - lo) * 0.08;
  hi += pad;
  if (g.breaches_when === 'below') lo = Math.max(0, lo - pad);
  const x = (t) => left + ((w - left - right) * Math.max(0, t - start)) / (end - start);
  const y = (v) => top + ((h - top - bottom) * (hi - v)) / (hi - lo);
  const fmt = (v) => formatGuard(g.guard, v);

  svg.append(node('rect', { class: 'plot', x: left, y: top, width: w - left - right, height: h - top - bottom }));
  // Before the first reading, nothing is known: say so rather than draw a gap.
  const firstX = x(points[0].t);
  if (!zoomed && !covered && firstX - left > 24) {
    svg.append(
      node('rect', { class: 'unwatched', x: left, y: top, width: firstX - left, height: h - top - bottom }),
      node('text', { class: 'unwatched-label', x: left + 4, y: top + 12 }, fromService ? 'no readings' : 'before this tab'),
    );
  }
  // Confidence band: upper edge forward, lower edge back.
  const banded = points.filter((p) => p.lo !== null && p.hi !== null);
  if (banded.length) {
    const forward = banded.map((p) => `${x(p.t).toFixed(1)},${y(p.hi).toFixed(1)}`);
    const back = banded.slice().reverse().map((p) => `${x(p.t).toFixed(1)},${y(p.lo).toFixed(1)}`);
    if (banded.length === 1) {
      const p = banded[0];
      svg.append(node('line', { class: 'band-bar', x1: x(p.t), x2: x(p.t), y1: y(p.lo), y2: y(p.hi) }));
    } else {
      svg.append(node('polygon', { class: 'band', points: forward.concat(back).join(' ') }));
    }
  }
  const last = points[points.length - 1];
  const valueY = last.v === null ? null : Math.min(h - bottom, Math.max(top + 8, y(last.v) + 4));
  if (g.threshold !== null) {
    const ty = y(g.threshold);
    // The threshold's label and the latest value's share the right margin: keep them apart.
    let labelY = ty + 4;
    if (valueY !== null && Math.abs(labelY - valueY) < 11) labelY = valueY + (labelY <= valueY ? -11 : 11);
    svg.append(
      node('line', { class: 'threshold', x1: left, x2: w - right, y1: ty, y2: ty }),
      node('text', { class: 'threshold-label', x: w - right + 4, y: labelY }, `${g.breaches_when === 'below' ? '≥' : '≤'} ${fmt(g.threshold)}`),
    );
  }
  const line = (key, cls) => {
    const pts = points.filter((p) => p[key] !== null && p[key] !== undefined);
    if (!pts.length) return;
    const d = pts.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(' ');
    svg.append(node('path', { class: `series series-${cls}`, d }));
    if (pts.length > CHART_DOTS) return;
    for (const p of pts) svg.append(node('circle', { class: `dot dot-${cls}`, cx: x(p.t), cy: y(p[key]), r: 2.5 }));
  };
  line('c', 'control');
  line('v', 'treatment');
  if (valueY !== null) {
    svg.append(node('text', { class: 'value-label', x: w - right + 4, y: valueY }, fmt(last.v)));
  }
  svg.append(
    node('text', { class: 'axis', x: left, y: h - 6 },
      covered
        ? 'since the stage began'
        : zoomed
          ? `${fromService ? 'readings' : 'seen by this tab'} since ${formatTime(new Date(watchedFrom).toISOString())}`
          : `stage start ${formatTime(entry.flag.stage_entered_at)}`),
    node('text', { class: 'axis', x: w - right, y: h - 6, 'text-anchor': 'end' }, 'now'),
  );

  const caption = el('figcaption');
  caption.append(el('span', 'chart-name', g.guard), el('span', `chip verdict-${g.verdict}`, g.verdict));
  const legend = el('span', 'legend');
  legend.append(el('span', 'key key-treatment', points.some((p) => p.c !== null) ? 'treatment' : 'value'));
  if (banded.length) legend.append(el('span', 'key key-band', `${Math.round((g.confidence || 0.95) * 100)}% interval`));
  if (points.some((p) => p.c !== null)) legend.append(el('span', 'key key-control', 'control'));
  if (g.threshold !== null) legend.append(el('span', 'key key-threshold', 'threshold'));
  caption.append(legend);
  figure.append(caption, svg);
  figure.title = g.summary || '';
  return figure;
}

function renderTimeline(entry) {
  const { el: card, history } = entry;
  const list = byTestId('timeline', card);
  if (entry.historyError) {
    list.replaceChildren(el('li', 'timeline-error', `History unavailable: ${entry.historyError.message}`));
    entry.sig.history = null;
    return;
  }
  if (!history) return;
  const sig = JSON.stringify(history.events);
  if (entry.sig.history === sig) return;
  entry.sig.history = sig;
  const items = history.events.map((e) => {
    const li = el('li', `event action-${e.action}`);
    li.dataset.testid = 'event';
    const head = el('div', 'event-head');
    const at = el('time', 'event-at', formatDateTime(e.at));
    at.dateTime = e.at;
    const move = e.from ? `${position(e.from)} → ${position(e.to)}` : position(e.to);
    head.append(
      el('span', `event-action action-${e.action}`, e.action),
      el('span', 'event-move', move),
      el('span', 'event-actor', e.actor),
      at,
    );
    li.append(head);
    if (e.reason) li.append(el('p', 'event-reason', e.reason));
    return li;
  });
  if (!items.length) items.push(el('li', 'muted', 'No events yet.'));
  list.replaceChildren(...items);
}

function position(p) {
  if (p.status === 'running' || p.status === 'paused') return `${p.stage} ${p.status === 'paused' ? '(paused)' : ''}`.trim();
  return p.status;
}

// ---------------------------------------------------------------------------------------------
// Actions

function describeStage(stage) {
  return stage.internal_only ? 'internal users only' : `${stage.percent}% of users`;
}

function confirmText(flag, action, extra) {
  const stages = flag.definition.stages;
  const name = flag.name;
  switch (action) {
    case 'start':
      return `Start ${name}: it enters stage ${stages[0].name} (${describeStage(stages[0])}).`;
    case 'advance': {
      const next = stages[flag.stage_index + 1];
      return next
        ? `Advance ${name} from ${flag.stage} to ${next.name} (${describeStage(next)}) without waiting for the soak.`
        : `Complete ${name}: it stays at ${flag.percent}% and is marked completed.`;
    }
    case 'pause':
      return `Pause ${name} at ${flag.percent}%: the percentage holds and the controller stops advancing it.`;
    case 'resume': {
      if (flag.status === 'rolled_back') {
        const i = stages.findIndex((s) => !s.internal_only);
        const first = stages[i < 0 ? 0 : i];
        return `Resume ${name}: the plan restarts at ${first.name} (${first.percent}% of users), not where it was rolled back.`;
      }
      return `Resume ${name} in ${flag.stage}: the stage's soak starts over.`;
    }
    case 'rollback':
      return `Roll back ${name} to 0% for everyone, internal users included, at once.`;
    case 'cancel':
      return `Cancel the scheduled start of ${name}: it returns to pending.`;
    case 'approve':
      return `Approve entering ${extra} of ${name}: the controller enters it once its soak is over and the guards are healthy.`;
    default:
      return '';
  }
}

/** Resolves to the reason typed (possibly empty) when confirmed, null when cancelled. With
 *  `askAt`, the dialog also offers a start time, left in `ui.dialogAt`. */
function confirmAction({ title, text, okLabel, danger, placeholder, reasonRequired, askAt }) {
  return new Promise((resolve) => {
    ui.dialogAtField.hidden = !askAt;
    ui.dialogAt.value = '';
    ui.dialogTitle.textContent = title;
    ui.dialogText.textContent = text;
    ui.dialogReason.value = '';
    ui.dialogReason.required = Boolean(reasonRequired);
    ui.dialogReasonNote.textContent = reasonRequired ? '(required; recorded with it)' : '(recorded in the audit log)';
    ui.dialogReason.placeholder = placeholder || '';
    ui.dialogOk.textContent = okLabel;
    ui.dialogOk.className = `btn ${danger ? 'btn-danger-solid' : 'btn-primary'}`;
    ui.dialog.returnValue = '';
    const onClose = () => {
      ui.dialog.removeEventListener('close', onClose);
      resolve(ui.dialog.returnValue === 'ok' ? ui.dialogReason.value.trim() : null);
    };
    ui.dialog.addEventListener('close', onClose);
    ui.dialog.showModal();
    ui.dialogReason.focus();
  });
}

ui.dialogForm.addEventListener('submit', (event) => {
  event.preventDefault();
  if (ui.dialogReason.required && !ui.dialogReason.value.trim()) {
    ui.dialogReason.setAttribute('aria-invalid', 'true');
    ui.dialogReason.focus();
    return;
  }
  ui.dialogReason.removeAttribute('aria-invalid');
  ui.dialog.close('ok');
});
ui.dialogCancel.addEventListener('click', () => ui.dialog.close('cancel'));

/** Runs a change of one flag: busy while it runs, the answer shown at once (the stream confirms). */
async function runFlagChange(name, label, request) {
  const entry = state.cards.get(name);
  if (!entry || entry.busy) return;
  entry.busy = true;
  updateCard(entry);
  try {
    const next = await request();
    toast('ok', `${name}: ${label} → ${next.status}${next.status === 'running' ? ` at ${next.stage}` : ''} (v${next.version})`);
    upsertFlag(next, entry.expanded);
    if (entry.expanded) refreshDetails(entry);
  } catch (err) {
    if (handleAuthError(err)) return;
    if (err.code === 'version_conflict') {
      toast('error', `${name} changed while you were looking at it: nothing was done. Check its new state and try again.`);
      refreshFlag(name, { details: true });
    } else {
      toast('error', `${name}: ${label} failed (${err.code}): ${err.message}`);
    }
  } finally {
    entry.busy = false;
    if (state.cards.get(name) === entry) updateCard(entry);
  }
}

async function onAction(name, action) {
  const entry = state.cards.get(name);
  if (!entry || entry.busy) return;
  // The version the operator was looking at: if the flag moves meanwhile, the server refuses
  // (rollbacks excepted, which always apply to the latest state).
  const seen = entry.flag;
  const reason = await confirmAction({
    title: `${ACTION_LABELS[action]} ${seen.name}?`,
    text: confirmText(seen, action),
    okLabel: ACTION_LABELS[action],
    danger: action === 'rollback',
    placeholder: action === 'rollback' ? 'e.g. error rate up in checkout' : `${action} from the dashboard`,
    askAt: action === 'start',
  });
  if (reason === null) return;
  const body = { reason: reason || `${action} from the dashboard`, expected_version: seen.version };
  // A start time makes the flag `scheduled`; the leader starts it then.
  if (action === 'start' && ui.dialogAt.value) {
    const at = new Date(ui.dialogAt.value);
    body.at = Number.isNaN(at.getTime()) ? ui.dialogAt.value : at.toISOString();
    if (!reason) body.reason = 'start scheduled from the dashboard';
  }
  await runFlagChange(name, body.at ? 'schedule' : action, () => api('POST', flagPath(name, `/${action}`), body));
}

async function onApprove(name, stage) {
  const entry = state.cards.get(name);
  if (!entry || entry.busy) return;
  const reason = await confirmAction({
    title: `Approve ${stage} of ${name}?`,
    text: confirmText(entry.flag, 'approve', stage),
    okLabel: 'Approve',
    placeholder: 'e.g. internal users happy, metrics look good',
  });
  if (reason === null) return;
  await runFlagChange(name, `approve ${stage}`, () => api('POST', flagPath(name, '/approve'), {
    stage,
    reason: reason || 'approved from the dashboard',
  }));
}

ui.freezeToggle.addEventListener('click', async () => {
  const frozen = Boolean(state.freeze && state.freeze.frozen);
  const action = frozen ? 'unfreeze' : 'freeze';
  const reason = await confirmAction({
    title: frozen ? 'Unfreeze the controller?' : 'Freeze the controller?',
    text: frozen
      ? 'Flags advance and scheduled starts happen again, on every replica.'
      : 'Nothing advances or starts automatically on any replica until unfrozen; guards still roll back, and operators can still act.',
    okLabel: ACTION_LABELS[action],
    danger: !frozen,
    placeholder: frozen ? 'e.g. incident resolved' : 'e.g. P1 incident in checkout',
    reasonRequired: true,
  });
  if (reason === null) return;
  try {
    await api('POST', action, { reason });
    toast('ok', frozen ? 'Unfrozen: the controller advances flags again.' : 'Frozen: nothing advances or starts automatically.');
  } catch (err) {
    if (handleAuthError(err)) return;
    toast('error', `${action} failed (${err.code}): ${err.message}`);
  }
  refreshFreeze();
});

// ---------------------------------------------------------------------------------------------
// The editor: create a flag or edit its plan, validated by the server's own 422 messages

const ed = {
  form: ui.editorForm,
  title: byTestId('editor-title'),
  version: byTestId('editor-version'),
  error: byTestId('editor-error'),
  name: byTestId('field-name'),
  salt: byTestId('field-salt'),
  internal: byTestId('field-internal_users'),
  stageRows: byTestId('stage-rows'),
  checkRows: byTestId('check-rows'),
  thresholds: byTestId('threshold-fields'),
  minSamples: byTestId('field-min_samples'),
  window: byTestId('field-window_secs'),
  confidence: byTestId('field-confidence'),
  onBreach: byTestId('field-on_breach'),
  windowEnabled: byTestId('window-enabled'),
  windowFields: byTestId('window-fields'),
  days: byTestId('window-days'),
  from: byTestId('field-advance_window.from'),
  to: byTestId('field-advance_window.to'),
  tz: byTestId('field-advance_window.time_zone'),
  save: byTestId('editor-save'),
};

function field(path, label, input) {
  const box = el('div', 'field');
  box.dataset.field = path;
  const id = `ed-${path.replace(/[^a-z0-9]+/gi, '-')}`;
  input.id = id;
  const l = el('label', null, label);
  l.htmlFor = id;
  box.append(l, input);
  return box;
}

function input(testid, value, attrs = {}) {
  const node = el('input');
  node.dataset.testid = testid;
  node.value = value === undefined || value === null ? '' : String(value);
  node.spellcheck = false;
  node.autocomplete = 'off';
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

for (const [guard, def] of GUARDS) {
  ed.thresholds.append(field(`thresholds.${guard}`, guard, input(`field-thresholds.${guard}`, '', {
    placeholder: `default ${def}`, inputmode: 'decimal', 'data-guard': guard,
  })));
}
for (const day of DAYS) {
  const label = el('label', 'check day');
  const box = el('input');
  box.type = 'checkbox';
  box.value = day;
  box.dataset.testid = `day-${day}`;
  label.append(box, document.createTextNode(` ${day}`));
  ed.days.append(label);
}
ed.windowEnabled.addEventListener('change', () => {
  ed.windowFields.hidden = !ed.windowEnabled.checked;
});

/** A stage row; `origin` keeps the stage's fields this form does not show (per-stage thresholds…). */
function stageRow(stage) {
  const tr = el('tr');
  tr.dataset.testid = 'stage-row';
  tr._origin = stage;
  const cell = (key, node) => {
    const td = el('td', 'cell');
    td.dataset.key = key;
    td.append(node);
    return td;
  };
  const name = input('stage-name', stage.name, { 'aria-label': 'Stage name' });
  const percent = input('stage-percent', stage.internal_only ? 0 : stage.percent, { inputmode: 'numeric', 'aria-label': 'Percent of users' });
  const soak = input('stage-soak', stage.soak_secs === undefined ? '' : formatSoakInput(stage.soak_secs), { 'aria-label': 'Soak' });
  const internal = el('input');
  internal.type = 'checkbox';
  internal.checked = Boolean(stage.internal_only);
  internal.dataset.testid = 'stage-internal';
  internal.setAttribute('aria-label', 'Internal users only');
  const gate = el('input');
  gate.type = 'checkbox';
  gate.checked = Boolean(stage.requires_approval);
  gate.dataset.testid = 'stage-requires-approval';
  gate.setAttribute('aria-label', 'Requires approval');
  const count = input('stage-approvals', stage.approvals || 1, { inputmode: 'numeric', 'aria-label': 'Approvals needed', class: 'narrow' });
  count.disabled = !gate.checked;
  gate.addEventListener('change', () => {
    count.disabled = !gate.checked;
  });
  const approvals = el('span', 'approval-cell');
  approvals.append(gate, count);
  const remove = el('button', 'btn btn-ghost btn-small', '✕');
  remove.type = 'button';
  remove.setAttribute('aria-label', 'Remove this stage');
  remove.addEventListener('click', () => {
    tr.remove();
    renumberRows();
  });
  const tdRemove = el('td');
  tdRemove.append(remove);
  tr.append(cell('name', name), cell('percent', percent), cell('soak_secs', soak), cell('internal_only', internal),
    cell('approvals', approvals), tdRemove);
  return tr;
}

function checkRow(check) {
  const tr = el('tr');
  tr.dataset.testid = 'check-row';
  tr._origin = check;
  const cell = (key, node) => {
    const td = el('td', 'cell');
    td.dataset.key = key;
    td.append(node);
    return td;
  };
  const remove = el('button', 'btn btn-ghost btn-small', '✕');
  remove.type = 'button';
  remove.setAttribute('aria-label', 'Remove this check');
  remove.addEventListener('click', () => {
    tr.remove();
    renumberRows();
  });
  const tdRemove = el('td');
  tdRemove.append(remove);
  tr.append(
    cell('name', input('check-name', check.name, { 'aria-label': 'Check name' })),
    cell('url', input('check-url', check.url, { 'aria-label': 'Check URL', class: 'wide' })),
    cell('when', input('check-when', check.when || 'during', { 'aria-label': 'When: before_start, before_stage:<stage> or during' })),
    cell('offset_secs', input('check-offset', check.offset_secs ? formatSoakInput(check.offset_secs) : '', { 'aria-label': 'Offset before the start' })),
    cell('interval_secs', input('check-interval', check.interval_secs ? formatSoakInput(check.interval_secs) : '', { 'aria-label': 'Interval' })),
    tdRemove,
  );
  return tr;
}

/** Row fields carry the API's paths (`stages[1].percent`), so a 422 finds its field. */
function renumberRows() {
  ed.stageRows.querySelectorAll('tr').forEach((tr, i) => {
    tr.dataset.field = `stages[${i}]`;
    for (const td of tr.querySelectorAll('td[data-key]')) td.dataset.field = `stages[${i}].${td.dataset.key}`;
  });
  ed.checkRows.querySelectorAll('tr').forEach((tr, i) => {
    tr.dataset.field = `checks[${i}]`;
    for (const td of tr.querySelectorAll('td[data-key]')) td.dataset.field = `checks[${i}].${td.dataset.key}`;
  });
}

byTestId('add-stage').addEventListener('click', () => {
  const rows = ed.stageRows.querySelectorAll('tr');
  const last = rows.length ? Number(rows[rows.length - 1].querySelector('[data-testid="stage-percent"]').value) || 0 : 0;
  ed.stageRows.append(stageRow({ name: '', percent: Math.min(100, last), soak_secs: 3600 }));
  renumberRows();
  ed.stageRows.lastElementChild.querySelector('input').focus();
});
byTestId('add-check').addEventListener('click', () => {
  ed.checkRows.append(checkRow({ name: '', url: '', when: 'during' }));
  renumberRows();
  ed.checkRows.lastElementChild.querySelector('input').focus();
});

ui.newFlag.addEventListener('click', () => openEditor(null));

function openEditor(flag) {
  const def = flag ? flag.definition : null;
  state.editing = { name: flag ? flag.name : null, version: flag ? flag.version : 0, base: def };
  clearErrors();
  ed.title.textContent = flag ? `Edit ${flag.name}` : 'New flag';
  ed.version.textContent = flag ? `saving replaces version ${flag.version}` : 'created pending: start it from its card';
  ed.name.value = flag ? flag.name : '';
  ed.name.disabled = Boolean(flag);
  ed.salt.value = def && def.salt ? def.salt : '';
  ed.internal.value = def ? def.internal_users.join('\n') : '';
  ed.stageRows.replaceChildren(...(def ? def.stages : RUNBOOK_STAGES).map((s) => stageRow(s)));
  ed.checkRows.replaceChildren(...(def && def.checks ? def.checks : []).map((c) => checkRow(c)));
  renumberRows();
  for (const box of ed.thresholds.querySelectorAll('input')) {
    const t = def && def.thresholds ? def.thresholds[box.dataset.guard] : undefined;
    box.value = t === undefined ? '' : t === null ? 'off' : String(t);
  }
  ed.minSamples.value = def ? def.min_samples : '';
  ed.window.value = def ? formatSoakInput(def.window_secs) : '';
  ed.confidence.value = def ? def.confidence : '';
  ed.onBreach.value = def ? def.on_breach : 'rollback';
  const win = def && def.advance_window;
  ed.windowEnabled.checked = Boolean(win);
  ed.windowFields.hidden = !win;
  for (const box of ed.days.querySelectorAll('input')) box.checked = Boolean(win && win.days.includes(box.value));
  ed.from.value = win ? win.from : '';
  ed.to.value = win ? win.to : '';
  ed.tz.value = win ? win.time_zone : '';
  ed.save.disabled = false;
  ui.editor.showModal();
  (flag ? ed.salt : ed.name).focus();
}

byTestId('editor-cancel').addEventListener('click', () => ui.editor.close());

/** A number when the text is one, else the text itself: the server's 422 then names the field. */
function numberOr(text) {
  const t = text.trim();
  return t !== '' && Number.isFinite(Number(t)) ? Number(t) : t;
}

/** `90s`, `30m`, `1h`, `2d` or plain seconds → seconds; anything else is sent as typed. */
function duration(text) {
  const t = text.trim();
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$/i.exec(t);
  if (!m) return t;
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] || 's').toLowerCase()];
  const secs = Number(m[1]) * unit;
  return Number.isInteger(secs) ? secs : t;
}

/** The definition to PUT: the flag's own (so fields this form does not show are kept), with
 *  every field of the form laid over it. */
function collectDefinition() {
  const body = state.editing.base ? structuredClone(state.editing.base) : {};
  body.salt = ed.salt.value.trim() === '' ? null : ed.salt.value;
  body.internal_users = ed.internal.value.split('\n').map((s) => s.trim()).filter(Boolean);
  body.stages = [...ed.stageRows.querySelectorAll('tr')].map((tr) => {
    const stage = { ...tr._origin };
    const val = (id) => tr.querySelector(`[data-testid="${id}"]`);
    stage.name = val('stage-name').value.trim();
    stage.internal_only = val('stage-internal').checked;
    stage.percent = numberOr(val('stage-percent').value);
    stage.soak_secs = duration(val('stage-soak').value);
    stage.requires_approval = val('stage-requires-approval').checked;
    if (stage.requires_approval) stage.approvals = numberOr(val('stage-approvals').value);
    else delete stage.approvals;
    return stage;
  });
  const thresholds = {};
  for (const box of ed.thresholds.querySelectorAll('input')) {
    const t = box.value.trim();
    if (t === '') continue;
    thresholds[box.dataset.guard] = t.toLowerCase() === 'off' ? null : numberOr(t);
  }
  body.thresholds = thresholds;
  const optional = (key, value) => {
    if (value === '') delete body[key];
    else body[key] = value;
  };
  optional('min_samples', numberOr(ed.minSamples.value));
  optional('window_secs', duration(ed.window.value));
  optional('confidence', numberOr(ed.confidence.value));
  body.on_breach = ed.onBreach.value;
  if (ed.windowEnabled.checked) {
    body.advance_window = {
      days: [...ed.days.querySelectorAll('input:checked')].map((b) => b.value),
      from: ed.from.value.trim(),
      to: ed.to.value.trim(),
      time_zone: ed.tz.value.trim() || 'UTC',
    };
  } else {
    delete body.advance_window;
  }
  body.checks = [...ed.checkRows.querySelectorAll('tr')].map((tr) => {
    const check = { ...tr._origin };
    const val = (id) => tr.querySelector(`[data-testid="${id}"]`).value.trim();
    check.name = val('check-name');
    check.url = val('check-url');
    check.when = val('check-when');
    for (const [key, id] of [['offset_secs', 'check-offset'], ['interval_secs', 'check-interval']]) {
      if (val(id) === '') delete check[key];
      else check[key] = duration(val(id));
    }
    return check;
  });
  return body;
}

function clearErrors() {
  ed.error.hidden = true;
  ed.error.textContent = '';
  for (const node of ed.form.querySelectorAll('.field-error[data-dynamic]')) node.remove();
  for (const node of ed.form.querySelectorAll('.field-error')) node.hidden = true;
  for (const node of ed.form.querySelectorAll('[aria-invalid]')) node.removeAttribute('aria-invalid');
  for (const node of ed.form.querySelectorAll('.invalid')) node.classList.remove('invalid');
}

/** The form element of an API field path, or of the nearest path above it that has one
 *  (`stages[1].thresholds.error_rate` → `stages[1]` → `stages`). */
function fieldFor(path) {
  let p = path;
  while (p) {
    const found = ed.form.querySelector(`[data-field="${CSS.escape(p)}"]`);
    if (found) return found;
    const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
    if (cut <= 0) break;
    p = p.slice(0, cut);
  }
  return null;
}

/** Shows the server's message at its field: `stages[1].percent: must be between 0 and 100`. */
function showFieldError(message, fallbackPath) {
  const m = /^([A-Za-z_][\w.[\]:%-]*): (.*)$/s.exec(message);
  const path = m ? m[1] : fallbackPath;
  const target = path ? fieldFor(path) : null;
  ed.error.textContent = target
    ? 'The service refused the definition: see the marked field.'
    : `The service refused the definition: ${message}`;
  ed.error.hidden = false;
  if (!target) return;
  target.classList.add('invalid');
  const note = el('p', 'field-error', m ? m[2] : message);
  note.dataset.dynamic = 'true';
  note.dataset.testid = 'field-error';
  note.dataset.errorFor = path;
  note.setAttribute('role', 'alert');
  // In a table row the note goes under the row's cells, in a field under its input.
  if (target.tagName === 'TD' || target.tagName === 'TR') {
    const row = target.closest('tr');
    const td = target.tagName === 'TD' ? target : row.firstElementChild;
    td.append(note);
  } else {
    target.append(note);
  }
  const control = target.querySelector('input, textarea, select');
  if (control) {
    control.setAttribute('aria-invalid', 'true');
    control.focus();
  }
  target.scrollIntoView({ block: 'nearest' });
}

ed.form.addEventListener('submit', async (event) => {
  event.preventDefault();
  clearErrors();
  const editing = state.editing;
  const name = editing.name || ed.name.value.trim();
  if (!name) {
    showFieldError('name: give the flag a name', 'name');
    return;
  }
  const body = collectDefinition();
  ed.save.disabled = true;
  try {
    const saved = await api('PUT', `${flagPath(name)}?expected_version=${editing.version}`, body);
    ui.editor.close();
    toast('ok', `${name}: ${editing.name ? 'plan saved' : 'created'} (v${saved.version})`);
    const entry = upsertFlag(saved, true);
    if (!entry.expanded) {
      entry.expanded = true;
      setExpanded(entry);
    }
    refreshDetails(entry);
    renderSummary();
    entry.el.scrollIntoView({ block: 'nearest' });
  } catch (err) {
    if (handleAuthError(err)) return;
    if (err.code === 'version_conflict') {
      ed.error.textContent = editing.name
        ? `${name} changed since this form was opened: nothing was saved. Close the form and edit the new version.`
        : `A flag named ${name} already exists: nothing was saved.`;
      ed.error.hidden = false;
    } else if (err.code === 'invalid_flag_name') {
      showFieldError(`name: ${err.message}`, 'name');
    } else if (err.status === 422 || err.status === 400) {
      showFieldError(err.message, null);
    } else {
      ed.error.textContent = `Not saved (${err.code}): ${err.message}`;
      ed.error.hidden = false;
    }
  } finally {
    ed.save.disabled = false;
  }
});

// ---------------------------------------------------------------------------------------------
// Status line, banner, toasts

function setLive(kind, text) {
  ui.live.dataset.state = kind;
  ui.liveText.textContent = text;
}

function showBanner(text) {
  ui.banner.textContent = text;
  ui.banner.hidden = false;
}

function hideBanner() {
  ui.banner.hidden = true;
}

function toast(kind, text) {
  const node = el('div', `toast toast-${kind}`, text);
  node.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  ui.toasts.append(node);
  setTimeout(() => node.remove(), kind === 'error' ? 10000 : 5000);
}

// ---------------------------------------------------------------------------------------------
// Formatting

function formatDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m ${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}

function formatSoak(secs) {
  if (secs === 0) return 'none';
  if (secs % 86400 === 0) return `${secs / 86400}d`;
  if (secs % 3600 === 0) return `${secs / 3600}h`;
  if (secs % 60 === 0) return `${secs / 60}m`;
  return formatDuration(secs * 1000);
}

/** Seconds as the editor shows them, in a form `duration()` reads back exactly. */
function formatSoakInput(secs) {
  if (!Number.isInteger(secs) || secs === 0) return String(secs);
  if (secs % 86400 === 0) return `${secs / 86400}d`;
  if (secs % 3600 === 0) return `${secs / 3600}h`;
  if (secs % 60 === 0) return `${secs / 60}m`;
  return `${secs}s`;
}

function formatGuard(guard, value) {
  if (RATE_GUARDS.has(guard)) {
    const pct = value * 100;
    return `${pct.toFixed(pct !== 0 && Math.abs(pct) < 0.1 ? 3 : 2)}%`;
  }
  const n = Number.isInteger(value) ? formatCount(value) : value.toFixed(1);
  return guard.endsWith('_ms') ? `${n} ms` : n;
}

const formatCount = (n) => Number(n).toLocaleString('en-US');

function formatDateTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// ---------------------------------------------------------------------------------------------
// Start

setInterval(() => {
  for (const entry of state.cards.values()) updateTimes(entry);
  if (state.token && state.lastOkAt && ui.live.dataset.state === 'ok') {
    ui.liveText.textContent = `Live · last event ${formatDuration(Date.now() - state.lastOkAt)} ago`;
  }
  // A stream that sends nothing, not even heartbeats, is dead though its socket looks open.
  if (state.streamOpen && Date.now() - state.lastAliveAt > STREAM_SILENCE_MS) closeStreamSilent();
}, 1000);

function closeStreamSilent() {
  const controller = state.stream;
  state.streamOpen = false;
  state.stream = null;
  if (controller) controller.abort();
  streamFailed(new ApiError(0, 'silent', 'the stream went silent'));
}

setInterval(refreshOpenCards, DETAILS_MS);
setInterval(refreshFreeze, FREEZE_MS);

if (state.token) signIn(state.token);
else signOut('');

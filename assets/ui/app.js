// The rollout dashboard: polls the JSON API with the operator's admin token (kept in this tab's
// sessionStorage) and keeps one card per flag up to date. Data from the API reaches the page only
// through textContent and attributes, never as markup.
'use strict';

const TOKEN_KEY = 'rollout-controller.admin-token';
const POLL_MS = 2000;
const REQUEST_TIMEOUT_MS = 8000;
const HISTORY_LIMIT = 20;

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
};

const STATUS_ORDER = ['running', 'paused', 'rolled_back', 'scheduled', 'pending', 'completed'];

const $ = (selector, root = document) => root.querySelector(selector);

const ui = {
  signin: $('[data-testid="signin"]'),
  tokenForm: $('[data-testid="token-form"]'),
  tokenInput: $('[data-testid="token-input"]'),
  tokenError: $('[data-testid="token-error"]'),
  forget: $('[data-testid="forget-token"]'),
  flags: $('[data-testid="flags"]'),
  empty: $('[data-testid="empty"]'),
  summary: $('[data-testid="summary"]'),
  live: $('[data-testid="live"]'),
  liveText: $('[data-testid="live-text"]'),
  banner: $('[data-testid="banner"]'),
  toasts: $('[data-testid="toasts"]'),
  dialog: $('[data-testid="confirm-dialog"]'),
  dialogForm: $('[data-testid="confirm-form"]'),
  dialogTitle: $('[data-testid="confirm-title"]'),
  dialogText: $('[data-testid="confirm-text"]'),
  dialogReason: $('[data-testid="confirm-reason"]'),
  dialogOk: $('[data-testid="confirm-ok"]'),
  dialogCancel: $('[data-testid="confirm-cancel"]'),
  template: $('#flag-card-template'),
};

const state = {
  token: readToken(),
  /** name → {el, flag, health, history, receivedAt, busy} */
  cards: new Map(),
  lastOkAt: 0,
  polling: false,
  pollAgain: false,
  pollTimer: 0,
  /** Server clock minus ours, from the Date header, so "time in stage" is the server's. */
  clockOffsetMs: 0,
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
  clearTimeout(state.pollTimer);
  for (const entry of state.cards.values()) entry.el.remove();
  state.cards.clear();
  ui.flags.hidden = true;
  ui.empty.hidden = true;
  ui.forget.hidden = true;
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
  ui.forget.hidden = false;
  setLive('idle', 'Connecting…');
  refresh();
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

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  const headers = { Authorization: `Bearer ${state.token}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  try {
    const resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: 'no-store',
      credentials: 'omit',
    });
    noteServerClock(resp);
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

function noteServerClock(resp) {
  const date = Date.parse(resp.headers.get('date') || '');
  if (!Number.isFinite(date)) return;
  // The header has whole seconds: ignore differences that small.
  const offset = date + 500 - Date.now();
  state.clockOffsetMs = Math.abs(offset) > 2000 ? offset : 0;
}

const serverNow = () => Date.now() + state.clockOffsetMs;
const flagPath = (name, rest = '') => `/flags/${encodeURIComponent(name)}${rest}`;

// ---------------------------------------------------------------------------------------------
// Polling

async function refresh() {
  if (!state.token) return;
  if (state.polling) {
    state.pollAgain = true;
    return;
  }
  state.polling = true;
  clearTimeout(state.pollTimer);
  try {
    const [list, freeze] = await Promise.all([api('GET', '/flags'), api('GET', '/freeze')]);
    renderFreeze(freeze);
    const flags = (list && list.flags) || [];
    const details = await Promise.all(flags.map(async (flag) => {
      const [health, history] = await Promise.allSettled([
        api('GET', flagPath(flag.name, '/health')),
        api('GET', flagPath(flag.name, `/history?limit=${HISTORY_LIMIT}`)),
      ]);
      for (const r of [health, history]) {
        if (r.status === 'rejected' && r.reason.status === 401) throw r.reason;
      }
      return { flag, health, history };
    }));
    if (!state.token) return;
    render(details);
    state.lastOkAt = Date.now();
    hideBanner();
    setLive('ok', 'Live');
  } catch (err) {
    if (err.status === 401) {
      signOut('The token was refused (401 unauthorized). Enter a valid admin token.');
      return;
    }
    if (err.status === 403) {
      signOut('This token may not manage rollouts (403 forbidden). Enter an admin token.');
      return;
    }
    showBanner(`Cannot load flags: ${err.message}. Retrying every ${POLL_MS / 1000} s; the data shown may be stale.`);
    setLive('error', 'Offline');
  } finally {
    state.polling = false;
    if (state.token) {
      state.pollTimer = setTimeout(refresh, state.pollAgain ? 0 : POLL_MS);
    }
    state.pollAgain = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/** The freeze, on every replica: a banner saying who froze automatic advances, when and why. */
function renderFreeze(freeze) {
  const banner = $('[data-testid="freeze-banner"]');
  if (!banner) return;
  banner.hidden = !(freeze && freeze.frozen);
  banner.textContent = banner.hidden
    ? ''
    : `Frozen by ${freeze.by} since ${formatTime(freeze.at)}: ${freeze.reason}. Nothing advances or starts automatically; rollbacks still happen.`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function render(details) {
  details.sort((a, b) => a.flag.name.localeCompare(b.flag.name));
  const seen = new Set();
  let previous = null;
  for (const detail of details) {
    const name = detail.flag.name;
    seen.add(name);
    let entry = state.cards.get(name);
    if (!entry) {
      entry = createCard(name);
      state.cards.set(name, entry);
    }
    entry.flag = detail.flag;
    entry.receivedAt = Date.now();
    if (detail.health.status === 'fulfilled') {
      entry.health = detail.health.value;
      entry.healthError = null;
    } else {
      entry.healthError = detail.health.reason;
    }
    if (detail.history.status === 'fulfilled') {
      entry.history = detail.history.value;
      entry.historyError = null;
    } else {
      entry.historyError = detail.history.reason;
    }
    updateCard(entry);
    // Keep DOM order equal to the sorted order without touching cards already in place.
    const wanted = previous ? previous.nextSibling : ui.flags.firstChild;
    if (wanted !== entry.el) ui.flags.insertBefore(entry.el, wanted);
    previous = entry.el;
  }
  for (const [name, entry] of state.cards) {
    if (!seen.has(name)) {
      entry.el.remove();
      state.cards.delete(name);
    }
  }
  ui.empty.hidden = details.length > 0;
  renderSummary(details.map((d) => d.flag));
}

function renderSummary(flags) {
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
}

function createCard(name) {
  const card = ui.template.content.firstElementChild.cloneNode(true);
  card.dataset.flag = name;
  const entry = { el: card, flag: null, health: null, history: null, busy: false, sig: {} };
  for (const button of card.querySelectorAll('button[data-action]')) {
    button.addEventListener('click', () => onAction(name, button.dataset.action));
  }
  return entry;
}

function updateCard(entry) {
  const { el: card, flag } = entry;
  const q = (id) => $(`[data-testid="${id}"]`, card);
  card.dataset.status = flag.status;
  q('flag-name').textContent = flag.name;
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
    button.setAttribute('aria-label', `${ACTION_LABELS[action]} ${flag.name}`);
    button.title = legal.includes(action) ? confirmText(flag, action) : `Not possible while ${flag.status}`;
  }

  renderGuards(entry);
  renderTimeline(entry);
  updateTimes(entry);
}

function stageLabel(flag) {
  const stages = flag.definition.stages;
  if (flag.status === 'pending') return `not started · ${stages.length} stages`;
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
  const timeInStage = $('[data-testid="time-in-stage"]', card);
  timeInStage.textContent = flag.status === 'pending' ? '—' : formatDuration(inStage);
  timeInStage.title = `since ${formatDateTime(flag.stage_entered_at)}`;

  const next = $('[data-testid="next-advance"]', card);
  const stages = flag.definition.stages;
  const last = flag.stage_index >= stages.length - 1;
  let soakLeftMs = null;
  if (flag.status === 'running' && flag.soak_remaining_secs !== null && flag.soak_remaining_secs !== undefined) {
    soakLeftMs = Math.max(0, flag.soak_remaining_secs * 1000 - (Date.now() - entry.receivedAt));
  }
  next.classList.remove('waiting');
  if (soakLeftMs === null) {
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

/** The plan as a stepper; the current stage fills as its soak passes. */
function renderStages(entry, soakLeftMs) {
  const { el: card, flag } = entry;
  const stages = flag.definition.stages;
  const bar = $('[data-testid="stage-bar"]', card);
  const sig = JSON.stringify([flag.status, flag.stage_index, stages]);
  const fills = [];
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
    const track = el('span', 'stage-track');
    track.append(el('span', 'stage-fill'));
    const who = stage.internal_only ? 'internal users' : `${stage.percent}% of users`;
    const meta = `${who} · soak ${formatSoak(stage.soak_secs)}`;
    li.append(track, el('span', 'stage-name', stage.name), el('span', 'stage-meta', meta));
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

function renderGuards(entry) {
  const { el: card, health } = entry;
  const verdict = $('[data-testid="verdict"]', card);
  const note = $('[data-testid="guards-note"]', card);
  const windowText = $('[data-testid="guards-window"]', card);
  const tbody = $('[data-testid="guards"] tbody', card);
  if (entry.healthError) {
    note.textContent = `Guard health unavailable: ${entry.healthError.message}`;
    note.hidden = false;
    return;
  }
  if (!health) return;
  note.textContent = health.guards.length ? '' : 'Every guard is turned off for this stage.';
  note.hidden = health.guards.length > 0;
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
    const comparator = g.breaches_when === 'below' ? '≥' : '≤';
    const budget = el('td', 'budget');
    budget.append(budgetMeter(g));
    const samples = el('td', 'num', `${formatCount(g.samples)} / ${formatCount(g.min_samples)}`);
    samples.title = `${g.samples} samples in the window; judged from ${g.min_samples}`;
    const chip = el('span', `chip verdict-${g.verdict}`, g.verdict);
    const verdictCell = el('td');
    verdictCell.append(chip);
    tr.append(
      name,
      valueCell(g),
      el('td', 'num', g.threshold === null ? 'vs control' : `${comparator} ${formatGuard(g.guard, g.threshold)}`),
      budget,
      samples,
      verdictCell,
    );
    return tr;
  });
  tbody.replaceChildren(...rows);
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

function renderTimeline(entry) {
  const { el: card, history } = entry;
  const list = $('[data-testid="timeline"]', card);
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
    const move = e.from
      ? `${position(e.from)} → ${position(e.to)}`
      : position(e.to);
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

function confirmText(flag, action) {
  const stages = flag.definition.stages;
  const name = flag.name;
  switch (action) {
    case 'start':
      return `Start ${name}: it enters stage ${stages[0].name} (${stages[0].internal_only ? 'internal users only' : `${stages[0].percent}% of users`}).`;
    case 'advance': {
      const next = stages[flag.stage_index + 1];
      return next
        ? `Advance ${name} from ${flag.stage} to ${next.name} (${next.internal_only ? 'internal users only' : `${next.percent}% of users`}) without waiting for the soak.`
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
    default:
      return '';
  }
}

/** Resolves to the reason typed (possibly empty) when confirmed, null when cancelled. */
function confirmAction(flag, action) {
  return new Promise((resolve) => {
    ui.dialogTitle.textContent = `${ACTION_LABELS[action]} ${flag.name}?`;
    ui.dialogText.textContent = confirmText(flag, action);
    ui.dialogReason.value = '';
    ui.dialogReason.placeholder = action === 'rollback' ? 'e.g. error rate up in checkout' : `${action} from the dashboard`;
    ui.dialogOk.textContent = ACTION_LABELS[action];
    ui.dialogOk.className = `btn ${action === 'rollback' ? 'btn-danger-solid' : 'btn-primary'}`;
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
  ui.dialog.close('ok');
});
ui.dialogCancel.addEventListener('click', () => ui.dialog.close('cancel'));

async function onAction(name, action) {
  const entry = state.cards.get(name);
  if (!entry || entry.busy) return;
  // The version the operator was looking at: if the flag moves meanwhile, the server refuses
  // (rollbacks excepted, which always apply to the latest state).
  const seen = entry.flag;
  const reason = await confirmAction(seen, action);
  if (reason === null) return;
  entry.busy = true;
  updateCard(entry);
  try {
    const next = await api('POST', flagPath(name, `/${action}`), {
      reason: reason || `${action} from the dashboard`,
      expected_version: seen.version,
    });
    toast('ok', `${name}: ${action} → ${next.status}${next.status === 'running' ? ` at ${next.stage}` : ''} (v${next.version})`);
  } catch (err) {
    if (err.status === 401) {
      signOut('The token was refused (401 unauthorized). Enter a valid admin token.');
      return;
    }
    if (err.code === 'version_conflict') {
      toast('error', `${name} changed while you were looking at it: nothing was done. Check its new state and try again.`);
    } else {
      toast('error', `${name}: ${action} failed (${err.code}): ${err.message}`);
    }
  } finally {
    entry.busy = false;
    if (state.cards.get(name) === entry) updateCard(entry);
    refresh();
  }
}

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

const RATE_GUARDS = new Set(['error_rate', 'bounce_rate', 'complaint_rate', 'delivery_rate', 'webhook_error_rate']);

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
    ui.liveText.textContent = `Live · updated ${formatDuration(Date.now() - state.lastOkAt)} ago`;
  }
}, 1000);

if (state.token) signIn(state.token);
else signOut('');

// An operator's day in the dashboard, under a path prefix, in Debian's headless Chromium: create a
// flag through the plan form (the server's 422 shown at its field first), edit it (an edit made
// elsewhere meanwhile refused, then the new version edited), start it, approve its
// gated stage, schedule another flag's start, see a guard chart with treatment against control, freeze the controller, and see a
// rollback made through the API arrive live, without a reload. Run by tests/api/dashboard.rs.
//
// Env: BASE_URL (http://127.0.0.1:port/prefix), TOKEN (admin), OUT_DIR (screenshots), LIVE_FLAG (a
// running flag whose guards compare treatment with control), NEW_FLAG (a name no flag has yet),
// SCHEDULED_FLAG (a pending flag to schedule).
import { join } from 'node:path';

import { STEP_TIMEOUT_MS, badgeReads, card as cardOf, confirm, env, exitWith, fail, signIn, step, withPage } from './browser.mjs';

const baseUrl = env('BASE_URL').replace(/\/$/, '');
const token = env('TOKEN');
const outDir = env('OUT_DIR');
const liveFlag = env('LIVE_FLAG');
const newFlag = env('NEW_FLAG');
const scheduledFlag = env('SCHEDULED_FLAG');
const prefix = new URL(baseUrl).pathname.replace(/\/$/, '');
/** How soon a change made elsewhere must show: the stream delivers it in milliseconds. */
const LIVE_BOUND_MS = 3_000;

/** A call to the service from outside the browser, as another operator or app would make it. */
async function api(method, path, body) {
  const resp = await fetch(`${baseUrl}/${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  if (resp.status !== 200) fail(`${method} ${path} answered ${resp.status}: ${await resp.text()}`);
  return resp.json();
}

/** Screenshots for the manual: the toasts of earlier steps would cover the cards. */
async function shoot(locator, path) {
  await locator.page().evaluate(() => document.querySelector('[data-testid="toasts"]').replaceChildren());
  await locator.screenshot({ path });
}

async function run(page) {
  const requests = [];
  page.on('request', (req) => requests.push({ at: Date.now(), method: req.method(), url: new URL(req.url()), headers: req.headers() }));

  await signIn(page, baseUrl, token);
  await cardOf(page, liveFlag).waitFor({ state: 'visible' });

  step('the stream carries the token in its header, under the prefix');
  const stream = requests.find((r) => r.url.pathname === `${prefix}/stream`);
  if (!stream) fail(`no request to ${prefix}/stream: ${requests.map((r) => r.url.pathname).join(', ')}`);
  if (stream.headers.authorization !== `Bearer ${token}`) fail('the stream request does not send the token in Authorization');
  await page.waitForFunction(() => document.querySelector('[data-testid="live"]').dataset.state === 'ok');

  step('a plan the server refuses: its 422 shows at the field');
  await page.getByTestId('new-flag').click();
  const editor = page.getByTestId('editor-dialog');
  await editor.waitFor({ state: 'visible' });
  await page.getByTestId('field-name').fill(newFlag);
  await page.getByTestId('field-salt').fill(newFlag);
  const rows = editor.getByTestId('stage-row');
  if ((await rows.count()) !== 4) fail(`a new flag should start from the runbook's four stages, has ${await rows.count()}`);
  const second = rows.nth(1);
  await second.getByTestId('stage-name').fill('5%');
  await second.getByTestId('stage-percent').fill('150');
  await second.getByTestId('stage-soak').fill('30m');
  await second.getByTestId('stage-requires-approval').check();
  await page.getByTestId('editor-save').click();
  const fieldError = editor.locator('[data-field="stages[1].percent"] [data-testid="field-error"]');
  await fieldError.waitFor({ state: 'visible' });
  const message = (await fieldError.textContent()).trim();
  if (!message.includes('between 0 and 100')) fail(`the field shows ${JSON.stringify(message)}, not the server's message`);
  if ((await second.getByTestId('stage-percent').getAttribute('aria-invalid')) !== 'true') fail('the refused input is not marked invalid');
  await editor.screenshot({ path: join(outDir, 'editor-422.png') });

  step('the corrected plan is created');
  await second.getByTestId('stage-percent').fill('5');
  await page.getByTestId('editor-save').click();
  await editor.waitFor({ state: 'hidden' });
  const put = requests.find((r) => r.method === 'PUT' && r.url.pathname === `${prefix}/flags/${newFlag}`);
  if (!put || put.url.searchParams.get('expected_version') !== '0') fail('the form does not create with expected_version=0');
  const created = cardOf(page, newFlag);
  await created.waitFor({ state: 'visible' });
  await badgeReads(page, newFlag, 'pending');

  step('an edit made elsewhere meanwhile is not overwritten; an edit of the new version is saved');
  await created.getByTestId('action-edit').click();
  await editor.waitFor({ state: 'visible' });
  const current = await api('GET', `flags/${newFlag}`);
  await api('PUT', `flags/${newFlag}`, { ...current.definition, internal_users: ['qa-bot'] });
  await editor.getByTestId('stage-row').first().getByTestId('stage-soak').fill('45m');
  await page.getByTestId('editor-save').click();
  await page.getByTestId('editor-error').filter({ hasText: 'changed since this form was opened' }).waitFor();
  await page.getByTestId('editor-cancel').click();
  await editor.waitFor({ state: 'hidden' });
  await page.waitForFunction((name) => {
    const v = document.querySelector(`[data-testid="flag-card"][data-flag="${name}"] [data-testid="version"]`);
    return v && v.textContent === 'v2';
  }, newFlag);
  await created.getByTestId('action-edit').click();
  if ((await page.getByTestId('field-internal_users').inputValue()) !== 'qa-bot') fail('the form does not start from the new version');
  await editor.getByTestId('stage-row').first().getByTestId('stage-soak').fill('45m');
  await page.getByTestId('editor-save').click();
  await editor.waitFor({ state: 'hidden' });
  const edit = requests.filter((r) => r.method === 'PUT' && r.url.pathname === `${prefix}/flags/${newFlag}`).pop();
  if (edit.url.searchParams.get('expected_version') !== '2') fail(`the edit was not sent at version 2: ${edit.url.search}`);
  await created.locator('[data-testid="plan-stage"]').first().filter({ hasText: 'soak 45m' }).waitFor();

  step('start, then approve the gated stage');
  await created.getByTestId('action-start').click();
  await confirm(page, 'internal dogfood from the dashboard test');
  await badgeReads(page, newFlag, 'running');
  const gated = created.locator('[data-testid="plan-stage"][data-stage="5%"]');
  const needs = gated.getByTestId('mark-approval');
  await needs.waitFor();
  if (!(await needs.textContent()).includes('0/1')) fail(`the gate reads ${await needs.textContent()}`);
  await gated.getByTestId('approve').click();
  await confirm(page, 'internal users happy');
  const approved = gated.getByTestId('mark-approved');
  await approved.waitFor();
  if (!(await approved.textContent()).includes('operator:')) fail(`the approval does not name its operator: ${await approved.textContent()}`);
  await shoot(created, join(outDir, 'plan-timeline.png'));

  step('schedule a start: the plan marks it, and it can be called off');
  const later = cardOf(page, scheduledFlag);
  await later.getByTestId('action-start').click();
  await page.getByTestId('confirm-at-field').waitFor({ state: 'visible' });
  // datetime-local takes local time, minutes only: an hour from now in the browser's zone.
  const at = await page.evaluate(() => {
    const d = new Date(Date.now() + 3_600_000);
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  });
  await page.getByTestId('confirm-at').fill(at);
  await confirm(page, 'launch at the top of the hour');
  await badgeReads(page, scheduledFlag, 'scheduled');
  await later.locator('[data-testid="plan-stage"]').first().getByTestId('mark-scheduled').waitFor();
  if (!(await later.getByTestId('action-cancel').isVisible()) || (await later.getByTestId('action-start').isVisible())) {
    fail('a scheduled flag offers Cancel start in place of Start');
  }

  step('the guard chart covers the stage from its start, then draws treatment against control and the threshold, reading after reading');
  const live = cardOf(page, liveFlag);
  const chart = live.locator('[data-testid="guard-chart"][data-guard="error_rate"]');
  await chart.waitFor();
  // The leader took 4 readings with data before this tab opened: the chart starts with them.
  await chart.locator('text.axis', { hasText: 'since the stage began' }).waitFor();
  const seen = await chart.locator('circle.dot-treatment').count();
  if (seen < 4 || (await chart.locator('circle.dot-control').count()) < 4) fail(`the chart of a fresh tab has only ${seen} points`);
  // More traffic in both cohorts (treatment keeps its 10% share): the open card's next reading
  // (every 10 s) adds a point to each line.
  for (const [cohort, requests, errors] of [['treatment', 500, 5], ['control', 4500, 19]]) {
    await api('POST', `flags/${liveFlag}/metrics`, { cohort, requests, errors });
  }
  await chart.locator('circle.dot-treatment').nth(seen).waitFor({ timeout: 15_000 });
  await chart.locator('circle.dot-control').nth(seen).waitFor();
  for (const part of ['path.series-treatment', 'path.series-control', 'line.threshold']) {
    if ((await chart.locator(part).count()) !== 1) fail(`the error_rate chart has no ${part}`);
  }
  if ((await chart.locator('.band, .band-bar').count()) < 1) fail('the error_rate chart has no confidence interval');
  await shoot(live, join(outDir, 'guard-chart.png'));

  step('freeze the controller');
  await page.getByTestId('freeze-toggle').click();
  await confirm(page, 'change freeze for the dashboard test');
  const banner = page.getByTestId('freeze-banner');
  await banner.filter({ hasText: 'change freeze for the dashboard test' }).waitFor();

  step('a rollback made through the API appears without a reload');
  await page.evaluate(() => {
    window.samePage = true;
  });
  const before = requests.length;
  const sent = Date.now();
  await api('POST', `flags/${liveFlag}/rollback`, { reason: 'error budget burnt (rolled back through the API)' });
  await badgeReads(page, liveFlag, 'rolled_back', LIVE_BOUND_MS);
  const seenAfterMs = Date.now() - sent;
  if (!(await page.evaluate(() => window.samePage === true))) fail('the page was reloaded');
  const during = requests.slice(before).map((r) => `${r.method} ${r.url.pathname}`);
  if (during.includes(`GET ${prefix}/flags`)) fail(`the change was read by polling the list: ${during.join(', ')}`);
  if (!during.includes(`GET ${prefix}/flags/${liveFlag}`)) fail(`the changed flag was not read: ${during.join(', ')}`);
  step(`the rollback showed ${seenAfterMs} ms after the API call; requests meanwhile: ${during.join(', ')}`);
  await live.getByTestId('timeline').filter({ hasText: 'error budget burnt' }).waitFor();
  await page.screenshot({ path: join(outDir, 'dashboard-rollback-live.png') });

  step('every request stayed under the prefix and no URL carried the token');
  for (const r of requests) {
    if (!r.url.pathname.startsWith(`${prefix}/`)) fail(`a request left the prefix: ${r.url.pathname}`);
    if (r.url.href.includes(token)) fail(`a URL carries the token: ${r.url.pathname}`);
  }
  const lists = requests.filter((r) => r.method === 'GET' && r.url.pathname === `${prefix}/flags`).length;
  if (lists !== 1) fail(`the list of flags was read ${lists} times; once is enough while the stream is up`);
}

try {
  // The refused plan (422) and the stale edit (409) are on purpose; Chromium logs them.
  const expectedConsole = [/the server responded with a status of (422|409)/];
  await withPage({ baseUrl, outDir, name: 'operate', overallMs: 75_000, expectedConsole }, run);
} catch (err) {
  exitWith(err.message);
}
process.exit(0);

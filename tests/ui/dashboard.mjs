// Drives the /ui dashboard in Debian's headless Chromium: sign in with the token, find the flag's
// card, roll it back through the confirmation dialog, wait for the badge to read `rolled_back`,
// and save screenshots. Run by tests/api/dashboard.rs; exits non-zero with a message on any failure.
//
// Env: BASE_URL (http://127.0.0.1:port), TOKEN (admin), FLAG (a running flag), OUT_DIR (screenshots),
// REASON (optional: the rollback reason typed into the dialog), EXPECT_TEXT (optional: text, such as
// markup in an audit reason, that the flag's audit log must show verbatim).
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const STEP_TIMEOUT_MS = 10_000;
const OVERALL_TIMEOUT_MS = 50_000;

function exitWith(message) {
  console.error(`dashboard test failed: ${message}`);
  process.exit(1);
}

/** Stops the test: the browser is closed and its profile removed before the process exits. */
function fail(message) {
  throw new Error(message);
}

function env(name) {
  const value = process.env[name];
  if (!value) exitWith(`the environment variable ${name} is required`);
  return value;
}

const baseUrl = env('BASE_URL').replace(/\/$/, '');
const token = env('TOKEN');
const flag = env('FLAG');
const outDir = env('OUT_DIR');
const reason = process.env.REASON || 'rolled back from the dashboard test';
const literal = process.env.EXPECT_TEXT || '';

// Everything below is bounded by the step timeouts; this is the backstop for anything that is not.
setTimeout(() => exitWith(`gave up after ${OVERALL_TIMEOUT_MS / 1000} s`), OVERALL_TIMEOUT_MS).unref();

const step = (text) => console.log(`- ${text}`);

async function main() {
  await mkdir(outDir, { recursive: true });
  const userDataDir = await mkdtemp(join(tmpdir(), 'rollout-ui-chromium-'));
  const problems = [];
  let context;
  let page;
  try {
    step(`launching ${CHROMIUM} (profile ${userDataDir})`);
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      viewport: { width: 1440, height: 1000 },
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);

    // The page must be self-contained: no request leaves the service, no script error, no CSP violation.
    const origin = new URL(baseUrl).origin;
    page.on('request', (req) => {
      const url = req.url();
      if (!url.startsWith('data:') && !url.startsWith('about:') && new URL(url).origin !== origin) {
        problems.push(`request to another origin: ${url}`);
      }
    });
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    // The dashboard confirms with an in-page dialog; a native one would be a regression.
    page.on('dialog', (dialog) => {
      problems.push(`unexpected native ${dialog.type()} dialog: ${dialog.message()}`);
      dialog.dismiss().catch(() => {});
    });

    step(`opening ${baseUrl}/ui`);
    const response = await page.goto(`${baseUrl}/ui`, { waitUntil: 'domcontentloaded' });
    if (!response || response.status() !== 200) fail(`GET /ui answered ${response && response.status()}`);

    step('signing in with the admin token');
    await page.getByTestId('token-form').waitFor({ state: 'visible' });
    await page.getByTestId('token-input').fill(token);
    await page.getByTestId('token-submit').click();

    step(`waiting for the card of ${flag}`);
    const card = page.locator(`[data-testid="flag-card"][data-flag="${flag}"]`);
    await card.waitFor({ state: 'visible' });
    const badge = card.getByTestId('status-badge');
    const before = (await badge.textContent()).trim();
    if (before !== 'running') fail(`expected ${flag} to be running before the rollback, the badge reads ${before}`);

    for (const [action, enabled] of [['start', false], ['advance', true], ['pause', true], ['resume', false], ['rollback', true]]) {
      if ((await card.getByTestId(`action-${action}`).isEnabled()) !== enabled) {
        fail(`the ${action} button should be ${enabled ? 'enabled' : 'disabled'} for a running flag`);
      }
    }

    step('checking guards, stages and the audit log');
    await card.locator('[data-testid="guard-row"]').first().waitFor();
    const values = await card.locator('[data-testid="guard-row"] .value').allTextContents();
    if (!values.some((v) => v.trim() !== '—')) fail(`no guard shows a value (values: ${values.join(', ')})`);
    if ((await card.locator('[data-testid="stage-bar"] [aria-current="step"]').count()) !== 1) {
      fail('the stage bar does not mark exactly one current stage');
    }
    await card.locator('[data-testid="timeline"] [data-testid="event"]').first().waitFor();
    // Audit reasons are free text: markup in one must show as text, never become elements.
    if (literal && !(await card.getByTestId('timeline').textContent()).includes(literal)) {
      fail(`the audit log does not show ${JSON.stringify(literal)} as text`);
    }
    if ((await card.locator('img, script, iframe, svg').count()) > 0) {
      fail('markup from the API was rendered as HTML in the card');
    }
    await page.screenshot({ path: join(outDir, 'dashboard-running.png'), fullPage: true });

    step('rolling back through the confirmation dialog');
    await card.getByTestId('action-rollback').click();
    const dialog = page.getByTestId('confirm-dialog');
    await dialog.waitFor({ state: 'visible' });
    const title = (await page.getByTestId('confirm-title').textContent()).trim();
    if (!title.includes(flag)) fail(`the confirmation does not name the flag: ${title}`);
    await page.getByTestId('confirm-reason').fill(reason);
    await page.getByTestId('confirm-ok').click();

    step('waiting for the badge to read rolled_back');
    await page.waitForFunction(
      (name) => {
        const el = document.querySelector(`[data-testid="flag-card"][data-flag="${CSS.escape(name)}"] [data-testid="status-badge"]`);
        return el && el.textContent.trim() === 'rolled_back';
      },
      flag,
      { timeout: STEP_TIMEOUT_MS, polling: 100 },
    );
    const percent = (await card.getByTestId('percent').textContent()).trim();
    if (percent !== '0%') fail(`a rolled-back flag should show 0%, shows ${percent}`);
    const latest = card.locator('[data-testid="timeline"] [data-testid="event"]').first();
    await latest.filter({ hasText: reason }).waitFor();
    const latestText = await latest.textContent();
    if (!latestText.includes('rollback') || !latestText.includes('operator:')) {
      fail(`the newest audit event is not the operator's rollback: ${latestText}`);
    }
    if (!(await card.getByTestId('action-resume').isEnabled()) || (await card.getByTestId('action-rollback').isEnabled())) {
      fail('after a rollback only resume should be enabled');
    }

    const shot = join(outDir, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    step(`screenshot saved to ${shot}`);
    if (problems.length) fail('the page misbehaved:');
    step('ok');
  } catch (err) {
    if (page) {
      await page.screenshot({ path: join(outDir, 'dashboard-failure.png'), fullPage: true, timeout: 5_000 }).catch(() => {});
    }
    const extra = problems.length ? `\n  ${problems.join('\n  ')}` : '';
    throw new Error(`${err && err.message ? err.message : err}${extra}`);
  } finally {
    if (context) await context.close().catch(() => {});
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  }
}

try {
  await main();
} catch (err) {
  exitWith(err.message);
}
process.exit(0);

// What both dashboard scripts share: Debian's headless Chromium with a throwaway profile, a page
// that records every misbehaviour (a request to another origin, a console or page error, a native
// dialog), and a failure screenshot. Each script exits non-zero with a message on any failure.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
export const STEP_TIMEOUT_MS = 10_000;

export function exitWith(message) {
  console.error(`dashboard test failed: ${message}`);
  process.exit(1);
}

/** Stops the test: the browser is closed and its profile removed before the process exits. */
export function fail(message) {
  throw new Error(message);
}

export function env(name) {
  const value = process.env[name];
  if (!value) exitWith(`the environment variable ${name} is required`);
  return value;
}

export const step = (text) => console.log(`- ${text}`);

/** Runs `body(page, problems)` in a fresh browser; `name` names the failure screenshot.
 *  `expectedConsole`: console errors the script causes on purpose (Chromium logs every 4xx). */
export async function withPage({ baseUrl, outDir, name, overallMs, expectedConsole = [] }, body) {
  // Everything is bounded by the step timeouts; this is the backstop for anything that is not.
  setTimeout(() => exitWith(`gave up after ${overallMs / 1000} s`), overallMs).unref();
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
      if (msg.type() === 'error' && !expectedConsole.some((re) => re.test(msg.text()))) {
        problems.push(`console error: ${msg.text()}`);
      }
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    // The dashboard confirms with in-page dialogs; a native one would be a regression.
    page.on('dialog', (dialog) => {
      problems.push(`unexpected native ${dialog.type()} dialog: ${dialog.message()}`);
      dialog.dismiss().catch(() => {});
    });

    await body(page, problems);
    if (problems.length) fail('the page misbehaved:');
    step('ok');
  } catch (err) {
    if (page) {
      await page.screenshot({ path: join(outDir, `${name}-failure.png`), fullPage: true, timeout: 5_000 }).catch(() => {});
    }
    const extra = problems.length ? `\n  ${problems.join('\n  ')}` : '';
    throw new Error(`${err && err.message ? err.message : err}${extra}`);
  } finally {
    if (context) await context.close().catch(() => {});
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  }
}

/** Opens the dashboard at `${baseUrl}/ui` (which sends the browser on to `ui/`) and signs in. */
export async function signIn(page, baseUrl, token) {
  step(`opening ${baseUrl}/ui`);
  const response = await page.goto(`${baseUrl}/ui`, { waitUntil: 'domcontentloaded' });
  if (!response || response.status() !== 200) fail(`GET ${baseUrl}/ui answered ${response && response.status()}`);
  if (new URL(page.url()).pathname !== `${new URL(baseUrl).pathname.replace(/\/$/, '')}/ui/`) {
    fail(`the dashboard should end up at …/ui/, it is at ${page.url()}`);
  }
  step('signing in with the admin token');
  await page.getByTestId('token-form').waitFor({ state: 'visible' });
  await page.getByTestId('token-input').fill(token);
  await page.getByTestId('token-submit').click();
}

export const card = (page, flag) => page.locator(`[data-testid="flag-card"][data-flag="${flag}"]`);

/** Waits until the status badge of `flag` reads `status`, polling the DOM (no reload). */
export async function badgeReads(page, flag, status, timeout = STEP_TIMEOUT_MS) {
  await page.waitForFunction(
    ([name, want]) => {
      const el = document.querySelector(`[data-testid="flag-card"][data-flag="${CSS.escape(name)}"] [data-testid="status-badge"]`);
      return el && el.textContent.trim() === want;
    },
    [flag, status],
    { timeout, polling: 50 },
  );
}

/** Fills the confirmation dialog's reason and confirms. */
export async function confirm(page, reason) {
  await page.getByTestId('confirm-dialog').waitFor({ state: 'visible' });
  await page.getByTestId('confirm-reason').fill(reason);
  await page.getByTestId('confirm-ok').click();
  await page.getByTestId('confirm-dialog').waitFor({ state: 'hidden' });
}

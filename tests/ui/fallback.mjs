// The dashboard when its stream is refused, in Debian's headless Chromium: the service takes one
// stream client and this script holds it, so the page must fall back to reading the list (and say
// so); once the script lets go, the page reconnects by itself and changes arrive live again.
// Run by tests/api/dashboard.rs; exits non-zero with a message on any failure.
//
// Env: BASE_URL (http://127.0.0.1:port), TOKEN (admin), OUT_DIR (screenshots), FLAG (a running flag).
import { join } from 'node:path';

import { STEP_TIMEOUT_MS, badgeReads, card as cardOf, env, exitWith, fail, signIn, step, withPage } from './browser.mjs';

const baseUrl = env('BASE_URL').replace(/\/$/, '');
const token = env('TOKEN');
const outDir = env('OUT_DIR');
const flag = env('FLAG');
const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };

async function run(page) {
  step('taking the only stream slot');
  const holder = new AbortController();
  const held = await fetch(`${baseUrl}/stream`, { headers, signal: holder.signal });
  if (held.status !== 200) fail(`the held stream answered ${held.status}`);

  await signIn(page, baseUrl, token);
  step('the page reads the list instead, and says the stream is down');
  await cardOf(page, flag).waitFor({ state: 'visible' });
  await page.getByTestId('banner').filter({ hasText: 'live stream is down' }).waitFor();
  await page.waitForFunction(() => document.querySelector('[data-testid="live"]').dataset.state === 'error');
  await page.screenshot({ path: join(outDir, 'dashboard-stream-down.png') });

  step('letting go of the stream: the page reconnects by itself');
  holder.abort();
  await page.waitForFunction(() => document.querySelector('[data-testid="live"]').dataset.state === 'ok', null, { timeout: 20_000 });
  if (await page.getByTestId('banner').isVisible()) fail('the banner stays after the stream is back');

  step('a change arrives live again');
  const resp = await fetch(`${baseUrl}/flags/${flag}/pause`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ reason: 'paused through the API' }),
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  if (resp.status !== 200) fail(`the API pause answered ${resp.status}: ${await resp.text()}`);
  await badgeReads(page, flag, 'paused', 3_000);
}

try {
  // The refused stream is a 503 on purpose; Chromium logs it.
  const expectedConsole = [/the server responded with a status of 503/];
  await withPage({ baseUrl, outDir, name: 'fallback', overallMs: 60_000, expectedConsole }, run);
} catch (err) {
  exitWith(err.message);
}
process.exit(0);

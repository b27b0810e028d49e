// Drives the /ui dashboard in Debian's headless Chromium: sign in with the token, find the flag's
// card, roll it back through the confirmation dialog, wait for the badge to read `rolled_back`,
// and save screenshots. Run by tests/api/dashboard.rs; exits non-zero with a message on any failure.
//
// Env: BASE_URL (http://127.0.0.1:port), TOKEN (admin), FLAG (a running flag), OUT_DIR (screenshots),
// REASON (optional: the rollback reason typed into the dialog), EXPECT_TEXT (optional: text, such as
// markup in an audit reason, that the flag's audit log must show verbatim).
import { join } from 'node:path';

import { badgeReads, card as cardOf, confirm, env, exitWith, fail, signIn, step, withPage } from './browser.mjs';

const baseUrl = env('BASE_URL').replace(/\/$/, '');
const token = env('TOKEN');
const flag = env('FLAG');
const outDir = env('OUT_DIR');
const reason = process.env.REASON || 'rolled back from the dashboard test';
const literal = process.env.EXPECT_TEXT || '';

async function run(page) {
  await signIn(page, baseUrl, token);

  step(`waiting for the card of ${flag}`);
  const card = cardOf(page, flag);
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
  if ((await card.locator('img, script, iframe').count()) > 0 || (await card.locator('svg:not(.chart-svg)').count()) > 0) {
    fail('markup from the API was rendered as HTML in the card');
  }
  await page.screenshot({ path: join(outDir, 'dashboard-running.png'), fullPage: true });

  step('rolling back through the confirmation dialog');
  await card.getByTestId('action-rollback').click();
  const title = (await page.getByTestId('confirm-title').textContent()).trim();
  if (!title.includes(flag)) fail(`the confirmation does not name the flag: ${title}`);
  await confirm(page, reason);

  step('waiting for the badge to read rolled_back');
  await badgeReads(page, flag, 'rolled_back');
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
}

try {
  await withPage({ baseUrl, outDir, name: 'dashboard', overallMs: 50_000 }, run);
} catch (err) {
  exitWith(err.message);
}
process.exit(0);

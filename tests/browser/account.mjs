// Registers, logs out, logs in and checks the account page in headless Chromium on a
// phone-sized screen; saves a screenshot. Usage: node account.mjs BASE_URL OUT_DIR
import { launch, run } from './harness.mjs';
import assert from 'node:assert/strict';

const [base, outDir] = process.argv.slice(2);
const browser = await launch();
const failures = [];
await run('browser', browser, failures, async () => {
  const page = await browser.newPage({ viewport: { width: 360, height: 780 } });
  // Chromium logs every non-2xx document as a console error; the form re-render with
  // field errors is a deliberate 422, so only that one is expected.
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (/status of 422/.test(m.text())) return;
    failures.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => failures.push(`page error: ${e}`));

  await page.goto(`${base}/register`);
  await page.fill('#f-username', 'browser.user');
  await page.fill('#f-password', 'short');
  await page.click('button[type=submit]');
  assert.match(await page.textContent('#f-password-error'), /at least 8 characters/);
  assert.equal(await page.inputValue('#f-username'), 'browser.user', 'input kept after an error');

  await page.fill('#f-password', 'browser-pass-1');
  await page.fill('#f-telegram_chat_id', '-100200300');
  await page.click('button[type=submit]');
  await page.waitForURL('**/account');
  assert.equal(await page.textContent('h1'), 'Your account');

  await page.click('text=Log out');
  await page.waitForURL('**/login');
  await page.fill('#f-username', 'browser.user');
  await page.fill('#f-password', 'browser-pass-1');
  // Keyboard submit, as a user would.
  await page.press('#f-password', 'Enter');
  await page.waitForURL('**/account');
  const text = await page.textContent('main');
  assert.ok(text.includes('browser.user'), 'account page names the user');
  assert.equal(await page.inputValue('#f-telegram_chat_id'), '-100200300');
  // Fits a 360 px screen: nothing wider than the viewport.
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `page is ${width}px wide on a 360px screen`);
  await page.screenshot({ path: `${outDir}/account.png`, fullPage: true });
}, () => [`screenshot: ${outDir}/account.png`]);

// "My alerts" in headless Chromium: search a place, pick it, set a constraint, and see
// the subscription's state turn into an alert when the (fake) weather is cold.
// Usage: node alerts.mjs BASE_URL OUT_DIR
import { launch, run } from './harness.mjs';
import assert from 'node:assert/strict';

const [base, outDir] = process.argv.slice(2);
const browser = await launch();
const failures = [];
await run('browser alerts', browser, failures, async () => {
  const page = await browser.newPage({ viewport: { width: 360, height: 900 } });
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 422/.test(m.text())) failures.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => failures.push(`page error: ${e}`));

  await page.goto(`${base}/register`);
  await page.fill('#f-username', 'weather.fan');
  await page.fill('#f-password', 'weather-pass-1');
  await page.click('button[type=submit]');
  await page.waitForURL('**/account');

  await page.click('nav >> text=My alerts');
  await page.waitForURL('**/alerts');
  assert.ok((await page.textContent('main')).includes('No alerts yet'));

  // Nothing chosen: a clear error, not a crash.
  await page.click('text=Add alert');
  assert.ok((await page.textContent('main')).includes('Search for a place'));

  await page.fill('#f-q', 'Catania');
  await page.press('#f-q', 'Enter');
  await page.waitForSelector('input[name=place]');
  assert.ok((await page.textContent('main')).includes('Catania, Sicily, Italy'));
  await page.fill('#f-label', 'Home');
  await page.fill('#f-min_temp', '5');
  await page.check('#f-rain');
  await page.click('text=Add alert');
  await page.waitForSelector('.alert.ok');
  assert.ok((await page.textContent('.alert.ok')).includes('Home'));

  // The poller fetches the new place within seconds; the fake says 3 °C.
  let state = '';
  for (let i = 0; i < 40; i++) {
    await page.goto(`${base}/alerts`);
    state = await page.textContent('.sub h2');
    if (state.includes('alert:')) break;
    await page.waitForTimeout(500);
  }
  assert.match(state, /alert: too cold/);
  assert.ok((await page.textContent('.sub')).includes('3 °C'));
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `page is ${width}px wide on a 360px screen`);
  await page.screenshot({ path: `${outDir}/alerts.png`, fullPage: true });

  await page.click('text=Delete “Home”');
  await page.waitForSelector('.alert.ok');
  assert.ok((await page.textContent('main')).includes('No alerts yet'));
}, () => [`screenshot: ${outDir}/alerts.png`]);

// Shared by the browser tests: headless Chromium (Debian's) with no background traffic
// off this machine, and one way to report the outcome.
import { chromium } from 'playwright-core';

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    // As root in a sandbox-less container.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// Runs `body`, closes the browser, prints `lines` and the result; exits 1 on failure.
export async function run(name, browser, failures, body, lines) {
  try {
    await body();
  } catch (e) {
    failures.push(String(e && e.stack || e));
  } finally {
    await browser.close();
  }
  if (failures.length) {
    console.error(failures.join('\n'));
    console.log(`${name}: 0 passed, 1 failed`);
    process.exit(1);
  }
  for (const l of lines()) console.log(l);
  console.log(`${name}: 1 passed, 0 failed`);
}

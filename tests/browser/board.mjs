// The whiteboard across two mesh nodes in headless Chromium: user 1 on node A draws,
// user 2 on node B sees the stroke (board state and pixels); user 2 clears, user 1's
// board empties; a third user joining late sees the drawing; node A is killed and user
// 1's page reconnects to B and keeps drawing. Screenshots of each step.
// Usage: node board.mjs HTTP_A HTTP_B PID_A OUT_DIR
import { launch, run } from './harness.mjs';
import assert from 'node:assert/strict';

const [baseA, baseB, pidA, outDir] = process.argv.slice(2);
const browser = await launch();
const failures = [];
let nodeAKilled = false;
const started = Date.now();
const timings = {};

async function user(base, name, viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // Once node A is gone, the browser reports the refused WebSocket attempts and the
    // page's refused requests for a fresh credential from its own (dead) node.
    if (nodeAKilled && /WebSocket|ERR_CONNECTION_REFUSED/.test(m.text())) return;
    failures.push(`console (${name}): ${m.text()}`);
  });
  page.on('pageerror', (e) => failures.push(`page error (${name}): ${e}`));
  await page.goto(`${base}/register`);
  await page.fill('#f-username', name);
  await page.fill('#f-password', `${name}-password-1`);
  await page.click('button[type=submit]');
  await page.waitForURL('**/account');
  const opened = Date.now();
  await page.goto(`${base}/board/demo`);
  await page.waitForFunction(() => window.meteomeshBoard && window.meteomeshBoard.connected
    && window.meteomeshBoard.node !== '');
  timings[`${name}_ready_to_draw_ms`] = Date.now() - opened;
  // What the page cost: the document and everything it loaded, as sent.
  timings.page_bytes = await page.evaluate(() => performance.getEntriesByType('navigation')
    .concat(performance.getEntriesByType('resource'))
    .reduce((sum, e) => sum + e.encodedBodySize, 0));
  return page;
}

const board = (page) => page.evaluate(() => ({
  epoch: window.meteomeshBoard.epoch,
  points: window.meteomeshBoard.points.size,
  node: window.meteomeshBoard.node,
  users: [...window.meteomeshBoard.users.keys()].sort(),
}));

// Draws a diagonal stroke across the middle of the canvas.
async function stroke(page, from, to) {
  const box = await page.locator('#canvas').boundingBox();
  const p = (f) => [box.x + box.width * f[0], box.y + box.height * f[1]];
  await page.mouse.move(...p(from));
  await page.mouse.down();
  for (let i = 1; i <= 10; i++) {
    const f = [from[0] + (to[0] - from[0]) * i / 10, from[1] + (to[1] - from[1]) * i / 10];
    await page.mouse.move(...p(f));
    await page.waitForTimeout(20);
  }
  await page.mouse.up();
}

// Whether the canvas has ink near a board-relative point.
const inked = (page, x, y) => page.evaluate(([x, y]) => {
  const c = document.getElementById('canvas');
  const px = c.getContext('2d').getImageData(Math.round(x * c.width) - 3, Math.round(y * c.height) - 3, 7, 7).data;
  for (let i = 3; i < px.length; i += 4) if (px[i] > 0) return true;
  return false;
}, [x, y]);

await run('browser board', browser, failures, async () => {
  const u1 = await user(baseA, 'board.one', { width: 1024, height: 768 });
  const u2 = await user(baseB, 'board.two', { width: 360, height: 740 });
  const nodeA = (await board(u1)).node;
  const nodeB = (await board(u2)).node;
  assert.notEqual(nodeA, nodeB, 'the two users are on different nodes');

  const t0 = Date.now();
  await stroke(u1, [0.2, 0.2], [0.8, 0.8]);
  await u2.waitForFunction(() => window.meteomeshBoard.points.size >= 5);
  timings.stroke_seen_on_other_node_ms = Date.now() - t0;
  assert.ok(await inked(u2, 0.5, 0.5), "user 2's canvas shows user 1's stroke");
  assert.ok(!(await inked(u2, 0.8, 0.2)), 'and nothing where nobody drew');
  await u1.screenshot({ path: `${outDir}/board-1-drawn.png` });
  await u2.screenshot({ path: `${outDir}/board-2-seen-on-b.png`, fullPage: true });

  await u2.click('#clear');
  await u1.waitForFunction(() => window.meteomeshBoard.points.size === 0 && window.meteomeshBoard.epoch === 1);
  assert.ok(!(await inked(u1, 0.5, 0.5)), "user 1's board is empty after user 2's clear");
  await u1.screenshot({ path: `${outDir}/board-3-cleared.png` });

  await stroke(u1, [0.2, 0.7], [0.7, 0.2]);
  await u2.waitForFunction(() => window.meteomeshBoard.points.size >= 5);
  const u3 = await user(baseA, 'board.three', { width: 800, height: 600 });
  await u3.waitForFunction(() => window.meteomeshBoard.points.size >= 5);
  assert.ok(await inked(u3, 0.45, 0.45), 'a late joiner sees the current drawing');
  assert.equal((await board(u3)).epoch, 1);
  await u3.screenshot({ path: `${outDir}/board-4-late-join.png` });

  // Node A dies: user 1's page moves to B and keeps drawing.
  nodeAKilled = true;
  process.kill(Number(pidA), 'SIGKILL');
  await u1.waitForFunction((a) => window.meteomeshBoard.connected && window.meteomeshBoard.node !== ''
    && window.meteomeshBoard.node !== a, nodeA, { timeout: 20000 });
  assert.equal((await board(u1)).node, nodeB);
  const before = (await board(u2)).points;
  await stroke(u1, [0.1, 0.9], [0.9, 0.9]);
  await u2.waitForFunction((n) => window.meteomeshBoard.points.size >= n + 5, before);
  assert.ok(await inked(u2, 0.5, 0.9), 'a stroke drawn after the failover reaches user 2');
  await u1.screenshot({ path: `${outDir}/board-5-after-failover.png` });
  const width = await u2.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `the board page is ${width}px wide on a 360px screen`);

  // The mesh status page on a phone (user 2 is node B's first account, an admin, so
  // the SLA page too): fits the screen, reachable from the keyboard.
  for (const [path, shot] of [['/mesh', 'mesh'], ['/sla', 'sla']]) {
    await u2.goto(`${baseB}${path}`);
    const w = await u2.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(w <= 360, `${path} is ${w}px wide on a 360px screen`);
    await u2.screenshot({ path: `${outDir}/${shot}.png`, fullPage: true });
  }
  assert.ok((await u2.textContent('main')).length > 0);
  await u2.goto(`${baseB}/mesh`);
  assert.match(await u2.textContent('caption'), /Nodes/);
  assert.match(await u2.textContent('table'), /this node/);
  await u2.keyboard.press('Tab');
  const focused = await u2.evaluate(() => document.activeElement && document.activeElement.tagName);
  assert.equal(focused, 'A', 'the first Tab reaches a navigation link');
}, () => [`board timings: ${JSON.stringify(timings)}; whole test ${Date.now() - started} ms`, `screenshots: ${outDir}/board-*.png`]);

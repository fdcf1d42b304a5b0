// history.test.mjs - the console's history in a real browser (Debian's chromium, playwright-
// core): a real collector holds 10^5 events spread over 10 minutes of past timestamps and 20
// agents (fed by tests/integration/test_dashboard.c, which runs this script); the agent view over
// that window shows exactly the counts the store answers (GET /api/v1/events/count), the same
// after a reload (the range is kept), the overview shows 20 agents at 1400x900 without
// scrolling, and the session and alert views render. Screenshots in $TT_TEST_OUT.
//
//   TT_HTTP=127.0.0.1:PORT TT_TOKEN=... TT_FROM_MS=... TT_TO_MS=... TT_EXPECT_EVENTS=100000 \
//   TT_EXPECT_TOOL_CALLS=... TT_EXPECT_RESPONSES=... node tests/browser/history.test.mjs

import {T, assert, launchChromium, poll, sleep} from './common.mjs';
import {mkdirSync} from 'node:fs';
import {join} from 'node:path';

const HTTP = process.env.TT_HTTP;
const TOKEN = process.env.TT_TOKEN;
const FROM = Number(process.env.TT_FROM_MS);
const TO = Number(process.env.TT_TO_MS);
const EXPECT = {
  events: Number(process.env.TT_EXPECT_EVENTS),
  responses: Number(process.env.TT_EXPECT_RESPONSES),
  toolCalls: Number(process.env.TT_EXPECT_TOOL_CALLS),
};
const OUT = process.env.TT_TEST_OUT || '/tmp/telltale-history-out';
mkdirSync(OUT, {recursive: true});

const log = (...a) => console.log('[history-test]', ...a);
const waitFor = (what, fn, ms = T(30000)) => poll(what, fn, ms);
async function http(path) {
  const res = await fetch(`http://${HTTP}${path}`, {headers: {Authorization: `Bearer ${TOKEN}`}});
  return res.json();
}

let browser = null;
let page = null;
const errors = [];
let passed = 0;
async function check(name, fn) {
  const t0 = Date.now();
  await fn();
  passed++;
  log(`ok ${name} (${Date.now() - t0} ms)`);
}
const shot = (name) => page.screenshot({path: join(OUT, `${name}.png`), fullPage: true, timeout: T(90000)});
const utcMinute = (ms) => new Date(ms).toISOString().slice(0, 16);

async function run() {
  assert(HTTP && TOKEN && FROM && TO, 'TT_HTTP, TT_TOKEN, TT_FROM_MS and TT_TO_MS are set');
  browser = await launchChromium();
  const context = await browser.newContext({viewport: {width: 1400, height: 900}});
  page = await context.newPage();
  const foreign = [];
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.stack || e.message}`));
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.protocol !== 'data:' && u.host !== HTTP) foreign.push(r.url());
  });

  // The store's own answer for the window: what the page must show.
  const store = await http(`/api/v1/events/count?agent=hist&since=${FROM * 1e6}&until=${TO * 1e6 - 1}`);
  assert(store.count === EXPECT.events, `the store holds ${store.count} events, ${EXPECT.events} were fed`);

  await check('the agent view shows the counts of a custom range as the store holds them', async () => {
    await page.goto(`http://${HTTP}/#token=${encodeURIComponent(TOKEN)}&/agent/hist`);
    await waitFor('the range control', () => page.locator('#range-apply').count());
    await page.fill('#range-from', utcMinute(FROM));
    await page.fill('#range-to', utcMinute(TO));
    await page.click('#range-apply');
    await waitFor('the window in the agent view', async () =>
      Number(await page.getAttribute('#agent-totals', 'data-from')) === FROM * 1e6 &&
      Number(await page.getAttribute('#agent-totals', 'data-to')) === TO * 1e6);
    const events = Number(await page.getAttribute('#agent-totals', 'data-events'));
    assert(events === store.count, `the page shows ${events} events, the store ${store.count}`);
    const responses = Number(await page.getAttribute('#agent-totals', 'data-responses'));
    assert(responses === EXPECT.responses, `responses ${responses}, fed ${EXPECT.responses}`);
    const calls = await page.locator('#tools td.calls').allTextContents();
    const sum = calls.reduce((x, y) => x + Number(y), 0);
    assert(calls.length === 2 && sum === EXPECT.toolCalls, `tool calls ${calls} (fed ${EXPECT.toolCalls})`);
    await waitFor('points on the confidence chart', async () =>
      Number(await page.locator('.chart .uplot').first().getAttribute('data-points')) > 100);
    // The chart's own data: the sum of events/s x bucket width is the store's count.
    const step = Number(await page.getAttribute('#agent-totals', 'data-step'));
    assert(step === 2, `10 minutes in 2 s buckets, got ${step}`);
    await shot('history-agent');
  });

  await check('after a reload the same range and numbers come back from the store', async () => {
    await page.reload();
    await waitFor('the label of the kept range', async () =>
      /UTC/.test(await page.textContent('#range-label')));
    await waitFor('the totals after the reload', async () =>
      Number(await page.getAttribute('#agent-totals', 'data-events')) === store.count);
    await shot('history-agent-reloaded');
  });

  await check('the overview shows 20 agents at 1400x900 without scrolling, with their figures', async () => {
    await page.goto(`http://${HTTP}/#/`);
    await waitFor('20 agent rows and hist', async () =>
      (await page.locator('tr.agent-row').count()) >= 21 &&
      (await page.locator('tr.agent-row[data-agent="hist"] td.events').textContent()) === String(store.count));
    const bottom = await page.evaluate(() => {
      const rows = [...document.querySelectorAll('tr.agent-row')];
      return rows.slice(0, 20).reduce((m, r) => Math.max(m, r.getBoundingClientRect().bottom), 0);
    });
    assert(bottom <= 900, `the 20th agent row ends at ${bottom} px`);
    const conf = await page.locator('tr.agent-row[data-agent="hist"] .conf-num').textContent();
    assert(Number(conf) > 0 && Number(conf) < 1, `confidence shown as a number: "${conf}"`);
    // Sorting: by events, descending, hist (the most events) comes first.
    await page.click('th.col-events');
    await waitFor('sorted by events', async () =>
      (await page.locator('tr.agent-row').first().getAttribute('data-agent')) === 'hist');
    await page.fill('#agent-filter', 'agent-0');
    await waitFor('the filter', async () => (await page.locator('tr.agent-row').count()) === 10);
    await page.fill('#agent-filter', '');
    await waitFor('every row back', async () => (await page.locator('tr.agent-row').count()) >= 21);
    const drawn = await page.locator('tr.agent-row[data-agent="hist"] canvas.spark').getAttribute('data-max');
    assert(Number(drawn) > 0 && Number(drawn) < 1, `the sparkline's scale tops at ${drawn}`);
    await shot('history-overview');
  });

  await check('the session and alerts views render from the store', async () => {
    await page.goto(`http://${HTTP}/#/session/hist-3`);
    await waitFor('the session steps', () => page.locator('#tree .step').count());
    // The timeline holds every step but renders only the rows in view.
    await waitFor('the timeline', async () => Number(await page.getAttribute('#waterfall', 'data-total')) === 100);
    const rendered = await page.locator('#waterfall .wf-row').count();
    assert(rendered > 5 && rendered < 60, `${rendered} timeline rows in the DOM for 100 steps`);
    await page.locator('#waterfall').evaluate((e) => { e.scrollTop = 1600; });
    await waitFor('rows further down drawn', async () =>
      (await page.locator('#waterfall .wf-row').evaluateAll((rs) => rs.some((r) => parseInt(r.style.top, 10) >= 1600))));
    await shot('history-session');
    await page.goto(`http://${HTTP}/#/alerts`);
    await waitFor('the alerts table', () => page.locator('table.alerts tbody tr').count());
    await shot('history-alerts');
  });

  await check('no request off the collector, no page error', async () => {
    assert(foreign.length === 0, `requests elsewhere: ${foreign.join(', ')}`);
    assert(errors.length === 0, `page errors: ${errors.join('; ')}`);
  });
}

let status = 0;
try {
  await run();
  log(`${passed} checks passed`);
} catch (e) {
  status = 1;
  console.error(`[history-test] FAILED: ${e.stack || e}`);
  if (errors.length) console.error(`[history-test] page errors: ${errors.join('; ')}`);
  if (page) await page.screenshot({path: join(OUT, 'failure.png'), fullPage: true}).catch(() => {});
} finally {
  if (browser) await browser.close().catch(() => {});
}
process.exit(status);

// comply.test.mjs - compliance decisions in the console's session view, in a real browser
// (Debian's chromium, playwright-core): the demo agent drifted and attempted a DELETE without
// WHERE, which its policy blocked before SQLite ran it (tests/integration/test_comply_console.c
// runs the agent against a real collector, then this script). The session view lists the
// decision (blocked, its rule and why) and marks the blocked step in the execution path.
//
//   TT_HTTP=127.0.0.1:PORT TT_TOKEN=... TT_SESSION=... TT_STEP=... \
//   node tests/browser/comply.test.mjs

import {T, assert, launchChromium, poll, sleep} from './common.mjs';
import {mkdirSync} from 'node:fs';
import {join} from 'node:path';

const HTTP = process.env.TT_HTTP;
const TOKEN = process.env.TT_TOKEN;
const SESSION = process.env.TT_SESSION;
const STEP = process.env.TT_STEP; // the blocked step's id, 16 hex digits
const OUT = process.env.TT_TEST_OUT || '/tmp/telltale-comply-out';
mkdirSync(OUT, {recursive: true});

const log = (...a) => console.log('[comply-test]', ...a);
const waitFor = (what, fn, ms = T(30000)) => poll(what, fn, ms);

let browser = null;
let page = null;
const errors = [];
let status = 0;
try {
  assert(HTTP && TOKEN && SESSION && STEP, 'TT_HTTP, TT_TOKEN, TT_SESSION and TT_STEP are set');
  browser = await launchChromium();
  page = await (await browser.newContext({viewport: {width: 1400, height: 900}})).newPage();
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.stack || e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) errors.push(`console.error: ${m.text()}`);
  });
  await page.goto(`http://${HTTP}/#token=${encodeURIComponent(TOKEN)}&/session/${encodeURIComponent(SESSION)}`);

  // The decision, listed with its verdict, rule and why.
  const item = page.locator('#decisions li.decision-block');
  await waitFor('the blocked decision in the session view', () => item.count());
  const text = await item.first().textContent();
  log('decision:', text);
  assert(/blocked/.test(text) && !/collector/.test(text), `the agent blocked it: ${text}`);
  assert(text.includes('retrieval sql'), `the step named: ${text}`);
  assert(text.includes('rule destructive_sql'), `the rule named: ${text}`);
  assert(text.includes('DELETE without WHERE'), `why: ${text}`);
  assert(await item.first().getAttribute('data-step') === STEP, 'the decision names the blocked step');

  // The blocked step in the execution path: marked, with the statement it did not run.
  const step = page.locator(`#tree li.step[data-step="${STEP}"]`);
  await waitFor('the blocked step marked in the execution path', async () =>
    (await step.count()) && (await step.getAttribute('class')).includes('step-blocked'));
  const query = await step.locator(':scope > .query').textContent();
  assert(query === 'DELETE FROM licenses_archived', `the step's statement: ${query}`);
  const mark = await step.locator(':scope > .comply-block').textContent();
  assert(mark.includes('blocked') && mark.includes('rule destructive_sql') &&
    mark.includes('DELETE without WHERE'), `the mark on the step: ${mark}`);
  const st = await step.locator(':scope > .st').textContent();
  assert(st === 'cancelled', `the blocked step's status: ${st}`);
  // The mark is visible, not just present.
  assert(await step.locator(':scope > .comply-block').isVisible(), 'the mark is visible');
  await page.screenshot({path: join(OUT, 'session-blocked.png'), fullPage: true, timeout: T(90000)});
  assert(!errors.length, `no page errors: ${errors.join('; ')}`);
  log('ok: the blocked statement is visible in the session view');
} catch (e) {
  status = 1;
  console.error('[comply-test] FAILED:', e.message);
  if (errors.length) console.error(errors.join('\n'));
  if (page) await page.screenshot({path: join(OUT, 'failure.png'), fullPage: true}).catch(() => {});
} finally {
  if (browser) await browser.close();
}
process.exit(status);

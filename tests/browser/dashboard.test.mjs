// dashboard.test.mjs - the dashboard end to end in a real browser: Debian's chromium driven by
// playwright-core (headless, no sandbox, background networking off) against a real
// `telltale serve` and a real agent (tests/drivers/dashboard_feeder.c). Run by the C test
// dashboard_browser_shows_live_agents_sessions_and_hostile_text (tests/integration/
// test_dashboard.c), which counts it in `make test`; alone:
//
//   TT_BIN=build/telltale TT_FEEDER=build/tests/dashboard_feeder TT_TEST_OUT=/tmp/out \
//     TT_TEST_TMP=/tmp/tmp node tests/browser/dashboard.test.mjs
//
// Screenshots go to $TT_TEST_OUT. Exit status 0: every check passed; 1: one failed (named on
// stderr, with failure.png).

import {T, assert, launchChromium, poll, sleep} from './common.mjs';
import {spawn} from 'node:child_process';
import {mkdirSync, readFileSync, existsSync, rmSync, writeFileSync} from 'node:fs';
import {join} from 'node:path';

const BIN = process.env.TT_BIN || 'build/telltale';
const FEEDER = process.env.TT_FEEDER || 'build/tests/dashboard_feeder';
const OUT = process.env.TT_TEST_OUT || '/tmp/telltale-browser-out';
const TMP = process.env.TT_TEST_TMP || '/tmp/telltale-browser-tmp';

mkdirSync(OUT, {recursive: true});
mkdirSync(TMP, {recursive: true});

const children = [];
let browser = null;
let page = null;
let passed = 0;

function log(...a) {
  console.log('[browser-test]', ...a);
}

async function check(name, fn) {
  const t0 = Date.now();
  await fn();
  passed++;
  log(`ok ${name} (${Date.now() - t0} ms)`);
}



const waitFor = (what, fn, ms = T(15000)) => poll(what, fn, ms);

// --- the collector and the agent -------------------------------------------------------------

const dataDir = join(TMP, 'data');
const sock = join(TMP, 'ingest.sock');
const ready = join(TMP, 'ready.json');
let serve = null;
let httpAddr = '127.0.0.1:0';

async function startServe(extra = []) {
  rmSync(ready, {force: true});
  mkdirSync(dataDir, {recursive: true, mode: 0o700});
  const args = ['serve', '--data', dataDir, '--listen', `unix:${sock}`, '--http', httpAddr,
    '--ready-file', ready, '--operator-token-file', tokenFile, ...extra];
  serve = spawn(BIN, args, {stdio: ['ignore', 'inherit', 'inherit']});
  children.push(serve);
  const info = await waitFor('the collector to be ready', () =>
    existsSync(ready) && JSON.parse(readFileSync(ready, 'utf8')));
  httpAddr = info.http;
  return info;
}

// SIGTERM; resolves to the exit status (0 for a clean stop; a sanitizer report makes it not 0).
function stopServe() {
  return new Promise((resolve) => {
    if (!serve || serve.exitCode !== null) return resolve(serve ? serve.exitCode : 0);
    serve.once('exit', (code, sig) => resolve(sig ? 128 : code));
    serve.kill('SIGTERM');
  });
}

function startFeeder(agent, seconds) {
  const p = spawn(FEEDER, [`unix:${sock}`, agent, String(seconds)], {stdio: ['ignore', 'pipe', 'inherit']});
  p.out = '';
  p.stdout.on('data', (d) => {
    p.out += d;
  });
  children.push(p);
  return p;
}

const TOKEN = 'browser-test-operator-token';
const tokenFile = join(TMP, 'operator.token');
writeFileSync(tokenFile, `${TOKEN}\n`, {mode: 0o600});

async function http(path, opts = {}) {
  const headers = Object.assign({Authorization: `Bearer ${TOKEN}`}, opts.headers || {});
  const res = await fetch(`http://${httpAddr}${path}`, Object.assign({}, opts, {headers}));
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  return {status: res.status, body, headers: res.headers};
}

// A screenshot is a record, not a check: a full page (a long session's tree is thousands of
// pixels tall) can take Chromium more than playwright's default 30 s on a loaded machine.
async function shot(name) {
  await page.screenshot({path: join(OUT, `${name}.png`), fullPage: true, timeout: T(90000)});
}

const num = async (sel) => Number((await page.locator(sel).first().textContent()) || 0);

// --- the test --------------------------------------------------------------------------------

async function run() {
  await startServe();
  log(`collector on http://${httpAddr}/`);
  // The agent streams until the halt check stops it (or the end kills it): checks late in the
  // run (the reconnection) need its events, however long a loaded machine makes the run.
  const feeder = startFeeder('browser-agent', 600);

  browser = await launchChromium();
  const context = await browser.newContext({viewport: {width: 1280, height: 900}});
  page = await context.newPage();
  const errors = [];
  const foreign = [];
  const dialogs = [];
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    // The browser's own network messages while the collector is down are not page errors.
    if (/Failed to load resource|net::ERR_/.test(text)) return;
    errors.push(`console.error: ${text}`);
  });
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.protocol !== 'data:' && u.host !== httpAddr) foreign.push(r.url());
  });
  page.on('dialog', async (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    await d.dismiss();
  });

  const CONTENT_CSP = /script-src 'self'/;
  await check('GET / serves the page with a strict CSP', async () => {
    const res = await page.goto(`http://${httpAddr}/`);
    assert(res.status() === 200, `status ${res.status()}`);
    const h = res.headers();
    assert(CONTENT_CSP.test(h['content-security-policy'] || ''), 'CSP header');
    assert(!/unsafe-inline|unsafe-eval/.test(h['content-security-policy']), 'no unsafe CSP');
    assert(h['x-content-type-options'] === 'nosniff', 'nosniff');
  });

  await check('the page asks for the operator token once and keeps it for the tab', async () => {
    const unauth = await fetch(`http://${httpAddr}/api/v1/agents`);
    assert(unauth.status === 401, `/api/v1/agents without a token: ${unauth.status}`);
    await waitFor('the token dialog', () => page.locator('#token-dialog[open]').count());
    await page.fill('#token-input', TOKEN);
    await page.click('#token-ok');
    await waitFor('the dialog closed', async () => (await page.locator('#token-dialog[open]').count()) === 0);
    // The dialog's close event (which stores the token) is a task queued after the dialog
    // closes, so the storage is awaited, not read at once.
    await waitFor('the token in sessionStorage', async () =>
      (await page.evaluate(() => sessionStorage.getItem('telltale.operator_token'))) === TOKEN);
  });

  await check('live updates arrive on the overview', async () => {
    await waitFor('the live badge', async () => (await page.textContent('#conn')) === 'live');
    const first = await waitFor('a first event', async () => (await num('#total-events')) > 0 && num('#total-events'));
    await waitFor('more events', async () => (await num('#total-events')) > first + 10);
    await waitFor('the agent row', () => page.locator('tr.agent-row[data-agent="browser-agent"] .status-live').count());
    await waitFor('an event rate above zero', async () =>
      Number(await page.locator('tr.agent-row[data-agent="browser-agent"] .rate').textContent()) > 0);
    await shot('overview');
  });

  await check('a burst of 20,000 events reaches the page without freezing it', async () => {
    await page.evaluate(() => {
      const g = {max: 0, last: performance.now(), run: true};
      window.__frames = g;
      const f = () => {
        const n = performance.now();
        g.max = Math.max(g.max, n - g.last);
        g.last = n;
        if (g.run) requestAnimationFrame(f);
      };
      requestAnimationFrame(f);
    });
    const N = 20000;
    const before = await num('#total-events');
    const t0 = Date.now();
    const emit = spawn(BIN, ['emit', '--endpoint', `unix:${sock}`, '--agent', 'burst-agent'],
      {stdio: ['pipe', 'ignore', 'inherit']});
    children.push(emit);
    const lines = [];
    for (let i = 0; i < N; i++) lines.push(JSON.stringify({kind: 'log', session: 'burst', message: `burst ${i}`}));
    emit.stdin.end(lines.join('\n') + '\n');
    await waitFor('every burst event on the page', async () => (await num('#total-events')) >= before + N, T(60000));
    const secs = (Date.now() - t0) / 1000;
    const gap = await page.evaluate(() => {
      window.__frames.run = false;
      return window.__frames.max;
    });
    log(`burst: ${N} events shown in ${secs.toFixed(2)} s (${(N / secs).toFixed(0)} events/s), ` +
      `longest gap between frames ${gap.toFixed(0)} ms`);
    assert(gap < T(1000), `the page froze for ${gap.toFixed(0)} ms`);
    const rendered = await page.locator('.feed tbody tr').count();
    assert(rendered <= 40, `${rendered} feed rows: the feed is bounded`);
  });

  await check('a hostile log message renders as text', async () => {
    await waitFor('the hostile log in the feed', async () =>
      (await page.locator('.feed').innerText()).includes('<script>alert(1)</script>'));
    const injected = await page.evaluate(() => document.querySelectorAll('main script, main img, main b').length);
    assert(injected === 0, `${injected} elements injected from telemetry`);
  });

  await check('a session shows its execution path with the tool call and its query', async () => {
    await page.goto(`http://${httpAddr}/#/session/feed-1`);
    await waitFor('a tool step', () => page.locator('#tree .step-tool .query').count());
    const q = await page.locator('#tree .step-tool .query').first().textContent();
    assert(/SELECT name FROM products|weather in Lyon|17 \* 23/.test(q), `query text "${q}"`);
    const nested = await page.locator('#tree .step-reasoning .step-tool').count();
    assert(nested > 0, 'the tool call is nested under its reasoning step');
    const lat = await page.locator('#tree .step-tool .lat').first().textContent();
    assert(/s$/.test(lat), `latency "${lat}"`);
    // The session's logs, in its view.
    await waitFor('the session logs', () => page.locator('#session-logs li').count());
    const logText = await page.locator('#session-logs li').first().textContent();
    assert(/tool call done/.test(logText) && /tool=/.test(logText), `log line "${logText}"`);
    await shot('session');
  });

  await check('a response shows its tokens shaded by confidence, with details on hover', async () => {
    // The view redraws its responses as new ones arrive: read the shades of tokens that are
    // in the page when read (a replaced token has no computed style), again until they are.
    const shades = await waitFor('shaded tokens', async () => {
      const got = await page.locator('#responses .tok').evaluateAll((els) =>
        els.filter((e) => e.isConnected).map((e) => ({p: Number(e.dataset.p), bg: getComputedStyle(e).backgroundColor})));
      return got.length >= 24 && got.every((x) => x.bg) ? got : null;
    });
    const unsure = shades.filter((x) => x.p < 0.5);
    const sure = shades.filter((x) => x.p > 0.9);
    assert(unsure.length > 0 && sure.length > 0, 'both sure and unsure tokens');
    const alpha = (bg) => Number((/rgba\([^)]*,\s*([0-9.]+)\)/.exec(bg) || [0, 0])[1]);
    assert(alpha(unsure[0].bg) > alpha(sure[0].bg) + 0.3,
      `an unsure token is shaded darker (${unsure[0].bg} vs ${sure[0].bg})`);
    const verdict = await page.locator('#responses .verdict').first().textContent();
    assert(verdict === 'flag', `verdict ${verdict}`);
    const reason = await page.locator('#responses .reason').first().textContent();
    assert(/p=.*< 0\.2/.test(reason), `reason "${reason}"`);
    const i = shades.findIndex((x) => x.p < 0.5);
    await page.locator('#responses .response').first().locator('.tok').nth(i).hover();
    await waitFor('the token tooltip', () => page.locator('#tip').isVisible());
    const tip = await page.textContent('#tip');
    assert(/log-prob = -/.test(tip) && /entropy = /.test(tip) && /top-k/.test(tip), `tooltip "${tip}"`);
    // The tokens show as words (their text), and the response's whole text is shown.
    const words = await page.locator('#responses .response').first().locator('.tok').allTextContents();
    assert(words.length && words.every((w) => /^ ?w\d+$/.test(w)), `token words ${words.slice(0, 5)}`);
    const full = await page.locator('#responses .response-text').first().textContent();
    assert(full === words.join(''), `response text "${full.slice(0, 60)}"`);
    await shot('response-tokens');
  });

  await check('a tool query with HTML and ANSI codes renders as text without the codes', async () => {
    await page.goto(`http://${httpAddr}/#/session/feed-hostile`);
    await waitFor('the hostile tool step', () => page.locator('#tree .step-tool .query').count());
    const q = await page.locator('#tree .step-tool .query').first().textContent();
    assert(q === '<img src=x onerror=alert(2)>RED SELECT 1', `query rendered as ${JSON.stringify(q)}`);
    const name = await page.locator('#tree .step-tool .name').first().textContent();
    assert(name === '<b>html_tool</b>', `tool name rendered as ${JSON.stringify(name)}`);
    const injected = await page.evaluate(() => document.querySelectorAll('main img, main b, main script').length);
    assert(injected === 0, `${injected} elements injected from telemetry`);
    await shot('session-hostile');
  });

  await check('the agent view draws live confidence and latency charts', async () => {
    await page.goto(`http://${httpAddr}/#/agent/browser-agent`);
    await waitFor('two charts', async () => (await page.locator('.chart canvas').count()) >= 2);
    await waitFor('a session in the list', () => page.locator('.sessions a').count());
    await sleep(T(600));
    await shot('agent');
  });

  await check('the alerts feed shows an alert and acknowledges it', async () => {
    await page.goto(`http://${httpAddr}/#/alerts`);
    await waitFor('an open alert', () => page.locator('table.alerts tr.open button.ack').count(), T(30000));
    await shot('alerts');
    // One row per incident: its repeats update the row (count), they add none.
    const rows = await page.locator('table.alerts tbody tr[data-incident]').evaluateAll((rs) =>
      rs.map((r) => ({id: r.dataset.incident, count: Number(r.children[6].textContent)})));
    const ids = rows.map((r) => r.id);
    assert(new Set(ids).size === ids.length, `an incident on two rows: ${ids.join(', ')}`);
    const inc = await http('/api/v1/incidents?limit=1000');
    const known = new Map((inc.body.incidents || []).map((i) => [String(i.id), i]));
    for (const r of rows) {
      const i = known.get(r.id);
      assert(i, `row of incident ${r.id} that the collector does not list`);
      assert(r.count >= 1 && r.count <= i.count, `incident ${r.id}: row count ${r.count}, collector ${i.count}`);
    }
    const before = await page.locator('table.alerts tr.acked').count();
    await page.locator('table.alerts tr.open button.ack').first().click();
    await waitFor('the alert acknowledged', async () =>
      (await page.locator('table.alerts tr.acked').count()) > before);
    const listed = await http('/api/v1/alerts');
    const alerts = listed.body.alerts || [];
    assert(alerts.some((a) => a.state === 'acked'), 'the collector has the alert acknowledged');
    const agentOf = alerts.find((a) => a.agent === 'browser-agent');
    if (agentOf) {
      await page.goto(`http://${httpAddr}/#/agent/browser-agent`);
      await waitFor('an alert marker on the confidence chart', async () =>
        Number(await page.locator('.chart .uplot').first().getAttribute('data-markers')) > 0);
    }
  });

  await check('the page reconnects by itself after a collector restart', async () => {
    await page.goto(`http://${httpAddr}/#/`);
    await waitFor('live', async () => (await page.textContent('#conn')) === 'live');
    const code = await stopServe();
    assert(code === 0, `the collector exited with status ${code}`);
    await waitFor('the unreachable banner', async () => page.locator('#banner').isVisible() &&
      /unreachable/.test(await page.textContent('#banner')));
    await shot('unreachable');
    await startServe();
    await waitFor('live again', async () => (await page.textContent('#conn')) === 'live', T(20000));
    const before = await num('#total-events');
    await waitFor('events after the restart', async () => (await num('#total-events')) > before + 5, T(20000));
    assert(!(await page.locator('#banner').isVisible()), 'the banner is gone');
  });

  await check('the halt button stops the agent', async () => {
    await page.goto(`http://${httpAddr}/#/session/feed-2`);
    await waitFor('the session page', () => page.locator('#tree .step').count());
    await page.click('#halt');
    await waitFor('the halt confirmation question', () => page.locator('#halt-ask:not([hidden])').count());
    assert(!/Halt sent/.test(await page.textContent('#halt-msg')), 'nothing sent before the confirmation');
    await page.click('#halt-confirm');
    await waitFor('the halt confirmation', async () => /Halt sent|Halted/.test(await page.textContent('#halt-msg')));
    await waitFor('the agent to stop', () => feeder.exitCode !== null, T(15000));
    assert(feeder.exitCode === 0 && /halted feed-2/.test(feeder.out), `feeder said "${feeder.out}"`);
    await waitFor('the session marked halted', () => page.locator('#halt-msg.status-halted').count());
    const stopped = await http('/api/v1/events/count?agent=browser-agent');
    await sleep(T(1000));
    const later = await http('/api/v1/events/count?agent=browser-agent');
    assert(later.body.count === stopped.body.count, 'no event after the halt');
    await page.goto(`http://${httpAddr}/#/`);
    await waitFor('the agent shown halted', () =>
      page.locator('tr.agent-row[data-agent="browser-agent"] .status-halted').count());
    await shot('halted');
  });

  await check('the page made no request off the collector and raised no error', async () => {
    assert(foreign.length === 0, `requests elsewhere: ${foreign.join(', ')}`);
    assert(dialogs.length === 0, `dialogs opened: ${dialogs.join('; ')}`);
    assert(errors.length === 0, `page errors: ${errors.join('; ')}`);
  });

  feeder.kill('SIGTERM');
  await check('the collector stops cleanly', async () => {
    const code = await stopServe();
    assert(code === 0, `the collector exited with status ${code}`);
  });
}

let status = 0;
try {
  await run();
  log(`${passed} checks passed`);
} catch (e) {
  status = 1;
  console.error(`[browser-test] FAILED: ${e.stack || e}`);
  if (page) await page.screenshot({path: join(OUT, 'failure.png'), fullPage: true}).catch(() => {});
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
}
process.exit(status);

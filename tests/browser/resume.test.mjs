// resume.test.mjs - halt and resume from the session view in a real browser: Debian's chromium
// driven by playwright-core against a real `telltale serve` and a real agent
// (tests/drivers/dashboard_feeder.c in its "stay" mode: a halted session's turns wait, with a
// one-token probe response, until a probe passes). The halt asks for a confirmation, the page
// shows the session halted and a resume button; the resume lets the agent's steps in the session
// proceed again, in the store and on the page. Run by the C test
// dashboard_browser_halts_and_resumes_a_live_session (tests/integration/test_dashboard.c); alone:
//
//   TT_BIN=build/telltale TT_FEEDER=build/tests/dashboard_feeder TT_TEST_OUT=/tmp/out \
//     TT_TEST_TMP=/tmp/tmp node tests/browser/resume.test.mjs
//
// Exit status 0: every check passed; 1: one failed (named on stderr, with failure.png).

import {T, assert, launchChromium, poll, sleep} from './common.mjs';
import {spawn} from 'node:child_process';
import {mkdirSync, readFileSync, existsSync, rmSync, writeFileSync} from 'node:fs';
import {join} from 'node:path';

const BIN = process.env.TT_BIN || 'build/telltale';
const FEEDER = process.env.TT_FEEDER || 'build/tests/dashboard_feeder';
const OUT = process.env.TT_TEST_OUT || '/tmp/telltale-browser-out';
const TMP = process.env.TT_TEST_TMP || '/tmp/telltale-browser-tmp';
const SESSION = 'feed-2';

mkdirSync(OUT, {recursive: true});
mkdirSync(TMP, {recursive: true});

const children = [];
let browser = null;
let page = null;
let passed = 0;

const log = (...a) => console.log('[resume-test]', ...a);


async function check(name, fn) {
  const t0 = Date.now();
  await fn();
  passed++;
  log(`ok ${name} (${Date.now() - t0} ms)`);
}

const waitFor = (what, fn, ms = T(15000)) => poll(what, fn, ms);

const TOKEN = 'resume-test-operator-token';
const tokenFile = join(TMP, 'operator.token');
writeFileSync(tokenFile, `${TOKEN}\n`, {mode: 0o600});
const dataDir = join(TMP, 'data');
const sock = join(TMP, 'ingest.sock');
const ready = join(TMP, 'ready.json');
let httpAddr = '';
let serve = null;

async function http(path) {
  const res = await fetch(`http://${httpAddr}${path}`, {headers: {Authorization: `Bearer ${TOKEN}`}});
  return res.json();
}

const stepEnds = async () => (await http(`/api/v1/events/count?session=${SESSION}&kind=step_end`)).count;

async function run() {
  rmSync(ready, {force: true});
  mkdirSync(dataDir, {recursive: true, mode: 0o700});
  serve = spawn(BIN, ['serve', '--data', dataDir, '--listen', `unix:${sock}`, '--http', '127.0.0.1:0',
    '--ready-file', ready, '--operator-token-file', tokenFile], {stdio: ['ignore', 'inherit', 'inherit']});
  children.push(serve);
  httpAddr = (await waitFor('the collector to be ready', () =>
    existsSync(ready) && JSON.parse(readFileSync(ready, 'utf8')))).http;
  const feeder = spawn(FEEDER, [`unix:${sock}`, 'resume-agent', '600', 'stay'], {stdio: ['ignore', 'pipe', 'inherit']});
  feeder.out = '';
  feeder.stdout.on('data', (d) => {
    feeder.out += d;
  });
  children.push(feeder);

  browser = await launchChromium();
  page = await (await browser.newContext({viewport: {width: 1280, height: 900}})).newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  page.on('console', (m) => {
    // A failed load is named by the response handler below, with its address.
    if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) errors.push(`console.error: ${m.text()}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) errors.push(`${r.status()} for ${r.url()}`);
  });
  page.on('dialog', (d) => {
    errors.push(`a dialog opened: ${d.message()}`);
    d.dismiss();
  });

  await check('the session view shows the live session with a halt button and no resume', async () => {
    await waitFor('the agent streaming in the session', async () => (await stepEnds()) > 0);
    await page.goto(`http://${httpAddr}/#token=${encodeURIComponent(TOKEN)}&/session/${SESSION}`);
    await waitFor('the session page', () => page.locator('#tree .step').count());
    assert(await page.locator('#halt').isVisible(), 'the halt button');
    assert(!(await page.locator('#resume').isVisible()), 'no resume button while running');
  });

  await check('halting asks for a confirmation, then the agent is halted', async () => {
    await page.click('#halt');
    await waitFor('the confirmation question', () => page.locator('#halt-ask:not([hidden])').count());
    await page.click('#halt-cancel');
    assert(await page.locator('#halt-ask[hidden]').count() === 1, 'the question closes on cancel');
    await sleep(T(300));
    assert(!/halted/.test(feeder.out), 'nothing was sent on cancel');
    await page.click('#halt');
    await page.click('#halt-confirm');
    await waitFor('the halt sent', async () => /Halt sent|Halted/.test(await page.textContent('#halt-msg')));
    await waitFor('the agent to see the halt', () => feeder.out.includes(`halted ${SESSION}`), T(15000));
    await waitFor('the session marked halted', () => page.locator('#halt-msg.status-halted').count());
    await waitFor('the resume button', () => page.locator('#resume').isVisible());
    await page.screenshot({path: join(OUT, 'resume-halted.png'), timeout: T(90000)});
  });

  await check('after a reload the session still shows halted, from the store', async () => {
    // The agent is stopped meanwhile, so no live event can tell the page: only the store can.
    feeder.kill('SIGSTOP');
    try {
      await page.reload();
      await waitFor('the session page', () => page.locator('#tree .step').count());
      await waitFor('the session marked halted', () => page.locator('#halt-msg.status-halted').count());
      const msg = await page.textContent('#halt-msg');
      assert(/Halted: operator halt: operator halt from the dashboard/.test(msg), msg);
      await waitFor('the resume button', () => page.locator('#resume').isVisible());
    } finally {
      feeder.kill('SIGCONT');
    }
  });

  let halted = 0;
  await check('while halted, the agent takes no step in the session', async () => {
    await sleep(T(1000)); // the steps of the turn before the halt settle into the store
    halted = await stepEnds();
    await sleep(T(1500));
    const later = await stepEnds();
    assert(later === halted, `step ends went from ${halted} to ${later} while halted`);
    assert(!feeder.out.includes(`resumed ${SESSION}`), 'not resumed yet');
  });

  await check('resume lets the agent\'s steps proceed again, on the page too', async () => {
    const lastStep = () => page.locator('#tree > li.step').last().getAttribute('data-step');
    const shown = await lastStep();
    // The page's own message is soon replaced (a probe the order overtook may still show a halt,
    // then a passing response shows the session running): the answer itself is checked.
    const answered = page.waitForResponse((r) => r.url().endsWith(`/api/v1/sessions/${SESSION}/resume`),
      {timeout: T(15000)});
    await page.click('#resume');
    const res = await answered;
    const body = await res.json();
    assert(res.status() === 202 && body.connections === 1 && body.order === 'resume',
      `resume answered ${res.status()} ${JSON.stringify(body)}`);
    await waitFor('the agent to resume', () => feeder.out.includes(`resumed ${SESSION}`), T(15000));
    await waitFor('the page to show the session running', async () =>
      /Resume sent to 1 agent connection|Running/.test(await page.textContent('#halt-msg')));
    await waitFor('new steps of the session in the store', async () => (await stepEnds()) > halted + 2);
    await waitFor('new steps on the page', async () => (await lastStep()) !== shown);
    // The view re-reads the store every 2 s: a halted response stored just before the resume
    // may show for one more read, then the passing ones take over.
    await waitFor('the session no longer shown halted', async () =>
      (await page.locator('#halt-msg.status-halted').count()) === 0 && !(await page.locator('#resume').isVisible()));
    assert(feeder.exitCode === null, 'the agent is still running');
    await page.screenshot({path: join(OUT, 'resume-resumed.png'), timeout: T(90000)});
  });

  await check('the page raised no error', async () => {
    assert(errors.length === 0, errors.join('; '));
  });

  feeder.kill('SIGTERM');
  await check('the collector stops cleanly', async () => {
    const code = await new Promise((resolve) => {
      serve.once('exit', (c, sig) => resolve(sig ? 128 : c));
      serve.kill('SIGTERM');
    });
    assert(code === 0, `the collector exited with status ${code}`);
  });
}

let status = 0;
try {
  await run();
  log(`${passed} checks passed`);
} catch (e) {
  status = 1;
  console.error(`[resume-test] FAILED: ${e.stack || e}`);
  if (page) await page.screenshot({path: join(OUT, 'failure.png'), fullPage: true}).catch(() => {});
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
}
process.exit(status);

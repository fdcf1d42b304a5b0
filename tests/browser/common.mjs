// common.mjs - what every browser test shares: the timeout multiplier of a loaded or
// sanitized run (TT_TEST_TIMEOUT_MULT), assertions, polling, and Debian's chromium launched
// headless without the background traffic that would reach outside 127.0.0.1.

import './node-version.mjs';
import {chromium} from 'playwright-core';

const MULT = Number(process.env.TT_TEST_TIMEOUT_MULT || 1);

// A duration of the test scaled by the multiplier.
export const T = (ms) => ms * MULT;

export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Calls fn every 100 ms until it returns something truthy (which is returned) or ms pass; an
// exception from fn counts as "not yet" and is named in the timeout's message.
export async function poll(what, fn, ms) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await sleep(100);
  }
}

// Debian's chromium (TT_CHROMIUM overrides the path), headless.
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.TT_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update',
      '--disable-default-apps', '--disable-sync', '--no-first-run', '--disable-extensions',
      '--disable-dev-shm-usage', '--metrics-recording-only', '--disable-domain-reliability'],
  });
}

#!/usr/bin/env node
/**
 * Drive the page in headless Chromium, through its test hook `window.rnnstream` and its real
 * controls, and write what came back as JSON. The browser test
 * (tests/embedding/test_web.py) and the bench (bench/bench_web.py) use it; so can you.
 *
 *   node headless.mjs SCRIPT.json OUT.json
 *
 * SCRIPT.json: {"url": "http://127.0.0.1:PORT/", "chromium": "/usr/bin/chromium",
 *               "ready": SELECTOR, "actions": [ACTION, ...]}
 * "ready": what to wait for before the first action (default: the page's
 * html[data-ready="true"]; any page can be driven, e.g. a page from `rnnstream inspect --code web`).
 * ACTION, run in order; each gives one entry of OUT.json's "results" ({"label", "value"} or
 * {"label", "error"}; an action that fails does not stop the next one; "label" is the
 * action's own "label", for finding its result):
 *   {"call": NAME, "args": [...]}           await window.rnnstream[NAME](...args)
 *   {"files": SELECTOR, "paths": [...]}     choose files in an <input type=file>, as a user does
 *   {"fill": SELECTOR, "text": "..."}       type into a field
 *   {"click": SELECTOR}                     click a control
 *   {"waitFor": SELECTOR}                   wait until an element matches
 *   {"text": SELECTOR}                      an element's text
 *   {"screenshot": PATH}                    the page as PNG
 * After "files" and "click" on a page with the hook the driver waits for the control's action
 * to finish (window.rnnstream.settled).
 * OUT.json also holds "console": the page's console errors and uncaught exceptions.
 */
import fs from 'node:fs';
import { chromium } from 'playwright-core';

// As root Chromium needs --no-sandbox. The networking flags stop its background connections
// (updates, sync, QUIC probes) that a closed network refuses. Each launch gets a new empty
// profile (playwright passes its own temporary --user-data-dir and removes it on close).
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // WebGL without a GPU: Chromium's software renderer, which it offers only when asked
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
];
const TIMEOUT_MS = 30_000;

async function main([scriptPath, outPath]) {
  if (!scriptPath || !outPath) throw new Error('usage: node headless.mjs SCRIPT.json OUT.json');
  const script = JSON.parse(fs.readFileSync(scriptPath, 'utf8'));
  const browser = await chromium.launch({
    executablePath: script.chromium ?? '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    timeout: TIMEOUT_MS,
  });
  const out = { results: [], console: [], userAgent: '' };
  try {
    const page = await browser.newPage({ viewport: script.viewport ?? { width: 920, height: 760 } });
    page.setDefaultTimeout(TIMEOUT_MS);
    page.on('console', (m) => { if (m.type() === 'error') out.console.push(m.text()); });
    page.on('pageerror', (err) => out.console.push(`uncaught: ${err.message}`));
    await page.goto(script.url);
    await page.waitForSelector(script.ready ?? 'html[data-ready="true"]');
    out.userAgent = await page.evaluate(() => navigator.userAgent);
    for (const action of script.actions) {
      out.results.push({ label: action.label ?? null, ...(await run(page, action)) });
    }
  } finally {
    await browser.close();
  }
  fs.writeFileSync(outPath, JSON.stringify(out));
}

async function run(page, action) {
  const settled = () => page.evaluate(() => window.rnnstream?.settled());
  try {
    if ('call' in action) {
      const value = await page.evaluate(([name, args]) => window.rnnstream[name](...args),
        [action.call, action.args ?? []]);
      return { value: value ?? null };
    }
    if ('files' in action) {
      await page.setInputFiles(action.files, action.paths);
      await settled();
    } else if ('fill' in action) {
      await page.fill(action.fill, action.text);
    } else if ('click' in action) {
      await page.click(action.click);
      await settled();
    } else if ('waitFor' in action) {
      await page.waitForSelector(action.waitFor);
    } else if ('text' in action) {
      return { value: await page.textContent(action.text) };
    } else if ('screenshot' in action) {
      await page.evaluate(() => window.rnnstream.draw());
      await page.screenshot({ path: action.screenshot, fullPage: false });
    } else {
      throw new Error(`unknown action ${JSON.stringify(action)}`);
    }
    return { value: null };
  } catch (err) {
    return { error: String(err.message ?? err).split('\n')[0] };
  }
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`error: ${err.stack ?? err}\n`);
  process.exitCode = 1;
});

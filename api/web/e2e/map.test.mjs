// Browser test of the dispatchers' live map against a running dispatchd.
//
//   cd api/web/e2e && npm ci
//   BASE_URL=http://127.0.0.1:8080 DISPATCHER_TOKEN=... CUSTOMER_TOKEN=... SCREENSHOT=/tmp/map.png \
//     node map.test.mjs
//
// Needs drivers moving in the default view of /config.json (the load generator's simulated
// drivers, say). Exit code 0 when every check passed; otherwise 1, with the failed check and why.
// Optional: CHROMIUM (default /usr/bin/chromium), REAL_TILES=1 to let tile requests reach the
// network (by default off-origin images are answered with a blank PNG here, so the test needs
// no network and a tile server's hiccup cannot fail it).

import { chromium } from 'playwright-core';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

const env = process.env;
const missing = ['BASE_URL', 'DISPATCHER_TOKEN', 'CUSTOMER_TOKEN'].filter((k) => !env[k]);
if (missing.length) {
  console.error(`map.test: set ${missing.join(', ')} (see the top of this file)`);
  process.exit(2);
}
const BASE_URL = env.BASE_URL.replace(/\/+$/, '');
const ORIGIN = new URL(BASE_URL).origin;
const SCREENSHOT = resolve(env.SCREENSHOT || 'map-e2e.png');
const CHROMIUM = env.CHROMIUM || '/usr/bin/chromium';
const REAL_TILES = env.REAL_TILES === '1';
const OVERALL_MS = 120_000;

// 1x1 transparent PNG, the answer to off-origin image requests (map tiles).
const BLANK_PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=',
  'base64',
);

const results = [];
const consoleErrors = [];
const cspViolations = [];
const pageErrors = [];
const offOrigin = [];

function log(msg) {
  console.log(`[${new Date().toISOString().slice(11, 23)}] ${msg}`);
}

async function check(name, fn) {
  const started = Date.now();
  try {
    const detail = await fn();
    results.push({ name, ok: true });
    log(`ok   ${name}${detail ? ` (${detail})` : ''} ${Date.now() - started} ms`);
  } catch (err) {
    results.push({ name, ok: false, why: err && err.message ? err.message : String(err) });
    log(`FAIL ${name}: ${err && err.message ? err.message : err}`);
    throw new Stop();
  }
}
class Stop extends Error {}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function markerPositions(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('.driver-marker')].map((e) => {
      const r = e.getBoundingClientRect();
      return { id: e.dataset.driverId || '', state: e.dataset.state || '', x: r.left + r.width / 2, y: r.top + r.height / 2 };
    }),
  );
}

async function main() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // chromium.launch always starts from a fresh, temporary user-data-dir and deletes it on close.
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30_000,
  });
  const overall = setTimeout(() => {
    log(`FAIL the whole test took longer than ${OVERALL_MS / 1000} s`);
    console.log(`e2e: ${results.filter((r) => r.ok).length} passed, ${results.filter((r) => !r.ok).length + 1} failed`);
    process.exit(1);
  }, OVERALL_MS);
  overall.unref();

  try {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, serviceWorkers: 'block' });
    const page = await context.newPage();

    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const loc = msg.location();
      consoleErrors.push(`${msg.text()}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ''}`);
    });
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.exposeFunction('__e2eCspViolation', (v) => cspViolations.push(v));
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__e2eCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'} at ${e.sourceFile || '?'}:${e.lineNumber}`);
      });
    });
    await page.route((url) => url.origin !== ORIGIN && url.protocol !== 'data:', (route) => {
      const req = route.request();
      if (REAL_TILES) return route.continue();
      if (req.resourceType() === 'image') {
        return route.fulfill({ status: 200, contentType: 'image/png', body: BLANK_PNG });
      }
      offOrigin.push(`${req.resourceType()} ${req.url()}`);
      return route.abort('blockedbyclient');
    });

    await check('page loads and shows the sign-in form', async () => {
      const res = await page.goto(`${BASE_URL}/`, { waitUntil: 'domcontentloaded', timeout: 15_000 });
      if (!res || !res.ok()) throw new Error(`GET / answered ${res ? res.status() : 'nothing'}`);
      await page.locator('#token-input').waitFor({ state: 'visible', timeout: 10_000 });
    });

    await check('signs in with the dispatcher token', async () => {
      await page.fill('#token-input', env.DISPATCHER_TOKEN);
      await page.click('#signin-submit');
      await page.locator('#app-view').waitFor({ state: 'visible', timeout: 10_000 });
      await page.waitForFunction(
        () => {
          const s = document.getElementById('status');
          const msg = document.getElementById('signin-message');
          return (s && s.dataset.state === 'connected') || (msg && !msg.hidden && msg.textContent);
        },
        null,
        { timeout: 15_000 },
      );
      const refused = await page.evaluate(() => {
        const msg = document.getElementById('signin-message');
        return msg && !msg.hidden ? msg.textContent : '';
      });
      if (refused) throw new Error(`back on the sign-in form: ${refused}`);
      return 'socket connected';
    });

    let first;
    await check('at least 5 .driver-marker elements appear', async () => {
      await page.waitForFunction(() => document.querySelectorAll('.driver-marker').length >= 5, null, { timeout: 20_000 })
        .catch(async () => {
          const n = await page.evaluate(() => document.querySelectorAll('.driver-marker').length);
          throw new Error(`only ${n} .driver-marker elements after 20 s`);
        });
      first = await markerPositions(page);
      const bad = first.filter((m) => !m.id || !m.state);
      if (bad.length) throw new Error(`${bad.length} markers lack data-driver-id or data-state`);
      return `${first.length} markers`;
    });

    await check('a driver marker moves within 15 s', async () => {
      const before = new Map(first.map((m) => [m.id, m]));
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline) {
        await sleep(500);
        for (const m of await markerPositions(page)) {
          const b = before.get(m.id);
          if (b && Math.hypot(m.x - b.x, m.y - b.y) >= 1) {
            return `${m.id} moved ${Math.hypot(m.x - b.x, m.y - b.y).toFixed(1)} px`;
          }
        }
      }
      throw new Error(`none of ${before.size} markers moved on screen in 15 s`);
    });

    let bookingId = '';
    await check('a customer creates a booking (POST /v1/bookings)', async () => {
      const res = await fetch(`${BASE_URL}/v1/bookings`, {
        method: 'POST',
        headers: {
          Authorization: `Bearer ${env.CUSTOMER_TOKEN}`,
          'Idempotency-Key': randomUUID(),
          'Content-Type': 'application/json',
        },
        body: JSON.stringify({ pickup: { lat: 12.9716, lng: 77.5946, address: 'MG Road' }, hours: 2, car: { transmission: 'manual' } }),
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`answered ${res.status}: ${text.slice(0, 300)}`);
      let b;
      try { b = JSON.parse(text); } catch { throw new Error(`answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`); }
      if (!b || typeof b.id !== 'string' || !b.id) throw new Error(`the booking has no id: ${text.slice(0, 200)}`);
      bookingId = b.id;
      return `${b.id}, ${b.status}`;
    });

    await check('the booking shows on the page within 10 s', async () => {
      await page.waitForFunction(
        (id) => {
          const q = CSS.escape(id);
          return document.querySelector(`.booking-marker[data-booking-id="${q}"], .booking-row[data-booking-id="${q}"]`);
        },
        bookingId,
        { timeout: 10_000 },
      ).catch(() => { throw new Error(`no .booking-marker or .booking-row with data-booking-id="${bookingId}" after 10 s`); });
      return await page.evaluate((id) => {
        const q = CSS.escape(id);
        const parts = [];
        if (document.querySelector(`.booking-marker[data-booking-id="${q}"]`)) parts.push('marker');
        if (document.querySelector(`.booking-row[data-booking-id="${q}"]`)) parts.push('row');
        return parts.join(' + ');
      }, bookingId);
    });

    await check('drivers carry their names (Driver profiles)', async () => {
      await page.waitForFunction(() => document.querySelector('.driver-marker[data-driver-name^="Sim Driver"]'), null, { timeout: 15_000 })
        .catch(() => { throw new Error('no .driver-marker with a data-driver-name of a simulated driver after 15 s'); });
      return await page.evaluate(() => document.querySelector('.driver-marker[data-driver-name^="Sim Driver"]').title);
    });

    const row = (id, status) => `.booking-row[data-booking-id="${id}"]${status ? `[data-status="${status}"]` : ''}`;
    await check('a dispatcher retries an unfulfilled booking from the panel; the audit trail shows it', async () => {
      await page.locator(row(bookingId, 'unfulfilled')).waitFor({ timeout: 15_000 })
        .catch(() => { throw new Error(`the booking's row never showed unfulfilled`); });
      await page.click(row(bookingId, 'unfulfilled'));
      await page.locator('#history li[data-to="unfulfilled"]').waitFor({ timeout: 10_000 })
        .catch(() => { throw new Error('the history shows no move to unfulfilled'); });
      await page.click('#detail-actions button.retry');
      await page.locator('#history li[data-to="searching"][data-actor^="dispatcher:"]').waitFor({ timeout: 10_000 })
        .catch(() => { throw new Error('the history shows no retry by the dispatcher'); });
      return await page.evaluate(() => [...document.querySelectorAll('#history li')].map((li) => li.dataset.to).join(' > '));
    });

    await check('a dispatcher cancels the unfulfilled booking from the panel', async () => {
      await page.locator(row(bookingId, 'unfulfilled')).waitFor({ timeout: 15_000 })
        .catch(() => { throw new Error('after the retry the booking never became unfulfilled again'); });
      await page.locator('#detail-actions button.cancel').waitFor({ timeout: 5_000 });
      await page.click('#detail-actions button.cancel');
      await page.locator(row(bookingId)).waitFor({ state: 'detached', timeout: 10_000 })
        .catch(() => { throw new Error('the cancelled booking is still in the queue'); });
      const res = await fetch(`${BASE_URL}/v1/bookings/${bookingId}`, { headers: { Authorization: `Bearer ${env.DISPATCHER_TOKEN}` } });
      const b = await res.json();
      if (b.status !== 'cancelled') throw new Error(`the booking is ${b.status}, want cancelled`);
    });

    await check("an assigned booking's panel shows its driver's name, rating and calendar", async () => {
      const staff = { Authorization: `Bearer ${env.DISPATCHER_TOKEN}`, 'Content-Type': 'application/json' };
      const start = new Date(Date.now() + 3 * 3600e3).toISOString();
      let res = await fetch(`${BASE_URL}/v1/bookings`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${env.CUSTOMER_TOKEN}`, 'Idempotency-Key': randomUUID(), 'Content-Type': 'application/json' },
        body: JSON.stringify({ pickup: { lat: 12.9716, lng: 77.5946, address: 'Cubbon Park' }, hours: 2, start_at: start, car: { transmission: 'manual' } }),
      });
      const later = await res.json();
      if (res.status !== 201) throw new Error(`scheduled booking: ${res.status} ${JSON.stringify(later)}`);
      res = await fetch(`${BASE_URL}/v1/bookings/${later.id}/candidates`, { headers: staff });
      const cands = (await res.json()).drivers || [];
      if (!cands.length) throw new Error('no free driver for the scheduled booking');
      const pick = cands[0];
      res = await fetch(`${BASE_URL}/v1/bookings/${later.id}/assign`, { method: 'POST', headers: staff, body: JSON.stringify({ driver_id: pick.id }) });
      if (!res.ok) throw new Error(`assign: ${res.status} ${await res.text()}`);
      const marker = `.booking-marker[data-booking-id="${later.id}"]`;
      await page.waitForFunction((sel) => {
        const m = document.querySelector(sel);
        return m && m.dataset.status === 'assigned';
      }, marker, { timeout: 10_000 }).catch(() => { throw new Error('no assigned marker for the booking'); });
      await page.evaluate((sel) => document.querySelector(sel).click(), marker);
      await page.waitForFunction(
        ({ id, name }) => {
          const info = document.getElementById('driver-info');
          return info && info.dataset.driverId === id && info.textContent.includes(name) && /trips/.test(info.textContent) &&
            document.querySelector('#driver-calendar li.this');
        },
        { id: pick.id, name: pick.name },
        { timeout: 10_000 },
      ).catch(async () => {
        const text = await page.evaluate(() => document.getElementById('detail').innerText);
        throw new Error(`the panel lacks the driver's name, rating or calendar:\n${text}`);
      });
      return await page.evaluate(() => `${document.getElementById('driver-info').textContent}; ${document.getElementById('driver-calendar').textContent}`);
    });

    await check('full-page screenshot', async () => {
      await page.mouse.move(0, 0); // no hover tooltip in the picture
      await sleep(600); // let the marker transition and the row settle
      mkdirSync(dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      return SCREENSHOT;
    });

    await check('no console error, page error, CSP violation or off-origin request', async () => {
      await sleep(300);
      const problems = [
        ...cspViolations.map((v) => `CSP violation: ${v}`),
        ...pageErrors.map((v) => `uncaught: ${v}`),
        ...consoleErrors.map((v) => `console error: ${v}`),
        ...offOrigin.map((v) => `off-origin request: ${v}`),
      ];
      if (problems.length) throw new Error(`\n  ${problems.join('\n  ')}`);
    });
  } finally {
    await browser.close().catch(() => {});
  }
}

let code = 0;
try {
  await main();
} catch (err) {
  code = 1;
  if (!(err instanceof Stop)) {
    results.push({ name: 'test harness', ok: false, why: err && err.stack ? err.stack : String(err) });
    log(`FAIL ${err && err.stack ? err.stack : err}`);
  }
}
const passed = results.filter((r) => r.ok).length;
const failed = results.filter((r) => !r.ok).length;
if (failed) {
  console.log('\nFailed:');
  for (const r of results.filter((x) => !x.ok)) console.log(`  ${r.name}: ${r.why}`);
}
console.log(`e2e: ${passed} passed, ${failed} failed`);
process.exit(code || (failed ? 1 : 0));

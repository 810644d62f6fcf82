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
//
// Frame rate: rAF callbacks counted over FPS_SECONDS (default 10) with the server's drivers in
// view, at least MIN_FPS (default 30). SYNTHETIC_DRIVERS=N then measures the same with N drivers
// from a socket served inside the browser (page.routeWebSocket): a snapshot of N drivers in the
// view, then each of them moved once a second in 20 frames a second, the way the server sends.

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
const OVERALL_MS = 240_000;
const FPS_SECONDS = Number(env.FPS_SECONDS || 10);
const MIN_FPS = Number(env.MIN_FPS || 30);
const SYNTHETIC_DRIVERS = Number(env.SYNTHETIC_DRIVERS || 0);

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

// Drivers are drawn on a canvas: the page tells where (window.dispatchMap, read-only).
async function markerPositions(page) {
  return page.evaluate(() => window.dispatchMap.drawn());
}

async function stats(page) {
  return page.evaluate(() => window.dispatchMap.stats());
}

/** rAF callbacks over ms, with the canvas draws and driver frames applied meanwhile. */
async function measureFps(page, ms) {
  return page.evaluate((ms) => new Promise((resolve) => {
    const s0 = window.dispatchMap.stats();
    let n = 0;
    let worst = 0;
    const t0 = performance.now();
    let last = t0;
    function tick(t) {
      n++;
      worst = Math.max(worst, t - last);
      last = t;
      if (t - t0 < ms) { requestAnimationFrame(tick); return; }
      const s1 = window.dispatchMap.stats();
      const secs = (t - t0) / 1000;
      resolve({ fps: n / secs, worst, draws: (s1.draws - s0.draws) / secs, driverFrames: s1.driverFrames - s0.driverFrames, drivers: s1.drivers });
    }
    requestAnimationFrame(tick);
  }), ms);
}

function fpsLine(r) {
  return `${r.fps.toFixed(1)} fps, worst frame ${r.worst.toFixed(0)} ms, ${r.draws.toFixed(1)} canvas draws/s, ${r.driverFrames} driver frames, ${r.drivers} drivers`;
}

async function noErrorBanner(page) {
  const text = await page.evaluate(() => {
    const n = document.getElementById('notice');
    return n && !n.hidden ? n.textContent : '';
  });
  if (text) throw new Error(`error banner: ${text}`);
}

/** Clicks a zoom button and waits for the new zoom's snapshot (the answer to its watch.area). */
async function zoomStep(page, dir) {
  const before = await stats(page);
  await page.click(dir > 0 ? '.leaflet-control-zoom-in' : '.leaflet-control-zoom-out');
  await page.waitForFunction((z) => window.dispatchMap.stats().zoom === z, before.zoom + dir, { timeout: 5_000 })
    .catch(() => { throw new Error(`zoom did not reach ${before.zoom + dir}`); });
  await page.waitForFunction((n) => window.dispatchMap.stats().snapshots > n, before.snapshots, { timeout: 10_000 })
    .catch(() => { throw new Error(`no snapshot for the area at zoom ${before.zoom + dir}`); });
  await noErrorBanner(page);
}

/** After a zoom: more drivers or cells frames arrive (the page keeps moving). */
async function keepsMoving(page, what) {
  const s0 = await stats(page);
  await page.waitForFunction((s0) => {
    const s = window.dispatchMap.stats();
    return s.driverFrames > s0.driverFrames || s.cellFrames > s0.cellFrames;
  }, s0, { timeout: 10_000 }).catch(() => { throw new Error(`no drivers or cells frame within 10 s at ${what}`); });
  await noErrorBanner(page);
  return stats(page);
}

/**
 * A second page of the same context whose socket is served here instead of by the server: a
 * snapshot of n drivers spread over the watched area, then every 50 ms a `drivers` frame moving
 * the next n/20 of them (each once a second), as the server would send them. It signs in like
 * the first and measures the frame rate with every driver in view.
 */
async function syntheticFps(context, n) {
  const page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(`synthetic: ${err.message}`));
  let timer = null;
  await page.routeWebSocket(/\/v1\/ws$/, (ws) => {
    const fleet = [];
    let next = 0;
    ws.onMessage((msg) => {
      let f;
      try { f = JSON.parse(String(msg)); } catch { return; }
      if (f.type !== 'watch.area') return;
      const a = f.data;
      const h = (a.max_lat - a.min_lat) * 0.9;
      const w = (a.max_lng - a.min_lng) * 0.9;
      if (!fleet.length) {
        const states = ['available', 'available', 'available', 'offered', 'assigned', 'on_trip'];
        for (let i = 0; i < n; i++) {
          fleet.push({ id: `syn-${i}`, lat: a.min_lat + h * 0.05 / 0.9 + Math.random() * h, lng: a.min_lng + w * 0.05 / 0.9 + Math.random() * w,
            heading: 0, state: states[i % states.length], updated_at: new Date().toISOString() });
        }
      }
      ws.send(JSON.stringify({ type: 'snapshot', data: { drivers: fleet, bookings: [], mode: 'drivers', res: 7 } }));
      ws.send(JSON.stringify({ type: 'ack', data: { ref: f.seq } }));
      ws.send(JSON.stringify({ type: 'cells', data: { res: 7, cells: [] } }));
      clearInterval(timer);
      const per = Math.ceil(n / 20);
      timer = setInterval(() => {
        const now = new Date().toISOString();
        const ups = [];
        for (let k = 0; k < per; k++) {
          const d = fleet[next];
          next = (next + 1) % fleet.length;
          d.lat += (Math.random() - 0.5) * 0.0004;
          d.lng += (Math.random() - 0.5) * 0.0004;
          d.updated_at = now;
          ups.push(d);
        }
        ws.send(JSON.stringify({ type: 'drivers', data: { updates: ups } }));
      }, 50);
    });
    ws.onClose(() => clearInterval(timer));
  });
  try {
    await page.goto(`${BASE_URL}/`, { waitUntil: 'domcontentloaded', timeout: 15_000 });
    await page.locator('#token-input').waitFor({ state: 'visible', timeout: 10_000 });
    await page.fill('#token-input', env.DISPATCHER_TOKEN);
    await page.click('#signin-submit');
    await page.waitForFunction((n) => window.dispatchMap && window.dispatchMap.stats().drivers >= n * 0.9, n, { timeout: 30_000 })
      .catch(() => { throw new Error(`the synthetic drivers did not reach the page in 30 s`); });
    await sleep(1000);
    return await measureFps(page, FPS_SECONDS * 1000);
  } finally {
    clearInterval(timer);
    await page.close().catch(() => {});
  }
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
    await check('at least 5 drivers are drawn on the canvas', async () => {
      await page.waitForFunction(() => window.dispatchMap.drawn().length >= 5, null, { timeout: 20_000 })
        .catch(async () => {
          const n = await page.evaluate(() => window.dispatchMap.drawn().length);
          throw new Error(`only ${n} drivers drawn after 20 s`);
        });
      const dom = await page.evaluate(() => document.querySelectorAll('.driver-marker').length);
      if (dom) throw new Error(`${dom} DOM markers for drivers: they belong on the canvas`);
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

    await check('zooms from a street to all of India and back, and the map keeps moving', async () => {
      const start = (await stats(page)).zoom;
      const seen = [];
      for (let z = start; z < 16; z++) await zoomStep(page, +1);
      let s = await keepsMoving(page, 'street level');
      if (s.mode !== 'drivers') throw new Error(`at street level the mode is ${s.mode}, want drivers`);
      seen.push(`z${s.zoom} ${s.drivers} drivers`);
      for (let z = 16; z > 5; z--) {
        await zoomStep(page, -1);
        const now = await stats(page);
        if (now.zoom === 9) seen.push(`z9 ${now.mode}`);
      }
      s = await keepsMoving(page, 'all of India');
      await page.waitForFunction(() => window.dispatchMap.stats().cells > 0, null, { timeout: 10_000 })
        .catch(() => { throw new Error('zoomed out to India: no cells drawn'); });
      s = await stats(page);
      if (s.mode !== 'cells' || s.drivers !== 0) throw new Error(`zoomed out to India: mode ${s.mode} with ${s.drivers} drivers, want cells and none`);
      const heat = await page.evaluate(() => document.querySelectorAll('.leaflet-heat-pane canvas').length);
      if (!heat) throw new Error('zoomed out to India: no heat layer drawn');
      seen.push(`z${s.zoom} ${s.cells} heat cells`);
      for (let z = 5; z < start; z++) await zoomStep(page, +1);
      s = await keepsMoving(page, `zoom ${start} again`);
      await page.waitForFunction(() => window.dispatchMap.drawn().length >= 5, null, { timeout: 15_000 })
        .catch(() => { throw new Error('back at the first zoom: fewer than 5 drivers drawn after 15 s'); });
      s = await stats(page);
      if (s.mode !== 'drivers') throw new Error(`back at the first zoom: mode ${s.mode}, want drivers`);
      seen.push(`z${s.zoom} ${s.drivers} drivers`);
      return seen.join(' → ');
    });

    await check(`draws at least ${MIN_FPS} fps over ${FPS_SECONDS} s with the server's drivers moving`, async () => {
      const r = await measureFps(page, FPS_SECONDS * 1000);
      console.log(`FPS live: ${fpsLine(r)}`);
      if (r.fps < MIN_FPS) throw new Error(fpsLine(r));
      if (r.driverFrames === 0) throw new Error(`no driver frames while measuring: ${fpsLine(r)}`);
      return fpsLine(r);
    });

    if (SYNTHETIC_DRIVERS > 0) {
      await check(`draws at least ${MIN_FPS} fps with ${SYNTHETIC_DRIVERS} drivers in view, each moving once a second`, async () => {
        const r = await syntheticFps(context, SYNTHETIC_DRIVERS);
        console.log(`FPS synthetic ${SYNTHETIC_DRIVERS}: ${fpsLine(r)}`);
        if (r.fps < MIN_FPS) throw new Error(fpsLine(r));
        if (r.drivers < SYNTHETIC_DRIVERS * 0.9 || r.driverFrames === 0) throw new Error(`not all drivers moving: ${fpsLine(r)}`);
        return fpsLine(r);
      });
    }

    await check('drivers carry their names (Driver profiles)', async () => {
      const named = () => window.dispatchMap.drawn().find((d) => d.name && d.name.startsWith('Sim Driver'));
      await page.waitForFunction(named, null, { timeout: 15_000 })
        .catch(() => { throw new Error('no driver drawn with the name of a simulated driver after 15 s'); });
      return await page.evaluate(() => {
        const d = window.dispatchMap.drawn().find((d) => d.name && d.name.startsWith('Sim Driver'));
        return `${d.id}: ${d.name}`;
      });
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

// Dispatch live map: the dispatchers' page (API.md, "Dispatcher" WebSocket part).
//
// Runs under `default-src 'self'`: no inline script or style, no eval, no innerHTML with
// anything that came from the network (names and addresses go in through textContent).
// Leaflet (vendor/leaflet/leaflet.js, a deferred classic script) provides window.L.
//
// Data flow: one WebSocket (/v1/ws, subprotocols dispatch.v1 + bearer.<jwt>) feeds three maps
// (drivers, bookings, cells) keyed by id; every frame touches only the entries it names. Drivers
// are dots on one canvas redrawn at most once an animation frame (DriverDots); bookings keep
// their DOM markers (a few hundred at most); a zoomed-out area comes as counts per cell only.

const L = window.L;

const TOKEN_KEY = 'dispatch.token';
const CELLS_KEY = 'dispatch.cells';
const DEFAULT_CONFIG = { tiles: '', attribution: '', center: [12.97, 77.59], zoom: 12 };
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 15000;

// Bookings the queue lists, by urgency (lower first).
const QUEUE_RANK = { unfulfilled: 0, searching: 1, scheduled: 2 };
// Bookings that leave the map once they reach these states.
const GONE = new Set(['completed', 'cancelled']);
const DRIVER_STATES = new Set(['offline', 'available', 'offered', 'assigned', 'on_trip']);

const $ = (id) => document.getElementById(id);
const ui = {
  signinView: $('signin-view'),
  signinForm: $('signin'),
  tokenInput: $('token-input'),
  signinMessage: $('signin-message'),
  appView: $('app-view'),
  status: $('status'),
  statusText: $('status-text'),
  counts: $('counts'),
  who: $('who'),
  signout: $('signout'),
  toggleCells: $('toggle-cells'),
  legend: $('legend'),
  map: $('map'),
  notice: $('notice'),
  detail: $('detail'),
  detailTitle: $('detail-title'),
  detailFields: $('detail-fields'),
  detailClose: $('detail-close'),
  detailActions: $('detail-actions'),
  driverBox: $('driver-box'),
  driverInfo: $('driver-info'),
  driverCalendar: $('driver-calendar'),
  history: $('history'),
  candidates: $('candidates'),
  candidatesMessage: $('candidates-message'),
  bookingList: $('booking-list'),
  queueCount: $('queue-count'),
  queueEmpty: $('queue-empty'),
};

// ---------------------------------------------------------------------------------------------
// Small helpers

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const round6 = (v) => Math.round(v * 1e6) / 1e6;

/** Milliseconds since the epoch, or NaN for a missing or Go-zero time. */
function timeOf(s) {
  if (typeof s !== 'string' || s === '') return NaN;
  const t = Date.parse(s);
  return t > 946684800000 ? t : NaN; // before 2000: Go's zero time or garbage
}

function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

const timeFmt = new Intl.DateTimeFormat('en-IN', { hour: '2-digit', minute: '2-digit' });
const dateTimeFmt = new Intl.DateTimeFormat('en-IN', { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
function fmtClock(t) {
  if (!Number.isFinite(t)) return '—';
  const sameDay = new Date(t).toDateString() === new Date().toDateString();
  return sameDay ? timeFmt.format(t) : dateTimeFmt.format(t);
}

const inr = new Intl.NumberFormat('en-IN', { style: 'currency', currency: 'INR', maximumFractionDigits: 0 });
function fmtFare(fare) {
  if (!fare || !isNum(fare.total_paise)) return '—';
  if (fare.currency && fare.currency !== 'INR') return `${(fare.total_paise / 100).toFixed(2)} ${fare.currency}`;
  return inr.format(fare.total_paise / 100);
}

function fmtDistance(m) {
  if (!isNum(m)) return '';
  return m < 1000 ? `${Math.round(m)} m` : `${(m / 1000).toFixed(1)} km`;
}

function haversineM(lat1, lng1, lat2, lng2) {
  const r = (d) => (d * Math.PI) / 180;
  const a = Math.sin(r(lat2 - lat1) / 2) ** 2 +
    Math.cos(r(lat1)) * Math.cos(r(lat2)) * Math.sin(r(lng2 - lng1) / 2) ** 2;
  return 2 * 6371008.8 * Math.asin(Math.min(1, Math.sqrt(a)));
}

function placeText(p) {
  if (!p) return '—';
  if (p.address) return p.address;
  return isNum(p.lat) && isNum(p.lng) ? `${p.lat.toFixed(5)}, ${p.lng.toFixed(5)}` : '—';
}

/** The claims of a JWT, or null when the string is not one (the server still decides). */
function jwtClaims(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const claims = JSON.parse(json);
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/** Why this token cannot be used, or '' if it may be (the server is the judge). */
function tokenProblem(token) {
  if (!/^[A-Za-z0-9._~+/=-]+$/.test(token)) return 'That does not look like a token (unexpected characters).';
  const c = jwtClaims(token);
  if (!c) return '';
  if (isNum(c.exp) && c.exp * 1000 <= Date.now()) return 'This token has expired. Ask for a new one.';
  if (typeof c.role === 'string' && c.role !== 'dispatcher' && c.role !== 'admin') {
    return `This is a ${c.role} token; the live map needs a dispatcher token.`;
  }
  return '';
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---------------------------------------------------------------------------------------------
// State

let token = null;
const configReady = fetch('/config.json', { cache: 'no-store', credentials: 'same-origin' })
  .then((r) => (r.ok ? r.json() : {}))
  .catch(() => ({}))
  .then((c) => {
    const out = { ...DEFAULT_CONFIG };
    if (c && typeof c === 'object') {
      if (typeof c.tiles === 'string') out.tiles = c.tiles;
      if (typeof c.attribution === 'string') out.attribution = c.attribution;
      if (Array.isArray(c.center) && c.center.length === 2 && c.center.every(isNum)) out.center = c.center;
      if (isNum(c.zoom)) out.zoom = c.zoom;
    }
    return out;
  });

let map = null;
let driverLayer = null;
let bookingLayer = null;
let cellLayer = null;
let cellRenderer = null;
let heatLayer = null;
let heatRenderer = null;
let hexColors = null;
const heatColors = {};
// What the server sends for the watched area: 'drivers' one by one, or 'cells' only (zoomed out).
let viewMode = 'drivers';

/** id -> { d: DriverView, marker, rot } */
const drivers = new Map();
/** id -> { b: Booking, marker, row, age } */
const bookings = new Map();
/** h3 -> { c: cell, poly, key } */
const cells = new Map();
let cellRes = null;
let selectedId = null;
let candidatesAbort = null;
/** driver id -> { name, rating }, from GET /v1/drivers: live updates carry no names. */
const profiles = new Map();
/** What the detail's history and driver box were loaded for (reloaded when it changes). */
let detailKey = '';

const conn = {
  ws: null,
  gen: 0, // bumped on every new socket and on sign-out: events of older sockets are ignored
  seq: 0,
  backoff: BACKOFF_MIN_MS,
  timer: null,
  retryAt: 0,
  attempt: 0,
  lastArea: '',
  area: null, // the last watch.area sent: drivers that leave it are dropped
  watchSeqs: new Set(),
};

// ---------------------------------------------------------------------------------------------
// Sign-in and sign-out

function showSignin(message) {
  ui.appView.hidden = true;
  ui.signinView.hidden = false;
  ui.signinMessage.hidden = !message;
  ui.signinMessage.textContent = message || '';
  ui.tokenInput.value = '';
  ui.tokenInput.focus();
}

async function signIn(raw) {
  const t = raw.trim().replace(/^Bearer\s+/i, '');
  const problem = t ? tokenProblem(t) : 'Paste a token first.';
  if (problem) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignin(problem);
    return;
  }
  token = t;
  sessionStorage.setItem(TOKEN_KEY, t);
  const c = jwtClaims(t);
  ui.who.textContent = c && c.sub ? `${c.sub}${c.role ? ` · ${c.role}` : ''}` : '';
  ui.signinView.hidden = true;
  ui.appView.hidden = false;
  await initMap();
  if (token !== t) return; // signed out while the config loaded
  map.invalidateSize();
  conn.backoff = BACKOFF_MIN_MS;
  conn.attempt = 0;
  connect();
  loadProfiles();
}

/** Loads drivers' names and ratings (the snapshot has them; later updates do not). */
async function loadProfiles() {
  let res;
  try {
    res = await api('/v1/drivers?limit=1000');
  } catch {
    return; // names are a nicety: ids remain
  }
  for (const p of res && Array.isArray(res.drivers) ? res.drivers : []) {
    if (p && typeof p.id === 'string') profiles.set(p.id, { name: String(p.name || ''), rating: p.rating });
  }
  // The canvas looks names up when it needs them (the popup, dispatchMap.drawn()).
}
setInterval(() => { if (token) loadProfiles(); }, 60000);

function nameOf(v) {
  return v.name || (profiles.get(v.id) || {}).name || '';
}

function ratingOf(v) {
  const r = isNum(v.rating) ? v.rating : (profiles.get(v.id) || {}).rating;
  return isNum(r) && r > 0 ? ` ★${r.toFixed(1)}` : '';
}

/** Leaves the map: drops the token, the socket and every marker, and shows the form. */
function signOut(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  conn.gen++;
  clearTimeout(conn.timer);
  conn.timer = null;
  conn.area = null;
  conn.lastArea = '';
  conn.retryAt = 0;
  if (conn.ws) {
    try { conn.ws.close(1000, 'signed out'); } catch { /* already closing */ }
    conn.ws = null;
  }
  clearAll();
  setStatus('idle', 'not connected');
  hideNotice();
  showSignin(message);
}

ui.signinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  signIn(ui.tokenInput.value);
});
ui.signout.addEventListener('click', () => signOut(''));

// ---------------------------------------------------------------------------------------------
// Map

let mapInit = null;
function initMap() {
  if (!mapInit) mapInit = configReady.then(createMap);
  return mapInit;
}

function createMap(cfg) {
  if (!L) throw new Error('Leaflet did not load');
  map = L.map(ui.map, { center: cfg.center, zoom: cfg.zoom, zoomControl: true, worldCopyJump: false });
  if (cfg.tiles) {
    L.tileLayer(cfg.tiles, { attribution: cfg.attribution, maxZoom: 19 }).addTo(map);
  } else if (cfg.attribution) {
    map.attributionControl.addAttribution(cfg.attribution);
  }

  const css = getComputedStyle(document.documentElement);
  hexColors = {};
  for (const k of ['empty', 'idle', 'covered', 'short', 'critical', 'surge']) {
    hexColors[k] = css.getPropertyValue(`--hex-${k}`).trim() || '#888';
  }

  for (const k of DRIVER_STATES) {
    DRIVER_COLORS[k] = css.getPropertyValue(`--driver-${k}`).trim() || '#888';
    PACKED_COLORS[k] = packColor(DRIVER_COLORS[k]);
  }
  for (const k of HEAT_STEPS) {
    heatColors[k] = css.getPropertyValue(`--heat-${k}`).trim() || '#888';
  }

  map.createPane('cells').style.zIndex = '350';
  map.createPane('heat').style.zIndex = '360';
  map.createPane('drivers').style.zIndex = '450';
  cellRenderer = L.canvas({ pane: 'cells', padding: 0.2 });
  heatRenderer = L.canvas({ pane: 'heat', padding: 0.2 });
  cellLayer = L.layerGroup();
  heatLayer = L.layerGroup().addTo(map);
  driverLayer = new DriverDots({ pane: 'drivers' }).addTo(map);
  bookingLayer = L.layerGroup().addTo(map);
  map.on('click', (ev) => {
    const e = driverLayer.nearest(ev.containerPoint, DOT_R + 4);
    if (e) openDriverPopup(e);
  });

  const showCells = localStorage.getItem(CELLS_KEY) !== 'off';
  ui.toggleCells.checked = showCells;
  setCellsVisible(showCells);
  ui.toggleCells.addEventListener('change', () => {
    setCellsVisible(ui.toggleCells.checked);
    localStorage.setItem(CELLS_KEY, ui.toggleCells.checked ? 'on' : 'off');
  });

  map.on('moveend', () => sendWatchArea(false));
}

function setCellsVisible(on) {
  if (on) cellLayer.addTo(map); else cellLayer.remove();
  ui.legend.classList.toggle('cells-off', !on);
}

/** Switches between drivers one by one and the heat of counts per cell (a zoomed-out area). */
function setViewMode(mode) {
  const m = mode === 'cells' ? 'cells' : 'drivers';
  if (m === viewMode) return;
  viewMode = m;
  clearCells();
  ui.map.dataset.mode = m;
  ui.legend.classList.toggle('heat-on', m === 'cells');
}

// ---------------------------------------------------------------------------------------------
// Connection

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.statusText.textContent = text;
}

function connect() {
  clearTimeout(conn.timer);
  conn.timer = null;
  if (!token) return;
  const problem = tokenProblem(token);
  if (problem) { signOut(problem); return; }

  if (conn.ws) {
    try { conn.ws.close(1000, 'reconnecting'); } catch { /* already closing */ }
    conn.ws = null;
  }
  const gen = ++conn.gen;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let ws;
  try {
    ws = new WebSocket(`${scheme}//${location.host}/v1/ws`, ['dispatch.v1', `bearer.${token}`]);
  } catch (e) {
    signOut(`This token cannot be used: ${e.message}`);
    return;
  }
  ws.binaryType = 'arraybuffer';
  conn.ws = ws;
  let opened = false;
  setStatus(conn.attempt ? 'reconnecting' : 'connecting', conn.attempt ? `reconnecting (attempt ${conn.attempt + 1})…` : 'connecting…');

  ws.addEventListener('open', () => {
    if (gen !== conn.gen) return;
    opened = true;
    setStatus('connected', 'connected');
    conn.lastArea = '';
    conn.watchSeqs.clear();
    sendWatchArea(true);
  });
  ws.addEventListener('message', (ev) => {
    if (gen !== conn.gen) return;
    handleFrame(ev.data);
  });
  ws.addEventListener('close', (ev) => {
    if (gen !== conn.gen) return;
    conn.ws = null;
    onClosed(ev, opened);
  });
}

async function onClosed(ev, opened) {
  ui.map.classList.add('stale');
  if (ev.code === 1008) {
    signOut(`The server ended the session${ev.reason ? `: ${ev.reason}` : ' (token expired or not allowed)'}. Sign in again.`);
    return;
  }
  if (!opened) {
    // A refused upgrade looks like any network failure to a page (code 1006): ask REST whether
    // it is the token (401/403) before retrying forever.
    const gen = conn.gen;
    setStatus('reconnecting', 'connection failed, checking…');
    const denied = await probeAuth();
    if (gen !== conn.gen || !token) return;
    if (denied) { signOut(denied); return; }
  }
  scheduleReconnect();
}

function scheduleReconnect() {
  const delay = conn.backoff;
  conn.backoff = Math.min(conn.backoff * 2, BACKOFF_MAX_MS);
  conn.attempt++;
  conn.retryAt = Date.now() + delay;
  updateRetryText();
  conn.timer = setTimeout(connect, delay);
}

function updateRetryText() {
  if (!conn.timer && conn.retryAt === 0) return;
  const left = Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000));
  setStatus('reconnecting', `reconnecting in ${left} s…`);
}

/** A sign-in message when the server refuses the token, else ''. */
async function probeAuth() {
  try {
    const r = await fetch('/v1/bookings?status=searching&limit=1', {
      headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'same-origin',
    });
    if (r.status !== 401 && r.status !== 403) return '';
    let msg = '';
    try { msg = (await r.json()).error.message; } catch { /* no body */ }
    return `The server refused this token (${r.status}${msg ? `: ${msg}` : ''}). Sign in again.`;
  } catch {
    return ''; // the server is down: keep retrying
  }
}

function send(type, data) {
  const ws = conn.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return 0;
  const seq = ++conn.seq;
  ws.send(JSON.stringify({ type, seq, data }));
  return seq;
}

function sendWatchArea(force) {
  if (!map || !conn.ws || conn.ws.readyState !== WebSocket.OPEN) return;
  const b = map.getBounds();
  const area = {
    min_lat: round6(clamp(b.getSouth(), -90, 90)),
    min_lng: round6(clamp(b.getWest(), -180, 180)),
    max_lat: round6(clamp(b.getNorth(), -90, 90)),
    max_lng: round6(clamp(b.getEast(), -180, 180)),
  };
  const key = JSON.stringify(area);
  if (!force && key === conn.lastArea) return;
  conn.lastArea = key;
  const seq = send('watch.area', area);
  if (seq) {
    conn.watchSeqs.add(seq);
    conn.area = area;
  }
}

// ---------------------------------------------------------------------------------------------
// Frames

const utf8 = new TextDecoder();

function handleFrame(payload) {
  let f;
  try {
    f = JSON.parse(typeof payload === 'string' ? payload : utf8.decode(payload));
  } catch {
    showNotice('The server sent a frame that is not JSON.');
    return;
  }
  if (!f || typeof f !== 'object') return;
  const d = f.data && typeof f.data === 'object' ? f.data : {};
  switch (f.type) {
    case 'snapshot':
      applySnapshot(d);
      mapStats.snapshots++;
      break;
    case 'drivers':
      if (Array.isArray(d.updates)) for (const v of d.updates) upsertDriver(v);
      mapStats.driverFrames++;
      break;
    case 'bookings':
      if (Array.isArray(d.updates)) for (const b of d.updates) upsertBooking(b);
      break;
    case 'cells':
      applyCells(d);
      mapStats.cellFrames++;
      break;
    case 'ack':
      conn.watchSeqs.delete(d.ref);
      return;
    case 'error':
      onServerError(d);
      return;
    default:
      return; // a type this page does not know: ignored (API.md)
  }
  mapStats.frames++;
  scheduleCounts();
}

function applySnapshot(d) {
  setViewMode(d.mode);
  const seenDrivers = new Set();
  for (const v of Array.isArray(d.drivers) ? d.drivers : []) {
    if (upsertDriver(v)) seenDrivers.add(v.id);
  }
  for (const id of drivers.keys()) if (!seenDrivers.has(id)) removeDriver(id);

  const seenBookings = new Set();
  for (const b of Array.isArray(d.bookings) ? d.bookings : []) {
    if (upsertBooking(b)) seenBookings.add(b.id);
  }
  for (const id of bookings.keys()) if (!seenBookings.has(id)) removeBooking(id);

  // A snapshot means the server took our watch: the connection works, so the backoff resets.
  conn.backoff = BACKOFF_MIN_MS;
  conn.attempt = 0;
  conn.retryAt = 0;
  ui.map.classList.remove('stale');
}

function onServerError(d) {
  const code = typeof d.code === 'string' ? d.code : 'error';
  const message = typeof d.message === 'string' && d.message ? d.message : 'the server reported an error';
  if (code === 'unauthenticated' || code === 'permission_denied') {
    signOut(`The server refused: ${message}. Sign in with a dispatcher token.`);
    return;
  }
  const what = conn.watchSeqs.has(d.ref) ? 'Watching this area failed' : 'Server error';
  conn.watchSeqs.delete(d.ref);
  showNotice(`${what}: ${message} (${code})`);
}

// ---------------------------------------------------------------------------------------------
// Drivers
//
// Thousands of drivers move at once: one DOM element each cannot keep up (a city's 3,000 drew
// under one frame a second). They are drawn on one <canvas> instead, by the small Leaflet layer
// below: each driver's position is projected once per update (to world pixels at the current
// zoom, again for all at a zoom's end), and a frame with changes redraws every dot in one path
// per state, so the cost per frame is a few fills, not one per driver. Leaflet's own canvas
// renderer draws and hit-tests each circle as a separate path, which is what does not scale.

const DRIVER_COLORS = {};
// The same colours as 32-bit pixels (ImageData's byte order, read as a little-endian word).
const PACKED_COLORS = {};
const DOT_R = 4;
// Past this many drivers they are drawn as a crowd of small squares (DriverDots._drawCrowd).
const CROWD = 2000;

function packColor(css) {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(css.trim());
  const [r, g, b] = m ? [1, 2, 3].map((i) => parseInt(m[i], 16)) : [136, 136, 136];
  return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
}

const DriverDots = L && L.Layer.extend({
  onAdd(m) {
    this._canvas = L.DomUtil.create('canvas', 'driver-dots leaflet-zoom-hide');
    this._ctx = this._canvas.getContext('2d');
    m.getPane(this.options.pane || 'overlayPane').appendChild(this._canvas);
    this._dirty = true;
    this._frame = 0;
    this._reset();
    this._loop = () => {
      this._frame = requestAnimationFrame(this._loop);
      if (this._dirty) this._draw();
    };
    this._frame = requestAnimationFrame(this._loop);
  },
  onRemove() {
    cancelAnimationFrame(this._frame);
    L.DomUtil.remove(this._canvas);
  },
  getEvents() {
    return { moveend: this._reset, zoomend: this._reproject, resize: this._reset, viewreset: this._reproject, move: this._reset };
  },
  /** The canvas covers the map's container; positions are kept in world pixels. */
  _reset() {
    const m = this._map;
    const size = m.getSize();
    const ratio = window.devicePixelRatio || 1;
    const c = this._canvas;
    if (c.width !== Math.round(size.x * ratio) || c.height !== Math.round(size.y * ratio)) {
      c.width = Math.round(size.x * ratio);
      c.height = Math.round(size.y * ratio);
      c.style.width = `${size.x}px`;
      c.style.height = `${size.y}px`;
    }
    L.DomUtil.setPosition(c, m.containerPointToLayerPoint([0, 0]));
    this._dirty = true;
  },
  _reproject() {
    for (const e of drivers.values()) project(e);
    this._reset();
  },
  redraw() { this._dirty = true; },
  /** Container point of an entry (world pixels minus the view's top-left). */
  _offset() {
    const m = this._map;
    const o = m.getPixelOrigin();
    const tl = m.containerPointToLayerPoint([0, 0]);
    return { x: -o.x - tl.x, y: -o.y - tl.y };
  },
  _draw() {
    this._dirty = false;
    const ctx = this._ctx;
    const c = this._canvas;
    const ratio = c.width / Math.max(1, parseFloat(c.style.width) || c.width);
    const { x: ox, y: oy } = this._offset();
    if (drivers.size > CROWD) {
      this._drawCrowd(ox, oy, ratio);
    } else {
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, c.width, c.height);
      const w = c.width / ratio + DOT_R;
      const h = c.height / ratio + DOT_R;
      const paths = {};
      for (const e of drivers.values()) {
        const x = e.px + ox;
        const y = e.py + oy;
        if (x < -DOT_R || y < -DOT_R || x > w || y > h) continue;
        let p = paths[e.d.state];
        if (!p) { p = new Path2D(); paths[e.d.state] = p; }
        p.moveTo(x + DOT_R, y);
        p.arc(x, y, DOT_R, 0, 2 * Math.PI);
      }
      ctx.lineWidth = 1;
      ctx.strokeStyle = 'rgba(255,255,255,.9)';
      for (const [state, p] of Object.entries(paths)) {
        ctx.fillStyle = DRIVER_COLORS[state] || DRIVER_COLORS.offline || '#888';
        ctx.fill(p);
        ctx.stroke(p);
      }
    }
    if (highlighted && drivers.has(highlighted.d.id)) {
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.beginPath();
      ctx.arc(highlighted.px + ox, highlighted.py + oy, DOT_R + 5, 0, 2 * Math.PI);
      ctx.lineWidth = 3;
      ctx.strokeStyle = DRIVER_COLORS.assigned || '#1f6feb';
      ctx.stroke();
    }
    mapStats.draws++;
  },
  /**
   * A crowd: every driver a 3x3 square written straight into the canvas's pixels, then put
   * back at once. Rasterising thousands of paths, even rectangles, costs most of a frame
   * without a GPU; this costs about the same at 20,000 drivers as at 2,000.
   */
  _drawCrowd(ox, oy, ratio) {
    const c = this._canvas;
    const cw = c.width;
    const ch = c.height;
    if (!this._img || this._img.width !== cw || this._img.height !== ch) {
      this._img = this._ctx.createImageData(cw, ch);
      this._px = new Uint32Array(this._img.data.buffer);
    }
    const px = this._px;
    px.fill(0);
    const s = Math.max(1, Math.round(ratio));
    for (const e of drivers.values()) {
      const x = Math.round((e.px + ox) * ratio);
      const y = Math.round((e.py + oy) * ratio);
      if (x < s || y < s || x >= cw - s || y >= ch - s) continue;
      const col = PACKED_COLORS[e.d.state] || PACKED_COLORS.offline;
      for (let dy = -s; dy <= s; dy++) {
        const row = (y + dy) * cw;
        for (let dx = -s; dx <= s; dx++) px[row + x + dx] = col;
      }
    }
    this._ctx.putImageData(this._img, 0, 0);
  },
  /** The driver drawn nearest a container point, within px; null if none. */
  nearest(pt, px) {
    const { x: ox, y: oy } = this._offset();
    let best = null;
    let bestD = px * px;
    for (const e of drivers.values()) {
      const dx = e.px + ox - pt.x;
      const dy = e.py + oy - pt.y;
      const d = dx * dx + dy * dy;
      if (d <= bestD) { best = e; bestD = d; }
    }
    return best;
  },
  /** Every driver inside the view, as drawn: {id, state, name, x, y} in container pixels. */
  drawn() {
    const { x: ox, y: oy } = this._offset();
    const size = this._map.getSize();
    const out = [];
    for (const e of drivers.values()) {
      const x = e.px + ox;
      const y = e.py + oy;
      if (x >= 0 && y >= 0 && x <= size.x && y <= size.y) out.push({ id: e.d.id, state: e.d.state, name: nameOf(e.d), x, y });
    }
    return out;
  },
});

/** Counters the browser test reads (window.dispatchMap): frames applied, canvas draws. */
const mapStats = { frames: 0, snapshots: 0, driverFrames: 0, cellFrames: 0, draws: 0 };

function project(e) {
  const p = map.project([e.d.lat, e.d.lng], map.getZoom());
  e.px = p.x;
  e.py = p.y;
}

/** Applies one DriverView; returns whether the driver is (still) on the map. */
function upsertDriver(v) {
  if (!v || typeof v.id !== 'string' || v.id === '') return false;
  if (v.state === 'offline') {
    removeDriver(v.id);
    return false;
  }
  if (!isNum(v.lat) || !isNum(v.lng)) return drivers.has(v.id);
  if (outsideArea(v.lat, v.lng)) {
    // The server may send a last update as a driver leaves the watched area and then no more:
    // without this the dot would freeze at the edge until the next snapshot.
    removeDriver(v.id);
    return false;
  }
  const e = drivers.get(v.id);
  const tNew = timeOf(v.updated_at);
  if (!e) {
    const entry = { d: v, t: tNew, px: 0, py: 0 };
    project(entry);
    drivers.set(v.id, entry);
    driverLayer.redraw();
    return true;
  }
  // Updates carry no name: keep the snapshot's.
  if (!v.name && e.d.name) v = { ...v, name: e.d.name, rating: e.d.rating };
  // Frames on one socket arrive in order, but a snapshot may race an update: newest wins.
  if (tNew < e.t) return true;
  const old = e.d;
  e.d = v;
  e.t = tNew;
  if (old.lat !== v.lat || old.lng !== v.lng) project(e);
  driverLayer.redraw();
  return true;
}

/** Whether a point lies outside the watched area, with a margin of a fifth of its size. */
function outsideArea(lat, lng) {
  const a = conn.area;
  if (!a) return false;
  const mLat = (a.max_lat - a.min_lat) / 5;
  const mLng = (a.max_lng - a.min_lng) / 5;
  return lat < a.min_lat - mLat || lat > a.max_lat + mLat || lng < a.min_lng - mLng || lng > a.max_lng + mLng;
}

function removeDriver(id) {
  if (!drivers.delete(id)) return;
  if (highlighted && highlighted.d.id === id) highlighted = null;
  if (driverLayer) driverLayer.redraw();
}

function openDriverPopup(entry) {
  const v = entry.d;
  const box = el('div', 'popup');
  box.append(el('strong', '', nameOf(v) || v.id));
  const dl = el('dl');
  const add = (k, val) => { dl.append(el('dt', '', k), el('dd', '', val)); };
  add('State', String(v.state || '').replace('_', ' '));
  add('Rating', ratingOf(v).trim() || 'not rated yet');
  add('ID', v.id);
  const t = timeOf(v.updated_at);
  add('Seen', Number.isFinite(t) ? `${fmtDuration(Date.now() - t)} ago` : '—');
  box.append(dl);
  L.popup({ offset: [0, -4] }).setLatLng([v.lat, v.lng]).setContent(box).openOn(map);
}

// ---------------------------------------------------------------------------------------------
// Bookings

const BOOKING_ICON = L && L.divIcon({
  className: 'booking-marker',
  html: '<div class="booking-pin"><svg viewBox="0 0 24 32" aria-hidden="true">' +
    '<path d="M12 1C6 1 1.5 5.5 1.5 11.3 1.5 19 12 31 12 31s10.5-12 10.5-19.7C22.5 5.5 18 1 12 1z" fill="currentColor" stroke="#fff" stroke-width="1.5"/>' +
    '<circle cx="12" cy="11.5" r="4" fill="#fff"/></svg></div>',
  iconSize: [22, 30],
  iconAnchor: [11, 30],
});

/** Applies one Booking; returns whether it is (still) shown. */
function upsertBooking(b) {
  if (!b || typeof b.id !== 'string' || b.id === '') return false;
  if (GONE.has(b.status)) {
    const e = bookings.get(b.id);
    if (e && selectedId === b.id) { e.b = b; renderDetail(); }
    removeBooking(b.id);
    return false;
  }
  const p = b.pickup || {};
  if (!isNum(p.lat) || !isNum(p.lng)) return bookings.has(b.id);

  let e = bookings.get(b.id);
  if (!e) {
    e = { b, marker: null, row: null, age: null };
    const marker = L.marker([p.lat, p.lng], { icon: BOOKING_ICON, keyboard: false, zIndexOffset: 1000 });
    e.marker = marker;
    marker.on('add', () => decorateBooking(e));
    marker.on('click', () => selectBooking(b.id, false));
    bookings.set(b.id, e);
    marker.addTo(bookingLayer);
    syncRow(e, null);
    return true;
  }
  const old = e.b;
  e.b = b;
  const op = old.pickup || {};
  if (op.lat !== p.lat || op.lng !== p.lng) e.marker.setLatLng([p.lat, p.lng]);
  const root = e.marker.getElement();
  if (root && old.status !== b.status) root.dataset.status = b.status;
  if (root) root.title = bookingTitle(b);
  syncRow(e, old);
  if (selectedId === b.id) renderDetail();
  return true;
}

function decorateBooking(e) {
  const root = e.marker.getElement();
  if (!root) return;
  root.dataset.bookingId = e.b.id;
  root.dataset.status = e.b.status;
  root.title = bookingTitle(e.b);
  root.classList.toggle('selected', selectedId === e.b.id);
}

function bookingTitle(b) {
  return `${placeText(b.pickup)} · ${String(b.status).replace('_', ' ')}`;
}

function removeBooking(id) {
  const e = bookings.get(id);
  if (!e) return;
  bookingLayer.removeLayer(e.marker);
  if (e.row) { e.row.remove(); e.row = null; updateQueueCount(); }
  bookings.delete(id);
}

// ---- the queue (searching, scheduled, unfulfilled)

function queueKey(b) {
  const rank = QUEUE_RANK[b.status];
  const t = b.status === 'scheduled' ? timeOf(b.start_at) : timeOf(b.created_at);
  return [rank, Number.isFinite(t) ? t : 0, b.id];
}

function keyLess(a, b) {
  for (let i = 0; i < a.length; i++) {
    if (a[i] < b[i]) return true;
    if (a[i] > b[i]) return false;
  }
  return false;
}

/** Adds, updates, moves or removes the queue row of a booking after a change. */
function syncRow(e, old) {
  const b = e.b;
  const inQueue = b.status in QUEUE_RANK;
  if (!inQueue) {
    if (e.row) { e.row.remove(); e.row = null; updateQueueCount(); }
    return;
  }
  if (!e.row) {
    buildRow(e);
    insertRow(e);
    updateQueueCount();
    return;
  }
  fillRow(e);
  if (!old || old.status !== b.status || old.start_at !== b.start_at || old.created_at !== b.created_at) {
    e.row.remove();
    insertRow(e);
  }
}

function insertRow(e) {
  const key = queueKey(e.b);
  e.key = key;
  let before = null;
  for (const row of ui.bookingList.children) {
    const other = bookings.get(row.dataset.bookingId);
    if (other && other.key && keyLess(key, other.key)) { before = row; break; }
  }
  ui.bookingList.insertBefore(e.row, before);
}

function buildRow(e) {
  const row = el('li', 'booking-row');
  e.row = row;
  row.tabIndex = 0;
  row.setAttribute('role', 'button');
  row.dataset.bookingId = e.b.id;
  e.rowAddr = el('span', 'addr');
  e.age = el('span', 'age');
  e.rowMeta = el('span', 'meta');
  row.append(e.rowAddr, e.age, e.rowMeta);
  row.addEventListener('click', () => selectBooking(e.b.id, true));
  row.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); selectBooking(e.b.id, true); }
  });
  row.classList.toggle('selected', selectedId === e.b.id);
  fillRow(e);
}

function fillRow(e) {
  const b = e.b;
  e.row.dataset.status = b.status;
  e.rowAddr.textContent = placeText(b.pickup);
  e.rowAddr.title = placeText(b.pickup);
  e.rowMeta.replaceChildren();
  const parts = [];
  if (isNum(b.hours)) parts.push(`${b.hours} h`);
  if (b.car && b.car.transmission) parts.push(b.car.transmission);
  parts.push(fmtFare(b.fare));
  if (b.status === 'scheduled') parts.push(`starts ${fmtClock(timeOf(b.start_at))}`);
  e.rowMeta.append(el('span', 'state', String(b.status).replace('_', ' ')), document.createTextNode(` · ${parts.join(' · ')}`));
  tickRow(e, Date.now());
}

function tickRow(e, now) {
  const t = timeOf(e.b.created_at);
  const text = Number.isFinite(t) ? fmtDuration(now - t) : '';
  if (e.age.textContent !== text) e.age.textContent = text;
}

function updateQueueCount() {
  const n = ui.bookingList.children.length;
  ui.queueCount.textContent = String(n);
  ui.queueEmpty.hidden = n > 0;
}

// ---- selection, detail and candidates

function selectBooking(id, pan) {
  const e = bookings.get(id);
  if (!e) return;
  if (selectedId !== id) {
    const prev = bookings.get(selectedId);
    if (prev) setSelectedClass(prev, false);
    selectedId = id;
    setSelectedClass(e, true);
  }
  if (pan) map.setView([e.b.pickup.lat, e.b.pickup.lng], Math.max(map.getZoom(), 14));
  ui.detail.hidden = false;
  detailKey = '';
  renderDetail();
}

function setSelectedClass(e, on) {
  if (e.row) e.row.classList.toggle('selected', on);
  const root = e.marker && e.marker.getElement();
  if (root) root.classList.toggle('selected', on);
}

function closeDetail() {
  const e = bookings.get(selectedId);
  if (e) setSelectedClass(e, false);
  selectedId = null;
  if (candidatesAbort) candidatesAbort.abort();
  candidatesAbort = null;
  highlightDriver(null);
  ui.detail.hidden = true;
  ui.candidates.replaceChildren();
  detailKey = '';
}
ui.detailClose.addEventListener('click', closeDetail);

function renderDetail() {
  const e = bookings.get(selectedId);
  if (!e) return;
  const b = e.b;
  ui.detailTitle.textContent = placeText(b.pickup);
  const dl = ui.detailFields;
  dl.replaceChildren();
  const add = (k, v) => { dl.append(el('dt', '', k), el('dd', '', v)); };
  add('Status', String(b.status).replace('_', ' '));
  const created = timeOf(b.created_at);
  const ageDd = el('dd', 'detail-age', Number.isFinite(created) ? `${fmtDuration(Date.now() - created)} ago` : '—');
  dl.append(el('dt', '', 'Created'), ageDd);
  const start = timeOf(b.start_at);
  add('Start', Number.isFinite(start) && Number.isFinite(created) && Math.abs(start - created) < 60000 ?
    'now (on demand)' : fmtClock(start));
  add('Hours', isNum(b.hours) ? String(b.hours) : '—');
  add('Car', (b.car && b.car.transmission) || '—');
  add('Fare', fmtFare(b.fare));
  if (b.driver) add('Driver', `${b.driver.name || b.driver.id}${isNum(b.driver.rating) && b.driver.rating > 0 ? ` ★${b.driver.rating.toFixed(1)}` : ''}`);
  if (b.otp_locked_until && timeOf(b.otp_locked_until) > Date.now()) add('OTP locked until', fmtClock(timeOf(b.otp_locked_until)));
  add('Customer', b.customer_id || '—');
  add('Booking', b.id);
  renderActions(b);
  const key = [b.id, b.status, b.driver ? b.driver.id : '', b.otp_locked_until || '', b.retried_at || ''].join('|');
  if (key !== detailKey) {
    detailKey = key;
    loadHistory(b);
    loadDriver(b);
    loadCandidates(b);
  }
}

// ---- follow-up: retry, cancel, the audit trail, the driver and their calendar

const CANCELLABLE = new Set(['scheduled', 'searching', 'unfulfilled', 'assigned', 'arrived', 'in_progress']);

function renderActions(b) {
  ui.detailActions.replaceChildren();
  if (b.status === 'unfulfilled') {
    const retry = el('button', 'retry', 'Retry search');
    retry.type = 'button';
    retry.addEventListener('click', () => bookingAction(b, 'retry', retry));
    ui.detailActions.append(retry);
  }
  if (CANCELLABLE.has(b.status)) {
    const cancel = el('button', 'cancel secondary', 'Cancel booking');
    cancel.type = 'button';
    cancel.addEventListener('click', () => bookingAction(b, 'cancel', cancel));
    ui.detailActions.append(cancel);
  }
}

async function bookingAction(b, action, btn) {
  btn.disabled = true;
  try {
    const nb = await api(`/v1/bookings/${encodeURIComponent(b.id)}/${action}`, {
      method: 'POST',
      body: action === 'cancel' ? { reason: 'cancelled by a dispatcher' } : undefined,
    });
    if (nb && nb.id) upsertBooking(nb);
    scheduleCounts();
    showNotice(action === 'retry' ? 'The booking searches again.' : 'The booking is cancelled.', 'info', 4000);
  } catch (err) {
    if (!token) return;
    showNotice(`Could not ${action} the booking: ${err.message} (${err.code})`);
    btn.disabled = false;
  }
}

async function loadHistory(b) {
  ui.history.replaceChildren(el('li', 'muted', 'Loading…'));
  let res;
  try {
    res = await api(`/v1/bookings/${encodeURIComponent(b.id)}/events`);
  } catch (err) {
    if (selectedId === b.id) ui.history.replaceChildren(el('li', 'muted', `Could not load the history: ${err.message}`));
    return;
  }
  if (selectedId !== b.id) return;
  ui.history.replaceChildren();
  for (const ev of res && Array.isArray(res.events) ? res.events : []) {
    const li = el('li', 'event');
    li.dataset.to = String(ev.to || '');
    li.dataset.actor = String(ev.actor || '');
    const move = `${ev.from ? `${String(ev.from).replace('_', ' ')} → ` : ''}${String(ev.to || '').replace('_', ' ')}`;
    li.append(el('span', 'when', fmtClock(timeOf(ev.at))), el('span', 'move', move), el('span', 'who', String(ev.actor || '')));
    if (ev.reason) li.append(el('span', 'why', String(ev.reason)));
    ui.history.append(li);
  }
}

async function loadDriver(b) {
  if (!b.driver || !b.driver.id) {
    ui.driverBox.hidden = true;
    return;
  }
  const id = b.driver.id;
  ui.driverBox.hidden = false;
  ui.driverInfo.dataset.driverId = id;
  ui.driverInfo.textContent = `${b.driver.name || id}${isNum(b.driver.rating) && b.driver.rating > 0 ? ` ★${b.driver.rating.toFixed(1)}` : ''}`;
  ui.driverCalendar.replaceChildren();
  const from = new Date(Date.now() - 12 * 3600e3).toISOString();
  const to = new Date(Date.now() + 7 * 24 * 3600e3).toISOString();
  let profile, cal;
  try {
    [profile, cal] = await Promise.all([
      api(`/v1/drivers/${encodeURIComponent(id)}/profile`),
      api(`/v1/drivers/${encodeURIComponent(id)}/calendar?${new URLSearchParams({ from, to })}`),
    ]);
  } catch (err) {
    if (selectedId === b.id) ui.driverCalendar.replaceChildren(el('li', 'muted', `Could not load the driver: ${err.message}`));
    return;
  }
  if (selectedId !== b.id) return;
  const rating = profile && isNum(profile.rating) && profile.rating > 0 ? ` ★${profile.rating.toFixed(1)}` : ' · not rated yet';
  const trips = profile && isNum(profile.trips) ? ` · ${profile.trips} trips` : '';
  ui.driverInfo.textContent = `${(profile && profile.name) || b.driver.name || id}${rating}${trips}`;
  const blocks = cal && Array.isArray(cal.blocks) ? cal.blocks : [];
  if (!blocks.length) ui.driverCalendar.append(el('li', 'muted', 'No bookings in the coming week.'));
  for (const k of blocks) {
    const li = el('li', k.booking_id === b.id ? 'block this' : 'block',
      `${fmtClock(timeOf(k.start_at))} – ${fmtClock(timeOf(k.end_at))}${k.booking_id === b.id ? ' (this booking)' : ''}`);
    li.dataset.bookingId = String(k.booking_id || '');
    ui.driverCalendar.append(li);
  }
}

let highlighted = null;
function highlightDriver(id) {
  highlighted = id ? drivers.get(id) || null : null;
  if (driverLayer) driverLayer.redraw();
}

async function loadCandidates(b) {
  if (candidatesAbort) candidatesAbort.abort();
  const abort = new AbortController();
  candidatesAbort = abort;
  ui.candidates.replaceChildren();
  if (b.status !== 'searching' && b.status !== 'scheduled') {
    ui.candidatesMessage.textContent = b.status === 'unfulfilled' ?
      'Retry the search to assign it, or cancel it.' : 'Only a searching or scheduled booking is assigned by hand.';
    return;
  }
  ui.candidatesMessage.textContent = 'Looking for free drivers whose calendar has room…';
  let list;
  try {
    // Online, free now, able to drive the car, with room in their calendar (the server decides).
    const res = await api(`/v1/bookings/${encodeURIComponent(b.id)}/candidates`, { signal: abort.signal });
    list = res && Array.isArray(res.drivers) ? res.drivers : [];
  } catch (err) {
    if (abort.signal.aborted) return;
    ui.candidatesMessage.textContent = `Could not load nearby drivers: ${err.message}`;
    return;
  }
  if (abort.signal.aborted || selectedId !== b.id) return;
  ui.candidatesMessage.textContent = list.length ? '' : 'No free driver within 15 km has room for it.';
  for (const v of list) {
    if (!v || typeof v.id !== 'string') continue;
    ui.candidates.append(buildCandidate(b, v));
  }
}

function buildCandidate(b, v) {
  const li = el('li', 'candidate');
  li.dataset.driverId = v.id;
  li.dataset.state = String(v.state || '');
  const left = el('div');
  const name = el('div', 'name', `${nameOf(v) || v.id}${ratingOf(v)}`);
  if (v.state && v.state !== 'available') name.append(el('span', 'cand-state', ` (${String(v.state).replace('_', ' ')})`));
  left.append(name);
  const dist = isNum(v.distance_m) ? v.distance_m :
    (isNum(v.lat) && isNum(v.lng) ? haversineM(v.lat, v.lng, b.pickup.lat, b.pickup.lng) : NaN);
  const t = timeOf(v.updated_at);
  const meta = [fmtDistance(dist), Number.isFinite(t) ? `seen ${fmtDuration(Date.now() - t)} ago` : ''].filter(Boolean).join(' · ');
  left.append(el('div', 'meta', meta));
  const btn = el('button', 'assign', 'Assign');
  btn.type = 'button';
  const result = el('div', 'result');
  result.hidden = true;
  btn.addEventListener('click', () => assign(b.id, v, btn, result));
  li.addEventListener('mouseenter', () => highlightDriver(v.id));
  li.addEventListener('mouseleave', () => highlightDriver(null));
  li.append(left, btn, result);
  return li;
}

async function assign(bookingId, v, btn, result) {
  btn.disabled = true;
  btn.textContent = 'Assigning…';
  result.hidden = true;
  try {
    const b = await api(`/v1/bookings/${encodeURIComponent(bookingId)}/assign`, {
      method: 'POST',
      body: { driver_id: v.id },
    });
    if (b && b.id) upsertBooking(b);
    scheduleCounts();
    result.className = 'result ok';
    result.textContent = `Assigned to ${v.name || v.id}`;
    result.hidden = false;
    btn.textContent = 'Assigned';
    for (const other of ui.candidates.querySelectorAll('button.assign')) other.disabled = true;
  } catch (err) {
    if (!token) return; // signed out by a 401
    result.className = 'result error';
    result.textContent = err.code && err.status ? `${err.message} (${err.code})` : err.message;
    result.hidden = false;
    btn.disabled = false;
    btn.textContent = 'Assign';
  }
}

// ---------------------------------------------------------------------------------------------
// Hexagons

function cellBalance(supply, demand) {
  const s = isNum(supply) ? supply : 0;
  const d = isNum(demand) ? demand : 0;
  if (s <= 0 && d <= 0) return 'empty';
  if (d <= 0) return 'idle';
  if (d <= s) return 'covered';
  if (s <= 0 || d >= 2 * s) return 'critical';
  return 'short';
}

function cellStyle(balance, c) {
  const n = Math.max(isNum(c.supply) ? c.supply : 0, isNum(c.demand) ? c.demand : 0);
  const step = Math.min(3, Math.floor(Math.log2(1 + n)));
  const color = hexColors[balance];
  // A surging market is outlined in the surge colour, thicker the higher its multiplier.
  const surge = isNum(c.surge) && c.surge > 1 ? c.surge : 0;
  return {
    key: `${balance}/${step}/${surge}`,
    style: {
      pane: 'cells',
      renderer: cellRenderer,
      color: surge ? hexColors.surge : color,
      weight: surge ? 1 + Math.round(4 * (surge - 1)) : 1,
      opacity: surge ? 0.9 : balance === 'empty' ? 0.25 : 0.6,
      fillColor: color,
      fillOpacity: balance === 'empty' ? 0.04 : 0.14 + 0.08 * step,
    },
  };
}

// Zoomed out, the server counts drivers per cell instead of sending them: the heat of those
// counts, one step per power of ten of drivers in the cell.
const HEAT_STEPS = ['1', '2', '3', '4', '5'];

function cellDrivers(c) {
  return (isNum(c.available) ? c.available : 0) + (isNum(c.busy) ? c.busy : 0);
}

function heatStyle(c) {
  const n = cellDrivers(c);
  const step = n <= 0 ? 0 : Math.min(HEAT_STEPS.length, 1 + Math.floor(Math.log10(n)));
  const color = step ? heatColors[HEAT_STEPS[step - 1]] : hexColors.empty;
  return {
    key: `heat/${step}`,
    style: {
      pane: 'heat',
      renderer: heatRenderer,
      color,
      weight: 1,
      opacity: step ? 0.7 : 0.25,
      fillColor: color,
      fillOpacity: step ? 0.25 + 0.1 * step : 0.04,
    },
  };
}

function cellText(c) {
  if (!c) return '';
  const num = (v) => (isNum(v) ? v : 0);
  if (viewMode === 'cells') {
    return `${cellDrivers(c)} drivers (${num(c.available)} available, ${num(c.busy)} busy) · demand ${num(c.demand)}`;
  }
  const surge = isNum(c.surge) && c.surge > 1 ? ` · surge ×${c.surge}` : '';
  return `supply ${num(c.supply)} · demand ${num(c.demand)}${surge}`;
}

function clearCells() {
  for (const e of cells.values()) e.layer.removeLayer(e.poly);
  cells.clear();
  cellRes = null;
}

/** A cells frame is the whole picture for the watched area: cells it omits are dropped. Drivers
 * one by one: the supply and demand hexagons (toggled); zoomed out: the heat of the counts. */
function applyCells(d) {
  const list = Array.isArray(d.cells) ? d.cells : [];
  if (d.res !== cellRes) {
    clearCells();
    cellRes = d.res;
  }
  const heat = viewMode === 'cells';
  const layer = heat ? heatLayer : cellLayer;
  const seen = new Set();
  for (const c of list) {
    if (!c || typeof c.h3 !== 'string') continue;
    const { key, style } = heat ? heatStyle(c) : cellStyle(cellBalance(c.supply, c.demand), c);
    const e = cells.get(c.h3);
    if (e) {
      seen.add(c.h3);
      e.c = c;
      if (e.key !== key) { e.key = key; e.poly.setStyle(style); }
      continue;
    }
    const ring = Array.isArray(c.boundary) ?
      c.boundary.filter((p) => Array.isArray(p) && isNum(p[0]) && isNum(p[1])) : [];
    if (ring.length < 3) continue; // no geometry: nothing to draw
    seen.add(c.h3);
    const poly = L.polygon(ring, style);
    const h3 = c.h3;
    poly.bindTooltip(() => cellText(cells.get(h3) && cells.get(h3).c), { sticky: true, direction: 'top' });
    cells.set(h3, { c, poly, key, layer });
    layer.addLayer(poly);
  }
  for (const [h3, e] of cells) {
    if (!seen.has(h3)) { e.layer.removeLayer(e.poly); cells.delete(h3); }
  }
}

// ---------------------------------------------------------------------------------------------
// Status line, notices, the one-second ticker

let countsQueued = false;
function scheduleCounts() {
  if (countsQueued) return;
  countsQueued = true;
  requestAnimationFrame(() => {
    countsQueued = false;
    renderCounts();
  });
}

function renderCounts() {
  let available = 0;
  let total = drivers.size;
  if (viewMode === 'cells') {
    total = 0;
    for (const e of cells.values()) { total += cellDrivers(e.c); available += isNum(e.c.available) ? e.c.available : 0; }
  } else {
    for (const e of drivers.values()) if (e.d.state === 'available') available++;
  }
  const open = ui.bookingList.children.length;
  const text = `${total} drivers (${available} available)${viewMode === 'cells' ? ' counted per cell' : ''} · ${bookings.size} bookings (${open} open)`;
  if (ui.counts.textContent !== text) ui.counts.textContent = text;
}

let noticeTimer = null;
function showNotice(message, kind = 'error', ms = 10000) {
  ui.notice.className = `notice ${kind}`;
  ui.notice.textContent = message;
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(hideNotice, ms);
}
function hideNotice() {
  clearTimeout(noticeTimer);
  ui.notice.hidden = true;
}

setInterval(() => {
  if (!token) return;
  const now = Date.now();
  for (const e of bookings.values()) if (e.row) tickRow(e, now);
  if (selectedId) {
    const e = bookings.get(selectedId);
    const dd = ui.detailFields.querySelector('.detail-age');
    const t = e ? timeOf(e.b.created_at) : NaN;
    if (dd && Number.isFinite(t)) dd.textContent = `${fmtDuration(now - t)} ago`;
  }
  if (conn.timer) updateRetryText();
}, 1000);

// ---------------------------------------------------------------------------------------------
// REST

async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'unavailable', 'the server could not be reached');
  }
  let json = null;
  try { json = await res.json(); } catch { /* empty or not JSON */ }
  if (!res.ok) {
    const e = json && json.error ? json.error : {};
    const err = new ApiError(res.status, e.code || `http_${res.status}`, e.message || `HTTP ${res.status}`);
    if (res.status === 401) signOut(`Signed out: ${err.message}. Sign in again.`);
    throw err;
  }
  return json;
}

// ---------------------------------------------------------------------------------------------
// Teardown and boot

function clearAll() {
  closeDetail();
  for (const id of [...drivers.keys()]) removeDriver(id);
  for (const id of [...bookings.keys()]) removeBooking(id);
  clearCells();
  if (map) map.closePopup();
  ui.bookingList.replaceChildren();
  updateQueueCount();
  renderCounts();
}

function boot() {
  if (!L) {
    showSignin('The map library did not load; reload the page.');
    return;
  }
  updateQueueCount();
  const stored = sessionStorage.getItem(TOKEN_KEY);
  if (stored) signIn(stored);
  else showSignin('');
}

// A read-only look at what the page shows, for the browser test (api/web/e2e): counters of
// frames applied and canvas draws, the view mode, and the drivers as drawn on the canvas.
window.dispatchMap = Object.freeze({
  stats: () => ({ ...mapStats, mode: viewMode, drivers: drivers.size, cells: cells.size, zoom: map ? map.getZoom() : null }),
  drawn: () => (driverLayer && map ? driverLayer.drawn() : []),
});

boot();

// gowa console. Plain JavaScript, no build step: the page talks to the
// gateway's own API (same origin, the browser's Basic auth) and listens to
// GET /events for every change, so nothing is polled. Text from the network
// is only ever set as textContent, never parsed as HTML. Nothing is kept in
// local storage; the simulated phones' numbers (not secrets) stay in
// sessionStorage.
'use strict';

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

// The API's own rules, so that the console refuses what the API would.
const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const PHONE = /^\+?[1-9][0-9]{6,14}$/;
const PHONE_RULE = 'A phone number is 7 to 15 digits, country code first, with an optional leading +.';

const EVENT_TYPES = ['device.created', 'device.deleted', 'device.pairing', 'device.connected',
  'device.disconnected', 'device.logged_out', 'message.received', 'message.sent', 'stream.gap'];
const MAX_EVENTS = 200;

const state = {
  devices: new Map(), // device_id → Device, as the API last answered
  rows: new Map(), // device_id → <tr>
  asked: 0, // every read of devices takes a number; a later one wins
  applied: new Map(), // device_id → the number of the read applied to it
  sandbox: false,
  phones: new Map(), // phone → {phone, push_name, jid}
  events: [], // newest last
  seen: new Set(), // event ids, against duplicates after a reconnect
  link: null, // the link dialog's pairing, see openLink
};

class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// api calls the gateway and returns the envelope's data, or throws an
// APIError carrying the envelope's message.
async function api(method, path, body, headers) {
  const init = { method, headers: { Accept: 'application/json', ...headers }, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch {
    throw new APIError(0, 'The gateway cannot be reached.');
  }
  let env = null;
  try {
    env = await resp.json();
  } catch {
    // not JSON: keep the status
  }
  if (resp.status === 401) {
    banner('Not signed in, or the credentials changed: reload the page to sign in.');
  }
  if (!resp.ok) {
    throw new APIError(resp.status, (env && env.message) || `HTTP ${resp.status}`);
  }
  return env ? env.data : null;
}

function banner(text) {
  const b = $('banner');
  b.textContent = text;
  b.hidden = !text;
}

let toastTimer = 0;
function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove('show'), 4000);
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'type' || k === 'name' || k === 'for' || k === 'value') e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function fmtTime(iso) {
  const d = new Date(iso);
  return isNaN(d) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - new Date(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

// ---- devices ----

async function loadDevices() {
  const n = ++state.asked;
  let list;
  try {
    list = await api('GET', '/devices');
  } catch (e) {
    if (e.status !== 401) toast(`Devices: ${e.message}`);
    return;
  }
  const ids = new Set(list.map((d) => d.device_id));
  for (const d of list) {
    if ((state.applied.get(d.device_id) || 0) < n) {
      state.applied.set(d.device_id, n);
      state.devices.set(d.device_id, d);
    }
  }
  for (const id of [...state.devices.keys()]) {
    if (!ids.has(id) && (state.applied.get(id) || 0) < n) {
      state.applied.set(id, n);
      state.devices.delete(id);
    }
  }
  renderDevices();
}

// refreshDevice reads one device again after an event about it; a read
// that returns after a later one is dropped.
async function refreshDevice(id) {
  const n = ++state.asked;
  let d = null;
  try {
    d = await api('GET', `/devices/${enc(id)}`);
  } catch (e) {
    if (e.status !== 404) return;
  }
  if ((state.applied.get(id) || 0) > n) return;
  state.applied.set(id, n);
  if (d) state.devices.set(id, d);
  else state.devices.delete(id);
  renderDevices();
}

const COLUMNS = [
  ['id', 'Device'], ['state', 'State'], ['phone', 'Phone'], ['name', 'Name'],
  ['platform', 'Platform'], ['since', 'Since'], ['err', 'Last error'], ['acts', 'Actions'],
];

function makeRow(id) {
  const tr = el('tr', { 'data-device': id });
  for (const [key, label] of COLUMNS) tr.append(el('td', { class: `col-${key}`, 'data-label': label }));
  const acts = el('div', { class: 'row-actions' });
  const button = (action, text, cls, onclick) => {
    const b = el('button', { type: 'button', class: `small ${cls}`, 'data-action': action, text, 'aria-label': `${text} ${id}` });
    b.addEventListener('click', onclick);
    acts.append(b);
  };
  button('link', 'Link', '', () => {
    // a pairing under way is shown the way it was started
    const d = state.devices.get(id);
    openLink(id, d && d.pairing && d.pairing.method === 'code' ? 'code' : 'qr');
  });
  button('reconnect', 'Reconnect', 'secondary', () => act(id, 'reconnect'));
  button('logout', 'Log out', 'secondary', () => act(id, 'logout'));
  button('delete', 'Delete', 'danger', () => act(id, 'delete'));
  tr.lastChild.append(acts);
  return tr;
}

function setRow(tr, d) {
  const cell = (k) => tr.querySelector(`td.col-${k}`);
  cell('id').textContent = d.device_id;
  const st = cell('state');
  st.replaceChildren(el('span', { class: 'state', 'data-state': d.state, text: d.state.replace('_', ' ') }));
  if (d.reason) st.append(el('span', { class: 'reason', text: d.reason.replaceAll('_', ' ') }));
  cell('phone').textContent = d.phone || '—';
  cell('name').textContent = d.push_name || '—';
  cell('platform').textContent = d.platform || '—';
  const since = el('time', { dateTime: d.state_since, title: new Date(d.state_since).toLocaleString(), text: ago(d.state_since) });
  cell('since').replaceChildren(since);
  cell('err').textContent = d.last_error || '';
  const show = (action, on) => { tr.querySelector(`[data-action="${action}"]`).hidden = !on; };
  const link = tr.querySelector('[data-action="link"]');
  link.textContent = d.state === 'pairing' ? 'Show code' : 'Link';
  show('link', !d.logged_in && d.state !== 'unlinking');
  show('reconnect', d.logged_in && d.state !== 'unlinking');
  show('logout', d.logged_in && d.state !== 'unlinking');
}

function renderDevices() {
  const ids = [...state.devices.keys()].sort();
  const body = $('device-rows');
  for (const [id, tr] of state.rows) {
    if (!state.devices.has(id)) {
      tr.remove();
      state.rows.delete(id);
    }
  }
  let prev = null;
  for (const id of ids) {
    let tr = state.rows.get(id);
    if (!tr) {
      tr = makeRow(id);
      state.rows.set(id, tr);
    }
    setRow(tr, state.devices.get(id));
    // keep the order by id without moving rows that are in place (a moved
    // row would lose the keyboard focus)
    const want = prev ? prev.nextSibling : body.firstChild;
    if (want !== tr) body.insertBefore(tr, want);
    prev = tr;
  }
  $('device-table').hidden = ids.length === 0;
  $('devices-empty').hidden = ids.length > 0;
  renderDeviceChoices();
}

let choicesShown = '';

// renderDeviceChoices fills the device pickers, only when what they list
// changed, so that an event never disturbs a picker in use.
function renderDeviceChoices() {
  const ids = [...state.devices.keys()].sort();
  const seen = [...new Set(state.events.map((ev) => ev.device_id).filter(Boolean))].sort();
  const shown = JSON.stringify([ids.map((id) => state.devices.get(id).state), ids, seen]);
  if (shown === choicesShown) return;
  choicesShown = shown;
  for (const [selId, first] of [['send-device', null], ['feed-device', 'All devices']]) {
    const sel = $(selId);
    const keep = sel.value;
    const opts = [];
    if (first) opts.push(el('option', { value: '', text: first }));
    const known = new Set(ids);
    if (first) for (const ev of state.events) if (ev.device_id) known.add(ev.device_id);
    for (const id of [...known].sort()) {
      const d = state.devices.get(id);
      const label = d && selId === 'send-device' ? `${id} (${d.state.replace('_', ' ')})` : id;
      opts.push(el('option', { value: id, text: label }));
    }
    sel.replaceChildren(...opts);
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
    else if (selId === 'send-device') {
      const connected = ids.find((id) => state.devices.get(id).state === 'connected');
      if (connected) sel.value = connected;
    }
  }
}

async function act(id, action) {
  const words = {
    logout: ['Log out', `Log ${id} out? It is unlinked on the phone too, and its session is deleted here.`],
    delete: ['Delete', `Delete ${id}? If it is linked it is unlinked on the phone, and the slot is removed.`],
  };
  if (words[action] && !(await confirmAction(words[action][0], words[action][1]))) return;
  try {
    if (action === 'delete') await api('DELETE', `/devices/${enc(id)}`);
    else await api('POST', `/devices/${enc(id)}/${action}`);
    toast({ logout: `${id} logged out`, delete: `${id} deleted`, reconnect: `${id} reconnecting` }[action]);
  } catch (e) {
    toast(`${action} ${id}: ${e.message}`);
  }
  refreshDevice(id);
}

function confirmAction(verb, text) {
  const dlg = $('confirm');
  $('confirm-title').textContent = `${verb}?`;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = verb;
  dlg.returnValue = '';
  dlg.showModal();
  return new Promise((resolve) => dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true }));
}

// ---- the link dialog ----

function openLink(id, method) {
  if (state.link && state.link.id !== id) closeLink();
  const fresh = !state.link;
  if (fresh) {
    // expires: when the QR code and the pairing code shown stop being
    // valid (performance.now() time) and how long each was given
    state.link = { id, method, seq: 0, qr: '', code: '', over: false, eventLife: 0, expires: {} };
    $('link-device').textContent = id;
    $('qr-img').hidden = true;
    $('qr-img').removeAttribute('src');
    $('qr-wait').hidden = false;
    $('qr-wait').textContent = 'Asking WhatsApp for a code…';
    $('qr-over').hidden = true;
    $('code-box').hidden = true;
    $('pair-code').textContent = '';
    $('qr-left').textContent = '–';
    $('code-left').textContent = '–';
    $('qr-bar').value = 0;
    $('link-error').textContent = '';
  }
  selectTab(method);
  if (!$('link').open) $('link').showModal();
  const d = state.devices.get(id);
  if (method === 'code' && fresh) {
    if (d && d.phone) $('code-phone').value = d.phone;
    $('code-phone').focus();
  }
}

function closeLink() {
  state.link = null;
  if ($('link').open) $('link').close();
}

function selectTab(method) {
  const link = state.link;
  if (link) link.method = method;
  for (const [m, tab, pane] of [['qr', 'tab-qr', 'pane-qr'], ['code', 'tab-code', 'pane-code']]) {
    const on = m === method;
    $(tab).setAttribute('aria-selected', String(on));
    $(tab).tabIndex = on ? 0 : -1;
    $(pane).hidden = !on;
  }
  // the QR tab shows the code the API holds now, whichever was shown before
  if (method === 'qr' && link && !link.over) fetchQR();
}

// fetchQR shows the code the API currently holds for the dialog's device.
// It runs when the dialog opens and on each device.pairing event: a
// rotation replaces the image in place (the frame keeps its size).
async function fetchQR() {
  const link = state.link;
  if (!link) return;
  const seq = ++link.seq;
  let d;
  try {
    d = await api('GET', `/devices/${enc(link.id)}/login`);
  } catch (e) {
    if (link !== state.link || seq !== link.seq) return;
    if (e.status === 409) {
      toast(`${link.id} is already linked`);
      closeLink();
      return;
    }
    $('link-error').textContent = e.message;
    $('qr-wait').textContent = 'No code.';
    return;
  }
  if (link !== state.link || seq !== link.seq) return;
  $('link-error').textContent = '';
  link.over = false;
  link.qr = d.qr_string;
  const img = $('qr-img');
  if (img.getAttribute('src') !== d.qr_code) img.src = d.qr_code;
  img.hidden = false;
  $('qr-wait').hidden = true;
  $('qr-over').hidden = true;
  // The event's own lifetime (expires_at - time) is to the millisecond;
  // the login answer's is whole seconds.
  setDeadline(link, link.eventLife || d.qr_duration * 1000, 'qr');
  link.eventLife = 0;
  $('scan-form').hidden = !state.sandbox || state.phones.size === 0;
  if (!state.devices.has(link.id)) refreshDevice(link.id);
}

function setDeadline(link, ms, which) {
  link.expires[which] = { at: performance.now() + ms, total: Math.max(1, Math.round(ms / 1000)) };
  tick();
}

// tick redraws the countdowns from the codes' own expiry.
function tick() {
  const link = state.link;
  if (!link) return;
  const left = (which) => Math.max(0, Math.ceil((link.expires[which].at - performance.now()) / 1000));
  if (link.expires.qr) {
    const s = left('qr');
    const bar = $('qr-bar');
    bar.max = link.expires.qr.total;
    bar.value = link.over ? 0 : s;
    $('qr-left').textContent = link.over ? 'Expired' : s > 0 ? `Expires in ${s} s` : 'Waiting for the next code…';
  }
  if (link.expires.code) {
    const s = left('code');
    $('code-left').textContent = link.over || s === 0 ? 'Expired: get a new code' : `Expires in ${fmtLeft(s)}`;
  }
}

function fmtLeft(s) {
  return s >= 60 ? `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s` : `${s} s`;
}

function seriesOver(reason) {
  const link = state.link;
  link.seq++; // a code still on its way belongs to the series that ended
  link.over = true;
  link.qr = '';
  if (link.method === 'code') {
    $('link-error').textContent = `The pairing ended${reason ? ` (${reason.replaceAll('_', ' ')})` : ''}. Get a new code to try again.`;
  }
  $('qr-img').hidden = true;
  $('qr-wait').hidden = true;
  $('qr-over').hidden = false;
  $('scan-form').hidden = true;
  $('enter-form').hidden = true;
  tick();
  if (link.method === 'qr') $('qr-new').focus();
}

async function requestCode(ev) {
  ev.preventDefault();
  const link = state.link;
  const input = $('code-phone');
  const phone = input.value.trim().replace(/[\s-]/g, '');
  if (!PHONE.test(phone)) {
    $('link-error').textContent = PHONE_RULE;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  input.removeAttribute('aria-invalid');
  $('link-error').textContent = '';
  const seq = ++link.seq;
  let d;
  try {
    d = await api('POST', `/devices/${enc(link.id)}/login/code`, { phone });
  } catch (e) {
    if (link === state.link) $('link-error').textContent = e.message;
    return;
  }
  if (link !== state.link || seq !== link.seq) return;
  link.over = false;
  link.code = d.code;
  $('pair-code').textContent = d.code;
  $('code-box').hidden = false;
  $('enter-form').hidden = !state.sandbox || state.phones.size === 0;
  const digits = phone.replace(/^\+/, '');
  if (state.phones.has(digits)) $('enter-phone').value = digits; // the phone the code is for
  setDeadline(link, d.duration * 1000, 'code');
  if (!state.devices.has(link.id)) refreshDevice(link.id);
}

// ---- the event stream ----

let stream = null;

function setLive(s, text) {
  const l = $('live');
  l.dataset.state = s;
  l.textContent = text;
}

function connectEvents() {
  stream = new EventSource('/events');
  stream.addEventListener('open', () => {
    setLive('live', 'live');
    loadDevices(); // what changed while the stream was down
  });
  stream.addEventListener('error', () => {
    if (stream.readyState === EventSource.CLOSED) {
      // refused (not 200): try again later rather than never
      setLive('down', 'no live updates');
      stream = null;
      setTimeout(connectEvents, 15000);
    } else {
      setLive('connecting', 'reconnecting…');
    }
  });
  for (const t of EVENT_TYPES) {
    stream.addEventListener(t, (m) => {
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch {
        return;
      }
      onEvent(ev);
    });
  }
}

function onEvent(ev) {
  if (ev.id && state.seen.has(ev.id)) return;
  if (ev.id) state.seen.add(ev.id);
  addToFeed(ev);
  const id = ev.device_id;
  const data = ev.data || {};
  if (ev.type === 'device.deleted') {
    state.applied.set(id, ++state.asked);
    state.devices.delete(id);
    renderDevices();
  } else if (ev.type.startsWith('device.') || ev.type === 'stream.gap') {
    if (ev.type === 'stream.gap') loadDevices();
    else refreshDevice(id);
  }
  const link = state.link;
  if (!link || link.id !== id) return;
  switch (ev.type) {
    case 'device.pairing':
      if (data.method === 'qr' && link.method === 'qr') {
        link.eventLife = new Date(data.expires_at) - new Date(ev.time);
        fetchQR();
      } else if (data.method === 'code' && link.code) {
        setDeadline(link, new Date(data.expires_at) - new Date(ev.time), 'code');
      }
      break;
    case 'device.connected':
      closeLink();
      toast(`${id} linked${data.push_name ? ` to ${data.push_name}` : ''}${data.phone ? ` (${data.phone})` : ''}`);
      break;
    case 'device.disconnected':
    case 'device.logged_out':
    case 'device.deleted':
      seriesOver(data.reason);
      break;
  }
}

function describe(ev) {
  const d = ev.data || {};
  switch (ev.type) {
    case 'device.pairing':
      return `${d.method === 'code' ? 'pairing code' : 'QR code'}, valid until ${fmtTime(d.expires_at)}`;
    case 'device.connected':
      return [d.push_name, d.phone, d.platform].filter(Boolean).join(' · ');
    case 'device.disconnected':
    case 'device.logged_out':
      return d.reason ? d.reason.replaceAll('_', ' ') : '';
    case 'message.received':
    case 'message.sent':
      return `${d.from_me ? 'to' : 'from'} ${d.chat || d.from || ''}${d.push_name && !d.from_me ? ` (${d.push_name})` : ''}: ${d.text || `[${d.type || 'message'}]`}`;
    case 'stream.gap':
      return 'some older events are no longer kept';
    default:
      return '';
  }
}

function eventItem(ev) {
  return el('li', { 'data-type': ev.type, 'data-device': ev.device_id || '' },
    el('time', { dateTime: ev.time, text: fmtTime(ev.time) }),
    el('span', {}, el('span', { class: 'type', text: ev.type }), ev.device_id ? ` · ${ev.device_id}` : ''),
    el('span', { class: 'detail', text: describe(ev) }));
}

function addToFeed(ev) {
  state.events.push(ev);
  if (state.events.length > MAX_EVENTS) state.events.shift();
  const filter = $('feed-device').value;
  if (ev.device_id && ![...$('feed-device').options].some((o) => o.value === ev.device_id)) renderDeviceChoices();
  if (!filter || filter === ev.device_id) {
    const list = $('events');
    list.prepend(eventItem(ev));
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  }
  $('events-empty').hidden = $('events').children.length > 0;
}

function renderFeed() {
  const filter = $('feed-device').value;
  const items = state.events.filter((ev) => !filter || ev.device_id === filter).reverse().map(eventItem);
  $('events').replaceChildren(...items);
  $('events-empty').hidden = items.length > 0;
}

// ---- the sandbox's simulated phones ----

function savePhones() {
  sessionStorage.setItem('gowa.phones', JSON.stringify([...state.phones.values()]));
}

function renderPhones() {
  const list = $('phones');
  const phones = [...state.phones.values()];
  list.replaceChildren(...phones.map(phoneItem));
  for (const sel of [$('scan-phone'), $('enter-phone')]) {
    const keep = sel.value;
    sel.replaceChildren(...phones.map((p) => el('option', { value: p.phone, text: `${p.push_name || p.phone} (${p.phone})` })));
    if (phones.some((p) => p.phone === keep)) sel.value = keep;
  }
  const link = state.link;
  $('scan-form').hidden = !state.sandbox || !link || !link.qr || link.over || phones.length === 0;
  $('enter-form').hidden = !state.sandbox || !link || !link.code || link.over || phones.length === 0;
}

function phoneItem(p) {
  const li = el('li', { 'data-phone': p.phone });
  const inbox = el('button', { type: 'button', class: 'small secondary', text: 'Inbox', 'aria-label': `Inbox of ${p.phone}` });
  inbox.addEventListener('click', () => openInbox(p));
  li.append(el('div', { class: 'actions' }, el('span', { class: 'who', text: p.push_name || p.phone }),
    el('span', { class: 'hint', text: p.phone }), inbox));
  const to = el('input', { name: 'to', required: true, autocomplete: 'off', placeholder: 'to: phone', inputMode: 'tel' });
  const text = el('input', { name: 'message', required: true, autocomplete: 'off', value: 'Hi there' });
  const form = el('form', { class: 'send-from', 'aria-label': `Send from ${p.phone}` },
    el('label', {}, 'To', to), el('label', {}, 'Message', text), el('button', { type: 'submit', class: 'small', text: 'Send' }));
  const device = [...state.devices.values()].find((d) => d.phone && d.phone !== p.phone);
  if (device) to.value = device.phone;
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!to.value.trim() || !text.value) {
      toast('Give a recipient and a message.');
      return;
    }
    try {
      const r = await api('POST', `/sandbox/phones/${enc(p.phone)}/send`, { to: to.value.trim(), message: text.value });
      toast(`Sent from ${p.phone}${r && r.delivered ? `, delivered to ${r.delivered.length} device(s)` : ''}`);
    } catch (e) {
      toast(`Send from ${p.phone}: ${e.message}`);
    }
  });
  li.append(form);
  return li;
}

async function addPhone(ev) {
  ev.preventDefault();
  const phone = $('phone-number').value.trim().replace(/[\s-]/g, '');
  const name = $('phone-name').value.trim();
  if (!PHONE.test(phone)) {
    $('phone-result').textContent = PHONE_RULE;
    $('phone-number').focus();
    return;
  }
  try {
    const p = await api('POST', '/sandbox/phones', name ? { phone, push_name: name } : { phone });
    state.phones.set(p.phone, p);
    savePhones();
    renderPhones();
    $('phone-result').textContent = `Added ${p.push_name || p.phone}.`;
    $('phone-number').value = '';
    $('phone-name').value = '';
  } catch (e) {
    $('phone-result').textContent = e.message;
  }
}

async function openInbox(p) {
  $('inbox-title').textContent = `Inbox of ${p.push_name || p.phone}`;
  let msgs = [];
  try {
    msgs = await api('GET', `/sandbox/phones/${enc(p.phone)}/messages`);
  } catch (e) {
    toast(`Inbox: ${e.message}`);
    return;
  }
  $('inbox-list').replaceChildren(...msgs.slice().reverse().map((m) => el('li', {},
    el('span', { class: 'meta', text: `${new Date(m.timestamp).toLocaleString()} · ${m.from_me ? 'sent to' : 'from'} ${m.from_me ? m.chat : m.from}` }),
    m.text)));
  $('inbox-empty').hidden = msgs.length > 0;
  $('inbox').showModal();
}

async function simulate(ev, kind) {
  ev.preventDefault();
  const link = state.link;
  if (!link) return;
  const phone = $(kind === 'scan' ? 'scan-phone' : 'enter-phone').value;
  if (!phone) {
    toast('Add a simulated phone first.');
    return;
  }
  try {
    if (kind === 'scan') await api('POST', `/sandbox/phones/${enc(phone)}/scan`, { qr: link.qr });
    else await api('POST', `/sandbox/phones/${enc(phone)}/link-code`, { code: link.code });
  } catch (e) {
    if (link === state.link) $('link-error').textContent = e.message;
  }
}

async function detectSandbox() {
  try {
    await api('GET', '/sandbox/connections');
  } catch {
    return;
  }
  state.sandbox = true;
  $('mode').hidden = false;
  $('sandbox').hidden = false;
  try {
    for (const p of JSON.parse(sessionStorage.getItem('gowa.phones') || '[]')) state.phones.set(p.phone, p);
  } catch {
    // a bad entry: start empty
  }
  renderPhones();
}

// ---- start ----

function start() {
  $('new-device').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const method = ev.submitter && ev.submitter.value === 'code' ? 'code' : 'qr';
    const input = $('new-id');
    let id = input.value.trim();
    if (id && !DEVICE_ID.test(id)) {
      input.setAttribute('aria-invalid', 'true');
      toast('A device id is 1 to 64 letters, digits, “.”, “_” or “-”, starting with a letter or digit.');
      input.focus();
      return;
    }
    input.removeAttribute('aria-invalid');
    if (!id) {
      try {
        id = (await api('POST', '/devices')).device_id;
      } catch (e) {
        toast(e.message);
        return;
      }
    }
    input.value = '';
    openLink(id, method);
  });
  $('link-close').addEventListener('click', closeLink);
  $('link').addEventListener('close', () => { state.link = null; });
  $('qr-new').addEventListener('click', () => {
    const link = state.link;
    link.over = false;
    $('qr-over').hidden = true;
    $('qr-wait').hidden = false;
    $('qr-wait').textContent = 'Asking WhatsApp for a code…';
    fetchQR();
  });
  for (const [tab, method] of [['tab-qr', 'qr'], ['tab-code', 'code']]) {
    $(tab).addEventListener('click', () => selectTab(method));
    $(tab).addEventListener('keydown', (e) => {
      if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
        const other = method === 'qr' ? 'code' : 'qr';
        selectTab(other);
        $(`tab-${other}`).focus();
      }
    });
  }
  $('code-form').addEventListener('submit', requestCode);
  $('scan-form').addEventListener('submit', (e) => simulate(e, 'scan'));
  $('enter-form').addEventListener('submit', (e) => simulate(e, 'code'));
  $('phone-form').addEventListener('submit', addPhone);
  $('inbox-close').addEventListener('click', () => $('inbox').close());
  $('feed-device').addEventListener('change', renderFeed);
  $('send-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const device = $('send-device').value;
    const phone = $('send-to').value.trim();
    const message = $('send-text').value;
    const out = $('send-result');
    if (!device || !phone || !message) {
      out.textContent = 'Choose a device and give a recipient and a message.';
      return;
    }
    try {
      const r = await api('POST', '/send/message', { phone, message }, { 'X-Device-Id': device });
      out.textContent = `Sent (${r.message_id}).`;
    } catch (e) {
      out.textContent = e.message;
    }
  });
  setInterval(() => {
    tick();
    for (const t of document.querySelectorAll('td.col-since time')) t.textContent = ago(t.dateTime);
  }, 500);

  loadDevices();
  detectSandbox();
  connectEvents();
}

start();

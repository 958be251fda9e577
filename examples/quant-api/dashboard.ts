/**
 * The demo's dashboard: one self-contained page (no CDN, no network fetch but this API's own
 * routes). It logs in, shows the balance and grants, draws usage as an SVG bar chart, lists
 * transactions, and calls the priced endpoints.
 */
export const dashboardHtml = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Quant API — credits dashboard</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1d2330; background: #f4f6fa; }
  body { margin: 0 auto; max-width: 980px; padding: 24px; }
  h1 { font-size: 22px; margin: 0 0 4px; }
  .muted { color: #6b7385; font-size: 13px; }
  .card { background: #fff; border-radius: 10px; padding: 16px 18px; margin: 14px 0; box-shadow: 0 1px 3px #0001; }
  .row { display: flex; gap: 14px; flex-wrap: wrap; align-items: center; }
  .big { font-size: 32px; font-weight: 650; }
  button { border: 0; border-radius: 7px; padding: 8px 12px; background: #2851e6; color: #fff; cursor: pointer; font-size: 14px; }
  button.secondary { background: #e3e8f4; color: #1d2330; }
  input { padding: 7px 9px; border: 1px solid #c9cfdc; border-radius: 7px; font-size: 14px; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eef0f5; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .neg { color: #b42318; } .pos { color: #067647; }
  #status { min-height: 20px; font-size: 13px; }
  svg text { font-size: 10px; fill: #6b7385; }
  .hidden { display: none; }
</style>
</head>
<body>
<h1>Quant API</h1>
<div class="muted">A demo of creditgate: every priced call is held from your balance, charged only when it succeeds.</div>

<div class="card" id="auth">
  <form id="login-form" class="row" autocomplete="off">
    <input id="email" type="email" placeholder="email" required>
    <input id="password" type="password" placeholder="password (8+ characters)" required minlength="8">
    <button id="login-btn" type="submit">Log in</button>
    <button id="register-btn" type="button" class="secondary">Register (350 credits)</button>
    <button id="guest-btn" type="button" class="secondary">Try as guest (50 credits, 24 h)</button>
  </form>
</div>

<div id="app" class="hidden">
  <div class="card row">
    <div>
      <div class="muted">Balance (<span id="account-type"></span>)</div>
      <div class="big" id="balance">–</div>
      <div class="muted"><span id="available"></span> available, <span id="pending"></span> held</div>
    </div>
    <div style="flex:1"></div>
    <button class="secondary" id="logout-btn">Log out</button>
  </div>

  <div class="card">
    <div class="row">
      <button id="call-free">Business day? (free)</button>
      <button id="call-basic">Mean &amp; std dev (1)</button>
      <button id="call-standard">Black–Scholes (2)</button>
      <button id="call-pro">Value-at-risk (5)</button>
      <button id="call-bad" class="secondary">Bad parameters (costs nothing)</button>
    </div>
    <div class="row" style="margin-top:10px">
      <button class="secondary" id="buy-500">Buy 500 credits</button>
      <button class="secondary" id="subscribe-basic">Subscribe: Basic (500 / month)</button>
      <button class="secondary" id="cancel-sub">Cancel subscription</button>
    </div>
    <pre id="status"></pre>
  </div>

  <div class="card">
    <div class="muted">Grants, spent soonest-expiring first</div>
    <table><thead><tr><th>source</th><th class="num">credits</th><th>expires</th></tr></thead><tbody id="grants"></tbody></table>
  </div>

  <div class="card">
    <div class="muted">Usage, last 24 hours (requests per hour; charged credits in the total)</div>
    <svg id="usage-chart" width="100%" height="160" viewBox="0 0 720 160" role="img" aria-label="requests per hour"></svg>
    <div class="muted" id="usage-total"></div>
  </div>

  <div class="card">
    <div class="muted">Transactions, newest first</div>
    <table><thead><tr><th>time</th><th>kind</th><th>source / endpoint</th><th class="num">amount</th><th class="num">balance</th></tr></thead><tbody id="transactions"></tbody></table>
  </div>
</div>

<script>
'use strict'
const $ = (id) => document.getElementById(id)
let token = sessionStorage.getItem('token')

async function api(method, path, body) {
  const headers = { accept: 'application/json' }
  if (token) headers.authorization = 'Bearer ' + token
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const json = await res.json().catch(() => ({}))
  return { status: res.status, json, cost: res.headers.get('x-credits-cost'), remaining: res.headers.get('x-credits-remaining') }
}

function show(text) { $('status').textContent = text }
const fmt = (n) => Number(n).toLocaleString('en-US', { maximumFractionDigits: 3 })
const when = (ms) => (ms === null ? 'never' : new Date(ms).toISOString().replace('T', ' ').slice(0, 16) + ' UTC')

async function signIn(path, body) {
  const r = await api('POST', path, body)
  if (!r.json.success) { show(r.status + ' ' + (r.json.message || 'failed')); return }
  token = r.json.data.token
  sessionStorage.setItem('token', token)
  await refresh()
}

$('login-form').addEventListener('submit', (e) => { e.preventDefault(); signIn('/auth/login', { email: $('email').value, password: $('password').value }) })
$('register-btn').addEventListener('click', () => signIn('/auth/register', { email: $('email').value, password: $('password').value }))
$('guest-btn').addEventListener('click', () => signIn('/auth/guest'))
$('logout-btn').addEventListener('click', () => { token = null; sessionStorage.removeItem('token'); $('app').classList.add('hidden'); $('auth').classList.remove('hidden') })

const calls = {
  'call-free': '/quantlib/calendar/business-day?date=' + new Date().toISOString().slice(0, 10),
  'call-basic': '/quantlib/stats/summary?values=101.2,99.8,100.4,102.9,98.7,100.1',
  'call-standard': '/quantlib/options/black-scholes?spot=100&strike=105&rate=0.04&volatility=0.25&years=0.5&kind=call',
  'call-pro': '/quantlib/risk/var?confidence=0.95&position=1000000&returns=' + Array.from({ length: 60 }, (_, i) => (Math.sin(i * 1.7) / 40).toFixed(4)).join(','),
  'call-bad': '/quantlib/options/black-scholes?spot=-1&strike=100&rate=0.04&volatility=0.25&years=1',
}
for (const [id, path] of Object.entries(calls)) {
  $(id).addEventListener('click', async () => {
    const r = await api('GET', path)
    show(r.status + '  cost ' + (r.cost ?? '-') + ', remaining ' + (r.remaining ?? '-') + '\\n' + JSON.stringify(r.json.data ?? r.json, null, 1).slice(0, 400))
    await refresh()
  })
}
$('buy-500').addEventListener('click', async () => { const r = await api('POST', '/billing/checkout', { pack: 'pack_500' }); show(r.status + ' ' + JSON.stringify(r.json)); await refresh() })
$('subscribe-basic').addEventListener('click', async () => { const r = await api('POST', '/billing/subscribe', { plan: 'basic' }); show(r.status + ' ' + JSON.stringify(r.json)); await refresh() })
$('cancel-sub').addEventListener('click', async () => { const r = await api('POST', '/billing/cancel'); show(r.status + ' ' + JSON.stringify(r.json)); await refresh() })

function drawUsage(series) {
  const svg = $('usage-chart')
  const W = 720, H = 160, pad = 22
  const max = Math.max(1, ...series.map((p) => p.requests))
  const w = (W - pad * 2) / Math.max(1, series.length)
  let out = '<line x1="' + pad + '" y1="' + (H - pad) + '" x2="' + (W - pad) + '" y2="' + (H - pad) + '" stroke="#c9cfdc"/>'
  out += '<text x="2" y="12">' + max + '</text><text x="2" y="' + (H - pad) + '">0</text>'
  series.forEach((p, i) => {
    const h = ((H - pad * 2) * p.requests) / max
    const x = pad + i * w + 1
    out += '<rect class="bar" data-requests="' + p.requests + '" x="' + x.toFixed(1) + '" y="' + (H - pad - h).toFixed(1) + '" width="' + Math.max(1, w - 2).toFixed(1) + '" height="' + h.toFixed(1) + '" fill="#2851e6"><title>' + when(p.start) + ': ' + p.requests + ' requests, ' + fmt(p.credits) + ' credits</title></rect>'
    if (i % 4 === 0) out += '<text x="' + x.toFixed(1) + '" y="' + (H - 6) + '">' + new Date(p.start).toISOString().slice(11, 13) + 'h</text>'
  })
  svg.innerHTML = out
}

async function refresh() {
  const [credits, usage, txs] = await Promise.all([
    api('GET', '/user/credits'),
    api('GET', '/user/usage?granularity=hour'),
    api('GET', '/user/transactions?limit=20'),
  ])
  if (credits.status === 401) { token = null; sessionStorage.removeItem('token'); return }
  $('auth').classList.add('hidden')
  $('app').classList.remove('hidden')
  const c = credits.json.data
  $('balance').textContent = c.unlimited ? 'unlimited' : fmt(c.balance)
  $('available').textContent = fmt(c.available)
  $('pending').textContent = fmt(c.pending)
  $('account-type').textContent = c.accountType
  $('grants').innerHTML = c.grants.map((b) => '<tr><td>' + b.source + '</td><td class="num">' + fmt(b.amount) + '</td><td>' + when(b.expiresAt) + '</td></tr>').join('')
  if (usage.json.success) {
    drawUsage(usage.json.data.series)
    const t = usage.json.data.summary
    $('usage-total').textContent = t.requests + ' requests, ' + fmt(t.credits) + ' credits charged, ' + t.refunds + ' refunded'
  }
  if (txs.json.success) {
    $('transactions').innerHTML = txs.json.data.transactions.map((t) =>
      '<tr><td>' + when(t.time) + '</td><td>' + t.kind + '</td><td>' + (t.endpoint || t.source) + '</td><td class="num ' + (t.amount < 0 ? 'neg' : 'pos') + '">' + (t.amount > 0 ? '+' : '') + fmt(t.amount) + '</td><td class="num">' + fmt(t.balanceAfter) + '</td></tr>').join('')
  }
}

if (token) refresh()
</script>
</body>
</html>
`

import http from 'node:http'

import express from 'express'
import { Redis } from 'ioredis'

import { RedisLedger, createCreditGate } from '../../src/index'
import { EventLog, identifyByHeader, listen } from '../helpers/gate'
import { interceptScripts } from '../helpers/intercept'
import { uniquePrefix } from '../helpers/redis'
import { spawnRedis } from '../setup/redis-process'
import { runLoad } from './gate-helpers/http-load'
import { tally } from './gate-helpers/ledger-state'

/**
 * `SCRIPT FLUSH` every 500 ms while a gated app serves a load: each EVALSHA that meets NOSCRIPT
 * is sent again as EVAL by the ledger, inside the same call, so no request fails and every
 * charge is exact. A private redis-server: the flushes must not reach other test files.
 */

jest.setTimeout(60_000)

it('SCRIPT FLUSH every 500 ms under HTTP load: no failed request, every 2xx charged exactly once, nothing pending', async () => {
  const server = await spawnRedis()
  const raw = new Redis(server.url)
  const admin = new Redis(server.url)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })
  let web: Awaited<ReturnType<typeof listen>> | undefined
  try {
    // Counts every EVALSHA and EVAL: an EVAL is a fallback after NOSCRIPT.
    const evals = { evalsha: 0, eval: 0 }
    const client = interceptScripts(raw, ({ name }, send) => {
      evals[name] += 1
      return send()
    })
    const ledger = new RedisLedger({
      redis: client,
      prefix: uniquePrefix(),
      accountTypes: { big: { signupCredits: 1000 } },
    })
    const ids = Array.from({ length: 100 }, (_, i) => `f${i}`)
    for (const id of ids) await ledger.openAccount(id, { type: 'big' })
    const gate = createCreditGate({ ledger, identify: identifyByHeader() })
    const log = new EventLog(gate)
    const app = express()
    app.get('/basic', gate('basic'), (_req, res) => {
      res.json({ ok: true })
    })
    web = await listen(app)

    let flushes = 0
    let running = true
    const loadRunning = (): boolean => running
    const flusher = (async () => {
      while (loadRunning()) {
        await new Promise((r) => setTimeout(r, 500))
        if (!loadRunning()) break
        expect(await admin.script('FLUSH')).toBe('OK')
        flushes += 1
      }
    })()
    const evalsBefore = evals.eval
    const results = await runLoad({
      baseUrl: web.url,
      workers: 8,
      // A cap well above what 4 s can send (100 accounts × 1000 credits): time ends the load,
      // so the flushes keep coming for the whole run however fast the machine is.
      maxRequests: 60_000,
      durationMs: 4000,
      agent,
      request: (n) => ({ path: '/basic', account: ids[n % ids.length]! }),
    })
    running = false
    await flusher

    const ok = results.filter((r) => r.status === 200)
    await log.settled(ok.length, 20_000)
    const balances = await Promise.all(ids.map((id) => ledger.balance(id)))
    const okByAccount = tally(ok.map((r) => r.account))
    const charged = balances.reduce((sum, b) => sum + (1000 - b.balance), 0)
    const statuses = tally(results.map((r) => r.status ?? r.error))
    console.log(
      `SCRIPT FLUSH every 500 ms: requests sent ${results.length} over ${ids.length} accounts, flushes ${flushes}, ` +
        `NOSCRIPT fallbacks to EVAL ${evals.eval - evalsBefore} (of ${evals.evalsha} EVALSHA), ` +
        `statuses ${JSON.stringify(Object.fromEntries(statuses))}, 2xx received ${ok.length}, ` +
        `charged ${charged}, refunded ${log.of('refunded').length}, ledger errors ${log.of('ledgerError').length}, ` +
        `pending ${balances.reduce((s, b) => s + b.pending, 0)}, lost: ${Math.abs(charged - ok.length)}`,
    )
    expect(flushes).toBeGreaterThanOrEqual(5)
    expect(evals.eval - evalsBefore).toBeGreaterThanOrEqual(flushes) // the flushes did bite
    expect(ok).toHaveLength(results.length) // no failed request: no 5xx, no 503, no reset
    expect(log.of('ledgerError')).toEqual([])
    expect(log.of('refunded')).toEqual([])
    expect(log.of('charged')).toHaveLength(ok.length)
    expect(charged).toBe(ok.length)
    expect(balances.map((b) => [b.accountId, 1000 - b.balance, b.pending])).toEqual(
      ids.map((id) => [id, okByAccount.get(id) ?? 0, 0]),
    )
  } finally {
    agent.destroy()
    await web?.close()
    raw.disconnect()
    admin.disconnect()
    await server.stop()
  }
})

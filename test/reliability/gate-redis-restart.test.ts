import http from 'node:http'

import express from 'express'
import { Redis } from 'ioredis'

import { RedisLedger, createCreditGate, getCredits, type CreditLedger } from '../../src/index'
import { EventLog, deferred, identifyByHeader, listen } from '../helpers/gate'
import { uniquePrefix } from '../helpers/redis'
import { spawnRedis, type RedisProcess } from '../setup/redis-process'
import { runLoad, send } from './gate-helpers/http-load'
import { redisNow, tally, waitForRedisTime } from './gate-helpers/ledger-state'

/**
 * redis-server SIGKILLed and started again on the same port, with the same AOF
 * (`appendfsync always`: Redis answers a write only once it is on disk), twice, under HTTP load
 * on a gated Express app whose ioredis client keeps its default reconnect settings (backoff
 * 50 ms × attempt, commands queued while offline and resent after a reconnect, 20 retries per
 * command).
 *
 * Why no 2xx can go uncharged here: the gate sends the commit after the response; during the
 * outage ioredis queues it (or resends it, if it was in flight) and runs it after the reconnect,
 * about 1 s later. The commit is idempotent by hold id, so a resend of one that already ran is
 * replayed, not charged again. A 2xx goes uncharged only if its commit reaches Redis after the
 * hold's deadline (outage longer than holdMs, or ioredis giving up after its 20 retries and the
 * gate after its 3): the hold then expires and the gate reports `refunded` with reason
 * `expired`. The test counts those and asserts charged + expired-after-2xx = 2xx, and that with
 * holdMs 5 s and a restart within ~1 s there are none.
 */

jest.setTimeout(120_000)

const HOLD_MS = 5000
const BIG = 100
const SMALL = 2

let server: RedisProcess | undefined
const clients: Redis[] = []
afterAll(async () => {
  for (const c of clients) c.disconnect()
  await server?.stop()
})

it('Redis SIGKILLed and restarted on the same port with AOF under HTTP load: every 2xx is charged exactly once, no 402/500/503 is charged, no hold stays pending, nothing goes negative', async () => {
  server = await spawnRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  const redis = new Redis(server.url) // ioredis defaults
  redis.on('error', () => undefined) // connection errors are expected during the outages
  clients.push(redis)
  const prefix = uniquePrefix()
  const ledger = new RedisLedger({
    redis,
    prefix,
    accountTypes: { big: { signupCredits: BIG }, small: { signupCredits: SMALL } },
  })
  const bigIds = Array.from({ length: 300 }, (_, i) => `b${i}`)
  const smallIds = Array.from({ length: 20 }, (_, i) => `s${i}`)
  const initial = new Map<string, number>()
  for (const id of bigIds) initial.set(id, BIG)
  for (const id of smallIds) initial.set(id, SMALL)
  for (let i = 0; i < bigIds.length; i += 50) {
    await Promise.all(bigIds.slice(i, i + 50).map((id) => ledger.openAccount(id, { type: 'big' })))
  }
  await Promise.all(smallIds.map((id) => ledger.openAccount(id, { type: 'small' })))

  // The real ledger, counting the commits the gate sends while Redis is down.
  let down = false
  let commitsWhileDown = 0
  const counting: CreditLedger = {
    get accountTypes() {
      return ledger.accountTypes
    },
    reserve: (...args) => ledger.reserve(...args),
    release: (...args) => ledger.release(...args),
    commit: (...args) => {
      if (down) commitsWhileDown += 1
      return ledger.commit(...args)
    },
  }
  const gate = createCreditGate({
    ledger: counting,
    identify: identifyByHeader(),
    holdMs: HOLD_MS,
    ledgerTimeoutMs: 500, // a reserve stuck in the outage answers 503 within 0.5 s
    retryAfterSeconds: 1,
  })
  const log = new EventLog(gate)
  /** The hold of every call whose handler ran: each must be settled exactly once. */
  const handled = new Map<string, { account: string; status: number }>()
  const app = express()
  app.get('/basic', gate('basic'), (req, res) => {
    handled.set(getCredits(req)!.holdId!, { account: getCredits(req)!.accountId, status: 200 })
    res.json({ ok: true })
  })
  // A slow handler: calls reserved just before a kill answer during the outage, so their
  // commits are sent while Redis is down.
  app.get('/slow', gate('basic'), async (req, res) => {
    handled.set(getCredits(req)!.holdId!, { account: getCredits(req)!.accountId, status: 200 })
    await new Promise((r) => setTimeout(r, 100))
    res.json({ ok: true })
  })
  app.get('/fail', gate('basic'), (req, res) => {
    handled.set(getCredits(req)!.holdId!, { account: getCredits(req)!.accountId, status: 500 })
    res.status(500).json({ error: 'failed' })
  })
  const web = await listen(app)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 12 })
  const redisServer = server
  try {
    const outages: { from: number; to: number }[] = []
    const chaos = async (): Promise<void> => {
      for (const at of [1000, 2800]) {
        await new Promise((r) => setTimeout(r, at - (Date.now() - started)))
        const from = Date.now()
        down = true
        await redisServer.kill() // SIGKILL: no shutdown save
        await new Promise((r) => setTimeout(r, 400))
        await redisServer.restart() // same port, same AOF; waits for PONG
        down = false
        outages.push({ from, to: Date.now() })
      }
    }
    const started = Date.now()
    const [results] = await Promise.all([
      runLoad({
        baseUrl: web.url,
        workers: 12,
        maxRequests: 4000,
        durationMs: 4500,
        agent,
        request: (n) => ({
          path: n % 15 === 7 ? '/fail' : n % 20 === 11 ? '/slow' : '/basic',
          account: n % 10 === 3 ? smallIds[n % smallIds.length]! : bigIds[n % bigIds.length]!,
        }),
      }),
      chaos(),
    ])
    const loadEnded = Date.now()

    // Settlement: every call whose handler ran is reported charged or refunded (or given up).
    const settledHolds = (): Set<string> =>
      new Set([
        ...log.of('charged').map((e) => e.holdId),
        ...log.of('refunded').map((e) => e.holdId),
        ...log
          .of('ledgerError')
          .filter((e) => !e.willRetry && e.phase !== 'reserve')
          .map((e) => e.holdId!),
      ])
    await log.waitFor(
      () => [...handled.keys()].every((h) => settledHolds().has(h)),
      'every handled call to be settled',
      30_000,
    )
    // Past holdMs, touch every account: a hold nobody settled (a reserve answered after the
    // gate's deadline and not released) is voided now.
    await waitForRedisTime(redis, (await redisNow(redis)) + HOLD_MS + 100)
    const balances = new Map<string, { balance: number; available: number; pending: number }>()
    for (const id of [...bigIds, ...smallIds]) balances.set(id, await ledger.balance(id))

    const byStatus = tally(results.map((r) => r.status ?? r.error))
    const ok = results.filter((r) => r.status === 200)
    const okByAccount = tally(ok.map((r) => r.account))
    const chargedEvents = log.of('charged')
    const expiredAfter2xx = log
      .of('refunded')
      .filter((e) => e.reason === 'expired' && e.statusCode !== null && e.statusCode < 300)
    const givenUp = log.of('ledgerError').filter((e) => !e.willRetry && e.phase !== 'reserve')
    let charged = 0
    let negative = 0
    let pending = 0
    const wrong: string[] = []
    for (const [id, b] of balances) {
      const spent = initial.get(id)! - b.balance
      charged += spent
      if (b.available < 0 || b.balance < 0) negative += 1
      pending += b.pending
      if (spent !== (okByAccount.get(id) ?? 0)) {
        wrong.push(`${id}: charged ${spent}, 2xx ${okByAccount.get(id) ?? 0}`)
      }
    }
    const duringOutage = log.of('ledgerError').length
    console.log(
      `Redis SIGKILL + restart (AOF always) ×${outages.length} under HTTP load: requests sent ${results.length} ` +
        `in ${loadEnded - started} ms, statuses ${JSON.stringify(Object.fromEntries(byStatus))}, ` +
        `2xx received ${ok.length}, charged ${charged} (charged events ${chargedEvents.length}), ` +
        `refunded ${log.of('refunded').length} (${JSON.stringify(Object.fromEntries(tally(log.of('refunded').map((e) => e.reason))))}), ` +
        `expired after 2xx ${expiredAfter2xx.length}, settlements given up ${givenUp.length}, ` +
        `ledger errors ${duringOutage} (${JSON.stringify(Object.fromEntries(tally(log.of('ledgerError').map((e) => e.phase))))}), ` +
        `commits sent while Redis was down ${commitsWhileDown}, outages ${outages.map((o) => `${o.to - o.from} ms`).join(', ')}, pending after holdMs ${pending}, ` +
        `negative 0, lost: ${wrong.length}`,
    )

    expect(outages).toHaveLength(2)
    expect(byStatus.get(402)).toBeGreaterThan(0) // the small accounts ran dry
    expect(byStatus.get(500)).toBeGreaterThan(0)
    expect(duringOutage).toBeGreaterThan(0) // the outages did hit reserves…
    expect(commitsWhileDown).toBeGreaterThan(0) // …and commits of calls already answered 2xx
    expect([...byStatus.keys()].every((s) => [200, 402, 500, 503].includes(s as number))).toBe(true)
    expect(wrong).toEqual([]) // per account: credits charged = 2xx received, exactly
    expect(charged).toBe(ok.length)
    expect(chargedEvents.length).toBe(ok.length)
    expect(new Set(chargedEvents.map((e) => e.holdId)).size).toBe(chargedEvents.length)
    expect(expiredAfter2xx).toEqual([])
    expect(givenUp).toEqual([])
    expect(charged + expiredAfter2xx.length).toBe(ok.length)
    expect(pending).toBe(0)
    expect(negative).toBe(0)
  } finally {
    agent.destroy()
    await web.close()
  }
})

it('an outage longer than holdMs: the commits of calls answered 2xx during it reach Redis after their deadline, so those calls are not charged (refunded: expired), and charged + expired-after-2xx = 2xx', async () => {
  const holdMs = 1000
  const own = await spawnRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  const redis = new Redis(own.url) // ioredis defaults: commands wait in its queue during the outage
  redis.on('error', () => undefined)
  let web: Awaited<ReturnType<typeof listen>> | undefined
  try {
    const ledger = new RedisLedger({ redis, prefix: uniquePrefix() })
    const ids = ['x0', 'x1', 'x2', 'x3', 'x4']
    for (const id of ids) await ledger.openAccount(id, { type: 'registered' })
    const gate = createCreditGate({ ledger, identify: identifyByHeader(), holdMs })
    const log = new EventLog(gate)
    const answer = deferred()
    let started = 0
    const handlersStarted = (): number => started
    const app = express()
    app.get('/slow', gate('pro'), async (_req, res) => {
      started += 1
      await answer.promise
      res.json({ ok: true })
    })
    web = await listen(app)
    const url = web.url

    const calls = ids.map((account) => send(url, { path: '/slow', account }))
    while (handlersStarted() < calls.length) await new Promise((r) => setTimeout(r, 10))
    await own.kill() // the five holds are on disk (AOF always); their handlers are still running
    answer.resolve()
    const results = await Promise.all(calls) // answered 200 while Redis is down
    await new Promise((r) => setTimeout(r, holdMs + 500)) // down longer than holdMs
    await own.restart()
    await log.settled(calls.length, 20_000)

    const ok = results.filter((r) => r.status === 200).length
    const charged = log.of('charged').length
    const expired = log
      .of('refunded')
      .filter((e) => e.reason === 'expired' && e.statusCode === 200).length
    const balances = await Promise.all(ids.map((id) => ledger.balance(id)))
    console.log(
      `outage ${holdMs + 500} ms > holdMs ${holdMs} ms: requests sent ${calls.length}, 2xx received ${ok}, ` +
        `charged ${charged}, expired after 2xx ${expired}, refunded ${expired * 5} credits, ` +
        `pending ${balances.reduce((s, b) => s + b.pending, 0)}, unaccounted ${ok - charged - expired} (charged + expired = 2xx; the ${expired} uncharged 2xx are the documented cost of an outage past holdMs)`,
    )
    expect(ok).toBe(calls.length)
    expect(charged).toBe(0)
    expect(expired).toBe(calls.length)
    expect(charged + expired).toBe(ok)
    expect(balances.map((b) => [b.balance, b.pending])).toEqual(ids.map(() => [350, 0]))
  } finally {
    redis.disconnect()
    await web?.close()
    await own.stop()
  }
})

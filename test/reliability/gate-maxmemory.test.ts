import express from 'express'
import { Redis } from 'ioredis'
import request from 'supertest'

import { RedisLedger, createCreditGate, isCreditError } from '../../src/index'
import { ACCOUNT_HEADER, EventLog, deferred, identifyByHeader } from '../helpers/gate'
import { uniquePrefix } from '../helpers/redis'
import { snapshot } from '../helpers/snapshot'
import { spawnRedis } from '../setup/redis-process'

/**
 * Redis at `maxmemory` with `noeviction`, filled by another app's keys: every ledger script
 * starts with `#!lua` (no `no-writes` flag), so Redis refuses it whole, before it runs, with
 * OOM. The gate must turn that into a clean 503 with `Retry-After` without running the handler,
 * leave no partial state, and serve (and charge) normally again once memory is freed.
 */

jest.setTimeout(60_000)

const FILL_CHUNK = 'x'.repeat(64 * 1024)

it('at maxmemory with noeviction, gated calls answer 503 with Retry-After without running the handler, the ledger keys stay byte-for-byte unchanged, a commit refused meanwhile is retried, and once memory is freed calls answer 200 and are charged exactly', async () => {
  const server = await spawnRedis({
    args: ['--maxmemory', '3mb', '--maxmemory-policy', 'noeviction'],
  })
  const redis = new Redis(server.url)
  const admin = new Redis(server.url)
  try {
    const prefix = uniquePrefix()
    const ledger = new RedisLedger({ redis, prefix })
    await ledger.openAccount('m', { type: 'registered' }) // 350 credits
    const gate = createCreditGate({ ledger, identify: identifyByHeader(), retryAfterSeconds: 3 })
    const log = new EventLog(gate)
    const handler = jest.fn((_req: express.Request, res: express.Response) => {
      res.json({ ok: true })
    })
    const answerHeld = deferred()
    const heldStarted = deferred()
    const app = express()
    app.get('/var', gate('pro'), handler)
    app.get('/held', gate('pro'), async (_req, res) => {
      heldStarted.resolve()
      await answerHeld.promise
      res.json({ ok: true })
    })
    const call = (path: string) => request(app).get(path).set(ACCOUNT_HEADER, 'm')

    expect((await call('/var')).status).toBe(200) // every script cached; 5 charged
    await log.settled(1)

    // A call reserved before the limit is reached; it answers 200 while Redis is full.
    const held = call('/held').then((r) => r)
    await heldStarted.promise

    // Another app fills the server until writes fail with OOM (bounded: at most 200 × 64 KiB),
    // then with small values, so that the refused big write's freed query buffer does not leave
    // room for a script afterwards.
    let fillers = 0
    let oom = ''
    const fill = async (chunk: string, limit: number): Promise<void> => {
      oom = ''
      while (fillers < limit && oom === '') {
        await admin.set(`other-app:fill:${fillers}`, chunk).then(
          () => (fillers += 1),
          (error: unknown) => (oom = String(error)),
        )
      }
    }
    await fill(FILL_CHUNK, 200)
    expect(oom).toMatch(/OOM/)
    const big = fillers
    await new Promise((r) => setTimeout(r, 200)) // let Redis shrink the big query buffer
    await fill(FILL_CHUNK.slice(0, 1024), fillers + 200)
    expect(oom).toMatch(/OOM/)
    const before = await snapshot(admin, prefix)

    const refused = []
    for (let i = 0; i < 5; i++) refused.push(await call('/var'))
    for (const res of refused) {
      expect(res.status).toBe(503)
      expect(res.headers['retry-after']).toBe('3')
      expect(res.body).toMatchObject({ success: false, error: 'ledger_unavailable' })
    }
    expect(handler).toHaveBeenCalledTimes(1) // the warm-up call only
    const reserveErrors = log.of('ledgerError').filter((e) => e.phase === 'reserve')
    expect(reserveErrors).toHaveLength(5)
    for (const e of reserveErrors) {
      expect(isCreditError(e.error) && e.error.code).toBe('ERR_CREDIT_STORE_UNAVAILABLE')
      expect((e.error as Error).message).toMatch(/OOM/)
    }

    // The held call answers 200: its commit is refused too, and the gate will send it again.
    answerHeld.resolve()
    expect((await held).status).toBe(200)
    await log.waitFor(
      () => log.of('ledgerError').some((e) => e.phase === 'commit'),
      'the commit to be refused',
    )
    const commitError = log.of('ledgerError').find((e) => e.phase === 'commit')!
    expect(commitError.willRetry).toBe(true)
    expect((commitError.error as Error).message).toMatch(/OOM/)
    // Refused whole: not one ledger key changed (5 reserves, the ledger's best-effort void of
    // each, and a commit, all refused).
    await new Promise((r) => setTimeout(r, 50))
    expect(await snapshot(admin, prefix)).toEqual(before)
    expect(log.of('charged')).toHaveLength(1)

    // Memory freed: the gate's retry commits the held call, and new calls answer 200 again.
    await admin.del(...Array.from({ length: fillers }, (_, i) => `other-app:fill:${i}`))
    await log.waitFor(() => log.of('charged').length === 2, 'the retried commit', 10_000)
    const after = []
    for (let i = 0; i < 3; i++) after.push(await call('/var'))
    expect(after.map((r) => r.status)).toEqual([200, 200, 200])
    await log.settled(5)
    expect(await ledger.balance('m')).toMatchObject({
      balance: 350 - 5 * 5,
      available: 350 - 5 * 5,
      pending: 0,
    })
    const charges = (await ledger.transactions('m')).transactions.filter((t) => t.kind === 'charge')
    expect(charges).toHaveLength(5)
    console.log(
      `maxmemory 3mb + noeviction (filled with ${big} values of 64 KiB, then ${fillers - big} of 1 KiB): requests sent ${1 + 1 + 5 + 3}, ` +
        `503 at the limit ${refused.length} (Retry-After 3, handler not run), ledger keys changed 0, ` +
        `commit refused and retried 1, 2xx received ${1 + 1 + after.length}, charged ${charges.length} ` +
        `(${charges.length * 5} credits), refunded 0, pending 0, lost: 0`,
    )
  } finally {
    redis.disconnect()
    admin.disconnect()
    await server.stop()
  }
})

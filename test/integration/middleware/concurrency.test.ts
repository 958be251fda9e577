import http from 'node:http'

import type { Redis } from 'ioredis'

import { createCreditGate, fromMilli } from '../../../src/index'
import {
  ACCOUNT_HEADER,
  EXPRESS_VERSIONS,
  EventLog,
  identifyByHeader,
  listen,
  rawRequest,
} from '../../helpers/gate'
import { makeLedger } from '../../helpers/redis'

/** mulberry32: a small seeded PRNG, so a failing run can be replayed with CREDITGATE_SEED. */
function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const SEED = Number(process.env['CREDITGATE_SEED'] ?? Date.now() % 1_000_000)
const CALLS = 500

const clients: Redis[] = []
beforeAll(() => {
  console.log(`concurrency seed ${SEED} (replay with CREDITGATE_SEED=${SEED})`)
})
afterAll(async () => {
  await Promise.all(clients.map((c) => c.quit()))
})

describe.each(EXPRESS_VERSIONS)('concurrency on %s', (_name, factory) => {
  // The balance and the price are random (up to 3 decimals); the seed is in the test name.
  const random = rng(SEED + (_name === 'Express 4' ? 1 : 0))
  const balanceMilli = 50_000 + Math.floor(random() * 350_000) // 50 to 400 credits
  const costMilli = 1_000 + Math.floor(random() * 4_000) // 1 to 5 credits
  const winners = Math.floor(balanceMilli / costMilli)

  it(`lets exactly floor(B/cost) of ${CALLS} parallel calls through, answers 402 to the rest, and leaves the exact balance (seed ${SEED}: B=${fromMilli(balanceMilli)}, cost=${fromMilli(costMilli)})`, async () => {
    const made = makeLedger('redis', {
      accountTypes: { funded: { signupCredits: fromMilli(balanceMilli) } },
    })
    clients.push(made.redis)
    await made.ledger.openAccount('acct', { type: 'funded' })
    const gate = createCreditGate({ ledger: made.ledger, identify: identifyByHeader() })
    const log = new EventLog(gate)
    const app = factory()
    app.get('/work', gate('basic', { cost: fromMilli(costMilli) }), (_req, res) => {
      setImmediate(() => res.json({}))
    })
    const { url, close } = await listen(app)
    const agent = new http.Agent({ keepAlive: true, maxSockets: CALLS })
    try {
      const results = await Promise.all(
        Array.from({ length: CALLS }, () =>
          rawRequest(`${url}/work`, { agent, headers: { [ACCOUNT_HEADER]: 'acct' } }),
        ),
      )
      expect(results.filter((r) => r.error !== undefined)).toEqual([])
      const ok = results.filter((r) => r.status === 200)
      expect(ok).toHaveLength(winners)
      expect(results.filter((r) => r.status === 402)).toHaveLength(CALLS - winners)
      // Each reserve saw the balance the previous ones left: B − k·cost for k = 1..n, never < 0.
      const remaining = ok
        .map((r) => Math.round(Number(r.headers['x-credits-remaining']) * 1000))
        .sort((a, b) => b - a)
      expect(remaining).toEqual(
        Array.from({ length: winners }, (_, k) => balanceMilli - (k + 1) * costMilli),
      )
      expect(Math.min(...remaining)).toBeGreaterThanOrEqual(0)
      await log.settled(winners, 20_000)
      expect(log.of('charged')).toHaveLength(winners)
      expect(log.of('refunded')).toHaveLength(0)
      expect(await made.ledger.balance('acct')).toMatchObject({
        available: fromMilli(balanceMilli - winners * costMilli),
        pending: 0,
      })
    } finally {
      agent.destroy()
      await close()
    }
  })
})

import fc from 'fast-check'

import { BACKENDS, TestClock, makeLedger, type Backend } from '../helpers/redis'
import { DAY, allTransactions, at } from './helpers'

const SEED = Number(process.env['FC_SEED'] ?? Date.now() % 2 ** 31)
const RUNS: Record<Backend, number> = { redis: 40, mock: 12, cluster: 20 }
const PLANS = [
  ['basic', 500],
  ['standard', 2500],
  ['pro', 7500],
] as const

type Op =
  | { t: 'grant'; milli: number; expiresIn: number | null }
  | { t: 'reserve'; milli: number; endpoint: string }
  | { t: 'commit'; pick: number; partial: boolean; latency: number | null }
  | { t: 'release'; pick: number; latency: number | null }
  | { t: 'advance'; ms: number }
  | { t: 'subscribe'; plan: number; rollover: boolean }
  | { t: 'end'; inDays: number | null }

const latency = fc.option(fc.nat(5000), { nil: null })
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    t: fc.constant('grant' as const),
    milli: fc.integer({ min: 1, max: 400_000 }),
    expiresIn: fc.option(fc.integer({ min: 1, max: 60 * DAY }), { nil: null }),
  }),
  fc.record({
    t: fc.constant('reserve' as const),
    milli: fc.integer({ min: 0, max: 300_000 }),
    endpoint: fc.constantFrom('/a', '/b', '/c/:id'),
  }),
  fc.record({ t: fc.constant('commit' as const), pick: fc.nat(), partial: fc.boolean(), latency }),
  fc.record({ t: fc.constant('release' as const), pick: fc.nat(), latency }),
  fc.record({
    t: fc.constant('advance' as const),
    ms: fc.oneof(fc.integer({ min: 0, max: 120_000 }), fc.integer({ min: 0, max: 45 * DAY })),
  }),
  fc.record({ t: fc.constant('subscribe' as const), plan: fc.nat(2), rollover: fc.boolean() }),
  fc.record({
    t: fc.constant('end' as const),
    inDays: fc.option(fc.integer({ min: 0, max: 90 }), { nil: null }),
  }),
)

describe.each(BACKENDS)('lifecycle property on %s', (backend: Backend) => {
  it(`keeps history, usage and audit in agreement with the balance (fast-check seed ${SEED})`, async () => {
    console.log(`lifecycle on ${backend}: fast-check seed ${SEED} (rerun with FC_SEED=${SEED})`)
    const start = at('2026-01-15T12:00:00Z')
    const clock = new TestClock(start)
    const { ledger, redis } = makeLedger(backend, {
      clock: clock.read,
      holdMs: 60_000,
      historyLimit: 100_000,
      // Keep every month of usage, so that the totals cover the whole run.
      usageRetention: { month: 100 * 365 * DAY },
    })
    let run = 0
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 40 }), async (ops) => {
          const id = `life-${run++}`
          clock.now = start
          await ledger.openAccount(id, { type: 'registered' })
          const holds: { id: string; held: number; expiresAt: number; settled: boolean }[] = []
          let chargedMilli = 0
          let requests = 0
          let refunds = 0
          let key = 0
          for (const o of ops) {
            switch (o.t) {
              case 'grant': {
                const r = await ledger.grant(id, {
                  amount: o.milli / 1000,
                  source: 'purchase',
                  ...(o.expiresIn === null ? {} : { expiresAt: clock.now + o.expiresIn }),
                  idempotencyKey: `${id}-g${key++}`,
                })
                expect(r.available).toBeGreaterThanOrEqual(0)
                break
              }
              case 'reserve': {
                const r = await ledger.reserve(id, o.milli / 1000, { endpoint: o.endpoint })
                if (r.status === 'held') {
                  expect(r.available).toBeGreaterThanOrEqual(0)
                  holds.push({ id: r.holdId, held: r.held, expiresAt: r.expiresAt, settled: false })
                } else {
                  expect(r.status).toBe('insufficient')
                }
                break
              }
              case 'commit':
              case 'release': {
                const h = holds[o.pick % Math.max(holds.length, 1)]
                if (h === undefined) break
                const options = o.latency === null ? {} : { latencyMs: o.latency }
                let r: Awaited<ReturnType<typeof ledger.commit>>
                try {
                  r =
                    o.t === 'release'
                      ? await ledger.release(h.id, options)
                      : await ledger.commit(h.id, {
                          ...options,
                          ...(o.partial
                            ? { actualCost: Math.floor((h.held * 1000) / 2) / 1000 }
                            : {}),
                        })
                } catch (error) {
                  // An outcome is remembered for 24 hours after it was settled (or voided):
                  // only a hold that is no longer pending may have been forgotten.
                  expect((error as { code?: string }).code).toBe('ERR_CREDIT_HOLD_NOT_FOUND')
                  expect(h.settled || clock.now >= h.expiresAt).toBe(true)
                  h.settled = true
                  break
                }
                expect(r.available).toBeGreaterThanOrEqual(0)
                if (h.settled || clock.now >= h.expiresAt) {
                  // Settled before, or void: nothing charged now, nothing counted.
                  expect(r.replayed || r.outcome === 'expired').toBe(true)
                  if (!h.settled) expect(r.charged).toBe(0)
                } else {
                  expect(r).toMatchObject({
                    replayed: false,
                    outcome: o.t === 'commit' ? 'committed' : 'released',
                  })
                  expect(r.charged).toBeLessThanOrEqual(h.held)
                  chargedMilli += Math.round(r.charged * 1000)
                  requests++
                  if (o.t === 'release') refunds++
                }
                h.settled = true
                break
              }
              case 'advance':
                clock.advance(o.ms)
                break
              case 'subscribe': {
                const [plan, monthly] = PLANS[o.plan]!
                const r = await ledger.subscribe(id, {
                  plan,
                  monthlyCredits: monthly,
                  rollover: o.rollover,
                  idempotencyKey: `${id}-s${key++}`,
                })
                expect(r.available).toBeGreaterThanOrEqual(0)
                break
              }
              case 'end': {
                const r = await ledger.endSubscription(
                  id,
                  o.inDays === null ? {} : { at: clock.now + o.inDays * DAY },
                )
                expect(r.available).toBeGreaterThanOrEqual(0)
                break
              }
            }
          }
          const balance = await ledger.balance(id)
          expect(balance.available).toBeGreaterThanOrEqual(0)
          const pending = holds
            .filter((h) => !h.settled && clock.now < h.expiresAt)
            .reduce((sum, h) => sum + Math.round(h.held * 1000), 0)
          expect(Math.round(balance.pending * 1000)).toBe(pending)

          // The whole history chains from 0 to the live balance, in time order, without gaps.
          const history = await allTransactions(ledger, id)
          expect(history.map((t) => t.seq)).toEqual(history.map((_, i) => i + 1))
          let running = 0
          for (const t of history) {
            running += Math.round(t.amount * 1000)
            expect(Math.round(t.balanceAfter * 1000)).toBe(running)
            expect(t.balanceAfter).toBeGreaterThanOrEqual(0)
          }
          expect(running).toBe(Math.round(balance.balance * 1000))
          const times = history.map((t) => t.time)
          expect([...times].sort((a, b) => a - b)).toEqual(times)
          const charges = history.filter((t) => t.kind === 'charge')
          expect(charges.reduce((s, t) => s - Math.round(t.amount * 1000), 0)).toBe(chargedMilli)

          // Usage counted each settled call once, with what it was charged.
          const usage = await ledger.usage(id, {
            from: start,
            to: clock.now + 1,
            granularity: 'month',
          })
          expect(usage.totals.requests).toBe(requests)
          expect(usage.totals.refunds).toBe(refunds)
          expect(Math.round(usage.totals.credits * 1000)).toBe(chargedMilli)

          const report = await ledger.audit(id)
          expect(report).toMatchObject({ ok: true, complete: true, difference: 0, breakCount: 0 })
          expect(report.liveBalance).toBe(balance.balance)

          // Once ended and past its end, no subscription credit is left; others are untouched.
          await ledger.endSubscription(id)
          clock.advance(62 * DAY)
          const after = await ledger.balance(id)
          expect(after.subscription).toBeNull()
          expect(after.buckets.filter((b) => b.source === 'subscription')).toEqual([])
          expect((await ledger.audit(id)).ok).toBe(true)
        }),
        { seed: SEED, numRuns: RUNS[backend] },
      )
    } finally {
      await redis.quit()
    }
  }, 300_000)
})

import { randomBytes } from 'node:crypto'

import fc from 'fast-check'

import { CreditConfigError, RedisLedger, type UsageGranularity } from '../../src/index'
import { accountKeys } from '../../src/ledger/keys'
import { periodStart } from '../../src/ledger/usage'
import { BACKENDS, TestClock, makeLedger, realRedis, type Backend } from '../helpers/redis'
import { countingClient, snapshot } from '../helpers/snapshot'
import { DAY, HOUR, at, expectCode, spend } from './helpers'

const SEED = Number(process.env['FC_SEED'] ?? Date.now() % 2 ** 31)
const RUNS: Record<Backend, number> = { redis: 30, mock: 8, cluster: 12 }

/** One counted call of the usage model. */
interface Call {
  at: number
  endpoint: string
  milli: number
  refund: number
  latency: number | null
}

/** What `usage` must report for these calls: per period of the range, and per endpoint. */
function expectedUsage(calls: readonly Call[], g: UsageGranularity, starts: readonly number[]) {
  const tally = (of: readonly Call[]) => {
    const latencies = of.flatMap((c) => (c.latency === null ? [] : [c.latency]))
    return {
      requests: of.length,
      milli: of.reduce((sum, c) => sum + c.milli, 0),
      refunds: of.reduce((sum, c) => sum + c.refund, 0),
      avgLatencyMs:
        latencies.length === 0
          ? null
          : Math.round((latencies.reduce((a, b) => a + b, 0) / latencies.length) * 10) / 10,
    }
  }
  const inRange = calls.filter((c) => starts.includes(periodStart(g, c.at)))
  const endpoints = [...new Set(inRange.map((c) => c.endpoint))].sort()
  return {
    series: starts.map((start) => tally(calls.filter((c) => periodStart(g, c.at) === start))),
    endpoints: endpoints.map((endpoint) => ({
      endpoint,
      ...tally(inRange.filter((c) => c.endpoint === endpoint)),
    })),
  }
}

/** A usage report in the model's terms (credits as milli-credits, endpoints by name). */
function reported(report: {
  series: readonly {
    requests: number
    credits: number
    refunds: number
    avgLatencyMs: number | null
  }[]
  endpoints: readonly {
    endpoint: string
    requests: number
    credits: number
    refunds: number
    avgLatencyMs: number | null
  }[]
}) {
  const counters = (p: {
    requests: number
    credits: number
    refunds: number
    avgLatencyMs: number | null
  }) => ({
    requests: p.requests,
    milli: Math.round(p.credits * 1000),
    refunds: p.refunds,
    avgLatencyMs: p.avgLatencyMs,
  })
  return {
    series: report.series.map(counters),
    endpoints: [...report.endpoints]
      .sort((a, b) => (a.endpoint < b.endpoint ? -1 : 1))
      .map((e) => ({ endpoint: e.endpoint, ...counters(e) })),
  }
}

describe.each(BACKENDS)('usage analytics on %s', (backend: Backend) => {
  const open: { quit(): Promise<unknown> }[] = []
  afterAll(async () => {
    await Promise.all(open.map((c) => c.quit()))
  })
  function setup(options: Parameters<typeof makeLedger>[1] = {}) {
    const clock = new TestClock(at('2026-01-15T12:10:00Z'))
    const made = makeLedger(backend, { clock: clock.read, ...options })
    open.push(made.redis)
    return { ...made, clock }
  }
  async function held(ledger: RedisLedger, id: string, cost: number, endpoint: string) {
    const hold = await ledger.reserve(id, cost, { endpoint })
    if (hold.status !== 'held') throw new Error('not held')
    return hold.holdId
  }

  it('counts each settled call once per endpoint and hour, day and month: requests, credits, refunds, latency', async () => {
    const { ledger, clock } = setup({ holdMs: 1000 })
    await ledger.openAccount('u1', { type: 'registered' })
    const a1 = await held(ledger, 'u1', 5, '/a')
    await ledger.commit(a1, { latencyMs: 100 })
    await ledger.commit(a1, { latencyMs: 999 }) // a replay: not counted again
    await ledger.commit(await held(ledger, 'u1', 5, '/a'), { actualCost: 2, latencyMs: 50 })
    const released = await held(ledger, 'u1', 5, '/a')
    await ledger.release(released, { latencyMs: 30 })
    await ledger.release(released, { latencyMs: 30 })
    const expired = await held(ledger, 'u1', 5, '/a')
    clock.advance(HOUR)
    expect((await ledger.commit(expired, { latencyMs: 1 })).outcome).toBe('expired')
    await ledger.commit(await held(ledger, 'u1', 1.5, '/b'))
    const hours = await ledger.usage('u1', {
      from: at('2026-01-15T12:00:00Z'),
      to: at('2026-01-15T14:00:00Z'),
      granularity: 'hour',
    })
    expect(hours).toEqual({
      accountId: 'u1',
      granularity: 'hour',
      from: at('2026-01-15T12:00:00Z'),
      to: at('2026-01-15T14:00:00Z'),
      endpoint: null,
      series: [
        {
          start: at('2026-01-15T12:00:00Z'),
          end: at('2026-01-15T13:00:00Z'),
          requests: 3,
          credits: 7,
          refunds: 1,
          avgLatencyMs: 60,
        },
        {
          start: at('2026-01-15T13:00:00Z'),
          end: at('2026-01-15T14:00:00Z'),
          requests: 1,
          credits: 1.5,
          refunds: 0,
          avgLatencyMs: null,
        },
      ],
      totals: { requests: 4, credits: 8.5, refunds: 1, avgLatencyMs: 60 },
      endpoints: [
        { endpoint: '/a', requests: 3, credits: 7, refunds: 1, avgLatencyMs: 60 },
        { endpoint: '/b', requests: 1, credits: 1.5, refunds: 0, avgLatencyMs: null },
      ],
      truncated: false,
    })
    const days = await ledger.usage('u1', {
      from: new Date('2026-01-14T00:00:00Z'),
      to: new Date('2026-01-16T00:00:00Z'),
      granularity: 'day',
    })
    expect(days.series.map((p) => [p.requests, p.credits])).toEqual([
      [0, 0],
      [4, 8.5],
    ])
    const months = await ledger.usage('u1', {
      from: at('2025-12-31T23:59:59Z'),
      to: at('2026-03-01T00:00:00Z'),
      granularity: 'month',
      endpoint: '/b',
    })
    expect(months).toMatchObject({
      from: at('2025-12-01T00:00:00Z'),
      to: at('2026-03-01T00:00:00Z'),
      endpoint: '/b',
      totals: { requests: 1, credits: 1.5 },
      endpoints: [{ endpoint: '/b', requests: 1 }],
    })
    expect(months.series.map((p) => [new Date(p.start).toISOString(), p.requests])).toEqual([
      ['2025-12-01T00:00:00.000Z', 0],
      ['2026-01-01T00:00:00.000Z', 1],
      ['2026-02-01T00:00:00.000Z', 0],
    ])
  })

  it('counts the calls of an unlimited account, which are never charged', async () => {
    const { ledger } = setup()
    await ledger.openAccount('ent', { type: 'enterprise' })
    await ledger.commit(await held(ledger, 'ent', 500, '/big'), { latencyMs: 12 })
    const r = await ledger.usage('ent', {
      from: at('2026-01-15T00:00:00Z'),
      to: at('2026-01-16T00:00:00Z'),
      granularity: 'day',
    })
    expect(r.totals).toEqual({ requests: 1, credits: 0, refunds: 0, avgLatencyMs: 12 })
  })

  it('records free calls with recordUsage without touching balances, holds or history', async () => {
    const { ledger, redis, prefix } = setup()
    await ledger.openAccount('free', { type: 'registered' })
    const k = accountKeys(prefix, 'free')
    const ledgerKeys = async () => {
      const all = await snapshot(redis, prefix)
      return Object.fromEntries(
        Object.entries(all).filter(([key]) => key !== k.usage && key !== k.usageIndex),
      )
    }
    const before = await ledgerKeys()
    expect(
      await ledger.recordUsage('free', { endpoint: '/health', latencyMs: 3, charged: false }),
    ).toEqual({ accountId: 'free', recorded: true })
    await ledger.recordUsage('free', { endpoint: '/health' })
    expect(await ledgerKeys()).toEqual(before)
    const r = await ledger.usage('free', {
      from: at('2026-01-15T12:00:00Z'),
      to: at('2026-01-15T13:00:00Z'),
      granularity: 'hour',
    })
    expect(r.totals).toEqual({ requests: 2, credits: 0, refunds: 0, avgLatencyMs: 3 })
    const untouched = await snapshot(redis, prefix)
    expect(await ledger.recordUsage('ghost', { endpoint: '/health' })).toEqual({
      accountId: 'ghost',
      recorded: false,
    })
    expect(await snapshot(redis, prefix)).toEqual(untouched)
  })

  it('refuses bad queries and bad usage records before Redis is touched', async () => {
    const { ledger: real, redis, prefix } = setup()
    await real.openAccount('q', { type: 'registered' })
    const { client, calls } = countingClient(redis as never)
    const ledger = new RedisLedger({ redis: client, prefix })
    const base = {
      from: at('2026-01-01T00:00:00Z'),
      to: at('2026-01-02T00:00:00Z'),
      granularity: 'day',
    }
    const bad: object[] = [
      { to: base.from },
      { to: base.from - 1 },
      { from: -1 },
      { from: 'yesterday' },
      { granularity: 'week' },
      { granularity: undefined },
      { endpoint: '' },
      { endpoint: '/a|b' },
      { endpoint: 'x'.repeat(513) },
      { granularty: 'day' },
      { granularity: 'hour', to: base.from + 1001 * HOUR },
      { granularity: 'month', from: 0, to: at('2100-01-01T00:00:00Z') },
    ]
    for (const b of bad) {
      await expectCode(ledger.usage('q', { ...base, ...b } as never), 'ERR_CREDIT_INVALID_ARGUMENT')
    }
    for (const b of [
      { endpoint: '' },
      { endpoint: '/a|b' },
      { endpoint: '/x', latencyMs: -1 },
      { endpoint: '/x', latencyMs: 1.5 },
      { endpoint: '/x', charged: true },
      { endpoint: '/x', cost: 1 },
    ]) {
      await expectCode(ledger.recordUsage('q', b as never), 'ERR_CREDIT_INVALID_ARGUMENT')
    }
    await expectCode(
      ledger.release('q:AAAAAAAAAAAAAAAA', { latencyMs: -5 }),
      'ERR_CREDIT_INVALID_ARGUMENT',
    )
    expect(calls()).toBe(0)
    // Exactly 1000 periods is fine.
    expect(
      (await ledger.usage('q', { ...base, granularity: 'hour', to: base.from + 1000 * HOUR }))
        .series,
    ).toHaveLength(1000)
    expect(calls()).toBeGreaterThan(0) // the counter sees the calls that are sent
    await expectCode(ledger.usage('nobody', base as never), 'ERR_CREDIT_ACCOUNT_NOT_FOUND')
  })

  it('keeps memory bounded however long an account lives: periods past retention are trimmed lazily', async () => {
    const { ledger, clock, redis, prefix } = setup({
      usageRetention: { hour: 6 * HOUR, day: 3 * DAY, month: 62 * DAY },
    })
    await ledger.openAccount('long', { type: 'enterprise' })
    const k = accountKeys(prefix, 'long')
    let most = 0
    // Four calls a day on two endpoints for 200 days.
    for (let i = 0; i < 800; i++) {
      await ledger.recordUsage('long', { endpoint: i % 2 === 0 ? '/a' : '/b', latencyMs: 1 })
      clock.advance(6 * HOUR)
      if (i % 50 === 49) most = Math.max(most, await redis.zcard(k.usageIndex))
    }
    // At most 2 endpoints × (2 hours + 4 days + 3 months) of periods, whatever the age.
    expect(most).toBeLessThanOrEqual(2 * (2 + 4 + 3))
    // Every counter is indexed; the one field more is the watermark of folded hours.
    expect(await redis.hlen(k.usage)).toBe((await redis.zcard(k.usageIndex)) + 1)
    const days = await ledger.usage('long', {
      from: clock.now - 10 * DAY,
      to: clock.now,
      granularity: 'day',
    })
    // Only the last 3 days are within retention; older days read as zero.
    expect(days.series.filter((p) => p.requests > 0).length).toBeLessThanOrEqual(4)
    expect(days.series.slice(0, 6).every((p) => p.requests === 0)).toBe(true)
  }, 120_000)

  it(`reads every day and month as the sum of its hours, before and after they are folded in, across hour, day and month ends and a clock that goes back (fast-check seed ${SEED})`, async () => {
    console.log(`usage folding on ${backend}: fast-check seed ${SEED} (rerun with FC_SEED=${SEED})`)
    const { ledger, clock } = setup({
      // Nothing falls out of retention within a run: what is read is what was counted.
      usageRetention: { day: 400 * DAY, month: 100 * 365 * DAY },
    })
    const step = fc.record({
      kind: fc.constantFrom('record', 'commit', 'release'),
      endpoint: fc.constantFrom('/a', '/b/:id', '/ü'),
      latency: fc.option(fc.nat(900), { nil: null }),
      cost: fc.integer({ min: 1, max: 9000 }),
      // Mostly within the hour; sometimes to a later hour or day; sometimes back (app servers'
      // clocks differ), never more than an hour.
      advance: fc.oneof(
        { weight: 4, arbitrary: fc.integer({ min: 0, max: 20 * 60_000 }) },
        { weight: 2, arbitrary: fc.integer({ min: HOUR / 2, max: 3 * HOUR }) },
        { weight: 1, arbitrary: fc.integer({ min: 20 * HOUR, max: 4 * DAY }) },
        { weight: 1, arbitrary: fc.integer({ min: -HOUR + 1, max: -1 }) },
      ),
    })
    let run = 0
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 30 }), async (steps) => {
        run += 1
        const id = `fold-${run}`
        clock.now = at('2026-01-31T22:40:00Z') // an hour, a day and a month end ahead
        await ledger.openAccount(id, { type: 'registered' })
        await ledger.grant(id, { amount: 1_000_000, source: 'test', idempotencyKey: `${id}:g` })
        const calls: Call[] = []
        const check = async () => {
          for (const [g, from, to] of [
            ['hour', clock.now - 30 * HOUR, clock.now + HOUR],
            ['day', at('2026-01-30T00:00:00Z'), clock.now + DAY],
            ['month', at('2026-01-01T00:00:00Z'), clock.now + DAY],
          ] as const) {
            const report = await ledger.usage(id, { from, to, granularity: g })
            const starts = report.series.map((p) => p.start)
            expect(reported(report)).toEqual(expectedUsage(calls, g, starts))
          }
        }
        for (const s of steps) {
          clock.advance(s.advance)
          const latency = s.latency === null ? {} : { latencyMs: s.latency }
          if (s.kind === 'record') {
            await ledger.recordUsage(id, { endpoint: s.endpoint, ...latency })
            calls.push({
              at: clock.now,
              endpoint: s.endpoint,
              milli: 0,
              refund: 0,
              latency: s.latency,
            })
          } else {
            const hold = await held(ledger, id, s.cost / 1000, s.endpoint)
            if (s.kind === 'commit') await ledger.commit(hold, latency)
            else await ledger.release(hold, latency)
            calls.push({
              at: clock.now,
              endpoint: s.endpoint,
              milli: s.kind === 'commit' ? s.cost : 0,
              refund: s.kind === 'commit' ? 0 : 1,
              latency: s.latency,
            })
          }
          await check()
        }
      }),
      { seed: SEED, numRuns: RUNS[backend] },
    )
  }, 240_000)

  it('counts a call in an hour already counted by rewriting that hour alone; its day and month take it when a later hour begins', async () => {
    const { ledger, clock, redis, prefix } = setup()
    await ledger.openAccount('w', { type: 'registered' })
    const k = accountKeys(prefix, 'w')
    await ledger.recordUsage('w', { endpoint: '/a', latencyMs: 4 })
    const before = await redis.hgetall(k.usage)
    await ledger.recordUsage('w', { endpoint: '/a', latencyMs: 6 })
    const after = await redis.hgetall(k.usage)
    const hour = `h${String(at('2026-01-15T12:00:00Z')).padStart(16, '0')}:/a`
    const day = `d${String(at('2026-01-15T00:00:00Z')).padStart(16, '0')}:/a`
    const month = `m${String(at('2026-01-01T00:00:00Z')).padStart(16, '0')}:/a`
    expect(Object.keys(after).filter((f) => after[f] !== before[f])).toEqual([hour])
    expect(after[hour]).toBe('2|0|0|10|2')
    expect(after[day]).toBeUndefined()
    clock.advance(HOUR)
    await ledger.recordUsage('w', { endpoint: '/a' })
    const folded = await redis.hgetall(k.usage)
    expect([folded[day], folded[month]]).toEqual(['2|0|0|10|2', '2|0|0|10|2'])
    expect(
      (
        await ledger.usage('w', {
          from: at('2026-01-15T00:00:00Z'),
          to: at('2026-01-16T00:00:00Z'),
          granularity: 'day',
        })
      ).totals,
    ).toEqual({ requests: 3, credits: 0, refunds: 0, avgLatencyMs: 5 })
  })

  it('keeps the counts written before hours were folded lazily (each call in its hour, day and month), without counting them twice', async () => {
    const { ledger, clock, redis, prefix } = setup()
    await ledger.openAccount('old', { type: 'registered' })
    const k = accountKeys(prefix, 'old')
    const pad = (t: number) => String(t).padStart(16, '0')
    // Two calls on /a this hour and one on /c yesterday, as the earlier layout wrote them.
    const legacy: Record<string, string> = {
      [`h${pad(at('2026-01-15T12:00:00Z'))}:/a`]: '2|3000|0|8|2',
      [`d${pad(at('2026-01-15T00:00:00Z'))}:/a`]: '2|3000|0|8|2',
      [`m${pad(at('2026-01-01T00:00:00Z'))}:/a`]: '2|3000|0|8|2',
      [`h${pad(at('2026-01-14T09:00:00Z'))}:/c`]: '1|0|1|0|0',
      [`d${pad(at('2026-01-14T00:00:00Z'))}:/c`]: '1|0|1|0|0',
      [`m${pad(at('2026-01-01T00:00:00Z'))}:/c`]: '1|0|1|0|0',
    }
    await redis.hset(k.usage, legacy)
    await redis.zadd(k.usageIndex, ...Object.keys(legacy).flatMap((name) => ['0', name]))
    await ledger.recordUsage('old', { endpoint: '/b' })
    // This hour has calls counted the old way: it counts as folded, and so does the watermark.
    expect(await redis.hget(k.usage, 'w')).toBe(String(at('2026-01-15T13:00:00Z')))
    await ledger.recordUsage('old', { endpoint: '/a' })
    clock.advance(HOUR)
    await ledger.recordUsage('old', { endpoint: '/a' })
    const byEndpoint = async (granularity: UsageGranularity, from: string, to: string) =>
      Object.fromEntries(
        (await ledger.usage('old', { from: at(from), to: at(to), granularity })).endpoints.map(
          (e) => [e.endpoint, e.requests],
        ),
      )
    expect(await byEndpoint('hour', '2026-01-15T12:00:00Z', '2026-01-15T13:00:00Z')).toEqual({
      '/a': 3,
      '/b': 1,
    })
    expect(await byEndpoint('day', '2026-01-15T00:00:00Z', '2026-01-16T00:00:00Z')).toEqual({
      '/a': 4,
      '/b': 1,
    })
    expect(await byEndpoint('month', '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z')).toEqual({
      '/a': 4,
      '/b': 1,
      '/c': 1,
    })
  })

  it('validates the usageRetention option at construction', () => {
    const { redis } = setup()
    for (const usageRetention of [
      { hour: HOUR - 1 },
      { day: 1000 },
      { month: 30 * DAY },
      { week: DAY },
      { hour: '1h' },
      'long',
    ]) {
      expect(() => new RedisLedger({ redis, usageRetention: usageRetention as never })).toThrow(
        CreditConfigError,
      )
    }
  })
})

describe('usage queries at their limits on a real redis-server', () => {
  it('answers a day with 3,000 stored endpoints and 1,000 more not yet folded, marked truncated', async () => {
    const clock = new TestClock(at('2026-01-15T12:10:00Z'))
    const { ledger, redis } = makeLedger('redis', { clock: clock.read })
    try {
      await ledger.openAccount('wide', { type: 'registered' })
      const record = (prefix: string, count: number) =>
        Promise.all(
          Array.from({ length: count }, (_, i) =>
            ledger.recordUsage('wide', { endpoint: `/${prefix}${i}` }),
          ),
        )
      await record('a', 3000)
      clock.advance(HOUR) // the next call folds those 3,000 hours into their day
      await record('b', 1000)
      const day = await ledger.usage('wide', {
        from: at('2026-01-15T00:00:00Z'),
        to: at('2026-01-16T00:00:00Z'),
        granularity: 'day',
      })
      expect(day.truncated).toBe(true)
      expect(day.endpoints.length).toBe(3900)
      expect(day.totals.requests).toBe(3900)
    } finally {
      await redis.quit()
    }
  }, 60_000)
})

describe('memory per account on a real redis-server', () => {
  it('keeps an account with signup, purchase and a subscription within 300 bytes (without history)', async () => {
    const redis = realRedis()
    try {
      // A prefix as short as the default 'cg:' plus a few characters for isolation.
      const prefix = `m${randomBytes(3).toString('hex')}:`
      const clock = new TestClock()
      const ledger = new RedisLedger({ redis, prefix, clock: clock.read })
      await ledger.openAccount('user-42', { type: 'registered' })
      await ledger.grant('user-42', {
        amount: 500,
        source: 'purchase',
        idempotencyKey: `${prefix}pay`,
      })
      await ledger.subscribe('user-42', {
        plan: 'standard',
        monthlyCredits: 2500,
        rollover: true,
        idempotencyKey: `${prefix}sub`,
      })
      await spend(ledger, 'user-42', 5)
      clock.advance(40 * DAY)
      await ledger.balance('user-42')
      const k = accountKeys(prefix, 'user-42')
      const bytes = await redis.memory('USAGE', k.account)
      expect(bytes).toBeLessThanOrEqual(300)
    } finally {
      await redis.quit()
    }
  })
})

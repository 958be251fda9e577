import { randomBytes } from 'node:crypto'

import { CreditConfigError, RedisLedger } from '../../src/index'
import { accountKeys } from '../../src/ledger/keys'
import { BACKENDS, TestClock, makeLedger, realRedis, type Backend } from '../helpers/redis'
import { countingClient, snapshot } from '../helpers/snapshot'
import { DAY, HOUR, at, expectCode, spend } from './helpers'

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
    expect(await redis.hlen(k.usage)).toBe(await redis.zcard(k.usageIndex))
    const days = await ledger.usage('long', {
      from: clock.now - 10 * DAY,
      to: clock.now,
      granularity: 'day',
    })
    // Only the last 3 days are within retention; older days read as zero.
    expect(days.series.filter((p) => p.requests > 0).length).toBeLessThanOrEqual(4)
    expect(days.series.slice(0, 6).every((p) => p.requests === 0)).toBe(true)
  }, 120_000)

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

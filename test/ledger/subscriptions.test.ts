import { RedisLedger } from '../../src/index'
import { accountKeys } from '../../src/ledger/keys'
import { BACKENDS, TestClock, makeLedger, type Backend } from '../helpers/redis'
import { countingClient, snapshot } from '../helpers/snapshot'
import {
  DAY,
  HOUR,
  allTransactions,
  at,
  expectCode,
  iso,
  spend,
  subscriptionBuckets,
} from './helpers'

describe.each(BACKENDS)('subscriptions on %s', (backend: Backend) => {
  const open: { quit(): Promise<unknown> }[] = []
  afterAll(async () => {
    await Promise.all(open.map((c) => c.quit()))
  })
  function setup(start: string, options: Parameters<typeof makeLedger>[1] = {}) {
    const clock = new TestClock(at(start))
    const made = makeLedger(backend, { clock: clock.read, ...options })
    open.push(made.redis)
    return { ...made, clock }
  }
  const basic = (key: string, extra: object = {}) => ({
    plan: 'basic',
    monthlyCredits: 500,
    idempotencyKey: key,
    ...extra,
  })

  describe('monthly refresh', () => {
    it('runs a full year: 12 refreshes on the anniversary, unused credits expiring at each, signup untouched', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('y1', { type: 'registered' })
      const started = await ledger.subscribe('y1', basic('y1-sub'))
      expect(started).toMatchObject({ status: 'started', replayed: false, balance: 850 })
      expect(started.subscription).toEqual({
        plan: 'basic',
        monthlyCredits: 500,
        rollover: false,
        startsAt: at('2026-01-15T12:00:00Z'),
        periodStart: at('2026-01-15T12:00:00Z'),
        periodEnd: at('2026-02-15T12:00:00Z'),
        renewsAt: at('2026-02-15T12:00:00Z'),
        endsAt: null,
      })
      for (let month = 1; month <= 12; month++) {
        const anniversary = Date.UTC(2026, month, 15, 12)
        await spend(ledger, 'y1', 100)
        clock.now = anniversary - 1
        const before = await ledger.balance('y1')
        expect(subscriptionBuckets(before)).toEqual([{ amount: 400, expiresAt: iso(anniversary) }])
        clock.now = anniversary
        const after = await ledger.balance('y1')
        expect(subscriptionBuckets(after)).toEqual([
          { amount: 500, expiresAt: iso(Date.UTC(2026, month + 1, 15, 12)) },
        ])
        expect(after.buckets.find((b) => b.source === 'signup')).toEqual({
          source: 'signup',
          amount: 350,
          expiresAt: null,
        })
        expect(after.subscription?.periodStart).toBe(anniversary)
      }
      const history = await allTransactions(ledger, 'y1')
      const refreshes = history.filter((t) => t.kind === 'grant' && t.source === 'subscription')
      expect(refreshes.map((t) => iso(t.time))).toEqual(
        Array.from({ length: 13 }, (_, m) => iso(Date.UTC(2026, m, 15, 12))),
      )
      const expiries = history.filter((t) => t.kind === 'expire')
      expect(expiries).toHaveLength(12)
      for (const e of expiries) expect(e.amount).toBe(-400)
      expect((await ledger.audit('y1')).ok).toBe(true)
    })

    it('catches up every missed month in one call after months of silence, each at its own time', async () => {
      const { ledger, clock } = setup('2026-01-31T08:00:00Z')
      await ledger.openAccount('idle', { type: 'registered' })
      await ledger.subscribe('idle', basic('idle-sub'))
      clock.now = at('2026-07-10T00:00:00Z')
      const balance = await ledger.balance('idle')
      expect(subscriptionBuckets(balance)).toEqual([
        { amount: 500, expiresAt: '2026-07-31T08:00:00.000Z' },
      ])
      const history = await allTransactions(ledger, 'idle')
      expect(history.map((t) => [t.kind, t.amount, iso(t.time)])).toEqual([
        ['grant', 350, '2026-01-31T08:00:00.000Z'],
        ['grant', 500, '2026-01-31T08:00:00.000Z'],
        ['expire', -500, '2026-02-28T08:00:00.000Z'],
        ['grant', 500, '2026-02-28T08:00:00.000Z'],
        ['expire', -500, '2026-03-31T08:00:00.000Z'],
        ['grant', 500, '2026-03-31T08:00:00.000Z'],
        ['expire', -500, '2026-04-30T08:00:00.000Z'],
        ['grant', 500, '2026-04-30T08:00:00.000Z'],
        ['expire', -500, '2026-05-31T08:00:00.000Z'],
        ['grant', 500, '2026-05-31T08:00:00.000Z'],
        ['expire', -500, '2026-06-30T08:00:00.000Z'],
        ['grant', 500, '2026-06-30T08:00:00.000Z'],
      ])
      expect(await ledger.audit('idle')).toMatchObject({ ok: true, liveBalance: 850 })
    })

    it('writes nothing when a refused reserve was the first call after a refresh fell due, and refreshes all the same', async () => {
      const { ledger, clock, redis, prefix } = setup('2026-03-01T00:00:00Z')
      await ledger.openAccount('r1', { type: 'registered' })
      await ledger.subscribe('r1', basic('r1-sub'))
      clock.now = at('2026-04-02T00:00:00Z')
      const before = await snapshot(redis, prefix)
      expect(await ledger.reserve('r1', 10_000, { endpoint: '/x' })).toMatchObject({
        status: 'insufficient',
        available: 850,
      })
      expect(await snapshot(redis, prefix)).toEqual(before)
      expect((await ledger.balance('r1')).balance).toBe(850)
    })

    it('starts at a future startsAt: nothing before it, the first grant on it', async () => {
      const { ledger, clock } = setup('2026-05-10T00:00:00Z')
      await ledger.openAccount('f1', { type: 'registered' })
      const r = await ledger.subscribe(
        'f1',
        basic('f1-sub', { startsAt: at('2026-05-20T09:00:00Z') }),
      )
      expect(r.subscription).toMatchObject({
        periodStart: null,
        periodEnd: null,
        renewsAt: at('2026-05-20T09:00:00Z'),
      })
      expect(r.balance).toBe(350)
      clock.now = at('2026-05-20T09:00:00Z') - 1
      expect((await ledger.balance('f1')).balance).toBe(350)
      clock.now = at('2026-05-20T09:00:00Z')
      expect(subscriptionBuckets(await ledger.balance('f1'))).toEqual([
        { amount: 500, expiresAt: '2026-06-20T09:00:00.000Z' },
      ])
    })

    it('takes a past startsAt as the anniversary only: the current period is granted now, nothing back-dated', async () => {
      const { ledger } = setup('2026-05-10T00:00:00Z')
      await ledger.openAccount('p1', { type: 'registered' })
      const r = await ledger.subscribe(
        'p1',
        basic('p1-sub', { startsAt: at('2025-12-31T18:00:00Z') }),
      )
      expect(r.subscription).toMatchObject({
        periodStart: at('2026-04-30T18:00:00Z'),
        periodEnd: at('2026-05-31T18:00:00Z'),
      })
      const history = await allTransactions(ledger, 'p1')
      expect(history.map((t) => [t.kind, t.amount, iso(t.time)])).toEqual([
        ['grant', 350, '2026-05-10T00:00:00.000Z'],
        ['grant', 500, '2026-05-10T00:00:00.000Z'],
      ])
    })
  })

  describe('anniversaries at the end of the month, across the 2028 leap year', () => {
    const cases: [string, number[]][] = [
      ['2027-12-29T10:00:00Z', [29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 28]],
      ['2027-12-30T10:00:00Z', [30, 29, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 28]],
      ['2027-12-31T10:00:00Z', [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 28]],
    ]
    it.each(cases)(
      'refreshes a subscription anchored at %s on the clamped day of each month, back on the anchor day when it can',
      async (anchor, days) => {
        const { ledger, clock } = setup(anchor)
        const id = `leap-${anchor.slice(8, 10)}`
        await ledger.openAccount(id, { type: 'registered' })
        await ledger.subscribe(id, basic(`${id}-sub`))
        // Month k (1 = January 2028) renews on days[k - 1] of that month at 10:00.
        for (let k = 1; k <= days.length; k++) {
          const renewal = Date.UTC(2027, 11 + k, days[k - 1], 10)
          clock.now = renewal - 1
          expect(subscriptionBuckets(await ledger.balance(id))).toEqual([
            { amount: 500, expiresAt: iso(renewal) },
          ])
          clock.now = renewal
          const b = await ledger.balance(id)
          expect(b.subscription?.periodStart).toBe(renewal)
          const nextDays = days[k] ?? Number.NaN
          if (!Number.isNaN(nextDays)) {
            expect(subscriptionBuckets(b)).toEqual([
              { amount: 500, expiresAt: iso(Date.UTC(2027, 12 + k, nextDays, 10)) },
            ])
          }
        }
        expect((await ledger.audit(id)).ok).toBe(true)
      },
    )
  })

  describe('rollover', () => {
    it('carries unused credits forward at each refresh while active, and expires them all at the end', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('ro', { type: 'registered' })
      await ledger.subscribe('ro', basic('ro-sub', { rollover: true }))
      await spend(ledger, 'ro', 100)
      clock.now = at('2026-02-15T12:00:00Z')
      expect(subscriptionBuckets(await ledger.balance('ro'))).toEqual([
        { amount: 900, expiresAt: '2026-03-15T12:00:00.000Z' },
      ])
      clock.now = at('2026-04-01T00:00:00Z')
      expect(subscriptionBuckets(await ledger.balance('ro'))).toEqual([
        { amount: 1400, expiresAt: '2026-04-15T12:00:00.000Z' },
      ])
      const ended = await ledger.endSubscription('ro')
      expect(ended.subscription).toMatchObject({
        endsAt: at('2026-04-15T12:00:00Z'),
        renewsAt: null,
      })
      clock.now = at('2026-04-15T12:00:00Z') - 1
      expect((await ledger.balance('ro')).balance).toBe(1750)
      clock.now = at('2026-04-15T12:00:00Z')
      const after = await ledger.balance('ro')
      expect(after).toMatchObject({ balance: 350, subscription: null })
      const history = await allTransactions(ledger, 'ro')
      expect(
        history.filter((t) => t.kind === 'expire').map((t) => [t.amount, iso(t.time)]),
      ).toEqual([[-1400, '2026-04-15T12:00:00.000Z']])
      expect((await ledger.audit('ro')).ok).toBe(true)
    })

    it('without rollover, expires the unused credits at every refresh', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('nr', { type: 'registered' })
      await ledger.subscribe('nr', basic('nr-sub'))
      await spend(ledger, 'nr', 100)
      clock.now = at('2026-03-20T00:00:00Z')
      expect(subscriptionBuckets(await ledger.balance('nr'))).toEqual([
        { amount: 500, expiresAt: '2026-04-15T12:00:00.000Z' },
      ])
      const expiries = (await allTransactions(ledger, 'nr')).filter((t) => t.kind === 'expire')
      expect(expiries.map((t) => t.amount)).toEqual([-400, -500])
    })

    it.each([
      [true, 1000, 0],
      [false, 500, -50],
    ])(
      'with rollover %s, a hold taken before the refresh and released after it gives back %s credits (expired: %s)',
      async (rollover, sub, expired) => {
        const { ledger, clock } = setup('2026-01-15T12:00:00Z', { holdMs: 60_000 })
        const id = `hold-${String(rollover)}`
        await ledger.openAccount(id, { type: 'registered' })
        await ledger.subscribe(id, basic(`${id}-sub`, { rollover }))
        clock.now = at('2026-02-15T12:00:00Z') - 10_000
        const hold = await ledger.reserve(id, 50, { endpoint: '/x' })
        if (hold.status !== 'held') throw new Error('not held')
        clock.now = at('2026-02-15T12:00:00Z') + 10_000
        const released = await ledger.release(hold.holdId)
        expect(released).toMatchObject({ outcome: 'released', returned: 50 })
        expect(subscriptionBuckets(await ledger.balance(id))).toEqual([
          { amount: sub, expiresAt: '2026-03-15T12:00:00.000Z' },
        ])
        const history = await allTransactions(ledger, id)
        expect(history.filter((t) => t.kind === 'expire').reduce((s, t) => s + t.amount, 0)).toBe(
          rollover ? 0 : -500,
        )
        expect(history.at(-1)).toMatchObject(
          expired === 0 ? { kind: 'grant' } : { kind: 'expire', amount: expired },
        )
        expect((await ledger.audit(id)).ok).toBe(true)
      },
    )

    it('does the same for a hold that expires across the refresh (voided lazily, at its deadline)', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z', { holdMs: 60_000 })
      await ledger.openAccount('void', { type: 'registered' })
      await ledger.subscribe('void', basic('void-sub', { rollover: true }))
      clock.now = at('2026-02-15T12:00:00Z') - 10_000
      const hold = await ledger.reserve('void', 50, { endpoint: '/x' })
      if (hold.status !== 'held') throw new Error('not held')
      clock.now = at('2026-03-01T00:00:00Z')
      expect(subscriptionBuckets(await ledger.balance('void'))).toEqual([
        { amount: 1000, expiresAt: '2026-03-15T12:00:00.000Z' },
      ])
      expect((await ledger.commit(hold.holdId)).outcome).toBe('expired')
      expect((await ledger.audit('void')).ok).toBe(true)
    })

    it.each([
      [true, 1000],
      [false, 500],
    ])(
      'with rollover %s, carries (or expires) a hold whose deadline is the anniversary itself: the refresh comes first',
      async (rollover, sub) => {
        const { ledger, clock } = setup('2026-01-15T12:00:00Z', { holdMs: 60_000 })
        const id = `tie-${String(rollover)}`
        await ledger.openAccount(id, { type: 'registered' })
        await ledger.subscribe(id, basic(`${id}-sub`, { rollover }))
        clock.now = at('2026-02-15T12:00:00Z') - 60_000
        const hold = await ledger.reserve(id, 50, { endpoint: '/x' })
        if (hold.status !== 'held') throw new Error('not held')
        expect(hold.expiresAt).toBe(at('2026-02-15T12:00:00Z'))
        clock.now = at('2026-02-15T12:00:00Z')
        expect(subscriptionBuckets(await ledger.balance(id))).toEqual([
          { amount: sub, expiresAt: '2026-03-15T12:00:00.000Z' },
        ])
        const history = await allTransactions(ledger, id)
        for (const t of history.slice(2)) expect(t.time).toBe(at('2026-02-15T12:00:00Z'))
        expect((await ledger.audit(id)).ok).toBe(true)
      },
    )
  })

  describe('ending', () => {
    it('ends mid-period: the credits last until the period ends, then expire; nothing refreshes; purchases stay', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('end', { type: 'registered' })
      await ledger.grant('end', { amount: 200, source: 'purchase', idempotencyKey: 'end-buy' })
      await ledger.subscribe('end', basic('end-sub'))
      clock.now = at('2026-02-20T00:00:00Z')
      await spend(ledger, 'end', 120)
      const ended = await ledger.endSubscription('end')
      expect(ended).toMatchObject({ status: 'ending', balance: 930 })
      expect(ended.subscription).toMatchObject({
        periodEnd: at('2026-03-15T12:00:00Z'),
        renewsAt: null,
        endsAt: at('2026-03-15T12:00:00Z'),
      })
      // A resend (as after a dropped reply) changes nothing more.
      expect((await ledger.endSubscription('end')).subscription?.endsAt).toBe(
        at('2026-03-15T12:00:00Z'),
      )
      clock.now = at('2026-03-15T12:00:00Z') - 1
      expect(subscriptionBuckets(await ledger.balance('end'))).toEqual([
        { amount: 380, expiresAt: '2026-03-15T12:00:00.000Z' },
      ])
      clock.now = at('2026-03-15T12:00:00Z')
      const after = await ledger.balance('end')
      expect(after).toMatchObject({ balance: 550, subscription: null })
      expect(after.buckets).toEqual([
        { source: 'purchase', amount: 200, expiresAt: null },
        { source: 'signup', amount: 350, expiresAt: null },
      ])
      clock.now = at('2026-09-01T00:00:00Z')
      expect((await ledger.balance('end')).balance).toBe(550)
      const grants = (await allTransactions(ledger, 'end')).filter(
        (t) => t.source === 'subscription',
      )
      expect(grants.map((t) => [t.kind, t.amount])).toEqual([
        ['grant', 500],
        ['expire', -500],
        ['grant', 500],
        ['expire', -380],
      ])
      expect(await ledger.endSubscription('end')).toMatchObject({
        status: 'none',
        subscription: null,
      })
    })

    it('removes an ended subscription from the account hash once its last period is over', async () => {
      const { ledger, clock, redis, prefix } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('gone', { type: 'registered' })
      await ledger.subscribe('gone', basic('gone-sub'))
      await ledger.endSubscription('gone')
      const { account } = accountKeys(prefix, 'gone')
      expect(await redis.hexists(account, 'su')).toBe(1)
      clock.now = at('2026-02-15T12:00:00Z')
      expect((await ledger.balance('gone')).subscription).toBeNull()
      expect(await redis.hexists(account, 'su')).toBe(0)
    })

    it('ends at the first anniversary at or after `at`, refreshing until then', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('later', { type: 'registered' })
      await ledger.subscribe('later', basic('later-sub'))
      const r = await ledger.endSubscription('later', { at: new Date('2026-04-03T00:00:00Z') })
      expect(r.subscription?.endsAt).toBe(at('2026-04-15T12:00:00Z'))
      expect(
        (await ledger.endSubscription('later', { at: at('2026-04-15T12:00:00Z') })).subscription
          ?.endsAt,
      ).toBe(at('2026-04-15T12:00:00Z'))
      clock.now = at('2026-04-15T12:00:00Z') - 1
      expect((await ledger.balance('later')).subscription).toMatchObject({
        periodStart: at('2026-03-15T12:00:00Z'),
        renewsAt: null,
      })
      clock.now = at('2026-04-15T12:00:00Z')
      expect((await ledger.balance('later')).subscription).toBeNull()
      const refreshes = (await allTransactions(ledger, 'later')).filter(
        (t) => t.kind === 'grant' && t.source === 'subscription',
      )
      expect(refreshes).toHaveLength(3)
    })

    it('takes an `at` in the past as now, and an end before a future start as "never started"', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('past', { type: 'registered' })
      await ledger.subscribe('past', basic('past-sub'))
      clock.now = at('2026-02-01T00:00:00Z')
      const r = await ledger.endSubscription('past', { at: 0 })
      expect(r.subscription?.endsAt).toBe(at('2026-02-15T12:00:00Z'))
      await ledger.openAccount('never', { type: 'registered' })
      await ledger.subscribe('never', basic('never-sub', { startsAt: at('2026-03-01T00:00:00Z') }))
      expect((await ledger.endSubscription('never')).subscription?.endsAt).toBe(
        at('2026-03-01T00:00:00Z'),
      )
      clock.now = at('2026-06-01T00:00:00Z')
      const b = await ledger.balance('never')
      expect(b).toMatchObject({ balance: 350, subscription: null })
    })

    it('resumes when the same plan is subscribed again before the end', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('back', { type: 'registered' })
      await ledger.subscribe('back', basic('back-1'))
      await ledger.endSubscription('back')
      const r = await ledger.subscribe('back', basic('back-2'))
      expect(r).toMatchObject({ status: 'resumed', balance: 850 })
      expect(r.subscription).toMatchObject({ endsAt: null, renewsAt: at('2026-02-15T12:00:00Z') })
      clock.now = at('2026-02-15T12:00:00Z')
      expect(subscriptionBuckets(await ledger.balance('back'))).toEqual([
        { amount: 500, expiresAt: '2026-03-15T12:00:00.000Z' },
      ])
    })

    it('starts a new subscription, with a new anniversary, after the old one has ended', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('again', { type: 'registered' })
      await ledger.subscribe('again', basic('again-1', { rollover: true }))
      await ledger.endSubscription('again')
      clock.now = at('2026-03-03T00:00:00Z')
      const r = await ledger.subscribe('again', basic('again-2', { rollover: true }))
      expect(r).toMatchObject({ status: 'started', balance: 850 })
      expect(r.subscription).toMatchObject({
        startsAt: at('2026-03-03T00:00:00Z'),
        periodEnd: at('2026-04-03T00:00:00Z'),
      })
    })
  })

  describe('plan changes (the README rule)', () => {
    it('upgrades at once: the difference is granted into the current period, with the same expiry', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('up', { type: 'registered' })
      await ledger.subscribe('up', basic('up-1'))
      clock.now = at('2026-01-25T00:00:00Z')
      await spend(ledger, 'up', 450)
      const r = await ledger.subscribe('up', {
        plan: 'pro',
        monthlyCredits: 7500,
        idempotencyKey: 'up-2',
      })
      expect(r).toMatchObject({ status: 'changed', balance: 350 + 50 + 7000 })
      expect(r.subscription).toMatchObject({
        plan: 'pro',
        monthlyCredits: 7500,
        startsAt: at('2026-01-15T12:00:00Z'),
      })
      expect(subscriptionBuckets(await ledger.balance('up'))).toEqual([
        { amount: 7050, expiresAt: '2026-02-15T12:00:00.000Z' },
      ])
      // Down and up again within the period: the period's allowance is already granted.
      await ledger.subscribe('up', basic('up-3'))
      await ledger.subscribe('up', { plan: 'pro', monthlyCredits: 7500, idempotencyKey: 'up-4' })
      expect((await ledger.balance('up')).balance).toBe(7400)
      clock.now = at('2026-02-15T12:00:00Z')
      expect(subscriptionBuckets(await ledger.balance('up'))).toEqual([
        { amount: 7500, expiresAt: '2026-03-15T12:00:00.000Z' },
      ])
      const grants = (await allTransactions(ledger, 'up')).filter(
        (t) => t.kind === 'grant' && t.source === 'subscription',
      )
      expect(grants.map((t) => [t.amount, iso(t.time)])).toEqual([
        [500, '2026-01-15T12:00:00.000Z'],
        [7000, '2026-01-25T00:00:00.000Z'],
        [7500, '2026-02-15T12:00:00.000Z'],
      ])
    })

    it('downgrades without taking anything back: the next refresh grants the new amount', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('down', { type: 'registered' })
      await ledger.subscribe('down', {
        plan: 'pro',
        monthlyCredits: 7500,
        idempotencyKey: 'down-1',
      })
      clock.now = at('2026-02-01T00:00:00Z')
      const r = await ledger.subscribe('down', basic('down-2'))
      expect(r).toMatchObject({ status: 'changed', balance: 7850 })
      clock.now = at('2026-02-15T12:00:00Z')
      expect(subscriptionBuckets(await ledger.balance('down'))).toEqual([
        { amount: 500, expiresAt: '2026-03-15T12:00:00.000Z' },
      ])
    })

    it('applies a rollover change from the next refresh on', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('flip', { type: 'registered' })
      await ledger.subscribe('flip', basic('flip-1'))
      const r = await ledger.subscribe('flip', basic('flip-2', { rollover: true }))
      expect(r).toMatchObject({ status: 'changed', balance: 850 })
      clock.now = at('2026-02-15T12:00:00Z')
      expect(subscriptionBuckets(await ledger.balance('flip'))).toEqual([
        { amount: 1000, expiresAt: '2026-03-15T12:00:00.000Z' },
      ])
    })

    it('changes nothing for the same plan, and refuses to move the anniversary', async () => {
      const { ledger } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('same', { type: 'registered' })
      await ledger.subscribe('same', basic('same-1'))
      expect(await ledger.subscribe('same', basic('same-2'))).toMatchObject({
        status: 'unchanged',
        balance: 850,
      })
      await expectCode(
        ledger.subscribe(
          'same',
          basic('same-3', { plan: 'pro', startsAt: at('2026-01-20T00:00:00Z') }),
        ),
        'ERR_CREDIT_INVALID_ARGUMENT',
      )
      expect(
        await ledger.subscribe('same', basic('same-4', { startsAt: at('2026-01-15T12:00:00Z') })),
      ).toMatchObject({ status: 'unchanged' })
    })
  })

  describe('idempotency', () => {
    it('subscribes once under 5 concurrent replays, and a replay reports what the first call did', async () => {
      const { ledger } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('idem', { type: 'registered' })
      const results = await Promise.all(
        Array.from({ length: 5 }, () => ledger.subscribe('idem', basic('idem-1'))),
      )
      expect(results.filter((r) => !r.replayed)).toHaveLength(1)
      for (const r of results) expect(r.status).toBe('started')
      expect((await ledger.balance('idem')).balance).toBe(850)
    })

    it('refuses the same key with other content, or a key a grant used, changing nothing', async () => {
      const { ledger, redis, prefix } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('c1', { type: 'registered' })
      await ledger.openAccount('c2', { type: 'registered' })
      await ledger.subscribe('c1', basic('c-key'))
      await ledger.grant('c1', { amount: 5, source: 'purchase', idempotencyKey: 'c-grant' })
      const before = await snapshot(redis, prefix)
      await expectCode(
        ledger.subscribe('c1', basic('c-key', { monthlyCredits: 501 })),
        'ERR_CREDIT_IDEMPOTENCY_CONFLICT',
      )
      await expectCode(
        ledger.subscribe('c1', basic('c-key', { rollover: true })),
        'ERR_CREDIT_IDEMPOTENCY_CONFLICT',
      )
      await expectCode(ledger.subscribe('c2', basic('c-key')), 'ERR_CREDIT_IDEMPOTENCY_CONFLICT')
      await expectCode(ledger.subscribe('c1', basic('c-grant')), 'ERR_CREDIT_IDEMPOTENCY_CONFLICT')
      expect(await snapshot(redis, prefix)).toEqual(before)
    })
  })

  describe('rules and input', () => {
    it('refuses guests (no top-ups), unknown accounts, and grants of the reserved "subscription" source', async () => {
      const { ledger } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('g', { type: 'guest' })
      await expectCode(ledger.subscribe('g', basic('g-1')), 'ERR_CREDIT_TOPUP_NOT_ALLOWED')
      await expectCode(ledger.subscribe('ghost', basic('ghost-1')), 'ERR_CREDIT_ACCOUNT_NOT_FOUND')
      await expectCode(ledger.endSubscription('ghost'), 'ERR_CREDIT_ACCOUNT_NOT_FOUND')
      await ledger.openAccount('u', { type: 'registered' })
      await expectCode(
        ledger.grant('u', { amount: 5, source: 'subscription', idempotencyKey: 'u-1' }),
        'ERR_CREDIT_INVALID_ARGUMENT',
      )
    })

    it.each([
      ['an empty plan', { plan: '' }, 'ERR_CREDIT_INVALID_ARGUMENT'],
      ['a plan with a bar', { plan: 'a|b' }, 'ERR_CREDIT_INVALID_ARGUMENT'],
      ['0 credits', { monthlyCredits: 0 }, 'ERR_CREDIT_INVALID_AMOUNT'],
      ['negative credits', { monthlyCredits: -5 }, 'ERR_CREDIT_INVALID_AMOUNT'],
      ['4 decimals', { monthlyCredits: 1.0005 }, 'ERR_CREDIT_INVALID_AMOUNT'],
      ['more than 10^9 credits', { monthlyCredits: 1_000_000_001 }, 'ERR_CREDIT_INVALID_AMOUNT'],
      ['a string rollover', { rollover: 'yes' }, 'ERR_CREDIT_INVALID_ARGUMENT'],
      ['an invalid date', { startsAt: new Date(Number.NaN) }, 'ERR_CREDIT_INVALID_ARGUMENT'],
      ['a negative startsAt', { startsAt: -1 }, 'ERR_CREDIT_INVALID_ARGUMENT'],
      ['no idempotency key', { idempotencyKey: '' }, 'ERR_CREDIT_INVALID_ARGUMENT'],
      ['a typo', { rolover: true }, 'ERR_CREDIT_INVALID_ARGUMENT'],
    ])('refuses %s before Redis is touched', async (_, bad, code) => {
      const { redis, prefix } = setup('2026-01-15T12:00:00Z')
      const { client, calls } = countingClient(redis as never)
      const ledger = new RedisLedger({ redis: client, prefix })
      await expectCode(ledger.subscribe('v', { ...basic('v-1'), ...bad } as never), code)
      await expectCode(
        ledger.endSubscription('v', { at: 'soon' } as never),
        'ERR_CREDIT_INVALID_ARGUMENT',
      )
      expect(calls()).toBe(0)
    })

    it('spends the soonest-expiring first: promo, then subscription, then purchases, then signup', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      await ledger.openAccount('order', { type: 'registered' })
      await ledger.grant('order', { amount: 100, source: 'purchase', idempotencyKey: 'o-buy' })
      await ledger.grant('order', {
        amount: 30,
        source: 'promo',
        expiresAt: clock.now + 3 * DAY,
        idempotencyKey: 'o-promo',
      })
      await ledger.subscribe('order', basic('o-sub'))
      const sources = (await ledger.balance('order')).buckets.map((b) => b.source)
      expect(sources).toEqual(['promo', 'subscription', 'purchase', 'signup'])
      const amounts = async () =>
        Object.fromEntries((await ledger.balance('order')).buckets.map((b) => [b.source, b.amount]))
      await spend(ledger, 'order', 40)
      expect(await amounts()).toEqual({ subscription: 490, purchase: 100, signup: 350 })
      await spend(ledger, 'order', 540)
      expect(await amounts()).toEqual({ purchase: 50, signup: 350 })
      await spend(ledger, 'order', 60)
      expect(await amounts()).toEqual({ signup: 340 })
      // The next refresh grants 500 again and leaves the rest alone.
      clock.now = at('2026-02-15T12:00:00Z')
      expect(await amounts()).toEqual({ subscription: 500, signup: 340 })
    })

    it('expires guest credits 24 hours after opening, to the millisecond', async () => {
      const { ledger, clock } = setup('2026-01-15T12:00:00Z')
      const opened = clock.now
      await ledger.openAccount('guest', { type: 'guest' })
      clock.now = opened + 24 * HOUR - 1
      const hold = await ledger.reserve('guest', 50, { endpoint: '/x' })
      expect(hold.status).toBe('held')
      if (hold.status === 'held') await ledger.release(hold.holdId)
      expect((await ledger.balance('guest')).available).toBe(50)
      clock.now = opened + 24 * HOUR
      expect((await ledger.balance('guest')).available).toBe(0)
      expect((await ledger.reserve('guest', 0.001, { endpoint: '/x' })).status).toBe('insufficient')
      const history = await allTransactions(ledger, 'guest')
      expect(history.at(-1)).toMatchObject({
        kind: 'expire',
        amount: -50,
        time: opened + 24 * HOUR,
      })
    })
  })
})

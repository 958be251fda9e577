import calculateSlot from 'cluster-key-slot'
import fc from 'fast-check'

import { CreditArgumentError, CreditRuleError, RedisLedger, isCreditError } from '../../src/index'
import { accountKeys, parseHoldId, scriptKeys } from '../../src/ledger/keys'
import { ScriptRunner } from '../../src/lua/run-script'
import { batchArgv, scripts, splitBatchReply } from '../../src/lua/scripts'
import { interceptScripts } from '../helpers/intercept'
import { BACKENDS, TestClock, makeLedger, type Backend } from '../helpers/redis'
import { countingClient, snapshot } from '../helpers/snapshot'

const HOUR = 60 * 60 * 1000
const DAY = 24 * HOUR

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(isCreditError(error)).toBe(true)
  expect((error as { code: string }).code).toBe(code)
}

describe.each(BACKENDS)('RedisLedger contract on %s', (backend: Backend) => {
  const open: { quit(): Promise<unknown> }[] = []
  afterAll(async () => {
    await Promise.all(open.map((c) => c.quit()))
  })
  function setup(options: Parameters<typeof makeLedger>[1] = {}) {
    const made = makeLedger(backend, options)
    open.push(made.redis)
    return made
  }

  describe('accounts', () => {
    it('opens a registered account with 350 credits that never expire, once', async () => {
      const { ledger } = setup()
      expect(await ledger.openAccount('u1', { type: 'registered' })).toEqual({
        accountId: 'u1',
        accountType: 'registered',
        created: true,
      })
      expect((await ledger.openAccount('u1', { type: 'registered' })).created).toBe(false)
      const balance = await ledger.balance('u1')
      expect(balance).toMatchObject({
        balance: 350,
        available: 350,
        pending: 0,
        accountType: 'registered',
      })
      expect(balance.buckets).toEqual([{ source: 'signup', amount: 350, expiresAt: null }])
    })

    it('opens a guest with 50 credits that expire 24 h after opening, exactly', async () => {
      const clock = new TestClock()
      const { ledger } = setup({ clock: clock.read })
      const opened = clock.now
      await ledger.openAccount('g1', { type: 'guest' })
      expect((await ledger.balance('g1')).buckets).toEqual([
        { source: 'signup', amount: 50, expiresAt: opened + DAY },
      ])
      clock.advance(DAY - 1)
      expect((await ledger.balance('g1')).available).toBe(50)
      clock.advance(1)
      expect((await ledger.balance('g1')).available).toBe(0)
      expect((await ledger.reserve('g1', 1, { endpoint: '/x' })).status).toBe('insufficient')
    })

    it('refuses to top up a guest and writes nothing', async () => {
      const { ledger, redis, prefix } = setup()
      await ledger.openAccount('g2', { type: 'guest' })
      const before = await snapshot(redis, prefix)
      await expectCode(
        ledger.grant('g2', { amount: 10, source: 'purchase', idempotencyKey: 'g2-buy' }),
        'ERR_CREDIT_TOPUP_NOT_ALLOWED',
      )
      // The ledger-wide claim of the key stays (it binds the key to this grant); the account is untouched.
      const after = await snapshot(redis, prefix)
      for (const key of Object.keys(before)) expect(after[key]).toEqual(before[key])
    })

    it('never charges an enterprise account', async () => {
      const { ledger } = setup()
      await ledger.openAccount('e1', { type: 'enterprise' })
      for (let i = 0; i < 5; i++) {
        const hold = await ledger.reserve('e1', 1000, { endpoint: '/big' })
        expect(hold).toMatchObject({ status: 'held', held: 0, unlimited: true, cost: 1000 })
        if (hold.status === 'held') expect((await ledger.commit(hold.holdId)).charged).toBe(0)
      }
      expect((await ledger.balance('e1')).balance).toBe(0)
    })

    it('refuses to reopen an account as another type', async () => {
      const { ledger } = setup()
      await ledger.openAccount('u2', { type: 'registered' })
      await expectCode(
        ledger.openAccount('u2', { type: 'guest' }),
        'ERR_CREDIT_ACCOUNT_TYPE_CONFLICT',
      )
    })

    it('answers no_account, and opens on first sight when asked, in the reserve itself', async () => {
      const { ledger } = setup()
      expect(await ledger.reserve('nobody', 1, { endpoint: '/x' })).toEqual({
        status: 'no_account',
        accountId: 'nobody',
      })
      await expectCode(ledger.balance('nobody'), 'ERR_CREDIT_ACCOUNT_NOT_FOUND')
      await expectCode(
        ledger.grant('nobody', { amount: 1, source: 'purchase', idempotencyKey: 'nobody-1' }),
        'ERR_CREDIT_ACCOUNT_NOT_FOUND',
      )
      const hold = await ledger.reserve('newcomer', 5, { endpoint: '/x', openAs: 'guest' })
      expect(hold).toMatchObject({
        status: 'held',
        opened: true,
        accountType: 'guest',
        available: 45,
      })
    })

    it('decides the tier policy in the reserve and writes nothing when it forbids', async () => {
      const { ledger, redis, prefix } = setup()
      await ledger.openAccount('g3', { type: 'guest' })
      const before = await snapshot(redis, prefix)
      expect(
        await ledger.reserve('g3', 5, {
          endpoint: '/pro',
          allowedTypes: ['registered', 'enterprise'],
        }),
      ).toEqual({
        status: 'forbidden',
        accountId: 'g3',
        accountType: 'guest',
      })
      expect(
        await ledger.reserve('fresh', 5, {
          endpoint: '/pro',
          allowedTypes: ['registered'],
          openAs: 'guest',
        }),
      ).toMatchObject({
        status: 'forbidden',
      })
      expect(await snapshot(redis, prefix)).toEqual(before)
    })
  })

  describe('grants', () => {
    it('credits once under 5 concurrent replays of one idempotency key', async () => {
      const { ledger } = setup()
      await ledger.openAccount('u3', { type: 'registered' })
      const results = await Promise.all(
        Array.from({ length: 5 }, () =>
          ledger.grant('u3', { amount: 200, source: 'purchase', idempotencyKey: 'evt_1' }),
        ),
      )
      expect(results.filter((r) => !r.replayed)).toHaveLength(1)
      expect((await ledger.balance('u3')).balance).toBe(550)
    })

    it('refuses the same key with another amount or another account, changing nothing', async () => {
      const { ledger, redis, prefix } = setup()
      await ledger.openAccount('u4', { type: 'registered' })
      await ledger.openAccount('u5', { type: 'registered' })
      await ledger.grant('u4', { amount: 200, source: 'purchase', idempotencyKey: 'evt_2' })
      const before = await snapshot(redis, prefix)
      await expectCode(
        ledger.grant('u4', { amount: 500, source: 'purchase', idempotencyKey: 'evt_2' }),
        'ERR_CREDIT_IDEMPOTENCY_CONFLICT',
      )
      await expectCode(
        ledger.grant('u5', { amount: 200, source: 'purchase', idempotencyKey: 'evt_2' }),
        'ERR_CREDIT_IDEMPOTENCY_CONFLICT',
      )
      expect(await snapshot(redis, prefix)).toEqual(before)
    })

    it('keeps fractional credits exact: 350 − 0.5 − 65.5 + 0.5 = 284.5', async () => {
      const { ledger } = setup()
      await ledger.openAccount('u6', { type: 'registered' })
      for (const cost of [0.5, 65.5]) {
        const hold = await ledger.reserve('u6', cost, { endpoint: '/x' })
        if (hold.status !== 'held') throw new Error('not held')
        await ledger.commit(hold.holdId)
      }
      await ledger.grant('u6', { amount: '0.5', source: 'bonus', idempotencyKey: 'u6-bonus' })
      expect((await ledger.balance('u6')).balance).toBe(284.5)
    })

    it('stores amounts up to 2^53 − 1 milli-credits exactly, and returns them exactly below 2^43 credits', async () => {
      const { ledger, redis, prefix } = setup()
      await ledger.openAccount('rich', { type: 'enterprise' })
      await ledger.grant('rich', {
        amount: '9007199254740.991',
        source: 'purchase',
        idempotencyKey: 'rich-1',
      })
      // Exact to the milli-credit in Redis; as a JS number, the nearest double (within 0.002).
      expect(await redis.hget(accountKeys(prefix, 'rich').account, 'b0:purchase')).toBe(
        '9007199254740991',
      )
      expect(
        Math.abs((await ledger.balance('rich')).available - Number('9007199254740.991')),
      ).toBeLessThan(0.002)
      await expectCode(
        ledger.grant('rich', {
          amount: '9007199254740.992',
          source: 'purchase',
          idempotencyKey: 'rich-2',
        }),
        'ERR_CREDIT_INVALID_AMOUNT',
      )
      await ledger.openAccount('rich2', { type: 'enterprise' })
      await ledger.grant('rich2', {
        amount: '8796093022207.999',
        source: 'purchase',
        idempotencyKey: 'rich2-1',
      })
      expect(String((await ledger.balance('rich2')).available)).toBe('8796093022207.999')
    })
  })

  describe('reserve, commit and release', () => {
    it('lets exactly 142 of 500 concurrent reserves of 7 hold against 1000 credits, leaving 6', async () => {
      const { ledger } = setup({ accountTypes: { thousand: { signupCredits: 1000 } } })
      await ledger.openAccount('busy', { type: 'thousand' })
      const results = await Promise.all(
        Array.from({ length: 500 }, () => ledger.reserve('busy', 7, { endpoint: '/batch' })),
      )
      const held = results.filter((r) => r.status === 'held')
      expect(held).toHaveLength(142)
      expect(results.filter((r) => r.status === 'insufficient')).toHaveLength(358)
      for (const r of results)
        if (r.status === 'held') expect(r.available).toBeGreaterThanOrEqual(0)
      expect(await ledger.balance('busy')).toMatchObject({
        available: 6,
        pending: 994,
        balance: 1000,
      })
      await Promise.all(held.map((r) => ledger.commit(r.holdId)))
      expect(await ledger.balance('busy')).toMatchObject({ available: 6, pending: 0, balance: 6 })
    })

    it('reports the shortfall (required and available) and writes nothing', async () => {
      const { ledger, redis, prefix } = setup()
      await ledger.openAccount('poor', { type: 'guest' })
      const before = await snapshot(redis, prefix)
      expect(await ledger.reserve('poor', 50.5, { endpoint: '/x' })).toEqual({
        status: 'insufficient',
        accountId: 'poor',
        accountType: 'guest',
        required: 50.5,
        available: 50,
      })
      expect(await snapshot(redis, prefix)).toEqual(before)
    })

    it('charges at most what was reserved on commit and returns the rest', async () => {
      const { ledger } = setup()
      await ledger.openAccount('u7', { type: 'registered' })
      const hold = await ledger.reserve('u7', 10, { endpoint: '/batch' })
      if (hold.status !== 'held') throw new Error('not held')
      await expectCode(
        ledger.commit(hold.holdId, { actualCost: 10.001 }),
        'ERR_CREDIT_HOLD_EXCEEDED',
      )
      expect((await ledger.balance('u7')).pending).toBe(10)
      const result = await ledger.commit(hold.holdId, { actualCost: 3.25 })
      expect(result).toMatchObject({
        outcome: 'committed',
        charged: 3.25,
        returned: 6.75,
        replayed: false,
        balance: 346.75,
      })
    })

    it('resolves a hold once: repeats and opposite calls replay the first outcome', async () => {
      const { ledger } = setup()
      await ledger.openAccount('u8', { type: 'registered' })
      const a = await ledger.reserve('u8', 5, { endpoint: '/x' })
      const b = await ledger.reserve('u8', 5, { endpoint: '/x' })
      if (a.status !== 'held' || b.status !== 'held') throw new Error('not held')
      expect(await ledger.commit(a.holdId)).toMatchObject({
        outcome: 'committed',
        charged: 5,
        replayed: false,
      })
      expect(await ledger.commit(a.holdId)).toMatchObject({
        outcome: 'committed',
        charged: 5,
        replayed: true,
      })
      expect(await ledger.release(a.holdId)).toMatchObject({
        outcome: 'committed',
        charged: 5,
        replayed: true,
      })
      expect(await ledger.release(b.holdId)).toMatchObject({
        outcome: 'released',
        charged: 0,
        returned: 5,
      })
      expect(await ledger.commit(b.holdId)).toMatchObject({
        outcome: 'released',
        charged: 0,
        replayed: true,
      })
      expect((await ledger.balance('u8')).balance).toBe(345)
    })

    it('resolves a hold once when 20 commits and releases race', async () => {
      const { ledger } = setup()
      await ledger.openAccount('u9', { type: 'registered' })
      const hold = await ledger.reserve('u9', 5, { endpoint: '/x' })
      if (hold.status !== 'held') throw new Error('not held')
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          i % 2 === 0 ? ledger.commit(hold.holdId) : ledger.release(hold.holdId),
        ),
      )
      expect(results.filter((r) => !r.replayed)).toHaveLength(1)
      expect(new Set(results.map((r) => r.outcome)).size).toBe(1)
      const charged = results[0]!.outcome === 'committed' ? 5 : 0
      expect((await ledger.balance('u9')).balance).toBe(350 - charged)
    })

    it('makes a resent reserve (same nonce, as after a dropped connection) hold once', async () => {
      const { ledger, redis, prefix } = setup()
      await ledger.openAccount('u10', { type: 'registered' })
      const runner = new ScriptRunner(redis)
      const k = accountKeys(prefix, 'u10')
      const keys = [k.account, k.holds, k.history]
      const args = [
        '',
        'AAAAAAAAAAAAAAAA',
        '5000',
        '30000',
        '/x',
        '*',
        '',
        '',
        0,
        0,
        86400000,
        1000,
      ]
      const first = (await runner.run(scripts.reserve, keys, args)) as string[]
      const second = (await runner.run(scripts.reserve, keys, args)) as string[]
      expect(first[0]).toBe('OK')
      expect(second.slice(0, 2)).toEqual(first.slice(0, 2))
      expect(await ledger.balance('u10')).toMatchObject({ available: 345, pending: 5 })
      // And once the ledger has cancelled it (as it does when a reserve's reply is lost), a late
      // resend cannot create the hold again.
      const keep = [3_600_000, 86_400_000, 31 * 86_400_000] // usage retention: hour, day, month
      const cancel = ['', 'AAAAAAAAAAAAAAAA', 'cancel', '', 86400000, 1000, '', ...keep]
      const keys7 = scriptKeys(prefix, 'u10', scripts.resolve.numberOfKeys)
      expect(((await runner.run(scripts.resolve, keys7, cancel)) as string[])[0]).toBe('RELEASED')
      const late = (await runner.run(scripts.reserve, keys, args)) as string[]
      expect(late).toEqual(['DUPLICATE', 'R'])
      expect(await ledger.balance('u10')).toMatchObject({ available: 350, pending: 0 })
    })

    it('voids the hold of a reserve whose reply was lost, so a failed reserve holds nothing', async () => {
      const { ledger: base, redis, prefix } = setup()
      await base.openAccount('lost', { type: 'registered' })
      let dropped = false
      // A client that runs the first reserve but loses its reply, as a dropped connection does.
      const lossy = interceptScripts(redis, async ({ args }, send) => {
        const result = await send()
        const isReserve = args.includes('/lost-reply')
        if (isReserve && !dropped) {
          dropped = true
          throw new Error('Connection is closed.')
        }
        return result
      })
      const ledger = new RedisLedger({ redis: lossy, prefix })
      await expectCode(
        ledger.reserve('lost', 5, { endpoint: '/lost-reply' }),
        'ERR_CREDIT_STORE_UNAVAILABLE',
      )
      let balance = await ledger.balance('lost')
      for (let i = 0; i < 50 && balance.pending !== 0; i++) {
        await new Promise((resolve) => setTimeout(resolve, 10))
        balance = await ledger.balance('lost')
      }
      expect(balance).toMatchObject({ available: 350, pending: 0, balance: 350 })
    })

    it('voids a hold after holdMs on the next touch; a late commit charges nothing and says so', async () => {
      const clock = new TestClock()
      const { ledger } = setup({ clock: clock.read, holdMs: 1000 })
      await ledger.openAccount('u11', { type: 'registered' })
      const hold = await ledger.reserve('u11', 5, { endpoint: '/x' })
      if (hold.status !== 'held') throw new Error('not held')
      expect(hold.expiresAt).toBe(clock.now + 1000)
      clock.advance(999)
      expect((await ledger.balance('u11')).pending).toBe(5)
      clock.advance(1)
      expect(await ledger.balance('u11')).toMatchObject({ pending: 0, available: 350 })
      expect(await ledger.commit(hold.holdId)).toMatchObject({
        outcome: 'expired',
        charged: 0,
        returned: 5,
      })
      expect((await ledger.balance('u11')).balance).toBe(350)
    })

    it('voids an expired hold inside the commit itself when nothing touched the account before', async () => {
      const clock = new TestClock()
      const { ledger } = setup({ clock: clock.read })
      await ledger.openAccount('u12', { type: 'registered' })
      const hold = await ledger.reserve('u12', 5, { endpoint: '/x', holdMs: 50 })
      if (hold.status !== 'held') throw new Error('not held')
      clock.advance(60)
      expect(await ledger.commit(hold.holdId)).toMatchObject({
        outcome: 'expired',
        charged: 0,
        replayed: false,
      })
    })

    it('voids each hold at its own deadline, whichever earlier or later holds were settled or reserved since', async () => {
      const clock = new TestClock()
      const { ledger, redis, prefix } = setup({ clock: clock.read, holdMs: 30_000 })
      await ledger.openAccount('u13', { type: 'registered' })
      const reserve = async (cost: number) => {
        const hold = await ledger.reserve('u13', cost, { endpoint: '/x' })
        if (hold.status !== 'held') throw new Error('not held')
        return hold.holdId
      }
      const first = await reserve(1) // due at 30 s
      clock.advance(10_000)
      await reserve(2) // due at 40 s
      clock.advance(10_000)
      await ledger.commit(first) // its deadline moves a day on, where the outcome is forgotten
      clock.advance(15_000) // 35 s: the first deadline has passed, the second has not
      expect(await ledger.balance('u13')).toMatchObject({ pending: 2, available: 347 })
      const third = await reserve(4) // due at 65 s
      clock.advance(5_000) // 40 s
      expect(await ledger.balance('u13')).toMatchObject({ pending: 4, available: 345 })
      clock.advance(25_000) // 65 s
      expect(await ledger.balance('u13')).toMatchObject({ pending: 0, available: 349 })
      expect(await ledger.commit(third)).toMatchObject({ outcome: 'expired', replayed: true })
      clock.advance(DAY)
      // Outcomes are forgotten after their retention (10 minutes), at the next touch.
      expect(await ledger.balance('u13')).toMatchObject({ balance: 349, pending: 0 })
      expect(await redis.hlen(accountKeys(prefix, 'u13').holds)).toBe(0)
    })

    it('keeps in the account when the first record of the holds hash can fall due, and moves it only when that hash is read', async () => {
      const clock = new TestClock()
      const retention = 60_000
      const { ledger, redis, prefix } = setup({
        clock: clock.read,
        holdMs: 30_000,
        resolvedHoldRetentionMs: retention,
      })
      await ledger.openAccount('u17', { type: 'registered' })
      const k = accountKeys(prefix, 'u17')
      const nd = async () => Number(await redis.hget(k.account, 'nd'))
      const t0 = clock.now
      const first = await ledger.reserve('u17', 1, { endpoint: '/x' })
      clock.advance(10_000)
      const second = await ledger.reserve('u17', 2, { endpoint: '/x' })
      if (first.status !== 'held' || second.status !== 'held') throw new Error('not held')
      expect(await nd()).toBe(t0 + 30_000)
      await ledger.commit(first.holdId) // a settlement leaves it: it may be early, never late
      expect(await nd()).toBe(t0 + 30_000)
      clock.advance(25_000) // 35 s: due by the field, but nothing in the hash is
      expect(await ledger.balance('u17')).toMatchObject({ pending: 2 })
      expect(await nd()).toBe(t0 + 40_000)
      clock.advance(5_000) // 40 s: the second hold is void, and its record kept for the retention
      expect(await ledger.balance('u17')).toMatchObject({ pending: 0, balance: 349 })
      expect(await redis.hget(k.holds, second.holdId.split(':')[1]!)).toBe(
        `E|0|2000|${clock.now + retention}`,
      )
      expect(await nd()).toBe(clock.now + retention)
      clock.advance(retention)
      expect(await ledger.balance('u17')).toMatchObject({ pending: 0, balance: 349 })
      expect([await redis.hlen(k.holds), await nd()]).toEqual([0, 0])
    })

    it('charges nothing for a late commit of a hold that expires before an earlier-made, longer one', async () => {
      const clock = new TestClock()
      const { ledger } = setup({ clock: clock.read })
      await ledger.openAccount('u19', { type: 'registered' })
      const long = await ledger.reserve('u19', 1, { endpoint: '/x', holdMs: 60_000 })
      const short = await ledger.reserve('u19', 2, { endpoint: '/x', holdMs: 10_000 })
      if (long.status !== 'held' || short.status !== 'held') throw new Error('not held')
      clock.advance(15_000) // the short hold has expired, the long one has not
      expect(await ledger.commit(short.holdId)).toMatchObject({ outcome: 'expired', charged: 0 })
      expect(await ledger.commit(long.holdId)).toMatchObject({ outcome: 'committed', charged: 1 })
      expect(await ledger.balance('u19')).toMatchObject({ balance: 349, pending: 0 })
    })

    it('voids a pending hold at its expiry even when the account keeps no deadline (data from before the nd field)', async () => {
      const clock = new TestClock()
      const { ledger, redis, prefix } = setup({ clock: clock.read, holdMs: 30_000 })
      await ledger.openAccount('u18', { type: 'registered' })
      const hold = await ledger.reserve('u18', 5, { endpoint: '/x' })
      if (hold.status !== 'held') throw new Error('not held')
      await redis.hdel(accountKeys(prefix, 'u18').account, 'nd')
      clock.advance(30_000)
      expect(await ledger.balance('u18')).toMatchObject({ available: 350, pending: 0 })
      expect(await ledger.commit(hold.holdId)).toMatchObject({ outcome: 'expired', charged: 0 })
    })

    it('keeps settled outcomes out of the holds hash, and replays them from the outcomes list', async () => {
      const { ledger, redis, prefix } = setup()
      await ledger.openAccount('u14', { type: 'registered' })
      const k = accountKeys(prefix, 'u14')
      const settled: { holdId: string; outcome: string; charged: number }[] = []
      for (let i = 0; i < 150; i++) {
        const hold = await ledger.reserve('u14', 1, { endpoint: '/x' })
        if (hold.status !== 'held') throw new Error('not held')
        const result =
          i % 3 === 0 ? await ledger.release(hold.holdId) : await ledger.commit(hold.holdId)
        settled.push({ holdId: hold.holdId, outcome: result.outcome, charged: result.charged })
      }
      // What a reserve reads (the holds hash) holds nothing once every hold is settled, however
      // many there were: 150 outcomes are in the list, oldest first.
      expect(await redis.hlen(k.holds)).toBe(0)
      const list = await redis.lrange(k.outcomes, 0, -1)
      expect(list).toHaveLength(300)
      expect(list[0]).toBe(settled[0]!.holdId.split(':')[1])
      expect(list[1]).toMatch(/^R\|0\|1000\|\d+$/)
      // A resent settlement of any of them replays its outcome and changes nothing.
      const before = await ledger.balance('u14')
      expect(before).toMatchObject({ balance: 250, pending: 0 })
      for (const i of [0, 1, 2, 74, 149]) {
        const { holdId, outcome, charged } = settled[i]!
        expect(await ledger.commit(holdId)).toMatchObject({ outcome, charged, replayed: true })
        expect(await ledger.release(holdId)).toMatchObject({ outcome, charged, replayed: true })
      }
      expect(await ledger.balance('u14')).toEqual(before)
      expect(await redis.llen(k.outcomes)).toBe(300)
    })

    it('forgets outcomes from the front of the list once due, on a settlement or a sweep', async () => {
      const clock = new TestClock()
      const retention = 60_000
      const { ledger, redis, prefix } = setup({
        clock: clock.read,
        resolvedHoldRetentionMs: retention,
      })
      await ledger.openAccount('u15', { type: 'registered' })
      const k = accountKeys(prefix, 'u15')
      const settle = async () => {
        const hold = await ledger.reserve('u15', 1, { endpoint: '/x' })
        if (hold.status !== 'held') throw new Error('not held')
        await ledger.commit(hold.holdId)
        return { holdId: hold.holdId, at: clock.now }
      }
      const first = await settle()
      clock.advance(1000)
      const second = await settle()
      clock.advance(1000)
      const third = await settle()
      expect(await redis.hget(k.account, 'of')).toBe(String(first.at + retention))
      // Past the first two retentions: a balance read forgets nothing (only settlements and
      // sweeps read the list); the next settlement forgets exactly those two.
      clock.advance(retention - 1000)
      await ledger.balance('u15')
      expect(await redis.llen(k.outcomes)).toBe(6)
      const fourth = await settle()
      expect(await redis.lrange(k.outcomes, 0, -1)).toEqual([
        third.holdId.split(':')[1],
        `C|1000|0|${third.at + retention}`,
        fourth.holdId.split(':')[1],
        `C|1000|0|${fourth.at + retention}`,
      ])
      expect(await redis.hget(k.account, 'of')).toBe(String(third.at + retention))
      await expectCode(ledger.commit(first.holdId), 'ERR_CREDIT_HOLD_NOT_FOUND')
      await expectCode(ledger.commit(second.holdId), 'ERR_CREDIT_HOLD_NOT_FOUND')
      expect(await ledger.commit(third.holdId)).toMatchObject({ replayed: true })
      // The sweep forgets the rest once due, and the list is gone.
      clock.advance(retention)
      expect(await ledger.sweep()).toMatchObject({ holdsForgotten: 4 }) // 2 outcomes, 2 voids
      expect([await redis.llen(k.outcomes), await redis.hlen(k.holds)]).toEqual([0, 0])
      expect(await redis.hget(k.account, 'of')).toBe('0')
      expect(await ledger.balance('u15')).toMatchObject({ balance: 346, pending: 0 })
    })

    it('forgets at most 1000 outcomes a run, says more are due, and the sweep forgets the rest', async () => {
      const clock = new TestClock()
      const { ledger, redis, prefix } = setup({ clock: clock.read })
      await ledger.openAccount('u16', { type: 'registered' })
      for (let i = 0; i < 1100; i += 100) {
        const holds = await Promise.all(
          Array.from({ length: 100 }, () => ledger.reserve('u16', 0.1, { endpoint: '/x' })),
        )
        await Promise.all(
          holds.map((h) => {
            if (h.status !== 'held') throw new Error('not held')
            return ledger.commit(h.holdId)
          }),
        )
      }
      const k = accountKeys(prefix, 'u16')
      expect(await redis.llen(k.outcomes)).toBe(2200)
      clock.advance(DAY)
      const keys = scriptKeys(prefix, 'u16', scripts.maintain.numberOfKeys)
      const runner = new ScriptRunner(redis)
      // now, the retention (the ledger's default) and the history limit, as the sweep sends them
      const run = async () =>
        (await runner.run(scripts.maintain, keys, [clock.now, 600_000, 1000])) as string[]
      expect(await run()).toEqual(['OK', '0', '1000', '0', '1']) // more are due: run again
      expect(await ledger.sweep()).toMatchObject({ holdsForgotten: 100 })
      expect(await redis.llen(k.outcomes)).toBe(0)
      expect(await ledger.balance('u16')).toMatchObject({ balance: 240, pending: 0 })
    })

    it('refuses malformed hold ids and reports unknown ones', async () => {
      const { ledger } = setup()
      await ledger.openAccount('u13', { type: 'registered' })
      for (const bad of ['', 'nope', 'u13:short', 'u13:AAAAAAAAAAAAAAA!', 42, null]) {
        await expectCode(ledger.commit(bad as string), 'ERR_CREDIT_INVALID_ARGUMENT')
      }
      await expectCode(ledger.commit('u13:BBBBBBBBBBBBBBBB'), 'ERR_CREDIT_HOLD_NOT_FOUND')
      await expectCode(ledger.release('ghost:BBBBBBBBBBBBBBBB'), 'ERR_CREDIT_HOLD_NOT_FOUND')
    })
  })

  describe('spending order', () => {
    async function threeGrants(ledger: RedisLedger, clock: TestClock, id: string): Promise<void> {
      await ledger.openAccount(id, { type: 'registered' })
      await ledger.grant(id, { amount: 200, source: 'purchase', idempotencyKey: `${id}-buy` })
      await ledger.grant(id, {
        amount: 30,
        source: 'promo',
        expiresAt: clock.now + HOUR,
        idempotencyKey: `${id}-promo`,
      })
    }

    it('spends the soonest-expiring grant first, drawing from several in one reserve', async () => {
      const clock = new TestClock()
      const { ledger } = setup({ clock: clock.read })
      await threeGrants(ledger, clock, 's1')
      expect((await ledger.balance('s1')).buckets.map((b) => b.source)).toEqual([
        'promo',
        'purchase',
        'signup',
      ])
      const hold = await ledger.reserve('s1', 40, { endpoint: '/x' })
      if (hold.status !== 'held') throw new Error('not held')
      expect((await ledger.balance('s1')).buckets).toEqual([
        { source: 'purchase', amount: 190, expiresAt: null },
        { source: 'signup', amount: 350, expiresAt: null },
      ])
      await ledger.release(hold.holdId)
      expect((await ledger.balance('s1')).buckets).toEqual([
        { source: 'promo', amount: 30, expiresAt: clock.now + HOUR },
        { source: 'purchase', amount: 200, expiresAt: null },
        { source: 'signup', amount: 350, expiresAt: null },
      ])
    })

    it('charges a partial commit from the soonest-expiring part and returns the rest where it came from', async () => {
      const clock = new TestClock()
      const { ledger } = setup({ clock: clock.read })
      await threeGrants(ledger, clock, 's2')
      const hold = await ledger.reserve('s2', 40, { endpoint: '/x' })
      if (hold.status !== 'held') throw new Error('not held')
      await ledger.commit(hold.holdId, { actualCost: 35 })
      expect((await ledger.balance('s2')).buckets).toEqual([
        { source: 'purchase', amount: 195, expiresAt: null },
        { source: 'signup', amount: 350, expiresAt: null },
      ])
    })

    it('does not bring back credits whose grant expired while they were held', async () => {
      const clock = new TestClock()
      const { ledger } = setup({ clock: clock.read, holdMs: 2 * HOUR })
      await threeGrants(ledger, clock, 's3')
      const hold = await ledger.reserve('s3', 40, { endpoint: '/x' })
      if (hold.status !== 'held') throw new Error('not held')
      clock.advance(HOUR)
      const result = await ledger.release(hold.holdId)
      expect(result).toMatchObject({ outcome: 'released', returned: 40, balance: 550 })
      expect((await ledger.balance('s3')).buckets.map((b) => [b.source, b.amount])).toEqual([
        ['purchase', 200],
        ['signup', 350],
      ])
    })
  })

  describe('input validation', () => {
    const badAmounts: unknown[] = [
      Number.NaN,
      -1,
      -0.001,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      1.0005,
      0.1 + 0.2,
      1e21,
      9007199254741,
      '1e3',
      '0x10',
      ' 5 ',
      '5 ',
      '+5',
      '-5',
      '5.',
      '.5',
      '05',
      '',
      'NaN',
      'Infinity',
      null,
      undefined,
      true,
      {},
      [],
      10n,
    ]

    it.each(badAmounts.map((v) => [String(v), v]))(
      'refuses the amount %s before Redis is touched',
      async (_, amount) => {
        const { ledger: base, redis, prefix } = setup()
        await base.openAccount('v1', { type: 'registered' })
        const { client, calls } = countingClient(redis)
        const ledger = new RedisLedger({ redis: client, prefix })
        const before = await snapshot(redis, prefix)
        await expectCode(
          ledger.reserve('v1', amount as number, { endpoint: '/x' }),
          'ERR_CREDIT_INVALID_AMOUNT',
        )
        await expectCode(
          ledger.grant('v1', { amount: amount as number, source: 'purchase', idempotencyKey: 'k' }),
          'ERR_CREDIT_INVALID_AMOUNT',
        )
        // An undefined option counts as omitted, so only defined values can be bad actual costs.
        if (amount !== undefined) {
          await expectCode(
            ledger.commit('v1:AAAAAAAAAAAAAAAA', { actualCost: amount as number }),
            'ERR_CREDIT_INVALID_AMOUNT',
          )
        }
        expect(calls()).toBe(0)
        expect(await snapshot(redis, prefix)).toEqual(before)
      },
    )

    it('refuses a grant of 0 credits', async () => {
      const { ledger } = setup()
      await ledger.openAccount('v2', { type: 'registered' })
      await expectCode(
        ledger.grant('v2', { amount: 0, source: 'purchase', idempotencyKey: 'z' }),
        'ERR_CREDIT_INVALID_AMOUNT',
      )
    })

    const badIds: unknown[] = [
      '',
      'x'.repeat(257),
      '\u0000',
      'a\nb',
      '\ud800',
      42,
      null,
      undefined,
      {},
    ]
    it.each(
      badIds.map((v) => [typeof v === 'string' ? JSON.stringify(v).slice(0, 20) : String(v), v]),
    )('refuses the account id %s before Redis is touched', async (_, id) => {
      const { redis, prefix } = setup()
      const { client, calls } = countingClient(redis)
      const ledger = new RedisLedger({ redis: client, prefix })
      await expectCode(
        ledger.openAccount(id as string, { type: 'registered' }),
        'ERR_CREDIT_INVALID_ACCOUNT_ID',
      )
      await expectCode(
        ledger.reserve(id as string, 1, { endpoint: '/x' }),
        'ERR_CREDIT_INVALID_ACCOUNT_ID',
      )
      await expectCode(ledger.balance(id as string), 'ERR_CREDIT_INVALID_ACCOUNT_ID')
      expect(calls()).toBe(0)
      expect(await snapshot(redis, prefix)).toEqual({})
    })

    it('refuses bad sources, keys, endpoints, expiries and options before Redis is touched', async () => {
      const { redis, prefix } = setup()
      const { client, calls } = countingClient(redis)
      const ledger = new RedisLedger({ redis: client, prefix })
      const grant = (o: object) =>
        ledger.grant('v3', { amount: 1, source: 'purchase', idempotencyKey: 'k', ...o })
      await expectCode(grant({ source: 'bad source' }), 'ERR_CREDIT_INVALID_ARGUMENT')
      await expectCode(grant({ source: 'a|b' }), 'ERR_CREDIT_INVALID_ARGUMENT')
      await expectCode(grant({ idempotencyKey: '' }), 'ERR_CREDIT_INVALID_ARGUMENT')
      await expectCode(grant({ expiresAt: -5 }), 'ERR_CREDIT_INVALID_ARGUMENT')
      await expectCode(grant({ expiresAt: new Date(Number.NaN) }), 'ERR_CREDIT_INVALID_ARGUMENT')
      await expectCode(grant({ amout: 5 }), 'ERR_CREDIT_INVALID_ARGUMENT')
      await expectCode(ledger.reserve('v3', 1, { endpoint: '' }), 'ERR_CREDIT_INVALID_ARGUMENT')
      await expectCode(ledger.reserve('v3', 1, { endpoint: '/a|b' }), 'ERR_CREDIT_INVALID_ARGUMENT')
      // 200 characters but 600 bytes: the Lua limit counts bytes, and so does the TypeScript one.
      await expectCode(
        ledger.reserve('v3', 1, { endpoint: `/${'€'.repeat(200)}` }),
        'ERR_CREDIT_INVALID_ARGUMENT',
      )
      await expectCode(
        ledger.reserve('v3', 1, { endpoint: '/x', holdMs: 0 }),
        'ERR_CREDIT_INVALID_ARGUMENT',
      )
      await expectCode(
        ledger.reserve('v3', 1, { endpoint: '/x', openAs: 'admin' }),
        'ERR_CREDIT_INVALID_ARGUMENT',
      )
      await expectCode(
        ledger.reserve('v3', 1, { endpoint: '/x', allowedTypes: ['nope'] }),
        'ERR_CREDIT_INVALID_ARGUMENT',
      )
      await expectCode(ledger.openAccount('v3', { type: 'admin' }), 'ERR_CREDIT_INVALID_ARGUMENT')
      expect(calls()).toBe(0)
      // The counter sees what is sent, whichever way the client sends scripts.
      await ledger.openAccount('v3', { type: 'registered' })
      expect(calls()).toBeGreaterThan(0)
    })

    it('lets the Lua scripts refuse bad numbers themselves, writing nothing', async () => {
      const { ledger, redis, prefix } = setup()
      await ledger.openAccount('v4', { type: 'registered' })
      const runner = new ScriptRunner(redis)
      const k = accountKeys(prefix, 'v4')
      const keys3 = [k.account, k.holds, k.history]
      const before = await snapshot(redis, prefix)
      for (const bad of [
        'nan',
        'inf',
        '-inf',
        '0x10',
        '1e3',
        ' 5 ',
        '-1',
        '1.5',
        '9007199254740992',
        '99999999999999999',
        '',
      ]) {
        const reserve = [
          '',
          'AAAAAAAAAAAAAAAA',
          bad,
          '30000',
          '/x',
          '*',
          '',
          '',
          0,
          0,
          86400000,
          1000,
        ]
        expect(((await runner.run(scripts.reserve, keys3, reserve)) as string[])[0]).toBe('INVALID')
        const grant = ['', bad, 'purchase', '0', 'key', 'grant', 86400000, 1000]
        expect(
          (
            (await runner.run(
              scripts.grant,
              scriptKeys(prefix, 'v4', scripts.grant.numberOfKeys),
              grant,
            )) as string[]
          )[0],
        ).toBe('INVALID')
        if (bad !== '') {
          const resolve = ['', 'AAAAAAAAAAAAAAAA', 'commit', bad, 86400000, 1000]
          expect(((await runner.run(scripts.resolve, keys3, resolve)) as string[])[0]).toBe(
            'INVALID',
          )
          const now = [bad, 86400000, 1000]
          expect(((await runner.run(scripts.balance, keys3, now)) as string[])[0]).toBe('INVALID')
        }
      }
      expect(await snapshot(redis, prefix)).toEqual(before)
    })
  })

  it('lets the settlement script refuse bad usage retentions itself, alone and in a batch, writing nothing', async () => {
    const { ledger, redis, prefix } = setup()
    await ledger.openAccount('v5', { type: 'registered' })
    const holds = await Promise.all(
      ['/x', '/y'].map((endpoint) => ledger.reserve('v5', 5, { endpoint })),
    )
    const nonces = holds.map((h) => (h.status === 'held' ? parseHoldId(h.holdId).nonce : ''))
    const runner = new ScriptRunner(redis)
    const keysOf = (id: string) => scriptKeys(prefix, id, scripts.resolve.numberOfKeys)
    const before = await snapshot(redis, prefix)
    const hour = '3600000'
    const day = '86400000'
    const month = String(31 * 86_400_000)
    for (const keep of [
      ['3599999', day, month],
      [hour, '86399999', month],
      [hour, day, String(31 * 86_400_000 - 1)],
      ['1e9', day, month],
      [hour, '', month],
    ]) {
      const argsOf = (nonce: string) => ['', nonce, 'commit', '', 86400000, 1000, '', ...keep]
      const alone = (await runner.run(
        scripts.resolve,
        keysOf('v5'),
        argsOf(nonces[0] ?? ''),
      )) as string[]
      expect(alone).toEqual(['INVALID', 'ERR_CREDIT_INVALID_ARGUMENT', 'usage retention'])
      // Both operations of a batch (two holds of one account: one slot) send the same bad
      // strings: each is refused.
      const argv: (string | number)[] = []
      batchArgv(
        scripts.resolveBatch,
        nonces.map((nonce) => ({ args: argsOf(nonce) })),
        argv,
        0,
      )
      const batch = await runner.run(scripts.resolveBatch, [...keysOf('v5'), ...keysOf('v5')], argv)
      expect(splitBatchReply(batch)).toEqual([
        ['INVALID', 'ERR_CREDIT_INVALID_ARGUMENT', 'usage retention'],
        ['INVALID', 'ERR_CREDIT_INVALID_ARGUMENT', 'usage retention'],
      ])
    }
    expect(await snapshot(redis, prefix)).toEqual(before)
    // With good ones, the same holds commit.
    for (const hold of holds) {
      if (hold.status !== 'held') throw new Error('not held')
      expect(await ledger.commit(hold.holdId)).toMatchObject({ outcome: 'committed', charged: 5 })
    }
  })

  describe('account ids and keys', () => {
    const ids = [
      'a',
      'a}',
      '{a}',
      'a:h',
      'a}:a',
      '}{',
      ':',
      '%7B',
      'ünïcödé-用户-🎉',
      'x'.repeat(256),
      '🎉'.repeat(256),
    ]

    it('keeps every key of an account on one slot and every account apart', async () => {
      const { ledger, redis, prefix } = setup()
      for (const [i, id] of ids.entries()) {
        await ledger.openAccount(id, { type: 'registered' })
        await ledger.grant(id, { amount: i + 1, source: 'purchase', idempotencyKey: `ids-${i}` })
        const hold = await ledger.reserve(id, 1, { endpoint: '/x' })
        if (hold.status !== 'held') throw new Error('not held')
        await ledger.commit(hold.holdId)
      }
      for (const [i, id] of ids.entries()) {
        expect((await ledger.balance(id)).balance).toBe(350 + i + 1 - 1)
        const keys = Object.values(accountKeys(prefix, id)) as string[]
        expect(new Set(keys.map((key) => calculateSlot(key))).size).toBe(1)
        for (const key of keys) expect(key.split('{').length).toBe(2)
      }
      const all = Object.keys(await snapshot(redis, prefix))
      const owned = ids.flatMap((id) => Object.values(accountKeys(prefix, id)) as string[])
      expect(new Set(owned).size).toBe(owned.length)
      for (const key of all) if (!key.includes('{#')) expect(owned).toContain(key)
    })

    it('gives the scripts the account keys in their KEYS order, as many as a script takes', () => {
      for (const id of ids) {
        const k = accountKeys('p:', id)
        const order = [
          k.account,
          k.holds,
          k.history,
          k.outcomes,
          k.usage,
          k.usageIndex,
          k.idempotency,
        ]
        expect(scriptKeys('p:', id, 7)).toEqual(order)
        expect(scriptKeys('p:', id, 3)).toEqual(order.slice(0, 3))
      }
    })
  })
})

describe('RedisLedger on a real redis-server only', () => {
  it('keeps working when SCRIPT FLUSH runs between calls', async () => {
    const { ledger, redis } = makeLedger('redis')
    try {
      await ledger.openAccount('f1', { type: 'registered' })
      await redis.script('FLUSH')
      const hold = await ledger.reserve('f1', 5, { endpoint: '/x' })
      if (hold.status !== 'held') throw new Error('not held')
      await redis.script('FLUSH')
      await ledger.commit(hold.holdId)
      await redis.script('FLUSH')
      expect((await ledger.balance('f1')).balance).toBe(345)
      expect(await redis.script('EXISTS', scripts.balance.sha1)).toEqual([1])
    } finally {
      await redis.quit()
    }
  })

  it('sends the #!lua form, so Redis refuses a script whole when out of memory', async () => {
    const { ledger, redis } = makeLedger('redis')
    try {
      await ledger.openAccount('f2', { type: 'registered' })
      expect(await redis.script('EXISTS', scripts.open.sha1, scripts.open.bareSha1)).toEqual([1, 0])
    } finally {
      await redis.quit()
    }
  })
})

describe.each(BACKENDS)('hold races (fast-check) on %s', (backend: Backend) => {
  it('resolves every hold exactly once, whatever the order of commits, releases and expiries', async () => {
    const seed = Number(process.env['FC_SEED'] ?? Date.now() % 2 ** 31)
    console.log(`hold races on ${backend}: fast-check seed ${seed} (rerun with FC_SEED=${seed})`)
    const clock = new TestClock()
    const { ledger, redis } = makeLedger(backend, { clock: clock.read, holdMs: 1000 })
    let run = 0
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 6 }),
          fc.array(
            fc.record({
              hold: fc.nat(5),
              op: fc.constantFrom('commit', 'partial', 'release', 'advance'),
              ms: fc.integer({ min: 0, max: 600 }),
            }),
            { minLength: 1, maxLength: 40 },
          ),
          fc.integer({ min: 1, max: 8 }),
          async (costs, actions, batch) => {
            const id = `race-${run++}`
            await ledger.openAccount(id, { type: 'registered' })
            const holds: {
              id: string
              cost: number
              seen: { outcome: string; charged: number }[]
            }[] = []
            for (const cost of costs) {
              const hold = await ledger.reserve(id, cost, { endpoint: '/race' })
              if (hold.status !== 'held') throw new Error('not held')
              holds.push({
                id: hold.holdId,
                cost,
                seen: [] as { outcome: string; charged: number }[],
              })
            }
            for (let i = 0; i < actions.length; i += batch) {
              await Promise.all(
                actions.slice(i, i + batch).map(async (a) => {
                  const h = holds[a.hold % holds.length]!
                  if (a.op === 'advance') {
                    clock.advance(a.ms)
                    return
                  }
                  const r =
                    a.op === 'release'
                      ? await ledger.release(h.id)
                      : await ledger.commit(
                          h.id,
                          a.op === 'partial' ? { actualCost: Math.floor(h.cost / 2) } : {},
                        )
                  h.seen.push({ outcome: r.outcome, charged: r.charged })
                  expect(r.available).toBeGreaterThanOrEqual(0)
                }),
              )
            }
            clock.advance(1000)
            const final = await ledger.balance(id)
            expect(final.pending).toBe(0)
            let charged = 0
            for (const h of holds) {
              const outcomes = new Set(h.seen.map((s) => `${s.outcome}:${s.charged}`))
              expect(outcomes.size).toBeLessThanOrEqual(1)
              const first = h.seen[0]
              if (first !== undefined) {
                expect(first.charged).toBeLessThanOrEqual(h.cost)
                if (first.outcome !== 'committed') expect(first.charged).toBe(0)
                charged += first.charged
              }
            }
            expect(final.balance).toBe(350 - charged)
          },
        ),
        { seed, numRuns: backend === 'redis' ? 60 : 25 },
      )
    } finally {
      await redis.quit()
    }
  })
})

describe('error classes', () => {
  it('brands errors so isCreditError works across builds, and keeps the cause', () => {
    const cause = new Error('socket closed')
    const error = new CreditRuleError('ERR_CREDIT_HOLD_NOT_FOUND', 'gone', { cause })
    expect(isCreditError(error)).toBe(true)
    expect(error.name).toBe('CreditRuleError')
    expect(error.cause).toBe(cause)
    expect(error.message).toContain('README#err_credit_hold_not_found')
    expect(isCreditError(new Error('x'))).toBe(false)
    expect(new CreditArgumentError('ERR_CREDIT_INVALID_AMOUNT', 'x')).toBeInstanceOf(Error)
  })
})

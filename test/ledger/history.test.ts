import { accountKeys, scriptKeys } from '../../src/ledger/keys'
import { ScriptRunner } from '../../src/lua/run-script'
import { scripts } from '../../src/lua/scripts'
import { BACKENDS, TestClock, makeLedger, type Backend } from '../helpers/redis'
import { DAY, HOUR, allTransactions, at, expectCode, spend } from './helpers'

describe.each(BACKENDS)('transaction history and audit on %s', (backend: Backend) => {
  const open: { quit(): Promise<unknown> }[] = []
  afterAll(async () => {
    await Promise.all(open.map((c) => c.quit()))
  })
  function setup(options: Parameters<typeof makeLedger>[1] = {}) {
    const clock = new TestClock(at('2026-01-15T12:00:00Z'))
    const made = makeLedger(backend, { clock: clock.read, ...options })
    open.push(made.redis)
    return { ...made, clock }
  }

  it('records every movement with its amount, balance after, source, endpoint and time, newest first', async () => {
    const { ledger, clock } = setup()
    const t0 = clock.now
    await ledger.openAccount('h1', { type: 'registered' })
    await ledger.grant('h1', {
      amount: 20,
      source: 'promo',
      expiresAt: t0 + 2 * HOUR,
      idempotencyKey: 'h1-promo',
    })
    clock.advance(1000)
    await ledger.grant('h1', { amount: 99.5, source: 'purchase', idempotencyKey: 'h1-buy' })
    await ledger.subscribe('h1', { plan: 'basic', monthlyCredits: 500, idempotencyKey: 'h1-sub' })
    clock.advance(1000)
    const hold = await ledger.reserve('h1', 30, { endpoint: '/quantlib/risk/var' })
    if (hold.status !== 'held') throw new Error('not held')
    await ledger.commit(hold.holdId, { actualCost: 12.25 })
    const released = await ledger.reserve('h1', 5, { endpoint: '/free-on-failure' })
    if (released.status !== 'held') throw new Error('not held')
    await ledger.release(released.holdId)
    clock.now = t0 + 2 * HOUR
    const page = await ledger.transactions('h1')
    expect(page.nextCursor).toBeNull()
    expect(page.transactions).toEqual([
      {
        seq: 6,
        time: t0 + 2 * HOUR,
        kind: 'expire',
        amount: -7.75,
        balanceAfter: 949.5,
        source: 'promo',
        endpoint: null,
      },
      {
        seq: 5,
        time: t0 + 2000,
        kind: 'charge',
        amount: -12.25,
        balanceAfter: 957.25,
        source: 'usage',
        endpoint: '/quantlib/risk/var',
      },
      {
        seq: 4,
        time: t0 + 1000,
        kind: 'grant',
        amount: 500,
        balanceAfter: 969.5,
        source: 'subscription',
        endpoint: null,
      },
      {
        seq: 3,
        time: t0 + 1000,
        kind: 'grant',
        amount: 99.5,
        balanceAfter: 469.5,
        source: 'purchase',
        endpoint: null,
      },
      {
        seq: 2,
        time: t0,
        kind: 'grant',
        amount: 20,
        balanceAfter: 370,
        source: 'promo',
        endpoint: null,
      },
      {
        seq: 1,
        time: t0,
        kind: 'grant',
        amount: 350,
        balanceAfter: 350,
        source: 'signup',
        endpoint: null,
      },
    ])
    expect(await ledger.audit('h1')).toEqual({
      accountId: 'h1',
      ok: true,
      entries: 6,
      firstSeq: 1,
      lastSeq: 6,
      complete: true,
      startingBalance: 0,
      computedBalance: 949.5,
      liveBalance: 949.5,
      difference: 0,
      breaks: [],
      breakCount: 0,
    })
  })

  it('pages with a cursor that stays valid while new movements arrive', async () => {
    const { ledger } = setup({ accountTypes: { rich: { signupCredits: 10_000 } } })
    await ledger.openAccount('p', { type: 'rich' })
    for (let i = 0; i < 120; i++) await spend(ledger, 'p', 1, `/e${i % 3}`)
    const first = await ledger.transactions('p')
    expect(first.transactions.map((t) => t.seq)).toEqual(
      Array.from({ length: 50 }, (_, i) => 121 - i),
    )
    expect(first.nextCursor).not.toBeNull()
    // Ten more movements arrive between two pages: the next page goes on where the first stopped.
    for (let i = 0; i < 10; i++) await spend(ledger, 'p', 1)
    const second = await ledger.transactions('p', { cursor: first.nextCursor! })
    expect(second.transactions.map((t) => t.seq)).toEqual(
      Array.from({ length: 50 }, (_, i) => 71 - i),
    )
    const third = await ledger.transactions('p', { cursor: second.nextCursor!, limit: 500 })
    expect(third.transactions.map((t) => t.seq)).toEqual(
      Array.from({ length: 21 }, (_, i) => 21 - i),
    )
    expect(third.nextCursor).toBeNull()
    const exact = await ledger.transactions('p', { cursor: second.nextCursor!, limit: 21 })
    expect(exact.nextCursor).toBeNull()
    expect((await ledger.transactions('p', { limit: 1 })).transactions[0]?.seq).toBe(131)
    expect((await allTransactions(ledger, 'p')).map((t) => t.seq)).toEqual(
      Array.from({ length: 131 }, (_, i) => i + 1),
    )
  })

  it('keeps the newest historyLimit entries: pages stop there and audit still balances from them', async () => {
    const { ledger } = setup({ historyLimit: 10 })
    await ledger.openAccount('trim', { type: 'registered' })
    for (let i = 0; i < 25; i++) await spend(ledger, 'trim', 1)
    const all = await allTransactions(ledger, 'trim')
    expect(all.map((t) => t.seq)).toEqual(Array.from({ length: 10 }, (_, i) => 17 + i))
    const page = await ledger.transactions('trim', { limit: 4 })
    let cursor = page.nextCursor
    let pages = 1
    while (cursor !== null) {
      cursor = (await ledger.transactions('trim', { limit: 4, cursor })).nextCursor
      pages++
    }
    expect(pages).toBe(3)
    expect(await ledger.audit('trim')).toMatchObject({
      ok: true,
      complete: false,
      entries: 10,
      firstSeq: 17,
      startingBalance: 335,
      liveBalance: 325,
    })
  })

  it('reports the time of each movement in order, however late lazy events are applied', async () => {
    const { ledger, clock } = setup({ holdMs: 5000 })
    await ledger.openAccount('order', { type: 'registered' })
    await ledger.subscribe('order', { plan: 'basic', monthlyCredits: 500, idempotencyKey: 'o-s' })
    await ledger.grant('order', {
      amount: 10,
      source: 'promo',
      expiresAt: clock.now + 40 * DAY,
      idempotencyKey: 'o-p',
    })
    await ledger.reserve('order', 3, { endpoint: '/crash' })
    clock.now = at('2026-06-01T00:00:00Z')
    await spend(ledger, 'order', 1)
    const times = (await allTransactions(ledger, 'order')).map((t) => t.time)
    expect([...times].sort((a, b) => a - b)).toEqual(times)
    expect((await ledger.audit('order')).ok).toBe(true)
  })

  it('reads adjustments, refuses bad limits and cursors, and unknown accounts', async () => {
    const { ledger, redis, prefix } = setup()
    await ledger.openAccount('adj', { type: 'registered' })
    await new ScriptRunner(redis).run(
      scripts.grant,
      scriptKeys(prefix, 'adj', scripts.grant.numberOfKeys),
      ['', 1500, 'support', 0, 'adj-1', 'adjust', 86_400_000, 1000],
    )
    expect((await ledger.transactions('adj', { limit: 1 })).transactions[0]).toMatchObject({
      kind: 'adjust',
      amount: 1.5,
      source: 'support',
    })
    for (const limit of [0, 501, 1.5, '10', -1]) {
      await expectCode(
        ledger.transactions('adj', { limit: limit as number }),
        'ERR_CREDIT_INVALID_ARGUMENT',
      )
    }
    const good = Buffer.from('cg1:5').toString('base64url')
    expect((await ledger.transactions('adj', { cursor: good })).transactions).toHaveLength(2)
    for (const cursor of [
      '',
      'abc',
      Buffer.from('cg1:0').toString('base64url'),
      Buffer.from('cg1:-1').toString('base64url'),
      Buffer.from('cg2:5').toString('base64url'),
      `${good}=`,
      'x'.repeat(50),
    ]) {
      await expectCode(ledger.transactions('adj', { cursor }), 'ERR_CREDIT_INVALID_ARGUMENT')
    }
    await expectCode(ledger.transactions('nobody'), 'ERR_CREDIT_ACCOUNT_NOT_FOUND')
    await expectCode(ledger.audit('nobody'), 'ERR_CREDIT_ACCOUNT_NOT_FOUND')
  })

  describe('audit finds what does not add up', () => {
    async function account(id: string) {
      const made = setup()
      await made.ledger.openAccount(id, { type: 'registered' })
      await made.ledger.grant(id, { amount: 100, source: 'purchase', idempotencyKey: `${id}-b` })
      await spend(made.ledger, id, 10)
      await spend(made.ledger, id, 20)
      return { ...made, keys: accountKeys(made.prefix, id) }
    }

    it('an entry whose amount was changed: a broken link and a difference', async () => {
      const { ledger, redis, keys } = await account('a1')
      // Entries newest first: index 1 is seq 3, the charge of 10.
      const entry = await redis.lindex(keys.history, 1)
      await redis.lset(keys.history, 1, entry!.replace('|-10000|', '|-11000|'))
      const report = await ledger.audit('a1')
      expect(report).toMatchObject({
        ok: false,
        liveBalance: 420,
        computedBalance: 419,
        difference: 1,
      })
      expect(report.breaks).toEqual([{ seq: 3, kind: 'balance', expected: 439, recorded: 440 }])
    })

    it('a balance changed behind the ledger: a difference, every link intact', async () => {
      const { ledger, redis, keys } = await account('a2')
      await redis.hset(keys.account, 'b0:purchase', '100000')
      expect(await ledger.audit('a2')).toMatchObject({
        ok: false,
        breaks: [],
        liveBalance: 450,
        computedBalance: 420,
        difference: 30,
      })
    })

    it('a missing entry: a sequence break', async () => {
      const { ledger, redis, keys } = await account('a3')
      // Index 2 is seq 2, the purchase of 100.
      const entry = await redis.lindex(keys.history, 2)
      await redis.lrem(keys.history, 1, entry!)
      const report = await ledger.audit('a3')
      expect(report).toMatchObject({ ok: false, computedBalance: 320, liveBalance: 420 })
      expect(report.breaks).toEqual([
        { seq: 3, kind: 'sequence', expected: 2, recorded: 3 },
        { seq: 3, kind: 'balance', expected: 340, recorded: 440 },
      ])
    })
  })
})

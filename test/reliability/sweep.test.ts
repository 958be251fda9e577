import { Redis } from 'ioredis'

import { RedisLedger, isCreditError } from '../../src/index'
import { sweepLeaseKey } from '../../src/ledger/keys'
import { ScriptRunner } from '../../src/lua/run-script'
import { scripts } from '../../src/lua/scripts'
import { interceptScripts } from '../helpers/intercept'
import { TestClock, makeLedger, redisUrl, uniquePrefix } from '../helpers/redis'
import { snapshot } from '../helpers/snapshot'
import { spawnRedis, type RedisProcess } from '../setup/redis-process'

const HOUR = 60 * 60 * 1000
const clients: { quit(): Promise<unknown> }[] = []
const servers: RedisProcess[] = []
afterAll(async () => {
  await Promise.all(clients.map((c) => c.quit()))
  await Promise.all(servers.map((s) => s.stop()))
})

/**
 * Builds the same ledger history on `ledgers` (same ids, same costs, same clock): accounts with
 * held, committed and released holds, and grants that expire. Returns the hold ids per ledger, in
 * reserve order, so nonces can be matched across ledgers.
 */
async function populate(
  ledgers: RedisLedger[],
  clock: TestClock,
  accounts: number,
): Promise<string[][]> {
  const holds: string[][] = ledgers.map(() => [])
  for (let i = 0; i < accounts; i++) {
    const id = `acct-${i}`
    for (const [n, ledger] of ledgers.entries()) {
      await ledger.openAccount(id, { type: 'registered' })
      await ledger.grant(id, {
        amount: 10 + i,
        source: 'promo',
        expiresAt: clock.now + HOUR + i,
        idempotencyKey: `promo-${i}`,
      })
      for (const [k, cost] of [3, 4, 5, 6].entries()) {
        const hold = await ledger.reserve(id, cost, { endpoint: `/e${k}` })
        if (hold.status !== 'held') throw new Error('not held')
        holds[n]!.push(hold.holdId)
        if (k === 1) await ledger.commit(hold.holdId, { actualCost: 1 })
        if (k === 2) await ledger.release(hold.holdId)
      }
    }
    clock.advance(1)
  }
  return holds
}

/**
 * A snapshot with the prefix and the hold nonces replaced by stable names, and hashes sorted by
 * field.
 */
function normalise(snap: Record<string, unknown>, prefix: string, holdIds: string[]): unknown {
  const names = new Map(holdIds.map((h, i) => [h.slice(h.lastIndexOf(':') + 1), `<hold${i}>`]))
  const text = (s: string): string => {
    let out = s.split(prefix).join('<prefix>')
    for (const [nonce, name] of names) out = out.split(nonce).join(name)
    return out
  }
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(snap)) {
    if (Array.isArray(value)) {
      out[text(key)] = value.map((v) => text(String(v)))
    } else if (typeof value === 'object' && value !== null) {
      out[text(key)] = Object.fromEntries(
        Object.entries(value)
          .map(([k, v]) => [text(k), text(String(v))])
          .sort(([a], [b]) => (a! < b! ? -1 : 1)),
      )
    } else {
      out[text(key)] = text(String(value))
    }
  }
  return out
}

describe('ledger.sweep() on a real redis-server', () => {
  it('voids expired holds and expires grants in every account, once', async () => {
    const clock = new TestClock()
    const { ledger, redis } = makeLedger('redis', {
      clock: clock.read,
      holdMs: 1000,
      resolvedHoldRetentionMs: 24 * HOUR,
    })
    clients.push(redis)
    await populate([ledger], clock, 25)
    clock.advance(2 * HOUR)
    const first = await ledger.sweep({ count: 10 })
    // Per account: holds of 3 and 6 voided; the promo grant (10 + i) paid 3 + 4 of holds, 1 was
    // charged, 4 released back, 3 of the voided hold came back after it expired: 10 + i − 1 expire.
    const expired = Array.from({ length: 25 }, (_, i) => 10 + i - 1).reduce((a, b) => a + b, 0)
    expect(first).toEqual({
      skipped: false,
      accounts: 25,
      holdsVoided: 50,
      holdsForgotten: 0,
      creditsExpired: expired,
    })
    expect(await ledger.sweep()).toEqual({
      skipped: false,
      accounts: 25,
      holdsVoided: 0,
      holdsForgotten: 0,
      creditsExpired: 0,
    })
    for (let i = 0; i < 25; i++) {
      expect(await ledger.balance(`acct-${i}`)).toMatchObject({
        balance: 350,
        pending: 0,
        available: 350,
      })
    }
    // A day later, the outcomes of resolved holds are forgotten: 4 holds per account.
    clock.advance(25 * HOUR)
    expect(await ledger.sweep()).toMatchObject({
      accounts: 25,
      holdsForgotten: 100,
      holdsVoided: 0,
    })
  })

  it('voids more than one script run handles (1000 holds) in one account', async () => {
    const clock = new TestClock()
    const { ledger, redis } = makeLedger('redis', {
      clock: clock.read,
      holdMs: 1000,
      resolvedHoldRetentionMs: 24 * HOUR,
      accountTypes: { big: { signupCredits: 10_000 } },
    })
    clients.push(redis)
    await ledger.openAccount('many', { type: 'big' })
    await Promise.all(
      Array.from({ length: 1200 }, () => ledger.reserve('many', 1, { endpoint: '/m' })),
    )
    clock.advance(1000)
    expect(await ledger.sweep()).toMatchObject({ accounts: 1, holdsVoided: 1200 })
    expect(await ledger.balance('many')).toMatchObject({ available: 10_000, pending: 0 })
  })

  it('finds accounts through an ioredis keyPrefix, and escapes glob characters in the prefix', async () => {
    const clock = new TestClock()
    const redis = new Redis(redisUrl(), { keyPrefix: `kp-${Math.random()}:` })
    clients.push(redis)
    const prefix = `${uniquePrefix()}[*?]\\:`
    const ledger = new RedisLedger({
      redis,
      prefix,
      clock: clock.read,
      holdMs: 1000,
      resolvedHoldRetentionMs: 24 * HOUR,
    })
    const lookalike = new RedisLedger({
      redis,
      prefix: `${prefix.slice(0, -2)}X:`,
      clock: clock.read,
      holdMs: 1000,
      resolvedHoldRetentionMs: 24 * HOUR,
    })
    await ledger.openAccount('k', { type: 'registered' })
    await ledger.reserve('k', 1, { endpoint: '/k' })
    await lookalike.openAccount('k', { type: 'registered' })
    await lookalike.reserve('k', 1, { endpoint: '/k' })
    clock.advance(1000)
    expect(await ledger.sweep()).toMatchObject({ accounts: 1, holdsVoided: 1 })
    expect(await lookalike.sweep()).toMatchObject({ accounts: 1, holdsVoided: 1 })
  })

  it('lets one sweep run at a time through a lease, and ends only its own lease', async () => {
    const clock = new TestClock()
    const { ledger, redis, prefix } = makeLedger('redis', {
      clock: clock.read,
      holdMs: 1000,
      resolvedHoldRetentionMs: 24 * HOUR,
    })
    clients.push(redis)
    await populate([ledger], clock, 3)
    clock.advance(2 * HOUR)
    // Another instance holds the lease: this sweep does nothing and writes nothing.
    await redis.set(sweepLeaseKey(prefix), 'someone-else', 'PX', 60_000)
    const before = await snapshot(redis, prefix)
    expect(await ledger.sweep()).toEqual({
      skipped: true,
      accounts: 0,
      holdsVoided: 0,
      holdsForgotten: 0,
      creditsExpired: 0,
    })
    expect(await snapshot(redis, prefix)).toEqual(before)
    // The token-checked release leaves another holder's lease alone.
    const runner = new ScriptRunner(redis)
    expect(await runner.run(scripts.unlock, [sweepLeaseKey(prefix)], ['not-the-token'])).toEqual([
      'NOT_HELD',
    ])
    expect(await redis.get(sweepLeaseKey(prefix))).toBe('someone-else')
    // Without the lock (or once the lease is gone), it runs, and it leaves no lease behind.
    expect(await ledger.sweep({ lock: false })).toMatchObject({ skipped: false, holdsVoided: 6 })
    await redis.del(sweepLeaseKey(prefix))
    expect(await ledger.sweep()).toMatchObject({ skipped: false, holdsVoided: 0 })
    expect(await redis.exists(sweepLeaseKey(prefix))).toBe(0)
    // Of sweeps started together with the lock, exactly one runs.
    const together = await Promise.all(Array.from({ length: 5 }, () => ledger.sweep()))
    expect(together.filter((r) => !r.skipped)).toHaveLength(1)
    // A lease outlives a sweep that died holding it only by leaseMs.
    await redis.set(sweepLeaseKey(prefix), 'dead-sweep', 'PX', 50)
    expect((await ledger.sweep()).skipped).toBe(true)
    await new Promise((r) => setTimeout(r, 80))
    expect((await ledger.sweep()).skipped).toBe(false)
  })

  it('does not depend on the lock: concurrent sweeps without it end in the same state as one sweep', async () => {
    const clock = new TestClock()
    // A private server: SCAN pages hold only these accounts, so the sweeps meet on every page.
    const server = await spawnRedis()
    servers.push(server)
    const redis = new Redis(server.url)
    clients.push(redis)
    const prefixes = [uniquePrefix(), uniquePrefix()]
    // Script calls of the concurrent sweeps are delayed at random, so that they overtake each
    // other and race for the same accounts.
    const jittery = interceptScripts(redis, async (_call, send) => {
      await new Promise((r) => setTimeout(r, Math.random() * 10))
      return send()
    })
    const one = new RedisLedger({
      redis,
      prefix: prefixes[0]!,
      clock: clock.read,
      holdMs: 1000,
      resolvedHoldRetentionMs: 24 * HOUR,
    })
    const many = new RedisLedger({
      redis: jittery,
      prefix: prefixes[1]!,
      clock: clock.read,
      holdMs: 1000,
      resolvedHoldRetentionMs: 24 * HOUR,
    })
    const [oneHolds, manyHolds] = (await populate([one, many], clock, 40)) as [string[], string[]]
    clock.advance(2 * HOUR)
    const single = await one.sweep({ lock: false })
    // Four sweeps at once over the same accounts.
    const concurrent = await Promise.all(
      Array.from({ length: 4 }, () => many.sweep({ lock: false, count: 5 })),
    )
    const sum = (key: 'holdsVoided' | 'holdsForgotten' | 'creditsExpired') =>
      concurrent.reduce((total, r) => total + r[key], 0)
    // Each hold voided and each credit expired exactly once, whichever sweep got there first.
    expect(single.holdsVoided).toBe(80)
    expect(sum('holdsVoided')).toBe(single.holdsVoided)
    expect(sum('creditsExpired')).toBeCloseTo(single.creditsExpired, 9)
    expect(concurrent.every((r) => r.accounts === 40)).toBe(true)
    // How the work fell between the sweeps depends on scheduling (on a busy machine one sweep
    // may do it all); the sums above and the final state below must not.
    console.log(
      `concurrent sweeps voided ${concurrent.map((r) => r.holdsVoided).join(' + ')} holds`,
    )
    // And the same final state, key by key, entry by entry.
    expect(normalise(await snapshot(redis, prefixes[1]!), prefixes[1]!, manyHolds)).toEqual(
      normalise(await snapshot(redis, prefixes[0]!), prefixes[0]!, oneHolds),
    )
    console.log(
      `sweep without the lock: one sweep voided ${single.holdsVoided} holds and expired ${single.creditsExpired} credits; ` +
        `4 concurrent sweeps voided ${concurrent.map((r) => r.holdsVoided).join('+')} = ${sum('holdsVoided')} ` +
        `and expired ${sum('creditsExpired')}; final states identical`,
    )
  })

  it('refuses bad options before touching Redis', async () => {
    const { ledger, redis } = makeLedger('redis')
    clients.push(redis)
    for (const bad of [
      { count: 0 },
      { count: 1.5 },
      { count: 10_001 },
      { lock: 'no' },
      { leaseMs: -1 },
      { cuont: 1 },
      null,
      'x',
    ]) {
      const error = await ledger.sweep(bad as never).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isCreditError(error) && error.code).toBe('ERR_CREDIT_INVALID_ARGUMENT')
    }
  })
})

describe('ledger.sweep() on ioredis-mock', () => {
  it('voids expired holds there too', async () => {
    const clock = new TestClock()
    const { ledger, redis } = makeLedger('mock', {
      clock: clock.read,
      holdMs: 1000,
      resolvedHoldRetentionMs: 24 * HOUR,
    })
    clients.push(redis)
    await populate([ledger], clock, 3)
    clock.advance(2 * HOUR)
    expect(await ledger.sweep()).toMatchObject({ skipped: false, accounts: 3, holdsVoided: 6 })
    expect(await ledger.sweep()).toMatchObject({ accounts: 3, holdsVoided: 0 })
  })
})

import { randomUUID } from 'node:crypto'

import calculateSlot from 'cluster-key-slot'
import { Cluster, Redis } from 'ioredis'

import { RedisLedger, isCreditError, type RedisLedgerOptions } from '../../src/index'
import { accountKeys, parseHoldId, scriptKeys } from '../../src/ledger/keys'
import {
  batchArgv,
  scripts,
  splitBatchReply,
  type BatchScriptDef,
  type ScriptDef,
} from '../../src/lua/scripts'
import {
  BACKENDS,
  backendRedis,
  clusterRedis,
  realRedis,
  redisClusterUrl,
  redisUrl,
  uniquePrefix,
  type Backend,
} from '../helpers/redis'
import { interceptScripts } from '../helpers/intercept'
import { spawnRedis } from '../setup/redis-process'

/** The script a command runs, by its SHA1 or its source. */
const scriptNames = new Map<string, string>(
  Object.values(scripts).flatMap((d) => [
    [d.sha1, d.name],
    [d.bareSha1, d.name],
    [d.source, d.name],
    [d.bareSource, d.name],
  ]),
)

/** A client that records each script call (EVALSHA or EVAL): which script and its keys. */
function recordingClient<T extends Redis | Cluster>(
  redis: T,
): { client: T; calls: { script: string; keys: readonly string[] }[] } {
  const calls: { script: string; keys: readonly string[] }[] = []
  const client = interceptScripts(redis, ({ args: [script, numkeys, ...rest] }, send) => {
    calls.push({
      script: scriptNames.get(String(script)) ?? 'unknown',
      keys: rest.slice(0, Number(numkeys)).map(String),
    })
    return send()
  })
  return { client, calls }
}

describe.each(BACKENDS)('batched reserves and settlements on %s', (backend: Backend) => {
  const open: (Redis | Cluster)[] = []
  afterAll(async () => {
    await Promise.all(open.map((c) => c.quit()))
  })

  function setup(options: Omit<RedisLedgerOptions, 'redis' | 'prefix'> = {}) {
    const redis = backendRedis(backend)
    open.push(redis)
    const { client, calls } = recordingClient(redis)
    const prefix = uniquePrefix()
    const ledger = new RedisLedger({ ...options, redis: client, prefix })
    return { ledger, calls, prefix, redis }
  }

  it("answers each operation of a batch script with exactly the single script's reply", async () => {
    const { ledger, prefix, redis } = setup()
    await ledger.openAccount('single', { type: 'registered' })
    await ledger.openAccount('batched', { type: 'registered' })
    const source = (def: ScriptDef): string => (backend === 'mock' ? def.bareSource : def.source)
    const now = String(Date.now())
    // Reserves (held, refused for want of credits), then settlements (a commit, a resend of
    // it, a release and a never-reserved hold), each batch on one account (one slot).
    const reserves = [
      [now, 'nonce-aaaaaaaaaa', '1000', '30000', '/e', '*', '', '', '0', '0', '86400000', '1000'],
      [
        now,
        'nonce-bbbbbbbbbb',
        '9000000',
        '30000',
        '/e',
        '*',
        '',
        '',
        '0',
        '0',
        '86400000',
        '1000',
      ],
      [now, 'nonce-cccccccccc', '2000', '30000', '/e|x', '*', '', '', '0', '0', '86400000', '1000'],
      [now, 'nonce-dddddddddd', '3000', '30000', '/e', '*', '', '', '0', '0', '86400000', '1000'],
    ]
    const retention = ['86400000', '2678400000', '31622400000']
    const settlements = [
      [now, 'nonce-aaaaaaaaaa', 'commit', '', '86400000', '1000', '3', ...retention],
      [now, 'nonce-aaaaaaaaaa', 'commit', '', '86400000', '1000', '3', ...retention],
      [now, 'nonce-dddddddddd', 'release', '', '86400000', '1000', '', ...retention],
      [now, 'nonce-eeeeeeeeee', 'commit', '', '86400000', '1000', '', ...retention],
    ]
    const run = async (
      id: string,
      single: ScriptDef,
      batch: BatchScriptDef,
      ops: string[][],
    ): Promise<{ one: unknown[]; all: unknown }> => {
      const keys = scriptKeys(prefix, id, single.numberOfKeys)
      if (id === 'single') {
        const one: unknown[] = []
        for (const args of ops)
          one.push(await redis.eval(source(single), keys.length, ...keys, ...args))
        return { one, all: undefined }
      }
      const argv: (string | number)[] = []
      batchArgv(
        batch,
        ops.map((args) => ({ args })),
        argv,
        0,
      )
      const all = await redis.eval(
        source(batch),
        keys.length * ops.length,
        ...ops.flatMap(() => keys),
        ...argv,
      )
      return { one: [], all }
    }
    for (const [single, batch, ops] of [
      [scripts.reserve, scripts.reserveBatch, reserves],
      [scripts.resolve, scripts.resolveBatch, settlements],
    ] as const) {
      const { one } = await run('single', single, batch, ops)
      const { all } = await run('batched', single, batch, ops)
      expect(typeof all).toBe('string')
      expect(splitBatchReply(all)).toEqual(one)
    }
    const [single, batched] = await Promise.all([
      ledger.balance('single'),
      ledger.balance('batched'),
    ])
    expect(batched).toEqual({ ...single, accountId: 'batched', createdAt: batched.createdAt })
  })

  it('sends the reserves of one turn as one script per slot, each with its own exact reply', async () => {
    const { ledger, calls } = setup()
    const ids = Array.from({ length: 12 }, (_, i) => `b${i}`)
    for (const id of ids) await ledger.openAccount(id, { type: 'registered' })
    calls.length = 0
    // Account b0 is asked 80 times for 5 credits: 350 / 5 = 70 holds, 10 refusals.
    const asks = [...Array.from({ length: 80 }, () => 'b0'), ...ids.slice(1)]
    const results = await Promise.all(
      asks.map((id) => ledger.reserve(id, 5, { endpoint: '/batch' })),
    )
    expect(results.filter((r) => r.accountId === 'b0' && r.status === 'held')).toHaveLength(70)
    expect(results.filter((r) => r.status === 'insufficient')).toHaveLength(10)
    expect(results.filter((r) => r.accountId !== 'b0').every((r) => r.status === 'held')).toBe(true)
    const holdIds = results.flatMap((r) => (r.status === 'held' ? [r.holdId] : []))
    expect(new Set(holdIds).size).toBe(holdIds.length)
    expect((await ledger.balance('b0')).pending).toBe(350)
    // The first alone (nothing was in flight), then scripts of at most 32 operations (the
    // default batchSize); on a cluster, one per slot.
    const batches = calls.filter((c) => c.script === 'reserveBatch')
    expect(batches.length).toBeGreaterThan(0)
    const reserves = calls.filter((c) => c.script.startsWith('reserve'))
    if (backend !== 'cluster') expect(reserves.length).toBe(1 + Math.ceil(89 / 32))
    for (const batch of batches) {
      expect(batch.keys.length % scripts.reserve.numberOfKeys).toBe(0)
      expect(batch.keys.length / scripts.reserve.numberOfKeys).toBeLessThanOrEqual(32)
      if (backend === 'cluster')
        expect(new Set(batch.keys.map((k) => calculateSlot(k))).size).toBe(1)
    }
  })

  it('batches only operations that share their limits: one script per tier, any endpoints', async () => {
    const { ledger, calls } = setup()
    const ids = Array.from({ length: 12 }, (_, i) => `t${i}`)
    for (const id of ids) await ledger.openAccount(id, { type: 'registered' })
    calls.length = 0
    // Three tiers interleaved in one turn: 30 s holds on two endpoints, 60 s holds, and a tier
    // that only guests may use. Each differs from the others in a shared argument.
    const tierOf = (i: number) => i % 3
    const before = Date.now()
    const results = await Promise.all(
      ids.map((id, i) =>
        ledger.reserve(id, 1, {
          endpoint: i % 2 === 0 ? '/a' : '/b',
          holdMs: tierOf(i) === 1 ? 60_000 : 30_000,
          ...(tierOf(i) === 2 ? { allowedTypes: ['guest'] } : {}),
        }),
      ),
    )
    const after = Date.now()
    results.forEach((result, i) => {
      if (tierOf(i) === 2) {
        expect(result.status).toBe('forbidden')
        return
      }
      if (result.status !== 'held') throw new Error(`reserve ${i}: ${result.status}`)
      const holdMs = tierOf(i) === 1 ? 60_000 : 30_000
      expect(result.expiresAt).toBeGreaterThanOrEqual(before + holdMs - 1000)
      expect(result.expiresAt).toBeLessThanOrEqual(after + holdMs + 1000)
    })
    // The first alone (nothing was in flight), then one script a tier: the two endpoints of
    // the first tier share one.
    if (backend !== 'cluster') {
      expect(calls.map((c) => c.script)).toEqual([
        'reserve',
        'reserveBatch',
        'reserveBatch',
        'reserveBatch',
      ])
      // In the order each tier's first operation queued: 60 s holds, guests, then the rest of
      // the first tier.
      expect(calls.slice(1).map((c) => c.keys.length / scripts.reserve.numberOfKeys)).toEqual([
        4, 4, 3,
      ])
    }
  })

  it('opens each unknown account of a turn as its own type, whatever the others in the turn', async () => {
    const { ledger, calls } = setup()
    const types = ['registered', 'guest', 'enterprise'] as const
    const ids = Array.from({ length: 9 }, (_, i) => `new${i}`)
    const typeOf = (i: number) => types[i % 3] ?? 'registered'
    calls.length = 0
    const results = await Promise.all(
      ids.map((id, i) => ledger.reserve(id, 1, { endpoint: '/new', openAs: typeOf(i) })),
    )
    // The type's signup credits, expiry and flags are shared arguments: each type its batch (on
    // a cluster, each slot its own too).
    if (backend !== 'cluster') {
      expect(calls.filter((c) => c.script === 'reserveBatch').length).toBeGreaterThanOrEqual(3)
    }
    const balances = await Promise.all(ids.map((id) => ledger.balance(id)))
    ids.forEach((_, i) => {
      const result = results[i]
      const balance = balances[i]
      if (result?.status !== 'held' || balance === undefined) throw new Error(`reserve ${i}`)
      expect(result.opened).toBe(true)
      expect(balance.accountType).toBe(typeOf(i))
      if (typeOf(i) === 'enterprise') {
        expect([result.unlimited, result.held, balance.unlimited]).toEqual([true, 0, true])
        return
      }
      const signup = typeOf(i) === 'guest' ? 50 : 350
      expect([result.unlimited, balance.available, balance.pending]).toEqual([false, signup - 1, 1])
      const expiring = balance.buckets.some((b) => b.expiresAt !== null)
      expect(expiring).toBe(typeOf(i) === 'guest')
    })
  })

  it("batches no operations whose clocks differ: each runs at its own caller's time", async () => {
    let now = 1_800_000_000_000
    const { ledger, calls } = setup({ clock: () => (now += 1000) })
    // More than the batcher keeps open at once (8 sets of shared arguments a kind).
    const ids = Array.from({ length: 12 }, (_, i) => `c${i}`)
    for (const id of ids) await ledger.openAccount(id, { type: 'registered' })
    calls.length = 0
    const start = now
    const results = await Promise.all(
      ids.map((id) => ledger.reserve(id, 1, { endpoint: '/c', holdMs: 60_000 })),
    )
    // reserve() reads the clock once, in the order called: each hold ends 60 s after its time.
    expect(results.map((r) => (r.status === 'held' ? r.expiresAt : r.status))).toEqual(
      ids.map((_, i) => start + 1000 * (i + 1) + 60_000),
    )
    // Each alone (on a cluster, a script a node has not seen yet is sent again by EVAL).
    expect(new Set(calls.map((c) => c.script))).toEqual(new Set(['reserve']))
    expect(calls.length).toBeGreaterThanOrEqual(ids.length)
    calls.length = 0
    const settled = await Promise.all(
      results.map((r) => ledger.commit(r.status === 'held' ? r.holdId : '')),
    )
    expect(settled.map((s) => s.outcome)).toEqual(ids.map(() => 'committed'))
    expect(new Set(calls.map((c) => c.script))).toEqual(new Set(['resolve']))
    expect(calls.length).toBeGreaterThanOrEqual(ids.length)
    // Each commit ran at its own time: the history's last entry of each account says so.
    const entries = await Promise.all(ids.map((id) => ledger.transactions(id, { limit: 1 })))
    expect(entries.map((page) => page.transactions[0]?.time)).toEqual(
      ids.map((_, i) => start + 1000 * (ids.length + i + 1)),
    )
  })

  it('settles the commits and releases of one turn together, a repeated hold once', async () => {
    const { ledger, calls } = setup()
    await ledger.openAccount('s1', { type: 'registered' })
    await ledger.openAccount('s2', { type: 'registered' })
    const holds = await Promise.all(
      ['s1', 's1', 's1', 's2'].map((id) => ledger.reserve(id, 10, { endpoint: '/s' })),
    )
    const [h1, h2, h3, h4] = holds.map((h) => (h.status === 'held' ? h.holdId : ''))
    calls.length = 0
    const settled = await Promise.all([
      ledger.commit(h1 ?? ''),
      ledger.commit(h1 ?? ''), // the same hold twice in one batch: charged once
      ledger.release(h2 ?? ''),
      ledger.commit(h3 ?? '', { actualCost: 2.5 }),
      ledger.commit(h4 ?? ''),
    ])
    const settleCalls = [...calls]
    expect(settled.map((s) => [s.outcome, s.charged, s.replayed])).toEqual([
      ['committed', 10, false],
      ['committed', 10, true],
      ['released', 0, false],
      ['committed', 2.5, false],
      ['committed', 10, false],
    ])
    expect(await ledger.balance('s1')).toMatchObject({ available: 337.5, pending: 0 })
    expect(await ledger.balance('s2')).toMatchObject({ available: 340, pending: 0 })
    // The first alone, sent at once while nothing was in flight; the other four together.
    if (backend !== 'cluster') {
      expect(
        settleCalls.map((c) => [c.script, c.keys.length / scripts.resolve.numberOfKeys]),
      ).toEqual([
        ['resolve', 1],
        ['resolveBatch', 4],
      ])
    }
  })

  it('gives each operation of a batch its own refusal, without failing the others', async () => {
    const { ledger } = setup({ accountTypes: { member: { signupCredits: 5 } } })
    await ledger.openAccount('m1', { type: 'member' })
    const held = await ledger.reserve('m1', 1, { endpoint: '/m' })
    if (held.status !== 'held') throw new Error('expected a hold')
    const outcomes = await Promise.allSettled([
      ledger.reserve('m1', 1, { endpoint: '/m' }),
      ledger.reserve('m1', 1, { endpoint: '/m', allowedTypes: ['registered'] }),
      ledger.reserve('nobody', 1, { endpoint: '/m' }),
      ledger.reserve('m1', 100, { endpoint: '/m' }),
      ledger.commit(held.holdId, { actualCost: 2 }), // more than was held
      ledger.commit(held.holdId),
    ])
    const values = outcomes.map((o) =>
      o.status === 'fulfilled'
        ? 'status' in o.value
          ? o.value.status
          : o.value.outcome
        : isCreditError(o.reason)
          ? o.reason.code
          : 'other',
    )
    expect(values).toEqual([
      'held',
      'forbidden',
      'no_account',
      'insufficient',
      'ERR_CREDIT_HOLD_EXCEEDED',
      'committed',
    ])
    expect(await ledger.balance('m1')).toMatchObject({ available: 3, pending: 1 })
  })

  it("keeps a tampered hold's unreadable reply to its own operation; the others in its batch stand", async () => {
    const { ledger, calls, prefix, redis } = setup()
    await ledger.openAccount('t1', { type: 'registered' })
    const holds = await Promise.all(
      [1, 2, 3].map(() => ledger.reserve('t1', 1, { endpoint: '/t' })),
    )
    const [first, tampered, third] = holds.map((h) => (h.status === 'held' ? h.holdId : ''))
    // Not a record the scripts write: the settlement's reply then has holes.
    await redis.hset(accountKeys(prefix, 't1').holds, parseHoldId(tampered).nonce, 'X|garbage')
    calls.length = 0
    const outcomes = await Promise.allSettled([
      ledger.commit(first ?? ''), // alone: nothing was in flight
      ledger.commit(tampered ?? ''),
      ledger.commit(third ?? ''),
    ])
    expect(
      outcomes.map((o) =>
        o.status === 'fulfilled' ? o.value.outcome : isCreditError(o.reason) && o.reason.code,
      ),
    ).toEqual(['committed', 'ERR_CREDIT_SCRIPT_REPLY', 'committed'])
    expect(calls.map((c) => [c.script, c.keys.length / scripts.resolve.numberOfKeys])).toEqual([
      ['resolve', 1],
      ['resolveBatch', 2],
    ])
  })

  it('sends one operation alone as the plain script, and every operation alone with batchSize 1', async () => {
    const { ledger, calls } = setup({ batchSize: 1 })
    await ledger.openAccount('one', { type: 'registered' })
    calls.length = 0
    await Promise.all(
      Array.from({ length: 5 }, () => ledger.reserve('one', 1, { endpoint: '/one' })),
    )
    expect(calls).toHaveLength(5)
    expect(calls.every((c) => c.script === 'reserve')).toBe(true)
    const single = setup()
    await single.ledger.openAccount('alone', { type: 'registered' })
    single.calls.length = 0
    const alone = single.ledger.reserve('alone', 1, { endpoint: '/alone' })
    // Sent at once, in this very turn: nothing was queued or in flight, nothing to wait for.
    expect(single.calls).toHaveLength(1)
    await alone
    expect(single.calls).toHaveLength(1)
    expect(single.calls[0]?.script).toBe('reserve')
  })

  it('never lets an operation overtake an earlier one on the same account', async () => {
    const { ledger } = setup()
    await ledger.openAccount('first', { type: 'registered' })
    await ledger.openAccount('other', { type: 'registered' })
    const all = await ledger.reserve('first', 350, { endpoint: '/o' })
    if (all.status !== 'held') throw new Error('expected a hold')
    // One turn: a first reserve on another account goes at once; a second one opens the
    // reserves' batch; then this account's release and a reserve that needs the released
    // credits. Sent in the order made, the reserve finds the 350 credits back.
    const [, , released, again] = await Promise.all([
      ledger.reserve('other', 1, { endpoint: '/o' }),
      ledger.reserve('other', 1, { endpoint: '/o' }),
      ledger.release(all.holdId),
      ledger.reserve('first', 350, { endpoint: '/o' }),
    ])
    expect(released.outcome).toBe('released')
    expect(again.status).toBe('held')
  })

  // ioredis-mock does not enforce key types (HGETALL of a string answers its characters), so
  // this is proven on real Redis and the cluster only.
  const onRealRedis = backend === 'mock' ? it.skip : it
  onRealRedis("keeps one operation's error to itself: the others in its batch run", async () => {
    const { ledger, calls, prefix, redis } = setup()
    for (const id of ['g1', 'g2', 'g3']) await ledger.openAccount(id, { type: 'registered' })
    // Not a ledger hash: every script on this account fails with WRONGTYPE.
    await redis.set(`${prefix}{broken}:a`, 'not a hash')
    calls.length = 0
    const outcomes = await Promise.allSettled([
      ledger.reserve('g1', 1, { endpoint: '/e' }), // alone: nothing was in flight
      ledger.reserve('g2', 1, { endpoint: '/e' }),
      ledger.reserve('broken', 1, { endpoint: '/e' }),
      ledger.reserve('g3', 1, { endpoint: '/e' }),
    ])
    expect(
      outcomes.map((o) =>
        o.status === 'fulfilled' ? o.value.status : isCreditError(o.reason) && o.reason.code,
      ),
    ).toEqual(['held', 'held', 'ERR_CREDIT_STORE_UNAVAILABLE', 'held'])
    const refused = outcomes[2]
    expect(refused.status === 'rejected' && String(refused.reason)).toMatch(/WRONGTYPE/)
    if (backend !== 'cluster') {
      expect(
        calls
          .filter((c) => c.script === 'reserveBatch')
          .map((c) => c.keys.length / scripts.reserve.numberOfKeys),
      ).toEqual([3])
    }
    for (const id of ['g1', 'g2', 'g3']) expect((await ledger.balance(id)).pending).toBe(1)
  })

  it('sends what is queued before a script outside the batches: a balance read sees the commit', async () => {
    const { ledger } = setup()
    await ledger.openAccount('reader', { type: 'registered' })
    const hold = await ledger.reserve('reader', 10, { endpoint: '/r' })
    if (hold.status !== 'held') throw new Error('expected a hold')
    const [, balance] = await Promise.all([ledger.commit(hold.holdId), ledger.balance('reader')])
    expect(balance).toMatchObject({ balance: 340, available: 340, pending: 0 })
  })

  it('splits a turn into scripts of at most batchSize operations', async () => {
    const { ledger, calls } = setup({ batchSize: 4 })
    await ledger.openAccount('split', { type: 'registered' })
    calls.length = 0
    const results = await Promise.all(
      Array.from({ length: 10 }, () => ledger.reserve('split', 1, { endpoint: '/split' })),
    )
    expect(results.every((r) => r.status === 'held')).toBe(true)
    // The first at once (nothing in flight), then 4 + 4 as soon as each batch is full, and the
    // last one when the turn ends (on a cluster: one slot, the same).
    expect(calls.map((c) => c.keys.length / scripts.reserve.numberOfKeys)).toEqual([1, 4, 4, 1])
    expect((await ledger.balance('split')).pending).toBe(10)
  })
})

describe('the script runner', () => {
  it('sends a script by EVAL the first time, then by EVALSHA, and again by EVAL after SCRIPT FLUSH', async () => {
    // A server of its own: on the shared one, another test file may load the script again
    // between the flush and the call.
    const server = await spawnRedis()
    const redis = new Redis(server.url)
    const commands: string[] = []
    const client = interceptScripts(redis, async ({ name }, send) => {
      const reply = await send().catch((error: unknown) => {
        commands.push(`${name} refused`)
        throw error
      })
      commands.push(name)
      return reply
    })
    const ledger = new RedisLedger({ redis: client, prefix: uniquePrefix() })
    try {
      await ledger.openAccount('r1', { type: 'registered' })
      await ledger.balance('r1')
      await ledger.balance('r1')
      expect(commands).toEqual(['eval', 'eval', 'evalsha'])
      commands.length = 0
      await redis.script('FLUSH')
      await ledger.balance('r1')
      expect(commands).toEqual(['evalsha refused', 'eval'])
    } finally {
      await redis.quit()
      await server.stop()
    }
  })
})

describe.each(BACKENDS.filter((b) => b !== 'mock'))(
  'on a client that auto-pipelines (%s)',
  (backend) => {
    const open: (Redis | Cluster)[] = []
    afterAll(async () => {
      await Promise.all(open.map((c) => c.quit()))
    })

    function autoPipelining(keyPrefix?: string): Redis | Cluster {
      const options = {
        enableAutoPipelining: true,
        ...(keyPrefix === undefined ? {} : { keyPrefix }),
      }
      let redis: Redis | Cluster
      if (backend === 'cluster') {
        const { hostname, port } = new URL(redisClusterUrl() ?? '')
        redis = new Cluster([{ host: hostname, port: Number(port) }], {
          ...options,
          redisOptions: { maxRetriesPerRequest: 3 },
        })
      } else {
        redis = new Redis(redisUrl(), { ...options, maxRetriesPerRequest: 3 })
      }
      open.push(redis)
      return redis
    }

    it('sends its scripts straight to the connection, not into the auto-pipeline queue', async () => {
      const redis = autoPipelining()
      const ledger = new RedisLedger({ redis, prefix: uniquePrefix() })
      await ledger.openAccount('p1', { type: 'registered' })
      const reserving = ledger.reserve('p1', 5, { endpoint: '/e' })
      // A command that took the auto-pipeline would wait in this queue until the next tick.
      expect(redis.autoPipelineQueueSize).toBe(0)
      const hold = await reserving
      expect(hold.status).toBe('held')
      if (hold.status !== 'held') return
      await ledger.commit(hold.holdId)
      expect(await ledger.balance('p1')).toMatchObject({ available: 345, pending: 0 })
    })

    it('sends multi-byte ids and endpoints byte-exact (the ledger writes these commands itself)', async () => {
      const redis = autoPipelining()
      const ledger = new RedisLedger({ redis, prefix: uniquePrefix() })
      const ids = ['ünïcödé-用户-🎉', '🎉'.repeat(256), 'x'.repeat(256)]
      const endpoint = `/ü/用户/🎉/${'e'.repeat(490)}`.slice(0, 200)
      await Promise.all(ids.map((id) => ledger.openAccount(id, { type: 'registered' })))
      // Concurrent, so that they travel as batches as well as alone.
      const holds = await Promise.all(
        ids.flatMap((id) => [1, 2, 3].map(() => ledger.reserve(id, 5, { endpoint }))),
      )
      const held = holds.flatMap((hold) => (hold.status === 'held' ? [hold.holdId] : []))
      expect(held).toHaveLength(9)
      await Promise.all(held.map((holdId) => ledger.commit(holdId)))
      for (const id of ids) {
        expect(await ledger.balance(id)).toMatchObject({ available: 335, pending: 0 })
        const { transactions } = await ledger.transactions(id)
        expect(transactions.filter((e) => e.kind === 'charge').map((e) => e.endpoint)).toEqual([
          endpoint,
          endpoint,
          endpoint,
        ])
      }
    })

    it('keeps the balance exact under 91 concurrent reserves, and each caller its own reply', async () => {
      const redis = autoPipelining()
      const ledger = new RedisLedger({ redis, prefix: uniquePrefix() })
      const ids = Array.from({ length: 12 }, (_, i) => `q${i}`)
      for (const id of ids) await ledger.openAccount(id, { type: 'registered' })
      const asks = [...Array.from({ length: 80 }, () => 'q0'), ...ids.slice(1)]
      const results = await Promise.all(asks.map((id) => ledger.reserve(id, 5, { endpoint: '/e' })))
      expect(results.filter((r) => r.accountId === 'q0' && r.status === 'held')).toHaveLength(70)
      expect(results.filter((r) => r.accountId !== 'q0' && r.status === 'held')).toHaveLength(11)
      const holds = results.flatMap((r) => (r.status === 'held' ? [r.holdId] : []))
      await Promise.all(holds.map((h, i) => (i % 2 === 0 ? ledger.commit(h) : ledger.release(h))))
      expect(await ledger.balance('q0')).toMatchObject({ available: 350 - 35 * 5, pending: 0 })
    })

    it("resends by EVAL after SCRIPT FLUSH, and honours the client's keyPrefix", async () => {
      const keyPrefix = `kp-${randomUUID()}:`
      const redis = autoPipelining(keyPrefix)
      const prefix = uniquePrefix()
      const ledger = new RedisLedger({ redis, prefix })
      await ledger.openAccount('k1', { type: 'registered' })
      const plain = backend === 'cluster' ? clusterRedis() : realRedis()
      open.push(plain)
      // The account hash lives under the client's keyPrefix, as the client's own commands put it.
      expect(await plain.exists(`${keyPrefix}${prefix}{k1}:a`)).toBe(1)
      if (backend === 'cluster') {
        await Promise.all((redis as Cluster).nodes('master').map((n) => n.script('FLUSH')))
      } else {
        await (redis as Redis).script('FLUSH')
      }
      const hold = await ledger.reserve('k1', 2, { endpoint: '/e' })
      expect(hold.status).toBe('held')
      expect(await ledger.balance('k1')).toMatchObject({ available: 348, pending: 2 })
    })
  },
)

describe('the socket writes of an auto-pipelining Redis client', () => {
  it('sends the reserves and settlements that one turn queued in one write, not one each', async () => {
    const redis = new Redis(redisUrl(), { enableAutoPipelining: true })
    try {
      const ledger = new RedisLedger({ redis, prefix: uniquePrefix() })
      await ledger.openAccount('w1', { type: 'registered' })
      await ledger.openAccount('w2', { type: 'registered' })
      const first = await ledger.reserve('w1', 1, { endpoint: '/e' })
      if (first.status !== 'held') throw new Error('not held')
      const socket = redis.stream
      const writes = { single: 0, vectored: 0, chunks: 0 }
      const write = socket._write.bind(socket)
      const writev = socket._writev?.bind(socket)
      socket._write = (chunk, encoding, callback) => {
        writes.single += 1
        write(chunk, encoding, callback)
      }
      socket._writev = (chunks, callback) => {
        writes.vectored += 1
        writes.chunks += chunks.length
        writev?.(chunks, callback)
      }
      // The first goes at once (nothing in flight); the next two wait for the end of the turn
      // and leave together: a settlement script and a reserve script.
      const replies = await Promise.all([
        ledger.reserve('w2', 1, { endpoint: '/e' }),
        ledger.commit(first.holdId),
        ledger.reserve('w2', 2, { endpoint: '/e' }),
      ])
      expect(replies.map((r) => ('status' in r ? r.status : r.outcome))).toEqual([
        'held',
        'committed',
        'held',
      ])
      expect(writes).toEqual({ single: 1, vectored: 1, chunks: 2 })
    } finally {
      await redis.quit()
    }
  })
})

describe('a batch that fails as a whole', () => {
  it('rejects every operation in it as ERR_CREDIT_STORE_UNAVAILABLE, and a resend is safe', async () => {
    const redis = backendRedis('redis')
    const prefix = uniquePrefix()
    let failNext = true
    const flaky = interceptScripts(redis, async ({ args }, send) => {
      const reply = await send()
      // The script ran, but its reply is lost: the worst case for a batch.
      if (failNext && scriptNames.get(String(args[0])) === 'resolveBatch') {
        failNext = false
        throw new Error('Connection is closed.')
      }
      return reply
    })
    const ledger = new RedisLedger({ redis: flaky, prefix })
    try {
      await ledger.openAccount('f1', { type: 'registered' })
      const holds = await Promise.all(
        [1, 2, 3].map(() => ledger.reserve('f1', 10, { endpoint: '/f' })),
      )
      const ids = holds.map((h) => (h.status === 'held' ? h.holdId : ''))
      const first = await Promise.allSettled(ids.map((id) => ledger.commit(id)))
      expect(
        first.map((o) =>
          o.status === 'rejected' && isCreditError(o.reason) ? o.reason.code : o.status,
        ),
      ).toEqual([
        'fulfilled', // sent alone, at once
        'ERR_CREDIT_STORE_UNAVAILABLE', // the batch of the other two lost its reply
        'ERR_CREDIT_STORE_UNAVAILABLE',
      ])
      // Every commit ran once; the resends replay it and charge nothing more.
      const again = await Promise.all(ids.map((id) => ledger.commit(id)))
      expect(again.map((s) => [s.outcome, s.replayed])).toEqual([
        ['committed', true],
        ['committed', true],
        ['committed', true],
      ])
      expect(await ledger.balance('f1')).toMatchObject({ available: 320, pending: 0 })
    } finally {
      await redis.quit()
    }
  })

  it('refuses a batchSize that is not an integer from 1 to 1000', () => {
    const redis = backendRedis('mock')
    for (const batchSize of [0, 1.5, 1001, '8', Number.NaN]) {
      expect(() => new RedisLedger({ redis, batchSize: batchSize as number })).toThrow(
        expect.objectContaining({ code: 'ERR_CREDIT_INVALID_OPTION' }) as Error,
      )
    }
    void redis.quit()
  })
})

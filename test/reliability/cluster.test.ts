import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

import calculateSlot from 'cluster-key-slot'
import { Cluster } from 'ioredis'

import { CreditStoreError, RedisLedger, isCreditError } from '../../src/index'
import { accountKeys } from '../../src/ledger/keys'
import { scripts } from '../../src/lua/scripts'
import { interceptScripts } from '../helpers/intercept'
import { TestClock, clusterRedis, redisClusterUrl, uniquePrefix } from '../helpers/redis'
import { snapshot } from '../helpers/snapshot'
import {
  nodeRole,
  shardOf,
  startCluster,
  waitForClusterOk,
  waitForClusterStable,
} from '../setup/cluster'

const run = promisify(execFile)
const HOUR = 60 * 60 * 1000
const haveCluster = redisClusterUrl() !== undefined
const describeCluster = haveCluster ? describe : describe.skip

/** Every script call a client makes: the script's name and its keys. */
function recordingClient(redis: Cluster): {
  client: Cluster
  calls: { script: string; keys: string[] }[]
} {
  const names = new Map<string, string>()
  for (const def of Object.values(scripts)) {
    names.set(def.sha1, def.name)
    names.set(def.bareSha1, def.name)
    names.set(def.source, def.name)
    names.set(def.bareSource, def.name)
  }
  const calls: { script: string; keys: string[] }[] = []
  const client = interceptScripts(redis, ({ args: [script, numKeys, ...rest] }, send) => {
    calls.push({
      script: names.get(String(script)) ?? 'unknown',
      keys: rest.slice(0, Number(numKeys)).map(String),
    })
    return send()
  })
  return { client, calls }
}

describeCluster('RedisLedger on a Redis Cluster (3 primaries, 1 replica each)', () => {
  const clients: Cluster[] = []
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.quit()))
  })
  function cluster(): Cluster {
    const c = clusterRedis()
    clients.push(c)
    return c
  }

  it('runs every script on one slot: keys of one call never span slots, and no CROSSSLOT', async () => {
    const { client, calls } = recordingClient(cluster())
    const clock = new TestClock()
    const prefix = uniquePrefix()
    const ledger = new RedisLedger({
      redis: client,
      prefix,
      clock: clock.read,
      holdMs: 1000,
      resolvedHoldRetentionMs: 24 * HOUR,
    })
    const ids = ['a', 'b', 'c', 'd', 'e', '{x}', 'y}', ':', '用户', '🎉']
    for (const [i, id] of ids.entries()) {
      await ledger.openAccount(id, { type: 'registered' })
      await ledger.grant(id, {
        amount: 10,
        source: 'promo',
        expiresAt: clock.now + HOUR,
        idempotencyKey: `slot-${i}`,
      })
      // Sent in one turn: the first of each goes alone (nothing in flight), the rest as one
      // batch script (reserveBatch, resolveBatch).
      const [a, b, c, d] = await Promise.all([
        ledger.reserve(id, 3, { endpoint: '/slots' }),
        ledger.reserve(id, 4, { endpoint: '/slots' }),
        ledger.reserve(id, 5, { endpoint: '/slots' }),
        ledger.reserve(id, 1, { endpoint: '/slots' }),
      ])
      if (a.status !== 'held' || b.status !== 'held' || c.status !== 'held' || d.status !== 'held')
        throw new Error('x')
      await Promise.all([
        ledger.commit(a.holdId, { actualCost: 2 }),
        ledger.release(b.holdId),
        ledger.release(d.holdId),
      ])
      await ledger.balance(id)
    }
    // The operations other parts of the ledger add, on the same accounts.
    const more = ledger as unknown as Record<
      string,
      ((...a: unknown[]) => Promise<unknown>) | undefined
    >
    for (const [i, id] of ids.entries()) {
      await more['subscribe']?.call(ledger, id, {
        plan: 'basic',
        monthlyCredits: 1,
        idempotencyKey: `slot-sub-${i}`,
      })
      await more['endSubscription']?.call(ledger, id, { at: clock.now + 40 * 24 * HOUR })
      await more['transactions']?.call(ledger, id, { limit: 5 })
      await more['audit']?.call(ledger, id)
      await more['recordUsage']?.call(ledger, id, { endpoint: '/slots', latencyMs: 3 })
      await more['usage']?.call(ledger, id, {
        from: clock.now - HOUR,
        to: clock.now + HOUR,
        granularity: 'hour',
      })
    }
    clock.advance(2 * HOUR)
    const swept = await ledger.sweep()
    // Per account: the third hold is voided; the promo grant (10) paid the 2 charged and its
    // other 8 credits expire.
    expect(swept).toMatchObject({
      skipped: false,
      accounts: ids.length,
      holdsVoided: ids.length,
      holdsForgotten: 0,
    })
    expect(swept.creditsExpired).toBeGreaterThanOrEqual(8 * ids.length)
    for (const id of ids) expect((await ledger.balance(id)).pending).toBe(0)
    // Every script the ledger has ran on the cluster (unlock: the sweep's lease).
    const seen = new Set(calls.map((c) => c.script))
    const all = Object.values(scripts).map((d) => d.name)
    expect([...seen].sort((a, b) => (a < b ? -1 : 1))).toEqual(
      [...all].sort((a, b) => (a < b ? -1 : 1)),
    )
    expect(seen).not.toContain('unknown')
    for (const call of calls) {
      expect(call.keys.length).toBeGreaterThan(0)
      expect(new Set(call.keys.map((k) => calculateSlot(k))).size).toBe(1)
    }
    // The accounts really are spread over the masters, so the proof covers cross-node routing.
    const nodes = await Promise.all(
      ids.map(
        async (id) =>
          (
            await shardOf(
              Number(new URL(redisClusterUrl() ?? '').port),
              calculateSlot(accountKeys(prefix, id).account),
            )
          ).master.id,
      ),
    )
    expect(new Set(nodes).size).toBeGreaterThan(1)
    console.log(
      `one slot per script call: ${calls.length} calls of ${seen.size} scripts over ${new Set(nodes).size} masters, 0 CROSSSLOT`,
    )
  })

  it('reports the cluster unsafe on every node (no persistence) and refuses it when strict', async () => {
    const ledger = new RedisLedger({ redis: cluster(), prefix: uniquePrefix() })
    const report = await ledger.check()
    expect(report.ok).toBe(false)
    // Every master, and the replicas the client knows of (CLUSTER SLOTS lists a replica only
    // once it has replicated something).
    expect(report.nodes.length).toBeGreaterThanOrEqual(3)
    expect(report.problems.filter((p) => p.code === 'NO_PERSISTENCE')).toHaveLength(
      report.nodes.length,
    )
    expect(report.problems.filter((p) => p.code === 'EVICTING_POLICY')).toHaveLength(0)
    const error = await ledger.check({ strict: true }).catch((e: unknown) => e)
    expect(isCreditError(error) && error.code).toBe('ERR_CREDIT_UNSAFE_REDIS_CONFIG')
    expect(error).toBeInstanceOf(CreditStoreError)
  })

  it('sweeps the accounts of every master and leaves other prefixes alone', async () => {
    const clock = new TestClock()
    const redis = cluster()
    const prefix = uniquePrefix()
    const other = uniquePrefix()
    const ledger = new RedisLedger({ redis, prefix, clock: clock.read, holdMs: 1000 })
    const neighbour = new RedisLedger({ redis, prefix: other, clock: clock.read, holdMs: 1000 })
    const ids = Array.from({ length: 30 }, (_, i) => `sweep-${i}`)
    for (const id of ids) {
      await ledger.openAccount(id, { type: 'registered' })
      await ledger.reserve(id, 1, { endpoint: '/sweep' })
    }
    await neighbour.openAccount('n', { type: 'registered' })
    await neighbour.reserve('n', 1, { endpoint: '/sweep' })
    clock.advance(1000)
    const before = await snapshot(redis, other)
    expect(await ledger.sweep({ count: 7 })).toEqual({
      skipped: false,
      accounts: 30,
      holdsVoided: 30,
      holdsForgotten: 0,
      creditsExpired: 0,
    })
    expect(await snapshot(redis, other)).toEqual(before)
    expect(await ledger.sweep()).toMatchObject({ accounts: 30, holdsVoided: 0 })
  })
})

const describeFailover = process.env['CREDITGATE_CLUSTER'] === '0' ? describe.skip : describe

describeFailover('a failover under load (a private cluster)', () => {
  jest.setTimeout(120_000)

  /**
   * `manual`: CLUSTER FAILOVER on the replica, twice (there and back). The primary stops writes
   * until its replica has caught up, so nothing acknowledged can be lost: every balance must be
   * exactly signup − charged.
   * `kill`: the primary is SIGKILLed and its replica elected. Replication is asynchronous and the
   * ledger does not WAIT, so a charge acknowledged just before the crash may be missing on the
   * promoted replica: its hold then expires and the call was free. What must hold even then:
   * nobody is charged more than acknowledged, nothing is negative, no hold stays pending.
   */
  it.each(['manual', 'kill'] as const)(
    'keeps every invariant across a %s failover under load, with no CROSSSLOT',
    async (kind) => {
      const owned = await startCluster()
      const seed = owned.nodes[0]!.port
      const redis = new Cluster([{ host: '127.0.0.1', port: seed }], {
        retryDelayOnFailover: 100,
        retryDelayOnClusterDown: 100,
        retryDelayOnTryAgain: 100,
        maxRedirections: 64,
        redisOptions: { maxRetriesPerRequest: 5, connectTimeout: 1000 },
      })
      redis.on('error', () => undefined)
      try {
        const clock = new TestClock(Date.now())
        const prefix = uniquePrefix()
        const holdMs = 60_000
        const ledger = new RedisLedger({
          redis,
          prefix,
          clock: clock.read,
          holdMs,
          accountTypes: { big: { signupCredits: 100_000 } },
        })
        const ids = Array.from({ length: 24 }, (_, i) => `fo-${i}`)
        for (const id of ids) await ledger.openAccount(id, { type: 'big' })
        const charged = new Map(ids.map((id) => [id, 0]))
        const f = {
          sent: 0,
          held: 0,
          insufficient: 0,
          reserveErrors: 0,
          committed: 0,
          released: 0,
          ambiguous: 0,
          duringFailover: 0,
        }
        const errors: string[] = []
        const ambiguous: {
          holdId: string
          id: string
          op: 'commit' | 'release'
          actualCost?: number
        }[] = []
        let stop = false
        let failingOver = false
        const settle = (id: string, charge: number): void => {
          charged.set(id, (charged.get(id) ?? 0) + charge)
        }
        const worker = async (w: number): Promise<void> => {
          for (let n = 0; !stop && n < 5000; n++) {
            const id = ids[(w * 7 + n * 5) % ids.length]!
            const cost = [1, 2, 0.5, 5][n % 4]!
            f.sent += 1
            let hold
            try {
              hold = await ledger.reserve(id, cost, { endpoint: '/failover' })
            } catch (error) {
              f.reserveErrors += 1
              errors.push(String(error))
              continue
            }
            if (hold.status !== 'held') {
              f.insufficient += 1
              continue
            }
            f.held += 1
            if (failingOver) f.duringFailover += 1
            const op = n % 7 === 0 ? 'release' : 'commit'
            const actualCost = n % 5 === 0 ? cost / 2 : undefined
            try {
              const r =
                op === 'release'
                  ? await ledger.release(hold.holdId)
                  : await ledger.commit(hold.holdId, actualCost === undefined ? {} : { actualCost })
              settle(id, r.charged)
              if (r.outcome === 'committed') f.committed += 1
              else f.released += 1
            } catch (error) {
              errors.push(String(error))
              f.ambiguous += 1
              ambiguous.push({
                holdId: hold.holdId,
                id,
                op,
                ...(actualCost === undefined ? {} : { actualCost }),
              })
            }
          }
        }
        const slot = calculateSlot(accountKeys(prefix, ids[0]!).account)
        const manual = async (): Promise<void> => {
          for (let round = 0; round < 2; round++) {
            const { master, replicas } = await shardOf(seed, slot)
            const replica = replicas[0]!
            failingOver = true
            const { stdout } = await run('redis-cli', [
              '-p',
              String(replica.port),
              'CLUSTER',
              'FAILOVER',
            ])
            expect(stdout.trim()).toBe('OK')
            const deadline = Date.now() + 30_000
            while (
              (await nodeRole(replica.port)) !== 'master' ||
              (await nodeRole(master.port)) !== 'slave'
            ) {
              if (Date.now() > deadline) throw new Error('the failover did not complete')
              await new Promise((r) => setTimeout(r, 50))
            }
            // Every node sees the new roles, and the old master follows the new one.
            await waitForClusterStable(
              owned.nodes.map((n) => n.port),
              3,
              3,
            )
            failingOver = false
            console.log(`manual failover ${round + 1}: ${master.port} -> ${replica.port}`)
            await new Promise((r) => setTimeout(r, 300))
          }
        }
        const kill = async (): Promise<void> => {
          const { master, replicas } = await shardOf(seed, slot)
          const replica = replicas[0]!
          failingOver = true
          await owned.node(master.port).kill()
          const deadline = Date.now() + 60_000
          while ((await nodeRole(replica.port)) !== 'master') {
            if (Date.now() > deadline) throw new Error('the replica was not promoted')
            await new Promise((r) => setTimeout(r, 100))
          }
          await waitForClusterOk(owned.nodes.filter((n) => n.running).map((n) => n.port))
          failingOver = false
          console.log(`primary ${master.port} killed, replica ${replica.port} promoted`)
          await new Promise((r) => setTimeout(r, 500))
        }
        const chaos = async (): Promise<void> => {
          await new Promise((r) => setTimeout(r, 300))
          try {
            await (kind === 'manual' ? manual() : kill())
          } finally {
            stop = true
          }
        }
        await Promise.all([chaos(), ...Array.from({ length: 6 }, (_, w) => worker(w))])

        // An error is not a "no": settle every ambiguous hold with the same call until it answers.
        for (const a of ambiguous) {
          for (let attempt = 0; ; attempt++) {
            try {
              const r =
                a.op === 'release'
                  ? await ledger.release(a.holdId)
                  : await ledger.commit(
                      a.holdId,
                      a.actualCost === undefined ? {} : { actualCost: a.actualCost },
                    )
              settle(a.id, r.charged)
              break
            } catch (error) {
              // A hold whose reserve was lost with the old primary is unknown: nothing to settle.
              if (isCreditError(error) && error.code === 'ERR_CREDIT_HOLD_NOT_FOUND') break
              if (attempt > 50) throw error
              await new Promise((r) => setTimeout(r, 100))
            }
          }
        }

        // Holds whose reserve failed are unknown to the client: they must expire, uncharged.
        clock.advance(holdMs + 1)
        let lost = 0
        let lostCredits = 0
        let total = 0
        for (const id of ids) {
          const b = await ledger.balance(id)
          const expected = 100_000 - (charged.get(id) ?? 0)
          total += charged.get(id) ?? 0
          expect(b.pending).toBe(0)
          expect(b.available).toBeGreaterThanOrEqual(0)
          for (const bucket of b.buckets) expect(bucket.amount).toBeGreaterThan(0)
          // Never charged more than acknowledged, whatever the failover.
          expect(b.balance).toBeGreaterThanOrEqual(expected - 1e-9)
          if (b.balance - expected > 1e-9) {
            lost += 1
            lostCredits += b.balance - expected
          }
        }
        expect(errors.filter((e) => e.includes('CROSSSLOT'))).toEqual([])
        console.log(
          `cluster ${kind} failover: sent ${f.sent}, held ${f.held}, insufficient ${f.insufficient}, ` +
            `committed ${f.committed}, refunded ${f.released}, charged ${total} credits, ` +
            `reserve errors ${f.reserveErrors}, ambiguous settles retried ${f.ambiguous}, ` +
            `held during the failover ${f.duringFailover}, CROSSSLOT 0, overcharged 0, ` +
            `lost: ${lost}${lost === 0 ? '' : ` accounts (${lostCredits} acknowledged credits not kept by the promoted replica)`}`,
        )
        if (kind === 'manual') expect(lost).toBe(0)
        expect(f.duringFailover + f.reserveErrors + f.ambiguous).toBeGreaterThan(0)
      } finally {
        await owned.stop()
        redis.disconnect()
      }
    },
  )
})

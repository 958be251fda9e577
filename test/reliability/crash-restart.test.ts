import { Redis } from 'ioredis'

import { RedisLedger } from '../../src/index'
import { uniquePrefix } from '../helpers/redis'
import { spawnRedis } from '../setup/redis-process'

jest.setTimeout(60_000)

/**
 * redis-server SIGKILLed in the middle of a load and started again on the same port with the same
 * AOF (`appendfsync always`). Every reserve+commit whose answer the client received must be
 * charged exactly once, nothing else may be charged, and no hold may stay pending after holdMs.
 */
it('charges exactly what clients saw succeed when Redis is SIGKILLed and restarted under load', async () => {
  const server = await spawnRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  // ioredis defaults, but quick reconnects: commands in flight at the crash are resent, or fail
  // after 3 failed reconnects (an error is not a "no": those are settled again below).
  const redis = new Redis(server.url, { maxRetriesPerRequest: 3, retryStrategy: () => 50 })
  try {
    const holdMs = 1500
    const prefix = uniquePrefix()
    const ledger = new RedisLedger({
      redis,
      prefix,
      holdMs,
      accountTypes: { big: { signupCredits: 10_000 } },
    })
    const ids = Array.from({ length: 20 }, (_, i) => `crash-${i}`)
    for (const id of ids) await ledger.openAccount(id, { type: 'big' })

    const charged = new Map(ids.map((id) => [id, 0]))
    const f = {
      sent: 0,
      held: 0,
      committed: 0,
      refunded: 0,
      reserveFailed: 0,
      settleFailed: 0,
      duringOutage: 0,
    }
    const unsettled: { id: string; holdId: string; op: 'commit' | 'release' }[] = []
    let stop = false
    let down = false

    const worker = async (w: number): Promise<void> => {
      for (let n = 0; !stop && n < 3000; n++) {
        const id = ids[(w * 3 + n) % ids.length]!
        const cost = [1, 0.5, 2][n % 3]!
        f.sent += 1
        if (down) f.duringOutage += 1
        let hold
        try {
          hold = await ledger.reserve(id, cost, { endpoint: '/crash' })
        } catch {
          // Not seen to succeed: whatever Redis did with it must come to nothing.
          f.reserveFailed += 1
          continue
        }
        if (hold.status !== 'held') throw new Error(`unexpected ${hold.status}`)
        f.held += 1
        const op = n % 4 === 3 ? 'release' : 'commit'
        try {
          const r =
            op === 'commit' ? await ledger.commit(hold.holdId) : await ledger.release(hold.holdId)
          charged.set(id, (charged.get(id) ?? 0) + r.charged)
          if (r.charged > 0) f.committed += 1
          else f.refunded += 1
        } catch {
          f.settleFailed += 1
          unsettled.push({ id, holdId: hold.holdId, op })
        }
      }
    }

    const chaos = async (): Promise<void> => {
      await new Promise((r) => setTimeout(r, 400))
      for (let round = 0; round < 2; round++) {
        down = true
        await server.kill()
        await new Promise((r) => setTimeout(r, 150))
        await server.restart()
        down = false
        await new Promise((r) => setTimeout(r, 400))
      }
      stop = true
    }
    await Promise.all([chaos(), ...Array.from({ length: 6 }, (_, w) => worker(w))])

    // The caller settles again with the same hold id until Redis answers; the answer is the truth.
    const settle = async (u: (typeof unsettled)[number]) => {
      for (let attempt = 0; ; attempt++) {
        try {
          return u.op === 'commit' ? await ledger.commit(u.holdId) : await ledger.release(u.holdId)
        } catch (error) {
          if (attempt >= 20) throw error
          await new Promise((r) => setTimeout(r, 50))
        }
      }
    }
    for (const u of unsettled) {
      const r = await settle(u)
      charged.set(u.id, (charged.get(u.id) ?? 0) + r.charged)
      if (r.charged > 0) f.committed += 1
      else f.refunded += 1
    }

    // Holds of failed reserves were never seen: after holdMs they must be void, uncharged.
    await new Promise((r) => setTimeout(r, holdMs + 100))
    let lost = 0
    let total = 0
    for (const id of ids) {
      const b = await ledger.balance(id)
      const expected = 10_000 - (charged.get(id) ?? 0)
      total += charged.get(id) ?? 0
      expect(b.pending).toBe(0)
      if (Math.abs(b.balance - expected) > 1e-9) lost += 1
      expect(b.balance).toBeCloseTo(expected, 9)
    }
    console.log(
      `SIGKILL + restart with AOF (appendfsync always), twice: sent ${f.sent} reserves, held ${f.held}, ` +
        `committed ${f.committed}, refunded ${f.refunded}, charged ${total} credits, ` +
        `failed reserves ${f.reserveFailed} (never charged), failed settles ${f.settleFailed} (settled again), ` +
        `sent while down ${f.duringOutage}, pending after holdMs 0, lost: ${lost}`,
    )
    expect(lost).toBe(0)
    expect(f.reserveFailed + f.settleFailed + f.duringOutage).toBeGreaterThan(0)
  } finally {
    redis.disconnect()
    await server.stop()
  }
})

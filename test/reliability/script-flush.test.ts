import { Redis } from 'ioredis'

import { RedisLedger } from '../../src/index'
import { scripts } from '../../src/lua/scripts'
import { uniquePrefix } from '../helpers/redis'
import { spawnRedis } from '../setup/redis-process'

jest.setTimeout(30_000)

it('fails no call while SCRIPT FLUSH runs every 500 ms under load', async () => {
  // A private server: flushing the run's shared one would disturb other test files.
  const server = await spawnRedis()
  const redis = new Redis(server.url)
  const admin = new Redis(server.url)
  try {
    const ledger = new RedisLedger({
      redis,
      prefix: uniquePrefix(),
      accountTypes: { big: { signupCredits: 100_000 } },
    })
    const ids = Array.from({ length: 10 }, (_, i) => `flush-${i}`)
    for (const id of ids) await ledger.openAccount(id, { type: 'big' })
    const f = { calls: 0, failed: 0, flushes: 0, charged: 0, refunded: 0 }
    const charged = new Map(ids.map((id) => [id, 0]))
    const granted = new Map(ids.map((id) => [id, 0]))
    const failures: string[] = []
    let stop = false
    const call = async <T>(promise: Promise<T>): Promise<T | undefined> => {
      f.calls += 1
      try {
        return await promise
      } catch (error) {
        f.failed += 1
        failures.push(String(error))
        return undefined
      }
    }
    const worker = async (w: number): Promise<void> => {
      for (let n = 0; !stop && n < 20_000; n++) {
        const id = ids[(w + n) % ids.length]!
        const hold = await call(ledger.reserve(id, 1, { endpoint: '/flush' }))
        if (hold?.status !== 'held') continue
        const r = await call(n % 3 === 0 ? ledger.release(hold.holdId) : ledger.commit(hold.holdId))
        if (r !== undefined) {
          charged.set(id, (charged.get(id) ?? 0) + r.charged)
          if (r.charged > 0) f.charged += 1
          else f.refunded += 1
        }
        if (n % 10 === 0) {
          const g = await call(
            ledger.grant(id, { amount: 1, source: 'bonus', idempotencyKey: `${w}-${n}` }),
          )
          if (g !== undefined && !g.replayed) granted.set(id, (granted.get(id) ?? 0) + g.amount)
        }
        if (n % 10 === 5) await call(ledger.balance(id))
      }
    }
    const flusher = async (): Promise<void> => {
      const until = Date.now() + 3000
      while (Date.now() < until) {
        await new Promise((r) => setTimeout(r, 500))
        await admin.script('FLUSH')
        f.flushes += 1
      }
      stop = true
    }
    await Promise.all([flusher(), ...Array.from({ length: 4 }, (_, w) => worker(w))])
    expect(failures).toEqual([])
    for (const id of ids) {
      const b = await ledger.balance(id)
      expect(b.pending).toBe(0)
      expect(b.balance).toBeCloseTo(100_000 + (granted.get(id) ?? 0) - (charged.get(id) ?? 0), 9)
    }
    // After the last flush, the next calls cache their scripts again.
    const last = await ledger.reserve(ids[0]!, 0, { endpoint: '/flush' })
    if (last.status === 'held') await ledger.release(last.holdId)
    expect(await admin.script('EXISTS', scripts.reserve.sha1, scripts.resolve.sha1)).toEqual([1, 1])
    console.log(
      `SCRIPT FLUSH every 500 ms for 3 s (${f.flushes} flushes): calls ${f.calls}, failed ${f.failed}, ` +
        `commits ${f.charged}, refunded ${f.refunded}, lost: 0`,
    )
  } finally {
    await Promise.all([redis.quit(), admin.quit()])
    await server.stop()
  }
})

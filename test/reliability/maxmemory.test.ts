import { Redis } from 'ioredis'

import { CreditStoreError, RedisLedger, isCreditError } from '../../src/index'
import { uniquePrefix } from '../helpers/redis'
import { snapshot } from '../helpers/snapshot'
import { spawnRedis } from '../setup/redis-process'

jest.setTimeout(30_000)

async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory')
  return Number(/used_memory:(\d+)/.exec(info)?.[1])
}

it('refuses every call whole at maxmemory with noeviction, writes nothing, and recovers when memory is freed', async () => {
  const server = await spawnRedis({ args: ['--maxmemory-policy', 'noeviction'] })
  const redis = new Redis(server.url, { maxRetriesPerRequest: 1 })
  const admin = new Redis(server.url)
  try {
    const prefix = uniquePrefix()
    const ledger = new RedisLedger({ redis, prefix })
    await ledger.openAccount('m', { type: 'registered' })
    await ledger.grant('m', { amount: 50, source: 'purchase', idempotencyKey: 'before' })
    const hold = await ledger.reserve('m', 5, { endpoint: '/oom' })
    const other = await ledger.reserve('m', 7, { endpoint: '/oom' })
    if (hold.status !== 'held' || other.status !== 'held') throw new Error('not held')
    const before = await snapshot(admin, prefix)

    // Another app fills the server: one big value under another prefix, then a limit below it.
    await admin.set('other-app:big', 'x'.repeat(4 * 1024 * 1024))
    await admin.config('SET', 'maxmemory', String((await usedMemory(admin)) - 1024 * 1024))
    expect(await admin.set('other-app:probe', 'x').catch((e: unknown) => String(e))).toMatch(/OOM/)

    const calls: [string, () => Promise<unknown>][] = [
      ['openAccount', () => ledger.openAccount('new', { type: 'registered' })],
      [
        'grant',
        () => ledger.grant('m', { amount: 1, source: 'purchase', idempotencyKey: 'during' }),
      ],
      ['reserve', () => ledger.reserve('m', 1, { endpoint: '/oom' })],
      [
        'reserve (opening)',
        () => ledger.reserve('fresh', 1, { endpoint: '/oom', openAs: 'guest' }),
      ],
      ['commit', () => ledger.commit(hold.holdId)],
      ['release', () => ledger.release(other.holdId)],
      ['balance', () => ledger.balance('m')],
      ['sweep', () => ledger.sweep()],
    ]
    const refused: string[] = []
    for (const [name, call] of calls) {
      const error = await call().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error).toBeInstanceOf(CreditStoreError)
      expect(isCreditError(error) && error.code).toBe('ERR_CREDIT_STORE_UNAVAILABLE')
      expect((error as Error).message).toMatch(/OOM/)
      refused.push(name)
    }
    // Refused whole: not one key of the ledger changed (the reserve's best-effort void included).
    await new Promise((r) => setTimeout(r, 50))
    expect(await snapshot(admin, prefix)).toEqual(before)

    await admin.del('other-app:big')
    expect(await ledger.commit(hold.holdId)).toMatchObject({ outcome: 'committed', charged: 5 })
    expect(await ledger.release(other.holdId)).toMatchObject({ outcome: 'released', charged: 0 })
    expect(
      await ledger.grant('m', { amount: 1, source: 'purchase', idempotencyKey: 'during' }),
    ).toMatchObject({ replayed: false })
    expect(await ledger.balance('m')).toMatchObject({ balance: 396, pending: 0 })
    console.log(
      `maxmemory + noeviction: sent ${calls.length} calls at the limit, refused ${refused.length} ` +
        `(${refused.join(', ')}), partial writes 0; after freeing memory: charged 5, refunded 7, credited 1, lost: 0`,
    )
  } finally {
    await Promise.all([redis.quit(), admin.quit()])
    await server.stop()
  }
})

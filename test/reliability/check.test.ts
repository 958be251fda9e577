import { Redis } from 'ioredis'

import {
  CreditStoreError,
  RedisLedger,
  isCreditError,
  type RedisCheckReport,
} from '../../src/index'
import { mockRedis, uniquePrefix } from '../helpers/redis'
import { spawnRedis, type RedisProcess } from '../setup/redis-process'

jest.setTimeout(30_000)

const servers: RedisProcess[] = []
const clients: Redis[] = []
afterAll(async () => {
  await Promise.all(clients.map((c) => c.quit().catch(() => undefined)))
  await Promise.all(servers.map((s) => s.stop()))
})

async function ledgerOn(args: string[]): Promise<RedisLedger> {
  const server = await spawnRedis({ args })
  servers.push(server)
  // ioredis's ready check sends INFO: off, for servers that disable it.
  const redis = new Redis(server.url, { enableReadyCheck: !args.includes('INFO') })
  clients.push(redis)
  return new RedisLedger({ redis, prefix: uniquePrefix() })
}

const codes = (report: RedisCheckReport): string[] => report.problems.map((p) => p.code).sort()

async function strictError(ledger: RedisLedger): Promise<unknown> {
  return ledger.check({ strict: true }).then(
    () => undefined,
    (e: unknown) => e,
  )
}

describe('ledger.check() on real redis-servers', () => {
  it('passes noeviction with AOF, strict too', async () => {
    const ledger = await ledgerOn(['--appendonly', 'yes'])
    const report = await ledger.check()
    expect(report).toEqual({
      ok: true,
      nodes: [expect.stringMatching(/^127\.0\.0\.1:\d+$/)],
      problems: [],
    })
    expect(await ledger.check({ strict: true })).toEqual(report)
  })

  it('reports and refuses an evicting policy and no persistence', async () => {
    const ledger = await ledgerOn(['--maxmemory-policy', 'allkeys-lru'])
    const report = await ledger.check()
    expect(report.ok).toBe(false)
    expect(codes(report)).toEqual(['EVICTING_POLICY', 'NO_PERSISTENCE'])
    expect(report.problems.every((p) => p.severity === 'unsafe')).toBe(true)
    expect(report.problems[0]?.message).toMatch(/noeviction|appendonly/)
    const error = await strictError(ledger)
    expect(error).toBeInstanceOf(CreditStoreError)
    expect(isCreditError(error) && error.code).toBe('ERR_CREDIT_UNSAFE_REDIS_CONFIG')
    expect((error as Error).message).toMatch(/allkeys-lru.*appendonly yes/s)
  })

  it.each([
    ['volatile-lru', ['--maxmemory-policy', 'volatile-lru', '--appendonly', 'yes']],
    ['allkeys-random', ['--maxmemory-policy', 'allkeys-random', '--appendonly', 'yes']],
    ['volatile-ttl', ['--maxmemory-policy', 'volatile-ttl', '--appendonly', 'yes']],
  ])('refuses %s even with AOF', async (_, args) => {
    const ledger = await ledgerOn(args)
    expect(codes(await ledger.check())).toEqual(['EVICTING_POLICY'])
    expect(isCreditError(await strictError(ledger))).toBe(true)
  })

  it('warns, without refusing, about RDB snapshots only and appendfsync no', async () => {
    const rdb = await ledgerOn(['--save', '60 1'])
    expect(await rdb.check()).toMatchObject({
      ok: true,
      problems: [{ code: 'SNAPSHOTS_ONLY', severity: 'warning' }],
    })
    await expect(rdb.check({ strict: true })).resolves.toMatchObject({ ok: true })
    const fsyncNo = await ledgerOn(['--appendonly', 'yes', '--appendfsync', 'no'])
    expect(codes(await fsyncNo.check())).toEqual(['AOF_FSYNC_NO'])
  })

  it('falls back to INFO when CONFIG is disabled (rename-command CONFIG "")', async () => {
    const evicting = await ledgerOn([
      '--rename-command',
      'CONFIG',
      '',
      '--maxmemory-policy',
      'allkeys-lru',
      '--appendonly',
      'yes',
    ])
    expect(codes(await evicting.check())).toEqual(['EVICTING_POLICY'])
    expect(isCreditError(await strictError(evicting))).toBe(true)
    // AOF off, and the save points cannot be read: reported, not refused.
    const unknown = await ledgerOn(['--rename-command', 'CONFIG', ''])
    expect(await unknown.check({ strict: true })).toMatchObject({
      ok: true,
      problems: [{ code: 'PERSISTENCE_UNKNOWN', severity: 'warning' }],
    })
  })

  it('reports what it cannot read when CONFIG and INFO are both disabled', async () => {
    const ledger = await ledgerOn([
      '--rename-command',
      'CONFIG',
      '',
      '--rename-command',
      'INFO',
      '',
    ])
    const report = await ledger.check()
    expect(codes(report)).toEqual(['PERSISTENCE_UNKNOWN', 'POLICY_UNKNOWN'])
    expect(report.ok).toBe(true)
  })

  it('answers ERR_CREDIT_STORE_UNAVAILABLE when Redis cannot be reached', async () => {
    // Nothing listens on port 1.
    const redis = new Redis({
      host: '127.0.0.1',
      port: 1,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    })
    redis.on('error', () => undefined)
    const ledger = new RedisLedger({ redis, prefix: uniquePrefix() })
    const error = await ledger.check().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(isCreditError(error) && error.code).toBe('ERR_CREDIT_STORE_UNAVAILABLE')
  })

  it('refuses bad options with ERR_CREDIT_INVALID_ARGUMENT', async () => {
    const ledger = await ledgerOn([])
    for (const bad of [{ strict: 'yes' }, { strcit: true }, null, 5, []]) {
      const error = await ledger.check(bad as never).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isCreditError(error) && error.code).toBe('ERR_CREDIT_INVALID_ARGUMENT')
    }
  })

  it('does not throw a TypeError on ioredis-mock', async () => {
    const redis = mockRedis()
    const report = await new RedisLedger({ redis, prefix: uniquePrefix() }).check()
    expect(Array.isArray(report.problems)).toBe(true)
    console.log(`check() on ioredis-mock: ${JSON.stringify(report)}`)
    await redis.quit()
  })
})

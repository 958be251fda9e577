/**
 * The ledger's own figures: reserve+commit pairs per second in one process, and Redis memory
 * per account. Used by bench/run.ts.
 */
import { execFileSync } from 'node:child_process'

import { Redis } from 'ioredis'

import { RedisLedger } from 'creditgate'

import type { OwnedRedis } from '../test/setup/redis-server'
import { median } from './stats'

export interface LedgerFigures {
  /** How the figures were measured, for the results file. */
  readonly intro: string
  readonly rows: readonly (readonly [string, string])[]
}

const PAIR_SECONDS = Number(process.env['BENCH_PAIR_SECONDS'] ?? 3)
const PAIR_ROUNDS = 3
const MEMORY_ACCOUNTS = Number(process.env['BENCH_MEMORY_ACCOUNTS'] ?? 100_000)
const HISTORY_ACCOUNTS = Number(process.env['BENCH_HISTORY_ACCOUNTS'] ?? 10_000)

async function pairsPerSecond(
  url: string,
  inFlight: number,
  autoPipelining: boolean,
  batchSize?: number,
): Promise<number> {
  const redis = new Redis(url, { enableAutoPipelining: autoPipelining })
  const prefix = `pairs-${inFlight}-${autoPipelining ? 'p' : 'n'}-${batchSize ?? 'd'}:`
  const ledger = new RedisLedger({
    redis,
    prefix,
    ...(batchSize === undefined ? {} : { batchSize }),
    accountTypes: { bench: { signupCredits: 1_000_000_000 } },
  })
  const accounts = 1000
  for (let i = 0; i < accounts; i += 100) {
    await Promise.all(
      Array.from({ length: 100 }, (_, j) => ledger.openAccount(`a${i + j}`, { type: 'bench' })),
    )
  }
  let pairs = 0
  let n = 0
  const deadline = Date.now() + PAIR_SECONDS * 1000
  const started = Date.now()
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (Date.now() < deadline) {
        const hold = await ledger.reserve(`a${n++ % accounts}`, 1, { endpoint: '/bench' })
        if (hold.status !== 'held') throw new Error(`reserve ${hold.status}`)
        await ledger.commit(hold.holdId)
        pairs += 1
      }
    }),
  )
  const rate = pairs / ((Date.now() - started) / 1000)
  await redis.quit()
  return rate
}

function evalshaCeiling(port: number): number {
  const sha = execFileSync('redis-cli', ['-p', String(port), 'SCRIPT', 'LOAD', 'return 1'], {
    encoding: 'utf8',
  }).trim()
  const out = execFileSync(
    'redis-benchmark',
    ['-h', '127.0.0.1', '-p', String(port), '-c', '64', '-n', '300000', '-q', 'EVALSHA', sha, '0'],
    { encoding: 'utf8' },
  )
  const match = /([\d.]+) requests per second/.exec(out)
  return match === null ? Number.NaN : Number(match[1])
}

async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory')
  const match = /used_memory:(\d+)/.exec(info)
  return Number(match?.[1] ?? Number.NaN)
}

async function memoryPerAccount(
  url: string,
  label: string,
  count: number,
  prepare: (ledger: RedisLedger, id: string) => Promise<unknown>,
): Promise<{ total: number; withoutHistory: number }> {
  const redis = new Redis(url, { enableAutoPipelining: true })
  const ledger = new RedisLedger({ redis, prefix: `mem-${label}:` })
  // The benchmark's own redis-server, emptied first: the key space's table doubles at powers of
  // two, and a doubling (4 MB from 2^18 to 2^19 slots, 42 B an account of 100,000) would land
  // inside or outside the measurement as the keys the runs before left behind decide.
  await redis.flushall()
  const before = await usedMemory(redis)
  for (let i = 0; i < count; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, count - i) }, async (_, j) => {
        const id = `user-${i + j}`
        await ledger.openAccount(id, { type: 'registered' })
        await prepare(ledger, id)
      }),
    )
  }
  const after = await usedMemory(redis)
  // The same accounts without their history lists (the signup grant is the first entry).
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `mem-${label}:*}:t`, 'COUNT', 5000)
    cursor = next
    if (keys.length > 0) await redis.unlink(...keys)
  } while (cursor !== '0')
  await new Promise((resolve) => setTimeout(resolve, 500))
  const withoutHistory = await usedMemory(redis)
  await redis.quit()
  return { total: (after - before) / count, withoutHistory: (withoutHistory - before) / count }
}

export async function ledgerFigures(server: OwnedRedis): Promise<LedgerFigures> {
  const rows: [string, string][] = []
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US')
  // Every configuration once per round, rounds one after another: the rows compare only when
  // they are measured side by side (run in a fixed order, a later row met a busier machine).
  const configs = [
    { inFlight: 1, autoPipelining: false },
    { inFlight: 64, autoPipelining: false },
    { inFlight: 1, autoPipelining: true },
    { inFlight: 64, autoPipelining: true },
    { inFlight: 64, autoPipelining: false, batchSize: 1 },
    { inFlight: 64, autoPipelining: false, batchSize: 64 },
  ] as const
  const rates = configs.map((): number[] => [])
  for (let round = 0; round < PAIR_ROUNDS; round++) {
    for (const [i, c] of configs.entries()) {
      const batchSize = 'batchSize' in c ? c.batchSize : undefined
      rates[i]?.push(await pairsPerSecond(server.url, c.inFlight, c.autoPipelining, batchSize))
    }
  }
  for (const [i, c] of configs.entries()) {
    const rate = rates[i] ?? []
    const batching =
      'batchSize' in c
        ? `, batchSize ${c.batchSize}${c.batchSize === 1 ? ' (batching off)' : ''}`
        : ''
    rows.push([
      `reserve+commit pairs/s, ${c.inFlight === 1 ? 'sequential' : `${c.inFlight} in flight`}, auto-pipelining ${c.autoPipelining ? 'on' : 'off'}${batching}`,
      `${fmt(median(rate))} pairs/s (${fmt(Math.min(...rate))}–${fmt(Math.max(...rate))}; ${fmt(median(rate) * 2)} operations/s)`,
    ])
    console.log(rows.at(-1)?.join(': '))
  }
  const ceiling = evalshaCeiling(server.port)
  rows.push([
    'redis-benchmark EVALSHA of `return 1`, 64 clients (the ceiling)',
    `${fmt(ceiling)} scripts/s`,
  ])
  console.log(rows.at(-1)?.join(': '))
  const signup = await memoryPerAccount(server.url, 'signup', MEMORY_ACCOUNTS, () =>
    Promise.resolve(),
  )
  rows.push([
    `Redis memory per account, signup credits only (${fmt(MEMORY_ACCOUNTS)} accounts)`,
    `${fmt(signup.total)} bytes; ${fmt(signup.withoutHistory)} bytes without the history list`,
  ])
  console.log(rows.at(-1)?.join(': '))
  const subscribe = (ledger: RedisLedger, id: string): Promise<unknown> => {
    const withSubscribe = ledger as unknown as {
      subscribe?: (id: string, o: object) => Promise<unknown>
    }
    return withSubscribe.subscribe === undefined
      ? Promise.resolve()
      : withSubscribe.subscribe(id, {
          plan: 'basic',
          monthlyCredits: 500,
          idempotencyKey: `sub-${id}`,
        })
  }
  const subscribed = await memoryPerAccount(
    server.url,
    'subscription',
    MEMORY_ACCOUNTS,
    (ledger, id) => subscribe(ledger, id),
  )
  rows.push([
    `Redis memory per account, with a subscription (${fmt(MEMORY_ACCOUNTS)} accounts)`,
    `${fmt(subscribed.total)} bytes; ${fmt(subscribed.withoutHistory)} bytes without the history list`,
  ])
  console.log(rows.at(-1)?.join(': '))
  const history = await memoryPerAccount(
    server.url,
    'history',
    HISTORY_ACCOUNTS,
    async (ledger, id) => {
      for (let i = 0; i < 100; i++) {
        const hold = await ledger.reserve(id, 1, { endpoint: '/quantlib/stats/mean' })
        if (hold.status === 'held') await ledger.commit(hold.holdId, { latencyMs: 3 })
      }
    },
  )
  rows.push([
    `Redis memory per account, with 100 charges in its history and usage (${fmt(HISTORY_ACCOUNTS)} accounts)`,
    `${fmt(history.total)} bytes (the history list, usage counters and the outcomes of resolved holds, kept 10 minutes)`,
  ])
  console.log(rows.at(-1)?.join(': '))
  const intro = `Pairs per second in one process over 1,000 accounts: every configuration once per round, ${PAIR_ROUNDS} interleaved rounds of ${PAIR_SECONDS} s, medians with min–max.`
  return { intro, rows }
}

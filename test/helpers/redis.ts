import { randomUUID } from 'node:crypto'

import { Redis } from 'ioredis'
import RedisMock from 'ioredis-mock'

import { RedisLedger, type RedisLedgerOptions } from '../../src/index'

/** The real redis-server of this run (started by global-setup, or REDIS_URL). */
export function redisUrl(): string {
  const url = process.env['REDIS_URL']
  if (url === undefined || url === '') {
    throw new Error(
      'REDIS_URL is not set: the jest global setup must start redis-server (is it installed?)',
    )
  }
  return url
}

/** A new client of the real Redis of this run. Close it with `quit()`. */
export function realRedis(): Redis {
  return new Redis(redisUrl(), { lazyConnect: false, maxRetriesPerRequest: 3 })
}

/** A new ioredis-mock client with its own data. */
export function mockRedis(): Redis {
  return new (RedisMock as unknown as new (options?: object) => Redis)({ data: {} })
}

/** A unique key prefix per test: isolation without FLUSHALL. */
export function uniquePrefix(): string {
  return `test:${randomUUID()}:`
}

/** The backends every ledger claim is proven on. */
export type Backend = 'redis' | 'mock'
export const BACKENDS: readonly Backend[] = ['redis', 'mock']

/** A test clock: starts at a fixed UTC time, moves only when told. */
export class TestClock {
  now: number
  constructor(start = Date.UTC(2026, 0, 15, 12, 0, 0)) {
    this.now = start
  }
  readonly read = (): number => this.now
  advance(ms: number): void {
    this.now += ms
  }
}

/** A ledger on a fresh prefix of the given backend, with its client. */
export function makeLedger(
  backend: Backend,
  options: Omit<RedisLedgerOptions, 'redis'> = {},
): { ledger: RedisLedger; redis: Redis; prefix: string } {
  const redis = backend === 'redis' ? realRedis() : mockRedis()
  const prefix = uniquePrefix()
  return { ledger: new RedisLedger({ prefix, ...options, redis }), redis, prefix }
}

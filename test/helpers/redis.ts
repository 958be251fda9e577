import { randomUUID } from 'node:crypto'

import { Cluster, Redis } from 'ioredis'
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

/** Mock clients made so far: each gets a port of its own (see mockRedis). */
let mocks = 0

/**
 * A new ioredis-mock client with its own data. ioredis-mock shares one store, and one emitter
 * that every client listens to, among the clients of a host and port: a port of its own keeps
 * each client's data apart, and a suite's clients from piling up listeners on one emitter.
 */
export function mockRedis(): Redis {
  mocks += 1
  return new (RedisMock as unknown as new (options?: object) => Redis)({ port: 40000 + mocks })
}

/** A unique key prefix per test: isolation without FLUSHALL. */
export function uniquePrefix(): string {
  return `test:${randomUUID()}:`
}

/** The seed node of the run's Redis Cluster (started by global-setup), or undefined. */
export function redisClusterUrl(): string | undefined {
  const url = process.env['REDIS_CLUSTER_URL']
  return url === undefined || url === '' ? undefined : url
}

/** A new ioredis `Cluster` client of the run's Redis Cluster. Close it with `quit()`. */
export function clusterRedis(url = redisClusterUrl()): Cluster {
  if (url === undefined) {
    throw new Error(
      'REDIS_CLUSTER_URL is not set: the jest global setup starts a cluster unless CREDITGATE_CLUSTER=0',
    )
  }
  const { hostname, port } = new URL(url)
  return new Cluster([{ host: hostname, port: Number(port) }], {
    redisOptions: { maxRetriesPerRequest: 3 },
  })
}

/** The backends every ledger claim is proven on: 'cluster' too when the run has a cluster. */
export type Backend = 'redis' | 'mock' | 'cluster'
export const BACKENDS: readonly Backend[] =
  redisClusterUrl() === undefined ? ['redis', 'mock'] : ['redis', 'mock', 'cluster']

/** A new client of the given backend. */
export function backendRedis(backend: 'redis' | 'mock'): Redis
export function backendRedis(backend: Backend): Redis | Cluster
export function backendRedis(backend: Backend): Redis | Cluster {
  if (backend === 'cluster') return clusterRedis()
  return backend === 'redis' ? realRedis() : mockRedis()
}

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
  backend: 'redis' | 'mock',
  options?: Omit<RedisLedgerOptions, 'redis'>,
): { ledger: RedisLedger; redis: Redis; prefix: string }
export function makeLedger(
  backend: Backend,
  options?: Omit<RedisLedgerOptions, 'redis'>,
): { ledger: RedisLedger; redis: Redis | Cluster; prefix: string }
export function makeLedger(
  backend: Backend,
  options: Omit<RedisLedgerOptions, 'redis'> = {},
): { ledger: RedisLedger; redis: Redis | Cluster; prefix: string } {
  const redis = backendRedis(backend)
  const prefix = uniquePrefix()
  return { ledger: new RedisLedger({ prefix, ...options, redis }), redis, prefix }
}

import type { Cluster, Redis } from 'ioredis'

import { interceptScripts } from './intercept'

/** Every key matching `pattern` on one node (a `Cluster` has to be scanned master by master). */
async function scanKeys(redis: Redis | Cluster, pattern: string): Promise<string[]> {
  const nodes = redis.isCluster ? (redis as Cluster).nodes('master') : [redis as Redis]
  const keys: string[] = []
  for (const node of nodes) {
    let cursor = '0'
    do {
      const [next, page] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
      cursor = next
      keys.push(...page)
    } while (cursor !== '0')
  }
  return keys
}

/**
 * Every key under `prefix` with its type and content: to prove that nothing was written. Works
 * on a `Cluster` too (every master is scanned).
 */
export async function snapshot(
  redis: Redis | Cluster,
  prefix: string,
): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  const keys = await scanKeys(redis, `${prefix}*`)
  keys.sort()
  for (const key of keys) {
    const type = await redis.type(key)
    if (type === 'hash') out[key] = await redis.hgetall(key)
    else if (type === 'list') out[key] = await redis.lrange(key, 0, -1)
    else if (type === 'zset') out[key] = await redis.zrange(key, 0, -1, 'WITHSCORES')
    else if (type === 'string') out[key] = await redis.get(key)
    else out[key] = type
    // ioredis-mock keeps emptied hashes and zsets; Redis deletes them. Treat empty as absent.
    const value = out[key]
    if (
      (Array.isArray(value) && value.length === 0) ||
      (typeof value === 'object' && value !== null && Object.keys(value).length === 0)
    ) {
      // eslint-disable-next-line @typescript-eslint/no-dynamic-delete
      delete out[key]
    }
  }
  return out
}

/**
 * Wraps a client so that every script call is counted: to prove that a refused argument never
 * reaches Redis.
 */
export function countingClient<T extends Redis | Cluster>(
  redis: T,
): { client: T; calls: () => number } {
  let calls = 0
  const client = interceptScripts(redis, (_call, send) => {
    calls += 1
    return send()
  })
  return { client, calls: () => calls }
}

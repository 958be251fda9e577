import type { OwnedRedis } from './redis-server'

/** Stops the redis-server that global-setup started, by its PID. */
export default async function globalTeardown(): Promise<void> {
  const redis = (globalThis as Record<string, unknown>)['__creditgateRedis'] as
    OwnedRedis | undefined
  if (redis !== undefined) await redis.stop()
}

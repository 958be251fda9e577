import type { OwnedCluster } from './cluster'
import type { OwnedRedis } from './redis-server'

/** Stops the redis-server (and the cluster) that global-setup started, by their PIDs. */
export default async function globalTeardown(): Promise<void> {
  const redis = (globalThis as Record<string, unknown>)['__creditgateRedis'] as
    OwnedRedis | undefined
  const cluster = (globalThis as Record<string, unknown>)['__creditgateCluster'] as
    OwnedCluster | undefined
  await Promise.all([redis?.stop(), cluster?.stop()])
}

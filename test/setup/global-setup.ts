import { startCluster } from './cluster'
import { startRedis } from './redis-server'

/**
 * Starts one private redis-server for the whole run unless REDIS_URL is set. Never touches the
 * shared instance on 6379: isolation comes from a unique key prefix per test.
 */
export default async function globalSetup(): Promise<void> {
  await Promise.all([startStandalone(), startClusterBackend()])
}

async function startStandalone(): Promise<void> {
  if (process.env['REDIS_URL'] !== undefined && process.env['REDIS_URL'] !== '') return
  const redis = await startRedis()
  process.env['REDIS_URL'] = redis.url
  process.env['CREDITGATE_TEST_REDIS_PID'] = String(redis.pid)
  ;(globalThis as Record<string, unknown>)['__creditgateRedis'] = redis
}

/**
 * Starts a private Redis Cluster (3 primaries, 1 replica each) for the `cluster` backend, unless
 * CREDITGATE_CLUSTER=0 or REDIS_CLUSTER_URL (a seed node) is set.
 */
async function startClusterBackend(): Promise<void> {
  if (process.env['CREDITGATE_CLUSTER'] === '0') return
  if (process.env['REDIS_CLUSTER_URL'] !== undefined && process.env['REDIS_CLUSTER_URL'] !== '')
    return
  const cluster = await startCluster()
  process.env['REDIS_CLUSTER_URL'] = cluster.url
  ;(globalThis as Record<string, unknown>)['__creditgateCluster'] = cluster
}

import { startRedis } from './redis-server'

/**
 * Starts one private redis-server for the whole run unless REDIS_URL is set. Never touches the
 * shared instance on 6379: isolation comes from a unique key prefix per test.
 */
export default async function globalSetup(): Promise<void> {
  if (process.env['REDIS_URL'] !== undefined && process.env['REDIS_URL'] !== '') return
  const redis = await startRedis()
  process.env['REDIS_URL'] = redis.url
  process.env['CREDITGATE_TEST_REDIS_PID'] = String(redis.pid)
  ;(globalThis as Record<string, unknown>)['__creditgateRedis'] = redis
}

import { spawnSync } from 'node:child_process'

import { spawnRedis, type RedisProcess } from './redis-process'

export { freePort } from './redis-process'

/** A `redis-server` process the tests own, stopped by its PID. */
export type OwnedRedis = RedisProcess

/**
 * Starts a private `redis-server` on a free loopback port, or on `atPort` (to restart a stopped
 * server where its clients expect it). Throws with a clear message when the binary is missing,
 * so a real-Redis suite fails instead of skipping.
 */
export async function startRedis(
  extraArgs: readonly string[] = [],
  atPort?: number,
): Promise<OwnedRedis> {
  const probe = spawnSync('redis-server', ['--version'], { encoding: 'utf8' })
  if (probe.error !== undefined || probe.status !== 0) {
    throw new Error(
      'creditgate tests need a real redis-server: install it (apt-get install -y redis-server) or set REDIS_URL',
    )
  }
  return spawnRedis({ args: extraArgs, ...(atPort === undefined ? {} : { port: atPort }) })
}

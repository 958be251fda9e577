import type { Redis } from 'ioredis'

import { accountKeys, parseHoldId } from '../../../src/ledger/keys'

/** What Redis holds for a hold id, read directly (no script runs, so nothing is maintained). */
export type HoldState = 'pending' | 'committed' | 'released' | 'expired' | 'void' | 'missing'

const STATES: Readonly<Record<string, HoldState>> = {
  P: 'pending',
  C: 'committed',
  R: 'released',
  E: 'expired',
  V: 'void',
}

/**
 * Every hold record of an account, by nonce: the holds hash's (`P|…` pending, `E|0|returned`,
 * `V|0|0`, a cancel's `R|0|returned`) and the outcomes list's (`C|charged|returned`,
 * `R|0|returned`), outcomes without the time they are forgotten at.
 */
export async function accountHoldRecords(
  redis: Redis,
  prefix: string,
  accountId: string,
): Promise<Map<string, string>> {
  const keys = accountKeys(prefix, accountId)
  const withoutForgetAt = (record: string) => record.replace(/^([CREV]\|\d+\|\d+)\|\d+$/, '$1')
  const out = new Map<string, string>()
  for (const [nonce, record] of Object.entries(await redis.hgetall(keys.holds)))
    out.set(nonce, withoutForgetAt(record))
  const outcomes = await redis.lrange(keys.outcomes, 0, -1)
  for (let i = 0; i + 1 < outcomes.length; i += 2)
    out.set(outcomes[i]!, withoutForgetAt(outcomes[i + 1]!))
  return out
}

/** The raw record of each hold id (see {@link accountHoldRecords}), null when there is none. */
export async function holdRecords(
  redis: Redis,
  prefix: string,
  holdIds: readonly string[],
): Promise<Map<string, string | null>> {
  const out = new Map<string, string | null>()
  for (const holdId of holdIds) {
    const { accountId, nonce } = parseHoldId(holdId)
    out.set(holdId, (await accountHoldRecords(redis, prefix, accountId)).get(nonce) ?? null)
  }
  return out
}

/** The state of each hold id. */
export async function holdStates(
  redis: Redis,
  prefix: string,
  holdIds: readonly string[],
): Promise<Map<string, HoldState>> {
  const records = await holdRecords(redis, prefix, holdIds)
  const out = new Map<string, HoldState>()
  for (const [holdId, record] of records) {
    out.set(holdId, record === null ? 'missing' : (STATES[record.charAt(0)] ?? 'missing'))
  }
  return out
}

/** The pending holds of an account as Redis stores them: nonce and deadline (Redis ms). */
export async function pendingHolds(
  redis: Redis,
  prefix: string,
  accountId: string,
): Promise<{ nonce: string; expiresAt: number }[]> {
  const all = await redis.hgetall(accountKeys(prefix, accountId).holds)
  return Object.entries(all)
    .filter(([, record]) => record.startsWith('P|'))
    .map(([nonce, record]) => ({ nonce, expiresAt: Number(record.split('|')[2]) }))
}

/** Redis's clock in ms: the one every hold deadline is measured on. */
export async function redisNow(redis: Redis): Promise<number> {
  const [seconds, micros] = await redis.time()
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
}

/** Waits until Redis's clock has passed `atMs`. */
export async function waitForRedisTime(redis: Redis, atMs: number): Promise<void> {
  for (;;) {
    const now = await redisNow(redis)
    if (now > atMs) return
    await new Promise((r) => setTimeout(r, Math.min(250, atMs - now + 1)))
  }
}

/** Count of each value. */
export function tally<T>(values: Iterable<T>): Map<T, number> {
  const out = new Map<T, number>()
  for (const v of values) out.set(v, (out.get(v) ?? 0) + 1)
  return out
}

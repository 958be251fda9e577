import type { RedisLedger, Transaction } from '../../src/index'
import { isCreditError } from '../../src/index'

export const HOUR = 60 * 60 * 1000
export const DAY = 24 * HOUR

/** Epoch ms of an ISO 8601 instant. */
export const at = (iso: string): number => {
  const ms = Date.parse(iso)
  if (Number.isNaN(ms)) throw new Error(`bad date ${iso}`)
  return ms
}

/** ISO string of epoch ms (or null), for readable expectations. */
export const iso = (ms: number | null): string | null =>
  ms === null ? null : new Date(ms).toISOString()

/** Expects a creditgate error with `code`. */
export async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(isCreditError(error)).toBe(true)
  expect((error as { code: string }).code).toBe(code)
}

/** Every retained history entry, oldest first, read page by page. */
export async function allTransactions(ledger: RedisLedger, id: string): Promise<Transaction[]> {
  const out: Transaction[] = []
  let cursor: string | undefined
  for (;;) {
    const page = await ledger.transactions(
      id,
      cursor === undefined ? { limit: 500 } : { limit: 500, cursor },
    )
    out.push(...page.transactions)
    if (page.nextCursor === null) break
    cursor = page.nextCursor
  }
  return out.reverse()
}

/** Spends `amount` credits on `endpoint` (reserve then commit). */
export async function spend(
  ledger: RedisLedger,
  id: string,
  amount: number,
  endpoint = '/x',
): Promise<void> {
  const hold = await ledger.reserve(id, amount, { endpoint })
  if (hold.status !== 'held') throw new Error(`not held: ${hold.status}`)
  await ledger.commit(hold.holdId)
}

/** The subscription credits of a balance, by expiry. */
export function subscriptionBuckets(balance: {
  buckets: readonly { source: string; amount: number; expiresAt: number | null }[]
}): { amount: number; expiresAt: string | null }[] {
  return balance.buckets
    .filter((b) => b.source === 'subscription')
    .map((b) => ({ amount: b.amount, expiresAt: iso(b.expiresAt) }))
}

import { randomFillSync } from 'node:crypto'

import { describe } from '../amount.js'
import { CreditArgumentError, CreditConfigError } from '../errors.js'

/** The longest account id the ledger accepts, in characters (code points). */
export const MAX_ACCOUNT_ID_LENGTH = 256

/**
 * Validates an account id: a well-formed string of 1 to 256 characters without control
 * characters. Any other character (`{`, `}`, `:`, unicode) is fine: ids are encoded before
 * they reach a key name.
 *
 * @throws {@link CreditArgumentError} with `ERR_CREDIT_INVALID_ACCOUNT_ID`
 */
export function checkAccountId(id: unknown): string {
  if (typeof id !== 'string' || id.length === 0) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ACCOUNT_ID',
      `account id must be a non-empty string, got ${describe(id)}`,
    )
  }
  // Count code points, not UTF-16 units, and refuse lone surrogates (they cannot be encoded).
  // Code points never outnumber UTF-16 units: count them only when the units exceed the limit
  // (this runs on every gated request).
  const length = id.length > MAX_ACCOUNT_ID_LENGTH ? Array.from(id).length : id.length
  if (length > MAX_ACCOUNT_ID_LENGTH) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ACCOUNT_ID',
      `account id must be at most ${MAX_ACCOUNT_ID_LENGTH} characters, got ${length}`,
    )
  }
  // eslint-disable-next-line no-control-regex
  if (!id.isWellFormed() || /[\u0000-\u001f\u007f]/.test(id)) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ACCOUNT_ID',
      `account id must not hold control characters or lone surrogates, got ${describe(id)}`,
    )
  }
  return id
}

/**
 * Encodes an account id for key names: `encodeURIComponent` escapes `{`, `}`, `:` and every
 * non-ASCII character, so the encoded id can neither end a hash tag early nor contain the `:`
 * that separates a hold id from its nonce. Two ids encode alike only if they are equal.
 */
export function encodeAccountId(id: string): string {
  return encodeURIComponent(id)
}

/** Checks a key prefix: 1 to 64 characters, without `{` or `}` (they would take the hash tag). */
export function checkPrefix(prefix: unknown): string {
  if (
    typeof prefix !== 'string' ||
    prefix.length === 0 ||
    prefix.length > 64 ||
    /[{}]/.test(prefix)
  ) {
    throw new CreditConfigError(
      'ERR_CREDIT_INVALID_OPTION',
      `prefix must be 1 to 64 characters without "{" or "}", got ${describe(prefix)}`,
    )
  }
  return prefix
}

/** Every Redis key of one account. All share the hash tag `{encodedId}`: one slot per account. */
export interface AccountKeys {
  /**
   * Hash: account type, flags, creation time, pending total, history sequence (from the first
   * movement on), the grant buckets, and when the first record of `holds` and the first of
   * `outcomes` can fall due.
   */
  readonly account: string
  /**
   * Hash: pending holds, by nonce, and the outcomes a resent reserve must find: holds that
   * expired, were voided (resolved before they were reserved) or cancelled (released because
   * their reserve's reply was lost).
   */
  readonly holds: string
  /** List: transaction history, newest first, trimmed to the history limit. */
  readonly history: string
  /**
   * List: the outcomes of recently committed and released holds, oldest first, as pairs of
   * nonce and outcome, forgotten from the front after their retention.
   */
  readonly outcomes: string
  /** Hash: usage counters per period and endpoint. */
  readonly usage: string
  /** Sorted set: usage periods by start time, to trim by retention. */
  readonly usageIndex: string
  /** Hash: the account's idempotency records (grants, subscriptions). */
  readonly idempotency: string
}

/** Each key's suffix after the account's hash tag, in the order account scripts take KEYS. */
const SUFFIXES = {
  account: 'a',
  holds: 'h',
  history: 't',
  outcomes: 'o',
  usage: 'u',
  usageIndex: 'v',
  idempotency: 'i',
} as const satisfies Record<keyof AccountKeys, string>

const SCRIPT_KEY_SUFFIXES: readonly string[] = Object.values(SUFFIXES)

/** What every key of the account starts with: the prefix and the hash tag. */
function keyBase(prefix: string, accountId: string): string {
  return `${prefix}{${encodeAccountId(accountId)}}:`
}

/**
 * Builds the keys of one account. With {@link scriptKeys}, the only place key names are made.
 *
 * @param prefix - the ledger's key prefix
 * @param accountId - a validated account id
 */
export function accountKeys(prefix: string, accountId: string): AccountKeys {
  const base = keyBase(prefix, accountId)
  return {
    account: base + SUFFIXES.account,
    holds: base + SUFFIXES.holds,
    history: base + SUFFIXES.history,
    outcomes: base + SUFFIXES.outcomes,
    usage: base + SUFFIXES.usage,
    usageIndex: base + SUFFIXES.usageIndex,
    idempotency: base + SUFFIXES.idempotency,
  }
}

/**
 * The first `count` keys of an account in the order every account script takes them as KEYS:
 * account, holds, history, outcomes, usage, usage index, idempotency (the names of
 * {@link accountKeys}, built without the object, on every ledger call).
 */
export function scriptKeys(prefix: string, accountId: string, count: number): string[] {
  const base = keyBase(prefix, accountId)
  const keys: string[] = []
  for (let i = 0; i < count && i < SCRIPT_KEY_SUFFIXES.length; i++) {
    keys.push(base + (SCRIPT_KEY_SUFFIXES[i] ?? ''))
  }
  return keys
}

/**
 * The key that binds a grant's idempotency key to one account across the whole ledger. Its hash
 * tag starts with `#`, which `encodeURIComponent` always escapes, so it never shares a hash tag
 * with an account.
 */
export function claimKey(prefix: string, idempotencyKey: string): string {
  return `${prefix}{#${encodeAccountId(idempotencyKey)}}`
}

/**
 * The key of the sweep's lease. Its hash tag `#` is one no account (`#` is always escaped) and no
 * grant claim (`#` followed by at least one character) can have.
 */
export function sweepLeaseKey(prefix: string): string {
  return `${prefix}{#}:sweep`
}

/** A SCAN pattern for every account hash of the ledger (`<prefix>{<encoded id>}:a`). */
export function accountKeyPattern(prefix: string): string {
  // Escape the glob characters a prefix may hold, so that it matches only itself.
  return `${prefix.replace(/[*?[\]\\]/g, '\\$&')}{*}:${SUFFIXES.account}`
}

/** The account id of an account hash key found by SCAN, or undefined for any other key. */
export function accountIdFromKey(prefix: string, key: string): string | undefined {
  const end = `}:${SUFFIXES.account}`
  if (!key.startsWith(`${prefix}{`) || !key.endsWith(end)) return undefined
  const encoded = key.slice(prefix.length + 1, -end.length)
  if (encoded.includes('{') || encoded.includes('}')) return undefined
  let id: string
  try {
    id = decodeURIComponent(encoded)
  } catch {
    return undefined
  }
  return encodeAccountId(id) === encoded && accountKeys(prefix, id).account === key ? id : undefined
}

// Random bytes for nonces, drawn 3 KiB at a time: one syscall per 256 holds, not per hold.
const pool = Buffer.alloc(12 * 256)
let poolOffset = pool.length

/** A hold id names its account and a random nonce: `<encoded account id>:<nonce>`. */
export function newHoldId(accountId: string): { holdId: string; nonce: string } {
  if (poolOffset === pool.length) {
    randomFillSync(pool)
    poolOffset = 0
  }
  const nonce = pool.toString('base64url', poolOffset, poolOffset + 12)
  poolOffset += 12
  return { holdId: `${encodeAccountId(accountId)}:${nonce}`, nonce }
}

/**
 * Splits a hold id into its account id and nonce.
 *
 * @throws {@link CreditArgumentError} with `ERR_CREDIT_INVALID_ARGUMENT` for a malformed id
 */
export function parseHoldId(holdId: unknown): { accountId: string; nonce: string } {
  if (typeof holdId === 'string' && holdId.length <= MAX_ACCOUNT_ID_LENGTH * 12 + 17) {
    const at = holdId.lastIndexOf(':')
    const nonce = holdId.slice(at + 1)
    if (at > 0 && /^[A-Za-z0-9_-]{16}$/.test(nonce)) {
      let accountId: string | undefined
      try {
        accountId = decodeURIComponent(holdId.slice(0, at))
      } catch {
        accountId = undefined
      }
      if (accountId !== undefined && encodeAccountId(accountId) === holdId.slice(0, at)) {
        return { accountId: checkAccountId(accountId), nonce }
      }
    }
  }
  throw new CreditArgumentError(
    'ERR_CREDIT_INVALID_ARGUMENT',
    `hold id must be one returned by reserve(), got ${describe(holdId)}`,
  )
}

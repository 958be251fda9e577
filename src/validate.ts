import { describe } from './amount.js'
import { CreditArgumentError, CreditConfigError } from './errors.js'

/** Levenshtein distance, for "did you mean" hints. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0] ?? 0
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const current = row[j] ?? 0
      row[j] = Math.min(
        (row[j] ?? 0) + 1,
        (row[j - 1] ?? 0) + 1,
        previous + (a[i - 1] === b[j - 1] ? 0 : 1),
      )
      previous = current
    }
  }
  return row[b.length] ?? 0
}

/** The closest known name within distance 2, if any. */
export function suggest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = 3
  for (const candidate of known) {
    const d = distance(name.toLowerCase(), candidate.toLowerCase())
    if (d < bestDistance) {
      best = candidate
      bestDistance = d
    }
  }
  return best
}

function pick(
  input: unknown,
  known: readonly string[],
  where: string,
  fail: (message: string) => Error,
): Record<string, unknown> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw fail(`${where} options must be an object, got ${describe(input)}`)
  }
  const out: Record<string, unknown> = {}
  const options = input as Record<string, unknown>
  // for…in over own keys, as Object.entries sees them, without an array of pairs per call (the
  // gate passes options to the ledger twice per request).
  for (const key in options) {
    if (!Object.hasOwn(options, key)) continue
    const value = options[key]
    if (value === undefined) continue
    if (!known.includes(key)) {
      const hint = suggest(key, known)
      throw fail(
        `${where} has no option "${key}"${hint === undefined ? '' : `; did you mean "${hint}"?`}`,
      )
    }
    out[key] = value
  }
  return out
}

/**
 * Checks set-up options: a plain object with only `known` keys, dropping keys whose value is
 * `undefined` (they count as omitted). Throws with a "did you mean" hint on an unknown key.
 *
 * @param input - the options object
 * @param known - the accepted keys
 * @param where - the options' owner, for messages (`RedisLedger`, `createCreditGate`)
 * @throws {@link CreditConfigError} with `ERR_CREDIT_INVALID_OPTION`
 */
export function plainOptions(
  input: unknown,
  known: readonly string[],
  where: string,
): Record<string, unknown> {
  return pick(
    input,
    known,
    where,
    (message) => new CreditConfigError('ERR_CREDIT_INVALID_OPTION', message),
  )
}

/**
 * Checks the options argument of a ledger method, as {@link plainOptions} does for set-up.
 *
 * @throws {@link CreditArgumentError} with `ERR_CREDIT_INVALID_ARGUMENT`
 */
export function argOptions(
  input: unknown,
  known: readonly string[],
  where: string,
): Record<string, unknown> {
  return pick(
    input,
    known,
    where,
    (message) => new CreditArgumentError('ERR_CREDIT_INVALID_ARGUMENT', message),
  )
}

/** A safe integer in [min, max], or a config error naming `what`. */
export function configInteger(
  value: unknown,
  what: string,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new CreditConfigError(
      'ERR_CREDIT_INVALID_OPTION',
      `${what} must be an integer from ${min} to ${max}, got ${describe(value)}`,
    )
  }
  return value
}

/** A boolean, or a config error naming `what`. */
export function configBoolean(value: unknown, what: string): boolean {
  if (typeof value !== 'boolean') {
    throw new CreditConfigError(
      'ERR_CREDIT_INVALID_OPTION',
      `${what} must be a boolean, got ${describe(value)}`,
    )
  }
  return value
}

/** Account type names: lower-case letters, digits, `_` and `-`, starting with a letter, at most 32. */
export const ACCOUNT_TYPE = /^[a-z][a-z0-9_-]{0,31}$/

/** Grant sources: letters, digits, `_`, `.` and `-`, at most 64. */
export const SOURCE = /^[A-Za-z0-9_.-]{1,64}$/

/**
 * A string argument matching `pattern`, or an argument error naming `what`.
 *
 * @throws {@link CreditArgumentError} with `ERR_CREDIT_INVALID_ARGUMENT`
 */
export function argString(value: unknown, what: string, pattern: RegExp, rule: string): string {
  if (typeof value !== 'string' || !pattern.test(value)) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `${what} must be ${rule}, got ${describe(value)}`,
    )
  }
  return value
}

/**
 * A free-text argument (idempotency key, endpoint): 1 to `max` characters, no control
 * characters, well-formed unicode, and none of the characters in `forbidden`.
 *
 * @throws {@link CreditArgumentError} with `ERR_CREDIT_INVALID_ARGUMENT`
 */
export function argText(value: unknown, what: string, max: number, forbidden = ''): string {
  if (
    typeof value !== 'string' ||
    value.length === 0 ||
    value.length > max ||
    !value.isWellFormed() ||
    // eslint-disable-next-line no-control-regex
    /[\u0000-\u001f\u007f]/.test(value) ||
    Array.from(forbidden).some((c) => value.includes(c))
  ) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `${what} must be 1 to ${max} printable characters${forbidden === '' ? '' : ` without "${forbidden}"`}, got ${describe(value)}`,
    )
  }
  return value
}

/**
 * An epoch-millisecond time argument (a `Date` or a safe non-negative integer).
 *
 * @throws {@link CreditArgumentError} with `ERR_CREDIT_INVALID_ARGUMENT`
 */
export function argTime(value: unknown, what: string): number {
  const ms = value instanceof Date ? value.getTime() : value
  if (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms < 0) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `${what} must be a Date or epoch milliseconds, got ${describe(value)}`,
    )
  }
  return ms
}

/**
 * A safe integer argument of at least `min`.
 *
 * @throws {@link CreditArgumentError} with `ERR_CREDIT_INVALID_ARGUMENT`
 */
export function argInteger(value: unknown, what: string, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `${what} must be an integer of at least ${min}, got ${describe(value)}`,
    )
  }
  return value
}

/** The longest endpoint (route pattern) the ledger records, in UTF-8 bytes. */
export const MAX_ENDPOINT_BYTES = 512

/**
 * An endpoint (route pattern) argument: printable, without `|`, at most 512 UTF-8 bytes, the
 * limit the Lua scripts check again.
 *
 * @throws {@link CreditArgumentError} with `ERR_CREDIT_INVALID_ARGUMENT`
 */
export function argEndpoint(value: unknown): string {
  const endpoint = argText(value, 'endpoint', MAX_ENDPOINT_BYTES, '|')
  if (Buffer.byteLength(endpoint) > MAX_ENDPOINT_BYTES) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `endpoint must be at most ${MAX_ENDPOINT_BYTES} bytes of UTF-8, got ${Buffer.byteLength(endpoint)}`,
    )
  }
  return endpoint
}

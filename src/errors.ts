/**
 * Every stable error code creditgate throws or reports. Branch on `err.code`, never on the
 * message: codes are public API, messages may improve.
 */
export type CreditErrorCode =
  | 'ERR_CREDIT_INVALID_OPTION'
  | 'ERR_CREDIT_UNKNOWN_TIER'
  | 'ERR_CREDIT_INVALID_AMOUNT'
  | 'ERR_CREDIT_INVALID_ACCOUNT_ID'
  | 'ERR_CREDIT_INVALID_ARGUMENT'
  | 'ERR_CREDIT_INSUFFICIENT'
  | 'ERR_CREDIT_ACCOUNT_NOT_FOUND'
  | 'ERR_CREDIT_ACCOUNT_TYPE_CONFLICT'
  | 'ERR_CREDIT_IDEMPOTENCY_CONFLICT'
  | 'ERR_CREDIT_TOPUP_NOT_ALLOWED'
  | 'ERR_CREDIT_HOLD_NOT_FOUND'
  | 'ERR_CREDIT_HOLD_EXCEEDED'
  | 'ERR_CREDIT_STORE_UNAVAILABLE'
  | 'ERR_CREDIT_SCRIPT_REPLY'
  | 'ERR_CREDIT_UNSAFE_REDIS_CONFIG'

const BRAND = Symbol.for('creditgate.CreditError')

/** Options every creditgate error accepts: the underlying `cause`, as in ES2022. */
export interface CreditErrorOptions {
  /** The error that caused this one, if any. */
  readonly cause?: unknown
}

/**
 * Base class of every error creditgate throws. Carries a stable {@link CreditErrorCode}.
 * Use {@link isCreditError} rather than `instanceof` when the ESM and CJS builds may both be loaded.
 */
export class CreditError extends Error {
  /** The stable code: branch on this. */
  readonly code: CreditErrorCode

  /**
   * @param code - the stable error code
   * @param message - one sentence naming the bad value and the fix
   * @param options - `cause`, when another error led to this one
   */
  constructor(code: CreditErrorCode, message: string, options?: CreditErrorOptions) {
    super(`${message} (see README#${code.toLowerCase()})`, options)
    this.name = new.target.name
    this.code = code
    Object.defineProperty(this, BRAND, { value: true })
  }
}

/** Thrown synchronously at set-up when options are invalid (`ERR_CREDIT_INVALID_OPTION`, `ERR_CREDIT_UNKNOWN_TIER`). */
export class CreditConfigError extends CreditError {}

/**
 * Thrown by a ledger method when an argument is invalid, before Redis is touched
 * (`ERR_CREDIT_INVALID_AMOUNT`, `ERR_CREDIT_INVALID_ACCOUNT_ID`, `ERR_CREDIT_INVALID_ARGUMENT`).
 */
export class CreditArgumentError extends CreditError {}

/** Thrown when an operation would break a rule of the ledger: a conflicting idempotency key, a top-up of a guest, an unknown account or hold. */
export class CreditRuleError extends CreditError {}

/** Thrown by callers who prefer throwing over a shortfall result (`ERR_CREDIT_INSUFFICIENT`). */
export class InsufficientCreditsError extends CreditError {
  /** The account that was short. */
  readonly accountId: string
  /** Credits the operation needed. */
  readonly required: number
  /** Credits available when it was refused. */
  readonly available: number

  /**
   * @param accountId - the account that was short
   * @param required - credits needed
   * @param available - credits available
   */
  constructor(accountId: string, required: number, available: number) {
    super(
      'ERR_CREDIT_INSUFFICIENT',
      `Account needs ${required} credits but has ${available} available; grant credits or lower the cost`,
    )
    this.accountId = accountId
    this.required = required
    this.available = available
  }
}

/**
 * Thrown when Redis cannot be reached or refuses the call (`ERR_CREDIT_STORE_UNAVAILABLE`), when a
 * script reply breaks its contract (`ERR_CREDIT_SCRIPT_REPLY`, a bug), or when Redis is configured
 * unsafely for a ledger (`ERR_CREDIT_UNSAFE_REDIS_CONFIG`). An unavailable store does not mean the
 * operation did not run: every mutating call can be retried with the same id.
 */
export class CreditStoreError extends CreditError {}

/**
 * True when `value` is an error thrown by creditgate, from either the ESM or the CJS build.
 *
 * @param value - anything caught
 * @returns whether it is a {@link CreditError}
 */
export function isCreditError(value: unknown): value is CreditError {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[BRAND] === true
  )
}

import { CreditArgumentError } from './errors.js'

/** The largest amount of milli-credits the ledger stores: 2^53 − 1. */
export const MAX_MILLI = Number.MAX_SAFE_INTEGER

const DECIMAL = /^(0|[1-9]\d*)(?:\.(\d{1,3}))?$/

/**
 * Converts a credit amount (a number or a plain decimal string with at most 3 decimals) to
 * integer milli-credits, refusing anything else: NaN, Infinity, negatives, exponents, hex,
 * padding, more than 3 decimals, or more than 2^53 − 1 milli-credits.
 *
 * @param value - the amount in credits
 * @param what - the argument's name, for the error message
 * @returns the amount in milli-credits
 * @throws {@link CreditArgumentError} with `ERR_CREDIT_INVALID_AMOUNT`
 */
export function toMilli(value: unknown, what = 'amount'): number {
  let text: string | undefined
  if (typeof value === 'number' && Number.isFinite(value)) text = String(value)
  else if (typeof value === 'string') text = value
  const match = text === undefined ? null : DECIMAL.exec(text)
  if (match === null) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_AMOUNT',
      `${what} must be a non-negative number of credits with at most 3 decimals, got ${describe(value)}`,
    )
  }
  const whole = Number(match[1])
  const fraction = Number((match[2] ?? '').padEnd(3, '0'))
  const milli = whole * 1000 + fraction
  if (!Number.isSafeInteger(whole) || !Number.isSafeInteger(milli)) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_AMOUNT',
      `${what} must be at most ${MAX_MILLI / 1000} credits, got ${describe(value)}`,
    )
  }
  return milli
}

/**
 * Converts integer milli-credits to credits (284500 → 284.5).
 *
 * @param milli - an integer amount of milli-credits
 * @returns the amount in credits
 */
export function fromMilli(milli: number): number {
  return milli / 1000
}

/** A short, safe description of a value for an error message. */
export function describe(value: unknown): string {
  if (typeof value === 'string')
    return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint')
    return String(value)
  if (value === null) return 'null'
  if (value === undefined) return 'undefined'
  return typeof value
}

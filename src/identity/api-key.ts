import type { IncomingMessage } from 'node:http'

import { describe } from '../amount.js'
import { CreditConfigError } from '../errors.js'
import { plainOptions } from '../validate.js'
import type { Identity, IdentifyFunction, IdentifyResult, IdentityRejection } from './types.js'

/**
 * What an API key lookup answers: the identity (or bare account id) the key belongs to,
 * `null`/`undefined` for an unknown key, or a rejection of your own (a revoked key, say).
 */
export type ApiKeyLookupResult = Identity | IdentityRejection | string | null | undefined

/**
 * Finds the account an API key belongs to. Answer synchronously when you can (an in-memory
 * map): the identify function then answers synchronously too. An error it throws or rejects
 * with is passed on, not turned into a 401.
 */
export type ApiKeyLookup = (key: string) => ApiKeyLookupResult | Promise<ApiKeyLookupResult>

/** Options of {@link fromApiKey}. */
export interface ApiKeyIdentityOptions {
  /** The request header carrying the key. Defaults to `'X-API-Key'`. */
  readonly header?: string
  /** Finds the account a key belongs to. Required. */
  readonly lookup: ApiKeyLookup
}

/** The identify function {@link fromApiKey} returns. */
export interface ApiKeyIdentifyFunction extends IdentifyFunction {
  /** `ApiKey header="<header>"`. */
  readonly challenge: string
}

/** The longest key read from the header; anything longer is refused before the lookup. */
const MAX_KEY_LENGTH = 1024
/** An HTTP field name (RFC 9110 token). */
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/

const UNKNOWN_KEY: IdentityRejection = Object.freeze({
  rejected: true,
  error: 'invalid_token',
  description: 'unknown API key',
})

/**
 * Identifies callers by an API key in a request header (`X-API-Key` by default), found by your
 * `lookup`. The key is checked for shape (1 to 1024 characters, no control characters) before
 * the lookup sees it.
 *
 * @param options - the header and the lookup; see {@link ApiKeyIdentityOptions}
 * @returns an identify function for `createCreditGate`: `null` when the header is absent, an
 *   `invalid_request` rejection when it is malformed, an `invalid_token` rejection for an
 *   unknown key, or the identity. It answers synchronously when `lookup` does.
 * @throws {@link CreditConfigError} with `ERR_CREDIT_INVALID_OPTION` when an option is missing,
 *   unknown or invalid; the identify function throws it too when `lookup` returns something
 *   that is not a lookup result
 */
export function fromApiKey(options: ApiKeyIdentityOptions): ApiKeyIdentifyFunction {
  const o = plainOptions(options, ['header', 'lookup'], 'fromApiKey')
  const lookup = o['lookup']
  if (typeof lookup !== 'function') {
    throw invalid(
      `fromApiKey needs \`lookup\`, a function (key) => identity, account id or null, got ${describe(lookup)}`,
    )
  }
  const header = o['header'] ?? 'X-API-Key'
  if (typeof header !== 'string' || !FIELD_NAME.test(header)) {
    throw invalid(
      `fromApiKey header must be an HTTP header name such as 'X-API-Key', got ${describe(header)}`,
    )
  }
  // Node lower-cases the keys of req.headers.
  const name = header.toLowerCase()
  const find = lookup as ApiKeyLookup
  const malformed: IdentityRejection = Object.freeze({
    rejected: true,
    error: 'invalid_request',
    description: `${header} must be 1 to ${MAX_KEY_LENGTH} characters without control characters`,
  })

  function identifyApiKey(req: IncomingMessage): IdentifyResult | Promise<IdentifyResult> {
    const key = req.headers[name]
    if (key === undefined) return null
    if (
      typeof key !== 'string' ||
      key.length === 0 ||
      key.length > MAX_KEY_LENGTH ||
      CONTROL.test(key)
    ) {
      return malformed
    }
    const found = find(key)
    return isThenable(found) ? Promise.resolve(found).then(settle) : settle(found)
  }

  return Object.freeze(Object.assign(identifyApiKey, { challenge: `ApiKey header="${header}"` }))
}

/** Checks what a lookup answered: a host bug must not pass as an identity. */
function settle(found: unknown): IdentifyResult {
  if (found === null || found === undefined) return UNKNOWN_KEY
  if (typeof found === 'string' && found !== '') return { accountId: found }
  if (typeof found === 'object') {
    const record = found as Record<string, unknown>
    if (
      record['rejected'] === true &&
      (record['error'] === 'invalid_token' || record['error'] === 'invalid_request') &&
      typeof record['description'] === 'string'
    ) {
      return found as IdentityRejection
    }
    if (typeof record['accountId'] === 'string' && record['accountId'] !== '') {
      return found as Identity
    }
  }
  throw invalid(
    `fromApiKey lookup must return an identity, a non-empty account id, a rejection, or null for an unknown key, got ${describe(found)}`,
  )
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { then?: unknown }).then === 'function'
  )
}

function invalid(message: string): CreditConfigError {
  return new CreditConfigError('ERR_CREDIT_INVALID_OPTION', message)
}

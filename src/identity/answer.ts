import { describe } from '../amount.js'
import { CreditConfigError } from '../errors.js'
import type { Identity, IdentifyFunction, IdentityRejection } from './types.js'

/** What an identify function's result means to the gate and to the caller's routes. */
export type Caller =
  | { readonly kind: 'none' }
  | { readonly kind: 'rejected'; readonly rejection: IdentityRejection }
  | { readonly kind: 'identity'; readonly identity: Identity }

/**
 * Reads an identify function's result: nothing presented, a rejected credential, or an identity
 * (a bare string is an account id). Anything else is the host's bug.
 *
 * @throws {@link CreditConfigError} `ERR_CREDIT_INVALID_OPTION` for a result of another shape
 */
export function classifyIdentity(result: unknown): Caller {
  if (result === null || result === undefined) return { kind: 'none' }
  if (typeof result === 'string') return { kind: 'identity', identity: { accountId: result } }
  if (typeof result === 'object') {
    const r = result as Partial<IdentityRejection> & Partial<Identity>
    if (r.rejected === true) {
      return {
        kind: 'rejected',
        rejection: {
          rejected: true,
          error: r.error === 'invalid_request' ? 'invalid_request' : 'invalid_token',
          description:
            typeof r.description === 'string' ? r.description : 'The credential is not valid',
        },
      }
    }
    if (typeof r.accountId === 'string') return { kind: 'identity', identity: result as Identity }
  }
  throw new CreditConfigError(
    'ERR_CREDIT_INVALID_OPTION',
    `identify returned ${describe(result)}; return an identity { accountId }, an account id, null, or a rejection`,
  )
}

/** The rejection of a credential that names no valid account id. */
export const INVALID_ACCOUNT: IdentityRejection = Object.freeze({
  rejected: true,
  error: 'invalid_token',
  description: 'The credential does not name a valid account',
})

/**
 * The identify function's `WWW-Authenticate` challenge, checked once at set-up: printable
 * ASCII, the only header value Node sends, with no room for CR/LF injection.
 *
 * @throws {@link CreditConfigError} `ERR_CREDIT_INVALID_OPTION`
 */
export function challengeOf(identify: IdentifyFunction): string {
  const challenge: unknown = identify.challenge ?? 'Bearer'
  if (
    typeof challenge !== 'string' ||
    challenge.trim() === '' ||
    !/^[\x20-\x7e]+$/.test(challenge)
  ) {
    throw new CreditConfigError(
      'ERR_CREDIT_INVALID_OPTION',
      `identify.challenge must be a WWW-Authenticate challenge of printable ASCII such as 'Bearer', got ${describe(challenge)}`,
    )
  }
  return challenge.trim()
}

/**
 * The `WWW-Authenticate` value of a 401: the challenge, with RFC 6750 `error` and
 * `error_description` for a rejected credential. The description is made printable ASCII
 * without quotes or backslashes: any other character would make Node refuse the header and
 * turn the 401 into a 500.
 */
export function authenticateHeader(challenge: string, rejection?: IdentityRejection): string {
  if (rejection === undefined) return challenge
  const description = rejection.description
    .slice(0, 200)
    .replace(/[^\x20-\x7e]/g, '?')
    .replace(/["\\]/g, "'")
  return `${challenge}${challenge.includes(' ') ? ',' : ''} error="${rejection.error}", error_description="${description}"`
}

import { createPublicKey, createSecretKey, KeyObject } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

import jwt from 'jsonwebtoken'
import type { VerifyOptions } from 'jsonwebtoken'

import { describe } from '../amount.js'
import { CreditConfigError } from '../errors.js'
import { checkAccountId } from '../ledger/keys.js'
import { configInteger, plainOptions } from '../validate.js'
import type { Identity, IdentifyFunction, IdentityRejection } from './types.js'

const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const
const RSA_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'] as const
const EC_ALGORITHMS = ['ES256', 'ES384', 'ES512'] as const
const ALGORITHMS: readonly string[] = [...HMAC_ALGORITHMS, ...RSA_ALGORITHMS, ...EC_ALGORITHMS]

/**
 * A JWS algorithm `fromJwt` can verify. `none` is deliberately absent: an unsigned token is
 * never a credential.
 */
export type JwtAlgorithm =
  | (typeof HMAC_ALGORITHMS)[number]
  | (typeof RSA_ALGORITHMS)[number]
  | (typeof EC_ALGORITHMS)[number]

/** The curve an EC public key must be on for each ES algorithm (RFC 7518 §3.4). */
const EC_CURVES: Readonly<Record<string, string>> = {
  ES256: 'prime256v1',
  ES384: 'secp384r1',
  ES512: 'secp521r1',
}

/** Options of {@link fromJwt}. Pass exactly one of `secret` and `publicKey`. */
export interface JwtIdentityOptions {
  /**
   * The shared secret of HMAC tokens (`HS256`, `HS384`, `HS512`). RFC 7518 asks for at least
   * as many bytes as the hash (32 for `HS256`). Defaults to none: pass this or `publicKey`.
   */
  readonly secret?: string | Buffer
  /**
   * The public key (PEM, or a `KeyObject`) of RSA, RSA-PSS or EC tokens (`RS*`, `PS*`, `ES*`).
   * Defaults to none: pass this or `secret`.
   */
  readonly publicKey?: string | Buffer | KeyObject
  /**
   * The algorithms a token may be signed with: at least one, all of the kind the key verifies
   * (HMAC for `secret`, RSA or EC for `publicKey`). Required, because trusting the token's own
   * `alg` header is how algorithm-confusion attacks work.
   */
  readonly algorithms: readonly JwtAlgorithm[]
  /** The accepted `iss` value(s). Defaults to any issuer. */
  readonly issuer?: string | readonly string[]
  /** The accepted `aud` value(s): the token must name at least one. Defaults to any audience. */
  readonly audience?: string | readonly string[]
  /** The claim holding the account id: a non-empty string. Defaults to `'sub'`. */
  readonly claim?: string
  /**
   * The claim holding the account type (`'registered'`, `'guest'`, …), used when the gate opens
   * accounts on first sight. Ignored in a token where it is not a string. Defaults to none.
   */
  readonly typeClaim?: string
  /** Seconds of clock skew allowed on `exp` and `nbf`, from 0 to 300. Defaults to `0`. */
  readonly clockToleranceSec?: number
  /**
   * How many verified tokens to remember, so a token seen again skips the signature check until
   * its `exp`. The least recently used is forgotten first; `0` turns the cache off. Only
   * verified tokens are held, each with its token string as key. Defaults to `10_000`.
   */
  readonly cacheSize?: number
  /** The request header carrying `Bearer <token>`. Defaults to `'authorization'`. */
  readonly header?: string
  /** The realm named in the `WWW-Authenticate` challenge. Defaults to `'api'`. */
  readonly realm?: string
}

/**
 * The identify function {@link fromJwt} returns. It always answers synchronously, so the gate
 * adds no await before its reserve.
 */
export interface JwtIdentifyFunction extends IdentifyFunction {
  (req: IncomingMessage): Identity | IdentityRejection | null
  /** `Bearer realm="<realm>"`. */
  readonly challenge: string
}

const KNOWN_OPTIONS = [
  'secret',
  'publicKey',
  'algorithms',
  'issuer',
  'audience',
  'claim',
  'typeClaim',
  'clockToleranceSec',
  'cacheSize',
  'header',
  'realm',
] as const

/** An HTTP field name (RFC 9110 token). */
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
/** Printable ASCII that needs no escaping inside a quoted-string. */
const REALM = /^[\x20\x21\x23-\x5b\x5d-\x7e]{1,128}$/
/** `Bearer <b64token>` (RFC 6750 §2.1); the scheme is case-insensitive (RFC 9110 §11.1). */
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/i

interface CacheEntry {
  readonly identity: Identity
  /** `exp` in seconds, or Infinity. */
  readonly expires: number
  /** `nbf` in seconds, or -Infinity. */
  readonly notBefore: number
}

/**
 * Identifies callers by a JSON Web Token in `Authorization: Bearer <token>`, verified with
 * jsonwebtoken against one key and an explicit list of algorithms. Honours `exp` and `nbf`,
 * refuses unsigned (`alg: none`) tokens, a wrong key or algorithm, a wrong issuer or audience,
 * and a token without a string account id. A verified token is remembered (bounded, least
 * recently used first out) until its `exp`, so a caller's next request skips the signature
 * check.
 *
 * @param options - the key, the algorithms, and the claims to check; see {@link JwtIdentityOptions}
 * @returns a synchronous identify function for `createCreditGate`: an identity, `null` when the
 *   request has no such header, or an `invalid_request`/`invalid_token` rejection
 * @throws {@link CreditConfigError} with `ERR_CREDIT_INVALID_OPTION` when an option is missing,
 *   unknown or invalid, or when the algorithms do not fit the key
 *
 * @example
 * ```ts
 * const identify = fromJwt({
 *   secret: process.env.JWT_SECRET!,
 *   algorithms: ['HS256'],
 *   issuer: 'https://auth.example.com',
 *   audience: 'quant-api',
 * })
 * const creditGate = createCreditGate({ ledger, identify })
 * ```
 */
export function fromJwt(options: JwtIdentityOptions): JwtIdentifyFunction {
  const o = plainOptions(options, KNOWN_OPTIONS, 'fromJwt')
  const algorithms = parseAlgorithms(o['algorithms'])
  const key = parseKey(o['secret'], o['publicKey'], algorithms)
  const issuer = stringList(o['issuer'], 'issuer')
  const audience = stringList(o['audience'], 'audience')
  const claim = claimName(o['claim'] ?? 'sub', 'claim')
  const typeClaim =
    o['typeClaim'] === undefined ? undefined : claimName(o['typeClaim'], 'typeClaim')
  const tolerance = configInteger(o['clockToleranceSec'] ?? 0, 'fromJwt clockToleranceSec', 0, 300)
  const cacheSize = configInteger(o['cacheSize'] ?? 10_000, 'fromJwt cacheSize', 0)
  const headerName = fieldName(o['header'] ?? 'authorization')
  // Node lower-cases the keys of req.headers.
  const header = headerName.toLowerCase()
  const realm = o['realm'] ?? 'api'
  if (typeof realm !== 'string' || !REALM.test(realm)) {
    throw invalid(
      `fromJwt realm must be 1 to 128 printable ASCII characters without '"' or '\\', got ${describe(realm)}`,
    )
  }

  // The casts hold: stringList refuses an empty list.
  const verifyOptions: VerifyOptions = {
    algorithms: [...algorithms],
    clockTolerance: tolerance,
    ...(issuer === undefined ? {} : { issuer: [...issuer] as [string, ...string[]] }),
    ...(audience === undefined ? {} : { audience: [...audience] as [string, ...string[]] }),
  }
  const malformed = rejection('invalid_request', `expected "${headerName}: Bearer <token>"`)
  const noAccount = rejection('invalid_token', `token has no valid "${claim}" claim`)
  const cache = new Map<string, CacheEntry>()

  function identifyJwt(req: IncomingMessage): Identity | IdentityRejection | null {
    const value = req.headers[header]
    if (value === undefined) return null
    const token = typeof value === 'string' ? BEARER.exec(value)?.[1] : undefined
    if (token === undefined) return malformed

    // One clock reading for the cache and for jsonwebtoken, in its unit (whole seconds).
    const now = Math.floor(Date.now() / 1000)
    const cached = cache.get(token)
    if (cached !== undefined) {
      cache.delete(token)
      // The same checks jsonwebtoken makes, so a cached answer is the answer verify would give:
      // the key, algorithms, issuer and audience are fixed for this function.
      if (now < cached.expires + tolerance && cached.notBefore <= now + tolerance) {
        cache.set(token, cached)
        return cached.identity
      }
    }

    let payload: unknown
    try {
      // Not `{ ...verifyOptions, clockTimestamp }`: on V8 11 (Node 20) a spread followed by a
      // property takes microseconds (2-3 µs for one property, 10 µs for the gate's payloads).
      payload = jwt.verify(token, key, Object.assign({ clockTimestamp: now }, verifyOptions))
    } catch (error) {
      return rejectionFor(error)
    }
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
      return NOT_AN_OBJECT
    }
    const claims = payload as Record<string, unknown>
    const accountId = Object.hasOwn(claims, claim) ? claims[claim] : undefined
    if (!isAccountId(accountId)) return noAccount
    const accountType =
      typeClaim !== undefined && Object.hasOwn(claims, typeClaim) ? claims[typeClaim] : undefined
    const identity: Identity = deepFreeze(
      typeof accountType === 'string' && accountType !== ''
        ? { accountId, accountType, claims }
        : { accountId, claims },
    )
    if (cacheSize > 0) {
      cache.set(token, {
        identity,
        // verify has refused a non-numeric exp or nbf by now.
        expires: typeof claims['exp'] === 'number' ? claims['exp'] : Infinity,
        notBefore: typeof claims['nbf'] === 'number' ? claims['nbf'] : -Infinity,
      })
      if (cache.size > cacheSize) {
        const oldest = cache.keys().next()
        if (oldest.done !== true) cache.delete(oldest.value)
      }
    }
    return identity
  }

  return Object.freeze(Object.assign(identifyJwt, { challenge: `Bearer realm="${realm}"` }))
}

function invalid(message: string, cause?: unknown): CreditConfigError {
  return new CreditConfigError(
    'ERR_CREDIT_INVALID_OPTION',
    message,
    cause === undefined ? undefined : { cause },
  )
}

function rejection(error: IdentityRejection['error'], description: string): IdentityRejection {
  return Object.freeze({ rejected: true, error, description })
}

const EXPIRED = rejection('invalid_token', 'token expired')
const NOT_YET_VALID = rejection('invalid_token', 'token not yet valid')
const UNSIGNED = rejection('invalid_token', 'unsigned token refused')
const BAD_SIGNATURE = rejection('invalid_token', 'token signature invalid')
const BAD_ALGORITHM = rejection('invalid_token', 'token algorithm not accepted')
const BAD_ISSUER = rejection('invalid_token', 'token issuer not accepted')
const BAD_AUDIENCE = rejection('invalid_token', 'token audience not accepted')
const NOT_AN_OBJECT = rejection('invalid_token', 'token payload is not a JSON object')
const INVALID = rejection('invalid_token', 'malformed or invalid token')

/**
 * Maps a verify failure to a short description that never echoes the token. jsonwebtoken
 * tells its failures apart only by message; an unrecognised one still rejects, with the
 * generic description.
 */
function rejectionFor(error: unknown): IdentityRejection {
  if (error instanceof jwt.TokenExpiredError) return EXPIRED
  if (error instanceof jwt.NotBeforeError) return NOT_YET_VALID
  const message = error instanceof Error ? error.message : ''
  if (message === 'jwt signature is required') return UNSIGNED
  if (message === 'invalid signature') return BAD_SIGNATURE
  if (message === 'invalid algorithm' || message.includes('key when using')) return BAD_ALGORITHM
  if (message.startsWith('jwt issuer invalid')) return BAD_ISSUER
  if (message.startsWith('jwt audience invalid')) return BAD_AUDIENCE
  return INVALID
}

/** The ledger's own account-id rules, so a token the ledger cannot hold is refused here as a 401. */
function isAccountId(value: unknown): value is string {
  if (typeof value !== 'string') return false
  try {
    checkAccountId(value)
    return true
  } catch {
    return false
  }
}

/**
 * Freezes a verified identity and its claims all the way down: a cached identity is shared by
 * every request bearing the same token, so no handler may change what the next one sees.
 * Iterative, because the depth of a payload is the issuer's choice.
 */
function deepFreeze<T extends object>(root: T): T {
  const pending: unknown[] = [root]
  for (let value = pending.pop(); value !== undefined; value = pending.pop()) {
    if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
      Object.freeze(value)
      for (const child of Object.values(value)) pending.push(child)
    }
  }
  return root
}

function parseAlgorithms(value: unknown): readonly JwtAlgorithm[] {
  const supported = ALGORITHMS.join(', ')
  if (!Array.isArray(value) || value.length === 0) {
    throw invalid(
      `fromJwt needs \`algorithms\`, a non-empty list such as ['HS256'] (one of ${supported}), got ${describe(value)}`,
    )
  }
  for (const algorithm of value as unknown[]) {
    if (typeof algorithm === 'string' && algorithm.toLowerCase() === 'none') {
      throw invalid(
        `fromJwt algorithms must not include "none": unsigned tokens would let anyone claim any account; use one of ${supported}`,
      )
    }
    if (typeof algorithm !== 'string' || !ALGORITHMS.includes(algorithm)) {
      throw invalid(
        `fromJwt algorithms has an unsupported algorithm ${describe(algorithm)}; use one of ${supported}`,
      )
    }
  }
  return Object.freeze([...(value as JwtAlgorithm[])])
}

/**
 * Turns `secret` or `publicKey` into a `KeyObject` once (jsonwebtoken would otherwise parse it on
 * every call), and refuses algorithms the key must not verify: an HMAC algorithm next to a
 * public key lets anyone sign with that public key (algorithm confusion).
 */
function parseKey(
  secret: unknown,
  publicKey: unknown,
  algorithms: readonly JwtAlgorithm[],
): KeyObject {
  if ((secret === undefined) === (publicKey === undefined)) {
    throw invalid(
      `fromJwt needs exactly one of \`secret\` (for ${HMAC_ALGORITHMS.join('/')}) and \`publicKey\` (for RS*, PS*, ES*), got ${secret === undefined ? 'neither' : 'both'}`,
    )
  }
  if (secret !== undefined) {
    if ((typeof secret !== 'string' && !Buffer.isBuffer(secret)) || secret.length === 0) {
      throw invalid(`fromJwt secret must be a non-empty string or Buffer, got ${describe(secret)}`)
    }
    const head = typeof secret === 'string' ? secret.slice(0, 64) : secret.toString('latin1', 0, 64)
    if (head.trimStart().startsWith('-----BEGIN')) {
      throw invalid(
        'fromJwt secret looks like a PEM key: pass it as `publicKey` with RS*, PS* or ES* algorithms; a public key used as an HMAC secret lets anyone sign tokens',
      )
    }
    const asymmetric = algorithms.find((a) => !isHmac(a))
    if (asymmetric !== undefined) {
      throw invalid(
        `fromJwt algorithm "${asymmetric}" needs \`publicKey\`, not \`secret\`; with a secret use only ${HMAC_ALGORITHMS.join(', ')}`,
      )
    }
    return createSecretKey(typeof secret === 'string' ? Buffer.from(secret, 'utf8') : secret)
  }

  let key: KeyObject
  if (publicKey instanceof KeyObject) {
    if (publicKey.type !== 'public') {
      throw invalid(
        `fromJwt publicKey is a ${publicKey.type} KeyObject; pass the public key (createPublicKey(…)), or an HMAC key as \`secret\``,
      )
    }
    key = publicKey
  } else if (typeof publicKey === 'string' || Buffer.isBuffer(publicKey)) {
    // createPublicKey would quietly derive the public half: keep private keys off the API servers.
    if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(publicKey.toString())) {
      throw invalid(
        'fromJwt publicKey is a private key; pass only the public key (spki PEM or certificate): an API server never needs the private half',
      )
    }
    try {
      key = createPublicKey(publicKey)
    } catch (error) {
      throw invalid(
        'fromJwt publicKey is not a PEM public key or certificate; pass the PEM text, a Buffer of it, or a KeyObject',
        error,
      )
    }
  } else {
    throw invalid(
      `fromJwt publicKey must be a PEM string, a Buffer or a KeyObject, got ${describe(publicKey)}`,
    )
  }
  const hmac = algorithms.find(isHmac)
  if (hmac !== undefined) {
    throw invalid(
      `fromJwt algorithm "${hmac}" cannot be used with \`publicKey\`: anyone holding the public key could sign ${hmac} tokens; list only RS*, PS* or ES* algorithms, or pass \`secret\``,
    )
  }
  for (const algorithm of algorithms) {
    if (!fitsKey(algorithm, key)) {
      const curve = key.asymmetricKeyDetails?.namedCurve
      throw invalid(
        `fromJwt algorithm "${algorithm}" does not fit the ${key.asymmetricKeyType ?? 'unknown'}${curve === undefined ? '' : ` ${curve}`} publicKey; list only the algorithms this key verifies`,
      )
    }
  }
  return key
}

function isHmac(algorithm: JwtAlgorithm): boolean {
  return algorithm.startsWith('HS')
}

/** Which algorithms a public key can verify, as jsonwebtoken checks it per token. */
function fitsKey(algorithm: JwtAlgorithm, key: KeyObject): boolean {
  const type = key.asymmetricKeyType
  if (type === 'rsa') return algorithm.startsWith('RS') || algorithm.startsWith('PS')
  if (type === 'rsa-pss') return algorithm.startsWith('PS')
  if (type === 'ec') return EC_CURVES[algorithm] === key.asymmetricKeyDetails?.namedCurve
  // Ed25519 and the rest: jsonwebtoken 9 verifies none of them.
  return false
}

function stringList(value: unknown, what: string): readonly string[] | undefined {
  if (value === undefined) return undefined
  const list: unknown[] = Array.isArray(value) ? value : [value]
  if (list.length === 0 || !list.every((item) => typeof item === 'string' && item !== '')) {
    throw invalid(
      `fromJwt ${what} must be a non-empty string or a non-empty list of them, got ${describe(value)}`,
    )
  }
  return Object.freeze(list as string[])
}

function claimName(value: unknown, what: string): string {
  if (typeof value !== 'string' || value === '') {
    throw invalid(`fromJwt ${what} must be a non-empty claim name, got ${describe(value)}`)
  }
  return value
}

function fieldName(value: unknown): string {
  if (typeof value !== 'string' || !FIELD_NAME.test(value)) {
    throw invalid(
      `fromJwt header must be an HTTP header name such as 'authorization', got ${describe(value)}`,
    )
  }
  return value
}

import { createHmac, createSecretKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { IncomingMessage } from 'node:http'
import { Socket } from 'node:net'

import jwt from 'jsonwebtoken'

import { CreditConfigError } from '../../../src/errors'
import {
  fromJwt,
  type Identity,
  type IdentifyResult,
  type JwtIdentityOptions,
} from '../../../src/identity'

const SECRET = 'test-secret-of-at-least-thirty-two-bytes!'
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
const rsaPublicPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString()
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })

const b64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')

function request(authorization?: string, name = 'authorization'): IncomingMessage {
  const req = new IncomingMessage(new Socket())
  if (authorization !== undefined) req.headers[name] = authorization
  return req
}

function bearer(token: string): IncomingMessage {
  return request(`Bearer ${token}`)
}

function hs256(payload: object, secret: string | Buffer = SECRET, options: jwt.SignOptions = {}) {
  return jwt.sign(payload, secret, { algorithm: 'HS256', ...options })
}

function rs256(payload: object, key: KeyObject = rsa.privateKey, options: jwt.SignOptions = {}) {
  return jwt.sign(payload, key, { algorithm: 'RS256', ...options })
}

/** A token signed by hand, for headers jsonwebtoken refuses to sign. */
function forge(header: object, payload: object, secret: string): string {
  const signingInput = `${b64url(header)}.${b64url(payload)}`
  return `${signingInput}.${createHmac('sha256', secret).update(signingInput).digest('base64url')}`
}

function identityOf(result: IdentifyResult): Identity {
  if (result === null || typeof result !== 'object' || 'rejected' in result) {
    throw new Error(`expected an identity, got ${JSON.stringify(result)}`)
  }
  return result
}

const now = () => Math.floor(Date.now() / 1000)

afterEach(() => {
  jest.restoreAllMocks()
})

describe('fromJwt: reading the header', () => {
  const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'] })
  const token = hs256({ sub: 'u42' })

  it('returns null when the request has no Authorization header', () => {
    expect(identify(request())).toBeNull()
  })

  it.each([
    ['a scheme other than Bearer', `Basic ${Buffer.from('u:p').toString('base64')}`],
    ['the scheme without a token', 'Bearer'],
    ['the scheme and a space without a token', 'Bearer '],
    ['a token without a scheme', token],
    ['a token with a space inside', `Bearer ${token.slice(0, 10)} ${token.slice(10)}`],
    ['a tab instead of a space', `Bearer\t${token}`],
    ['an empty header', ''],
  ])('rejects %s as invalid_request', (_name, header) => {
    expect(identify(request(header))).toEqual({
      rejected: true,
      error: 'invalid_request',
      description: 'expected "authorization: Bearer <token>"',
    })
  })

  it('accepts the scheme in any case and followed by several spaces', () => {
    expect(identify(request(`bearer ${token}`))).toMatchObject({ accountId: 'u42' })
    expect(identify(request(`BEARER    ${token}`))).toMatchObject({ accountId: 'u42' })
  })

  it('reads the header named by the header option', () => {
    const custom = fromJwt({ secret: SECRET, algorithms: ['HS256'], header: 'X-Access-Token' })
    expect(custom(request(`Bearer ${token}`, 'x-access-token'))).toMatchObject({ accountId: 'u42' })
    expect(custom(bearer(token))).toBeNull()
  })

  it('answers synchronously, never with a promise', () => {
    expect(identify(bearer(token))).not.toBeInstanceOf(Promise)
    expect(identify(bearer('x.y.z'))).not.toBeInstanceOf(Promise)
  })
})

describe('fromJwt: valid tokens', () => {
  it('identifies an HS256 token by its sub claim and exposes the claims', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'] })
    const identity = identify(bearer(hs256({ sub: 'u42', scope: 'read' })))
    expect(identity).toEqual({
      accountId: 'u42',
      claims: expect.objectContaining({ sub: 'u42', scope: 'read', iat: expect.any(Number) }),
    })
  })

  it('accepts the secret as a Buffer', () => {
    const identify = fromJwt({ secret: Buffer.from(SECRET), algorithms: ['HS256'] })
    expect(identify(bearer(hs256({ sub: 'u42' })))).toMatchObject({ accountId: 'u42' })
  })

  it('identifies an RS256 token with a PEM public key', () => {
    const identify = fromJwt({ publicKey: rsaPublicPem, algorithms: ['RS256'] })
    expect(identify(bearer(rs256({ sub: 'u42' })))).toMatchObject({ accountId: 'u42' })
  })

  it('identifies an RS256 token with a public KeyObject', () => {
    const identify = fromJwt({ publicKey: rsa.publicKey, algorithms: ['RS256', 'PS256'] })
    expect(identify(bearer(rs256({ sub: 'u42' })))).toMatchObject({ accountId: 'u42' })
  })

  it('identifies an ES256 token with a P-256 public key', () => {
    const identify = fromJwt({ publicKey: ec.publicKey, algorithms: ['ES256'] })
    const token = jwt.sign({ sub: 'u42' }, ec.privateKey, { algorithm: 'ES256' })
    expect(identify(bearer(token))).toMatchObject({ accountId: 'u42' })
  })

  it('reads the account id from the claim option and the account type from typeClaim', () => {
    const identify = fromJwt({
      secret: SECRET,
      algorithms: ['HS256'],
      claim: 'account',
      typeClaim: 'plan',
    })
    const identity = identify(bearer(hs256({ sub: 'user-1', account: 'acct-9', plan: 'guest' })))
    expect(identity).toMatchObject({ accountId: 'acct-9', accountType: 'guest' })
  })

  it('leaves accountType out when the type claim is absent or not a string', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'], typeClaim: 'plan' })
    expect(identify(bearer(hs256({ sub: 'u1' })))).not.toHaveProperty('accountType')
    expect(identify(bearer(hs256({ sub: 'u2', plan: 7 })))).not.toHaveProperty('accountType')
  })

  it('accepts any of several issuers and audiences', () => {
    const identify = fromJwt({
      secret: SECRET,
      algorithms: ['HS256'],
      issuer: ['https://a.example', 'https://b.example'],
      audience: ['api', 'admin'],
    })
    const token = hs256({ sub: 'u42' }, SECRET, { issuer: 'https://b.example', audience: 'api' })
    expect(identify(bearer(token))).toMatchObject({ accountId: 'u42' })
  })

  it('accepts a token within clockToleranceSec of its exp', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'], clockToleranceSec: 30 })
    expect(identify(bearer(hs256({ sub: 'u42', exp: now() - 10 })))).toMatchObject({
      accountId: 'u42',
    })
  })

  it('freezes the identity and its claims, which later requests with the token share', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'] })
    const identity = identityOf(identify(bearer(hs256({ sub: 'u42', roles: { admin: false } }))))
    expect(Object.isFrozen(identity)).toBe(true)
    expect(Object.isFrozen(identity.claims)).toBe(true)
    expect(Object.isFrozen(identity.claims?.['roles'])).toBe(true)
  })

  it('offers a Bearer challenge naming the realm', () => {
    expect(fromJwt({ secret: SECRET, algorithms: ['HS256'] }).challenge).toBe('Bearer realm="api"')
    expect(fromJwt({ secret: SECRET, algorithms: ['HS256'], realm: 'quant' }).challenge).toBe(
      'Bearer realm="quant"',
    )
  })
})

describe('fromJwt: the negative matrix', () => {
  const hsOnly = fromJwt({ secret: SECRET, algorithms: ['HS256'] })
  const rsOnly = fromJwt({ publicKey: rsaPublicPem, algorithms: ['RS256'] })
  const strict = fromJwt({
    secret: SECRET,
    algorithms: ['HS256'],
    issuer: 'https://auth.example',
    audience: 'api',
  })
  const claims = { iss: 'https://auth.example', aud: 'api' }

  it.each([
    ['a malformed token', hsOnly, () => 'not.a.jwt', 'malformed or invalid token'],
    ['a token of two segments', hsOnly, () => 'abc.def', 'malformed or invalid token'],
    [
      'an alg:none token with an empty signature',
      hsOnly,
      () => `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: 'mallory' })}.`,
      'unsigned token refused',
    ],
    [
      'an alg:none token with a signature',
      hsOnly,
      () => `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: 'mallory' })}.c2ln`,
      'token algorithm not accepted',
    ],
    [
      'a token signed with another secret',
      hsOnly,
      () => hs256({ sub: 'mallory' }, 'another-secret-of-at-least-thirty-two!!'),
      'token signature invalid',
    ],
    [
      'an RS256 token given to an HS256-only verifier',
      hsOnly,
      () => rs256({ sub: 'mallory' }),
      'token algorithm not accepted',
    ],
    [
      'an HS256 token signed with the RSA public key given to an RS256 verifier',
      rsOnly,
      () => forge({ alg: 'HS256', typ: 'JWT' }, { sub: 'mallory' }, rsaPublicPem),
      'token algorithm not accepted',
    ],
    [
      'an RS256 token signed by another key',
      rsOnly,
      () =>
        rs256({ sub: 'mallory' }, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey),
      'token signature invalid',
    ],
    ['an expired token', hsOnly, () => hs256({ sub: 'u42', exp: now() - 1 }), 'token expired'],
    [
      'a token before its nbf',
      hsOnly,
      () => hs256({ sub: 'u42', nbf: now() + 60 }),
      'token not yet valid',
    ],
    [
      'a token from another issuer',
      strict,
      () => hs256({ ...claims, sub: 'u42', iss: 'https://evil.example' }),
      'token issuer not accepted',
    ],
    [
      'a token without an issuer',
      strict,
      () => hs256({ sub: 'u42', aud: 'api' }),
      'token issuer not accepted',
    ],
    [
      'a token for another audience',
      strict,
      () => hs256({ ...claims, sub: 'u42', aud: 'other-api' }),
      'token audience not accepted',
    ],
    ['a token without sub', hsOnly, () => hs256({ name: 'u42' }), 'token has no valid "sub" claim'],
    [
      'a token whose sub is a number',
      hsOnly,
      () => hs256({ sub: 42 }),
      'token has no valid "sub" claim',
    ],
    [
      'a token whose sub is empty',
      hsOnly,
      () => hs256({ sub: '' }),
      'token has no valid "sub" claim',
    ],
    [
      'a token whose sub is longer than the ledger accepts',
      hsOnly,
      () => hs256({ sub: 'u'.repeat(257) }),
      'token has no valid "sub" claim',
    ],
    [
      'a token whose sub holds a control character',
      hsOnly,
      () => hs256({ sub: 'u\n42' }),
      'token has no valid "sub" claim',
    ],
    [
      'a token whose payload is not an object',
      hsOnly,
      () => jwt.sign('"u42"', SECRET, { algorithm: 'HS256' }),
      'token payload is not a JSON object',
    ],
  ])('rejects %s as invalid_token', (_name, identify, makeToken, description) => {
    expect(identify(bearer(makeToken()))).toEqual({
      rejected: true,
      error: 'invalid_token',
      description,
    })
  })

  it('does not read the account id from an inherited property', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'], claim: 'toString' })
    expect(identify(bearer(hs256({ sub: 'u42' })))).toMatchObject({ error: 'invalid_token' })
  })
})

describe('fromJwt: the verified-token cache', () => {
  const T = 1_750_000_000
  let clock: number
  let verify: jest.SpyInstance

  beforeEach(() => {
    clock = T * 1000
    jest.spyOn(Date, 'now').mockImplementation(() => clock)
    verify = jest.spyOn(jwt, 'verify')
  })

  it('does not check the signature again for a token it has verified', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'] })
    const token = hs256({ sub: 'u42', exp: T + 60 })
    const first = identify(bearer(token))
    expect(verify).toHaveBeenCalledTimes(1)
    clock += 30_000
    expect(identify(bearer(token))).toBe(first)
    expect(verify).toHaveBeenCalledTimes(1)
  })

  it('refuses a cached token once the clock passes its exp', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'] })
    const token = hs256({ sub: 'u42', exp: T + 60 })
    expect(identify(bearer(token))).toMatchObject({ accountId: 'u42' })
    clock = (T + 59) * 1000 + 999
    expect(identify(bearer(token))).toMatchObject({ accountId: 'u42' })
    expect(verify).toHaveBeenCalledTimes(1)
    clock = (T + 60) * 1000
    expect(identify(bearer(token))).toMatchObject({
      error: 'invalid_token',
      description: 'token expired',
    })
    expect(verify).toHaveBeenCalledTimes(2)
    // The expired entry is gone: the next attempt verifies (and fails) again.
    expect(identify(bearer(token))).toMatchObject({ description: 'token expired' })
    expect(verify).toHaveBeenCalledTimes(3)
  })

  it('serves a cached token until exp plus clockToleranceSec, and no longer', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'], clockToleranceSec: 10 })
    const token = hs256({ sub: 'u42', exp: T + 60 })
    identify(bearer(token))
    clock = (T + 69) * 1000
    expect(identify(bearer(token))).toMatchObject({ accountId: 'u42' })
    expect(verify).toHaveBeenCalledTimes(1)
    clock = (T + 70) * 1000
    expect(identify(bearer(token))).toMatchObject({ description: 'token expired' })
  })

  it('refuses a cached token when the clock moves back before its nbf', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'] })
    const token = hs256({ sub: 'u42', nbf: T })
    expect(identify(bearer(token))).toMatchObject({ accountId: 'u42' })
    clock = (T - 5) * 1000
    expect(identify(bearer(token))).toMatchObject({ description: 'token not yet valid' })
    expect(verify).toHaveBeenCalledTimes(2)
  })

  it('caches a token without exp', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'] })
    const token = hs256({ sub: 'u42' })
    identify(bearer(token))
    clock += 365 * 24 * 3600 * 1000
    expect(identify(bearer(token))).toMatchObject({ accountId: 'u42' })
    expect(verify).toHaveBeenCalledTimes(1)
  })

  it('does not cache a rejection: a token refused before its nbf passes once it is valid', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'] })
    const token = hs256({ sub: 'u42', nbf: T + 10 })
    expect(identify(bearer(token))).toMatchObject({ description: 'token not yet valid' })
    clock = (T + 10) * 1000
    expect(identify(bearer(token))).toMatchObject({ accountId: 'u42' })
  })

  it('does not cache a token that failed verification', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'] })
    const forged = hs256({ sub: 'mallory' }, 'another-secret-of-at-least-thirty-two!!')
    identify(bearer(forged))
    expect(identify(bearer(forged))).toMatchObject({ description: 'token signature invalid' })
    expect(verify).toHaveBeenCalledTimes(2)
  })

  it('holds at most cacheSize tokens, forgetting the least recently used first', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'], cacheSize: 3 })
    const tokens = Array.from({ length: 10 }, (_, i) => hs256({ sub: `u${i}` }))
    for (const token of tokens) identify(bearer(token))
    expect(verify).toHaveBeenCalledTimes(10)

    // The three most recent are held; touching u7 makes it the most recent.
    for (const i of [7, 8, 9, 7]) identify(bearer(tokens[i]!))
    expect(verify).toHaveBeenCalledTimes(10)

    // u6 was evicted; verifying it again evicts the least recently used, u8.
    identify(bearer(tokens[6]!))
    expect(verify).toHaveBeenCalledTimes(11)
    for (const i of [9, 7, 6]) identify(bearer(tokens[i]!))
    expect(verify).toHaveBeenCalledTimes(11)
    identify(bearer(tokens[8]!))
    expect(verify).toHaveBeenCalledTimes(12)
  })

  it('verifies every time when cacheSize is 0', () => {
    const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'], cacheSize: 0 })
    const token = hs256({ sub: 'u42' })
    identify(bearer(token))
    identify(bearer(token))
    expect(verify).toHaveBeenCalledTimes(2)
  })
})

describe('fromJwt: options', () => {
  function configError(options: unknown): CreditConfigError {
    try {
      fromJwt(options as JwtIdentityOptions)
    } catch (error) {
      expect(error).toBeInstanceOf(CreditConfigError)
      expect((error as CreditConfigError).code).toBe('ERR_CREDIT_INVALID_OPTION')
      return error as CreditConfigError
    }
    throw new Error('fromJwt did not throw')
  }

  it('refuses an unknown option with a did-you-mean hint', () => {
    expect(configError({ secret: SECRET, algorithms: ['HS256'], audiance: 'api' }).message).toMatch(
      'fromJwt has no option "audiance"; did you mean "audience"?',
    )
  })

  it('treats an undefined option as omitted', () => {
    expect(() =>
      fromJwt({
        secret: SECRET,
        algorithms: ['HS256'],
        issuer: undefined,
      } as unknown as JwtIdentityOptions),
    ).not.toThrow()
  })

  it.each([
    ['missing', undefined],
    ['empty', []],
    ['a string', 'HS256'],
  ])('refuses algorithms when %s', (_name, algorithms) => {
    expect(configError({ secret: SECRET, algorithms }).message).toMatch(
      /fromJwt needs `algorithms`, a non-empty list/,
    )
  })

  it.each([['none'], ['None']])('refuses algorithms containing %s', (none) => {
    expect(configError({ secret: SECRET, algorithms: ['HS256', none] }).message).toMatch(
      /must not include "none"/,
    )
  })

  it('refuses an algorithm jsonwebtoken does not support, listing the supported ones', () => {
    expect(configError({ secret: SECRET, algorithms: ['HS257'] }).message).toMatch(
      /unsupported algorithm "HS257"; use one of HS256, HS384/,
    )
  })

  it('refuses both secret and publicKey', () => {
    expect(
      configError({ secret: SECRET, publicKey: rsaPublicPem, algorithms: ['HS256'] }).message,
    ).toMatch(/exactly one of `secret` .* and `publicKey` .*, got both/)
  })

  it('refuses neither secret nor publicKey', () => {
    expect(configError({ algorithms: ['HS256'] }).message).toMatch(/exactly one .* got neither/)
  })

  it('refuses an HMAC algorithm with a publicKey', () => {
    expect(
      configError({ publicKey: rsaPublicPem, algorithms: ['RS256', 'HS256'] }).message,
    ).toMatch(/"HS256" cannot be used with `publicKey`/)
  })

  it('refuses an asymmetric algorithm with a secret', () => {
    expect(configError({ secret: SECRET, algorithms: ['HS256', 'RS256'] }).message).toMatch(
      /"RS256" needs `publicKey`, not `secret`/,
    )
  })

  it('refuses a PEM key passed as secret', () => {
    expect(configError({ secret: rsaPublicPem, algorithms: ['HS256'] }).message).toMatch(
      /secret looks like a PEM key/,
    )
  })

  it('refuses an empty secret', () => {
    expect(configError({ secret: '', algorithms: ['HS256'] }).message).toMatch(
      /secret must be a non-empty string or Buffer/,
    )
  })

  it('refuses a publicKey that is not a public key', () => {
    const error = configError({ publicKey: 'not a key', algorithms: ['RS256'] })
    expect(error.message).toMatch(/publicKey is not a PEM public key/)
    expect(error.cause).toHaveProperty('message')
  })

  it('refuses a secret KeyObject as publicKey', () => {
    expect(
      configError({ publicKey: createSecretKey(Buffer.from(SECRET)), algorithms: ['RS256'] })
        .message,
    ).toMatch(/publicKey is a secret KeyObject/)
  })

  it('refuses a publicKey that is neither a string, a Buffer nor a KeyObject', () => {
    expect(configError({ publicKey: 42, algorithms: ['RS256'] }).message).toMatch(
      /publicKey must be a PEM string, a Buffer or a KeyObject, got 42/,
    )
  })

  it('refuses a private key as publicKey, as PEM or as KeyObject', () => {
    const privatePem = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
    expect(configError({ publicKey: privatePem, algorithms: ['RS256'] }).message).toMatch(
      /publicKey is a private key/,
    )
    expect(configError({ publicKey: rsa.privateKey, algorithms: ['RS256'] }).message).toMatch(
      /publicKey is a private KeyObject/,
    )
  })

  it('refuses a key type jsonwebtoken cannot verify', () => {
    const ed = generateKeyPairSync('ed25519')
    expect(configError({ publicKey: ed.publicKey, algorithms: ['ES256'] }).message).toMatch(
      /"ES256" does not fit the ed25519 publicKey/,
    )
  })

  it('refuses an algorithm that does not fit the key', () => {
    expect(configError({ publicKey: ec.publicKey, algorithms: ['ES384'] }).message).toMatch(
      /"ES384" does not fit the ec prime256v1 publicKey/,
    )
    expect(configError({ publicKey: rsa.publicKey, algorithms: ['ES256'] }).message).toMatch(
      /"ES256" does not fit the rsa publicKey/,
    )
  })

  it.each([
    ['issuer', ''],
    ['issuer', []],
    ['audience', ['api', 3]],
    ['claim', ''],
    ['typeClaim', 5],
    ['clockToleranceSec', -1],
    ['clockToleranceSec', 301],
    ['clockToleranceSec', 1.5],
    ['cacheSize', -1],
    ['cacheSize', Infinity],
    ['header', 'bad header'],
    ['realm', 'say "hi"'],
    ['realm', ''],
  ])('refuses %s = %p, naming the option', (option, value) => {
    expect(configError({ secret: SECRET, algorithms: ['HS256'], [option]: value }).message).toMatch(
      `fromJwt ${option}`,
    )
  })

  it('refuses options that are not an object', () => {
    expect(configError(null).message).toMatch('fromJwt options must be an object')
  })
})

import { generateKeyPairSync } from 'node:crypto'

import type { Express, RequestHandler } from 'express'
import type { Redis } from 'ioredis'
import jwt from 'jsonwebtoken'
import request from 'supertest'

import { createCreditGate, fromApiKey, fromJwt, getCredits } from '../../../src/index'
import {
  EXPRESS_VERSIONS,
  EventLog,
  RecordingLedger,
  type ExpressFactory,
} from '../../helpers/gate'
import { makeLedger } from '../../helpers/redis'

const SECRET = 'a-test-secret-of-at-least-32-bytes!!'
const OTHER_SECRET = 'another-secret-of-at-least-32-bytes!'
const ISSUER = 'https://auth.example.test'
const AUDIENCE = 'quant-api'
const NOW = () => Math.floor(Date.now() / 1000)

function sign(
  claims: Record<string, unknown>,
  options: jwt.SignOptions = {},
  key: jwt.Secret = SECRET,
): string {
  return jwt.sign(claims, key, { algorithm: 'HS256', ...options })
}

/** A well-formed token for `sub`, valid for the app below. */
const valid = (sub: string, extra: Record<string, unknown> = {}): string =>
  sign({ sub, iss: ISSUER, aud: AUDIENCE, exp: NOW() + 300, ...extra })

const b64url = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url')

const { privateKey: rsaPrivate } = generateKeyPairSync('rsa', { modulusLength: 2048 })

/** The negative matrix: each token is refused with 401, and nothing is reserved. */
const BAD_TOKENS: readonly (readonly [string, () => string])[] = [
  ['an expired token', () => sign({ sub: 'alice', iss: ISSUER, aud: AUDIENCE, exp: NOW() - 60 })],
  ['a token not valid yet (nbf)', () => valid('alice', { nbf: NOW() + 600 })],
  [
    'an unsigned token (alg: none)',
    () =>
      `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: 'alice', iss: ISSUER, aud: AUDIENCE, exp: NOW() + 300 })}.`,
  ],
  [
    'a token signed with the wrong key',
    () => sign({ sub: 'alice', iss: ISSUER, aud: AUDIENCE, exp: NOW() + 300 }, {}, OTHER_SECRET),
  ],
  [
    'a token signed with an algorithm not allowed (HS512)',
    () =>
      sign({ sub: 'alice', iss: ISSUER, aud: AUDIENCE, exp: NOW() + 300 }, { algorithm: 'HS512' }),
  ],
  [
    'a token signed with an RSA key (algorithm confusion)',
    () =>
      jwt.sign({ sub: 'alice', iss: ISSUER, aud: AUDIENCE, exp: NOW() + 300 }, rsaPrivate, {
        algorithm: 'RS256',
      }),
  ],
  ['a token for another audience', () => valid('alice', { aud: 'other-api' })],
  ['a token from another issuer', () => valid('alice', { iss: 'https://evil.example' })],
  ['a token without sub', () => sign({ iss: ISSUER, aud: AUDIENCE, exp: NOW() + 300 })],
  ['a token whose sub is not a string', () => valid('alice', { sub: 42 })],
  [
    'a token whose payload was altered after signing',
    () => {
      const [header, , signature] = valid('alice').split('.')
      return `${header}.${b64url({ sub: 'bob', iss: ISSUER, aud: AUDIENCE, exp: NOW() + 300 })}.${signature}`
    },
  ],
  ['a string that is no token', () => 'not-a-token'],
]

const clients: Redis[] = []
afterAll(async () => {
  await Promise.all(clients.map((c) => c.quit()))
})

const ok: RequestHandler = (req, res) => {
  res.json({ account: getCredits(req)?.accountId })
}

async function setup(factory: ExpressFactory, openAccounts?: string) {
  const made = makeLedger('redis')
  clients.push(made.redis)
  await made.ledger.openAccount('alice', { type: 'registered' })
  await made.ledger.openAccount('bob', { type: 'registered' })
  const ledger = new RecordingLedger(made.ledger)
  const identify = fromJwt({
    secret: SECRET,
    algorithms: ['HS256'],
    issuer: ISSUER,
    audience: AUDIENCE,
    typeClaim: 'account_type',
  })
  const gate = createCreditGate({
    ledger,
    identify,
    ...(openAccounts === undefined ? {} : { openAccounts }),
  })
  const log = new EventLog(gate)
  const handler = jest.fn(ok)
  const app: Express = factory()
  app.get('/var', gate('pro'), handler)
  return { redisLedger: made.ledger, ledger, log, handler, app }
}

describe.each(EXPRESS_VERSIONS)('identity through the middleware on %s', (_name, factory) => {
  describe('fromJwt', () => {
    it('charges the account named by a valid token', async () => {
      const { app, log, redisLedger } = await setup(factory)
      const res = await request(app)
        .get('/var')
        .set('Authorization', `Bearer ${valid('alice')}`)
      expect(res.status).toBe(200)
      expect(res.body).toEqual({ account: 'alice' })
      await log.settled(1)
      expect(await redisLedger.balance('alice')).toMatchObject({ available: 345 })
    })

    it('answers 401 with the bare challenge when no token is sent', async () => {
      const { app, ledger, handler } = await setup(factory)
      const res = await request(app).get('/var')
      expect(res.status).toBe(401)
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api"')
      expect(handler).not.toHaveBeenCalled()
      expect(ledger.calls).toEqual([])
    })

    it('answers 401 invalid_request for an Authorization header that is not a Bearer token', async () => {
      const { app, ledger } = await setup(factory)
      const res = await request(app).get('/var').set('Authorization', 'Basic YWxpY2U6cHc=')
      expect(res.status).toBe(401)
      expect(res.headers['www-authenticate']).toMatch(
        /^Bearer realm="api", error="invalid_request"/,
      )
      expect(ledger.calls).toEqual([])
    })

    it.each(BAD_TOKENS)(
      'answers 401 invalid_token to %s, without running the handler or touching the ledger',
      async (_what, token) => {
        const { app, ledger, handler, redisLedger } = await setup(factory)
        const res = await request(app).get('/var').set('Authorization', `Bearer ${token()}`)
        expect(res.status).toBe(401)
        expect(res.headers['www-authenticate']).toMatch(
          /^Bearer realm="api", error="invalid_token", error_description="[^"]+"$/,
        )
        expect(res.body).toMatchObject({ success: false, error: 'unauthorized' })
        expect(handler).not.toHaveBeenCalled()
        expect(ledger.calls).toEqual([])
        expect(await redisLedger.balance('alice')).toMatchObject({ available: 350, pending: 0 })
      },
    )

    it("charges only the token's account when a forged X-User-Id (or any other header) names another", async () => {
      const { app, log, redisLedger, ledger } = await setup(factory)
      const res = await request(app)
        .get('/var')
        .set('Authorization', `Bearer ${valid('alice')}`)
        .set('X-User-Id', 'bob')
        .set('X-Account-Id', 'bob')
        .set('X-Forwarded-User', 'bob')
      expect(res.status).toBe(200)
      expect(res.body).toEqual({ account: 'alice' })
      await log.settled(1)
      expect(ledger.calls.map((c) => c.args[0])).toEqual([
        'alice',
        expect.stringMatching(/^alice:/),
      ])
      expect(await redisLedger.balance('alice')).toMatchObject({ available: 345 })
      expect(await redisLedger.balance('bob')).toMatchObject({ available: 350, pending: 0 })
    })

    it('opens an unknown account as the type the token carries, on first sight', async () => {
      const { app, log, redisLedger } = await setup(factory, 'registered')
      const res = await request(app)
        .get('/var')
        .set('Authorization', `Bearer ${valid('carol', { account_type: 'guest' })}`)
      expect(res.status).toBe(200)
      expect(res.headers['x-credits-remaining']).toBe('45')
      await log.settled(1)
      expect(await redisLedger.balance('carol')).toMatchObject({
        accountType: 'guest',
        available: 45,
      })
    })
  })

  describe('fromApiKey', () => {
    async function apiKeyApp(lookup: (key: string) => unknown) {
      const made = makeLedger('redis')
      clients.push(made.redis)
      await made.ledger.openAccount('alice', { type: 'registered' })
      const ledger = new RecordingLedger(made.ledger)
      const gate = createCreditGate({
        ledger,
        identify: fromApiKey({ lookup: lookup as Parameters<typeof fromApiKey>[0]['lookup'] }),
      })
      const log = new EventLog(gate)
      const app = factory()
      app.get('/var', gate('basic'), ok)
      return { app, ledger, log, redisLedger: made.ledger }
    }

    it.each([
      ['a synchronous lookup', (key: string) => (key === 'k-alice' ? 'alice' : null)],
      [
        'an asynchronous lookup',
        (key: string) => Promise.resolve(key === 'k-alice' ? 'alice' : null),
      ],
    ])(
      'charges the key owner with %s, and refuses unknown or missing keys with 401',
      async (_what, lookup) => {
        const { app, ledger, log, redisLedger } = await apiKeyApp(lookup)
        const res = await request(app).get('/var').set('X-API-Key', 'k-alice')
        expect(res.status).toBe(200)
        expect(res.body).toEqual({ account: 'alice' })
        await log.settled(1)
        expect(await redisLedger.balance('alice')).toMatchObject({ available: 349 })

        const unknown = await request(app).get('/var').set('X-API-Key', 'k-mallory')
        expect(unknown.status).toBe(401)
        expect(unknown.headers['www-authenticate']).toBe(
          'ApiKey header="X-API-Key", error="invalid_token", error_description="unknown API key"',
        )
        const missing = await request(app).get('/var')
        expect(missing.status).toBe(401)
        expect(missing.headers['www-authenticate']).toBe('ApiKey header="X-API-Key"')
        expect(ledger.count('reserve')).toBe(1)
      },
    )
  })
})

import express from 'express'
import fc from 'fast-check'
import jwt from 'jsonwebtoken'
import request from 'supertest'

import { createCreditGate, creditRoutes, fromJwt } from '../../src/index'
import { makeLedger } from '../helpers/redis'
import { snapshot } from '../helpers/snapshot'

const SECRET = 'fuzz-secret-fuzz-secret-fuzz-secret'

/**
 * Every route fuzzed with invalid input over HTTP: the caller's routes with arbitrary query
 * strings, and a gated route with arbitrary credentials. The answers are 4xx (or 200 for a
 * query that happens to be valid), never a 5xx, and nothing is written.
 */
describe('routes fuzzed with invalid input', () => {
  const seed = Number(process.env['FC_SEED'] ?? Date.now() % 2 ** 31)
  const runs = Number(process.env['CREDITGATE_FUZZ_RUNS'] ?? 120)
  const { ledger, redis, prefix } = makeLedger('redis')
  const identify = fromJwt({ secret: SECRET, algorithms: ['HS256'] })
  const creditGate = createCreditGate({ ledger, identify })
  let handlerRuns = 0
  const app = express()
  app.use('/me', creditRoutes({ ledger, identify }))
  app.get('/paid', creditGate('pro'), (_req, res) => {
    handlerRuns += 1
    res.json({ ok: true })
  })
  const token = jwt.sign({ sub: 'fuzzed' }, SECRET, { algorithm: 'HS256', expiresIn: '1h' })

  beforeAll(async () => {
    console.log(`routes fuzz: seed ${seed} (FC_SEED=${seed} to replay), ${runs} runs per property`)
    await ledger.openAccount('fuzzed', { type: 'registered' })
  })
  afterAll(async () => {
    await redis.quit()
  })

  const queryPart = fc.oneof(
    fc.string(),
    fc.string({ unit: 'grapheme' }),
    fc.constantFrom(
      '',
      '0',
      '-1',
      '1e3',
      'NaN',
      'Infinity',
      '9'.repeat(40),
      '2026-13-45',
      'hour',
      'DAY',
      '%00',
      '%',
      '&&',
      '==',
    ),
  )
  const query = fc.array(
    fc.tuple(
      fc.oneof(
        fc.constantFrom('from', 'to', 'granularity', 'endpoint', 'limit', 'cursor', 'x'),
        fc.string(),
      ),
      queryPart,
    ),
    { maxLength: 6 },
  )

  it('answers the caller routes with 200 or 400, never 5xx, and writes nothing', async () => {
    const before = await snapshot(redis, prefix)
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('/me/credits', '/me/usage', '/me/transactions'),
        query,
        async (path, pairs) => {
          const qs = pairs
            .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
            .join('&')
          const res = await request(app)
            .get(`${path}?${qs}`)
            .set('authorization', `Bearer ${token}`)
          expect([200, 400]).toContain(res.status)
          if (res.status === 400)
            expect(res.body).toMatchObject({ success: false, error: 'bad_request' })
        },
      ),
      { seed, numRuns: runs },
    )
    expect(await snapshot(redis, prefix)).toEqual(before)
  })

  it('answers a gated route with 401 for any invalid credential, never 5xx, never runs the handler, writes nothing', async () => {
    const before = await snapshot(redis, prefix)
    const credential = fc.oneof(
      fc.string(),
      fc.string().map((s) => `Bearer ${s}`),
      fc.base64String().map((s) => `Bearer ${s}.${s}.${s}`),
      fc
        .jsonValue()
        .map(
          (payload) =>
            `Bearer ${jwt.sign({ payload }, 'another-secret-another-secret', { algorithm: 'HS256' })}`,
        ),
      fc
        .jsonValue()
        .map(
          (sub) =>
            `Bearer ${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub })).toString('base64url')}.`,
        ),
    )
    await fc.assert(
      fc.asyncProperty(credential, fc.string(), async (authorization, forged) => {
        const req = request(app)
          .get('/paid')
          .set('x-user-id', 'fuzzed')
          .set('x-account-id', forged.replace(/[^\x20-\x7e]/g, ''))
        // Header values must be valid HTTP: strip what Node itself would refuse to send.
        const header = authorization.replace(/[^\x20-\x7e]/g, '')
        if (header !== '') void req.set('authorization', header)
        const res = await req
        expect(res.status).toBe(401)
        expect(res.headers['www-authenticate']).toMatch(/^Bearer/)
      }),
      { seed, numRuns: runs },
    )
    expect(handlerRuns).toBe(0)
    expect(await snapshot(redis, prefix)).toEqual(before)
  })
})

import type { Express, NextFunction, Request, Response } from 'express'
import request from 'supertest'

import {
  CreditConfigError,
  CreditStoreError,
  creditRoutes,
  type CreditRoutesLedger,
} from '../../src/index'
import {
  ACCOUNT_HEADER,
  EXPRESS_VERSIONS,
  identifyByHeader,
  type ExpressFactory,
} from '../helpers/gate'
import { makeLedger } from '../helpers/redis'

const DAY = 24 * 60 * 60 * 1000

const { ledger, redis } = makeLedger('redis')
afterAll(async () => {
  await redis.quit()
})

async function spend(id: string, cost: number, endpoint: string, release = false): Promise<void> {
  const hold = await ledger.reserve(id, cost, { endpoint })
  if (hold.status !== 'held') throw new Error('not held')
  if (release) await ledger.release(hold.holdId, { latencyMs: 10 })
  else await ledger.commit(hold.holdId, { latencyMs: 30 })
}

beforeAll(async () => {
  await ledger.openAccount('alice', { type: 'registered' })
  await ledger.grant('alice', { amount: 100, source: 'purchase', idempotencyKey: 'alice-buy' })
  await ledger.subscribe('alice', {
    plan: 'basic',
    monthlyCredits: 500,
    idempotencyKey: 'alice-sub',
  })
  await spend('alice', 5, '/quantlib/risk/var')
  await spend('alice', 2, '/quantlib/price/:id')
  await spend('alice', 2, '/quantlib/price/:id', true)
  await ledger.openAccount('bob', { type: 'guest' })
})

type Mode = 'built-in handler' | 'router option'
const MODES: Mode[] = ['built-in handler', 'router option']

function makeApp(
  express: ExpressFactory,
  mode: Mode,
  routesLedger: CreditRoutesLedger = ledger,
  identify = identifyByHeader(),
): Express {
  const app = express()
  const routes =
    mode === 'router option'
      ? creditRoutes({ ledger: routesLedger, identify, router: express.Router })
      : creditRoutes({ ledger: routesLedger, identify })
  app.use('/me', routes)
  app.use('/me', (_req: Request, res: Response) => {
    res.status(404).json({ fellThrough: true })
  })
  // Four parameters make it an error handler; the last is unused.
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  app.use((error: Error, _req: Request, res: Response, _next: NextFunction) => {
    res.status(500).json({ hostHandler: error.message })
  })
  return app
}

describe.each(EXPRESS_VERSIONS)('creditRoutes on %s', (_name, express) => {
  describe.each(MODES)('as a %s', (mode) => {
    const app = makeApp(express, mode)
    const get = (path: string, account: string | null = 'alice') => {
      const r = request(app).get(path)
      return account === null ? r : r.set(ACCOUNT_HEADER, account)
    }

    it('GET /credits answers the balance, grants and subscription in the envelope', async () => {
      const res = await get('/me/credits').expect(200)
      expect(res.headers['content-type']).toMatch(/^application\/json/)
      expect(res.headers['cache-control']).toBe('private, no-store')
      expect(res.body).toMatchObject({
        success: true,
        data: {
          accountId: 'alice',
          accountType: 'registered',
          unlimited: false,
          balance: 943,
          available: 943,
          pending: 0,
        },
      })
      expect(res.body.data.grants.map((g: { source: string }) => g.source)).toEqual([
        'subscription',
        'purchase',
        'signup',
      ])
      expect(res.body.data.grants[0].expiresAt).toMatch(/^\d{4}-\d{2}-\d{2}T.*Z$/)
      expect(res.body.data.subscription).toMatchObject({
        plan: 'basic',
        monthlyCredits: 500,
        rollover: false,
        endsAt: null,
      })
      expect(Date.parse(res.body.data.subscription.renewsAt)).toBeGreaterThan(Date.now())
      // Trailing slash and HEAD, as an Express route would.
      await get('/me/credits/').expect(200)
      const head = await request(app).head('/me/credits').set(ACCOUNT_HEADER, 'alice').expect(200)
      expect(head.text).toBeUndefined()
    })

    it('answers 401 without a credential and with a bad one, with the challenge', async () => {
      const missing = await get('/me/credits', null).expect(401)
      expect(missing.headers['www-authenticate']).toBe('Bearer')
      expect(missing.body).toEqual({
        success: false,
        error: 'unauthorized',
        message: 'Authentication required',
        detail: 'Send credentials (Bearer)',
      })
      const bad = await get('/me/usage', 'rejected').expect(401)
      expect(bad.headers['www-authenticate']).toBe(
        'Bearer error="invalid_token", error_description="The token expired"',
      )
      expect(bad.body).toMatchObject({
        success: false,
        message: 'Invalid credentials',
        detail: 'The token expired',
      })
    })

    it('answers 404 for a caller without an account', async () => {
      for (const path of ['/me/credits', '/me/usage', '/me/transactions']) {
        const res = await get(path, 'nobody').expect(404)
        expect(res.body).toMatchObject({
          success: false,
          error: 'account_not_found',
          message: 'Account not found',
        })
      }
    })

    it('GET /transactions pages newest first with a cursor', async () => {
      const first = await get('/me/transactions?limit=2').expect(200)
      expect(first.body.success).toBe(true)
      expect(first.body.data.transactions.map((t: { seq: number }) => t.seq)).toEqual([5, 4])
      expect(first.body.data.transactions[0]).toMatchObject({
        kind: 'charge',
        amount: -2,
        source: 'usage',
        endpoint: '/quantlib/price/:id',
      })
      expect(first.body.data.transactions[0].time).toMatch(/Z$/)
      const second = await get(
        `/me/transactions?limit=2&cursor=${encodeURIComponent(first.body.data.nextCursor as string)}`,
      ).expect(200)
      expect(second.body.data.transactions.map((t: { seq: number }) => t.seq)).toEqual([3, 2])
      const last = await get(
        `/me/transactions?cursor=${encodeURIComponent(second.body.data.nextCursor as string)}`,
      ).expect(200)
      expect(last.body.data).toMatchObject({ nextCursor: null })
      expect(last.body.data.transactions.map((t: { seq: number }) => t.seq)).toEqual([1])
    })

    it('GET /usage answers a summary, a daily series of the last 30 days and a per-endpoint breakdown', async () => {
      const res = await get('/me/usage').expect(200)
      const data = res.body.data
      expect(data).toMatchObject({
        granularity: 'day',
        endpoint: null,
        summary: { requests: 3, credits: 7, refunds: 1, avgLatencyMs: 23.3 },
        truncated: false,
      })
      expect(data.series.length).toBeGreaterThanOrEqual(30)
      expect(data.series.at(-1)).toMatchObject({ requests: 3 })
      expect(data.endpoints).toEqual([
        { endpoint: '/quantlib/price/:id', requests: 2, credits: 2, refunds: 1, avgLatencyMs: 20 },
        { endpoint: '/quantlib/risk/var', requests: 1, credits: 5, refunds: 0, avgLatencyMs: 30 },
      ])
      const now = Date.now()
      const hourly = await get(
        `/me/usage?granularity=hour&from=${new Date(now - 3 * 3_600_000).toISOString()}&to=${now + 1}&endpoint=${encodeURIComponent('/quantlib/risk/var')}`,
      ).expect(200)
      expect(hourly.body.data.series).toHaveLength(4)
      expect(hourly.body.data.summary).toMatchObject({ requests: 1, credits: 5 })
      const monthly = await get(`/me/usage?granularity=month&from=2020-01-01`).expect(200)
      expect(monthly.body.data.summary.requests).toBe(3)
    })

    it.each([
      ['/me/usage?granularity=week', /granularity/],
      ['/me/usage?from=yesterday', /"from"/],
      ['/me/usage?from=2026-02-30T99:00:00Z', /"from"/],
      ['/me/usage?to=-5', /"to"/],
      ['/me/usage?from=2026-01-02&to=2026-01-01', /after/],
      ['/me/usage?granularity=hour&from=2020-01-01&to=2026-01-01', /more than 1000/],
      ['/me/usage?endpoint=a|b', /endpoint/],
      ['/me/usage?granularty=day', /did you mean "granularity"/],
      ['/me/usage?from=1&from=2', /more than once/],
      ['/me/transactions?limit=0', /limit/],
      ['/me/transactions?limit=501', /limit/],
      ['/me/transactions?limit=ten', /limit/],
      ['/me/transactions?cursor=nope', /cursor/],
      ['/me/credits?verbose=1', /Unknown query parameter "verbose"/],
    ])('answers 400 for %s', async (path, detail) => {
      const res = await get(path).expect(400)
      expect(res.body).toMatchObject({
        success: false,
        error: 'bad_request',
        message: 'Invalid query parameter',
      })
      expect(res.body.detail).toMatch(detail)
      expect(res.body.detail).not.toMatch(/README/)
    })

    it('answers 503 with Retry-After when the ledger cannot be reached', async () => {
      const down: CreditRoutesLedger = {
        balance: () => Promise.reject(new CreditStoreError('ERR_CREDIT_STORE_UNAVAILABLE', 'down')),
        usage: () => Promise.reject(new CreditStoreError('ERR_CREDIT_STORE_UNAVAILABLE', 'down')),
        transactions: () =>
          Promise.reject(new CreditStoreError('ERR_CREDIT_STORE_UNAVAILABLE', 'down')),
      }
      const broken = makeApp(express, mode, down)
      for (const path of ['/me/credits', '/me/usage', '/me/transactions']) {
        const res = await request(broken).get(path).set(ACCOUNT_HEADER, 'alice').expect(503)
        expect(res.headers['retry-after']).toBe('5')
        expect(res.body).toMatchObject({
          success: false,
          error: 'ledger_unavailable',
          message: 'Credit ledger unavailable',
        })
      }
    })

    it('passes other methods and paths on, and a throwing identify or a bug to the host error handler', async () => {
      expect(
        (await request(app).post('/me/credits').set(ACCOUNT_HEADER, 'alice').expect(404)).body,
      ).toEqual({
        fellThrough: true,
      })
      expect((await get('/me/other').expect(404)).body).toEqual({ fellThrough: true })
      const throwing = makeApp(express, mode, ledger, () => {
        throw new Error('jwks down')
      })
      expect((await request(throwing).get('/me/credits').expect(500)).body).toEqual({
        hostHandler: 'jwks down',
      })
      // A credential naming no valid account is a bad credential, as the gate answers it.
      const asyncBad = makeApp(express, mode, ledger, () => Promise.resolve({ accountId: '' }))
      expect((await request(asyncBad).get('/me/credits').expect(401)).body).toMatchObject({
        error: 'unauthorized',
      })
      const buggy: CreditRoutesLedger = {
        balance: () => Promise.reject(new TypeError('boom')),
        usage: (id, o) => ledger.usage(id, o),
        transactions: (id, o) => ledger.transactions(id, o),
      }
      expect(
        (
          await request(makeApp(express, mode, buggy))
            .get('/me/credits')
            .set(ACCOUNT_HEADER, 'alice')
            .expect(500)
        ).body,
      ).toEqual({ hostHandler: 'boom' })
    })

    it('reads a guest with expiring signup credits', async () => {
      const res = await get('/me/credits', 'bob').expect(200)
      expect(res.body.data).toMatchObject({ accountType: 'guest', balance: 50, subscription: null })
      expect(Date.parse(res.body.data.grants[0].expiresAt as string)).toBeGreaterThan(
        Date.now() + DAY - 60_000,
      )
    })
  })
})

describe('creditRoutes options', () => {
  it.each([
    ['no ledger', { identify: identifyByHeader() }],
    [
      'a ledger without usage',
      { ledger: { balance: () => null, transactions: () => null }, identify: identifyByHeader() },
    ],
    ['no identify', { ledger }],
    ['a router that is not a function', { ledger, identify: identifyByHeader(), router: {} }],
    ['a retryAfterSeconds of 0', { ledger, identify: identifyByHeader(), retryAfterSeconds: 0 }],
    ['a typo', { ledger, identify: identifyByHeader(), retryAfter: 5 }],
    [
      'a bad challenge',
      { ledger, identify: Object.assign(identifyByHeader(), { challenge: ' ' }) },
    ],
  ])('refuses %s at construction', (_, options) => {
    expect(() => creditRoutes(options as never)).toThrow(CreditConfigError)
  })
})

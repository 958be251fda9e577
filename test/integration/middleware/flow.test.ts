import type { IncomingMessage } from 'node:http'
import { inspect } from 'node:util'

import type { Request, Response } from 'express'
import request from 'supertest'

import {
  CreditArgumentError,
  RedisLedger,
  createCreditGate,
  getCredits,
  type CreditInfo,
} from '../../../src/index'
import type { IdentifyFunction } from '../../../src/identity/types'
import {
  ACCOUNT_HEADER,
  EXPRESS_VERSIONS,
  appWith,
  ok,
  EventLog,
  RecordingLedger,
  deferred,
  identifyByHeader,
  redisGates,
} from '../../helpers/gate'
import { makeLedger, realRedis, uniquePrefix } from '../../helpers/redis'
import { countingClient, snapshot } from '../../helpers/snapshot'

/** Ledger account types of these tests: `tester` accounts start with exactly what a test needs. */
const TYPES = { tester2: { signupCredits: 2 }, tester25: { signupCredits: 2.5 }, empty: {} }

const setup = redisGates({ accountTypes: TYPES })

describe.each(EXPRESS_VERSIONS)('creditGate on %s', (_name, factory) => {
  describe('401: no or bad identity', () => {
    it('answers 401 with a WWW-Authenticate challenge when no credential is sent, writing nothing and not running the handler', async () => {
      const { gate, ledger, redis, prefix } = setup()
      const handler = jest.fn(ok)
      const app = appWith(factory, (a) => a.get('/var', gate('pro'), handler))
      const before = await snapshot(redis, prefix)
      const res = await request(app).get('/var')
      expect(res.status).toBe(401)
      expect(res.headers['www-authenticate']).toBe('Bearer')
      expect(res.body).toEqual({
        success: false,
        error: 'unauthorized',
        message: 'Authentication required',
        detail: 'Send credentials (Bearer)',
      })
      expect(handler).not.toHaveBeenCalled()
      expect(ledger.calls).toEqual([])
      expect(await snapshot(redis, prefix)).toEqual(before)
    })

    it('answers 401 with error="invalid_token" and the reason for a rejected credential', async () => {
      const { gate, ledger } = setup()
      const handler = jest.fn(ok)
      const app = appWith(factory, (a) => a.get('/var', gate('pro'), handler))
      const res = await request(app).get('/var').set(ACCOUNT_HEADER, 'rejected')
      expect(res.status).toBe(401)
      expect(res.headers['www-authenticate']).toBe(
        'Bearer error="invalid_token", error_description="The token expired"',
      )
      expect(res.body).toEqual({
        success: false,
        error: 'unauthorized',
        message: 'Invalid credentials',
        detail: 'The token expired',
      })
      expect(handler).not.toHaveBeenCalled()
      expect(ledger.calls).toEqual([])
    })

    it('keeps a 401 a 401 when the rejection reason holds quotes, newlines or non-ASCII text', async () => {
      const { gate } = setup({
        identify: () => ({
          rejected: true,
          error: 'invalid_token',
          description: 'Jeton "expiré"\r\nX-Injected: 1',
        }),
      })
      const app = appWith(factory, (a) => a.get('/var', gate('pro'), ok))
      const res = await request(app).get('/var')
      expect(res.status).toBe(401)
      expect(res.headers['www-authenticate']).toBe(
        `Bearer error="invalid_token", error_description="Jeton 'expir?'??X-Injected: 1"`,
      )
      expect(res.headers['x-injected']).toBeUndefined()
      expect(res.body.detail).toBe('Jeton "expiré"\r\nX-Injected: 1')
    })

    it("appends the error to the identify function's own challenge", async () => {
      const identify: IdentifyFunction = Object.assign(identifyByHeader(), {
        challenge: 'Bearer realm="quant"',
      })
      const { gate } = setup({ identify })
      const app = appWith(factory, (a) => a.get('/var', gate('pro'), ok))
      expect((await request(app).get('/var')).headers['www-authenticate']).toBe(
        'Bearer realm="quant"',
      )
      expect(
        (await request(app).get('/var').set(ACCOUNT_HEADER, 'rejected')).headers[
          'www-authenticate'
        ],
      ).toBe('Bearer realm="quant", error="invalid_token", error_description="The token expired"')
    })

    it('answers 401 when the identity has no ledger account and accounts are not opened, writing nothing', async () => {
      const { gate, redis, prefix, log } = setup()
      const handler = jest.fn(ok)
      const app = appWith(factory, (a) => a.get('/var', gate('basic'), handler))
      const before = await snapshot(redis, prefix)
      const res = await request(app).get('/var').set(ACCOUNT_HEADER, 'stranger')
      expect(res.status).toBe(401)
      expect(res.headers['www-authenticate']).toContain('error="invalid_token"')
      expect(res.body).toMatchObject({ error: 'unauthorized', message: 'Unknown account' })
      expect(handler).not.toHaveBeenCalled()
      expect(await snapshot(redis, prefix)).toEqual(before)
      expect(log.entries).toEqual([])
    })

    it('answers 401, before any ledger call, when the identity names an id no account can have', async () => {
      const { gate, ledger } = setup({ identify: () => ({ accountId: 'a\u0000b' }) })
      const app = appWith(factory, (a) => a.get('/var', gate('basic'), ok))
      const res = await request(app).get('/var')
      expect(res.status).toBe(401)
      expect(res.headers['www-authenticate']).toContain('error="invalid_token"')
      expect(ledger.calls).toEqual([])
    })

    it('passes an identify function that throws or rejects to next(err), with no ledger call', async () => {
      const boom = new Error('key store down')
      for (const identify of [
        (): never => {
          throw boom
        },
        () => Promise.reject(boom),
      ]) {
        const { gate, ledger } = setup({ identify })
        const errors: unknown[] = []
        const handler = jest.fn(ok)
        const app = appWith(factory, (a) => a.get('/var', gate('basic'), handler), errors)
        expect((await request(app).get('/var')).status).toBe(500)
        expect(errors).toEqual([boom])
        expect(handler).not.toHaveBeenCalled()
        expect(ledger.calls).toEqual([])
      }
    })

    it('refuses an identify result that is neither identity, id, null nor rejection, via next(err)', async () => {
      const { gate } = setup({ identify: (() => 42) as unknown as IdentifyFunction })
      const errors: unknown[] = []
      const app = appWith(factory, (a) => a.get('/var', gate('basic'), ok), errors)
      expect((await request(app).get('/var')).status).toBe(500)
      expect(errors[0]).toMatchObject({ code: 'ERR_CREDIT_INVALID_OPTION' })
    })
  })

  describe('accounts on first sight', () => {
    it('opens an unknown account as the configured type (guest: 50 credits) in the same single reserve', async () => {
      const { gate, ledger, redisLedger, log } = setup({ openAccounts: 'guest' })
      const app = appWith(factory, (a) => a.get('/quote', gate('basic'), ok))
      const res = await request(app).get('/quote').set(ACCOUNT_HEADER, 'visitor')
      expect(res.status).toBe(200)
      expect(res.headers['x-credits-cost']).toBe('1')
      expect(res.headers['x-credits-remaining']).toBe('49')
      expect(ledger.count('reserve')).toBe(1)
      expect(ledger.calls[0]?.args[2]).toMatchObject({ openAs: 'guest' })
      await log.settled(1)
      expect(await redisLedger.balance('visitor')).toMatchObject({
        accountType: 'guest',
        available: 49,
        pending: 0,
      })
    })

    it("lets the identity's own account type win over the configured one", async () => {
      const { gate, redisLedger, log } = setup({
        openAccounts: 'guest',
        identify: identifyByHeader('registered'),
      })
      const app = appWith(factory, (a) => a.get('/quote', gate('basic'), ok))
      expect((await request(app).get('/quote').set(ACCOUNT_HEADER, 'member')).status).toBe(200)
      await log.settled(1)
      expect(await redisLedger.balance('member')).toMatchObject({
        accountType: 'registered',
        available: 349,
      })
    })

    it('asks an openAccounts function per identity, and answers 401 when it declines', async () => {
      const { gate, redisLedger, log } = setup({
        openAccounts: (identity) => (identity.accountId.startsWith('g-') ? 'guest' : false),
      })
      const app = appWith(factory, (a) => a.get('/quote', gate('basic'), ok))
      expect((await request(app).get('/quote').set(ACCOUNT_HEADER, 'g-1')).status).toBe(200)
      expect((await request(app).get('/quote').set(ACCOUNT_HEADER, 'x-1')).status).toBe(401)
      await log.settled(1)
      expect((await redisLedger.balance('g-1')).accountType).toBe('guest')
      await expect(redisLedger.balance('x-1')).rejects.toMatchObject({
        code: 'ERR_CREDIT_ACCOUNT_NOT_FOUND',
      })
    })
  })

  describe('403: tier policy per account type', () => {
    it('answers 403 forbidden_tier to a guest restricted to free, writing nothing; free stays open to it', async () => {
      const { gate, redisLedger, redis, prefix, log, ledger } = setup({
        tierAccess: { guest: ['free'] },
      })
      await redisLedger.openAccount('g', { type: 'guest' })
      const handler = jest.fn(ok)
      const app = appWith(factory, (a) => {
        a.get('/paid', gate('basic'), handler)
        a.get('/free', gate('free'), ok)
      })
      const before = await snapshot(redis, prefix)
      const res = await request(app).get('/paid').set(ACCOUNT_HEADER, 'g')
      expect(res.status).toBe(403)
      expect(res.body).toEqual({
        success: false,
        error: 'forbidden_tier',
        message: 'Tier not allowed',
        detail: 'A guest account may not call the basic tier',
      })
      expect(handler).not.toHaveBeenCalled()
      expect(await snapshot(redis, prefix)).toEqual(before)
      expect(log.of('forbidden')).toEqual([
        { accountId: 'g', accountType: 'guest', tier: 'basic', endpoint: '/paid' },
      ])
      // The policy travels in the one reserve: every type the ledger knows except guest.
      expect(ledger.calls[0]?.args[2]).toMatchObject({
        allowedTypes: ['registered', 'enterprise', 'tester2', 'tester25', 'empty'],
      })
      expect((await request(app).get('/free').set(ACCOUNT_HEADER, 'g')).status).toBe(200)
    })

    it('answers 403 before 402: a restricted guest who is also short hears about the tier', async () => {
      const { gate, redisLedger } = setup({
        tiers: { free: 0, basic: 1, pro: 100 },
        tierAccess: { guest: ['free', 'basic'] },
      })
      await redisLedger.openAccount('g', { type: 'guest' })
      const app = appWith(factory, (a) => a.get('/pro', gate('pro'), ok))
      expect((await request(app).get('/pro').set(ACCOUNT_HEADER, 'g')).status).toBe(403)
    })

    it('lets registered accounts call a tier restricted for guests', async () => {
      const { gate, redisLedger } = setup({ tierAccess: { guest: ['free'] } })
      await redisLedger.openAccount('r', { type: 'registered' })
      const app = appWith(factory, (a) => a.get('/paid', gate('pro'), ok))
      expect((await request(app).get('/paid').set(ACCOUNT_HEADER, 'r')).status).toBe(200)
    })
  })

  describe('402: short balance', () => {
    it('answers 402 with exactly the DESIGN body, writing nothing and not running the handler', async () => {
      const { gate, redisLedger, redis, prefix, log } = setup()
      await redisLedger.openAccount('poor', { type: 'tester2' })
      const handler = jest.fn(ok)
      const app = appWith(factory, (a) => a.get('/var', gate('pro'), handler))
      const before = await snapshot(redis, prefix)
      const res = await request(app).get('/var').set(ACCOUNT_HEADER, 'poor')
      expect(res.status).toBe(402)
      expect(res.headers['content-type']).toBe('application/json; charset=utf-8')
      expect(res.body).toStrictEqual({
        success: false,
        error: 'insufficient_credits',
        message: 'Insufficient credits',
        detail: 'Required: 5 credits, Available: 2 credits',
        required: 5,
        balance: 2,
      })
      expect(handler).not.toHaveBeenCalled()
      expect(await snapshot(redis, prefix)).toEqual(before)
      expect(log.of('insufficient')).toEqual([
        {
          accountId: 'poor',
          accountType: 'tester2',
          tier: 'pro',
          endpoint: '/var',
          required: 5,
          available: 2,
        },
      ])
    })

    it('reports fractional credits exactly in the 402 body', async () => {
      const { gate, redisLedger } = setup()
      await redisLedger.openAccount('p', { type: 'tester25' })
      const app = appWith(factory, (a) => a.get('/x', gate('basic', { cost: 2.75 }), ok))
      const res = await request(app).get('/x').set(ACCOUNT_HEADER, 'p')
      expect(res.status).toBe(402)
      expect(res.body).toMatchObject({
        detail: 'Required: 2.75 credits, Available: 2.5 credits',
        required: 2.75,
        balance: 2.5,
      })
    })
  })

  describe('what the caller and the handler see', () => {
    it('sets X-Credits-Cost and X-Credits-Remaining on a gated response and charges on 2xx', async () => {
      const { gate, redisLedger, log } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const app = appWith(factory, (a) => a.get('/var', gate('pro'), ok))
      const res = await request(app).get('/var').set(ACCOUNT_HEADER, 'u')
      expect(res.status).toBe(200)
      expect(res.headers['x-credits-cost']).toBe('5')
      expect(res.headers['x-credits-remaining']).toBe('345')
      await log.settled(1)
      expect(await redisLedger.balance('u')).toMatchObject({ available: 345, pending: 0 })
    })

    it('sets the credit headers before the handler runs, so a streamed response carries them', async () => {
      const { gate, redisLedger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const app = appWith(factory, (a) =>
        a.get('/stream', gate('standard'), (_req, res) => {
          expect(res.getHeader('X-Credits-Cost')).toBe('2')
          res.write('a')
          setImmediate(() => res.end('b'))
        }),
      )
      const res = await request(app).get('/stream').set(ACCOUNT_HEADER, 'u')
      expect(res.text).toBe('ab')
      expect(res.headers['x-credits-cost']).toBe('2')
      expect(res.headers['x-credits-remaining']).toBe('348')
    })

    it('gives the handler getCredits(req) and req.credits: account, tier, price, hold, remaining', async () => {
      const { gate, redisLedger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      let seen: CreditInfo | undefined
      let plain: unknown
      const app = appWith(factory, (a) =>
        a.get('/var', gate('pro'), (req, res) => {
          seen = getCredits(req)
          plain = (req as Request & { credits?: unknown }).credits
          res.json({})
        }),
      )
      await request(app).get('/var').set(ACCOUNT_HEADER, 'u')
      expect(seen).toMatchObject({
        accountId: 'u',
        accountType: 'registered',
        tier: 'pro',
        price: 5,
        cost: 5,
        remaining: 345,
        unlimited: false,
      })
      expect(seen?.holdId).toEqual(expect.stringMatching(/^u:[A-Za-z0-9_-]{16}$/))
      expect(plain).toBe(seen)
      expect(Object.isFrozen(seen)).toBe(true)
      expect(getCredits({})).toBeUndefined()
    })

    it('keeps getCredits(req) working when a later middleware reuses req.credits', async () => {
      const { gate, redisLedger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      let seen: CreditInfo | undefined
      const app = appWith(factory, (a) =>
        a.get(
          '/var',
          gate('pro'),
          (req, _res, next) => {
            ;(req as Request & { credits?: unknown }).credits = 'the app uses this name too'
            next()
          },
          (req, res) => {
            seen = getCredits(req)
            res.json({})
          },
        ),
      )
      await request(app).get('/var').set(ACCOUNT_HEADER, 'u')
      expect(seen).toMatchObject({ accountId: 'u', tier: 'pro', cost: 5, remaining: 345 })
    })

    it('gives the request no property of its own; req.credits and getCredits(req) read the same view', async () => {
      const { gate, redisLedger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const seen: { own: string[]; symbols: number; credits: unknown; view: unknown }[] = []
      const look = (req: Request) => {
        seen.push({
          own: Object.getOwnPropertyNames(req).filter((name) => name === 'credits'),
          symbols: Object.getOwnPropertySymbols(req).length,
          credits: (req as Request & { credits?: unknown }).credits,
          view: getCredits(req),
        })
      }
      const app = appWith(factory, (a) => {
        a.get('/symbols', (req, res) => {
          // What a request has before any gate, to compare with.
          res.json({ symbols: Object.getOwnPropertySymbols(req).length })
        })
        a.get('/paid', gate('pro'), (req, res) => {
          look(req)
          res.json({})
        })
        a.get('/free', (req, res) => {
          look(req)
          res.json({})
        })
      })
      const { symbols } = (await request(app).get('/symbols')).body as { symbols: number }
      await request(app).get('/paid').set(ACCOUNT_HEADER, 'u')
      await request(app).get('/free').set(ACCOUNT_HEADER, 'u')
      await request(app).get('/paid').set(ACCOUNT_HEADER, 'u')
      expect(seen.map((s) => [s.own, s.symbols - symbols, s.credits === s.view])).toEqual([
        [[], 0, true],
        [[], 0, true],
        [[], 0, true],
      ])
      expect(seen.map((s) => (s.view as CreditInfo | undefined)?.remaining)).toEqual([
        345,
        undefined,
        340,
      ])
    })

    it('keeps req.credits and getCredits(req) on a request that a sub-app with the gate hands back', async () => {
      const { gate, redisLedger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const seen: unknown[] = []
      const sub = factory()
      sub.get('/var', gate('pro'), (req, _res, next) => {
        seen.push((req as Request & { credits?: CreditInfo }).credits?.remaining)
        next()
      })
      const app = appWith(factory, (a) => {
        a.use('/v1', sub as never)
        a.use('/v1', (req, res) => {
          const credits = (req as Request & { credits?: CreditInfo }).credits
          seen.push(getCredits(req)?.remaining, credits === getCredits(req))
          res.json({})
        })
      })
      await request(app).get('/v1/var').set(ACCOUNT_HEADER, 'u')
      expect(seen).toEqual([345, 345, true])
    })

    it("leaves an app's own req.credits on its request prototype alone, and gives a gated request the view", async () => {
      const { gate, redisLedger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const seen: unknown[] = []
      const app = appWith(factory, (a) => {
        Object.defineProperty(a.request, 'credits', { value: "the app's", writable: true })
        a.get('/paid', gate('pro'), (req, res) => {
          seen.push((req as Request & { credits?: CreditInfo }).credits === getCredits(req))
          res.json({})
        })
        a.get('/free', (req, res) => {
          seen.push((req as Request & { credits?: unknown }).credits)
          res.json({})
        })
      })
      await request(app).get('/paid').set(ACCOUNT_HEADER, 'u')
      await request(app).get('/paid').set(ACCOUNT_HEADER, 'u')
      await request(app).get('/free')
      expect(seen).toEqual([true, true, "the app's"])
    })

    it('lets a later middleware give req.credits a value of its own, for that request only', async () => {
      const { gate, redisLedger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const seen: unknown[] = []
      const app = appWith(factory, (a) =>
        a.get(
          '/var',
          gate('pro'),
          (req, _res, next) => {
            if (req.query['mine'] !== undefined) {
              ;(req as Request & { credits?: unknown }).credits = 'the app uses this name too'
            }
            next()
          },
          (req, res) => {
            const { credits } = req as Request & { credits?: unknown }
            seen.push(typeof credits === 'string' ? credits : (credits as CreditInfo).remaining)
            res.json({})
          },
        ),
      )
      await request(app).get('/var?mine=1').set(ACCOUNT_HEADER, 'u')
      await request(app).get('/var').set(ACCOUNT_HEADER, 'u')
      expect(seen).toEqual(['the app uses this name too', 340])
    })

    it('shows the credit view read-only, with its fields in JSON, util.inspect and a spread, and a setCost that works destructured', async () => {
      const { gate, redisLedger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      let refused: unknown
      let shown = ''
      let spread: object = {}
      const app = appWith(factory, (a) =>
        a.get('/batch', gate('pro'), (req, res) => {
          const info = getCredits(req)
          try {
            ;(info as unknown as { accountId: string }).accountId = 'someone-else'
          } catch (error) {
            refused = error
          }
          shown = inspect(info)
          spread = { ...info }
          const { setCost } = info ?? { setCost: undefined }
          setCost?.(2)
          res.json(info)
        }),
      )
      const res = await request(app).get('/batch').set(ACCOUNT_HEADER, 'u')
      expect(refused).toBeInstanceOf(TypeError)
      expect(shown).toContain("accountId: 'u'")
      expect(shown).toContain('remaining: 345')
      expect(spread).toMatchObject({ accountId: 'u', tier: 'pro', price: 5, unlimited: false })
      expect(res.body).toMatchObject({
        accountId: 'u',
        tier: 'pro',
        price: 5,
        cost: 2,
        remaining: 348,
      })
      expect(res.headers['x-credits-cost']).toBe('2')
      expect(await redisLedger.balance('u')).toMatchObject({ available: 348 })
    })

    it('lets a handler charge less with setCost: headers, commit and balance follow', async () => {
      const { gate, redisLedger, log, ledger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const app = appWith(factory, (a) =>
        a.get('/batch', gate('pro'), (req, res) => {
          getCredits(req)?.setCost(1.5)
          res.json({})
        }),
      )
      const res = await request(app).get('/batch').set(ACCOUNT_HEADER, 'u')
      expect(res.headers['x-credits-cost']).toBe('1.5')
      expect(res.headers['x-credits-remaining']).toBe('348.5')
      await log.settled(1)
      expect(ledger.calls.find((c) => c.method === 'commit')?.args[1]).toMatchObject({
        actualCost: 1.5,
      })
      expect(log.of('charged')[0]).toMatchObject({ cost: 5, charged: 1.5, available: 348.5 })
      expect(await redisLedger.balance('u')).toMatchObject({ available: 348.5, pending: 0 })
    })

    it('refuses a setCost above the price, below zero or with more than 3 decimals', async () => {
      const { gate, redisLedger, log } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const thrown: unknown[] = []
      const app = appWith(factory, (a) =>
        a.get('/batch', gate('pro'), (req, res) => {
          const info = getCredits(req)
          for (const bad of [5.001, 6, -1, 1.2345, Number.NaN]) {
            try {
              info?.setCost(bad)
            } catch (error) {
              thrown.push(error)
            }
          }
          res.json({ cost: info?.cost })
        }),
      )
      const res = await request(app).get('/batch').set(ACCOUNT_HEADER, 'u')
      expect(res.body).toEqual({ cost: 5 })
      expect(thrown).toHaveLength(5)
      for (const error of thrown) {
        expect(error).toBeInstanceOf(CreditArgumentError)
        expect(error).toMatchObject({ code: 'ERR_CREDIT_INVALID_AMOUNT' })
      }
      await log.settled(1)
      expect(await redisLedger.balance('u')).toMatchObject({ available: 345 })
    })

    it('lets an enterprise account through uncharged, unlimited, with its usage still committed', async () => {
      const { gate, redisLedger, log, ledger } = setup()
      await redisLedger.openAccount('corp', { type: 'enterprise' })
      let info: CreditInfo | undefined
      const app = appWith(factory, (a) =>
        a.get('/var', gate('pro'), (req, res) => {
          info = getCredits(req)
          info?.setCost(2) // a handler need not know the account is unlimited
          res.json({})
        }),
      )
      const res = await request(app).get('/var').set(ACCOUNT_HEADER, 'corp')
      expect(res.status).toBe(200)
      expect(res.headers['x-credits-cost']).toBe('0')
      expect(res.headers['x-credits-remaining']).toBe('unlimited')
      expect(info).toMatchObject({ unlimited: true, cost: 0, price: 5, remaining: null })
      await log.settled(1)
      expect(ledger.count('commit')).toBe(1)
      expect(ledger.calls.find((c) => c.method === 'commit')?.args[1]).not.toHaveProperty(
        'actualCost',
      )
      expect(log.of('charged')[0]).toMatchObject({ accountId: 'corp', charged: 0 })
      expect(await redisLedger.balance('corp')).toMatchObject({ unlimited: true, pending: 0 })
    })
  })

  describe('free tier', () => {
    it('makes no ledger call before the handler, never answers 402, and settles nothing', async () => {
      const { gate, ledger, redisLedger } = setup()
      await redisLedger.openAccount('broke', { type: 'empty' })
      const callsInHandler: number[] = []
      const app = appWith(factory, (a) =>
        a.get('/ping', gate('free'), (req, res) => {
          callsInHandler.push(ledger.calls.length)
          res.json({ info: getCredits(req) })
        }),
      )
      for (const account of ['broke', 'never-opened']) {
        const res = await request(app).get('/ping').set(ACCOUNT_HEADER, account)
        expect(res.status).toBe(200)
        expect(res.headers['x-credits-cost']).toBe('0')
        expect(res.headers['x-credits-remaining']).toBeUndefined()
        expect(res.body.info).toMatchObject({ accountId: account, cost: 0, remaining: null })
      }
      expect(callsInHandler).toEqual([0, 0])
      expect(ledger.calls).toEqual([])
    })

    it('still answers 401 without a credential', async () => {
      const { gate } = setup()
      const app = appWith(factory, (a) => a.get('/ping', gate('free'), ok))
      expect((await request(app).get('/ping')).status).toBe(401)
    })

    it("records a free call's usage after the response when the ledger can (recordUsage)", async () => {
      const made = makeLedger('redis')
      setup.track(made.redis)
      const recorded = deferred<readonly unknown[]>()
      const finishedWhenRecorded: boolean[] = []
      let response: Response | undefined
      const ledger = Object.assign(new RecordingLedger(made.ledger), {
        recordUsage: (...args: unknown[]) => {
          finishedWhenRecorded.push(response?.writableFinished === true)
          recorded.resolve(args)
          return Promise.resolve()
        },
      })
      const gate = createCreditGate({ ledger, identify: identifyByHeader() })
      const app = appWith(factory, (a) =>
        a.get('/ping/:id', gate('free'), (_req, res) => {
          response = res
          setTimeout(() => res.json({}), 20)
        }),
      )
      await request(app).get('/ping/7').set(ACCOUNT_HEADER, 'u')
      const [accountId, options] = await recorded.promise
      expect(accountId).toBe('u')
      expect(options).toEqual({
        endpoint: '/ping/:id',
        latencyMs: expect.any(Number),
        charged: false,
      })
      expect((options as { latencyMs: number }).latencyMs).toBeGreaterThanOrEqual(15)
      expect(finishedWhenRecorded).toEqual([true])
    })

    it('prices a restricted free tier through the ledger, to learn the account type (one round trip)', async () => {
      const { gate, redisLedger, ledger, log } = setup({ tierAccess: { guest: ['basic'] } })
      await redisLedger.openAccount('g', { type: 'guest' })
      await redisLedger.openAccount('r', { type: 'registered' })
      const app = appWith(factory, (a) => a.get('/ping', gate('free'), ok))
      expect((await request(app).get('/ping').set(ACCOUNT_HEADER, 'g')).status).toBe(403)
      const res = await request(app).get('/ping').set(ACCOUNT_HEADER, 'r')
      expect(res.status).toBe(200)
      expect(res.headers['x-credits-cost']).toBe('0')
      expect(res.headers['x-credits-remaining']).toBe('350')
      await log.settled(1)
      expect(ledger.count('reserve')).toBe(2)
      expect(await redisLedger.balance('r')).toMatchObject({ available: 350, pending: 0 })
    })
  })

  describe('usage analytics through the gate', () => {
    it('records free, charged and refunded calls per route pattern on a RedisLedger', async () => {
      const made = makeLedger('redis')
      setup.track(made.redis)
      await made.ledger.openAccount('u', { type: 'registered' })
      const usageWrites: Promise<unknown>[] = []
      // Watches recordUsage (a free call's only ledger call, made after the response).
      const ledger = new Proxy(made.ledger, {
        get(target, property) {
          if (property === 'recordUsage') {
            return (...args: Parameters<RedisLedger['recordUsage']>) => {
              const write = target.recordUsage(...args)
              usageWrites.push(write)
              return write
            }
          }
          const value: unknown = Reflect.get(target, property, target)
          return typeof value === 'function' ? (value as () => unknown).bind(target) : value
        },
      })
      const gate = createCreditGate({ ledger, identify: identifyByHeader() })
      const log = new EventLog(gate)
      const app = appWith(factory, (a) => {
        a.get('/free/:id', gate('free'), ok)
        a.get('/paid/:id', gate('pro'), (req, res) => {
          res.status(req.params.id === 'fail' ? 500 : 200).json({})
        })
      })
      expect((await request(app).get('/free/1').set(ACCOUNT_HEADER, 'u')).status).toBe(200)
      expect((await request(app).get('/paid/1').set(ACCOUNT_HEADER, 'u')).status).toBe(200)
      expect((await request(app).get('/paid/fail').set(ACCOUNT_HEADER, 'u')).status).toBe(500)
      await log.settled(2)
      await log.waitFor(() => usageWrites.length === 1, 'the free call to be recorded')
      await expect(usageWrites[0]).resolves.toMatchObject({ recorded: true })
      const now = Date.now()
      const report = await made.ledger.usage('u', {
        from: now - 3_600_000,
        to: now + 3_600_000,
        granularity: 'hour',
      })
      expect(report.totals).toMatchObject({ requests: 3, credits: 5, refunds: 1 })
      expect(report.endpoints).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ endpoint: '/paid/:id', requests: 2, credits: 5, refunds: 1 }),
          expect.objectContaining({ endpoint: '/free/:id', requests: 1, credits: 0, refunds: 0 }),
        ]),
      )
      expect(report.endpoints).toHaveLength(2)
    })
  })

  describe('the hot path', () => {
    it('sends the reserve in the same tick when identify answers synchronously', async () => {
      const { gate, ledger, redisLedger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const mw = gate('basic')
      const sameTick: number[] = []
      const app = appWith(factory, (a) =>
        a.get(
          '/x',
          (req, res, next) => {
            mw(req, res, next)
            sameTick.push(ledger.count('reserve'))
          },
          ok,
        ),
      )
      expect((await request(app).get('/x').set(ACCOUNT_HEADER, 'u')).status).toBe(200)
      expect(sameTick).toEqual([1])
    })

    it('also works with an asynchronous identify', async () => {
      const sync = identifyByHeader()
      const { gate, redisLedger } = setup({
        identify: (req: IncomingMessage) => Promise.resolve(sync(req)),
      })
      await redisLedger.openAccount('u', { type: 'registered' })
      const app = appWith(factory, (a) => a.get('/x', gate('basic'), ok))
      const res = await request(app).get('/x').set(ACCOUNT_HEADER, 'u')
      expect(res.status).toBe(200)
      expect(res.headers['x-credits-remaining']).toBe('349')
    })

    it('makes exactly one Redis round trip before the handler runs', async () => {
      const redis = setup.track(realRedis())
      const { client, calls } = countingClient(redis)
      const ledger = new RedisLedger({ redis: client, prefix: uniquePrefix() })
      await ledger.openAccount('u', { type: 'registered' })
      // Warm the script cache, so that no NOSCRIPT fallback is counted.
      const warm = await ledger.reserve('u', 1, { endpoint: '/warm' })
      if (warm.status === 'held') await ledger.release(warm.holdId)
      const gate = createCreditGate({ ledger, identify: identifyByHeader() })
      const log = new EventLog(gate)
      let before = 0
      let inHandler = -1
      const app = appWith(factory, (a) =>
        a.get(
          '/x',
          (_req, _res, next) => {
            before = calls()
            next()
          },
          gate('pro'),
          (_req, res) => {
            inHandler = calls() - before
            res.json({})
          },
        ),
      )
      expect((await request(app).get('/x').set(ACCOUNT_HEADER, 'u')).status).toBe(200)
      expect(inHandler).toBe(1)
      await log.settled(1)
      expect(calls() - before).toBe(2) // the reserve, then the commit after the response
    })
  })

  describe('per-request cost', () => {
    it('prices a call by a function of the request (a batch of n items costs n)', async () => {
      const { gate, redisLedger, log } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const app = appWith(factory, (a) =>
        a.post('/batch', gate('basic', { cost: (req) => String(req.headers['x-items']) }), ok),
      )
      const res = await request(app).post('/batch').set(ACCOUNT_HEADER, 'u').set('x-items', '3.5')
      expect(res.headers['x-credits-cost']).toBe('3.5')
      await log.settled(1)
      expect(await redisLedger.balance('u')).toMatchObject({ available: 346.5 })
    })

    it.each([
      ['a negative number', -1],
      ['NaN', Number.NaN],
      ['more than 3 decimals', 1.2345],
      ['a non-numeric string', 'abc'],
      ['an exponent string', '1e3'],
      ['undefined', undefined],
    ])('passes a cost of %s to next(err) and reserves nothing', async (_what, value) => {
      const { gate, ledger, redisLedger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const errors: unknown[] = []
      const handler = jest.fn(ok)
      const app = appWith(
        factory,
        (a) => a.get('/x', gate('basic', { cost: () => value as number }), handler),
        errors,
      )
      expect((await request(app).get('/x').set(ACCOUNT_HEADER, 'u')).status).toBe(500)
      expect(errors[0]).toMatchObject({ code: 'ERR_CREDIT_INVALID_AMOUNT' })
      expect(handler).not.toHaveBeenCalled()
      expect(ledger.calls).toEqual([])
    })

    it('passes a cost function that throws to next(err) and reserves nothing', async () => {
      const { gate, ledger } = setup()
      const errors: unknown[] = []
      const boom = new TypeError('no body')
      const app = appWith(
        factory,
        (a) =>
          a.get(
            '/x',
            gate('basic', {
              cost: () => {
                throw boom
              },
            }),
            ok,
          ),
        errors,
      )
      expect((await request(app).get('/x').set(ACCOUNT_HEADER, 'u')).status).toBe(500)
      expect(errors).toEqual([boom])
      expect(ledger.calls).toEqual([])
    })
  })

  describe('the endpoint recorded', () => {
    it('is the route pattern with its mount path, never the raw URL', async () => {
      const { gate, ledger, redisLedger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const app = appWith(factory, (a) => {
        const router = factory.Router()
        router.get('/items/:id', gate('basic'), ok)
        a.use('/api', router)
      })
      await request(app).get('/api/items/42?secret=1').set(ACCOUNT_HEADER, 'u')
      expect(ledger.calls[0]?.args[2]).toMatchObject({ endpoint: '/api/items/:id' })
    })

    it('is routeOptions.endpoint, else the mount path, when the gate is not on a route', async () => {
      const { gate, ledger, redisLedger } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const app = appWith(factory, (a) => {
        a.use('/named', gate('basic', { endpoint: 'named-api' }), ok)
        a.use('/mounted', gate('basic'), ok)
        a.use(gate('basic'), ok)
      })
      await request(app).get('/named/deep/path').set(ACCOUNT_HEADER, 'u')
      await request(app).get('/mounted/deep/path').set(ACCOUNT_HEADER, 'u')
      await request(app).get('/elsewhere').set(ACCOUNT_HEADER, 'u')
      expect(ledger.calls.filter((c) => c.method === 'reserve').map((c) => c.args[2])).toEqual([
        expect.objectContaining({ endpoint: 'named-api' }),
        expect.objectContaining({ endpoint: '/mounted' }),
        expect.objectContaining({ endpoint: '/' }),
      ])
    })

    it('never contains "|" and stays within 512 bytes, whatever a parametrised mount path holds', async () => {
      const { gate, ledger, redisLedger, log } = setup()
      await redisLedger.openAccount('u', { type: 'registered' })
      const app = appWith(factory, (a) => {
        const router = factory.Router()
        router.get('/x', gate('basic'), ok)
        a.use('/t/:tenant', router)
      })
      const long = `a|b${'é'.repeat(600)}`
      const res = await request(app)
        .get(`/t/${encodeURIComponent(long).replaceAll('%7C', '|')}/x`)
        .set(ACCOUNT_HEADER, 'u')
      expect(res.status).toBe(200)
      const endpoint = (ledger.calls[0]?.args[2] as { endpoint: string }).endpoint
      expect(endpoint).not.toContain('|')
      expect(endpoint.startsWith('/t/a%7Cb')).toBe(true)
      expect(Buffer.byteLength(endpoint)).toBeLessThanOrEqual(512)
      await log.settled(1)
    })
  })

  it('is a named middleware function', () => {
    const { gate } = setup()
    expect(gate('basic').name).toBe('creditGateMiddleware')
  })
})

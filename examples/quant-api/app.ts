/**
 * The demo: a quant-finance API sold by credits. Every route is ordinary Express; creditgate
 * prices the /quantlib routes by tier, and the ledger keeps accounts, purchases, subscriptions,
 * history and usage.
 */
import { createHmac, randomBytes, randomUUID, scryptSync, timingSafeEqual } from 'node:crypto'

import express, { type Request, type Response } from 'express'
import type { Redis } from 'ioredis'
import jwt from 'jsonwebtoken'

import { RedisLedger, createCreditGate, creditRoutes, fromJwt, isCreditError } from 'creditgate'

import { dashboardHtml } from './dashboard'
import {
  blackScholes,
  historicalVar,
  isBusinessDay,
  meanAndStdDev,
  parseIsoDate,
  parseSeries,
} from './finance'

/** One-time credit packs, by id: credits that never expire. */
export const PACKS = Object.freeze({
  pack_200: 200,
  pack_500: 500,
  pack_1000: 1000,
  pack_5000: 5000,
})
/** Monthly plans: credits granted at each monthly anniversary. */
export const PLANS = Object.freeze({ basic: 500, standard: 2500, pro: 7500 })

export interface DemoOptions {
  /** An ioredis client (or ioredis-mock). */
  readonly redis: Redis
  /** HS256 secret of the demo's JWTs. Defaults to a random one per process. */
  readonly jwtSecret?: string
  /** Secret of the payment webhook's signature. Defaults to a random one per process. */
  readonly webhookSecret?: string
  /** Epoch-ms clock, for tests. */
  readonly clock?: () => number
}

const ISSUER = 'quant-api-demo'

/** Signs a payment event the way the (simulated) payment provider does: `t=<unix>,v1=<hmac>`. */
export function signWebhook(
  payload: string,
  secret: string,
  at = Math.floor(Date.now() / 1000),
): string {
  const mac = createHmac('sha256', secret).update(`${at}.${payload}`).digest('hex')
  return `t=${at},v1=${mac}`
}

function verifyWebhook(payload: Buffer, header: unknown, secret: string): boolean {
  if (typeof header !== 'string') return false
  const match = /^t=(\d{1,12}),v1=([0-9a-f]{64})$/.exec(header)
  if (match === null) return false
  const at = Number(match[1])
  if (Math.abs(Date.now() / 1000 - at) > 300) return false
  const expected = createHmac('sha256', secret).update(`${at}.`).update(payload).digest()
  return timingSafeEqual(expected, Buffer.from(match[2] ?? '', 'hex'))
}

function fail(
  res: Response,
  status: number,
  error: string,
  message: string,
  detail?: string,
): void {
  res
    .status(status)
    .json({ success: false, error, message, ...(detail === undefined ? {} : { detail }) })
}

/** Builds the demo app over a Redis client. Exported for tests; `server.ts` listens. */
export function createApp(options: DemoOptions) {
  const jwtSecret = options.jwtSecret ?? randomBytes(32).toString('hex')
  const webhookSecret = options.webhookSecret ?? randomBytes(32).toString('hex')
  const ledger = new RedisLedger({
    redis: options.redis,
    prefix: 'quant:',
    ...(options.clock ? { clock: options.clock } : {}),
  })
  const identify = fromJwt({
    secret: jwtSecret,
    algorithms: ['HS256'],
    issuer: ISSUER,
    typeClaim: 'typ',
  })
  const creditGate = createCreditGate({ ledger, identify })
  const users = options.redis

  const issue = (accountId: string, type: string) =>
    jwt.sign({ sub: accountId, typ: type }, jwtSecret, {
      algorithm: 'HS256',
      issuer: ISSUER,
      expiresIn: '24h',
    })

  const accountOf = (req: Request): string | undefined => {
    const identity = identify(req)
    return identity !== null && typeof identity === 'object' && 'accountId' in identity
      ? identity.accountId
      : undefined
  }

  /** Credits a verified payment event once, by its id. */
  async function creditEvent(event: unknown): Promise<{ status: number; body: object }> {
    const e = event as {
      id?: unknown
      type?: unknown
      data?: { accountId?: unknown; pack?: unknown }
    }
    if (
      typeof e.id !== 'string' ||
      !/^evt_[A-Za-z0-9_-]{6,64}$/.test(e.id) ||
      e.type !== 'checkout.completed'
    ) {
      return { status: 400, body: { success: false, error: 'bad_event', message: 'Unknown event' } }
    }
    const pack = e.data?.pack
    const accountId = e.data?.accountId
    if (typeof pack !== 'string' || !(pack in PACKS) || typeof accountId !== 'string') {
      return {
        status: 400,
        body: { success: false, error: 'bad_event', message: 'Unknown pack or account' },
      }
    }
    const amount = PACKS[pack as keyof typeof PACKS]
    const result = await ledger.grant(accountId, {
      amount,
      source: 'purchase',
      idempotencyKey: e.id,
    })
    return {
      status: 200,
      body: {
        success: true,
        data: {
          received: true,
          replayed: result.replayed,
          credited: amount,
          balance: result.balance,
        },
      },
    }
  }

  const app = express()
  app.set('x-powered-by', false)

  // The payment provider's webhook: raw body, HMAC signature, idempotent by event id.
  app.post(
    '/billing/webhook',
    express.raw({ type: 'application/json', limit: '16kb' }),
    (req, res, next) => {
      const body = req.body as unknown
      if (
        !Buffer.isBuffer(body) ||
        !verifyWebhook(body, req.headers['x-quant-signature'], webhookSecret)
      ) {
        fail(res, 400, 'bad_signature', 'Invalid signature')
        return
      }
      let event: unknown
      try {
        event = JSON.parse(body.toString('utf8'))
      } catch {
        fail(res, 400, 'bad_event', 'Body is not JSON')
        return
      }
      creditEvent(event).then(
        ({ status, body: out }) => void res.status(status).json(out),
        (error: unknown) => {
          if (isCreditError(error) && error.code === 'ERR_CREDIT_TOPUP_NOT_ALLOWED') {
            fail(res, 409, 'topup_not_allowed', 'This account type cannot buy credits')
          } else if (isCreditError(error) && error.code === 'ERR_CREDIT_IDEMPOTENCY_CONFLICT') {
            fail(res, 409, 'event_conflict', 'This event id was already used for another purchase')
          } else next(error)
        },
      )
    },
  )

  app.use(express.json({ limit: '64kb' }))

  app.post('/auth/register', (req, res, next) => {
    const { email, password } = (req.body ?? {}) as { email?: unknown; password?: unknown }
    if (
      typeof email !== 'string' ||
      !/^[^@\s]{1,64}@[^@\s]{1,190}$/.test(email) ||
      typeof password !== 'string' ||
      password.length < 8 ||
      password.length > 200
    ) {
      fail(res, 400, 'bad_request', 'Give an email and a password of at least 8 characters')
      return
    }
    const accountId = `user-${randomUUID()}`
    const salt = randomBytes(16)
    const hash = scryptSync(password, salt, 32)
    const record = JSON.stringify({
      accountId,
      salt: salt.toString('hex'),
      hash: hash.toString('hex'),
    })
    users
      .hsetnx('quant-demo:users', email.toLowerCase(), record)
      .then(async (created) => {
        if (created === 0) {
          fail(res, 409, 'email_taken', 'That email is registered; log in instead')
          return
        }
        await ledger.openAccount(accountId, { type: 'registered' })
        res.status(201).json({
          success: true,
          data: { token: issue(accountId, 'registered'), accountId, accountType: 'registered' },
        })
      })
      .catch(next)
  })

  app.post('/auth/login', (req, res, next) => {
    const { email, password } = (req.body ?? {}) as { email?: unknown; password?: unknown }
    if (typeof email !== 'string' || typeof password !== 'string') {
      fail(res, 400, 'bad_request', 'Give an email and a password')
      return
    }
    users
      .hget('quant-demo:users', email.toLowerCase())
      .then((raw) => {
        const record =
          raw === null
            ? undefined
            : (JSON.parse(raw) as { accountId: string; salt: string; hash: string })
        const ok =
          record !== undefined &&
          timingSafeEqual(
            scryptSync(password, Buffer.from(record.salt, 'hex'), 32),
            Buffer.from(record.hash, 'hex'),
          )
        if (!ok) {
          fail(res, 401, 'bad_credentials', 'Wrong email or password')
          return
        }
        res.json({
          success: true,
          data: {
            token: issue(record.accountId, 'registered'),
            accountId: record.accountId,
            accountType: 'registered',
          },
        })
      })
      .catch(next)
  })

  app.post('/auth/guest', (_req, res, next) => {
    const accountId = `guest-${randomUUID()}`
    ledger
      .openAccount(accountId, { type: 'guest' })
      .then(() => {
        res.status(201).json({
          success: true,
          data: { token: issue(accountId, 'guest'), accountId, accountType: 'guest' },
        })
      })
      .catch(next)
  })

  // The caller's own data: balance, usage and history.
  app.use('/user', creditRoutes({ ledger, identify }))
  app.get('/user/profile', creditGate('free'), (req, res, next) => {
    const accountId = accountOf(req)
    if (accountId === undefined) {
      fail(res, 401, 'unauthorized', 'Log in first')
      return
    }
    ledger
      .balance(accountId)
      .then((b) => {
        res.json({
          success: true,
          data: {
            accountId,
            accountType: b.accountType,
            balance: b.balance,
            available: b.available,
            pending: b.pending,
            unlimited: b.unlimited,
          },
        })
      })
      .catch(next)
  })

  // Checkout: stands in for the payment provider, which would call the webhook after payment.
  app.post('/billing/checkout', (req, res, next) => {
    const accountId = accountOf(req)
    if (accountId === undefined) {
      fail(res, 401, 'unauthorized', 'Log in first')
      return
    }
    const pack = (req.body as { pack?: unknown } | undefined)?.pack
    if (typeof pack !== 'string' || !(pack in PACKS)) {
      fail(res, 400, 'bad_request', `pack must be one of ${Object.keys(PACKS).join(', ')}`)
      return
    }
    const event = {
      id: `evt_${randomBytes(12).toString('base64url')}`,
      type: 'checkout.completed',
      data: { accountId, pack },
    }
    creditEvent(event).then(
      ({ status, body }) => void res.status(status).json(body),
      (error: unknown) => {
        if (isCreditError(error) && error.code === 'ERR_CREDIT_TOPUP_NOT_ALLOWED') {
          fail(
            res,
            403,
            'topup_not_allowed',
            'Guest accounts cannot buy credits',
            'Register to buy credit packs',
          )
        } else next(error)
      },
    )
  })

  app.post('/billing/subscribe', (req, res, next) => {
    const accountId = accountOf(req)
    if (accountId === undefined) {
      fail(res, 401, 'unauthorized', 'Log in first')
      return
    }
    const plan = (req.body as { plan?: unknown } | undefined)?.plan
    if (typeof plan !== 'string' || !(plan in PLANS)) {
      fail(res, 400, 'bad_request', `plan must be one of ${Object.keys(PLANS).join(', ')}`)
      return
    }
    const key = req.get('idempotency-key') ?? `sub-${randomUUID()}`
    ledger
      .subscribe(accountId, {
        plan,
        monthlyCredits: PLANS[plan as keyof typeof PLANS],
        idempotencyKey: key,
      })
      .then((result) => void res.json({ success: true, data: result }))
      .catch((error: unknown) => {
        if (isCreditError(error) && error.code === 'ERR_CREDIT_TOPUP_NOT_ALLOWED') {
          fail(
            res,
            403,
            'topup_not_allowed',
            'Guest accounts cannot subscribe',
            'Register to subscribe',
          )
        } else next(error)
      })
  })

  app.post('/billing/cancel', (req, res, next) => {
    const accountId = accountOf(req)
    if (accountId === undefined) {
      fail(res, 401, 'unauthorized', 'Log in first')
      return
    }
    ledger
      .endSubscription(accountId)
      .then((result) => void res.json({ success: true, data: result }))
      .catch(next)
  })

  // Priced endpoints, one per tier. Bad parameters answer 400 and cost nothing (4xx is released).
  const number = (req: Request, name: string, fallback?: number): number => {
    const raw = req.query[name]
    if (raw === undefined && fallback !== undefined) return fallback
    if (typeof raw !== 'string' || raw.trim() === '' || !Number.isFinite(Number(raw)))
      throw new RangeError(`${name} must be a number`)
    return Number(raw)
  }
  const text = (req: Request, name: string): string => {
    const raw = req.query[name]
    if (typeof raw !== 'string') throw new RangeError(`${name} is required`)
    return raw
  }
  const compute = (fn: (req: Request) => object) => (req: Request, res: Response) => {
    try {
      res.json({ success: true, data: fn(req) })
    } catch (error) {
      if (!(error instanceof RangeError)) throw error
      fail(res, 400, 'bad_parameters', 'Bad parameters', error.message)
    }
  }

  app.get(
    '/quantlib/calendar/business-day',
    creditGate('free'),
    compute((req) => {
      const date = text(req, 'date')
      const holidays =
        typeof req.query['holidays'] === 'string'
          ? req.query['holidays'].split(',').filter(Boolean)
          : []
      holidays.forEach(parseIsoDate)
      return { date, businessDay: isBusinessDay(date, holidays) }
    }),
  )
  app.get(
    '/quantlib/stats/summary',
    creditGate('basic'),
    compute((req) => meanAndStdDev(parseSeries(text(req, 'values')))),
  )
  app.get(
    '/quantlib/options/black-scholes',
    creditGate('standard'),
    compute((req) => {
      const kind = req.query['kind'] ?? 'call'
      if (kind !== 'call' && kind !== 'put') throw new RangeError('kind must be call or put')
      return blackScholes({
        spot: number(req, 'spot'),
        strike: number(req, 'strike'),
        rate: number(req, 'rate'),
        volatility: number(req, 'volatility'),
        years: number(req, 'years'),
        kind,
      })
    }),
  )
  app.get(
    '/quantlib/risk/var',
    creditGate('pro'),
    compute((req) =>
      historicalVar(
        parseSeries(text(req, 'returns')),
        number(req, 'confidence', 0.95),
        number(req, 'position', 1),
        number(req, 'horizon', 1),
      ),
    ),
  )

  app.get('/', (_req, res) => {
    res.redirect('/dashboard')
  })
  app.get('/dashboard', (_req, res) => {
    res.set(
      'content-security-policy',
      "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
    )
    res.type('html').send(dashboardHtml)
  })

  app.use((_req: Request, res: Response) => {
    fail(res, 404, 'not_found', 'No such route')
  })

  return {
    app,
    ledger,
    creditGate,
    signWebhook: (payload: string) => signWebhook(payload, webhookSecret),
    issue,
  }
}

import type { IncomingMessage, ServerResponse } from 'node:http'

import { describe } from './amount.js'
import { CreditConfigError, isCreditError } from './errors.js'
import type { IdentifyFunction } from './identity/types.js'
import { sendJson, sendUnavailable } from './http.js'
import {
  INVALID_ACCOUNT,
  authenticateHeader,
  challengeOf,
  classifyIdentity,
  type Caller,
} from './identity/answer.js'
import { checkAccountId } from './ledger/keys.js'
import type {
  SubscriptionInfo,
  Transaction,
  TransactionsOptions,
  TransactionsPage,
  UsageCounters,
  UsageGranularity,
  UsageOptions,
  UsageReport,
} from './ledger/lifecycle-types.js'
import type { BalanceResult } from './ledger/types.js'
import { configInteger, plainOptions, suggest } from './validate.js'

/** What {@link creditRoutes} needs of a ledger: {@link RedisLedger} has it. */
export interface CreditRoutesLedger {
  balance(accountId: string): Promise<BalanceResult>
  usage(accountId: string, options: UsageOptions): Promise<UsageReport>
  transactions(accountId: string, options?: TransactionsOptions): Promise<TransactionsPage>
}

/** The `next` of a Connect/Express handler. */
export type RoutesNextFunction = (error?: unknown) => void

/** A Connect/Express request handler, as the routes are made of. */
export type CreditRouteHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  next: RoutesNextFunction,
) => void

/** What the `router` option must make: an Express (4 or 5) `Router`, or anything with `get`. */
export interface RouterLike {
  get(path: string, ...handlers: CreditRouteHandler[]): unknown
}

/** Options of {@link creditRoutes}. */
export interface CreditRoutesOptions<R extends RouterLike = RouterLike> {
  /** The ledger to read (a {@link RedisLedger}). */
  readonly ledger: CreditRoutesLedger
  /** Who is calling, from their verified credential: the same contract as the middleware's. */
  readonly identify: IdentifyFunction
  /**
   * A router factory, such as `express.Router` (Express 4 or 5): the routes are registered on a
   * router it makes, and that router is returned. Defaults to a built-in handler that needs no
   * Express import, mounts the same way (`app.use('/me', creditRoutes(…))`) and answers only
   * `GET`/`HEAD` of its three paths, passing everything else on with `next()`.
   */
  readonly router?: () => R
  /** Seconds in the `Retry-After` header of a 503. Defaults to 5. */
  readonly retryAfterSeconds?: number
}

const OPTION_KEYS = ['ledger', 'identify', 'router', 'retryAfterSeconds'] as const
const HOUR_MS = 60 * 60 * 1000
const DAY_MS = 24 * HOUR_MS
/** The span GET /usage shows when `from` is omitted, per granularity. */
const DEFAULT_SPAN: Readonly<Record<UsageGranularity, number>> = {
  hour: 24 * HOUR_MS,
  day: 30 * DAY_MS,
  month: 365 * DAY_MS,
}
const GRANULARITIES = Object.keys(DEFAULT_SPAN) as UsageGranularity[]

/** A request the route refuses with a 400: the detail names the bad parameter. */
class BadRequest extends Error {}

interface Config {
  readonly ledger: CreditRoutesLedger
  readonly identify: IdentifyFunction
  readonly challenge: string
  readonly retryAfterSeconds: number
}

function parseOptions(
  input: unknown,
): Config & { readonly router: (() => RouterLike) | undefined } {
  const o = plainOptions(input, OPTION_KEYS, 'creditRoutes')
  const ledger = o['ledger'] as Partial<CreditRoutesLedger> | undefined
  if (
    typeof ledger?.balance !== 'function' ||
    typeof ledger.usage !== 'function' ||
    typeof ledger.transactions !== 'function'
  ) {
    throw new CreditConfigError(
      'ERR_CREDIT_INVALID_OPTION',
      'creditRoutes needs `ledger`: a RedisLedger (balance, usage and transactions)',
    )
  }
  const identify = o['identify']
  if (typeof identify !== 'function') {
    throw new CreditConfigError(
      'ERR_CREDIT_INVALID_OPTION',
      `creditRoutes needs \`identify\`: a function of the request (fromJwt, fromApiKey or your own), got ${describe(identify)}`,
    )
  }
  const challenge = challengeOf(identify as IdentifyFunction)
  const router = o['router']
  if (router !== undefined && typeof router !== 'function') {
    throw new CreditConfigError(
      'ERR_CREDIT_INVALID_OPTION',
      `router must be a router factory such as express.Router, got ${describe(router)}`,
    )
  }
  return Object.freeze({
    ledger: ledger as CreditRoutesLedger,
    identify: identify as IdentifyFunction,
    challenge,
    retryAfterSeconds: configInteger(o['retryAfterSeconds'] ?? 5, 'retryAfterSeconds', 1, 86_400),
    router: router as (() => RouterLike) | undefined,
  })
}

const isoOrNull = (ms: number | null): string | null =>
  ms === null ? null : new Date(ms).toISOString()

/** The query of a request URL, each parameter at most once and only the `known` ones. */
function query(req: IncomingMessage, known: readonly string[]): ReadonlyMap<string, string> {
  const url = req.url ?? ''
  const at = url.indexOf('?')
  const params = new URLSearchParams(at === -1 ? '' : url.slice(at + 1))
  const out = new Map<string, string>()
  for (const [name, value] of params) {
    if (!known.includes(name)) {
      const hint = suggest(name, known)
      throw new BadRequest(
        `Unknown query parameter "${name}"${hint === undefined ? '' : `; did you mean "${hint}"?`}${
          known.length === 0 ? '' : ` (accepted: ${known.join(', ')})`
        }`,
      )
    }
    if (out.has(name)) throw new BadRequest(`Query parameter "${name}" is given more than once`)
    out.set(name, value)
  }
  return out
}

/** An ISO 8601 date or date-time, or epoch milliseconds. */
function time(value: string, name: string): number {
  const ms = /^\d{1,16}$/.test(value)
    ? Number(value)
    : /^\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(value)
      ? Date.parse(value)
      : Number.NaN
  if (!Number.isSafeInteger(ms) || ms < 0) {
    throw new BadRequest(
      `Query parameter "${name}" must be an ISO 8601 date (2026-01-31, 2026-01-31T12:00:00Z) or epoch milliseconds, got ${describe(value)}`,
    )
  }
  return ms
}

function counters(c: UsageCounters): UsageCounters {
  return {
    requests: c.requests,
    credits: c.credits,
    refunds: c.refunds,
    avgLatencyMs: c.avgLatencyMs,
  }
}

function subscriptionView(s: SubscriptionInfo | null): object | null {
  if (s === null) return null
  return {
    plan: s.plan,
    monthlyCredits: s.monthlyCredits,
    rollover: s.rollover,
    startsAt: isoOrNull(s.startsAt),
    periodStart: isoOrNull(s.periodStart),
    periodEnd: isoOrNull(s.periodEnd),
    renewsAt: isoOrNull(s.renewsAt),
    endsAt: isoOrNull(s.endsAt),
  }
}

function transactionView(t: Transaction): object {
  return {
    seq: t.seq,
    time: isoOrNull(t.time),
    kind: t.kind,
    amount: t.amount,
    balanceAfter: t.balanceAfter,
    source: t.source,
    endpoint: t.endpoint,
  }
}

type Reader = (config: Config, accountId: string, req: IncomingMessage) => Promise<object>

const readCredits: Reader = async (config, accountId, req) => {
  query(req, [])
  const b = await config.ledger.balance(accountId)
  return {
    accountId: b.accountId,
    accountType: b.accountType,
    unlimited: b.unlimited,
    balance: b.balance,
    available: b.available,
    pending: b.pending,
    grants: b.buckets.map((g) => ({
      source: g.source,
      amount: g.amount,
      expiresAt: isoOrNull(g.expiresAt),
    })),
    subscription: subscriptionView(b.subscription),
  }
}

const readUsage: Reader = async (config, accountId, req) => {
  const q = query(req, ['from', 'to', 'granularity', 'endpoint'])
  const granularity = (q.get('granularity') ?? 'day') as UsageGranularity
  if (!GRANULARITIES.includes(granularity)) {
    throw new BadRequest(
      `Query parameter "granularity" must be one of ${GRANULARITIES.join(', ')}, got ${describe(granularity)}`,
    )
  }
  const toParam = q.get('to')
  const fromParam = q.get('from')
  const to = toParam === undefined ? Date.now() + 1 : time(toParam, 'to')
  const from =
    fromParam === undefined ? Math.max(0, to - DEFAULT_SPAN[granularity]) : time(fromParam, 'from')
  if (to <= from) throw new BadRequest('Query parameter "to" must be after "from"')
  const endpoint = q.get('endpoint')
  const r = await config.ledger.usage(accountId, {
    from,
    to,
    granularity,
    ...(endpoint === undefined ? {} : { endpoint }),
  })
  return {
    granularity: r.granularity,
    from: isoOrNull(r.from),
    to: isoOrNull(r.to),
    endpoint: r.endpoint,
    summary: counters(r.totals),
    series: r.series.map((p) => ({
      start: isoOrNull(p.start),
      end: isoOrNull(p.end),
      ...counters(p),
    })),
    endpoints: r.endpoints.map((e) => ({ endpoint: e.endpoint, ...counters(e) })),
    truncated: r.truncated,
  }
}

const readTransactions: Reader = async (config, accountId, req) => {
  const q = query(req, ['limit', 'cursor'])
  const limitParam = q.get('limit')
  if (limitParam !== undefined && !/^[1-9]\d{0,2}$/.test(limitParam)) {
    throw new BadRequest(
      `Query parameter "limit" must be an integer from 1 to 500, got ${describe(limitParam)}`,
    )
  }
  const cursor = q.get('cursor')
  const page = await config.ledger.transactions(accountId, {
    ...(limitParam === undefined ? {} : { limit: Number(limitParam) }),
    ...(cursor === undefined ? {} : { cursor }),
  })
  return {
    transactions: page.transactions.map(transactionView),
    nextCursor: page.nextCursor,
  }
}

const ROUTES: Readonly<Record<string, Reader>> = {
  '/credits': readCredits,
  '/usage': readUsage,
  '/transactions': readTransactions,
}

/** The message of a creditgate error without its README anchor: the detail of a 4xx body. */
const detailOf = (error: Error): string => error.message.replace(/ \(see README#[a-z_]+\)$/, '')

async function answer(
  config: Config,
  read: Reader,
  req: IncomingMessage,
  res: ServerResponse,
  next: RoutesNextFunction,
): Promise<void> {
  let caller: Caller
  try {
    caller = classifyIdentity(await config.identify(req))
  } catch (error) {
    next(error)
    return
  }
  let accountId: string | undefined
  if (caller.kind === 'identity') {
    try {
      accountId = checkAccountId(caller.identity.accountId)
    } catch {
      caller = { kind: 'rejected', rejection: INVALID_ACCOUNT }
    }
  }
  if (caller.kind === 'none' || accountId === undefined) {
    const rejection = caller.kind === 'rejected' ? caller.rejection : undefined
    sendJson(
      res,
      401,
      {
        success: false,
        error: 'unauthorized',
        message: rejection === undefined ? 'Authentication required' : 'Invalid credentials',
        detail:
          rejection === undefined
            ? `Send credentials (${config.challenge})`
            : rejection.description,
      },
      { 'WWW-Authenticate': authenticateHeader(config.challenge, rejection) },
    )
    return
  }
  let data: object
  try {
    data = await read(config, accountId, req)
  } catch (error) {
    if (error instanceof BadRequest) {
      sendJson(res, 400, {
        success: false,
        error: 'bad_request',
        message: 'Invalid query parameter',
        detail: error.message,
      })
    } else if (isCreditError(error) && error.code === 'ERR_CREDIT_ACCOUNT_NOT_FOUND') {
      sendJson(res, 404, {
        success: false,
        error: 'account_not_found',
        message: 'Account not found',
        detail: 'There is no credit account for this caller yet',
      })
    } else if (
      isCreditError(error) &&
      (error.code === 'ERR_CREDIT_INVALID_ARGUMENT' || error.code === 'ERR_CREDIT_INVALID_AMOUNT')
    ) {
      sendJson(res, 400, {
        success: false,
        error: 'bad_request',
        message: 'Invalid query parameter',
        detail: detailOf(error),
      })
    } else if (isCreditError(error) && error.code === 'ERR_CREDIT_STORE_UNAVAILABLE') {
      sendUnavailable(res, config.retryAfterSeconds)
    } else {
      next(error) // a bug or a broken reply: the host's error handler decides
    }
    return
  }
  sendJson(res, 200, { success: true, data })
}

/** A synchronous handler that routes every rejection to `next` (Express 4 ignores promises). */
function handler(config: Config, read: Reader): CreditRouteHandler {
  return function creditRoute(req, res, next) {
    answer(config, read, req, res, next).catch(next)
  }
}

/**
 * An Express router of the caller's own credit data, each answer in a `{ success: true, data }`
 * envelope: `GET /credits` (balance, grants and subscription), `GET /usage` (summary, series
 * and per-endpoint breakdown; `from`, `to` as ISO 8601 or epoch ms, `granularity`
 * `hour | day | month`, default `day` over the last 30 days, and `endpoint`) and
 * `GET /transactions` (newest first; `limit` 1 to 500, `cursor` from `nextCursor`). Errors are
 * `{ success: false, error, message, detail }`: 401 without or with a bad credential, 400 for a
 * bad parameter, 404 when the caller has no account, 503 (with `Retry-After`) when the ledger
 * cannot be reached. Nothing is written but lazy maintenance.
 *
 * @example
 * ```ts
 * app.use('/me', creditRoutes({ ledger, identify }))               // no Express import needed
 * app.use('/me', creditRoutes({ ledger, identify, router: express.Router }))   // a real Router
 * ```
 * @throws {@link CreditConfigError} `ERR_CREDIT_INVALID_OPTION` on a bad option
 */
export function creditRoutes<R extends RouterLike>(
  options: CreditRoutesOptions<R> & { readonly router: () => R },
): R
export function creditRoutes(options: CreditRoutesOptions): CreditRouteHandler
export function creditRoutes(options: CreditRoutesOptions): CreditRouteHandler | RouterLike {
  const { router, ...config } = parseOptions(options)
  const handlers = Object.entries(ROUTES).map(
    ([path, read]) => [path, handler(config, read)] as const,
  )
  if (router !== undefined) {
    const made = router()
    for (const [path, h] of handlers) made.get(path, h)
    return made
  }
  const byPath = new Map(handlers)
  return function creditRoutes(req, res, next) {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      next()
      return
    }
    const url = req.url ?? '/'
    const end = url.indexOf('?')
    let path = (end === -1 ? url : url.slice(0, end)).toLowerCase()
    if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1)
    const h = byPath.get(path)
    if (h === undefined) {
      next()
      return
    }
    h(req, res, next)
  }
}

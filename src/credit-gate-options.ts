import type { IncomingMessage } from 'node:http'

import { describe, toMilli } from './amount.js'
import { CreditConfigError, isCreditError } from './errors.js'
import { challengeOf } from './identity/answer.js'
import type { Identity, IdentifyFunction } from './identity/types.js'
import type { CreditLedger } from './ledger/types.js'
import {
  ACCOUNT_TYPE,
  MAX_ENDPOINT_BYTES,
  configBoolean,
  configInteger,
  plainOptions,
  suggest,
} from './validate.js'

/** The tiers every gate has unless the host defines its own: credits per request. */
export const DEFAULT_TIERS = Object.freeze({ free: 0, basic: 1, standard: 2, pro: 5 })

/** The names of {@link DEFAULT_TIERS}. */
export type DefaultTierName = keyof typeof DEFAULT_TIERS

/**
 * Opens an unknown account on first sight: returns the account type to open it as, or
 * `false`/`undefined` to answer 401 instead.
 */
export type OpenAccountsFunction = (identity: Identity) => string | false | null | undefined

/** Options of {@link createCreditGate}. `T` is the union of the tier names. */
export interface CreditGateOptions<T extends string = DefaultTierName> {
  /** The ledger that holds the balances: a {@link RedisLedger}, or anything implementing {@link CreditLedger}. Required. */
  readonly ledger: CreditLedger
  /**
   * Finds the paying account from the request's verified credential (`fromJwt`, `fromApiKey`, or
   * your own function). Required.
   */
  readonly identify: IdentifyFunction
  /**
   * Tier names and their price in credits per request (up to 3 decimals). Host tiers replace the
   * defaults. Defaults to `{ free: 0, basic: 1, standard: 2, pro: 5 }`.
   */
  readonly tiers?: Readonly<Record<T, number>>
  /**
   * Which tiers each account type may call, e.g. `{ guest: ['free'] }`. Types not listed may
   * call every tier. Decided by the ledger in the same round trip as the reserve. Defaults to
   * every type calling every tier.
   */
  readonly tierAccess?: Readonly<Record<string, readonly NoInfer<T>[]>>
  /**
   * What to do with an identity that has no ledger account yet: `false` answers 401; an account
   * type name (`'guest'`) opens it as that type in the same round trip as the reserve; a
   * function picks the type per identity (return `false` to answer 401). When opening, an
   * `accountType` carried by the identity wins. Defaults to `false`.
   */
  readonly openAccounts?: false | string | OpenAccountsFunction
  /**
   * Whether a finished response with this status is charged. Anything else is released.
   * Defaults to 2xx: `(status) => status >= 200 && status < 300`.
   */
  readonly chargeWhen?: (statusCode: number) => boolean
  /**
   * When the ledger cannot be reached, run the handler anyway, uncharged, and emit `unmetered`.
   * Defaults to `false`: fail closed with 503 and `Retry-After`.
   */
  readonly failOpen?: boolean
  /** Seconds sent in `Retry-After` with a 503. Defaults to `5`. */
  readonly retryAfterSeconds?: number
  /**
   * Milliseconds to wait for the reserve before answering 503 (or running unmetered with
   * `failOpen`). A hold granted after that is released at once. Defaults to `2000`.
   */
  readonly ledgerTimeoutMs?: number
  /**
   * How long a hold lives if it is never settled (the process died), passed to `reserve`.
   * Defaults to the ledger's own (30 000 ms for {@link RedisLedger}).
   */
  readonly holdMs?: number
  /**
   * Emit `lowBalance` when a charge takes an account's available credits from at least this
   * many to fewer. Defaults to none (no `lowBalance` events).
   */
  readonly lowBalanceThreshold?: number
}

/** Options of one gated route: `creditGate(tier, routeOptions)`. */
export interface RouteOptions<Req extends IncomingMessage = IncomingMessage> {
  /**
   * The price of this route in credits, instead of the tier's: a number, or a function of the
   * request (a batch of n items costs n). Its result is checked per request: an invalid amount
   * is passed to `next(err)` and nothing is reserved. Defaults to the tier's price.
   */
  readonly cost?: number | ((req: Req) => number | string)
  /**
   * The endpoint recorded for usage when the route pattern is not known (the gate is mounted
   * with `app.use`). Defaults to `req.baseUrl + req.route.path`, else `req.baseUrl`, else `/`.
   */
  readonly endpoint?: string
}

/** The validated, precomputed configuration of a gate. */
export interface GateConfig {
  readonly ledger: CreditLedger
  readonly identify: IdentifyFunction
  /** The `WWW-Authenticate` challenge, from `identify.challenge`. */
  readonly challenge: string
  /** Tier name → price in milli-credits. */
  readonly tiers: ReadonlyMap<string, number>
  /** Tier name → account types allowed to pay for it; absent when every type may. */
  readonly allowedTypes: ReadonlyMap<string, readonly string[]>
  readonly openAccounts: false | OpenAccountsFunction
  readonly chargeWhen: (statusCode: number) => boolean
  readonly failOpen: boolean
  readonly retryAfterSeconds: number
  readonly ledgerTimeoutMs: number
  readonly holdMs: number | undefined
  /** In milli-credits. */
  readonly lowBalanceThreshold: number | undefined
}

/** The route's fixed price in milli-credits, or a per-request pricing function. */
export interface RouteConfig {
  readonly tier: string
  readonly price: number | ((req: IncomingMessage) => unknown)
  readonly endpoint: string | undefined
}

const GATE_KEYS = [
  'ledger',
  'identify',
  'tiers',
  'tierAccess',
  'openAccounts',
  'chargeWhen',
  'failOpen',
  'retryAfterSeconds',
  'ledgerTimeoutMs',
  'holdMs',
  'lowBalanceThreshold',
] as const
const ROUTE_KEYS = ['cost', 'endpoint'] as const

/** setTimeout's largest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1
export { MAX_ENDPOINT_BYTES }

const invalid = (message: string, cause?: unknown): CreditConfigError =>
  new CreditConfigError(
    'ERR_CREDIT_INVALID_OPTION',
    message,
    cause === undefined ? undefined : { cause },
  )

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)

/** Credits as milli-credits, or a config error naming `what`. */
function configCredits(value: unknown, what: string): number {
  try {
    return toMilli(value, what)
  } catch (error) {
    throw invalid(
      isCreditError(error) ? error.message.replace(/ \(see README#.*\)$/, '') : what,
      error,
    )
  }
}

/** An endpoint text the ledger accepts, or a config error. */
function configEndpoint(value: unknown, what: string): string {
  if (
    typeof value !== 'string' ||
    value.length === 0 ||
    Buffer.byteLength(value) > MAX_ENDPOINT_BYTES ||
    !value.isWellFormed() ||
    // eslint-disable-next-line no-control-regex
    /[\u0000-\u001f\u007f|]/.test(value)
  ) {
    throw invalid(
      `${what} must be 1 to ${MAX_ENDPOINT_BYTES} bytes of printable text without "|", got ${describe(value)}`,
    )
  }
  return value
}

/** The account types the ledger knows, when it tells (RedisLedger does). */
function ledgerAccountTypes(ledger: CreditLedger): readonly string[] | undefined {
  const types = (ledger as { readonly accountTypes?: unknown }).accountTypes
  return Array.isArray(types) && types.every((t) => typeof t === 'string') ? types : undefined
}

function checkAccountType(
  value: unknown,
  what: string,
  known: readonly string[] | undefined,
): string {
  if (
    typeof value !== 'string' ||
    !ACCOUNT_TYPE.test(value) ||
    (known !== undefined && !known.includes(value))
  ) {
    const hint =
      typeof value === 'string' && known !== undefined ? suggest(value, known) : undefined
    throw invalid(
      `${what} must be an account type${known === undefined ? '' : ` the ledger knows (${known.join(', ')})`}, got ${describe(value)}${hint === undefined ? '' : `; did you mean "${hint}"?`}`,
    )
  }
  return value
}

function parseTiers(input: unknown): ReadonlyMap<string, number> {
  const source = input ?? DEFAULT_TIERS
  if (!isObject(source) || Object.keys(source).length === 0) {
    throw invalid(
      `tiers must be an object of tier name → credits with at least one tier, got ${describe(input)}`,
    )
  }
  const tiers = new Map<string, number>()
  for (const [name, credits] of Object.entries(source)) {
    // eslint-disable-next-line no-control-regex
    if (name.length === 0 || name.length > 64 || /[\u0000-\u001f\u007f]/.test(name)) {
      throw invalid(`tier names must be 1 to 64 printable characters, got ${describe(name)}`)
    }
    tiers.set(name, configCredits(credits, `tiers.${name}`))
  }
  return tiers
}

function unknownTier(
  name: unknown,
  tiers: ReadonlyMap<string, number>,
  where: string,
): CreditConfigError {
  const known = [...tiers.keys()]
  const hint = typeof name === 'string' ? suggest(name, known) : undefined
  return new CreditConfigError(
    'ERR_CREDIT_UNKNOWN_TIER',
    `${where}: unknown tier ${describe(name)}${hint === undefined ? '' : `; did you mean "${hint}"?`} (tiers: ${known.join(', ')})`,
  )
}

function parseTierAccess(
  input: unknown,
  tiers: ReadonlyMap<string, number>,
  known: readonly string[] | undefined,
): ReadonlyMap<string, readonly string[]> {
  const allowed = new Map<string, readonly string[]>()
  if (input === undefined) return allowed
  if (!isObject(input))
    throw invalid(
      `tierAccess must be an object of account type → tier names, got ${describe(input)}`,
    )
  const access = new Map<string, ReadonlySet<string>>()
  for (const [type, list] of Object.entries(input)) {
    checkAccountType(type, 'tierAccess keys', known)
    if (!Array.isArray(list))
      throw invalid(`tierAccess.${type} must be an array of tier names, got ${describe(list)}`)
    for (const tier of list as unknown[]) {
      if (typeof tier !== 'string' || !tiers.has(tier))
        throw unknownTier(tier, tiers, `tierAccess.${type}`)
    }
    access.set(type, new Set(list as string[]))
  }
  for (const tier of tiers.keys()) {
    const restricted = [...access].some(([, list]) => !list.has(tier))
    if (!restricted) continue
    // The ledger takes an allow-list of types, so a restriction needs every type it knows.
    if (known === undefined) {
      throw invalid(
        'tierAccess needs a ledger that lists its account types (`ledger.accountTypes`, as RedisLedger does)',
      )
    }
    allowed.set(tier, Object.freeze(known.filter((type) => access.get(type)?.has(tier) ?? true)))
  }
  return allowed
}

function parseOpenAccounts(
  input: unknown,
  known: readonly string[] | undefined,
): false | OpenAccountsFunction {
  if (input === undefined || input === false) return false
  if (typeof input === 'function') return input as OpenAccountsFunction
  const type = checkAccountType(input, 'openAccounts', known)
  return () => type
}

function configFunction<F>(value: unknown, what: string, fallback: F): F {
  if (value === undefined) return fallback
  if (typeof value !== 'function')
    throw invalid(`${what} must be a function, got ${describe(value)}`)
  return value as F
}

const is2xx = (statusCode: number): boolean => statusCode >= 200 && statusCode < 300

/**
 * Validates and precomputes the options of {@link createCreditGate}, once.
 *
 * @throws {@link CreditConfigError} `ERR_CREDIT_INVALID_OPTION` or `ERR_CREDIT_UNKNOWN_TIER`
 */
export function parseGateOptions(input: unknown): GateConfig {
  const o = plainOptions(input, GATE_KEYS, 'createCreditGate')
  const ledger = o['ledger']
  if (
    !isObject(ledger) ||
    typeof ledger['reserve'] !== 'function' ||
    typeof ledger['commit'] !== 'function' ||
    typeof ledger['release'] !== 'function'
  ) {
    throw invalid(
      `createCreditGate needs \`ledger\`: a RedisLedger or another CreditLedger (reserve, commit, release), got ${describe(ledger)}`,
    )
  }
  const identify = o['identify']
  if (typeof identify !== 'function') {
    throw invalid(
      `createCreditGate needs \`identify\`: fromJwt(…), fromApiKey(…) or a function (req) => identity, got ${describe(identify)}`,
    )
  }
  const challenge = challengeOf(identify as IdentifyFunction)
  const known = ledgerAccountTypes(ledger as unknown as CreditLedger)
  const tiers = parseTiers(o['tiers'])
  const threshold = o['lowBalanceThreshold']
  return Object.freeze({
    ledger: ledger as unknown as CreditLedger,
    identify: identify as IdentifyFunction,
    challenge,
    tiers,
    allowedTypes: parseTierAccess(o['tierAccess'], tiers, known),
    openAccounts: parseOpenAccounts(o['openAccounts'], known),
    chargeWhen: configFunction(o['chargeWhen'], 'chargeWhen', is2xx),
    failOpen: o['failOpen'] === undefined ? false : configBoolean(o['failOpen'], 'failOpen'),
    retryAfterSeconds: configInteger(o['retryAfterSeconds'] ?? 5, 'retryAfterSeconds', 0, 86_400),
    ledgerTimeoutMs: configInteger(
      o['ledgerTimeoutMs'] ?? 2000,
      'ledgerTimeoutMs',
      1,
      MAX_TIMER_MS,
    ),
    holdMs: o['holdMs'] === undefined ? undefined : configInteger(o['holdMs'], 'holdMs', 1),
    lowBalanceThreshold:
      threshold === undefined ? undefined : configCredits(threshold, 'lowBalanceThreshold'),
  })
}

/**
 * Validates one route's tier and options, at route definition.
 *
 * @throws {@link CreditConfigError} `ERR_CREDIT_UNKNOWN_TIER` or `ERR_CREDIT_INVALID_OPTION`
 */
export function parseRoute(config: GateConfig, tier: unknown, input: unknown): RouteConfig {
  const tierPrice = typeof tier === 'string' ? config.tiers.get(tier) : undefined
  if (typeof tier !== 'string' || tierPrice === undefined)
    throw unknownTier(tier, config.tiers, 'creditGate')
  const o = plainOptions(input ?? {}, ROUTE_KEYS, `creditGate('${tier}')`)
  const cost = o['cost']
  let price: RouteConfig['price'] = tierPrice
  if (typeof cost === 'function') price = cost as (req: IncomingMessage) => unknown
  else if (cost !== undefined) price = configCredits(cost, `creditGate('${tier}') cost`)
  const endpoint =
    o['endpoint'] === undefined
      ? undefined
      : configEndpoint(o['endpoint'], `creditGate('${tier}') endpoint`)
  return Object.freeze({ tier, price, endpoint })
}

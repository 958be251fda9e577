import { IncomingMessage, type ServerResponse } from 'node:http'

import { describe, fromMilli, toMilli } from './amount.js'
import { CreditArgumentError } from './errors.js'

/** What a gated handler knows about the call it is serving: `getCredits(req)`. */
export interface CreditInfo {
  /** The paying account. */
  readonly accountId: string
  /**
   * The account's type, as the ledger reported it. On a call that made no ledger round trip (a
   * free call, or an unmetered one with `failOpen`), the type the identity carried, if any.
   */
  readonly accountType: string | undefined
  /** The tier of the route. */
  readonly tier: string
  /** The listed price of this call in credits (the tier's, or the route's `cost`). */
  readonly price: number
  /**
   * Credits this call will be charged if it succeeds: what was held (0 for an unlimited account,
   * a free call or an unmetered one), or less after {@link CreditInfo.setCost}.
   */
  readonly cost: number
  /** The ledger hold paying for this call; `undefined` when nothing was reserved. */
  readonly holdId: string | undefined
  /**
   * Credits the account has available with this call's cost taken; `null` when unknown (no
   * ledger round trip) or unlimited.
   */
  readonly remaining: number | null
  /** True for an account that is never charged (enterprise). */
  readonly unlimited: boolean
  /** The verified claims or key record from the identity, if any. */
  readonly claims: Readonly<Record<string, unknown>> | undefined
  /**
   * Charges less than the listed price if this call succeeds (a batch that did less work).
   * Updates `X-Credits-Cost` and `X-Credits-Remaining` when the headers are not yet sent.
   *
   * @param credits - from 0 to {@link CreditInfo.price}, with at most 3 decimals
   * @throws {@link CreditArgumentError} `ERR_CREDIT_INVALID_AMOUNT` for an amount outside that
   * range, `ERR_CREDIT_INVALID_ARGUMENT` once the response has ended
   */
  setCost(credits: number): void
}

/** The mutable state behind a {@link CreditInfo}, owned by the gate. */
export interface CreditState {
  readonly accountId: string
  readonly accountType: string | undefined
  readonly tier: string
  /** Listed price, milli-credits. */
  readonly priceMilli: number
  /** Held, milli-credits. */
  readonly heldMilli: number
  /** Available after the hold, milli-credits; `null` when unknown or unlimited. */
  readonly remainingMilli: number | null
  readonly holdId: string | undefined
  readonly unlimited: boolean
  readonly claims: Readonly<Record<string, unknown>> | undefined
  /** Set by `setCost`: the milli-credits to charge instead of all that was held. */
  actualMilli: number | undefined
  /** Set once the gate has decided how to settle: `setCost` is too late then. */
  settled: boolean
  /**
   * The response whose credit headers `setCost` rewrites while they are not sent yet;
   * `undefined` when the call shows no credit headers (unmetered).
   */
  readonly res: ServerResponse | undefined
  /** The view a handler sees, made the first time one asks for it. */
  view: CreditInfo | undefined
}

const INFO = Symbol('creditgate.info')

/** Credits charged on success, milli-credits. */
export function chargeMilli(state: CreditState): number {
  if (state.unlimited) return 0
  return state.actualMilli ?? state.heldMilli
}

/** Available after this call's final cost, milli-credits; `null` when unknown or unlimited. */
export function remainingMilli(state: CreditState): number | null {
  if (state.remainingMilli === null) return null
  return state.remainingMilli + state.heldMilli - chargeMilli(state)
}

/** Sets `X-Credits-Cost` and `X-Credits-Remaining` (the latter only when it is known). */
export function setCreditHeaders(res: ServerResponse, state: CreditState): void {
  res.setHeader('X-Credits-Cost', String(fromMilli(chargeMilli(state))))
  if (state.unlimited) {
    res.setHeader('X-Credits-Remaining', 'unlimited')
    return
  }
  const remaining = remainingMilli(state)
  if (remaining !== null) res.setHeader('X-Credits-Remaining', String(fromMilli(remaining)))
}

/** The frozen view a handler sees; its getters read the call's live state. */
class CallCredits implements CreditInfo {
  readonly accountId: string
  readonly accountType: string | undefined
  readonly tier: string
  readonly price: number
  readonly holdId: string | undefined
  readonly unlimited: boolean
  readonly claims: Readonly<Record<string, unknown>> | undefined
  readonly #state: CreditState

  constructor(state: CreditState) {
    this.#state = state
    this.accountId = state.accountId
    this.accountType = state.accountType
    this.tier = state.tier
    this.price = fromMilli(state.priceMilli)
    this.holdId = state.holdId
    this.unlimited = state.unlimited
    this.claims = state.claims
    Object.freeze(this)
  }

  get cost(): number {
    return fromMilli(chargeMilli(this.#state))
  }

  get remaining(): number | null {
    const milli = remainingMilli(this.#state)
    return milli === null ? null : fromMilli(milli)
  }

  /** The plain fields, with `cost` and `remaining` as they read now (for `res.json`, logs). */
  toJSON(): Omit<CreditInfo, 'setCost'> {
    return {
      accountId: this.accountId,
      accountType: this.accountType,
      tier: this.tier,
      price: this.price,
      cost: this.cost,
      holdId: this.holdId,
      remaining: this.remaining,
      unlimited: this.unlimited,
      claims: this.claims,
    }
  }

  /** `console.log` and `util.inspect` show `cost` and `remaining` too (they are getters). */
  [Symbol.for('nodejs.util.inspect.custom')](): Omit<CreditInfo, 'setCost'> {
    return this.toJSON()
  }

  // An arrow function, so that `const { setCost } = getCredits(req)` works too.
  readonly setCost = (credits: number): void => {
    const state = this.#state
    if (state.settled) {
      throw new CreditArgumentError(
        'ERR_CREDIT_INVALID_ARGUMENT',
        'setCost was called after the response ended; call it before sending the response',
      )
    }
    const milli = toMilli(credits, 'setCost credits')
    if (milli > state.priceMilli) {
      throw new CreditArgumentError(
        'ERR_CREDIT_INVALID_AMOUNT',
        `setCost credits must be at most the ${fromMilli(state.priceMilli)} credits this call is priced at, got ${describe(credits)}`,
      )
    }
    // Unlimited, free and unmetered calls hold nothing: the lower cost only matters on paper.
    if (state.holdId !== undefined && !state.unlimited) state.actualMilli = milli
    const { res } = state
    if (res !== undefined && !res.headersSent) setCreditHeaders(res, state)
  }
}

/** A request and its response as the view is kept on them (Express's own fields). */
interface Carrier {
  [INFO]?: CreditState
  credits?: unknown
  res?: { locals?: unknown }
}

/**
 * Keeps the call's credit state in `res.locals` under a symbol, for {@link getCredits}: Express
 * makes that object for every request, for what a request's middleware share (helmet keeps its
 * CSP nonce there). Not a property of `req`: Express sets the prototype of every request, which
 * gives each its own hidden class in V8, so each new property builds another one: two
 * properties cost 3.9 µs a request in an Express 5 app under load, a key of `res.locals` 0.2 µs.
 * Not a WeakMap keyed by the request: one entry per request cost about 10 µs in the garbage
 * collector's ephemeron work. Without `res.locals` (not Express), a property of `req`. The
 * frozen view itself is made only when a handler asks for it.
 */
export function attachCreditInfo(req: object, res: object | undefined, state: CreditState): void {
  const locals = (res as { locals?: unknown } | undefined)?.locals
  if (typeof locals === 'object' && locals !== null) (locals as Carrier)[INFO] = state
  else (req as Carrier)[INFO] = state
  offerCredits(req, state)
}

/** The frozen view of a call's state, made once. */
function viewOf(state: CreditState): CreditInfo {
  state.view ??= new CallCredits(state)
  return state.view
}

/** `req.credits` as this library defines it on Express's request prototype (see offerCredits). */
const CREDITS: PropertyDescriptor = {
  configurable: true,
  enumerable: false,
  get(this: object): CreditInfo | undefined {
    return getCredits(this)
  },
  // Assigning `req.credits` gives that request a value of its own, as on any plain property.
  set(this: object, value: unknown): void {
    Object.defineProperty(this, 'credits', {
      configurable: true,
      enumerable: true,
      writable: true,
      value,
    })
  },
}

/** Request prototypes on whose chain `credits` is {@link CREDITS}, and those where it cannot be. */
const offering = new WeakSet<object>()
const notOffering = new WeakSet<object>()

/**
 * `req.credits`, the convenience for plain JavaScript, without a property of the request's own:
 * a getter of the view, defined once at the base of the request's prototype chain, the object
 * just above `http.IncomingMessage.prototype` (Express's `express.request`, made for extensions
 * like this one, and the prototype of every app's and sub-app's requests, so a request a
 * sub-app hands back still has it). Where the chain is not such a chain, or an app has a
 * `credits` of its own on it, a property of the request, as before.
 */
function offerCredits(req: object, state: CreditState): void {
  const proto: unknown = Object.getPrototypeOf(req)
  if (typeof proto === 'object' && proto !== null) {
    if (offering.has(proto)) return
    if (!notOffering.has(proto)) {
      if (defineCredits(proto)) {
        offering.add(proto)
        return
      }
      notOffering.add(proto)
    }
  }
  ;(req as Carrier).credits = viewOf(state)
}

/** Makes `credits` on the chain from `proto` {@link CREDITS}; false where it cannot. */
function defineCredits(proto: object): boolean {
  let base: object | undefined
  for (let p: unknown = proto; p !== IncomingMessage.prototype; p = Object.getPrototypeOf(p)) {
    if (typeof p !== 'object' || p === null) return false // not an http request's chain
    const own = Object.getOwnPropertyDescriptor(p, 'credits')
    if (own !== undefined) return own.get === CREDITS.get
    base = p
  }
  if (base === undefined || !Object.isExtensible(base)) return false
  Object.defineProperty(base, 'credits', CREDITS)
  return true
}

/**
 * The credit details of a request that passed a credit gate: account, price, hold, remaining
 * balance, and `setCost` to charge less. Also available as `req.credits`.
 *
 * @param req - the request a gated handler received
 * @returns the details, or `undefined` when no credit gate let this request through
 */
export function getCredits(req: object): CreditInfo | undefined {
  const carrier = req as Carrier
  const locals: unknown = carrier.res?.locals
  const state =
    (typeof locals === 'object' && locals !== null ? (locals as Carrier)[INFO] : undefined) ??
    carrier[INFO]
  return state === undefined ? undefined : viewOf(state)
}

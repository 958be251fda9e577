import type { SubscriptionInfo } from './lifecycle-types.js'

/** How one account type behaves. Every field has a default; see {@link DEFAULT_ACCOUNT_TYPES}. */
export interface AccountTypeConfig {
  /** Credits granted once when the account opens. Defaults to 0. */
  readonly signupCredits?: number
  /** Milliseconds after opening when the signup credits expire; omit for never. */
  readonly signupExpiresAfterMs?: number
  /** Whether `grant` may add credits to it. Defaults to `true`. */
  readonly topUps?: boolean
  /** Never charged: every reserve succeeds and holds nothing. Usage is still recorded. Defaults to `false`. */
  readonly unlimited?: boolean
}

/**
 * The account types of DESIGN.md: `registered` (350 credits that never expire), `guest` (50
 * credits for 24 hours, no top-ups) and `enterprise` (unlimited).
 */
export const DEFAULT_ACCOUNT_TYPES = Object.freeze({
  registered: Object.freeze({ signupCredits: 350 }),
  guest: Object.freeze({
    signupCredits: 50,
    signupExpiresAfterMs: 24 * 60 * 60 * 1000,
    topUps: false,
  }),
  enterprise: Object.freeze({ unlimited: true }),
}) satisfies Readonly<Record<string, AccountTypeConfig>>

/** The result of `openAccount`. */
export interface OpenAccountResult {
  readonly accountId: string
  readonly accountType: string
  /** False when the account already existed (nothing was changed). */
  readonly created: boolean
}

/** The result of `grant`. */
export interface GrantResult {
  readonly accountId: string
  /** Credits this grant added. */
  readonly amount: number
  /** True when the idempotency key had already made this very grant: nothing was added now. */
  readonly replayed: boolean
  /** Available plus pending, after the grant. */
  readonly balance: number
  readonly available: number
  readonly pending: number
}

/** Options of `reserve`. */
export interface ReserveOptions {
  /** The route pattern being paid for (`/quantlib/risk/var`), never the raw URL. */
  readonly endpoint: string
  /** How long the hold lives unresolved. Defaults to the ledger's `holdMs`. */
  readonly holdMs?: number
  /** Account types that may pay for this call; omit for every type. */
  readonly allowedTypes?: readonly string[]
  /** Open an unknown account as this type instead of answering `no_account`. */
  readonly openAs?: string
}

/** A successful reserve: the cost is held until `commit` or `release`. */
export interface HoldGranted {
  readonly status: 'held'
  /** Pass this to `commit` or `release`. */
  readonly holdId: string
  readonly accountId: string
  readonly accountType: string
  /** Credits this call costs. */
  readonly cost: number
  /** Credits taken into the hold (0 for an unlimited account). */
  readonly held: number
  /** Spendable credits left after the hold. */
  readonly available: number
  /** All held credits of the account, this hold included. */
  readonly pending: number
  /** Available plus pending. */
  readonly balance: number
  /** Epoch ms after which the hold is void and its credits return. */
  readonly expiresAt: number
  readonly unlimited: boolean
  /** True when this reserve opened the account (see `openAs`). */
  readonly opened: boolean
}

/** A reserve refused for lack of credits. Nothing was written. */
export interface HoldInsufficient {
  readonly status: 'insufficient'
  readonly accountId: string
  readonly accountType: string
  readonly required: number
  readonly available: number
}

/** A reserve refused because the account type may not pay for this call. Nothing was written. */
export interface HoldForbidden {
  readonly status: 'forbidden'
  readonly accountId: string
  readonly accountType: string
}

/** A reserve for an account that does not exist (and was not to be opened). Nothing was written. */
export interface HoldNoAccount {
  readonly status: 'no_account'
  readonly accountId: string
}

/** The result of `reserve`. */
export type ReserveResult = HoldGranted | HoldInsufficient | HoldForbidden | HoldNoAccount

/** How a hold ended. `expired`: its deadline passed first, so nothing was charged. */
export type HoldOutcome = 'committed' | 'released' | 'expired'

/** The result of `commit` and `release`. */
export interface SettleResult {
  readonly holdId: string
  readonly accountId: string
  /** How the hold ended: by this call, or (when `replayed`) by an earlier one. */
  readonly outcome: HoldOutcome
  /** Credits charged. */
  readonly charged: number
  /** Credits given back to the grants they came from. */
  readonly returned: number
  /** True when the hold had already been resolved: this call changed nothing. */
  readonly replayed: boolean
  readonly balance: number
  readonly available: number
  readonly pending: number
}

/** Options of `release`. */
export interface ReleaseOptions {
  /** How long the handler took, for usage analytics. */
  readonly latencyMs?: number
}

/** Options of `commit`. */
export interface CommitOptions extends ReleaseOptions {
  /** Charge this much instead of all that was held (at most the reserved cost). */
  readonly actualCost?: number | string
}

/** One grant bucket: credits of one source with one expiry. */
export interface CreditBucket {
  readonly source: string
  readonly amount: number
  /** Epoch ms, or `null` for credits that never expire. */
  readonly expiresAt: number | null
}

/** The result of `balance`. */
export interface BalanceResult {
  readonly accountId: string
  readonly accountType: string
  readonly unlimited: boolean
  /** Available plus pending. */
  readonly balance: number
  /** Spendable now. */
  readonly available: number
  /** Held by unresolved reserves. */
  readonly pending: number
  /** Soonest-expiring first: the order they are spent in. */
  readonly buckets: readonly CreditBucket[]
  /** The account's subscription, or `null`. */
  readonly subscription: SubscriptionInfo | null
  /** Epoch ms when the account was opened. */
  readonly createdAt: number
}

/**
 * What the middleware needs of a ledger. {@link RedisLedger} implements it; a host may wrap it.
 */
export interface CreditLedger {
  reserve(accountId: string, cost: number, options: ReserveOptions): Promise<ReserveResult>
  commit(holdId: string, options?: CommitOptions): Promise<SettleResult>
  release(holdId: string, options?: ReleaseOptions): Promise<SettleResult>
  /** The account types the ledger knows: the gate checks `tierAccess` and `openAccounts` against them. */
  readonly accountTypes?: readonly string[]
  /** Counts a call that reserved nothing (a free tier) in usage analytics, after the response. */
  recordUsage?(
    accountId: string,
    options: { readonly endpoint: string; readonly latencyMs?: number; readonly charged?: false },
  ): Promise<unknown>
}

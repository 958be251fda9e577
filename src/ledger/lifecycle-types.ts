/** Options of `subscribe`. */
export interface SubscribeOptions {
  /** The plan's name, reported back (`basic`, `pro`): 1 to 64 of `A-Z a-z 0-9 _ . -`. */
  readonly plan: string
  /** Credits granted at each monthly refresh: more than 0, at most 1 000 000 000, 3 decimals. */
  readonly monthlyCredits: number | string
  /**
   * Whether unused credits carry forward at each refresh while the subscription is active,
   * instead of expiring. Either way they expire when the subscription ends. Defaults to `false`.
   */
  readonly rollover?: boolean
  /**
   * The anchor of a new subscription: period n starts n months after it, in UTC, on the same
   * day of the month (the last day of a shorter month). In the future, nothing is granted until
   * it comes; in the past, it only sets the anniversary and the current period is granted now.
   * On a plan change it may only repeat the current anchor. Defaults to now.
   */
  readonly startsAt?: Date | number
  /**
   * Makes the call happen once: a replay with the same key and options changes nothing and
   * returns `replayed: true`; the same key with other options (or for a grant) is refused.
   */
  readonly idempotencyKey: string
}

/** An account's subscription, as `balance` and `subscribe` report it. */
export interface SubscriptionInfo {
  readonly plan: string
  /** Credits granted at each refresh. */
  readonly monthlyCredits: number
  readonly rollover: boolean
  /** Epoch ms the anniversaries are counted from. */
  readonly startsAt: number
  /** Epoch ms the current period started, or `null` before the first one. */
  readonly periodStart: number | null
  /** Epoch ms the current period ends: its credits expire then unless they roll over. `null` before the first period. */
  readonly periodEnd: number | null
  /** Epoch ms of the next refresh, or `null` when the subscription ends instead. */
  readonly renewsAt: number | null
  /** Epoch ms the subscription ends (an anniversary), or `null` while it renews. */
  readonly endsAt: number | null
}

/**
 * What `subscribe` did: `started` a subscription, `changed` its plan (or rollover), `resumed`
 * one whose end was scheduled (same plan), or nothing (`unchanged`).
 */
export type SubscribeStatus = 'started' | 'changed' | 'resumed' | 'unchanged'

/** The result of `subscribe`. */
export interface SubscribeResult {
  readonly accountId: string
  /** What the call did; for a replay, what the first call with this key did. */
  readonly status: SubscribeStatus
  /** True when the idempotency key had already made this very call: nothing changed now. */
  readonly replayed: boolean
  /** The subscription now (`null` only on a replay after it has ended). */
  readonly subscription: SubscriptionInfo | null
  /** Available plus pending, after the call. */
  readonly balance: number
  readonly available: number
  readonly pending: number
}

/** Options of `endSubscription`. */
export interface EndSubscriptionOptions {
  /**
   * When the subscription should stop: it ends at the first anniversary at or after this time
   * (the period in progress then is the last paid one). A time in the past counts as now.
   * Defaults to now: the current period is the last.
   */
  readonly at?: Date | number
}

/** The result of `endSubscription`. */
export interface EndSubscriptionResult {
  readonly accountId: string
  /** `ending`: the end is scheduled (see `subscription.endsAt`); `none`: there was no subscription. */
  readonly status: 'ending' | 'none'
  readonly subscription: SubscriptionInfo | null
  readonly balance: number
  readonly available: number
  readonly pending: number
}

/**
 * A kind of credit movement: `grant` (signup, purchase, subscription refresh or upgrade; see
 * `source`), `charge` (a committed call), `expire` (credits past their expiry), `adjust`.
 */
export type TransactionKind = 'grant' | 'charge' | 'expire' | 'adjust'

/** One credit movement of an account's history. */
export interface Transaction {
  /** Position in the account's history: 1 for the first movement, then +1 each. */
  readonly seq: number
  /** Epoch ms the movement took effect (a refresh or expiry applied late carries its own time). */
  readonly time: number
  readonly kind: TransactionKind
  /** Credits, signed: positive for grants, negative for charges and expiries. */
  readonly amount: number
  /** Available plus pending right after the movement. */
  readonly balanceAfter: number
  /** Where the credits came from or went: `signup`, `purchase`, `subscription`, `usage` (charges)… */
  readonly source: string
  /** The route pattern a charge paid for, else `null`. */
  readonly endpoint: string | null
}

/** Options of `transactions`. */
export interface TransactionsOptions {
  /** Entries per page, 1 to 500. Defaults to 50. */
  readonly limit?: number
  /** The `nextCursor` of the previous page; omit for the newest entries. */
  readonly cursor?: string
}

/** One page of history, newest first. */
export interface TransactionsPage {
  readonly accountId: string
  readonly transactions: readonly Transaction[]
  /** Pass it as `cursor` for the next (older) page; `null` when this page reaches the oldest entry kept. */
  readonly nextCursor: string | null
}

/** One place where the history does not add up. */
export interface AuditBreak {
  /** The entry at fault. */
  readonly seq: number
  /**
   * `balance`: its balanceAfter is not the previous one plus its amount; `sequence`: a seq is
   * missing (or the newest entry is not the account's last movement); `unreadable`: an entry
   * could not be parsed.
   */
  readonly kind: 'balance' | 'sequence' | 'unreadable'
  /** What the chain expects (credits for `balance`, a seq for `sequence`). */
  readonly expected: number
  /** What is recorded. */
  readonly recorded: number
}

/** The result of `audit`. */
export interface AuditReport {
  readonly accountId: string
  /** True when every link holds and the recomputed balance equals the live one. */
  readonly ok: boolean
  /** History entries read (the ledger keeps the newest `historyLimit`). */
  readonly entries: number
  /** Oldest and newest seq read (0 without history). */
  readonly firstSeq: number
  readonly lastSeq: number
  /** True when the history goes back to the account's first movement (seq 1). */
  readonly complete: boolean
  /** The balance before the oldest entry read: its balanceAfter minus its amount. */
  readonly startingBalance: number
  /** startingBalance plus every amount read. */
  readonly computedBalance: number
  /** Available plus pending now. */
  readonly liveBalance: number
  /** liveBalance minus computedBalance: 0 when they agree. */
  readonly difference: number
  /** Up to 50 broken links, oldest first. */
  readonly breaks: readonly AuditBreak[]
  /** How many links are broken in all. */
  readonly breakCount: number
}

/** The period length of a usage series. Periods are UTC hours, days and calendar months. */
export type UsageGranularity = 'hour' | 'day' | 'month'

/**
 * How long usage is kept, per granularity, in ms: a period is dropped once it started longer
 * ago than this. Defaults to 48 hours of hours, 90 days of days and 731 days (24 months) of
 * months. Each must be at least one hour, day, or 31 days.
 */
export interface UsageRetention {
  readonly hour?: number
  readonly day?: number
  readonly month?: number
}

/** Options of `usage`. */
export interface UsageOptions {
  /** Start of the range: the period containing it is the first. */
  readonly from: Date | number
  /** End of the range, exclusive: the last period is the one that starts before it. */
  readonly to: Date | number
  readonly granularity: UsageGranularity
  /** Only this endpoint (a route pattern); omit for all. */
  readonly endpoint?: string
}

/** Usage counters over some periods and endpoints. */
export interface UsageCounters {
  /** Calls answered: committed, released, or free. */
  readonly requests: number
  /** Credits charged. */
  readonly credits: number
  /** Calls whose hold was released (not charged: the response was not a success). */
  readonly refunds: number
  /** Mean latency of the calls that reported one, in ms (one decimal), or `null`. */
  readonly avgLatencyMs: number | null
}

/** Usage in one period of a series. */
export interface UsagePoint extends UsageCounters {
  /** Epoch ms the period starts. */
  readonly start: number
  /** Epoch ms the next period starts. */
  readonly end: number
}

/** Usage of one endpoint over the whole range. */
export interface UsageEndpoint extends UsageCounters {
  readonly endpoint: string
}

/** The result of `usage`. */
export interface UsageReport {
  readonly accountId: string
  readonly granularity: UsageGranularity
  /** Start of the first period. */
  readonly from: number
  /** End of the last period. */
  readonly to: number
  readonly endpoint: string | null
  /** Every period of the range, oldest first, zeros included (and for periods past retention). */
  readonly series: readonly UsagePoint[]
  readonly totals: UsageCounters
  /** Per endpoint, most requests first. */
  readonly endpoints: readonly UsageEndpoint[]
  /**
   * True when not everything was read: the range held more than 3000 stored endpoint-periods,
   * or (days and months) more than 900 endpoint-hours not yet added to their day and month.
   */
  readonly truncated: boolean
}

/** Options of `recordUsage`. */
export interface RecordUsageOptions {
  /** The route pattern that was called, never the raw URL. */
  readonly endpoint: string
  /** How long the handler took, in ms. */
  readonly latencyMs?: number
  /** Always `false` when given: only calls that were not charged are recorded this way. */
  readonly charged?: false
}

/** The result of `recordUsage`. */
export interface RecordUsageResult {
  readonly accountId: string
  /** False when the account does not exist: nothing was written. */
  readonly recorded: boolean
}

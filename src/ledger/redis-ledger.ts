import type { Cluster, Redis } from 'ioredis'

import { describe, fromMilli, toMilli } from '../amount.js'
import {
  CreditArgumentError,
  CreditConfigError,
  CreditRuleError,
  CreditStoreError,
} from '../errors.js'
import { ScriptBatcher } from '../lua/batch.js'
import { ScriptRunner, type ScriptClient } from '../lua/run-script.js'
import { scripts, type BatchScriptDef, type ScriptDef } from '../lua/scripts.js'
import {
  ACCOUNT_TYPE,
  SOURCE,
  argOptions,
  argString,
  argText,
  argEndpoint,
  argInteger,
  argTime,
  configBoolean,
  configInteger,
  plainOptions,
} from '../validate.js'
import {
  checkAccountId,
  checkPrefix,
  claimKey,
  encodeAccountId,
  newHoldId,
  parseHoldId,
  scriptKeys,
} from './keys.js'
import {
  checkRedis,
  sweepLedger,
  type CheckOptions,
  type RedisCheckReport,
  type SweepOptions,
  type SweepResult,
} from './maintenance.js'
import type { LedgerCore, ResolvedUsageRetention } from './core.js'
import { audit, transactions } from './history.js'
import type {
  AuditReport,
  EndSubscriptionOptions,
  EndSubscriptionResult,
  RecordUsageOptions,
  RecordUsageResult,
  SubscribeOptions,
  SubscribeResult,
  TransactionsOptions,
  TransactionsPage,
  UsageOptions,
  UsageReport,
  UsageRetention,
} from './lifecycle-types.js'
import { Reply } from './replies.js'
import { endSubscription, parseSubscription, subscribe } from './subscriptions.js'
import { parseUsageRetention, recordUsage, usage } from './usage.js'
import {
  DEFAULT_ACCOUNT_TYPES,
  type AccountTypeConfig,
  type BalanceResult,
  type CommitOptions,
  type ReleaseOptions,
  type CreditBucket,
  type CreditLedger,
  type GrantResult,
  type OpenAccountResult,
  type ReserveOptions,
  type ReserveResult,
  type SettleResult,
} from './types.js'

/** Options of {@link RedisLedger}. */
export interface RedisLedgerOptions {
  /** An ioredis `Redis` or `Cluster` (ioredis-mock works too, for demos and fast tests). */
  readonly redis: Redis | Cluster
  /** Prefix of every key. Defaults to `'cg:'`. */
  readonly prefix?: string
  /** Epoch-ms clock for tests. Defaults to Redis `TIME`, one clock for every app instance. */
  readonly clock?: () => number
  /** Account types, merged over {@link DEFAULT_ACCOUNT_TYPES} (a type given here replaces the default of that name). */
  readonly accountTypes?: Readonly<Record<string, AccountTypeConfig>>
  /** How long a hold lives unresolved before it is void. Defaults to 30 000 ms. */
  readonly holdMs?: number
  /**
   * How long a resolved hold's outcome is remembered, so that a resent commit or release gets
   * the first outcome (`replayed: true`) instead of `ERR_CREDIT_HOLD_NOT_FOUND`. Resends come
   * within seconds of a reconnect; memory grows with calls × this window. An outcome past it is
   * forgotten by the account's next commit or release, or by {@link RedisLedger.sweep}.
   * Forgetting never risks a double charge: a forgotten hold cannot be committed again. Defaults
   * to 10 minutes.
   */
  readonly resolvedHoldRetentionMs?: number
  /** History entries kept per account. Defaults to 1000. */
  readonly historyLimit?: number
  /**
   * How long usage analytics are kept, per granularity, in ms. Defaults to 48 hours of hourly
   * periods, 90 days of daily ones and 731 days (24 months) of monthly ones.
   */
  readonly usageRetention?: UsageRetention
  /**
   * Reserves (and, separately, commits and releases) sent in the same turn of the event loop
   * go to Redis as one script of at most this many operations: under load this cuts the Redis
   * time and the client work per call; alone, an operation is sent as it is. Each operation
   * keeps its own checks, reply and idempotency. Defaults to 32 (a script of 32 reserves keeps
   * Redis busy for about 0.8 ms); 1 sends each on its own.
   */
  readonly batchSize?: number
}

interface ResolvedType {
  readonly flags: string
  readonly signupMilli: number
  readonly signupTtlMs: number
  readonly unlimited: boolean
}

const LEDGER_KEYS = [
  'redis',
  'prefix',
  'clock',
  'accountTypes',
  'holdMs',
  'resolvedHoldRetentionMs',
  'historyLimit',
  'usageRetention',
  'batchSize',
] as const
const TYPE_KEYS = ['signupCredits', 'signupExpiresAfterMs', 'topUps', 'unlimited'] as const

function parseAccountTypes(input: unknown): ReadonlyMap<string, ResolvedType> {
  const merged: Record<string, unknown> = { ...DEFAULT_ACCOUNT_TYPES }
  if (input !== undefined) {
    if (typeof input !== 'object' || input === null) {
      throw new CreditConfigError(
        'ERR_CREDIT_INVALID_OPTION',
        `accountTypes must be an object, got ${describe(input)}`,
      )
    }
    Object.assign(merged, input)
  }
  const types = new Map<string, ResolvedType>()
  for (const [name, raw] of Object.entries(merged)) {
    if (!ACCOUNT_TYPE.test(name)) {
      throw new CreditConfigError(
        'ERR_CREDIT_INVALID_OPTION',
        `account type names must match ${String(ACCOUNT_TYPE)}, got ${describe(name)}`,
      )
    }
    const o = plainOptions(raw, TYPE_KEYS, `accountTypes.${name}`)
    let signupMilli: number
    try {
      signupMilli = toMilli(o['signupCredits'] ?? 0, `accountTypes.${name}.signupCredits`)
    } catch (error) {
      throw new CreditConfigError('ERR_CREDIT_INVALID_OPTION', (error as Error).message, {
        cause: error,
      })
    }
    const unlimited =
      o['unlimited'] === undefined
        ? false
        : configBoolean(o['unlimited'], `accountTypes.${name}.unlimited`)
    const topUps =
      o['topUps'] === undefined ? true : configBoolean(o['topUps'], `accountTypes.${name}.topUps`)
    const signupTtlMs =
      o['signupExpiresAfterMs'] === undefined
        ? 0
        : configInteger(o['signupExpiresAfterMs'], `accountTypes.${name}.signupExpiresAfterMs`, 1)
    types.set(name, {
      flags: `${unlimited ? 'u' : ''}${topUps ? '' : 'n'}`,
      signupMilli,
      signupTtlMs,
      unlimited,
    })
  }
  return types
}

/** The outcome a settled hold's reply status stands for. */
const OUTCOMES = { COMMITTED: 'committed', RELEASED: 'released', EXPIRED: 'expired' } as const

/** The reserve's open-on-first-sight arguments when it may not open an account. */
const NO_OPEN: readonly (string | number)[] = ['', '', 0, 0]

/**
 * The credit ledger on Redis: accounts, grants, holds and balances, each operation one atomic
 * Lua script on the account's own hash slot, idempotent by an id.
 *
 * @example
 * ```ts
 * const ledger = new RedisLedger({ redis: new Redis(process.env.REDIS_URL) })
 * await ledger.openAccount('u42', { type: 'registered' }) // 350 credits, once
 * const hold = await ledger.reserve('u42', 5, { endpoint: '/quantlib/risk/var' })
 * if (hold.status === 'held') await ledger.commit(hold.holdId)
 * ```
 */
export class RedisLedger implements CreditLedger {
  readonly #runner: ScriptRunner
  readonly #batcher: ScriptBatcher
  readonly #redis: Redis | Cluster
  readonly #prefix: string
  readonly #clock: (() => number) | undefined
  readonly #types: ReadonlyMap<string, ResolvedType>
  readonly #holdMs: number
  readonly #doneTtlMs: number
  readonly #historyLimit: number
  readonly #usageRetention: ResolvedUsageRetention
  /** What the operations in their own modules (subscriptions, history, usage) need of this one. */
  readonly #core: LedgerCore

  /**
   * @param options - see {@link RedisLedgerOptions}
   * @throws {@link CreditConfigError} with `ERR_CREDIT_INVALID_OPTION` on a bad option
   */
  constructor(options: RedisLedgerOptions) {
    const o = plainOptions(options, LEDGER_KEYS, 'RedisLedger')
    const redis = o['redis'] as Partial<ScriptClient> | undefined
    if (typeof redis?.evalsha !== 'function' || typeof redis.eval !== 'function') {
      throw new CreditConfigError(
        'ERR_CREDIT_INVALID_OPTION',
        'RedisLedger needs `redis`: an ioredis Redis or Cluster client',
      )
    }
    this.#runner = new ScriptRunner(redis as ScriptClient)
    this.#redis = redis as Redis | Cluster
    this.#prefix = checkPrefix(o['prefix'] ?? 'cg:')
    const clock = o['clock']
    if (clock !== undefined && typeof clock !== 'function') {
      throw new CreditConfigError(
        'ERR_CREDIT_INVALID_OPTION',
        `clock must be a function, got ${describe(clock)}`,
      )
    }
    this.#clock = clock as (() => number) | undefined
    this.#types = parseAccountTypes(o['accountTypes'])
    this.#holdMs = configInteger(o['holdMs'] ?? 30_000, 'holdMs', 1)
    this.#doneTtlMs = configInteger(
      o['resolvedHoldRetentionMs'] ?? 10 * 60 * 1000,
      'resolvedHoldRetentionMs',
      1,
    )
    this.#historyLimit = configInteger(o['historyLimit'] ?? 1000, 'historyLimit', 1, 100_000)
    this.#usageRetention = parseUsageRetention(o['usageRetention'])
    this.#batcher = new ScriptBatcher(
      this.#runner,
      configInteger(o['batchSize'] ?? 32, 'batchSize', 1, 1000),
      (redis as { readonly isCluster?: unknown }).isCluster === true,
    )
    this.#core = Object.freeze({
      prefix: this.#prefix,
      runner: this.#runner,
      doneTtlMs: this.#doneTtlMs,
      historyLimit: this.#historyLimit,
      usageRetention: this.#usageRetention,
      now: () => this.#now(),
      run: (def: ScriptDef, id: string, args: readonly (string | number)[]) =>
        this.#run(def, id, undefined, args),
      noAccount: (id: string) => this.#noAccount(id),
      conflict: (key: string) => this.#conflict(key),
    })
  }

  /** The account type names this ledger knows. */
  get accountTypes(): readonly string[] {
    return [...this.#types.keys()]
  }

  /**
   * Opens an account, granting its type's signup credits once. Idempotent: opening an
   * existing account of the same type changes nothing.
   *
   * @throws {@link CreditRuleError} `ERR_CREDIT_ACCOUNT_TYPE_CONFLICT` when it exists with another type
   */
  async openAccount(
    accountId: string,
    options: { readonly type: string },
  ): Promise<OpenAccountResult> {
    const id = checkAccountId(accountId)
    const o = argOptions(options, ['type'], 'openAccount')
    const typeName = this.#typeName(o['type'], 'type')
    const type = this.#type(typeName)
    const reply = await this.#run(scripts.open, id, undefined, [
      this.#now(),
      typeName,
      type.flags,
      type.signupMilli,
      type.signupTtlMs,
      this.#historyLimit,
    ])
    const accountType = reply.text(1)
    if (reply.status !== 'CREATED' && reply.status !== 'EXISTS') throw reply.broken(reply)
    if (accountType !== typeName) {
      throw new CreditRuleError(
        'ERR_CREDIT_ACCOUNT_TYPE_CONFLICT',
        `account ${describe(id)} exists as "${accountType}", not "${typeName}"`,
      )
    }
    return { accountId: id, accountType, created: reply.status === 'CREATED' }
  }

  /**
   * Adds credits, once per idempotency key across the whole ledger: a replay returns
   * `replayed: true` and adds nothing; the same key with another account, amount, source or
   * expiry is refused and changes nothing.
   *
   * @throws {@link CreditRuleError} `ERR_CREDIT_IDEMPOTENCY_CONFLICT`, `ERR_CREDIT_TOPUP_NOT_ALLOWED`, `ERR_CREDIT_ACCOUNT_NOT_FOUND`
   */
  async grant(
    accountId: string,
    options: {
      readonly amount: number | string
      readonly source: string
      readonly expiresAt?: Date | number
      readonly idempotencyKey: string
    },
  ): Promise<GrantResult> {
    return this.#grant(accountId, options, 'grant')
  }

  async #grant(
    accountId: string,
    options: unknown,
    kind: 'grant' | 'adjust',
  ): Promise<GrantResult> {
    const id = checkAccountId(accountId)
    const o = argOptions(options, ['amount', 'source', 'expiresAt', 'idempotencyKey'], kind)
    const amount = toMilli(o['amount'])
    if (amount === 0) {
      throw new CreditArgumentError(
        'ERR_CREDIT_INVALID_AMOUNT',
        'amount must be more than 0 credits',
      )
    }
    const source = argString(o['source'], 'source', SOURCE, '1 to 64 of A-Z a-z 0-9 _ . -')
    if (source === 'subscription') {
      throw new CreditArgumentError(
        'ERR_CREDIT_INVALID_ARGUMENT',
        'source "subscription" is kept for the credits subscribe() grants; name purchases otherwise',
      )
    }
    const expiresAt = o['expiresAt'] === undefined ? 0 : argTime(o['expiresAt'], 'expiresAt')
    const key = argText(o['idempotencyKey'], 'idempotencyKey', 256)
    const fingerprint = `${encodeAccountId(id)}|${amount}|${source}|${expiresAt}|${kind}`
    const claim = new Reply(
      'claim',
      await this.#runner.run(scripts.claim, [claimKey(this.#prefix, key)], [fingerprint]),
    )
    if (claim.status === 'CONFLICT') throw this.#conflict(key)
    if (claim.status !== 'NEW' && claim.status !== 'SAME') throw claim.broken(claim)
    let reply: Reply
    try {
      reply = await this.#run(scripts.grant, id, undefined, [
        this.#now(),
        amount,
        source,
        expiresAt,
        key,
        kind,
        this.#doneTtlMs,
        this.#historyLimit,
      ])
    } catch (error) {
      // The script refused an argument only it can judge (an expiresAt already past by Redis's
      // clock): withdraw the claim this call made, so that a refused call writes nothing and the
      // corrected grant may use the key. Only a claim we made, and only while it holds our
      // fingerprint: a grant with the same fingerprint is refused the same way (a replay of one
      // made earlier is answered DUPLICATE first), so no grant can rest on it.
      if (claim.status === 'NEW' && error instanceof CreditArgumentError) {
        await this.#runner
          .run(scripts.unlock, [claimKey(this.#prefix, key)], [fingerprint])
          .catch(() => undefined)
      }
      throw error
    }
    switch (reply.status) {
      case 'GRANTED':
      case 'DUPLICATE': {
        const available = reply.credits(1)
        const pending = reply.credits(2)
        return {
          accountId: id,
          amount: fromMilli(amount),
          replayed: reply.status === 'DUPLICATE',
          balance: fromMilli(reply.int(1) + reply.int(2)),
          available,
          pending,
        }
      }
      case 'CONFLICT':
        throw this.#conflict(key)
      case 'NOT_ALLOWED':
        throw new CreditRuleError(
          'ERR_CREDIT_TOPUP_NOT_ALLOWED',
          `account ${describe(id)} is a "${reply.text(1)}" account, which takes no top-ups`,
        )
      case 'NO_ACCOUNT':
        throw this.#noAccount(id)
      default:
        throw reply.broken(reply)
    }
  }

  /**
   * Takes `cost` credits into a pending hold, soonest-expiring credits first, or reports why
   * not. Never lets the balance go below zero, whatever the concurrency. Decides the tier
   * policy (`allowedTypes`) and opening on first sight (`openAs`) in the same round trip.
   */
  async reserve(
    accountId: string,
    cost: number | string,
    options: ReserveOptions,
  ): Promise<ReserveResult> {
    const id = checkAccountId(accountId)
    const costMilli = toMilli(cost, 'cost')
    const o = argOptions(options, ['endpoint', 'holdMs', 'allowedTypes', 'openAs'], 'reserve')
    const endpoint = argEndpoint(o['endpoint'])
    const holdMs = o['holdMs'] === undefined ? this.#holdMs : argInteger(o['holdMs'], 'holdMs', 1)
    const allowed = this.#allowed(o['allowedTypes'])
    let open = NO_OPEN
    if (o['openAs'] !== undefined) {
      const name = this.#typeName(o['openAs'], 'openAs')
      const type = this.#type(name)
      open = [name, type.flags, type.signupMilli, type.signupTtlMs]
    }
    const { holdId, nonce } = newHoldId(id)
    let reply: Reply
    try {
      reply = await this.#run(scripts.reserve, id, scripts.reserveBatch, [
        this.#now(),
        nonce,
        costMilli,
        holdMs,
        endpoint,
        allowed,
        ...open,
        this.#doneTtlMs,
        this.#historyLimit,
      ])
    } catch (error) {
      // The reserve may have run although its reply was lost: cancel the hold now rather than
      // leave the credits held until holdMs. If the reserve arrives later still, the record
      // the cancel leaves makes it a no-op. Best effort: when Redis is down this fails too,
      // and the hold (if any) expires on its own.
      if (error instanceof CreditStoreError)
        this.#runResolve(id, nonce, 'cancel', '').catch(() => undefined)
      throw error
    }
    switch (reply.status) {
      case 'OK': {
        const flags = reply.text(6)
        return {
          status: 'held',
          holdId,
          accountId: id,
          accountType: reply.text(5),
          cost: fromMilli(costMilli),
          held: reply.credits(1),
          available: reply.credits(2),
          pending: reply.credits(3),
          balance: fromMilli(reply.int(2) + reply.int(3)),
          expiresAt: reply.int(4),
          unlimited: flags.includes('u'),
          opened: reply.text(7) === '1',
        }
      }
      case 'INSUFFICIENT':
        return {
          status: 'insufficient',
          accountId: id,
          accountType: reply.text(3),
          required: reply.credits(1),
          available: reply.credits(2),
        }
      case 'FORBIDDEN':
        return { status: 'forbidden', accountId: id, accountType: reply.text(1) }
      case 'NO_ACCOUNT':
        return { status: 'no_account', accountId: id }
      case 'DUPLICATE':
        // Our own nonce, already ended: ioredis resent this reserve after a reconnect, and the
        // first run's hold had expired, or been voided or cancelled by our lost-reply path, by
        // the time the resend ran. Nothing is held now, and nothing was charged.
        throw new CreditStoreError(
          'ERR_CREDIT_STORE_UNAVAILABLE',
          'the reserve reached Redis again after a reconnect, when its first hold had already ended; nothing is held: reserve again',
        )
      default:
        throw reply.broken(reply)
    }
  }

  /**
   * Charges a hold: all that was held, or `actualCost` if less, and gives the rest back to the
   * grants it came from. Resolves the hold at most once: a repeat (or a commit after a release)
   * returns the first outcome with `replayed: true`. A hold past its deadline charges nothing
   * and reports `outcome: 'expired'`.
   *
   * @throws {@link CreditRuleError} `ERR_CREDIT_HOLD_NOT_FOUND`, `ERR_CREDIT_HOLD_EXCEEDED`
   */
  async commit(holdId: string, options: CommitOptions = {}): Promise<SettleResult> {
    const o = argOptions(options, ['actualCost', 'latencyMs'], 'commit')
    const actual = o['actualCost'] === undefined ? '' : toMilli(o['actualCost'], 'actualCost')
    return this.#resolve(holdId, 'commit', actual, o['latencyMs'])
  }

  /**
   * Gives all of a hold's credits back to the grants they came from, at most once (see
   * {@link RedisLedger.commit}).
   *
   * @throws {@link CreditRuleError} `ERR_CREDIT_HOLD_NOT_FOUND`
   */
  async release(holdId: string, options: ReleaseOptions = {}): Promise<SettleResult> {
    const o = argOptions(options, ['latencyMs'], 'release')
    return this.#resolve(holdId, 'release', '', o['latencyMs'])
  }

  async #runResolve(
    accountId: string,
    nonce: string,
    mode: 'commit' | 'release' | 'cancel',
    actual: number | '',
    latencyMs: number | '' = '',
  ): Promise<Reply> {
    const keep = this.#usageRetention
    return this.#run(scripts.resolve, accountId, scripts.resolveBatch, [
      this.#now(),
      nonce,
      mode,
      actual,
      this.#doneTtlMs,
      this.#historyLimit,
      latencyMs,
      keep.hour,
      keep.day,
      keep.month,
    ])
  }

  async #resolve(
    holdId: string,
    mode: 'commit' | 'release',
    actual: number | '',
    latency: unknown,
  ): Promise<SettleResult> {
    const { accountId, nonce } = parseHoldId(holdId)
    // Usage analytics take the handler's latency; the script counts the call once, with it.
    const latencyMs = latency === undefined ? '' : argInteger(latency, 'latencyMs', 0)
    const reply = await this.#runResolve(accountId, nonce, mode, actual, latencyMs)
    const outcome = OUTCOMES[reply.status as 'COMMITTED']
    if (reply.status === 'EXCEEDS') {
      throw new CreditRuleError(
        'ERR_CREDIT_HOLD_EXCEEDED',
        `actualCost is more than the ${reply.credits(1)} credits reserved; charge at most what was reserved`,
      )
    }
    if (reply.status === 'VOID' || reply.status === 'NO_ACCOUNT') {
      throw new CreditRuleError(
        'ERR_CREDIT_HOLD_NOT_FOUND',
        `hold ${describe(holdId)} is unknown (never reserved, or resolved too long ago to remember)`,
      )
    }
    if ((outcome as string | undefined) === undefined) throw reply.broken(reply)
    return {
      holdId,
      accountId,
      outcome,
      charged: reply.credits(1),
      returned: reply.credits(2),
      available: reply.credits(3),
      pending: reply.credits(4),
      balance: fromMilli(reply.int(3) + reply.int(4)),
      replayed: reply.text(5) === '1',
    }
  }

  /**
   * The account's balance: available plus pending, and its grants, soonest-expiring first.
   *
   * @throws {@link CreditRuleError} `ERR_CREDIT_ACCOUNT_NOT_FOUND`
   */
  async balance(accountId: string): Promise<BalanceResult> {
    const id = checkAccountId(accountId)
    const reply = await this.#run(scripts.balance, id, undefined, [
      this.#now(),
      this.#doneTtlMs,
      this.#historyLimit,
    ])
    if (reply.status === 'NO_ACCOUNT') throw this.#noAccount(id)
    if (reply.status !== 'OK' || reply.length % 2 !== 0) throw reply.broken(reply)
    const subscription = parseSubscription(reply.text(7))
    if (subscription === undefined) throw reply.broken(reply)
    const buckets: CreditBucket[] = []
    for (let i = 8; i < reply.length; i += 2) {
      const match = /^b(\d+):(.+)$/.exec(reply.text(i))
      if (match === null) throw reply.broken(reply)
      const expiresAt = Number(match[1])
      buckets.push({
        source: match[2] ?? '',
        amount: reply.credits(i + 1),
        expiresAt: expiresAt === 0 ? null : expiresAt,
      })
    }
    return {
      accountId: id,
      accountType: reply.text(1),
      unlimited: reply.text(2).includes('u'),
      balance: fromMilli(reply.int(4) + reply.int(5)),
      available: reply.credits(4),
      pending: reply.credits(5),
      buckets,
      subscription,
      createdAt: reply.int(3),
    }
  }

  /**
   * Starts a monthly subscription, or changes the plan of the current one, once per
   * idempotency key. Credits refresh on each anniversary (UTC; an anniversary on the 31st falls
   * on the last day of shorter months), lazily, inside whichever call touches the account next:
   * no scheduler. Each refresh grants `monthlyCredits` (source `subscription`) that expire at
   * the next one, unless `rollover` carries them forward while the subscription lasts.
   *
   * A plan change keeps the anniversary and takes effect at once: an upgrade grants the
   * difference with what the current period already granted, now; a downgrade takes nothing
   * back and the next refresh grants the new amount. Purchased and signup credits are never
   * touched. Subscribing again while an end is scheduled cancels the end.
   *
   * @throws {@link CreditRuleError} `ERR_CREDIT_IDEMPOTENCY_CONFLICT`, `ERR_CREDIT_TOPUP_NOT_ALLOWED` (a guest), `ERR_CREDIT_ACCOUNT_NOT_FOUND`
   * @throws {@link CreditArgumentError} on a bad option, or a `startsAt` that would move the anniversary of the current subscription
   */
  async subscribe(accountId: string, options: SubscribeOptions): Promise<SubscribeResult> {
    return subscribe(this.#core, accountId, options)
  }

  /**
   * Ends the subscription at the first anniversary at or after `at` (default now): the period
   * in progress then is the last paid one, its credits expire when it ends, and nothing is
   * refreshed after. Purchased and signup credits stay. Safe to resend; calling it again moves
   * the end, and `subscribe` cancels it.
   *
   * @throws {@link CreditRuleError} `ERR_CREDIT_ACCOUNT_NOT_FOUND`
   */
  async endSubscription(
    accountId: string,
    options: EndSubscriptionOptions = {},
  ): Promise<EndSubscriptionResult> {
    return endSubscription(this.#core, accountId, options)
  }

  /**
   * The account's credit movements, newest first, one page at a time: pass `nextCursor` back as
   * `cursor` for older ones. A cursor stays valid while new movements arrive. The ledger keeps
   * the newest `historyLimit` movements.
   *
   * @throws {@link CreditRuleError} `ERR_CREDIT_ACCOUNT_NOT_FOUND`
   * @throws {@link CreditArgumentError} for a limit outside 1 to 500 or a cursor it did not make
   */
  async transactions(
    accountId: string,
    options: TransactionsOptions = {},
  ): Promise<TransactionsPage> {
    return transactions(this.#core, accountId, options)
  }

  /**
   * Recomputes the balance from the retained history and compares it with the live balance
   * (available plus pending), in one atomic step: reports the difference and every broken link.
   * Reads the whole retained history: meant for support tools and tests, not for each request.
   *
   * @throws {@link CreditRuleError} `ERR_CREDIT_ACCOUNT_NOT_FOUND`
   */
  async audit(accountId: string): Promise<AuditReport> {
    return audit(this.#core, accountId)
  }

  /**
   * Usage analytics of the account: requests, credits charged, refunds and average latency per
   * UTC hour, day or month over `[from, to)`, with totals and a per-endpoint breakdown. Periods
   * past the retention (see `usageRetention`) read as zero.
   *
   * @throws {@link CreditRuleError} `ERR_CREDIT_ACCOUNT_NOT_FOUND`
   * @throws {@link CreditArgumentError} for a bad range (more than 1000 periods) or granularity
   */
  async usage(accountId: string, options: UsageOptions): Promise<UsageReport> {
    return usage(this.#core, accountId, options)
  }

  /**
   * Counts one call that was not charged (a free tier) in the account's usage analytics. Never
   * touches balances. Commit and release record the calls that held credits themselves.
   *
   * @returns `recorded: false` when the account does not exist (nothing is written)
   */
  async recordUsage(accountId: string, options: RecordUsageOptions): Promise<RecordUsageResult> {
    return recordUsage(this.#core, accountId, options)
  }

  /**
   * Checks that Redis is fit to keep a ledger: `maxmemory-policy noeviction` and persistence (AOF,
   * or at least RDB), on every node of a Cluster. Call it at startup; with `strict: true` it
   * refuses an evicting policy or no persistence at all.
   *
   * @throws {@link CreditStoreError} `ERR_CREDIT_UNSAFE_REDIS_CONFIG` (strict), `ERR_CREDIT_STORE_UNAVAILABLE`
   */
  async check(options: CheckOptions = {}): Promise<RedisCheckReport> {
    return checkRedis(this.#redis, options)
  }

  /**
   * Voids expired holds, forgets old hold outcomes and expires grants in every account (SCAN over
   * every master), each account by one atomic script in its own slot. Every script does this
   * lazily for the account it touches; the sweep is for accounts nobody touches. Safe from any
   * number of instances: a lease lets one sweep run at a time, and correctness does not depend on
   * it.
   *
   * @throws {@link CreditStoreError} `ERR_CREDIT_STORE_UNAVAILABLE`
   */
  async sweep(options: SweepOptions = {}): Promise<SweepResult> {
    return sweepLedger(
      {
        redis: this.#redis,
        runner: this.#runner,
        prefix: this.#prefix,
        now: () => this.#now(),
        doneTtlMs: this.#doneTtlMs,
        historyLimit: this.#historyLimit,
      },
      options,
    )
  }

  /** Runs an account script, as one operation of `batch` when one is given. */
  async #run(
    def: ScriptDef,
    accountId: string,
    batch: BatchScriptDef | undefined,
    args: readonly (string | number)[],
  ): Promise<Reply> {
    const keys = scriptKeys(this.#prefix, accountId, def.numberOfKeys)
    let raw: unknown
    if (batch === undefined) {
      // After everything queued before it: a balance read sees the settlements made before.
      this.#batcher.flush()
      raw = await this.#runner.run(def, keys, args)
    } else {
      raw = await this.#batcher.run(def, batch, keys, args)
    }
    const reply = new Reply(def.name, raw)
    reply.throwIfInvalid()
    return reply
  }

  #now(): string {
    if (this.#clock === undefined) return ''
    const now = this.#clock()
    if (!Number.isSafeInteger(now) || now < 0) {
      throw new CreditConfigError(
        'ERR_CREDIT_INVALID_OPTION',
        `clock() must return epoch milliseconds, got ${describe(now)}`,
      )
    }
    return String(now)
  }

  #typeName(value: unknown, what: string): string {
    if (typeof value !== 'string' || !this.#types.has(value)) {
      throw new CreditArgumentError(
        'ERR_CREDIT_INVALID_ARGUMENT',
        `${what} must be one of ${this.accountTypes.join(', ')}, got ${describe(value)}`,
      )
    }
    return value
  }

  #type(name: string): ResolvedType {
    const type = this.#types.get(name)
    if (type === undefined)
      throw new CreditArgumentError('ERR_CREDIT_INVALID_ARGUMENT', `unknown account type ${name}`)
    return type
  }

  #allowed(value: unknown): string {
    if (value === undefined) return '*'
    if (!Array.isArray(value)) {
      throw new CreditArgumentError(
        'ERR_CREDIT_INVALID_ARGUMENT',
        `allowedTypes must be an array of account types, got ${describe(value)}`,
      )
    }
    return `,${value.map((t) => this.#typeName(t, 'allowedTypes[]')).join(',')},`
  }

  #conflict(key: string): CreditRuleError {
    return new CreditRuleError(
      'ERR_CREDIT_IDEMPOTENCY_CONFLICT',
      `idempotency key ${describe(key)} was already used for another grant; use a new key for a new grant`,
    )
  }

  #noAccount(id: string): CreditRuleError {
    return new CreditRuleError(
      'ERR_CREDIT_ACCOUNT_NOT_FOUND',
      `account ${describe(id)} does not exist; open it first`,
    )
  }
}

import { describe, fromMilli, toMilli } from '../amount.js'
import { CreditArgumentError, CreditRuleError } from '../errors.js'
import { scripts } from '../lua/scripts.js'
import { SOURCE, argOptions, argString, argText, argTime } from '../validate.js'
import type { LedgerCore } from './core.js'
import { checkAccountId, claimKey, encodeAccountId } from './keys.js'
import type {
  EndSubscriptionOptions,
  EndSubscriptionResult,
  SubscribeOptions,
  SubscribeResult,
  SubscribeStatus,
  SubscriptionInfo,
} from './lifecycle-types.js'
import { Reply } from './replies.js'

/**
 * The most credits a plan may grant a month: 10^9. A rolling-over subscription accumulates, and
 * 600 months of this stay far below the 2^53 − 1 milli-credits an amount may reach.
 */
export const MAX_MONTHLY_CREDITS = 1_000_000_000

const STATUSES: Readonly<Record<string, SubscribeStatus>> = {
  STARTED: 'started',
  CHANGED: 'changed',
  RESUMED: 'resumed',
  UNCHANGED: 'unchanged',
}

/**
 * Parses the subscription field of a script reply (`subscriptionReply` in lib.lua):
 * `plan|monthly|rollover|anchor|periodStart|periodEnd|renewsAt|endsAt`, `-` for none, or `''`.
 *
 * @returns the subscription, or `null` for `''`; `undefined` when malformed
 */
export function parseSubscription(text: string): SubscriptionInfo | null | undefined {
  if (text === '') return null
  const m =
    /^([A-Za-z0-9_.-]{1,64})\|(\d{1,16})\|([01])\|(\d{1,16})\|(-|\d{1,16})\|(-|\d{1,16})\|(-|\d{1,16})\|(-|\d{1,16})$/.exec(
      text,
    )
  if (m === null) return undefined
  const time = (s: string | undefined): number | null =>
    s === undefined || s === '-' ? null : Number(s)
  return {
    plan: m[1] ?? '',
    monthlyCredits: fromMilli(Number(m[2])),
    rollover: m[3] === '1',
    startsAt: Number(m[4]),
    periodStart: time(m[5]),
    periodEnd: time(m[6]),
    renewsAt: time(m[7]),
    endsAt: time(m[8]),
  }
}

function subscriptionOf(reply: Reply, index: number): SubscriptionInfo | null {
  const parsed = parseSubscription(reply.text(index))
  if (parsed === undefined) throw reply.broken(reply)
  return parsed
}

function argBoolean(value: unknown, what: string): boolean {
  if (typeof value !== 'boolean') {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `${what} must be a boolean, got ${describe(value)}`,
    )
  }
  return value
}

/** `RedisLedger.subscribe`: see there. */
export async function subscribe(
  core: LedgerCore,
  accountId: string,
  options: SubscribeOptions,
): Promise<SubscribeResult> {
  const id = checkAccountId(accountId)
  const o = argOptions(
    options,
    ['plan', 'monthlyCredits', 'rollover', 'startsAt', 'idempotencyKey'],
    'subscribe',
  )
  const plan = argString(o['plan'], 'plan', SOURCE, '1 to 64 of A-Z a-z 0-9 _ . -')
  const monthly = toMilli(o['monthlyCredits'], 'monthlyCredits')
  if (monthly === 0 || monthly > MAX_MONTHLY_CREDITS * 1000) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_AMOUNT',
      `monthlyCredits must be more than 0 and at most ${MAX_MONTHLY_CREDITS}, got ${describe(o['monthlyCredits'])}`,
    )
  }
  const rollover = o['rollover'] === undefined ? false : argBoolean(o['rollover'], 'rollover')
  const startsAt = o['startsAt'] === undefined ? '' : argTime(o['startsAt'], 'startsAt')
  const key = argText(o['idempotencyKey'], 'idempotencyKey', 256)
  const flag = rollover ? '1' : '0'
  // One key, one operation across the whole ledger (shared with grants): the marker keeps a
  // subscription's fingerprint from ever equalling a grant's.
  const fingerprint = `${encodeAccountId(id)}|subscribe|${plan}|${monthly}|${flag}|${startsAt}`
  const claim = new Reply(
    'claim',
    await core.runner.run(scripts.claim, [claimKey(core.prefix, key)], [fingerprint]),
  )
  if (claim.status === 'CONFLICT') throw core.conflict(key)
  if (claim.status !== 'NEW' && claim.status !== 'SAME') throw claim.broken(claim)
  // A call refused for its arguments writes nothing: withdraw the claim it made, while it is
  // still ours (see RedisLedger.grant), so that the corrected call may use the key.
  const withdraw = async (): Promise<void> => {
    if (claim.status !== 'NEW') return
    await core.runner
      .run(scripts.unlock, [claimKey(core.prefix, key)], [fingerprint])
      .catch(() => undefined)
  }
  let reply: Reply
  try {
    reply = await core.run(scripts.subscribe, id, [
      core.now(),
      plan,
      monthly,
      flag,
      startsAt,
      key,
      core.doneTtlMs,
      core.historyLimit,
    ])
  } catch (error) {
    if (error instanceof CreditArgumentError) await withdraw()
    throw error
  }
  const replayed = reply.status === 'DUPLICATE'
  const status = STATUSES[replayed ? reply.text(4) : reply.status]
  if (status !== undefined) {
    const subscription = subscriptionOf(reply, 1)
    if (subscription === null && !replayed) throw reply.broken(reply)
    return {
      accountId: id,
      status,
      replayed,
      subscription,
      balance: fromMilli(reply.int(2) + reply.int(3)),
      available: reply.credits(2),
      pending: reply.credits(3),
    }
  }
  switch (reply.status) {
    case 'CONFLICT':
      throw core.conflict(key)
    case 'ANCHOR': {
      await withdraw()
      const current = subscriptionOf(reply, 1)
      throw new CreditArgumentError(
        'ERR_CREDIT_INVALID_ARGUMENT',
        `startsAt cannot move the anniversary of the current subscription (anchored at ${
          current === null ? '?' : new Date(current.startsAt).toISOString()
        }); omit startsAt to change the plan, or end the subscription first`,
      )
    }
    case 'NOT_ALLOWED':
      throw new CreditRuleError(
        'ERR_CREDIT_TOPUP_NOT_ALLOWED',
        `account ${describe(id)} is a "${reply.text(1)}" account, which takes no top-ups or subscriptions`,
      )
    case 'NO_ACCOUNT':
      throw core.noAccount(id)
    default:
      throw reply.broken(reply)
  }
}

/** `RedisLedger.endSubscription`: see there. */
export async function endSubscription(
  core: LedgerCore,
  accountId: string,
  options: EndSubscriptionOptions = {},
): Promise<EndSubscriptionResult> {
  const id = checkAccountId(accountId)
  const o = argOptions(options, ['at'], 'endSubscription')
  const at = o['at'] === undefined ? '' : argTime(o['at'], 'at')
  const reply = await core.run(scripts.endSubscription, id, [
    core.now(),
    at,
    core.doneTtlMs,
    core.historyLimit,
  ])
  switch (reply.status) {
    case 'ENDING': {
      const subscription = subscriptionOf(reply, 1)
      if (subscription === null) throw reply.broken(reply)
      return {
        accountId: id,
        status: 'ending',
        subscription,
        balance: fromMilli(reply.int(2) + reply.int(3)),
        available: reply.credits(2),
        pending: reply.credits(3),
      }
    }
    case 'NONE':
      return {
        accountId: id,
        status: 'none',
        subscription: null,
        balance: fromMilli(reply.int(1) + reply.int(2)),
        available: reply.credits(1),
        pending: reply.credits(2),
      }
    case 'NO_ACCOUNT':
      throw core.noAccount(id)
    default:
      throw reply.broken(reply)
  }
}

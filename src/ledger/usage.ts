import { describe, fromMilli } from '../amount.js'
import { CreditArgumentError } from '../errors.js'
import { scripts } from '../lua/scripts.js'
import {
  argEndpoint,
  argInteger,
  argOptions,
  argTime,
  configInteger,
  plainOptions,
} from '../validate.js'
import type { LedgerCore, ResolvedUsageRetention } from './core.js'
import { checkAccountId } from './keys.js'
import type {
  RecordUsageOptions,
  RecordUsageResult,
  UsageCounters,
  UsageEndpoint,
  UsageGranularity,
  UsageOptions,
  UsagePoint,
  UsageReport,
} from './lifecycle-types.js'
import type { Reply } from './replies.js'

const HOUR_MS = 60 * 60 * 1000
const DAY_MS = 24 * HOUR_MS

/** Default usage retention: 48 hours of hours, 90 days of days, 731 days (24 months) of months. */
export const DEFAULT_USAGE_RETENTION: ResolvedUsageRetention = Object.freeze({
  hour: 48 * HOUR_MS,
  day: 90 * DAY_MS,
  month: 731 * DAY_MS,
})

/** The most periods one `usage` query may span (1000 hours ≈ 41 days; 1000 days; 1000 months). */
export const MAX_USAGE_PERIODS = 1000

const SHORTEST: ResolvedUsageRetention = { hour: HOUR_MS, day: DAY_MS, month: 31 * DAY_MS }
const CODE = { hour: 'h', day: 'd', month: 'm' } as const
const GRANULARITIES = Object.keys(CODE) as UsageGranularity[]

/**
 * Checks the `usageRetention` option of {@link RedisLedger}, filling in the defaults.
 *
 * @throws {@link CreditConfigError} `ERR_CREDIT_INVALID_OPTION`
 */
export function parseUsageRetention(input: unknown): ResolvedUsageRetention {
  if (input === undefined) return DEFAULT_USAGE_RETENTION
  const o = plainOptions(input, GRANULARITIES, 'usageRetention')
  const pick = (g: UsageGranularity): number =>
    o[g] === undefined
      ? DEFAULT_USAGE_RETENTION[g]
      : configInteger(o[g], `usageRetention.${g} (ms)`, SHORTEST[g])
  return Object.freeze({ hour: pick('hour'), day: pick('day'), month: pick('month') })
}

/** The start of the UTC period of `granularity` that contains `t`. */
export function periodStart(granularity: UsageGranularity, t: number): number {
  if (granularity === 'hour') return t - (t % HOUR_MS)
  if (granularity === 'day') return t - (t % DAY_MS)
  const date = new Date(t)
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1)
}

/** The start of the period after the one starting at `start`. */
export function nextPeriod(granularity: UsageGranularity, start: number): number {
  if (granularity === 'hour') return start + HOUR_MS
  if (granularity === 'day') return start + DAY_MS
  const date = new Date(start)
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1)
}

interface Tally {
  requests: number
  milli: number
  refunds: number
  latencySum: number
  latencyCount: number
}

const emptyTally = (): Tally => ({
  requests: 0,
  milli: 0,
  refunds: 0,
  latencySum: 0,
  latencyCount: 0,
})

function add(into: Tally, from: Tally): void {
  into.requests += from.requests
  into.milli += from.milli
  into.refunds += from.refunds
  into.latencySum += from.latencySum
  into.latencyCount += from.latencyCount
}

function counters(t: Tally | undefined): UsageCounters {
  const tally = t ?? emptyTally()
  return {
    requests: tally.requests,
    credits: fromMilli(tally.milli),
    refunds: tally.refunds,
    avgLatencyMs:
      tally.latencyCount === 0
        ? null
        : Math.round((tally.latencySum / tally.latencyCount) * 10) / 10,
  }
}

const FIELD = /^[hdm](\d{16}):(.+)$/s
const VALUE = /^(\d{1,16})\|(\d{1,16})\|(\d{1,16})\|(\d{1,16})\|(\d{1,16})$/

function parseCell(name: string, value: string, reply: Reply): [number, string, Tally] {
  const n = FIELD.exec(name)
  const v = VALUE.exec(value)
  if (n === null || v === null) throw reply.broken(reply)
  return [
    Number(n[1]),
    n[2] ?? '',
    {
      requests: Number(v[1]),
      milli: Number(v[2]),
      refunds: Number(v[3]),
      latencySum: Number(v[4]),
      latencyCount: Number(v[5]),
    },
  ]
}

/** `RedisLedger.usage`: see there. */
export async function usage(
  core: LedgerCore,
  accountId: string,
  options: UsageOptions,
): Promise<UsageReport> {
  const id = checkAccountId(accountId)
  const o = argOptions(options, ['from', 'to', 'granularity', 'endpoint'], 'usage')
  const from = argTime(o['from'], 'from')
  const to = argTime(o['to'], 'to')
  if (to <= from) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `to must be after from, got from ${from} and to ${to}`,
    )
  }
  const granularity = o['granularity']
  if (typeof granularity !== 'string' || !(GRANULARITIES as string[]).includes(granularity)) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `granularity must be one of ${GRANULARITIES.join(', ')}, got ${describe(granularity)}`,
    )
  }
  const g = granularity as UsageGranularity
  const endpoint = o['endpoint'] === undefined ? null : argEndpoint(o['endpoint'])
  const starts: number[] = []
  for (let s = periodStart(g, from); s < to; s = nextPeriod(g, s)) {
    if (starts.length === MAX_USAGE_PERIODS) {
      throw new CreditArgumentError(
        'ERR_CREDIT_INVALID_ARGUMENT',
        `the range spans more than ${MAX_USAGE_PERIODS} ${g}s; narrow it or use a coarser granularity`,
      )
    }
    starts.push(s)
  }
  const first = starts[0] ?? from
  const keep = core.usageRetention
  const reply = await core.run(scripts.usageQuery, id, [
    core.now(),
    CODE[g],
    first,
    to,
    endpoint ?? '',
    keep.hour,
    keep.day,
    keep.month,
  ])
  if (reply.status === 'NO_ACCOUNT') throw core.noAccount(id)
  if (reply.status !== 'OK' || reply.length % 2 !== 0) throw reply.broken(reply)
  const byStart = new Map<number, Tally>()
  const byEndpoint = new Map<string, Tally>()
  const total = emptyTally()
  for (let i = 2; i < reply.length; i += 2) {
    const [start, name, tally] = parseCell(reply.text(i), reply.text(i + 1), reply)
    const atStart = byStart.get(start) ?? emptyTally()
    add(atStart, tally)
    byStart.set(start, atStart)
    const atEndpoint = byEndpoint.get(name) ?? emptyTally()
    add(atEndpoint, tally)
    byEndpoint.set(name, atEndpoint)
    add(total, tally)
  }
  const series: UsagePoint[] = starts.map((start) => ({
    start,
    end: nextPeriod(g, start),
    ...counters(byStart.get(start)),
  }))
  const endpoints: UsageEndpoint[] = [...byEndpoint.entries()]
    .sort(([a, x], [b, y]) => y.requests - x.requests || (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, tally]) => ({ endpoint: name, ...counters(tally) }))
  return {
    accountId: id,
    granularity: g,
    from: first,
    to: series.at(-1)?.end ?? to,
    endpoint,
    series,
    totals: counters(total),
    endpoints,
    truncated: reply.text(1) === '1',
  }
}

/** `RedisLedger.recordUsage`: see there. */
export async function recordUsage(
  core: LedgerCore,
  accountId: string,
  options: RecordUsageOptions,
): Promise<RecordUsageResult> {
  const id = checkAccountId(accountId)
  const o = argOptions(options, ['endpoint', 'latencyMs', 'charged'], 'recordUsage')
  const endpoint = argEndpoint(o['endpoint'])
  const latency = o['latencyMs'] === undefined ? '' : argInteger(o['latencyMs'], 'latencyMs', 0)
  if (o['charged'] !== undefined && o['charged'] !== false) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `recordUsage records calls that were not charged (charged: false); commit records the others, got charged ${describe(o['charged'])}`,
    )
  }
  const keep = core.usageRetention
  const reply = await core.run(scripts.recordUsage, id, [
    core.now(),
    endpoint,
    latency,
    keep.hour,
    keep.day,
    keep.month,
  ])
  if (reply.status !== 'OK' && reply.status !== 'NO_ACCOUNT') throw reply.broken(reply)
  return { accountId: id, recorded: reply.status === 'OK' }
}

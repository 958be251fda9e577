import fc from 'fast-check'
import { Redis, type Cluster } from 'ioredis'

import { RedisLedger, isCreditError } from '../../src/index'
import { interceptScripts } from '../helpers/intercept'
import { clusterRedis, mockRedis, redisClusterUrl, uniquePrefix } from '../helpers/redis'
import { spawnRedis, type RedisProcess } from '../setup/redis-process'
import { LedgerModel, type Outcome, type TypeRule } from './ledger-model'

/**
 * The ledger, model-checked: random sequences of operations (open, grant and its replays, reserve,
 * commit in full or in part, release, subscribe, end, advancing the clock, SCRIPT FLUSH, lost
 * replies, sweeps) run against RedisLedger and against a plain TypeScript model
 * (ledger-model.ts); after every step each account's balance, available, pending, buckets and
 * subscription must be equal, and every answer must be the model's.
 *
 * CI runs CREDITGATE_MODEL_OPS (default 10 000) operations on a real redis-server, a tenth of that
 * on the Redis Cluster and a twentieth on ioredis-mock (Lua in JavaScript is slow). A longer run:
 *   CREDITGATE_MODEL_OPS=200000 npx jest test/reliability/model
 * Replay a failure with CREDITGATE_MODEL_SEED=<the printed seed>.
 */

const DAY = 86_400_000
const TARGET = Number(process.env['CREDITGATE_MODEL_OPS'] ?? 10_000)
const SEED = Number(process.env['CREDITGATE_MODEL_SEED'] ?? Date.now() % 2 ** 31)
const START = Date.UTC(2026, 0, 31, 12, 0, 0) // a 31st: anniversaries clamp in shorter months
const HOLD_MS = 5000
const DONE_TTL = 120_000
const IDS = ['a', '{b}', 'ü:c'] as const

jest.setTimeout(Math.max(180_000, TARGET * 30))

const TYPES: Record<string, TypeRule> = {
  registered: { signup: 350_000, signupTtl: 0, unlimited: false, topUps: true },
  guest: { signup: 50_000, signupTtl: DAY, unlimited: false, topUps: false },
  enterprise: { signup: 0, signupTtl: 0, unlimited: true, topUps: true },
  tiny: { signup: 3_000, signupTtl: 0, unlimited: false, topUps: true },
  short: { signup: 20_000, signupTtl: 600_000, unlimited: false, topUps: true },
}
const ACCOUNT_TYPES = {
  tiny: { signupCredits: 3 },
  short: { signupCredits: 20, signupExpiresAfterMs: 600_000 },
}

type KeyChoice = { t: 'new' } | { t: 'replay'; i: number } | { t: 'conflict'; i: number }
type Cmd =
  | { k: 'open'; a: number; type: string; drop: boolean }
  | {
      k: 'grant'
      a: number
      amount: number
      source: string
      expiresIn: number | null
      key: KeyChoice
      drop: 'claim' | 'grant' | null
    }
  | {
      k: 'reserve'
      a: number
      cost: number
      holdMs: number | null
      allowed: string[] | null
      openAs: string | null
      drop: boolean
    }
  | { k: 'commit'; h: number; percent: number | null; drop: boolean }
  | { k: 'release'; h: number; drop: boolean }
  | { k: 'advance'; ms: number; to: 'renewal' | 'hold' | 'bucket' | null; i: number; off: number }
  | { k: 'flush' }
  | {
      k: 'subscribe'
      a: number
      plan: string
      monthly: number
      rollover: boolean
      startsIn: number | null
      key: KeyChoice
      drop: 'claim' | 'subscribe' | null
    }
  | { k: 'end'; a: number; atIn: number | 'periodEnd' | null; off: number; drop: boolean }

const often = <T>(yes: fc.Arbitrary<T>, no: T, weight = 9): fc.Arbitrary<T> =>
  fc.oneof({ weight, arbitrary: fc.constant(no) }, { weight: 1, arbitrary: yes })
const account = fc.nat(IDS.length - 1)
const keyChoice: fc.Arbitrary<KeyChoice> = fc.oneof(
  { weight: 5, arbitrary: fc.constant({ t: 'new' as const }) },
  { weight: 3, arbitrary: fc.nat().map((i) => ({ t: 'replay' as const, i })) },
  { weight: 1, arbitrary: fc.nat().map((i) => ({ t: 'conflict' as const, i })) },
)
const milli = (max: number): fc.Arbitrary<number> =>
  fc.oneof(
    fc.integer({ min: 0, max }).map((c) => c * 1000),
    fc.integer({ min: 0, max: max * 1000 }),
  )

function commands(subscriptions: boolean, flush: boolean): fc.Arbitrary<Cmd[]> {
  const cmd: fc.Arbitrary<Cmd> = fc.oneof(
    {
      weight: 2,
      arbitrary: fc.record({
        k: fc.constant('open' as const),
        a: account,
        type: fc.constantFrom(...Object.keys(TYPES)),
        drop: often(fc.constant(true), false),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        k: fc.constant('grant' as const),
        a: account,
        amount: milli(50).map((m) => Math.max(m, 1)),
        source: fc.constantFrom('purchase', 'promo', 'bonus'),
        expiresIn: fc.option(fc.constantFrom(1, 1000, 60_000, 3_600_000, DAY, 40 * DAY), {
          nil: null,
        }),
        key: keyChoice,
        drop: often(fc.constantFrom('claim' as const, 'grant' as const), null),
      }),
    },
    {
      weight: 6,
      arbitrary: fc.record({
        k: fc.constant('reserve' as const),
        a: account,
        cost: milli(60),
        holdMs: fc.option(fc.constantFrom(1, 1000, 60_000), { nil: null }),
        allowed: often(
          fc.constantFrom(['registered', 'enterprise', 'short'], ['tiny', 'guest']),
          null,
          4,
        ),
        openAs: often(fc.constantFrom('guest', 'tiny', 'short'), null, 3),
        drop: often(fc.constant(true), false),
      }),
    },
    {
      weight: 5,
      arbitrary: fc.record({
        k: fc.constant('commit' as const),
        h: fc.nat(),
        percent: often(fc.integer({ min: 0, max: 130 }), null, 2),
        drop: often(fc.constant(true), false),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        k: fc.constant('release' as const),
        h: fc.nat(),
        drop: often(fc.constant(true), false),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        k: fc.constant('advance' as const),
        ms: fc.constantFrom(
          1,
          999,
          1000,
          5000,
          60_000,
          600_000,
          3_600_000,
          DAY,
          29 * DAY,
          31 * DAY,
        ),
        // Or exactly to (off: just before, at, just after) a boundary the model knows of.
        to: often(fc.constantFrom('renewal' as const, 'hold' as const, 'bucket' as const), null, 2),
        i: fc.nat(),
        off: fc.constantFrom(-1, 0, 0, 1),
      }),
    },
    ...(flush ? [{ weight: 1, arbitrary: fc.constant({ k: 'flush' as const }) }] : []),
    ...(subscriptions
      ? [
          {
            weight: 2,
            arbitrary: fc.record({
              k: fc.constant('subscribe' as const),
              a: account,
              plan: fc.constantFrom('basic', 'pro'),
              monthly: fc.constantFrom(5_000, 7_500, 20_000),
              rollover: fc.boolean(),
              startsIn: fc.option(fc.constantFrom(-40 * DAY, -DAY, 0, 3_600_000, 10 * DAY), {
                nil: null,
              }),
              key: keyChoice,
              drop: often(fc.constantFrom('claim' as const, 'subscribe' as const), null),
            }),
          },
          {
            weight: 1,
            arbitrary: fc.record({
              k: fc.constant('end' as const),
              a: account,
              atIn: fc.option(
                fc.constantFrom(-DAY, 0, DAY, 35 * DAY, 70 * DAY, 'periodEnd' as const),
                { nil: null },
              ),
              off: fc.constantFrom(-1, 0, 1),
              drop: often(fc.constant(true), false),
            }),
          },
        ]
      : []),
  ) as fc.Arbitrary<Cmd>
  return fc.array(cmd, { minLength: 1, maxLength: 60, size: 'max' })
}

/** A client that runs every script but can lose the reply of the n-th one, as a dropped connection does. */
function lossyClient<T extends Redis | Cluster>(
  redis: T,
): { client: T; lose: (n: number) => void; disarm: () => void; idle: () => Promise<void> } {
  let target: number | undefined
  let seen = 0
  let inFlight = 0
  const client = interceptScripts(redis, async (_call, send) => {
    inFlight += 1
    let reply: unknown
    try {
      reply = await send()
    } finally {
      inFlight -= 1
    }
    if (target !== undefined) {
      if (seen === target) {
        target = undefined
        throw new Error('Connection is closed.')
      }
      seen += 1
    }
    return reply
  })
  return {
    client,
    lose: (n) => {
      target = n
      seen = 0
    },
    disarm: () => {
      target = undefined
    },
    // Waits for the calls the ledger makes on its own (the void of a reserve whose reply was
    // lost runs in the background, and takes two round trips after a SCRIPT FLUSH).
    idle: async () => {
      for (let quiet = 0; quiet < 2;) {
        await new Promise((r) => setImmediate(r))
        quiet = inFlight === 0 ? quiet + 1 : 0
      }
    },
  }
}

type Backend = 'redis' | 'mock' | 'cluster'

interface Used {
  readonly key: string
  readonly kind: 'grant' | 'subscribe'
  readonly a: number
  readonly grant?: { amount: number; source: string; expiresAt: number }
  readonly subscribe?: {
    plan: string
    monthly: number
    rollover: boolean
    startsAt: number | undefined
  }
}

const toCredits = (milli: number): number => milli / 1000

/** What the runs did, to show that the interesting paths were taken. */
const stats = new Map<string, number>()
const count = (what: string): void => {
  stats.set(what, (stats.get(what) ?? 0) + 1)
}

async function outcome(promise: Promise<unknown>): Promise<Outcome<unknown>> {
  try {
    return { ok: await promise }
  } catch (error) {
    if (!isCreditError(error)) throw error
    return { error: error.code }
  }
}

/** Compares the ledger's answer with the model's, on the fields the model knows. */
function same(step: string, real: Outcome<unknown>, expected: Outcome<object>): void {
  const kind = /^#\d+ \{"k":"(\w+)"/.exec(step)?.[1] ?? 'check'
  if (!step.includes(' then ')) {
    const ok = 'ok' in expected ? (expected.ok as Record<string, unknown>) : undefined
    count(
      `${kind}:${
        'error' in expected
          ? expected.error.replace('ERR_CREDIT_', '').toLowerCase()
          : JSON.stringify(
              ok?.['status'] ?? ok?.['outcome'] ?? (ok?.['replayed'] === true ? 'replayed' : 'ok'),
            ).replace(/"/g, '')
      }`,
    )
  }
  if ('error' in expected || 'error' in real) {
    expect({ step, ...('error' in real ? { error: real.error } : { ok: real.ok }) }).toEqual({
      step,
      ...expected,
    })
    return
  }
  const got = real.ok as Record<string, unknown>
  const projected = Object.fromEntries(Object.keys(expected.ok).map((k) => [k, got[k]]))
  expect({ step, ok: projected }).toEqual({ step, ok: expected.ok })
}

async function runModel(redis: Redis | Cluster | undefined, cmds: Cmd[]): Promise<number> {
  const own = redis ?? mockRedis()
  const lossy = lossyClient(own)
  let now = START
  const ledger = new RedisLedger({
    redis: lossy.client,
    prefix: uniquePrefix(),
    clock: () => now,
    holdMs: HOLD_MS,
    resolvedHoldRetentionMs: DONE_TTL,
    accountTypes: ACCOUNT_TYPES,
  })
  const model = new LedgerModel(START, new Map(Object.entries(TYPES)), HOLD_MS, DONE_TTL)
  const holds: { holdId: string; id: string; nonce: string; cost: number }[] = []
  const used: Used[] = []
  let keys = 0
  let ops = 0
  try {
    for (const [index, cmd] of cmds.entries()) {
      const step = `#${index} ${JSON.stringify(cmd)}`
      ops += 1
      switch (cmd.k) {
        case 'open': {
          const id = IDS[cmd.a]!
          if (cmd.drop) lossy.lose(0)
          const real = await outcome(ledger.openAccount(id, { type: cmd.type }))
          const expected = model.openAccount(id, cmd.type)
          same(step, real, cmd.drop ? { error: 'ERR_CREDIT_STORE_UNAVAILABLE' } : expected)
          break
        }
        case 'grant': {
          let a = cmd.a
          let g = {
            amount: cmd.amount,
            source: cmd.source,
            expiresAt: cmd.expiresIn === null ? 0 : now + cmd.expiresIn,
          }
          let key = `k${keys++}`
          const previous =
            used.length === 0 ? undefined : used[('i' in cmd.key ? cmd.key.i : 0) % used.length]
          if (previous !== undefined && cmd.key.t !== 'new') {
            key = previous.key
            if (previous.grant !== undefined) {
              a = previous.a
              g = { ...previous.grant }
            }
            if (cmd.key.t === 'conflict') g.amount += 1
          }
          const id = IDS[a]!
          if (cmd.drop !== null) lossy.lose(cmd.drop === 'claim' ? 0 : 1)
          const real = await outcome(
            ledger.grant(id, {
              amount: toCredits(g.amount),
              source: g.source,
              idempotencyKey: key,
              ...(g.expiresAt === 0 ? {} : { expiresAt: g.expiresAt }),
            }),
          )
          const expected = model.grant(id, { ...g, key }, cmd.drop ?? undefined)
          same(step, real, expected)
          if (!used.some((u) => u.key === key)) used.push({ key, kind: 'grant', a, grant: g })
          break
        }
        case 'reserve': {
          const id = IDS[cmd.a]!
          const options = {
            endpoint: '/model',
            ...(cmd.holdMs === null ? {} : { holdMs: cmd.holdMs }),
            ...(cmd.allowed === null ? {} : { allowedTypes: cmd.allowed }),
            ...(cmd.openAs === null ? {} : { openAs: cmd.openAs }),
          }
          const modelOptions = {
            ...(cmd.holdMs === null ? {} : { holdMs: cmd.holdMs }),
            ...(cmd.allowed === null ? {} : { allowed: cmd.allowed }),
            ...(cmd.openAs === null ? {} : { openAs: cmd.openAs }),
          }
          if (cmd.drop) {
            lossy.lose(0)
            const real = await outcome(ledger.reserve(id, toCredits(cmd.cost), options))
            model.lostReserve(id, cmd.cost, modelOptions)
            same(step, real, { error: 'ERR_CREDIT_STORE_UNAVAILABLE' })
            break
          }
          const real = await outcome(ledger.reserve(id, toCredits(cmd.cost), options))
          const held =
            'ok' in real && (real.ok as { status: string }).status === 'held'
              ? (real.ok as { holdId: string }).holdId
              : undefined
          const nonce = held === undefined ? `none-${index}` : held.slice(held.lastIndexOf(':') + 1)
          const expected = model.reserve(id, cmd.cost, modelOptions, nonce)
          same(step, real, expected)
          if (held !== undefined) holds.push({ holdId: held, id, nonce, cost: cmd.cost })
          break
        }
        case 'commit':
        case 'release': {
          const hold = holds[cmd.h % Math.max(holds.length, 1)]
          if (hold === undefined) break
          const actual =
            cmd.k === 'commit' && cmd.percent !== null
              ? Math.floor((hold.cost * cmd.percent) / 100)
              : undefined
          if (cmd.drop) lossy.lose(0)
          const real = await outcome(
            cmd.k === 'commit'
              ? ledger.commit(
                  hold.holdId,
                  actual === undefined ? {} : { actualCost: toCredits(actual) },
                )
              : ledger.release(hold.holdId),
          )
          const expected = model.settle(hold.id, hold.nonce, cmd.k, actual)
          same(step, real, cmd.drop ? { error: 'ERR_CREDIT_STORE_UNAVAILABLE' } : expected)
          break
        }
        case 'advance': {
          const boundaries: number[] = []
          for (const a of model.accounts.values()) {
            if (cmd.to === 'renewal' && a.sub !== null) {
              const view = model.subscriptionView(a)
              if (view?.renewsAt != null) boundaries.push(view.renewsAt)
              if (view?.endsAt != null) boundaries.push(view.endsAt)
            }
            if (cmd.to === 'hold')
              for (const h of a.holds.values()) if (h.state === 'P') boundaries.push(h.expiresAt)
            if (cmd.to === 'bucket')
              for (const b of a.buckets.values()) if (b.exp !== 0) boundaries.push(b.exp)
          }
          const future = boundaries.map((t) => t + cmd.off).filter((t) => t > now)
          now = future.length === 0 ? now + cmd.ms : future[cmd.i % future.length]!
          model.now = now
          // The sweep finds exactly what fell due since the last step, in every account.
          const real = await ledger.sweep({ count: 1000 })
          const m = model.sweep()
          expect({ step, ...real }).toEqual({
            step,
            skipped: false,
            accounts: model.accounts.size,
            holdsVoided: m.voided,
            holdsForgotten: m.forgotten,
            creditsExpired: toCredits(m.expired),
          })
          break
        }
        case 'flush':
          await (own as Redis).script('FLUSH')
          break
        case 'subscribe': {
          let a = cmd.a
          let o = {
            plan: cmd.plan,
            monthly: cmd.monthly,
            rollover: cmd.rollover,
            startsAt: cmd.startsIn === null ? undefined : now + cmd.startsIn,
          }
          let key = `k${keys++}`
          const previous =
            used.length === 0 ? undefined : used[('i' in cmd.key ? cmd.key.i : 0) % used.length]
          if (previous !== undefined && cmd.key.t !== 'new') {
            key = previous.key
            if (previous.subscribe !== undefined) {
              a = previous.a
              o = { ...previous.subscribe }
            }
            if (cmd.key.t === 'conflict') o.monthly += 1
          }
          const id = IDS[a]!
          if (cmd.drop !== null) lossy.lose(cmd.drop === 'claim' ? 0 : 1)
          const real = await outcome(
            ledger.subscribe(id, {
              plan: o.plan,
              monthlyCredits: toCredits(o.monthly),
              rollover: o.rollover,
              idempotencyKey: key,
              ...(o.startsAt === undefined ? {} : { startsAt: o.startsAt }),
            }),
          )
          const expected = model.subscribe(id, { ...o, key }, cmd.drop ?? undefined)
          same(step, real, expected)
          if (!used.some((u) => u.key === key))
            used.push({ key, kind: 'subscribe', a, subscribe: o })
          break
        }
        case 'end': {
          const id = IDS[cmd.a]!
          const periodEnd = model.accounts.get(id)?.sub
            ? model.subscriptionView(model.accounts.get(id)!)?.periodEnd
            : undefined
          const at =
            cmd.atIn === null
              ? undefined
              : cmd.atIn === 'periodEnd'
                ? (periodEnd ?? now) + cmd.off
                : now + cmd.atIn
          if (cmd.drop) lossy.lose(0)
          const real = await outcome(ledger.endSubscription(id, at === undefined ? {} : { at }))
          const expected = model.endSubscription(id, at)
          same(step, real, cmd.drop ? { error: 'ERR_CREDIT_STORE_UNAVAILABLE' } : expected)
          break
        }
      }
      lossy.disarm()
      await lossy.idle()
      // After every step, every account agrees with the model.
      for (const id of IDS) {
        const expected = model.balance(id)
        const real = await outcome(ledger.balance(id))
        same(`${step} then balance(${id})`, real, expected)
        if ('ok' in real) {
          const b = real.ok as { available: number; pending: number }
          expect(b.available).toBeGreaterThanOrEqual(0)
          expect(b.pending).toBeGreaterThanOrEqual(0)
        }
      }
    }
    // Every account's history adds up to its balance.
    for (const id of IDS) {
      if (model.accounts.has(id)) expect(await ledger.audit(id)).toMatchObject({ ok: true })
    }
  } finally {
    if (redis === undefined) await own.quit()
  }
  return ops
}

const hasSubscriptions =
  typeof (RedisLedger.prototype as unknown as Record<string, unknown>)['subscribe'] ===
    'function' &&
  typeof (RedisLedger.prototype as unknown as Record<string, unknown>)['endSubscription'] ===
    'function'

const plans: [Backend, number][] = [
  ['redis', TARGET],
  ['mock', Math.ceil(TARGET / 20)],
  ...(redisClusterUrl() === undefined
    ? []
    : ([['cluster', Math.ceil(TARGET / 10)]] as [Backend, number][])),
]

describe.each(plans)('the ledger against its model on %s', (backend, target) => {
  let server: RedisProcess | undefined
  let redis: Redis | Cluster | undefined
  beforeAll(async () => {
    if (backend === 'redis') {
      // A private server: SCRIPT FLUSH and sweeps touch only this test's keys.
      server = await spawnRedis()
      redis = new Redis(server.url)
    } else if (backend === 'cluster') {
      redis = clusterRedis()
    }
  })
  afterAll(async () => {
    await redis?.quit()
    await server?.stop()
  })

  it(`agrees after every step over at least ${target} operations`, async () => {
    if (!hasSubscriptions) console.log('subscribe/endSubscription not on RedisLedger: not modelled')
    console.log(
      `model on ${backend}: fast-check seed ${SEED} (replay: CREDITGATE_MODEL_SEED=${SEED}), target ${target} operations`,
    )
    let ops = 0
    let runs = 0
    const started = Date.now()
    for (let round = 0; ops < target; round++) {
      await fc.assert(
        fc.asyncProperty(
          // Most runs start by opening the accounts, so that most steps act on live ones.
          fc.option(fc.tuple(...IDS.map(() => fc.constantFrom(...Object.keys(TYPES)))), {
            freq: 5,
            nil: null,
          }),
          commands(hasSubscriptions, backend === 'redis'),
          async (types, cmds) => {
            const opens: Cmd[] = (types ?? []).map((type, a) => ({
              k: 'open',
              a,
              type,
              drop: false,
            }))
            try {
              ops += await runModel(redis, [...opens, ...cmds])
            } finally {
              // The private server holds only this test's keys: start every run empty, so that
              // the sweeps' SCAN stays short however long the run.
              if (server !== undefined) await (redis as Redis).flushall()
            }
            runs += 1
          },
        ),
        {
          seed: SEED + round,
          numRuns: Math.max(1, Math.ceil((target - ops) / 30)),
        },
      )
    }
    console.log(
      `model on ${backend}: ${[...stats]
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}`,
    )
    stats.clear()
    console.log(
      `model on ${backend}: ${ops} operations in ${runs} runs, ${((Date.now() - started) / 1000).toFixed(1)} s, seed ${SEED}: no difference`,
    )
    expect(ops).toBeGreaterThanOrEqual(target)
  })
})

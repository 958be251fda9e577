import fc from 'fast-check'
import { Redis } from 'ioredis'

import { RedisLedger, isCreditError } from '../../src/index'
import { uniquePrefix } from '../helpers/redis'
import { snapshot } from '../helpers/snapshot'
import { spawnRedis, type RedisProcess } from '../setup/redis-process'

/**
 * Every public method of RedisLedger, fuzzed with invalid values (fc.anything() and targeted bad
 * strings, numbers, times and options): it must answer with a typed CreditError whose code is an
 * ERR_CREDIT_* (never a TypeError, never a hang), and a refused argument must write nothing.
 */

jest.setTimeout(120_000)

const SEED = Number(process.env['FC_SEED'] ?? Date.now() % 2 ** 31)
const RUNS = Number(process.env['CREDITGATE_FUZZ_RUNS'] ?? 250)
/** Codes that say "your input is wrong": nothing may have been written. */
const ARGUMENT_CODES = new Set([
  'ERR_CREDIT_INVALID_AMOUNT',
  'ERR_CREDIT_INVALID_ARGUMENT',
  'ERR_CREDIT_INVALID_ACCOUNT_ID',
])

const badStrings = [
  '',
  ' ',
  'a|b',
  '\u0000',
  'a\nb',
  '\ud800',
  'x'.repeat(600),
  '用'.repeat(200), // 200 characters, 600 bytes
  '🎉'.repeat(130), // 260 UTF-16 units
  '{}',
  '%',
  '__proto__',
  'constructor',
  'subscription',
  'nan',
  '0x10',
]
const badNumbers = [
  Number.NaN,
  -1,
  -0.001,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  1.0005,
  0.1 + 0.2,
  1e21,
  2 ** 53,
  9007199254741,
  '1e3',
  '0x10',
  ' 5',
  '5.',
  '.5',
  '+5',
  '9007199254740.992',
  10n,
  true,
]
const badTimes = [-1, Number.NaN, 1.5, 2 ** 53, new Date(Number.NaN), '2026-01-01', 1, 0, true]
const badOptions = [null, [], 'options', 5, Symbol('options'), () => undefined, new Map()]

const anything = fc.anything({
  withBigInt: true,
  withBoxedValues: true,
  withDate: true,
  withMap: true,
  withSet: true,
  withNullPrototype: true,
  withTypedArray: true,
  withSparseArray: true,
})

/** One argument (or option): its valid values and its bad ones. */
interface Leaf {
  readonly valid: fc.Arbitrary<unknown>
  readonly bad: fc.Arbitrary<unknown>
}
/** An options argument: its fields, and what may stand instead of the whole object. */
interface Shape {
  readonly fields: Record<string, Leaf>
}
type Arg = Leaf | Shape

function field(valid: fc.Arbitrary<unknown>, bad: readonly unknown[]): Leaf {
  return {
    valid,
    bad: fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom(...bad) },
      { weight: 1, arbitrary: anything },
      { weight: 1, arbitrary: fc.constantFrom(null, Symbol('x')) },
    ),
  }
}

function options(fields: Record<string, Leaf>): Shape {
  return { fields }
}

const isShape = (arg: Arg): arg is Shape => 'fields' in arg

/** Every field valid (each may be omitted), or `bad` as the one field, or the whole value bad. */
function shaped(shape: Shape, bad?: string): fc.Arbitrary<unknown> {
  const record = Object.fromEntries(
    Object.entries(shape.fields).map(([k, leaf]) => [k, k === bad ? leaf.bad : leaf.valid]),
  )
  return fc.record(record, { requiredKeys: bad === undefined ? [] : [bad] })
}

/**
 * The arguments of one call: either exactly one argument (or one option, or the whole options
 * object, or an unknown extra option) is bad and everything else valid, which finds the check
 * that is missing; or each argument is independently valid or bad, or anything at all.
 */
function args(...spec: Arg[]): fc.Arbitrary<unknown[]> {
  const valid = (arg: Arg): fc.Arbitrary<unknown> => (isShape(arg) ? shaped(arg) : arg.valid)
  const targets: { at: number; field?: string; whole?: true; extra?: true }[] = []
  spec.forEach((arg, at) => {
    if (isShape(arg)) {
      for (const k of Object.keys(arg.fields)) targets.push({ at, field: k })
      targets.push({ at, whole: true }, { at, extra: true })
    } else targets.push({ at })
  })
  const oneBad = fc.constantFrom(...targets).chain((t) =>
    fc.tuple(
      ...spec.map((arg, at) => {
        if (at !== t.at) return valid(arg)
        if (!isShape(arg)) return arg.bad
        if (t.whole === true) return fc.oneof(fc.constantFrom(...badOptions), anything)
        if (t.extra === true)
          return fc
            .tuple(shaped(arg), fc.string({ minLength: 1 }), anything)
            .map(([o, k, v]) => ({ ...(o as object), [k]: v }))
        return shaped(arg, t.field)
      }),
    ),
  )
  const mixed = fc.tuple(
    ...spec.map((arg) =>
      isShape(arg)
        ? fc.oneof(
            {
              weight: 4,
              arbitrary: shaped({
                fields: Object.fromEntries(
                  Object.entries(arg.fields).map(([k, l]) => [
                    k,
                    { valid: fc.oneof(l.valid, l.bad), bad: l.bad },
                  ]),
                ),
              }),
            },
            { weight: 1, arbitrary: anything },
          )
        : fc.oneof(arg.valid, arg.bad),
    ),
  )
  return fc.oneof({ weight: 3, arbitrary: oneBad }, { weight: 1, arbitrary: mixed })
}

let server: RedisProcess
let redis: Redis
let ledger: RedisLedger
let prefix: string
let holdId: string
const figures = new Map<string, { calls: number; refused: number; codes: Set<string> }>()

beforeAll(async () => {
  // A private server: a snapshot after every call is a SCAN of this test's keys only.
  server = await spawnRedis()
  redis = new Redis(server.url)
  prefix = uniquePrefix()
  ledger = new RedisLedger({ redis, prefix })
  await ledger.openAccount('fz-a', { type: 'registered' })
  await ledger.openAccount('fz-g', { type: 'guest' })
  await ledger.openAccount('fz-e', { type: 'enterprise' })
  const hold = await ledger.reserve('fz-a', 1, { endpoint: '/fuzz' })
  if (hold.status !== 'held') throw new Error('not held')
  holdId = hold.holdId
})
afterAll(async () => {
  await redis.quit()
  await server.stop()
  console.log(
    `fuzz (seed ${SEED}, FC_SEED=${SEED} to replay): ` +
      [...figures]
        .map(
          ([m, f]) =>
            `${m} ${f.calls} calls, ${f.refused} refused (${[...f.codes].sort().join(' ')})`,
        )
        .join('; '),
  )
})

const id = field(fc.constantFrom('fz-a', 'fz-g', 'fz-e', 'fz-none'), [
  '',
  'x'.repeat(257),
  '🎉'.repeat(257),
  '\u0000',
  'a\nb',
  '\ud800',
  42,
  {},
  [],
])
const amount = field(fc.constantFrom(1, 0.5, '2.25', 0), badNumbers)
const text = (valid: string): Leaf => field(fc.constant(valid), badStrings)
const time = (valid: fc.Arbitrary<number>): Leaf => field(valid, badTimes)
const future = fc.integer({ min: 1, max: 10 ** 9 }).map((d) => Date.now() + 10 * 60_000 + d)

type Call = (args: unknown[]) => Promise<unknown>
const methods: [string, fc.Arbitrary<unknown[]>, Call][] = [
  [
    'openAccount',
    args(id, options({ type: text('registered') })),
    ([i, o]) => ledger.openAccount(i as string, o as never),
  ],
  [
    'grant',
    args(
      id,
      options({
        amount,
        source: text('purchase'),
        expiresAt: time(future),
        idempotencyKey: field(fc.uuid(), badStrings),
      }),
    ),
    ([i, o]) => ledger.grant(i as string, o as never),
  ],
  [
    'reserve',
    args(
      id,
      amount,
      options({
        endpoint: text('/fuzz'),
        holdMs: field(fc.constantFrom(1000, 60_000), badNumbers),
        allowedTypes: field(fc.constantFrom(['registered'], ['guest', 'enterprise']), [
          [],
          ['admin'],
          'registered',
          [null],
        ]),
        openAs: text('guest'),
      }),
    ),
    ([i, c, o]) => ledger.reserve(i as string, c as number, o as never),
  ],
  [
    'commit',
    args(
      field(fc.constant('hold'), [...badStrings, 'fz-a:AAAAAAAAAAAAAAA!', ':AAAAAAAAAAAAAAAA', 42]),
      options({ actualCost: amount, latencyMs: field(fc.constantFrom(0, 15), badNumbers) }),
    ),
    ([h, o]) => ledger.commit(h === 'hold' ? holdId : (h as string), o as never),
  ],
  [
    'release',
    args(
      field(fc.constant('hold'), [...badStrings, 42]),
      options({ latencyMs: field(fc.constantFrom(0, 15), badNumbers) }),
    ),
    ([h, o]) => ledger.release(h === 'hold' ? holdId : (h as string), o as never),
  ],
  ['balance', args(id), ([i]) => ledger.balance(i as string)],
  [
    'check',
    args(options({ strict: field(fc.boolean(), ['yes', 1, null]) })),
    ([o]) => ledger.check(o as never),
  ],
  [
    'sweep',
    args(
      options({
        count: field(fc.constantFrom(10, 1000), badNumbers),
        lock: field(fc.boolean(), ['no', 0]),
        leaseMs: field(fc.constantFrom(1000), badNumbers),
      }),
    ),
    ([o]) => ledger.sweep(o as never),
  ],
]

// The methods other parts of the ledger add, when present.
const optional: [string, fc.Arbitrary<unknown[]>][] = [
  [
    'subscribe',
    args(
      id,
      options({
        plan: text('basic'),
        monthlyCredits: amount,
        rollover: field(fc.boolean(), ['yes', 1]),
        startsAt: time(future),
        idempotencyKey: field(fc.uuid(), badStrings),
      }),
    ),
  ],
  ['endSubscription', args(id, options({ at: time(future) }))],
  [
    'transactions',
    args(
      id,
      options({
        limit: field(fc.constantFrom(1, 50), badNumbers),
        cursor: text('0'),
      }),
    ),
  ],
  [
    'usage',
    args(
      id,
      options({
        from: time(fc.constant(Date.now() - 86_400_000)),
        to: time(fc.constant(Date.now())),
        granularity: text('hour'),
        endpoint: text('/fuzz'),
      }),
    ),
  ],
  ['audit', args(id)],
]
for (const [name, args] of optional) {
  methods.push([
    name,
    args,
    (a) =>
      (
        (ledger as unknown as Record<string, (...x: unknown[]) => Promise<unknown>>)[name] as (
          ...x: unknown[]
        ) => Promise<unknown>
      ).apply(ledger, a),
  ])
}

async function settle(call: Promise<unknown>): Promise<{ value?: unknown; error?: unknown }> {
  let timer: NodeJS.Timeout | undefined
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error('HANG: no answer in 5 s'))
    }, 5000)
  })
  try {
    return { value: await Promise.race([call, hang]) }
  } catch (error) {
    return { error }
  } finally {
    clearTimeout(timer)
  }
}

describe.each(methods.map(([name, args, call]) => [name, args, call] as const))(
  'RedisLedger.%s fuzzed with invalid values',
  (name, args, call) => {
    it('answers a typed ERR_CREDIT_* error, never a TypeError or a hang, and writes nothing when it refuses an argument', async () => {
      if (typeof (ledger as unknown as Record<string, unknown>)[name] !== 'function') {
        console.log(`RedisLedger.${name} does not exist (yet): not fuzzed`)
        return
      }
      const f = { calls: 0, refused: 0, codes: new Set<string>() }
      figures.set(name, f)
      await fc.assert(
        fc.asyncProperty(args, async (values) => {
          f.calls += 1
          const before = await snapshot(redis, prefix)
          let result: { value?: unknown; error?: unknown }
          try {
            result = await settle(call(values))
          } catch (error) {
            // Thrown synchronously: as bad as a rejection that is not a CreditError.
            result = { error }
          }
          const after = await snapshot(redis, prefix)
          if ('error' in result) {
            const error = result.error
            if (!isCreditError(error)) {
              throw new Error(
                `${name} threw ${String(error)} (${(error as Error | undefined)?.name})`,
              )
            }
            expect(error.code).toMatch(/^ERR_CREDIT_[A-Z_]+$/)
            f.refused += 1
            f.codes.add(error.code.replace('ERR_CREDIT_', ''))
            if (ARGUMENT_CODES.has(error.code)) expect(after).toEqual(before)
          }
        }),
        { seed: SEED, numRuns: RUNS },
      )
    })
  },
)

describe('new RedisLedger(options) fuzzed', () => {
  it('throws a CreditConfigError or builds a ledger, never anything else', () => {
    fc.assert(
      fc.property(
        args(
          options({
            redis: field(fc.constant(redis as unknown), [null, {}, 'redis://127.0.0.1:6379']),
            prefix: text('p:'),
            clock: field(
              fc.constant(() => 1),
              [5, 'now'],
            ),
            holdMs: field(fc.constant(1000), badNumbers),
            resolvedHoldRetentionMs: field(fc.constant(1000), badNumbers),
            historyLimit: field(fc.constant(10), badNumbers),
            accountTypes: field(fc.constant({ pro: { signupCredits: 1 } }), [
              { Bad: {} },
              { x: { signupCredits: -1 } },
              { x: { topUps: 'yes' } },
              { x: null },
            ]),
          }),
        ).map(([o]) => o),
        (o) => {
          try {
            new RedisLedger(o as never)
          } catch (error) {
            if (!isCreditError(error)) throw error
            expect(error.code).toBe('ERR_CREDIT_INVALID_OPTION')
          }
        },
      ),
      { seed: SEED, numRuns: RUNS * 2 },
    )
  })
})

/**
 * One benchmark server: the same Express app with one of the gates in front of its route.
 * Run as a child process by bench/run.ts so the load generator never shares its event loop.
 *
 *   tsx bench/server.ts <case> <port> <redisUrl>
 */
import { createServer } from 'node:http'
import { pathToFileURL } from 'node:url'

import express, { type RequestHandler } from 'express'
import { rateLimit } from 'express-rate-limit'
import { Redis } from 'ioredis'
import { RedisStore } from 'rate-limit-redis'
import { RateLimiterRedis } from 'rate-limiter-flexible'

import type * as Creditgate from 'creditgate'

import { JWT_SECRET, PREFIX, isCase, type AnyCase } from './cases'

/**
 * The library: BENCH_CREDITGATE names the dist/index.js of another build (bench/compare.ts runs
 * two builds side by side); else this checkout's build.
 */
async function loadLibrary(): Promise<typeof Creditgate> {
  const library = process.env['BENCH_CREDITGATE']
  return (await import(
    library === undefined ? 'creditgate' : pathToFileURL(library).href
  )) as typeof Creditgate
}

/** Calls the gate reported charged (its `charged` events), for the ledger check. */
const gateCounts = { charged: 0 }

/**
 * BENCH_DIAGNOSE=1: the server also keeps, per hold, what its response did (whether its `finish`
 * was counted, and what `close` found), and reports the charged holds whose response was not
 * counted. Off by default: it costs every request a listener.
 */
const diagnose = process.env['BENCH_DIAGNOSE'] === '1'
const chargedHolds = new Set<string>()
interface Seen {
  /** 'counted' for a finish counted as served, else the status and the connection's error. */
  finish?: string
  closedFirst?: boolean
  atClose?: string
}
const seenOf = new Map<string, Seen>()

function accountOf(req: { headers: Record<string, string | string[] | undefined> }): string {
  const id = req.headers['x-account-id']
  return typeof id === 'string' ? id : 'anonymous'
}

/**
 * The `hold-floor` case (see cases.ts): the least a gate that follows DESIGN's request flow
 * sends Redis. Before the handler, one script moves the price into a hold; once the response
 * closes, one script drops the hold, and gives the price back unless the call succeeded. The
 * operations of a turn of the event loop go as one script each way, 32 at most, as creditgate's
 * batcher sends them. No history, usage, idempotency, expiry or tier policy.
 */
function holdFloor(redisUrl: string): RequestHandler {
  const redis = new Redis(redisUrl, { enableAutoPipelining: true })
  // KEYS: balance, holds of each operation; ARGV: the nonce of each (and the settlement's mode).
  redis.defineCommand('holds', {
    lua: "local out = {} for i = 1, #KEYS / 2 do local b = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '1000000000') if b < 1000 then out[i] = -1 else redis.call('SET', KEYS[2 * i - 1], b - 1000) redis.call('HSET', KEYS[2 * i], ARGV[i], '1000') out[i] = b - 1000 end end return out",
  })
  redis.defineCommand('settles', {
    lua: "for i = 1, #KEYS / 2 do if redis.call('HDEL', KEYS[2 * i], ARGV[2 * i - 1]) == 1 and ARGV[2 * i] == 'release' then redis.call('INCRBY', KEYS[2 * i - 1], 1000) end end return 1",
  })
  const client = redis as unknown as Record<
    'holds' | 'settles',
    (...args: (string | number)[]) => Promise<number[]>
  >
  interface Op {
    readonly keys: readonly string[]
    readonly args: readonly string[]
  }
  let holds: (Op & { readonly done: (left: number | Error) => void })[] = []
  let settles: Op[] = []
  let scheduled = false
  const send = (name: 'holds' | 'settles', ops: readonly Op[]) =>
    client[name](ops.length * 2, ...ops.flatMap((op) => op.keys), ...ops.flatMap((op) => op.args))
  const flush = (): void => {
    scheduled = false
    for (let i = 0; i < holds.length; i += 32) {
      const ops = holds.slice(i, i + 32)
      send('holds', ops).then(
        (replies) => {
          ops.forEach((op, k) => {
            op.done(replies[k] ?? -1)
          })
        },
        (error: unknown) => {
          for (const op of ops) op.done(error instanceof Error ? error : new Error(String(error)))
        },
      )
    }
    for (let i = 0; i < settles.length; i += 32) void send('settles', settles.slice(i, i + 32))
    holds = []
    settles = []
  }
  const schedule = (): void => {
    if (scheduled) return
    scheduled = true
    setImmediate(flush)
  }
  let n = 0
  return function holdFloorGate(req, res, next) {
    const account = accountOf(req)
    const keys = [`bench-hold:{${account}}:b`, `bench-hold:{${account}}:h`]
    const nonce = String(n++)
    holds.push({
      keys,
      args: [nonce],
      done: (left) => {
        if (left instanceof Error) {
          next(left)
          return
        }
        if (left < 0) {
          res.status(402).end()
          return
        }
        res.on('close', () => {
          const ok = res.writableFinished && res.statusCode < 400
          settles.push({ keys, args: [nonce, ok ? 'commit' : 'release'] })
          schedule()
        })
        next()
      },
    })
    schedule()
  }
}

function gateFor(
  kind: AnyCase,
  redisUrl: string,
  { RedisLedger, createCreditGate, fromJwt }: typeof Creditgate,
): RequestHandler | undefined {
  switch (kind) {
    case 'bare':
      return undefined
    case 'creditgate-header':
    case 'creditgate-jwt': {
      const redis = new Redis(redisUrl, { enableAutoPipelining: true })
      const ledger = new RedisLedger({
        redis,
        prefix: PREFIX,
        ...(process.env['BENCH_BATCH'] === undefined
          ? {}
          : { batchSize: Number(process.env['BENCH_BATCH']) }),
      })
      const identify =
        kind === 'creditgate-jwt'
          ? fromJwt({ secret: JWT_SECRET, algorithms: ['HS256'] })
          : (req: { headers: Record<string, string | string[] | undefined> }) => {
              const id = req.headers['x-account-id']
              return typeof id === 'string' ? id : null
            }
      const creditGate = createCreditGate({ ledger, identify })
      // The gate's own account of its settlements, reported beside the 2xx count on stop: a
      // ledger check that disagrees with the balances then tells a counting artefact of the
      // benchmark from a fault of the ledger.
      creditGate.on('charged', (event) => {
        gateCounts.charged += 1
        if (diagnose) chargedHolds.add(event.holdId)
      })
      return creditGate('basic')
    }
    case 'creditgate-memory': {
      // Diagnostic: the gate with a ledger that answers at once from memory.
      let n = 0
      const ledger = {
        reserve: (accountId: string, cost: number) =>
          Promise.resolve({
            status: 'held' as const,
            holdId: `h${n++}`,
            accountId,
            accountType: 'bench',
            cost,
            held: cost,
            available: 1000,
            pending: 1,
            balance: 1001,
            expiresAt: 0,
            unlimited: false,
            opened: false,
          }),
        commit: (holdId: string) =>
          Promise.resolve({
            holdId,
            accountId: 'x',
            outcome: 'committed' as const,
            charged: 1,
            returned: 0,
            available: 999,
            pending: 0,
            balance: 999,
            replayed: false,
          }),
        release: (holdId: string) =>
          Promise.resolve({
            holdId,
            accountId: 'x',
            outcome: 'released' as const,
            charged: 0,
            returned: 1,
            available: 1000,
            pending: 0,
            balance: 1000,
            replayed: false,
          }),
      }
      return createCreditGate({
        ledger,
        identify: (req: { headers: Record<string, string | string[] | undefined> }) =>
          accountOf(req),
      })('basic')
    }
    case 'naive-debit': {
      // The reference point (see cases.ts): one script per request that debits the
      // balance if it covers the price, and one that refunds it when the call fails.
      const redis = new Redis(redisUrl, { enableAutoPipelining: true })
      redis.defineCommand('debit', {
        numberOfKeys: 1,
        lua: "local b = tonumber(redis.call('GET', KEYS[1]) or '1000000000') if b < 1000 then return -1 end redis.call('SET', KEYS[1], b - 1000) return b - 1000",
      })
      redis.defineCommand('refund', {
        numberOfKeys: 1,
        lua: "return redis.call('INCRBY', KEYS[1], 1000)",
      })
      const client = redis as unknown as Record<string, (key: string) => Promise<number>>
      return function naiveDebit(req, res, next) {
        const key = `bench-naive:${accountOf(req)}`
        client['debit']!(key).then(
          (balance) => {
            if (balance < 0) {
              res.status(402).end()
              return
            }
            res.on('finish', () => {
              if (res.statusCode >= 400) void client['refund']!(key)
            })
            next()
          },
          (error: unknown) => {
            next(error)
          },
        )
      }
    }
    case 'hold-floor':
      return holdFloor(redisUrl)
    case 'express-rate-limit': {
      const redis = new Redis(redisUrl, { enableAutoPipelining: true })
      return rateLimit({
        windowMs: 60_000,
        limit: 1_000_000_000,
        skipFailedRequests: true,
        standardHeaders: 'draft-7',
        legacyHeaders: false,
        keyGenerator: accountOf,
        validate: false,
        store: new RedisStore({
          prefix: 'bench-erl:',
          sendCommand: (command: string, ...args: string[]) =>
            redis.call(command, ...args) as never,
        }),
      })
    }
    case 'rate-limiter-flexible': {
      const redis = new Redis(redisUrl, { enableAutoPipelining: true })
      const limiter = new RateLimiterRedis({
        storeClient: redis,
        points: 1_000_000_000,
        duration: 60,
        keyPrefix: 'bench-rlf',
      })
      return function rateLimiterFlexible(req, res, next) {
        limiter.consume(accountOf(req), 1).then(
          () => {
            next()
          },
          () => {
            res.status(429).end()
          },
        )
      }
    }
  }
}

export async function main(): Promise<void> {
  const [kind = '', port, redisUrl = ''] = process.argv.slice(2)
  if (!isCase(kind)) throw new Error(`unknown case ${kind}`)
  const app = express()
  app.set('etag', false)
  app.set('x-powered-by', false)
  const library = await loadLibrary()
  const gate = gateFor(kind, redisUrl, library)
  let served = 0
  const handler: RequestHandler = (req, res) => {
    const seen: Seen | undefined = diagnose ? {} : undefined
    if (seen !== undefined) {
      const holdId = library.getCredits(req)?.holdId
      if (holdId !== undefined) seenOf.set(holdId, seen)
      res.on('close', () => {
        seen.closedFirst ??= true
        seen.atClose = `writableFinished ${String(res.writableFinished)}, status ${res.statusCode}, socket error ${req.socket.errored?.message ?? 'none'}`
      })
    }
    res.on('finish', () => {
      // Counted as the gate charges: a 2xx finish with no failed write on the connection.
      const counted = res.statusCode >= 200 && res.statusCode < 300 && !req.socket.errored
      if (counted) served += 1
      if (seen !== undefined) {
        seen.finish = counted
          ? 'counted'
          : `status ${res.statusCode}, socket error ${req.socket.errored?.message ?? 'none'}`
        seen.closedFirst ??= false
      }
    })
    // The 10 % failing mix: the load generator marks every tenth request.
    if (req.query['fail'] === '1') {
      res.status(500).json({ error: 'failed on purpose' })
      return
    }
    res.json({ ok: true })
  }
  if (gate === undefined) app.get('/quote', handler)
  else app.get('/quote', gate, handler)
  const server = createServer(app)
  server.keepAliveTimeout = 65_000
  server.listen(Number(port), '127.0.0.1', () => {
    process.send?.('ready')
  })
  // 'stop': stop taking requests, give settlements a moment, report, and exit (so a
  // --cpu-prof profile is written and the ledger check sees every commit).
  process.on('message', (message) => {
    if (message !== 'stop') return
    server.close()
    server.closeAllConnections()
    setTimeout(() => {
      const unexplained = [...chargedHolds]
        .map((holdId) => ({ holdId, ...seenOf.get(holdId) }))
        .filter((s) => s.finish !== 'counted')
      // A few are enough to tell what happened; a message of thousands may not be out before
      // the exit.
      const report = {
        served,
        charged: gateCounts.charged,
        unexplained: unexplained.slice(0, 5),
        unexplainedCount: unexplained.length,
      }
      if (process.send === undefined) process.exit(0)
      process.send(report, () => process.exit(0))
    }, 1000)
  })
}

void main()

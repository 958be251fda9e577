import { once } from 'node:events'
import http, { type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'

import express, {
  type Express,
  type NextFunction,
  type Request,
  type RequestHandler,
  type Response,
} from 'express'
import express4 from 'express4'

import type { Redis } from 'ioredis'

import {
  createCreditGate,
  isCreditError,
  type CreditGateEvents,
  type CreditGateOptions,
  type CreditLedger,
  type RedisLedger,
  type RedisLedgerOptions,
} from '../../src/index'
import type { IdentifyFunction, IdentifyResult } from '../../src/identity/types'

import { makeLedger } from './redis'

/** The Express versions every middleware test runs on. */
export const EXPRESS_VERSIONS = [
  ['Express 5', express],
  ['Express 4', express4],
] as const

export type ExpressFactory = (typeof EXPRESS_VERSIONS)[number][1]

/**
 * An app with `routes` and an error handler that records each error in `errors` and answers
 * 500 with the error's `ERR_CREDIT_*` code (or `internal`).
 */
export function appWith(
  factory: ExpressFactory,
  routes: (app: Express) => void,
  errors: unknown[] = [],
): Express {
  const app = factory()
  routes(app)
  // Express recognises an error handler by its four parameters.
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  app.use((error: unknown, _req: Request, res: Response, _next: NextFunction) => {
    errors.push(error)
    res.status(500).json({ error: isCreditError(error) ? error.code : 'internal' })
  })
  return app
}

/** A handler that succeeds. */
export const ok: RequestHandler = (_req, res) => {
  res.json({ ok: true })
}

/** The header the test identify functions read. Stands in for a verified credential. */
export const ACCOUNT_HEADER = 'x-test-account'

/**
 * A test identify function: no header → no credential; `rejected` → a bad credential; anything
 * else is the account id. With `accountType`, the identity carries that type.
 */
export function identifyByHeader(accountType?: string): IdentifyFunction {
  return (req: IncomingMessage): IdentifyResult => {
    const value = req.headers[ACCOUNT_HEADER]
    if (typeof value !== 'string') return null
    if (value === 'rejected') {
      return { rejected: true, error: 'invalid_token', description: 'The token expired' }
    }
    return accountType === undefined ? value : { accountId: value, accountType }
  }
}

/** One call the recording ledger saw. */
export interface LedgerCall {
  readonly method: 'reserve' | 'commit' | 'release' | 'recordUsage'
  readonly args: readonly unknown[]
  /** What the gate got back. */
  result?: Promise<unknown>
}

/** Replaces one ledger method: receives the real call, returns what the gate gets. */
export type Fault<R> = (real: () => Promise<R>, args: readonly unknown[]) => Promise<R>

/**
 * A ledger that records every call and passes it to a real {@link RedisLedger}, optionally
 * through a fault (a delay, a failure). Like express-rate-limit's MockStore, but the money moves
 * in real Redis.
 */
export class RecordingLedger implements CreditLedger {
  readonly calls: LedgerCall[] = []
  readonly faults: {
    reserve?: Fault<Awaited<ReturnType<CreditLedger['reserve']>>>
    commit?: Fault<Awaited<ReturnType<CreditLedger['commit']>>>
    release?: Fault<Awaited<ReturnType<CreditLedger['release']>>>
  } = {}

  constructor(readonly inner: RedisLedger) {}

  get accountTypes(): readonly string[] {
    return this.inner.accountTypes
  }

  /** Waits until every call made so far, and any made meanwhile, has settled. */
  async idle(): Promise<void> {
    let seen = -1
    while (seen !== this.calls.length) {
      seen = this.calls.length
      await Promise.allSettled(this.calls.map((c) => c.result ?? Promise.resolve()))
      // The gate reacts to a result in promise callbacks: all of them run before a macrotask.
      await new Promise((resolve) => setImmediate(resolve))
    }
  }

  count(method: LedgerCall['method']): number {
    return this.calls.filter((c) => c.method === method).length
  }

  reserve(...args: Parameters<CreditLedger['reserve']>): ReturnType<CreditLedger['reserve']> {
    const call: LedgerCall = { method: 'reserve', args }
    this.calls.push(call)
    const real = () => this.inner.reserve(...args)
    const result = this.faults.reserve === undefined ? real() : this.faults.reserve(real, args)
    call.result = result
    return result
  }

  commit(...args: Parameters<CreditLedger['commit']>): ReturnType<CreditLedger['commit']> {
    const call: LedgerCall = { method: 'commit', args }
    this.calls.push(call)
    const real = () => this.inner.commit(...args)
    const result = this.faults.commit === undefined ? real() : this.faults.commit(real, args)
    call.result = result
    return result
  }

  release(...args: Parameters<CreditLedger['release']>): ReturnType<CreditLedger['release']> {
    const call: LedgerCall = { method: 'release', args }
    this.calls.push(call)
    const real = () => this.inner.release(...args)
    const result = this.faults.release === undefined ? real() : this.faults.release(real, args)
    call.result = result
    return result
  }
}

type EventName = keyof CreditGateEvents
const EVENT_NAMES: readonly EventName[] = [
  'charged',
  'refunded',
  'insufficient',
  'forbidden',
  'ledgerError',
  'unmetered',
  'lowBalance',
]

/**
 * Every event a gate emits, in order, with a way to wait for a condition on them: tests wait
 * for settlements to be reported, never sleep and hope.
 */
export class EventLog {
  readonly entries: { name: EventName; payload: unknown }[] = []
  readonly #waiters = new Set<() => void>()

  constructor(gate: {
    on<E extends EventName>(event: E, listener: (payload: CreditGateEvents[E]) => void): unknown
  }) {
    for (const name of EVENT_NAMES) {
      gate.on(name, (payload: unknown) => {
        this.entries.push({ name, payload })
        for (const check of this.#waiters) check()
      })
    }
  }

  of<E extends EventName>(name: E): CreditGateEvents[E][] {
    return this.entries.filter((e) => e.name === name).map((e) => e.payload as CreditGateEvents[E])
  }

  /** Event counts, and the first ledger error's message: for failure messages. */
  summary(): string {
    const counts = new Map<string, number>()
    for (const { name } of this.entries) counts.set(name, (counts.get(name) ?? 0) + 1)
    const first = this.of('ledgerError')[0]
    const error =
      first === undefined ? '' : `; first ledgerError (${first.phase}): ${String(first.error)}`
    return `${JSON.stringify(Object.fromEntries(counts))}${error}`
  }

  /** Charged plus refunded: the settlements reported so far. */
  settlements(): number {
    return this.of('charged').length + this.of('refunded').length
  }

  /** Resolves when `predicate` holds (checked now and on each event); rejects after `timeoutMs`. */
  async waitFor(predicate: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    if (predicate()) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(check)
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; events so far: ${this.summary()}`,
          ),
        )
      }, timeoutMs)
      const check = (): void => {
        if (!predicate()) return
        clearTimeout(timer)
        this.#waiters.delete(check)
        resolve()
      }
      this.#waiters.add(check)
    })
  }

  /** Waits until `n` settlements (charged or refunded) have been reported. */
  async settled(n: number, timeoutMs?: number): Promise<void> {
    await this.waitFor(() => this.settlements() >= n, `${n} settlements`, timeoutMs)
  }
}

/** A listening server on a free loopback port; close it with `close()`. */
export async function listen(
  app: http.RequestListener,
): Promise<{ url: string; server: http.Server; close: () => Promise<void> }> {
  const server = http.createServer(app)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve()
        })
      })
    },
  }
}

/** What a raw HTTP request ended with: a full response, or a connection error. */
export interface RawResult {
  readonly status: number | undefined
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
  /** Set when the connection failed or the response was cut short. */
  readonly error: string | undefined
}

/**
 * Sends one request and never rejects: a reset or an incomplete response comes back as `error`.
 */
export async function rawRequest(
  url: string,
  options: http.RequestOptions = {},
): Promise<RawResult> {
  return new Promise((resolve) => {
    const req = http.request(url, options, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => {
        resolve({
          status: res.statusCode,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
          error: res.complete ? undefined : 'incomplete response',
        })
      })
      res.on('error', (error) => {
        resolve({
          status: res.statusCode,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
          error: error.message,
        })
      })
    })
    req.on('error', (error) => {
      resolve({ status: undefined, headers: {}, body: '', error: error.message })
    })
    req.end()
  })
}

/** A promise with its resolve function: lets a test hold a handler until it says so. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

/**
 * Gates on the real Redis of the run, for one test file: call it at the top level (it closes
 * the clients after the file's tests), then call what it returns in each test. Each call makes a
 * ledger with its own key prefix (`ledgerDefaults` with `ledgerOptions` over them), the
 * recording ledger over it, a gate identifying by {@link ACCOUNT_HEADER}, and its event log.
 */
export function redisGates(ledgerDefaults: Omit<RedisLedgerOptions, 'redis'> = {}) {
  const clients: Redis[] = []
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.quit()))
  })
  const setup = (
    options: Partial<CreditGateOptions<string>> = {},
    ledgerOptions: Omit<RedisLedgerOptions, 'redis'> = {},
  ) => {
    const made = makeLedger('redis', { ...ledgerDefaults, ...ledgerOptions })
    clients.push(made.redis)
    const ledger = new RecordingLedger(made.ledger)
    const gate = createCreditGate<string>({ ledger, identify: identifyByHeader(), ...options })
    return { ...made, redisLedger: made.ledger, ledger, gate, log: new EventLog(gate) }
  }
  /** Closes a client a test made itself, with the others. */
  const track = <C extends Redis>(client: C): C => {
    clients.push(client)
    return client
  }
  /** As a call of the gates, with account `u` open (the 350 signup credits of `registered`). */
  const withAccount = async (options: Partial<CreditGateOptions<string>> = {}) => {
    const made = setup(options)
    await made.redisLedger.openAccount('u', { type: 'registered' })
    return made
  }
  return Object.assign(setup, { track, withAccount })
}

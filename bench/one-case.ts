/**
 * What bench/cpu.ts and bench/profile.ts share: a private redis-server with seeded accounts,
 * one case's server as a child process, and 64 autocannon connections spread over the accounts.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'

import autocannon from 'autocannon'
import { Redis } from 'ioredis'

import { RedisLedger } from 'creditgate'

import { freePort, startRedis, type OwnedRedis } from '../test/setup/redis-server'
import { PREFIX, isCase, type AnyCase } from './cases'
import { cpuMs } from './proc'

/**
 * The ledger of the benchmark's accounts `acct-0` … `acct-<count - 1>`, opened with a billion
 * credits each (so that no run ever meets a 402).
 */
export async function openBenchAccounts(client: Redis, count: number): Promise<RedisLedger> {
  const ledger = new RedisLedger({
    redis: client,
    prefix: PREFIX,
    accountTypes: { bench: { signupCredits: 1_000_000_000 } },
  })
  for (let start = 0; start < count; start += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, count - start) }, (_, j) =>
        ledger.openAccount(`acct-${start + j}`, { type: 'bench' }),
      ),
    )
  }
  return ledger
}

export interface OneCase {
  readonly kind: AnyCase
  readonly seconds: number
  readonly redis: OwnedRedis
  /** A client of the private Redis (INFO, CONFIG RESETSTAT). */
  readonly client: Redis
  readonly child: ChildProcess
  /** Sends `seconds` of load (or `duration`), each request from the next of the accounts. */
  load(duration?: number): Promise<autocannon.Result>
  /**
   * Sends `seconds` of load and reports, with autocannon's result, the CPU time (user + system,
   * every thread, from /proc) the server, Redis and this load generator spent per request, µs.
   */
  measure(): Promise<Measured>
  /** Stops the server (it exits, writing a --cpu-prof profile if asked) and Redis. */
  stop(): Promise<void>
}

/** One measured load: autocannon's result and CPU µs per request of each process. */
export interface Measured {
  readonly result: autocannon.Result
  readonly serverUs: number
  readonly redisUs: number
  readonly loaderUs: number
}

/** What to start instead of what the command line says, and the server's extra environment. */
export interface OneCaseOptions {
  readonly kind?: string
  readonly seconds?: number
  readonly env?: Readonly<Record<string, string>>
}

/**
 * Starts one case (`<case> [seconds]` from the command line unless `options` names them), with
 * `accounts` accounts opened first and `execArgv` added to the server's Node options.
 */
export async function startOneCase(
  accounts: number,
  execArgv: readonly string[] = [],
  options: OneCaseOptions = {},
) {
  const kind = options.kind ?? process.argv[2] ?? 'creditgate-header'
  const seconds = options.seconds ?? Number(process.argv[3] ?? 6)
  if (!isCase(kind)) throw new Error(`unknown case ${kind}`)
  const redis = await startRedis()
  const client = new Redis(redis.url)
  await openBenchAccounts(client, accounts)
  const port = await freePort()
  const child = fork(join('bench', 'server.ts'), [kind, String(port), redis.url], {
    execArgv: ['--import', 'tsx', ...execArgv],
    env: { ...process.env, ...options.env },
  })
  await new Promise((resolve) => child.once('message', resolve))
  const redisPid = Number(/process_id:(\d+)/.exec(await client.info('server'))?.[1])
  const pids = [child.pid, redisPid, process.pid] as const
  let i = 0
  const one: OneCase = {
    kind,
    seconds,
    redis,
    client,
    child,
    measure: async () => {
      const before = pids.map(cpuMs)
      const result = await one.load()
      const after = pids.map(cpuMs)
      const perRequest = (k: number) =>
        (1000 * ((after[k] ?? 0) - (before[k] ?? 0))) / Math.max(1, result.requests.total)
      return { result, serverUs: perRequest(0), redisUs: perRequest(1), loaderUs: perRequest(2) }
    },
    load: (duration = seconds) =>
      autocannon({
        url: `http://127.0.0.1:${port}`,
        connections: 64,
        duration,
        requests: [
          {
            setupRequest: (r) => ({
              ...r,
              path: '/quote',
              headers: { 'x-account-id': `acct-${i++ % accounts}` },
            }),
          },
        ],
      }),
    stop: async () => {
      child.send('stop')
      await new Promise((resolve) => child.once('exit', resolve))
      await client.quit()
      await redis.stop()
    },
  }
  return one
}

/**
 * `npm run bench`: the same Express app with no gate, creditgate (header identity and JWT),
 * express-rate-limit + rate-limit-redis, rate-limiter-flexible, the issue's naive one-script
 * debit and the hold floor (reference points, see cases.ts), run interleaved against one
 * private redis-server on loopback; then the ledger's own figures. Writes bench/RESULTS.md.
 *
 * Environment: BENCH_ROUNDS (default 3), BENCH_DURATION seconds per run (default 8),
 * BENCH_CONNECTIONS (default 64), BENCH_ACCOUNTS (default 5000), BENCH_MEMORY_ACCOUNTS
 * (default 100000), BENCH_SKIP_HTTP=1 / BENCH_SKIP_LEDGER=1 to run one half, BENCH_BATCH the
 * gated servers' ledger batchSize (default: the ledger's own), BENCH_DIAGNOSE=1 to have the
 * servers report every charged call whose response did not finish with a 2xx and no failed
 * write,
 * BENCH_REDIS_ARGS more arguments for the redis-server (space-separated).
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'

import autocannon from 'autocannon'
import { Redis } from 'ioredis'
import jwt from 'jsonwebtoken'

import type { RedisLedger } from 'creditgate'

import { freePort, startRedis, type OwnedRedis } from '../test/setup/redis-server'
import { ledgerFigures, type LedgerFigures } from './ledger'
import { CASES, JWT_SECRET, type Case } from './cases'
import { openBenchAccounts } from './one-case'
import { cpuMs } from './proc'
import { median, medianRange } from './stats'

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3)
const DURATION = Number(process.env['BENCH_DURATION'] ?? 8)
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 64)
const ACCOUNTS = Number(process.env['BENCH_ACCOUNTS'] ?? 5000)
const MIXES = [
  { name: 'all succeed', failEvery: 0 },
  { name: '10 % fail (refunds)', failEvery: 10 },
] as const

interface Run {
  readonly mix: string
  readonly kind: Case
  readonly rps: number
  readonly p50: number
  readonly p99: number
  readonly ok: number
  readonly failed: number
  readonly errors: number
  /** CPU time per request, µs: the server process (all its threads) and redis-server. */
  readonly serverUs: number
  readonly redisUs: number
}

async function startServer(
  kind: Case,
  redisUrl: string,
): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort()
  const child = fork(join('bench', 'server.ts'), [kind, String(port), redisUrl], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => {
      resolve()
    })
    child.once('exit', (code) => {
      reject(new Error(`${kind} server exited with ${code}`))
    })
  })
  return { child, port }
}

/**
 * Stops a server gracefully: it settles what it served, reports its 2xx count and the calls its
 * gate reported charged, and exits.
 */
async function stopServer(
  child: ChildProcess,
): Promise<{ served: number; charged: number; unexplained: string }> {
  const report = new Promise<{ served: number; charged: number; unexplained: string }>(
    (resolve) => {
      child.on('message', (message: unknown) => {
        if (typeof message === 'object' && message !== null && 'served' in message) {
          const charged = 'charged' in message ? Number(message.charged) : 0
          const unexplained =
            'unexplainedCount' in message && Number(message.unexplainedCount) > 0
              ? `${Number(message.unexplainedCount)} charged without a counted 2xx finish, the first: ${JSON.stringify('unexplained' in message ? message.unexplained : [])}`
              : ''
          resolve({ served: Number(message.served), charged, unexplained })
        }
      })
    },
  )
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.send('stop')
  const counts = await report
  await exited
  return counts
}

function load(
  port: number,
  kind: Case,
  failEvery: number,
  seconds: number,
  tokens: readonly string[],
) {
  let i = 0
  return autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    duration: seconds,
    requests: [
      {
        method: 'GET',
        setupRequest: (request) => {
          i += 1
          const account = i % ACCOUNTS
          const path = failEvery > 0 && i % failEvery === 0 ? '/quote?fail=1' : '/quote'
          const headers: Record<string, string> =
            kind === 'creditgate-jwt'
              ? { authorization: `Bearer ${tokens[account] ?? ''}` }
              : { 'x-account-id': `acct-${account}` }
          return { ...request, path, headers }
        },
      },
    ],
  })
}

async function totalBalance(ledger: RedisLedger): Promise<{ balance: number; pending: number }> {
  let balance = 0
  let pending = 0
  for (let start = 0; start < ACCOUNTS; start += 500) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(500, ACCOUNTS - start) }, (_, j) =>
        ledger.balance(`acct-${start + j}`),
      ),
    )
    for (const b of batch) {
      balance += Math.round(b.balance * 1000)
      pending += Math.round(b.pending * 1000)
    }
  }
  return { balance: balance / 1000, pending: pending / 1000 }
}

async function settled(ledger: RedisLedger): Promise<{ balance: number; pending: number }> {
  let total = await totalBalance(ledger)
  for (let i = 0; i < 50 && total.pending !== 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    total = await totalBalance(ledger)
  }
  return total
}

function redisVersion(): string {
  return execFileSync('redis-server', ['--version'], { encoding: 'utf8' })
    .split(' ')
    .slice(0, 3)
    .join(' ')
}

async function httpBench(redis: OwnedRedis): Promise<{ runs: Run[]; ledgerCheck: string[] }> {
  const client = new Redis(redis.url)
  const ledger = await openBenchAccounts(client, ACCOUNTS)
  const tokens = Array.from({ length: ACCOUNTS }, (_, i) =>
    jwt.sign({ sub: `acct-${i}` }, JWT_SECRET, { algorithm: 'HS256', expiresIn: '2h' }),
  )
  const redisPid = Number(/process_id:(\d+)/.exec(await client.info('server'))?.[1])
  const runs: Run[] = []
  const ledgerCheck: string[] = []
  for (const mix of MIXES) {
    for (let round = 0; round < ROUNDS; round++) {
      for (const kind of CASES) {
        const { child, port } = await startServer(kind, redis.url)
        const gated = kind.startsWith('creditgate')
        const before = gated ? await settled(ledger) : undefined
        const warm = await load(port, kind, mix.failEvery, 2, tokens)
        const cpuBefore = [cpuMs(child.pid), cpuMs(redisPid)] as const
        const result = await load(port, kind, mix.failEvery, DURATION, tokens)
        const cpuAfter = [cpuMs(child.pid), cpuMs(redisPid)] as const
        const perRequest = (i: 0 | 1) =>
          (1000 * (cpuAfter[i] - cpuBefore[i])) / Math.max(1, result.requests.total)
        const { served, charged: chargedEvents, unexplained } = await stopServer(child)
        const ok = result['2xx']
        const failed = result.non2xx
        runs.push({
          mix: mix.name,
          kind,
          rps: result.requests.average,
          p50: result.latency.p50,
          p99: result.latency.p99,
          ok,
          failed,
          errors: result.errors + result.timeouts,
          serverUs: perRequest(0),
          redisUs: perRequest(1),
        })
        if (before !== undefined) {
          const after = await settled(ledger)
          const charged = before.balance - after.balance
          ledgerCheck.push(
            `${mix.name}, round ${round + 1}, ${kind}: the server sent ${served} 2xx responses and its gate reported ${chargedEvents} charged, ${charged} credits were charged, ${failed + warm.non2xx} non-2xx were not, pending after settling: ${after.pending}${charged === served && chargedEvents === served && after.pending === 0 ? '' : '  <-- MISMATCH'}${unexplained === '' ? '' : ` (${unexplained})`}`,
          )
        }
        console.log(
          `${mix.name.padEnd(20)} round ${round + 1} ${kind.padEnd(22)} ${result.requests.average.toFixed(0).padStart(6)} req/s  p50 ${result.latency.p50} ms  p99 ${result.latency.p99} ms  2xx ${ok} non2xx ${failed}`,
        )
      }
    }
  }
  await client.quit()
  return { runs, ledgerCheck }
}

function httpTable(runs: readonly Run[]): string {
  const lines: string[] = []
  for (const mix of MIXES) {
    const of = (kind: Case) => runs.filter((r) => r.mix === mix.name && r.kind === kind)
    const bare = median(of('bare').map((r) => r.rps))
    const bareP99 = median(of('bare').map((r) => r.p99))
    lines.push(`\n### ${mix.name}\n`)
    lines.push(
      '| case | req/s median (min–max) | × bare | p50 ms | p99 ms | p99 × bare | non-2xx | errors | server CPU µs/req | Redis CPU µs/req |',
    )
    lines.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for (const kind of CASES) {
      const rs = of(kind)
      const rps = rs.map((r) => r.rps)
      const p99 = median(rs.map((r) => r.p99))
      lines.push(
        `| ${kind} | ${medianRange(rps)} | ${(median(rps) / bare).toFixed(3)} | ${median(rs.map((r) => r.p50))} | ${p99} | ${(p99 / bareP99).toFixed(2)} | ${rs.reduce((s, r) => s + r.failed, 0)} | ${rs.reduce((s, r) => s + r.errors, 0)} | ${median(rs.map((r) => r.serverUs)).toFixed(0)} | ${median(rs.map((r) => r.redisUs)).toFixed(0)} |`,
      )
    }
  }
  return lines.join('\n')
}

function ledgerTable(f: LedgerFigures): string {
  return [
    '| measurement | figure |',
    '| --- | --- |',
    ...f.rows.map(([name, value]) => `| ${name} | ${value} |`),
  ].join('\n')
}

async function main(): Promise<void> {
  const redis = await startRedis((process.env['BENCH_REDIS_ARGS'] ?? '').split(' ').filter(Boolean))
  const started = new Date().toISOString()
  const sections: string[] = []
  try {
    if (process.env['BENCH_SKIP_HTTP'] !== '1') {
      const { runs, ledgerCheck } = await httpBench(redis)
      sections.push(
        `## HTTP: the same Express 5 route behind each gate\n\n${CONNECTIONS} connections, ${ACCOUNTS} distinct accounts, ${ROUNDS} interleaved rounds of ${DURATION} s per case (after 2 s of warm-up), runs ordered ${CASES.join(', ')} in every round. Medians over the rounds, with min–max; ratios are to the bare app measured in the same rounds.\n${httpTable(runs)}\n\n### Ledger check after each creditgate run\n\nCredits charged must equal the 2xx responses (1 credit each), and nothing stays pending:\n\n${ledgerCheck.map((l) => `- ${l}`).join('\n')}\n`,
      )
    }
    if (process.env['BENCH_SKIP_LEDGER'] !== '1') {
      const figures = await ledgerFigures(redis)
      sections.push(`## Ledger\n\n${figures.intro}\n\n${ledgerTable(figures)}\n`)
    }
  } finally {
    await redis.stop()
  }
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
  const header = `# Benchmark results\n\nRun ${started} with \`npm run bench\` (${
    Object.entries(process.env)
      .filter(([k]) => k.startsWith('BENCH_'))
      .map(([k, v]) => `${k}=${v ?? ''}`)
      .join(' ') || 'defaults'
  }).\n\nMachine: ${os.cpus().length} × ${cpu}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${os.type()} ${os.release()}; ${redisVersion()} on loopback (no persistence), load from autocannon in a separate process. The machine is shared and noisy: compare ratios within one run, not absolute figures across runs.\n`
  // The profiling notes are written by hand (bench/PROFILE.md) and kept with every run's figures.
  const notes = existsSync(join('bench', 'PROFILE.md'))
    ? readFileSync(join('bench', 'PROFILE.md'), 'utf8')
    : ''
  writeFileSync(join('bench', 'RESULTS.md'), `${header}\n${sections.join('\n')}\n${notes}`)
  console.log('wrote bench/RESULTS.md')
}

void main()

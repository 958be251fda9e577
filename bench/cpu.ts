/**
 * Where the CPU goes under load: `tsx bench/cpu.ts <case> [seconds]`. Runs one case's server
 * against a private redis-server with 64 autocannon connections and reports the CPU time
 * (user + system, from /proc) of Redis, the server and the load generator per request.
 */
import { fork } from 'node:child_process'
import { join } from 'node:path'

import autocannon from 'autocannon'
import { Redis } from 'ioredis'

import { RedisLedger } from 'creditgate'

import { freePort, startRedis } from '../test/setup/redis-server'
import { PREFIX, isCase } from './cases'
import { cpuMs } from './proc'

async function main(): Promise<void> {
  const kind = process.argv[2] ?? 'creditgate-header'
  const seconds = Number(process.argv[3] ?? 6)
  if (!isCase(kind)) throw new Error(`unknown case ${kind}`)
  const redis = await startRedis()
  const client = new Redis(redis.url)
  const ledger = new RedisLedger({
    redis: client,
    prefix: PREFIX,
    accountTypes: { bench: { signupCredits: 1_000_000_000 } },
  })
  for (let i = 0; i < 5000; i += 250) {
    await Promise.all(
      Array.from({ length: 250 }, (_, j) => ledger.openAccount(`acct-${i + j}`, { type: 'bench' })),
    )
  }
  const port = await freePort()
  const child = fork(join('bench', 'server.ts'), [kind, String(port), redis.url], {
    execArgv: ['--import', 'tsx'],
  })
  await new Promise((resolve) => child.once('message', resolve))
  const redisPid = Number(/process_id:(\d+)/.exec(await client.info('server'))?.[1])
  const pids = { redis: redisPid, server: child.pid ?? 0, loader: process.pid }
  let i = 0
  const run = () =>
    autocannon({
      url: `http://127.0.0.1:${port}`,
      connections: 64,
      duration: seconds,
      requests: [
        {
          setupRequest: (r) => ({
            ...r,
            path: '/quote',
            headers: { 'x-account-id': `acct-${i++ % 5000}` },
          }),
        },
      ],
    })
  await autocannon({ url: `http://127.0.0.1:${port}/quote`, connections: 64, duration: 1 })
  const before = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuMs(p)]))
  await client.config('RESETSTAT')
  const result = await run()
  const stats = (await client.info('commandstats'))
    .split('\n')
    .filter((l) => l.startsWith('cmdstat_'))
    .map((l) => l.trim())
  const after = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuMs(p)]))
  const total = result.requests.total
  const per = Object.entries(pids).map(
    ([k]) =>
      `${k} ${((1000 * ((after[k] ?? 0) - (before[k] ?? 0))) / total).toFixed(1)} µs/req (${(((after[k] ?? 0) - (before[k] ?? 0)) / (10 * seconds)).toFixed(0)} %)`,
  )
  console.log(
    `${kind}: ${result.requests.average} req/s, p50 ${result.latency.p50} p99 ${result.latency.p99} ms; ${per.join('; ')}`,
  )
  console.log(stats.join('\n'))
  child.send('stop')
  await new Promise((resolve) => child.once('exit', resolve))
  await client.quit()
  await redis.stop()
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})

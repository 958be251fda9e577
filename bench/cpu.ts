/**
 * Where the CPU goes under load: `tsx bench/cpu.ts <case> [seconds]`. Runs one case's server
 * against a private redis-server with 64 autocannon connections and reports the CPU time
 * (user + system, from /proc) of Redis, the server and the load generator per request.
 */
import { startOneCase } from './one-case'
import { cpuMs } from './proc'

async function main(): Promise<void> {
  const one = await startOneCase(5000)
  const { kind, seconds, client, child } = one
  const redisPid = Number(/process_id:(\d+)/.exec(await client.info('server'))?.[1])
  const pids = { redis: redisPid, server: child.pid ?? 0, loader: process.pid }
  await one.load(1)
  const before = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuMs(p)]))
  await client.config('RESETSTAT')
  const result = await one.load()
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
  await one.stop()
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})

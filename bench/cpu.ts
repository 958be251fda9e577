/**
 * Where the CPU goes under load: `tsx bench/cpu.ts <case> [seconds]`. Runs one case's server
 * against a private redis-server with 64 autocannon connections and reports the CPU time
 * (user + system, from /proc) of Redis, the server and the load generator per request.
 */
import { startOneCase } from './one-case'

async function main(): Promise<void> {
  const one = await startOneCase(5000)
  const { kind, seconds, client } = one
  await one.load(1)
  await client.config('RESETSTAT')
  const { result, serverUs, redisUs, loaderUs } = await one.measure()
  const stats = (await client.info('commandstats'))
    .split('\n')
    .filter((l) => l.startsWith('cmdstat_'))
    .map((l) => l.trim())
  const share = (us: number) => ((us * result.requests.total) / (10_000 * seconds)).toFixed(0)
  const per = Object.entries({ redis: redisUs, server: serverUs, loader: loaderUs }).map(
    ([name, us]) => `${name} ${us.toFixed(1)} µs/req (${share(us)} %)`,
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

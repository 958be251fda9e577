/**
 * Profiles one benchmark case: `tsx bench/profile.ts <case> [seconds]`. Starts a private Redis,
 * seeds the accounts, runs the case's server under `--cpu-prof` with autocannon load, and prints
 * the functions with the most self time (the .cpuprofile is left in bench/profiles/).
 */
import { fork } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import autocannon from 'autocannon'
import { Redis } from 'ioredis'

import { RedisLedger } from 'creditgate'

import { freePort, startRedis } from '../test/setup/redis-server'
import { PREFIX, isCase } from './cases'

interface Node {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount: number
  children?: number[]
}

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
  for (let i = 0; i < 1000; i += 250) {
    await Promise.all(
      Array.from({ length: 250 }, (_, j) => ledger.openAccount(`acct-${i + j}`, { type: 'bench' })),
    )
  }
  const dir = join('bench', 'profiles')
  mkdirSync(dir, { recursive: true })
  const before = new Set(readdirSync(dir))
  const port = await freePort()
  const child = fork(join('bench', 'server.ts'), [kind, String(port), redis.url], {
    execArgv: ['--import', 'tsx', '--cpu-prof', `--cpu-prof-dir=${dir}`],
  })
  await new Promise((resolve) => child.once('message', resolve))
  let i = 0
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: 64,
    duration: seconds,
    requests: [
      {
        setupRequest: (r) => ({
          ...r,
          path: '/quote',
          headers: { 'x-account-id': `acct-${i++ % 1000}` },
        }),
      },
    ],
  })
  console.log(`${kind}: ${result.requests.average} req/s, p99 ${result.latency.p99} ms`)
  child.send('stop')
  await new Promise((resolve) => child.once('exit', resolve))
  const file = readdirSync(dir).find((f) => !before.has(f) && f.endsWith('.cpuprofile'))
  if (file === undefined) throw new Error('no profile written')
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { nodes: Node[] }
  const self = new Map<string, number>()
  let total = 0
  for (const node of profile.nodes) {
    const f = node.callFrame
    const where = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/main\//, '')}:${f.lineNumber + 1}`
    self.set(where, (self.get(where) ?? 0) + node.hitCount)
    total += node.hitCount
  }
  const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 30)
  for (const [where, hits] of top)
    console.log(`${((100 * hits) / total).toFixed(1).padStart(5)}%  ${where}`)
  console.log(`profile: ${join(dir, file)}`)
  await client.quit()
  await redis.stop()
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})

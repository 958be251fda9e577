/**
 * Profiles one benchmark case: `tsx bench/profile.ts <case> [seconds]`. Starts a private Redis,
 * seeds the accounts, runs the case's server under `--cpu-prof` with autocannon load, and prints
 * the functions with the most self time (the .cpuprofile is left in bench/profiles/).
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { startOneCase } from './one-case'

interface Node {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount: number
  children?: number[]
}

async function main(): Promise<void> {
  const dir = join('bench', 'profiles')
  mkdirSync(dir, { recursive: true })
  const before = new Set(readdirSync(dir))
  const one = await startOneCase(1000, ['--cpu-prof', `--cpu-prof-dir=${dir}`])
  const result = await one.load()
  console.log(`${one.kind}: ${result.requests.average} req/s, p99 ${result.latency.p99} ms`)
  await one.stop()
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
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})

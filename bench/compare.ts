/**
 * Two or more builds of the library side by side, on one noisy machine:
 *
 *   tsx bench/compare.ts [<git ref> | .]... [--case creditgate-header] [--rounds 5] [--seconds 5]
 *
 * Each ref is built in a temporary git worktree (`.` is this checkout, built first); then every
 * round runs the bare app and each build once, in the same order, each with a fresh server and
 * Redis. Reports the medians and ranges of req/s (also as a ratio to the bare app of the same
 * round) and of server and Redis CPU per request. On this shared 2-core machine one run of a
 * case moves by 10 % from the next, so a change is only shown by interleaved rounds like these:
 * they found a WeakMap costing 10 µs per request that single runs could not tell from noise.
 * Defaults: HEAD against the working tree.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

import { startOneCase } from './one-case'
import { medianRange } from './stats'

interface Options {
  readonly refs: readonly string[]
  readonly kind: string
  readonly rounds: number
  readonly seconds: number
}

function parseArgs(argv: readonly string[]): Options {
  const refs: string[] = []
  let kind = 'creditgate-header'
  let rounds = 5
  let seconds = 5
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? ''
    const value = (): string => {
      i += 1
      return argv[i] ?? ''
    }
    if (arg === '--case') kind = value()
    else if (arg === '--rounds') rounds = Number(value())
    else if (arg === '--seconds') seconds = Number(value())
    else refs.push(arg)
  }
  return { refs: refs.length === 0 ? ['HEAD', '.'] : refs, kind, rounds, seconds }
}

/** Builds `ref` and returns the path of its dist/index.js (`.`: this checkout's own build). */
function build(ref: string, worktrees: string[]): string {
  if (ref === '.') {
    execFileSync('npx', ['tsup'], { stdio: 'ignore' })
    return resolve('dist', 'index.js')
  }
  const dir = mkdtempSync(join(tmpdir(), 'creditgate-compare-'))
  execFileSync('git', ['worktree', 'add', '--detach', dir, ref], { stdio: 'ignore' })
  worktrees.push(dir)
  symlinkSync(resolve('node_modules'), join(dir, 'node_modules'))
  execFileSync('npx', ['tsup'], { cwd: dir, stdio: 'ignore' })
  return join(dir, 'dist', 'index.js')
}

interface Sample {
  readonly rps: number
  readonly serverUs: number
  readonly redisUs: number
}

async function measure(kind: string, seconds: number, library?: string): Promise<Sample> {
  const one = await startOneCase(5000, [], {
    kind,
    seconds,
    env: library === undefined ? {} : { BENCH_CREDITGATE: library },
  })
  try {
    await one.load(1)
    const { result, serverUs, redisUs } = await one.measure()
    return { rps: result.requests.average, serverUs, redisUs }
  } finally {
    await one.stop()
  }
}

async function main(): Promise<void> {
  const { refs, kind, rounds, seconds } = parseArgs(process.argv.slice(2))
  const worktrees: string[] = []
  try {
    const builds = refs.map((ref) => ({ ref, library: build(ref, worktrees) }))
    const variants = [{ ref: 'bare', library: undefined }, ...builds]
    const samples = new Map<string, Sample[]>(variants.map((v) => [v.ref, []]))
    const ratios = new Map<string, number[]>(builds.map((b) => [b.ref, []]))
    for (let round = 1; round <= rounds; round++) {
      let bare = Number.NaN
      for (const { ref, library } of variants) {
        const sample = await measure(ref === 'bare' ? 'bare' : kind, seconds, library)
        samples.get(ref)?.push(sample)
        if (ref === 'bare') bare = sample.rps
        else ratios.get(ref)?.push(sample.rps / bare)
        console.log(
          `round ${round} ${ref.padEnd(12)} ${sample.rps.toFixed(0).padStart(6)} req/s  server ${sample.serverUs.toFixed(1)} µs/req  Redis ${sample.redisUs.toFixed(1)} µs/req`,
        )
      }
    }
    console.log(
      `\n${kind}, ${rounds} interleaved rounds of ${seconds} s: median (min–max)\n\n| build | req/s | × bare | server CPU µs/req | Redis CPU µs/req |\n| --- | --- | --- | --- | --- |`,
    )
    const fixed = (digits: number) => (n: number) => n.toFixed(digits)
    for (const { ref } of variants) {
      const s = samples.get(ref) ?? []
      const ratio = ratios.get(ref)
      console.log(
        `| ${ref} | ${medianRange(s.map((x) => x.rps))} | ${ratio === undefined ? '1' : medianRange(ratio, fixed(3))} | ${medianRange(
          s.map((x) => x.serverUs),
          fixed(1),
        )} | ${medianRange(
          s.map((x) => x.redisUs),
          fixed(1),
        )} |`,
      )
    }
  } finally {
    for (const dir of worktrees) {
      execFileSync('git', ['worktree', 'remove', '--force', dir], { stdio: 'ignore' })
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})

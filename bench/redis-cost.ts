/**
 * Redis's own cost of the ledger, in instructions, counted by valgrind's callgrind: the same
 * figure on every run, where timings on a shared machine move by half. Compare two versions of
 * the scripts with it; quote timings from bench/run.ts.
 *
 *   tsx bench/redis-cost.ts [pairs] [callers] [batchSize] [warm] [-- redis-server args...]
 *                                                           (defaults 2000, 16, 16, 1)
 *
 * Starts `valgrind --tool=callgrind redis-server` on a free port, opens 1,000 accounts, warms
 * every script up with `warm` reserve+commit pairs per account (the outcomes an account then
 * remembers), then counts only the measured phases: `pairs` reserves, then their commits
 * (every tenth one a release). Operations go in waves of `callers`, sent in one turn of the
 * event loop, each wave once the last has been answered: the first of a wave goes alone (nothing
 * is in flight), and the ledger batches the rest `batchSize` at a time. So the batches are the
 * same on every run, and so is the count, to a few instructions in a million; with one caller
 * nothing is batched. Arguments after `--` go to redis-server (for instance
 * `--hash-max-listpack-entries 16`). Needs valgrind (`apt-get install -y valgrind`).
 *
 * Environment: `REDIS_SERVER`, the redis-server to run (one built from source keeps its
 * symbols, so that callgrind can name Lua's functions); `CALLGRIND_DIR`, a directory to keep the
 * two counts in (`callgrind_annotate <file>` then shows where the instructions went).
 */
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { Redis } from 'ioredis'

import { RedisLedger } from 'creditgate'

import { freePort } from '../test/setup/redis-server'

const ACCOUNTS = 1000
const argv = process.argv.slice(2)
const dashes = argv.indexOf('--')
const [pairs = 2000, callers = 16, batchSize = 16, warm = 1] = (
  dashes === -1 ? argv : argv.slice(0, dashes)
).map(Number)
const serverArgs = dashes === -1 ? [] : argv.slice(dashes + 1)

const canConnect = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = createConnection(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => {
      resolve(false)
    })
  })

/** The instructions a callgrind output file counted in all. */
function instructions(file: string): number {
  const text = spawnSync('callgrind_annotate', ['--threshold=100', file], { encoding: 'utf8' })
  const total = /^\s*([\d,]+)\s+(?:\(100\.0%\)\s+)?PROGRAM TOTALS/m.exec(text.stdout)?.[1]
  if (total === undefined) throw new Error(`no totals in ${file}: ${text.stderr}`)
  return Number(total.replaceAll(',', ''))
}

async function main(): Promise<void> {
  if (spawnSync('valgrind', ['--version']).status !== 0) {
    throw new Error('bench/redis-cost.ts needs valgrind: apt-get install -y valgrind')
  }
  const keep = process.env['CALLGRIND_DIR']
  if (keep !== undefined) mkdirSync(keep, { recursive: true })
  const dir = mkdtempSync(join(keep ?? tmpdir(), 'creditgate-callgrind-'))
  const out = join(dir, 'callgrind.out')
  const port = await freePort()
  const server = spawn(
    'valgrind',
    [
      '--tool=callgrind',
      `--callgrind-out-file=${out}`,
      '--instr-atstart=no',
      process.env['REDIS_SERVER'] ?? 'redis-server',
      '--port',
      String(port),
      '--save',
      '',
      '--appendonly',
      'no',
      ...serverArgs,
    ],
    { stdio: 'ignore' },
  )
  const pid = String(server.pid)
  const control = (...args: string[]): void => {
    spawnSync('callgrind_control', [...args, pid])
  }
  while (!(await canConnect(port))) {
    if (server.exitCode !== null) throw new Error('redis-server under valgrind did not start')
    await new Promise((resolve) => setTimeout(resolve, 300))
  }
  const redis = new Redis({ port, enableAutoPipelining: true })
  try {
    const opener = new RedisLedger({
      redis,
      prefix: 'cost:',
      accountTypes: { bench: { signupCredits: 1_000_000_000 } },
    })
    for (let start = 0; start < ACCOUNTS; start += 200) {
      await Promise.all(
        Array.from({ length: 200 }, (_, j) =>
          opener.openAccount(`acct-${start + j}`, { type: 'bench' }),
        ),
      )
    }
    const ledger = new RedisLedger({ redis, prefix: 'cost:', batchSize })
    let next = 0
    const holds: string[] = []
    /** Runs `count` operations in waves of `callers`, each wave sent in one turn. */
    const inWaves = async (count: number, op: (i: number) => Promise<void>): Promise<void> => {
      for (let start = 0; start < count; start += callers) {
        const wave = Math.min(callers, count - start)
        await Promise.all(Array.from({ length: wave }, (_, j) => op(start + j)))
      }
    }
    const reserveAll = (count: number): Promise<void> =>
      inWaves(count, async () => {
        const hold = await ledger.reserve(`acct-${next++ % ACCOUNTS}`, 1, { endpoint: '/quote' })
        if (hold.status !== 'held') throw new Error(`reserve: ${hold.status}`)
        holds.push(hold.holdId)
      })
    const settleAll = async (): Promise<number> => {
      const all = holds.splice(0)
      await inWaves(all.length, async (i) => {
        const holdId = all[i] ?? ''
        if (i % 10 === 9) await ledger.release(holdId, { latencyMs: 3 })
        else await ledger.commit(holdId, { latencyMs: 3 })
      })
      return all.length
    }
    // Warm-up: every script is sent once by EVAL and compiled before counting starts, and every
    // account has settled `warm` calls, as in a server's steady state (its usage periods exist,
    // and its holds hash remembers that many outcomes).
    for (let round = 0; round < warm; round++) {
      await reserveAll(ACCOUNTS)
      await settleAll()
    }
    control('-i', 'on')
    await reserveAll(pairs)
    control('-d', 'reserve')
    const counted = await settleAll()
    control('-d', 'settle')
    control('-i', 'off')
    const dumps = readdirSync(dir)
      .filter((f) => f.startsWith('callgrind.out.'))
      .sort()
    const [reserveFile, settleFile] = dumps.map((f) => join(dir, f))
    if (reserveFile === undefined || settleFile === undefined) throw new Error('no dumps')
    const reserve = instructions(reserveFile) / counted / 1000
    const settle = instructions(settleFile) / counted / 1000
    console.log(
      `${counted} pairs, ${callers} callers, batchSize ${batchSize}, ${warm} warm-up pairs per account${serverArgs.length > 0 ? `, redis-server ${serverArgs.join(' ')}` : ''}: reserve ${reserve.toFixed(1)} + settle ${settle.toFixed(1)} = ${(reserve + settle).toFixed(1)} thousand instructions of Redis per pair`,
    )
  } finally {
    await redis.quit()
    server.kill('SIGTERM')
    await new Promise((resolve) => server.once('exit', resolve))
    if (keep === undefined) rmSync(dir, { recursive: true, force: true })
    else console.log(`callgrind counts kept in ${dir}`)
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})

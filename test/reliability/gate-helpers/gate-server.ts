/**
 * A small Express app gated by creditGate on a real Redis, run as a child process by
 * gate-crash.test.ts so that the test can SIGKILL it between reserve and settle:
 *
 *   node --import tsx --import ./register-lua.mjs gate-server.ts
 *
 * Environment: REDIS_URL, PREFIX (key prefix), HOLD_MS (the gate's holdMs).
 *
 * It reports on stdout, one JSON object a line (pipes are written synchronously on Linux, so a
 * line written before the SIGKILL reaches the test):
 *   { ev: 'listening', port }
 *   { ev: 'handler', holdId, path }             the handler started (a hold is reserved)
 *   { ev: 'commit-sent', holdId }               the gate called ledger.commit
 *   { ev: 'charged' | 'refunded', holdId, ... } the ledger answered a settlement
 *   { ev: 'ledgerError', phase, holdId }
 *
 * Routes (the account is the `x-test-account` header):
 *   GET /hang  creditGate('pro'): the handler never answers
 *   GET /ok    creditGate('basic'): answers 200 at once, with the hold id in `X-Hold-Id`. With
 *              `x-late-commit: 1`, the gate's commit of that call is held back (as if Redis were
 *              slow) until long after the test kills the process.
 */
import express from 'express'
import { Redis } from 'ioredis'

import { RedisLedger, createCreditGate, getCredits, type CreditLedger } from '../../../src/index'

const LATE_COMMIT_MS = 60_000

function env(name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') throw new Error(`${name} is not set`)
  return value
}

function report(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`)
}

function main(): void {
  const redis = new Redis(env('REDIS_URL'))
  const holdMs = Number(env('HOLD_MS'))
  const inner = new RedisLedger({ redis, prefix: env('PREFIX') })
  const late = new Set<string>()
  // The real ledger, with the commit of a marked call delayed, and every commit reported as it
  // is sent.
  const ledger: CreditLedger = {
    get accountTypes() {
      return inner.accountTypes
    },
    reserve: (...args) => inner.reserve(...args),
    release: (...args) => inner.release(...args),
    commit: async (holdId, options) => {
      if (late.has(holdId)) await new Promise((resolve) => setTimeout(resolve, LATE_COMMIT_MS))
      report({ ev: 'commit-sent', holdId })
      return inner.commit(holdId, options)
    },
  }
  const creditGate = createCreditGate({
    ledger,
    holdMs,
    identify: (req) => {
      const account = req.headers['x-test-account']
      return typeof account === 'string' ? account : null
    },
  })
  creditGate.on('charged', ({ holdId, charged }) => {
    report({ ev: 'charged', holdId, charged })
  })
  creditGate.on('refunded', ({ holdId, reason }) => {
    report({ ev: 'refunded', holdId, reason })
  })
  creditGate.on('ledgerError', ({ holdId, phase }) => {
    report({ ev: 'ledgerError', holdId, phase })
  })

  const app = express()
  app.get('/hang', creditGate('pro'), (req) => {
    report({ ev: 'handler', holdId: getCredits(req)?.holdId, path: '/hang' })
    // Never answers: the hold stays reserved until the process dies.
  })
  app.get('/ok', creditGate('basic'), (req, res) => {
    const holdId = getCredits(req)?.holdId ?? ''
    if (req.headers['x-late-commit'] === '1') late.add(holdId)
    report({ ev: 'handler', holdId, path: '/ok' })
    res.setHeader('X-Hold-Id', holdId)
    res.json({ ok: true })
  })
  const server = app.listen(0, '127.0.0.1', () => {
    const address = server.address()
    report({ ev: 'listening', port: typeof address === 'object' ? address?.port : undefined })
  })
}

main()

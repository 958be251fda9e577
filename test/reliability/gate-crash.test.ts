import http from 'node:http'

import { Redis } from 'ioredis'

import { RedisLedger } from '../../src/index'
import { uniquePrefix } from '../helpers/redis'
import { spawnRedis, type RedisProcess } from '../setup/redis-process'
import { startGateServer, type ChildServer } from './gate-helpers/child-server'
import { runLoad, send, type LoadResult } from './gate-helpers/http-load'
import {
  holdRecords,
  holdStates,
  pendingHolds,
  redisNow,
  tally,
  waitForRedisTime,
} from './gate-helpers/ledger-state'

/**
 * The Node process that runs the gate is SIGKILLed (gate-helpers/gate-server.ts, a real child
 * process on a real Redis): a hold reserved and never settled must expire after holdMs, voided
 * by the next script that touches the account, and charge nothing (DESIGN §3.5).
 */

jest.setTimeout(90_000)

const HOLD_MS = 1500

let server: RedisProcess
let admin: Redis
beforeAll(async () => {
  server = await spawnRedis()
  admin = new Redis(server.url)
})
afterAll(async () => {
  await admin.quit()
  await server.stop()
})

async function openAccounts(prefix: string, ids: readonly string[], credits: number) {
  const ledger = new RedisLedger({
    redis: admin,
    prefix,
    accountTypes: { big: { signupCredits: credits } },
  })
  for (const id of ids) await ledger.openAccount(id, { type: 'big' })
  return ledger
}

it('SIGKILL while handlers hold reserved credits: the holds outlive the process, expire after holdMs at the next touch, and the callers are not charged', async () => {
  const prefix = uniquePrefix()
  const ids = ['k0', 'k1', 'k2', 'k3']
  const ledger = await openAccounts(prefix, ids, 1000)
  const agent = new http.Agent({ keepAlive: false })
  let child: ChildServer | undefined
  try {
    child = await startGateServer({ redisUrl: server.url, prefix, holdMs: HOLD_MS })
    const gateServer = child
    // 12 calls of the 5-credit tier, 3 per account; their handler never answers.
    const calls = Array.from({ length: 12 }, (_, i) =>
      send(gateServer.url, { path: '/hang', account: ids[i % ids.length]! }, { agent }),
    )
    await gateServer.waitFor(
      (lines) => lines.filter((l) => l.ev === 'handler').length === calls.length,
      '12 handlers to start',
    )
    const heldIds = gateServer.lines.filter((l) => l.ev === 'handler').map((l) => l.holdId!)
    // Reserved, not settled, while the process lives.
    for (const id of ids) {
      expect(await ledger.balance(id)).toMatchObject({
        balance: 1000,
        available: 985,
        pending: 15,
      })
    }

    await gateServer.kill()
    const results = await Promise.all(calls)
    // Not one caller got an answer: each saw its connection die with the process.
    expect(results.filter((r) => r.status !== undefined)).toEqual([])
    expect(gateServer.lines.filter((l) => l.ev !== 'listening' && l.ev !== 'handler')).toEqual([])

    // The holds outlive the process: Redis still holds them, pending, until their deadline.
    const deadlines = (await Promise.all(ids.map((id) => pendingHolds(admin, prefix, id)))).flat()
    expect(deadlines).toHaveLength(12)
    const killedAt = await redisNow(admin)
    const firstDeadline = Math.min(...deadlines.map((d) => d.expiresAt))
    const lastDeadline = Math.max(...deadlines.map((d) => d.expiresAt))
    expect(firstDeadline).toBeGreaterThan(killedAt) // holdMs has not run out yet…
    expect(await ledger.balance('k0')).toMatchObject({ pending: 15, available: 985 }) // …so they count

    // After holdMs, the next touch of each account voids them: nothing is charged.
    await waitForRedisTime(admin, lastDeadline)
    for (const id of ids) {
      expect(await ledger.balance(id)).toMatchObject({
        balance: 1000,
        available: 1000,
        pending: 0,
      })
      const charges = (await ledger.transactions(id)).transactions.filter(
        (t) => t.kind === 'charge',
      )
      expect(charges).toEqual([])
    }
    const records = await holdRecords(admin, prefix, heldIds)
    expect([...records.values()]).toEqual(heldIds.map(() => 'E|0|5000')) // expired, 5 returned
    console.log(
      `SIGKILL between reserve and settle: requests sent ${calls.length}, handlers started ${heldIds.length}, ` +
        `2xx received 0, pending after the kill ${deadlines.length} (${deadlines.length * 5} credits), ` +
        `voided after holdMs ${HOLD_MS} ms: ${heldIds.length}, charged 0, refunded ${heldIds.length * 5} credits, lost: 0`,
    )
  } finally {
    agent.destroy()
    await child?.stop()
  }
})

/*
 * DESIGN §1 "a process crash: nothing is charged" means: a call whose commit had not reached
 * Redis when the process died is not charged, even if its 2xx had already left (the gate commits
 * after `finish`, so the response goes first). A call whose commit did reach Redis before the
 * crash was answered 2xx and is charged, once. So charged ≤ 2xx received, and the difference is
 * exactly the 2xx whose commit was not sent yet (or was sent and never ran): their holds expire.
 */
it('SIGKILL right after responses were sent: charged ≤ 2xx received, and the difference is exactly the 2xx whose commit had not reached Redis, which expire uncharged', async () => {
  const prefix = uniquePrefix()
  const ids = Array.from({ length: 10 }, (_, i) => `a${i}`)
  const ledger = await openAccounts(prefix, ids, 1000)
  const agent = new http.Agent({ keepAlive: false }) // one connection per call: nothing unread is reset
  let child: ChildServer | undefined
  try {
    child = await startGateServer({ redisUrl: server.url, prefix, holdMs: HOLD_MS })
    const gateServer = child

    // 10 calls answered 200 whose commit the server holds back (a slow ledger): the response is
    // out, the commit is not sent when the process dies.
    const late: LoadResult[] = []
    for (const id of ids) {
      late.push(
        await send(
          gateServer.url,
          { path: '/ok', account: id, headers: { 'x-late-commit': '1' } },
          { agent },
        ),
      )
    }
    expect(late.map((r) => r.status)).toEqual(ids.map(() => 200))

    // A load of ordinary calls; the process is SIGKILLed once 150 of them were answered 2xx, while
    // more are in flight: some of those were answered with their commit still on its way.
    let killing: Promise<void> | undefined
    const results = await runLoad({
      baseUrl: gateServer.url,
      workers: 6,
      maxRequests: 600,
      durationMs: 20_000,
      agent,
      request: (n) => ({ path: '/ok', account: ids[n % ids.length]! }),
      stop: () => killing !== undefined,
      onResult: (_r, all) => {
        if (killing === undefined && all.filter((r) => r.status === 200).length >= 150)
          killing = gateServer.kill()
      },
    })
    await killing
    const killedAt = await redisNow(admin)

    const all = [...late, ...results]
    const ok = all.filter((r) => r.status === 200)
    const okIds = ok.map((r) => r.holdId!)
    expect(new Set(okIds).size).toBe(ok.length)
    const noAnswer = all.filter((r) => r.status === undefined)
    expect(all.filter((r) => r.status !== undefined && r.status !== 200)).toEqual([])

    // Past holdMs, touch every account: whatever was left pending is voided.
    await waitForRedisTime(admin, killedAt + HOLD_MS)
    const balances = await Promise.all(ids.map((id) => ledger.balance(id)))
    expect(balances.map((b) => b.pending)).toEqual(ids.map(() => 0))
    const charged = balances.reduce((sum, b) => sum + (1000 - b.balance), 0)

    const lines = gateServer.lines
    const commitSent = new Set(lines.filter((l) => l.ev === 'commit-sent').map((l) => l.holdId))
    const acknowledged = new Set(lines.filter((l) => l.ev === 'charged').map((l) => l.holdId))
    const states = await holdStates(admin, prefix, okIds)
    const committed = okIds.filter((h) => states.get(h) === 'committed')
    const expired = okIds.filter((h) => states.get(h) === 'expired')

    // Every 2xx is either charged once or expired uncharged: nothing else.
    expect(committed.length + expired.length).toBe(ok.length)
    // Charged exactly the committed 2xx: nothing charged that no client received.
    expect(charged).toBe(committed.length)
    expect(charged).toBeLessThanOrEqual(ok.length)
    // Every commit the ledger acknowledged is charged; none of the uncharged ones was acknowledged.
    for (const h of acknowledged) expect(states.get(h!)).toBe('committed')
    // The held-back commits were never sent: those 10 calls are among the uncharged 2xx.
    for (const r of late) {
      expect(commitSent.has(r.holdId)).toBe(false)
      expect(states.get(r.holdId!)).toBe('expired')
    }
    const expiredNotSent = expired.filter((h) => !commitSent.has(h)).length
    const expiredSentNotLanded = expired.length - expiredNotSent
    console.log(
      `SIGKILL after responses: requests sent ${all.length}, 2xx received ${ok.length}, charged ${charged}, ` +
        `uncharged 2xx ${ok.length - charged} (commit not sent ${expiredNotSent}, of them 10 held back; ` +
        `sent but not run by Redis ${expiredSentNotLanded}), commits acknowledged ${acknowledged.size}, ` +
        `no answer (connection died) ${noAnswer.length}, states ${JSON.stringify(Object.fromEntries(tally(states.values())))}, ` +
        `pending after holdMs 0, lost: 0`,
    )
  } finally {
    agent.destroy()
    await child?.stop()
  }
})

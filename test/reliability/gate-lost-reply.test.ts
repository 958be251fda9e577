import express from 'express'
import { Redis, type RedisOptions } from 'ioredis'
import request from 'supertest'

import { RedisLedger, createCreditGate, getCredits } from '../../src/index'
import { scripts } from '../../src/lua/scripts'
import { ACCOUNT_HEADER, EventLog, identifyByHeader } from '../helpers/gate'
import { uniquePrefix } from '../helpers/redis'
import { startReplyDroppingProxy, type ReplyDroppingProxy } from '../helpers/tcp-proxy'
import { spawnRedis, type RedisProcess } from '../setup/redis-process'
import { accountHoldRecords } from './gate-helpers/ledger-state'

/**
 * A TCP proxy between the gated app's ioredis client and redis-server drops the connection
 * after Redis has run the gate's reserve (or commit) and before the reply reaches the app.
 * Two client settings:
 * - `resend`: ioredis defaults. It reconnects and sends the same EVALSHA again, with the same
 *   hold nonce, so the script runs twice; the nonce checked inside it makes the second run
 *   return the first one's hold (reserve) or outcome (commit).
 * - `reject`: `maxRetriesPerRequest: 0`. The call fails although the script ran: the gate
 *   answers 503 (reserve; the ledger voids the hold it could not report) or sends the commit
 *   again (it is idempotent by hold id).
 */

jest.setTimeout(60_000)

type Mode = 'resend' | 'reject'

let server: RedisProcess
let proxy: ReplyDroppingProxy
const clients: Redis[] = []

beforeAll(async () => {
  server = await spawnRedis() // private: no other file's SCRIPT FLUSH turns the lost reply into NOSCRIPT
  proxy = await startReplyDroppingProxy(server.port)
})
afterAll(async () => {
  for (const c of clients) c.disconnect()
  await proxy.close()
  await server.stop()
})

const CLIENT: Record<Mode, RedisOptions> = {
  resend: {},
  reject: { maxRetriesPerRequest: 0 },
}

/** A gated app whose ledger talks to Redis through the proxy; reads that prove go around it. */
async function setup(mode: Mode) {
  const prefix = uniquePrefix()
  const proxied = new Redis(proxy.url, CLIENT[mode])
  proxied.on('error', () => undefined) // the dropped connection
  const direct = new Redis(server.url)
  clients.push(proxied, direct)
  const ledger = new RedisLedger({ redis: proxied, prefix })
  const reader = new RedisLedger({ redis: direct, prefix })
  await reader.openAccount('u', { type: 'registered' }) // 350 credits
  const gate = createCreditGate({ ledger, identify: identifyByHeader(), retryAfterSeconds: 2 })
  const log = new EventLog(gate)
  const handled: string[] = []
  const app = express()
  for (const path of ['/warm', '/lost-reserve', '/lost-commit']) {
    app.get(path, gate('pro'), (req, res) => {
      handled.push(path)
      res.setHeader('X-Hold-Id', getCredits(req)!.holdId!)
      res.json({ ok: true })
    })
  }
  const call = (path: string) => request(app).get(path).set(ACCOUNT_HEADER, 'u')
  // Every script cached and the connection up: the reply we lose is the script's own.
  expect((await call('/warm')).status).toBe(200)
  await log.settled(1)
  const holds = async () => [...(await accountHoldRecords(direct, prefix, 'u')).values()]
  return { reader, log, handled, call, holds }
}

const isScript = (sha: string, command: string): boolean => command.includes(sha)

describe.each<Mode>(['resend', 'reject'])('a reply lost after Redis ran it (%s)', (mode) => {
  it('reserve: the caller gets a clear answer, and at most the one charge', async () => {
    const { reader, log, handled, call, holds } = await setup(mode)
    const dropped = proxy.dropped
    proxy.dropReplyTo(
      (command) => isScript(scripts.reserve.sha1, command) && command.includes('/lost-reserve'),
    )
    const res = await call('/lost-reserve')
    expect(proxy.dropped).toBe(dropped + 1) // Redis ran the reserve; its reply was lost
    if (mode === 'resend') {
      // The resent reserve found its own nonce: the same hold, held once, charged once.
      expect(res.status).toBe(200)
      expect(handled).toEqual(['/warm', '/lost-reserve'])
      await log.settled(2)
      expect(log.of('charged').map((e) => e.holdId)).toEqual([
        expect.any(String),
        res.headers['x-hold-id'],
      ])
      expect(await holds()).toEqual(['C|5000|0', 'C|5000|0'])
      expect(await reader.balance('u')).toMatchObject({ balance: 340, pending: 0 })
    } else {
      // The reserve failed although it ran: 503, the handler not run, the hold voided.
      expect(res.status).toBe(503)
      expect(res.headers['retry-after']).toBe('2')
      expect(res.body).toMatchObject({ error: 'ledger_unavailable' })
      expect(handled).toEqual(['/warm'])
      expect(log.of('ledgerError').map((e) => e.phase)).toEqual(['reserve'])
      let balance = await reader.balance('u')
      for (let i = 0; i < 100 && balance.pending !== 0; i++) {
        await new Promise((r) => setTimeout(r, 20))
        balance = await reader.balance('u')
      }
      expect(balance).toMatchObject({ balance: 345, available: 345, pending: 0 })
      expect((await holds()).sort()).toEqual(['C|5000|0', 'R|0|5000'])
    }
    const charged = log.of('charged').length - 1
    console.log(
      `lost reserve reply through the gate (${mode}): requests sent 1, answered ${res.status}, ` +
        `2xx received ${res.status === 200 ? 1 : 0}, reserve run by Redis ${mode === 'resend' ? 2 : 1}, ` +
        `holds made 1, charged ${charged}, ${charged === 0 ? 'hold voided 1 (5 credits returned)' : 'refunded 0'}, ` +
        `replies dropped 1, lost: 0`,
    )
  })

  it('commit: the 2xx already sent is charged exactly once (the commit is resent and replayed)', async () => {
    const { reader, log, call, holds } = await setup(mode)
    const dropped = proxy.dropped
    proxy.dropReplyTo(
      (command) => isScript(scripts.resolve.sha1, command) && command.includes('\r\ncommit\r\n'),
    )
    const res = await call('/lost-commit')
    expect(res.status).toBe(200) // sent before the commit: the response never waits for it
    await log.waitFor(() => log.of('charged').length === 2, 'the charge')
    expect(proxy.dropped).toBe(dropped + 1) // Redis ran the commit; its reply was lost
    const holdId = res.headers['x-hold-id']!
    expect(log.of('charged')[1]).toMatchObject({ holdId, charged: 5, statusCode: 200 })
    const errors = log.of('ledgerError')
    if (mode === 'resend') {
      expect(errors).toEqual([]) // ioredis resent it by itself; the script replayed its outcome
    } else {
      // The commit failed although it ran; the gate sent it again and got the outcome replayed.
      expect(errors.map((e) => [e.phase, e.holdId, e.willRetry])).toEqual([
        ['commit', holdId, true],
      ])
    }
    expect(log.of('refunded')).toEqual([])
    expect(await holds()).toEqual(['C|5000|0', 'C|5000|0'])
    expect(await reader.balance('u')).toMatchObject({ balance: 340, pending: 0 })
    const charges = (await reader.transactions('u')).transactions.filter((t) => t.kind === 'charge')
    expect(charges.map((t) => t.amount)).toEqual([-5, -5]) // the warm-up call and this one
    console.log(
      `lost commit reply through the gate (${mode}): requests sent 1, 2xx received 1, commit sent ` +
        `${mode === 'resend' ? 'by the gate 1, run by Redis 2 (ioredis resent it)' : 'by the gate 2 (it retried), run by Redis 2'}, ` +
        `charged 1 (5 credits), ` +
        `refunded 0, replies dropped 1, lost: 0`,
    )
  })
})

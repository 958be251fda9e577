import { Redis } from 'ioredis'

import { CreditStoreError, RedisLedger, isCreditError } from '../../src/index'
import { accountKeys } from '../../src/ledger/keys'
import { uniquePrefix } from '../helpers/redis'
import { startReplyDroppingProxy, type ReplyDroppingProxy } from '../helpers/tcp-proxy'
import { spawnRedis, type RedisProcess } from '../setup/redis-process'

/**
 * Redis runs the command, answers, and the connection drops before the answer reaches the client
 * (a real TCP proxy between ioredis and redis-server). Two client settings:
 * - `resend`: ioredis defaults; it reconnects and sends the command again, so the script runs twice
 *   and only the id checked inside it keeps that harmless;
 * - `reject`: `maxRetriesPerRequest: 0`; the call fails with a CreditStoreError although the script
 *   ran, and the caller retries with the same id.
 */
type Mode = 'resend' | 'reject'

let server: RedisProcess
let proxy: ReplyDroppingProxy
const clients: Redis[] = []

beforeAll(async () => {
  // A private server: no other test file's SCRIPT FLUSH can turn the dropped reply into a NOSCRIPT.
  server = await spawnRedis()
  proxy = await startReplyDroppingProxy(server.port)
})
afterAll(async () => {
  await Promise.all(clients.map((c) => c.quit().catch(() => undefined)))
  await proxy.close()
  await server.stop()
})

function setup(mode: Mode): {
  ledger: RedisLedger
  direct: RedisLedger
  direct$: Redis
  prefix: string
} {
  const prefix = uniquePrefix()
  const proxied = new Redis(proxy.url, {
    maxRetriesPerRequest: mode === 'resend' ? 20 : 0,
    retryStrategy: () => 20,
  })
  const direct$ = new Redis(server.url)
  clients.push(proxied, direct$)
  return {
    ledger: new RedisLedger({ redis: proxied, prefix }),
    // Reads that prove the outcome go around the proxy.
    direct: new RedisLedger({ redis: direct$, prefix }),
    direct$,
    prefix,
  }
}

async function warmUp(ledger: RedisLedger): Promise<void> {
  // Every script cached, so the reply we lose is the script's, not a NOSCRIPT.
  await ledger.openAccount('warm', { type: 'registered' })
  await ledger.grant('warm', {
    amount: 1,
    source: 'purchase',
    idempotencyKey: `warm-${Math.random()}`,
  })
  const hold = await ledger.reserve('warm', 1, { endpoint: '/warm' })
  if (hold.status === 'held') await ledger.commit(hold.holdId)
  await ledger.balance('warm')
}

async function settle<T>(promise: Promise<T>): Promise<T | Error> {
  return promise.catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))))
}

function expectStoreError(value: unknown): void {
  expect(value).toBeInstanceOf(CreditStoreError)
  expect(isCreditError(value) && value.code).toBe('ERR_CREDIT_STORE_UNAVAILABLE')
}

function report(
  what: string,
  mode: Mode,
  f: { sent: number; charged: number; refunded: number; credited?: number; answer: string },
): void {
  console.log(
    `lost reply of ${what} (${mode}): sent ${f.sent}, charged ${f.charged}, refunded ${f.refunded}` +
      `${f.credited === undefined ? '' : `, credited ${f.credited}`}, lost: 0; the caller got ${f.answer}`,
  )
}

describe.each<Mode>(['resend', 'reject'])(
  'a reply lost after Redis ran the script (%s)',
  (mode) => {
    it('reserve: one hold at most, and a clear answer', async () => {
      const { ledger, direct, direct$, prefix } = setup(mode)
      await warmUp(ledger)
      await direct.openAccount('r', { type: 'registered' })
      const before = proxy.dropped
      proxy.dropReplyTo((command) => command.includes('/lost-reserve'))
      const result = await settle(ledger.reserve('r', 5, { endpoint: '/lost-reserve' }))
      expect(proxy.dropped).toBe(before + 1)
      // Redis did run the reserve: its nonce is in the holds hash (held or since released).
      const holds = await direct$.hgetall(accountKeys(prefix, 'r').holds)
      expect(Object.keys(holds)).toHaveLength(1)
      if (mode === 'resend') {
        // The resent reserve found its own nonce and returned the same hold: held once.
        if (result instanceof Error || result.status !== 'held')
          throw new Error(`got ${JSON.stringify(result)}`)
        expect(await direct.balance('r')).toMatchObject({ available: 345, pending: 5 })
        const committed = await ledger.commit(result.holdId)
        expect(committed).toMatchObject({ outcome: 'committed', charged: 5, replayed: false })
        expect(await direct.balance('r')).toMatchObject({ balance: 345, pending: 0 })
        report('reserve', mode, {
          sent: 1,
          charged: 5,
          refunded: 0,
          answer: 'the hold (the resend replayed it)',
        })
      } else {
        expectStoreError(result)
        // The ledger voids the hold it could not report (best effort, after the reconnect).
        let balance = await direct.balance('r')
        for (let i = 0; i < 100 && balance.pending !== 0; i++) {
          await new Promise((r) => setTimeout(r, 20))
          balance = await direct.balance('r')
        }
        expect(balance).toMatchObject({ balance: 350, available: 350, pending: 0 })
        expect(Object.values(await direct$.hgetall(accountKeys(prefix, 'r').holds))[0]).toMatch(
          /^R\|/,
        )
        report('reserve', mode, {
          sent: 1,
          charged: 0,
          refunded: 5,
          answer: 'CreditStoreError (the hold was voided)',
        })
      }
    })

    it('reserve resent after its hold expired: nothing held, nothing charged, a store error', async () => {
      const { ledger, direct } = setup(mode)
      await warmUp(ledger)
      await direct.openAccount('x', { type: 'registered' })
      proxy.dropReplyTo((command) => command.includes('/lost-expired'))
      // holdMs 1: by the time ioredis has reconnected and resent it, the hold is past its deadline.
      const result = await settle(ledger.reserve('x', 5, { endpoint: '/lost-expired', holdMs: 1 }))
      expectStoreError(result)
      let balance = await direct.balance('x')
      for (let i = 0; i < 100 && balance.pending !== 0; i++) {
        await new Promise((r) => setTimeout(r, 20))
        balance = await direct.balance('x')
      }
      expect(balance).toMatchObject({ balance: 350, available: 350, pending: 0 })
      report('reserve (hold expired before the resend)', mode, {
        sent: 1,
        charged: 0,
        refunded: 5,
        answer: 'CreditStoreError ERR_CREDIT_STORE_UNAVAILABLE (nothing held)',
      })
    })

    it('commit: charged exactly once, and a clear answer', async () => {
      const { ledger, direct } = setup(mode)
      await warmUp(ledger)
      await direct.openAccount('c', { type: 'registered' })
      const hold = await ledger.reserve('c', 5, { endpoint: '/commit' })
      if (hold.status !== 'held') throw new Error('not held')
      const nonce = hold.holdId.slice(hold.holdId.lastIndexOf(':') + 1)
      proxy.dropReplyTo((command) => command.includes(nonce) && command.includes('commit'))
      const result = await settle(ledger.commit(hold.holdId))
      expect(await direct.balance('c')).toMatchObject({ balance: 345, pending: 0 })
      if (mode === 'resend') {
        if (result instanceof Error) throw result
        expect(result).toMatchObject({ outcome: 'committed', charged: 5, replayed: true })
        report('commit', mode, {
          sent: 1,
          charged: 5,
          refunded: 0,
          answer: 'committed (replayed: true)',
        })
      } else {
        expectStoreError(result)
        // The caller retries with the same hold id: the first outcome, replayed, and no second charge.
        expect(await ledger.commit(hold.holdId)).toMatchObject({
          outcome: 'committed',
          charged: 5,
          replayed: true,
        })
        expect(await direct.balance('c')).toMatchObject({ balance: 345, pending: 0 })
        report('commit', mode, {
          sent: 2,
          charged: 5,
          refunded: 0,
          answer: 'CreditStoreError, then the replayed commit',
        })
      }
    })

    it.each([
      [
        'grant',
        (key: string) => (command: string) => command.includes(key) && !command.includes('{#'),
      ],
      ['the claim of a grant', (key: string) => (command: string) => command.includes(`{#${key}}`)],
    ])('%s: credited exactly once, and a clear answer', async (what, match) => {
      const { ledger, direct } = setup(mode)
      await warmUp(ledger)
      await direct.openAccount('g', { type: 'registered' })
      const key = `evt-${Math.random().toString(36).slice(2)}`
      const grant = () =>
        ledger.grant('g', { amount: 100, source: 'purchase', idempotencyKey: key })
      proxy.dropReplyTo(match(key))
      const result = await settle(grant())
      const claimOnly = what !== 'grant'
      if (mode === 'resend') {
        if (result instanceof Error) throw result
        // A lost grant reply replays; a lost claim reply only delays the grant, made once now.
        expect(result).toMatchObject({ amount: 100, replayed: !claimOnly })
        expect((await direct.balance('g')).balance).toBe(450)
        report(what, mode, {
          sent: 1,
          charged: 0,
          refunded: 0,
          credited: 100,
          answer: `granted (replayed: ${!claimOnly})`,
        })
      } else {
        expectStoreError(result)
        expect((await direct.balance('g')).balance).toBe(claimOnly ? 350 : 450)
        expect(await grant()).toMatchObject({ amount: 100, replayed: !claimOnly })
        expect(await grant()).toMatchObject({ amount: 100, replayed: true })
        expect((await direct.balance('g')).balance).toBe(450)
        report(what, mode, {
          sent: 3,
          charged: 0,
          refunded: 0,
          credited: 100,
          answer: 'CreditStoreError, then one grant and replays',
        })
      }
    })
  },
)

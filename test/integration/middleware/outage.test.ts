import { once } from 'node:events'

import { Redis, type RedisOptions } from 'ioredis'
import request from 'supertest'

import {
  CreditArgumentError,
  CreditRuleError,
  CreditStoreError,
  RedisLedger,
  createCreditGate,
  getCredits,
  type CreditInfo,
  type ReserveResult,
} from '../../../src/index'
import {
  ACCOUNT_HEADER,
  EXPRESS_VERSIONS,
  appWith,
  ok,
  EventLog,
  RecordingLedger,
  deferred,
  identifyByHeader,
  redisGates,
} from '../../helpers/gate'
import { uniquePrefix } from '../../helpers/redis'
import { startRedis } from '../../setup/redis-server'

const gates = redisGates()
/** A gate on Redis whose account `u` is open with the 350 signup credits of `registered`. */
const setup = gates.withAccount

const UNAVAILABLE_BODY = {
  success: false,
  error: 'ledger_unavailable',
  message: 'Credit ledger unavailable',
  detail: expect.stringContaining('retry in'),
}

describe.each(EXPRESS_VERSIONS)('ledger outage on %s', (_name, factory) => {
  describe.each<[string, RedisOptions]>([
    ['fails each command at once', { maxRetriesPerRequest: 1 }],
    ['queues commands until it reconnects', { maxRetriesPerRequest: null }],
  ])('with a client that %s', (_how, clientOptions) => {
    it('answers 503 with Retry-After in bounded time while Redis is stopped, without running the handler, and 200 again once it is back on the same port, without a restart', async () => {
      const server = await startRedis()
      const redis = new Redis(server.url, { ...clientOptions, retryStrategy: () => 50 })
      redis.on('error', () => undefined) // connection errors are expected here
      let restarted: Awaited<ReturnType<typeof startRedis>> | undefined
      try {
        const ledger = new RecordingLedger(new RedisLedger({ redis, prefix: uniquePrefix() }))
        const gate = createCreditGate({
          ledger,
          identify: identifyByHeader(),
          openAccounts: 'registered',
          ledgerTimeoutMs: 500,
          retryAfterSeconds: 7,
        })
        const log = new EventLog(gate)
        const handler = jest.fn(ok)
        const app = appWith(factory, (a) => a.get('/var', gate('pro'), handler))

        expect((await request(app).get('/var').set(ACCOUNT_HEADER, 'u')).status).toBe(200)
        await log.settled(1)

        await server.stop() // by PID
        const reservesBeforeOutage = ledger.count('reserve')
        for (let i = 0; i < 3; i++) {
          const started = performance.now()
          const res = await request(app).get('/var').set(ACCOUNT_HEADER, 'u')
          const elapsed = performance.now() - started
          expect(res.status).toBe(503)
          expect(res.headers['retry-after']).toBe('7')
          expect(res.body).toEqual(UNAVAILABLE_BODY)
          expect(elapsed).toBeLessThan(500 + 1500)
        }
        expect(handler).toHaveBeenCalledTimes(1)
        expect(log.of('ledgerError').map((e) => e.phase)).toEqual(['reserve', 'reserve', 'reserve'])
        expect(log.of('ledgerError').every((e) => e.error instanceof CreditStoreError)).toBe(true)

        restarted = await startRedis([], server.port)
        if (redis.status !== 'ready') await once(redis, 'ready')
        // Redis came back empty (no persistence here): the account is opened again on first sight.
        const res = await request(app).get('/var').set(ACCOUNT_HEADER, 'u')
        expect(res.status).toBe(200)
        expect(handler).toHaveBeenCalledTimes(2)

        // Reserves the outage held back may still run now; each hold they make is released.
        await ledger.idle()
        const late = await Promise.all(
          ledger.calls
            .filter((c) => c.method === 'reserve')
            .slice(reservesBeforeOutage, reservesBeforeOutage + 3)
            .map((c) =>
              (c.result as Promise<ReserveResult>).then(
                (r) => r.status,
                () => 'error',
              ),
            ),
        )
        const lateHolds = late.filter((s) => s === 'held').length
        if (clientOptions.maxRetriesPerRequest === null) expect(lateHolds).toBe(3)
        await log.waitFor(
          () => log.of('charged').length === 2 && log.of('refunded').length === lateHolds,
          'the charge and the late releases',
        )
        expect(log.of('refunded').every((e) => e.reason === 'error')).toBe(true)
        await ledger.idle()
        expect(await ledger.inner.balance('u')).toMatchObject({ available: 345, pending: 0 })
      } finally {
        redis.disconnect()
        await restarted?.stop()
        await server.stop()
      }
    })
  })

  it('answers 503 at ledgerTimeoutMs when the reserve is slow, and releases the hold it makes late', async () => {
    const { gate, ledger, log, redisLedger } = await setup({ ledgerTimeoutMs: 100 })
    const answer = deferred()
    const held = deferred()
    ledger.faults.reserve = async (real) => {
      const result = await real() // the hold is made in Redis…
      held.resolve()
      await answer.promise // …but its answer arrives after the deadline
      return result
    }
    const handler = jest.fn(ok)
    const app = appWith(factory, (a) => a.get('/var', gate('pro'), handler))
    const started = performance.now()
    const res = await request(app).get('/var').set(ACCOUNT_HEADER, 'u')
    const elapsed = performance.now() - started
    expect(res.status).toBe(503)
    expect(res.headers['retry-after']).toBe('5')
    expect(elapsed).toBeGreaterThanOrEqual(95)
    expect(elapsed).toBeLessThan(1000)
    expect(handler).not.toHaveBeenCalled()
    await held.promise
    expect(await redisLedger.balance('u')).toMatchObject({ available: 345, pending: 5 })
    answer.resolve()
    await log.settled(1)
    expect(log.of('refunded')[0]).toMatchObject({ reason: 'error', statusCode: null, returned: 5 })
    expect(await redisLedger.balance('u')).toMatchObject({ available: 350, pending: 0 })
  })

  it.each([
    {
      what: 'a store error',
      error: new CreditStoreError('ERR_CREDIT_STORE_UNAVAILABLE', 'connection refused'),
      status: 503,
    },
    {
      what: 'a broken script reply',
      error: new CreditStoreError('ERR_CREDIT_SCRIPT_REPLY', 'bad reply'),
      status: 503,
    },
    { what: 'an unknown error', error: new Error('socket hang up'), status: 503 },
    {
      what: 'a rule error (a bug, not an outage)',
      error: new CreditRuleError('ERR_CREDIT_ACCOUNT_NOT_FOUND', 'no account'),
      status: 500,
    },
    {
      what: 'an argument error (a set-up bug, not an outage)',
      error: new CreditArgumentError('ERR_CREDIT_INVALID_ARGUMENT', 'bad type'),
      status: 500,
    },
  ])('answers $what from the reserve with $status', async ({ error, status }) => {
    const { gate, ledger } = await setup()
    ledger.faults.reserve = () => Promise.reject(error)
    const errors: unknown[] = []
    const handler = jest.fn(ok)
    const app = appWith(factory, (a) => a.get('/var', gate('pro'), handler), errors)
    expect((await request(app).get('/var').set(ACCOUNT_HEADER, 'u')).status).toBe(status)
    expect(handler).not.toHaveBeenCalled()
    expect(errors).toEqual(status === 500 ? [error] : [])
  })

  describe('failOpen', () => {
    it('runs the handler unmetered when the ledger fails, and emits unmetered', async () => {
      const { gate, ledger, log } = await setup({ failOpen: true })
      const outage = new CreditStoreError('ERR_CREDIT_STORE_UNAVAILABLE', 'connection refused')
      ledger.faults.reserve = () => Promise.reject(outage)
      let info: CreditInfo | undefined
      const app = appWith(factory, (a) =>
        a.get('/var', gate('pro'), (req, res) => {
          info = getCredits(req)
          res.json({})
        }),
      )
      const res = await request(app).get('/var').set(ACCOUNT_HEADER, 'u')
      expect(res.status).toBe(200)
      expect(res.headers['x-credits-cost']).toBeUndefined()
      expect(res.headers['x-credits-remaining']).toBeUndefined()
      expect(info).toMatchObject({
        accountId: 'u',
        holdId: undefined,
        cost: 0,
        price: 5,
        remaining: null,
      })
      expect(log.of('unmetered')).toEqual([
        { accountId: 'u', accountType: undefined, tier: 'pro', endpoint: '/var', error: outage },
      ])
      expect(log.of('ledgerError')).toEqual([
        expect.objectContaining({ phase: 'reserve', error: outage }),
      ])
      await ledger.idle()
      expect(ledger.count('commit') + ledger.count('release')).toBe(0)
    })

    it('runs the handler unmetered after ledgerTimeoutMs, and releases the late hold', async () => {
      const { gate, ledger, log, redisLedger } = await setup({
        failOpen: true,
        ledgerTimeoutMs: 50,
      })
      const answer = deferred()
      ledger.faults.reserve = async (real) => {
        const result = await real()
        await answer.promise
        return result
      }
      const app = appWith(factory, (a) => a.get('/var', gate('pro'), ok))
      expect((await request(app).get('/var').set(ACCOUNT_HEADER, 'u')).status).toBe(200)
      expect(log.of('unmetered')).toHaveLength(1)
      answer.resolve()
      await log.settled(1)
      expect(log.of('refunded')[0]).toMatchObject({ reason: 'error' })
      expect(log.of('charged')).toEqual([])
      expect(await redisLedger.balance('u')).toMatchObject({ available: 350, pending: 0 })
    })

    it('does not open on a set-up error: it goes to next(err)', async () => {
      const { gate, log } = await setup({ failOpen: true, openAccounts: () => 'no-such-type' })
      const errors: unknown[] = []
      const handler = jest.fn(ok)
      const app = appWith(factory, (a) => a.get('/var', gate('pro'), handler), errors)
      expect((await request(app).get('/var').set(ACCOUNT_HEADER, 'stranger')).status).toBe(500)
      expect(errors[0]).toMatchObject({ code: 'ERR_CREDIT_INVALID_ARGUMENT' })
      expect(handler).not.toHaveBeenCalled()
      expect(log.of('unmetered')).toEqual([])
    })
  })
})

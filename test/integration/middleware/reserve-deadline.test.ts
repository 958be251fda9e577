import { IncomingMessage, ServerResponse } from 'node:http'
import { Socket } from 'node:net'

import type { Express, RequestHandler } from 'express'
import request from 'supertest'

import { CreditStoreError, type ReserveResult } from '../../../src/index'
import {
  ACCOUNT_HEADER,
  EXPRESS_VERSIONS,
  appWith,
  ok,
  deferred,
  redisGates,
} from '../../helpers/gate'

// Every reserve of a gate is bounded by ledgerTimeoutMs through one shared deadline queue and
// one timer (src/deadline-queue.ts). These tests hold reserves back on purpose and check what
// each caller gets; they never measure how long anything took.

const gates = redisGates()
/** A gate on Redis whose account `u` is open with the 350 signup credits of `registered`. */
const setup = gates.withAccount

/** A reserve that never answers: the ledger took the call and went silent. */
const never = (): Promise<ReserveResult> => new Promise<ReserveResult>(() => undefined)

const get = (app: Express, account: string) => request(app).get('/var').set(ACCOUNT_HEADER, account)

describe.each(EXPRESS_VERSIONS)('the reserve deadline on %s', (_name, factory) => {
  it('answers 503 to each of several concurrent calls whose reserve never answers', async () => {
    const { gate, ledger, log } = await setup({ ledgerTimeoutMs: 100 })
    ledger.faults.reserve = never
    const handler = jest.fn(ok)
    const app = appWith(factory, (a) => a.get('/var', gate('pro'), handler))

    const answers = await Promise.all([1, 2, 3, 4, 5].map(() => get(app, 'u')))

    for (const res of answers) {
      expect(res.status).toBe(503)
      expect(res.headers['retry-after']).toBe('5')
      expect(res.body).toMatchObject({ success: false, error: 'ledger_unavailable' })
    }
    expect(handler).not.toHaveBeenCalled()
    expect(ledger.count('reserve')).toBe(5)
    const errors = log.of('ledgerError')
    expect(errors).toHaveLength(5)
    for (const event of errors) {
      expect(event).toMatchObject({ phase: 'reserve', accountId: 'u', willRetry: false })
      expect(event.error).toBeInstanceOf(CreditStoreError)
      expect(event.error).toMatchObject({
        code: 'ERR_CREDIT_STORE_UNAVAILABLE',
        message: expect.stringContaining('ledgerTimeoutMs (100 ms)'),
      })
    }
    expect(ledger.count('commit') + ledger.count('release')).toBe(0)
  })

  it('releases every hold that a reserve grants after its deadline, with reason error', async () => {
    const { gate, ledger, log, redisLedger } = await setup({ ledgerTimeoutMs: 100 })
    const answer = deferred()
    let made = 0
    const allMade = deferred()
    ledger.faults.reserve = async (real) => {
      const result = await real() // the hold is made in Redis…
      if (++made === 3) allMade.resolve()
      await answer.promise // …but its answer arrives after the deadline
      return result
    }
    const handler = jest.fn(ok)
    const app = appWith(factory, (a) => a.get('/var', gate('pro'), handler))

    const answers = await Promise.all([1, 2, 3].map(() => get(app, 'u')))
    expect(answers.map((r) => r.status)).toEqual([503, 503, 503])
    await allMade.promise
    expect(await redisLedger.balance('u')).toMatchObject({ available: 335, pending: 15 })

    answer.resolve()
    await log.waitFor(() => log.of('refunded').length === 3, 'three late holds released')
    expect(log.of('refunded').map((e) => [e.reason, e.statusCode, e.returned])).toEqual([
      ['error', null, 5],
      ['error', null, 5],
      ['error', null, 5],
    ])
    expect(log.of('charged')).toEqual([])
    expect(handler).not.toHaveBeenCalled()
    await ledger.idle()
    expect(await redisLedger.balance('u')).toMatchObject({ available: 350, pending: 0 })
  })

  it('ignores a reserve that fails after its deadline, even while the call it gave up is still running', async () => {
    // failOpen keeps the response open past the deadline: a late failure must not answer again.
    const { gate, ledger, log } = await setup({ ledgerTimeoutMs: 50, failOpen: true })
    const fail = deferred()
    ledger.faults.reserve = async () => {
      await fail.promise
      throw new CreditStoreError('ERR_CREDIT_STORE_UNAVAILABLE', 'connection lost')
    }
    const running = deferred()
    const finish = deferred()
    const handler = jest.fn<Promise<void>, Parameters<RequestHandler>>(async (_req, res) => {
      running.resolve()
      await finish.promise
      res.json({ ok: true })
    })
    const errors: unknown[] = []
    const app = appWith(factory, (a) => a.get('/var', gate('pro'), handler), errors)

    const answer = get(app, 'u').then((res) => res)
    await running.promise // the deadline passed: the call runs unmetered
    fail.resolve()
    await ledger.idle() // the late rejection has reached the gate
    finish.resolve()

    expect((await answer).status).toBe(200)
    expect(handler).toHaveBeenCalledTimes(1)
    expect(log.of('unmetered')).toHaveLength(1)
    expect(log.of('ledgerError')).toHaveLength(1)
    expect(log.of('ledgerError')[0]?.error).toMatchObject({
      message: expect.stringContaining('ledgerTimeoutMs (50 ms)'),
    })
    expect(errors).toEqual([])
  })

  it('lets fast calls through untouched while a call among them times out, before and after it', async () => {
    // Long enough that the fast calls never meet it, even on a loaded CI machine.
    const { gate, ledger, log, redisLedger } = await setup({ ledgerTimeoutMs: 2000 })
    const slowPending = deferred()
    const firstPending = deferred()
    const othersAnswered = deferred()
    let fast = 0
    ledger.faults.reserve = async (real, args) => {
      if (args[0] === 'slow') {
        slowPending.resolve()
        return never()
      }
      // The first fast call is answered after the ones that came in behind it, so the queue
      // loses entries from its middle and its end while the slow call waits at its head.
      if (fast++ === 0) {
        firstPending.resolve()
        const result = await real()
        await othersAnswered.promise
        return result
      }
      return real()
    }
    const handler = jest.fn(ok)
    const app = appWith(factory, (a) => a.get('/var', gate('pro'), handler))

    const slow = get(app, 'slow').then((res) => res)
    await slowPending.promise
    const first = get(app, 'u').then((res) => res)
    await firstPending.promise
    const others = await Promise.all([1, 2, 3].map(() => get(app, 'u')))
    othersAnswered.resolve()
    expect([(await first).status, ...others.map((r) => r.status)]).toEqual([200, 200, 200, 200])
    expect((await slow).status).toBe(503)

    // The queue emptied; calls after it, fast and slow, are bounded as before.
    const after = await Promise.all([1, 2].map(() => get(app, 'u')))
    expect(after.map((r) => r.status)).toEqual([200, 200])
    expect((await get(app, 'slow')).status).toBe(503)

    expect(handler).toHaveBeenCalledTimes(6)
    await log.settled(6)
    expect(log.of('charged')).toHaveLength(6)
    expect(log.of('refunded')).toEqual([])
    expect(log.of('ledgerError').map((e) => [e.accountId, e.phase])).toEqual([
      ['slow', 'reserve'],
      ['slow', 'reserve'],
    ])
    // (No ledger.idle() here: the slow reserves never settle.)
    expect(await redisLedger.balance('u')).toMatchObject({ available: 350 - 6 * 5, pending: 0 })
  })

  it('runs each call unmetered with failOpen when their reserves never answer', async () => {
    const { gate, ledger, log } = await setup({ ledgerTimeoutMs: 50, failOpen: true })
    ledger.faults.reserve = never
    const handler = jest.fn(ok)
    const app = appWith(factory, (a) => a.get('/var', gate('pro'), handler))

    const answers = await Promise.all([1, 2, 3].map(() => get(app, 'u')))

    expect(answers.map((r) => r.status)).toEqual([200, 200, 200])
    expect(handler).toHaveBeenCalledTimes(3)
    expect(log.of('unmetered')).toHaveLength(3)
    expect(ledger.count('commit') + ledger.count('release')).toBe(0)
  })
})

describe('the reserve deadline timer', () => {
  const refTimers = (): number =>
    process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length

  it('does not keep the process alive while a reserve is pending, and still answers 503', async () => {
    const { gate, ledger, log } = await setup({ ledgerTimeoutMs: 50 })
    ledger.faults.reserve = never
    const req = new IncomingMessage(new Socket())
    req.headers[ACCOUNT_HEADER] = 'u'
    const res = new ServerResponse(req)
    const next = jest.fn()

    const before = refTimers()
    gate('pro')(req, res, next)
    expect(ledger.count('reserve')).toBe(1) // sent, and waiting on the gate's deadline timer
    // An unref'd timer is not among the resources that keep the event loop alive.
    expect(refTimers()).toBe(before)

    await log.waitFor(() => log.of('ledgerError').length === 1, 'the reserve to time out')
    expect(res.statusCode).toBe(503)
    expect(res.getHeader('retry-after')).toBe('5')
    expect(next).not.toHaveBeenCalled()
  })
})

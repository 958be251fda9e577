import { execFile } from 'node:child_process'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'

import type { Redis } from 'ioredis'
import request from 'supertest'

import { createApp, signWebhook } from '../../examples/quant-api/app'
import { printWalkthrough } from '../../examples/quant-api/walkthrough'
import { mockRedis, realRedis } from '../helpers/redis'

type Demo = ReturnType<typeof createApp>

async function register(demo: Demo): Promise<{ token: string; accountId: string }> {
  const email = `u${Math.random().toString(36).slice(2)}@example.com`
  const res = await request(demo.app)
    .post('/auth/register')
    .send({ email, password: 'correct horse' })
    .expect(201)
  return res.body.data as { token: string; accountId: string }
}

async function settled(demo: Demo, accountId: string): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const b = await demo.ledger.balance(accountId)
    if (b.pending === 0) return b.balance
    await new Promise((r) => setTimeout(r, 10))
  }
  throw new Error('holds never settled')
}

describe('the demo walkthrough, as printed, on the embedded default', () => {
  let redis: Redis
  let server: Server
  let demo: Demo
  beforeAll(async () => {
    redis = mockRedis()
    demo = createApp({ redis })
    server = demo.app.listen(0, '127.0.0.1')
    await new Promise((r) => server.once('listening', r))
  })
  afterAll(async () => {
    await new Promise((r) => server.close(r))
    redis.disconnect()
  })

  it('runs every printed curl command successfully and charges exactly 2 + 5 credits', async () => {
    const { port } = server.address() as AddressInfo
    const script = `set -euo pipefail\n${printWalkthrough(`http://127.0.0.1:${port}`)}\n`
    const out = await new Promise<string>((resolve, reject) => {
      execFile('bash', ['-c', script], { timeout: 20_000 }, (error, stdout, stderr) => {
        if (error) reject(new Error(`walkthrough failed: ${error.message}\n${stdout}\n${stderr}`))
        else resolve(stdout)
      })
    })
    expect(out).toMatch(/"accountType":"registered","balance":350/)
    expect(out).toMatch(/"businessDay":true/)
    expect(out).toMatch(/X-Credits-Cost: 2/i)
    expect(out).toMatch(/X-Credits-Remaining: 348/i)
    expect(out).toMatch(/"price":10\.4505835/)
    expect(out).toMatch(/"valueAtRisk":32000/)
    expect(out).toMatch(/"error":"bad_parameters"/)
    expect(out).toMatch(/"credited":500/)
    expect(out).toMatch(/"kind":"charge","amount":-5/)
    expect(out).toMatch(/"refunds": 1/)
    const accountId = /"accountId":"(user-[0-9a-f-]+)"/.exec(out)?.[1]
    expect(accountId).toBeDefined()
    expect(await settled(demo, accountId!)).toBe(350 - 2 - 5 + 500)
  })
})

describe('the demo API on a real redis-server', () => {
  let redis: Redis
  let demo: Demo
  beforeAll(() => {
    redis = realRedis()
    demo = createApp({ redis, webhookSecret: 'whsec_test' })
  })
  afterAll(async () => {
    await redis.quit()
  })

  it('prices each tier and returns the known results', async () => {
    const { token, accountId } = await register(demo)
    const auth = { authorization: `Bearer ${token}` }
    const cases: [string, number, (data: Record<string, unknown>) => void][] = [
      [
        '/quantlib/calendar/business-day?date=2026-11-28',
        0,
        (d) => {
          expect(d['businessDay']).toBe(false)
        },
      ],
      [
        '/quantlib/stats/summary?values=2,4,4,4,5,5,7,9',
        1,
        (d) => {
          expect(d).toEqual({ mean: 5, stdDev: Math.sqrt(32 / 7), count: 8 })
        },
      ],
      [
        '/quantlib/options/black-scholes?spot=100&strike=100&rate=0.05&volatility=0.2&years=1&kind=put',
        2,
        (d) => {
          expect(d['price']).toBeCloseTo(5.573526022256971, 10)
        },
      ],
      [
        `/quantlib/risk/var?confidence=0.95&position=1000000&returns=${[...Array.from({ length: 10 }, (_, i) => -(10 - i) / 100), ...Array<number>(90).fill(0.01)].join(',')}`,
        5,
        (d) => {
          expect(d['valueAtRisk']).toBeCloseTo(50_000, 6)
        },
      ],
    ]
    let expected = 350
    for (const [path, cost, check] of cases) {
      const res = await request(demo.app).get(path).set(auth).expect(200)
      expect(res.headers['x-credits-cost']).toBe(String(cost))
      check(res.body.data)
      expected -= cost
      expect(await settled(demo, accountId)).toBe(expected)
    }
  })

  it('answers 400 for bad parameters and charges nothing', async () => {
    const { token, accountId } = await register(demo)
    const auth = { authorization: `Bearer ${token}` }
    for (const path of [
      '/quantlib/stats/summary?values=1,abc',
      '/quantlib/options/black-scholes?spot=100&strike=100&rate=0.05&volatility=0&years=1',
      '/quantlib/risk/var?returns=0.1,0.2&confidence=0.95',
      '/quantlib/calendar/business-day?date=2026-02-30',
    ]) {
      const res = await request(demo.app).get(path).set(auth).expect(400)
      expect(res.body).toMatchObject({ success: false, error: 'bad_parameters' })
    }
    expect(await settled(demo, accountId)).toBe(350)
  })

  it('credits one payment event once, however many times it is delivered', async () => {
    const { accountId } = await register(demo)
    const payload = JSON.stringify({
      id: `evt_${accountId.slice(5, 20)}`,
      type: 'checkout.completed',
      data: { accountId, pack: 'pack_1000' },
    })
    const deliveries = await Promise.all(
      Array.from({ length: 5 }, () =>
        request(demo.app)
          .post('/billing/webhook')
          .set('content-type', 'application/json')
          .set('x-quant-signature', signWebhook(payload, 'whsec_test'))
          .send(payload),
      ),
    )
    expect(deliveries.map((r) => r.status)).toEqual([200, 200, 200, 200, 200])
    expect(deliveries.filter((r) => r.body.data.replayed === false)).toHaveLength(1)
    expect((await demo.ledger.balance(accountId)).balance).toBe(1350)
  })

  it('credits nothing for a bad or stale signature', async () => {
    const { accountId } = await register(demo)
    const payload = JSON.stringify({
      id: 'evt_forged_123',
      type: 'checkout.completed',
      data: { accountId, pack: 'pack_5000' },
    })
    const stale = Math.floor(Date.now() / 1000) - 3600
    for (const signature of [
      signWebhook(payload, 'wrong-secret'),
      signWebhook(payload, 'whsec_test', stale),
      signWebhook(payload.replace('pack_5000', 'pack_200'), 'whsec_test'),
      'garbage',
      undefined,
    ]) {
      const req = request(demo.app).post('/billing/webhook').set('content-type', 'application/json')
      if (signature !== undefined) void req.set('x-quant-signature', signature)
      const res = await req.send(payload)
      expect(res.status).toBe(400)
    }
    expect((await demo.ledger.balance(accountId)).balance).toBe(350)
  })

  it('refuses a guest a top-up, by checkout and by webhook, and keeps its 50 credits', async () => {
    const guest = (await request(demo.app).post('/auth/guest').expect(201)).body.data
    const auth = { authorization: `Bearer ${guest.token}` }
    const checkout = await request(demo.app)
      .post('/billing/checkout')
      .set(auth)
      .send({ pack: 'pack_500' })
    expect(checkout.status).toBe(403)
    expect(checkout.body.error).toBe('topup_not_allowed')
    const payload = JSON.stringify({
      id: `evt_guest_${guest.accountId.slice(6, 20)}`,
      type: 'checkout.completed',
      data: { accountId: guest.accountId, pack: 'pack_200' },
    })
    const hook = await request(demo.app)
      .post('/billing/webhook')
      .set('content-type', 'application/json')
      .set('x-quant-signature', signWebhook(payload, 'whsec_test'))
      .send(payload)
    expect(hook.status).toBe(409)
    const sub = await request(demo.app).post('/billing/subscribe').set(auth).send({ plan: 'basic' })
    expect(sub.status).toBe(403)
    expect((await demo.ledger.balance(guest.accountId)).balance).toBe(50)
  })

  it('subscribes to a plan, grants its monthly credits, and cancels', async () => {
    const { token, accountId } = await register(demo)
    const auth = { authorization: `Bearer ${token}` }
    await request(demo.app)
      .post('/billing/subscribe')
      .set(auth)
      .set('idempotency-key', `sub-${accountId}`)
      .send({ plan: 'standard' })
      .expect(200)
    await request(demo.app)
      .post('/billing/subscribe')
      .set(auth)
      .set('idempotency-key', `sub-${accountId}`)
      .send({ plan: 'standard' })
      .expect(200)
    const credits = await request(demo.app).get('/user/credits').set(auth).expect(200)
    expect(credits.body.data.balance).toBe(350 + 2500)
    expect(credits.body.data.subscription.plan).toBe('standard')
    await request(demo.app).post('/billing/cancel').set(auth).expect(200)
    const after = await request(demo.app).get('/user/credits').set(auth).expect(200)
    expect(after.body.data.subscription.endsAt).not.toBeNull()
  })

  it('logs in with the registered password and refuses a wrong one', async () => {
    const email = `login${Math.random().toString(36).slice(2)}@example.com`
    await request(demo.app)
      .post('/auth/register')
      .send({ email, password: 'correct horse' })
      .expect(201)
    await request(demo.app)
      .post('/auth/register')
      .send({ email, password: 'correct horse' })
      .expect(409)
    const ok = await request(demo.app)
      .post('/auth/login')
      .send({ email, password: 'correct horse' })
      .expect(200)
    await request(demo.app)
      .get('/user/profile')
      .set('authorization', `Bearer ${ok.body.data.token}`)
      .expect(200)
    await request(demo.app)
      .post('/auth/login')
      .send({ email, password: 'wrong horse!' })
      .expect(401)
  })
})

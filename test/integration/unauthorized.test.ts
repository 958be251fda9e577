import express from 'express'
import request from 'supertest'

import { createCreditGate, creditRoutes, type IdentifyFunction } from '../../src/index'
import { makeLedger } from '../helpers/redis'

/**
 * The gate and the caller's routes answer a bad credential the same way: 401 with a
 * WWW-Authenticate header Node can send, whatever the rejection says and whatever account id
 * the credential names.
 */
describe('401 answers of the gate and of creditRoutes', () => {
  const { ledger, redis } = makeLedger('redis')
  afterAll(async () => {
    await redis.quit()
  })

  function appWith(identify: IdentifyFunction) {
    const app = express()
    app.use('/me', creditRoutes({ ledger, identify }))
    app.get('/paid', createCreditGate({ ledger, identify })('basic'), (_req, res) => {
      res.json({ ok: true })
    })
    return app
  }

  it.each([
    ['non-ASCII', 'clé révoquée — 拒否'],
    ['quotes and backslashes', 'bad "token" \\ here'],
    ['a line break', 'first line\r\nSet-Cookie: x=1'],
  ])('answers 401, not 500, to a rejection whose description has %s', async (_, description) => {
    const app = appWith(() => ({ rejected: true, error: 'invalid_token', description }))
    for (const path of ['/paid', '/me/credits']) {
      const res = await request(app).get(path)
      expect(res.status).toBe(401)
      expect(res.headers['www-authenticate']).toMatch(
        /^Bearer error="invalid_token", error_description="[\x20-\x7e]*"$/,
      )
      expect(res.headers['set-cookie']).toBeUndefined()
    }
  })

  it.each([
    ['an empty id', ''],
    ['a control character', 'a\u0000b'],
    ['257 characters', 'x'.repeat(257)],
  ])('answers 401 to a credential naming %s as the account', async (_, accountId) => {
    const app = appWith(() => accountId)
    for (const path of ['/paid', '/me/credits']) {
      const res = await request(app).get(path)
      expect(res.status).toBe(401)
      expect(res.body).toMatchObject({ success: false, error: 'unauthorized' })
    }
  })

  it('refuses a challenge Node could not send as a header, at construction, in both', () => {
    const identify = Object.assign(() => null, { challenge: 'Bearer realm="café"' })
    expect(() => createCreditGate({ ledger, identify })).toThrow(/challenge/)
    expect(() => creditRoutes({ ledger, identify })).toThrow(/challenge/)
  })
})

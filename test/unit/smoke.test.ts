import { BACKENDS, makeLedger } from '../helpers/redis'

describe.each(BACKENDS)('ledger smoke on %s', (backend) => {
  it('opens an account with 350 credits', async () => {
    const { ledger, redis } = makeLedger(backend)
    await ledger.openAccount('u1', { type: 'registered' })
    expect((await ledger.balance('u1')).balance).toBe(350)
    await redis.quit()
  })
})

'use strict'
// The built CJS bundle, loaded by package name through the exports map, runs its inlined Lua.
const assert = require('node:assert/strict')
const RedisMock = require('ioredis-mock')
const { RedisLedger, isCreditError } = require('creditgate')

async function main() {
  const redis = new RedisMock()
  const ledger = new RedisLedger({ redis })
  await ledger.openAccount('cjs', { type: 'registered' })
  const hold = await ledger.reserve('cjs', 0.5, { endpoint: '/smoke' })
  assert.equal(hold.status, 'held')
  await ledger.commit(hold.holdId)
  assert.equal((await ledger.balance('cjs')).balance, 349.5)
  await ledger.reserve('cjs', 'NaN', { endpoint: '/smoke' }).then(
    () => assert.fail('NaN accepted'),
    (error) => assert.ok(isCreditError(error)),
  )
  redis.disconnect()
  console.log('package (require): ok')
}
main().catch((error) => {
  console.error(error)
  process.exit(1)
})

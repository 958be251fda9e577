// The built ESM bundle, imported by package name through the exports map, runs its inlined Lua.
import assert from 'node:assert/strict'
import RedisMock from 'ioredis-mock'
import { RedisLedger, CreditArgumentError } from 'creditgate'

const redis = new RedisMock()
const ledger = new RedisLedger({ redis })
await ledger.openAccount('esm', { type: 'guest' })
const hold = await ledger.reserve('esm', 2, { endpoint: '/smoke' })
assert.equal(hold.status, 'held')
await ledger.release(hold.holdId)
assert.equal((await ledger.balance('esm')).balance, 50)
await assert.rejects(ledger.balance(''), CreditArgumentError)
redis.disconnect()
console.log('package (import): ok')

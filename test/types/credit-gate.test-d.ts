// Compile-only checks (tsc -p tsconfig.test.json; jest does not run this file). Each
// `@ts-expect-error` line must fail to compile: if it ever compiles, tsc reports the directive
// as unused and the type check fails.
import type { IncomingMessage } from 'node:http'

import express, { type Request } from 'express'

import {
  createCreditGate,
  getCredits,
  type ChargedEvent,
  type CreditGate,
  type CreditInfo,
  type CreditLedger,
  type DefaultTierName,
  type RefundedEvent,
} from '../../src/index'

declare const ledger: CreditLedger
const identify = (req: IncomingMessage) => req.headers['x-account'] as string | undefined

// Default tiers: the union is exactly the DESIGN tiers.
const creditGate = createCreditGate({ ledger, identify })
type TierOf<G> = G extends CreditGate<infer T> ? T : never
export const defaultUnion: [TierOf<typeof creditGate>] extends [DefaultTierName]
  ? [DefaultTierName] extends [TierOf<typeof creditGate>]
    ? true
    : false
  : false = true
creditGate('free')
creditGate('basic')
creditGate('standard')
creditGate('pro')
// @ts-expect-error: 'typo' is not a tier
creditGate('typo')
// @ts-expect-error: tier names are case-sensitive
creditGate('Pro')

// Host tiers replace the defaults, and become the union.
const hostGate = createCreditGate({ ledger, identify, tiers: { lite: 0.5, heavy: 10 } })
hostGate('lite')
hostGate('heavy')
// @ts-expect-error: host tiers replace the defaults
hostGate('pro')

// tierAccess names tiers of the same gate, without widening the union.
createCreditGate({ ledger, identify, tierAccess: { guest: ['free'] } })('pro')
createCreditGate({ ledger, identify, tiers: { a: 1, b: 2 }, tierAccess: { guest: ['a'] } })
// @ts-expect-error: 'c' is not one of the gate's tiers
createCreditGate({ ledger, identify, tiers: { a: 1, b: 2 }, tierAccess: { guest: ['c'] } })

// Options are typed.
// @ts-expect-error: failOpen is a boolean
createCreditGate({ ledger, identify, failOpen: 'yes' })
// @ts-expect-error: tier prices are numbers
createCreditGate({ ledger, identify, tiers: { a: '1' } })
// @ts-expect-error: chargeWhen takes a status code
createCreditGate({ ledger, identify, chargeWhen: (status: string) => status === '200' })
// @ts-expect-error: ledger is required
createCreditGate({ identify })
// @ts-expect-error: unknown options are refused
createCreditGate({ ledger, identify, failopen: true })

// Route options are typed, and a pricing function may be typed by the host's request.
creditGate('basic', { cost: 2.5 })
creditGate('basic', { cost: (req) => String(req.headers['x-items']) })
creditGate<Request>('basic', { cost: (req) => (req.body as { items: unknown[] }).items.length })
// @ts-expect-error: a fixed cost is a number
creditGate('basic', { cost: '2' })
// @ts-expect-error: unknown route option
creditGate('basic', { costs: 2 })

// The middleware mounts on Express routes and routers as it is.
const app = express()
app.get('/var', creditGate('pro'), (req, res) => {
  const info: CreditInfo | undefined = getCredits(req)
  info?.setCost(1)
  // @ts-expect-error: the info is read-only
  if (info) info.cost = 0
  res.json({ remaining: info?.remaining })
})
express.Router().post('/batch', creditGate('basic', { endpoint: '/batch' }))
app.use(creditGate('free'))

// Events are typed by name.
creditGate.on('charged', (event: ChargedEvent) => event.charged.toFixed(3))
creditGate.once(
  'refunded',
  (event: RefundedEvent) => event.reason satisfies 'status' | 'aborted' | 'error' | 'expired',
)
creditGate.on(
  'lowBalance',
  ({ accountId, available, threshold }) => `${accountId} ${available} < ${threshold}`,
)
// @ts-expect-error: no such event
creditGate.on('charge', () => undefined)
/* eslint-disable @typescript-eslint/no-unsafe-return -- the line is meant not to compile */
// @ts-expect-error: a charged event has no reason
creditGate.on('charged', (event) => event.reason)
/* eslint-enable @typescript-eslint/no-unsafe-return */

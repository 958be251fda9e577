import type { Redis } from 'ioredis'

import {
  CreditConfigError,
  DEFAULT_TIERS,
  createCreditGate,
  type CreditGateOptions,
  type CreditLedger,
} from '../../src/index'
import { makeLedger } from '../helpers/redis'

const clients: Redis[] = []
afterAll(async () => {
  await Promise.all(clients.map((c) => c.quit()))
})

function ledger() {
  const made = makeLedger('mock')
  clients.push(made.redis)
  return made.ledger
}

const identify = () => null

/** A ledger that only has the three methods the gate needs. */
const bare: CreditLedger = {
  reserve: () => Promise.reject(new Error('unused')),
  commit: () => Promise.reject(new Error('unused')),
  release: () => Promise.reject(new Error('unused')),
}

/** Calls createCreditGate with options a plain-JavaScript caller could pass. */
function create(options: Record<string, unknown>) {
  return createCreditGate({ ledger: ledger(), identify, ...options })
}

function configError(fn: () => unknown): CreditConfigError {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(CreditConfigError)
    return error as CreditConfigError
  }
  throw new Error('expected a CreditConfigError, nothing was thrown')
}

describe('createCreditGate options', () => {
  it('has the DESIGN default tiers: free 0, basic 1, standard 2, pro 5', () => {
    expect(DEFAULT_TIERS).toEqual({ free: 0, basic: 1, standard: 2, pro: 5 })
    expect(create({}).tiers).toEqual(DEFAULT_TIERS)
  })

  it('lets host tiers replace the defaults, fractional prices included', () => {
    const gate = create({ tiers: { lite: 0.25, heavy: 10 } })
    expect(gate.tiers).toEqual({ lite: 0.25, heavy: 10 })
    expect(configError(() => gate('pro')).code).toBe('ERR_CREDIT_UNKNOWN_TIER')
  })

  it('treats undefined options as omitted', () => {
    expect(() =>
      create({
        tiers: undefined,
        failOpen: undefined,
        openAccounts: undefined,
        lowBalanceThreshold: undefined,
      }),
    ).not.toThrow()
  })

  it('refuses an unknown option with a "did you mean" hint', () => {
    const error = configError(() => create({ failopen: true }))
    expect(error.code).toBe('ERR_CREDIT_INVALID_OPTION')
    expect(error.message).toContain('did you mean "failOpen"?')
  })

  it.each([
    ['no options at all', undefined],
    ['no ledger', { identify }],
    ['a ledger without commit', { ledger: { reserve: () => null, release: () => null }, identify }],
    ['a ledger that is not one', { ledger: 'redis', identify }],
    ['no identify', { ledger: bare }],
    ['an identify that is not a function', { ledger: bare, identify: 'jwt' }],
  ])('refuses %s', (_what, options) => {
    const error = configError(() => createCreditGate(options as unknown as CreditGateOptions))
    expect(error.code).toBe('ERR_CREDIT_INVALID_OPTION')
  })

  it.each([
    ['a negative price', { bad: -1 }],
    ['more than 3 decimals', { bad: 0.0001 }],
    ['NaN', { bad: Number.NaN }],
    ['Infinity', { bad: Number.POSITIVE_INFINITY }],
    ['a non-number', { bad: true }],
    ['no tier at all', {}],
    ['a non-object', ['basic']],
  ])('refuses tiers with %s', (_what, tiers) => {
    expect(configError(() => create({ tiers })).code).toBe('ERR_CREDIT_INVALID_OPTION')
  })

  it.each([
    ['chargeWhen', 'yes'],
    ['failOpen', 'true'],
    ['retryAfterSeconds', -1],
    ['retryAfterSeconds', 1.5],
    ['ledgerTimeoutMs', 0],
    ['ledgerTimeoutMs', 2 ** 31],
    ['holdMs', 0],
    ['lowBalanceThreshold', -5],
    ['lowBalanceThreshold', '10 credits'],
    ['openAccounts', true],
    ['openAccounts', 'gust'],
    ['tierAccess', ['guest']],
    ['tierAccess', { guest: 'free' }],
  ])('refuses %s: %p', (option, value) => {
    const error = configError(() => create({ [option]: value }))
    expect(error.code).toBe('ERR_CREDIT_INVALID_OPTION')
    expect(error.message).toContain(option)
  })

  it('hints at the account type the ledger knows when openAccounts or tierAccess names another', () => {
    expect(configError(() => create({ openAccounts: 'gust' })).message).toContain(
      'did you mean "guest"?',
    )
    expect(configError(() => create({ tierAccess: { registerd: ['free'] } })).message).toContain(
      'did you mean "registered"?',
    )
  })

  it('refuses tierAccess naming an unknown tier, with a hint', () => {
    const error = configError(() => create({ tierAccess: { guest: ['fre'] } }))
    expect(error.code).toBe('ERR_CREDIT_UNKNOWN_TIER')
    expect(error.message).toContain('did you mean "free"?')
  })

  it('refuses a tier restriction when the ledger cannot list its account types', () => {
    expect(() => createCreditGate({ ledger: bare, identify })).not.toThrow()
    expect(
      configError(() =>
        createCreditGate({ ledger: bare, identify, tierAccess: { guest: ['free'] } }),
      ).message,
    ).toContain('accountTypes')
  })

  it('refuses an identify challenge that cannot be a header', () => {
    const bad = Object.assign(() => null, { challenge: 'Bearer\r\nX-Evil: 1' })
    expect(configError(() => create({ identify: bad })).message).toContain('challenge')
  })

  it('returns a gate whose on/once/off are chainable and whose surface is frozen', () => {
    const gate = create({})
    const listener = jest.fn()
    expect(gate.on('charged', listener).off('charged', listener).once('refunded', listener)).toBe(
      gate,
    )
    expect(Object.isFrozen(gate)).toBe(true)
  })
})

describe('creditGate(tier, routeOptions) at route definition', () => {
  it('throws ERR_CREDIT_UNKNOWN_TIER with a hint for a misspelt tier (plain JavaScript)', () => {
    const gate = create({})
    const error = configError(() => (gate as (tier: string) => unknown)('por'))
    expect(error.code).toBe('ERR_CREDIT_UNKNOWN_TIER')
    expect(error.message).toContain('did you mean "pro"?')
  })

  it.each([
    ['an unknown route option', { costs: 1 }, 'did you mean "cost"?'],
    ['a negative cost', { cost: -1 }, 'cost'],
    ['a cost with 4 decimals', { cost: 1.0001 }, 'cost'],
    ['an endpoint with "|"', { endpoint: 'a|b' }, 'endpoint'],
    ['an empty endpoint', { endpoint: '' }, 'endpoint'],
    ['an endpoint over 512 bytes', { endpoint: 'é'.repeat(257) }, 'endpoint'],
  ])('throws ERR_CREDIT_INVALID_OPTION for %s', (_what, routeOptions, text) => {
    const gate = create({})
    const error = configError(() => gate('basic', routeOptions as never))
    expect(error.code).toBe('ERR_CREDIT_INVALID_OPTION')
    expect(error.message).toContain(text)
  })

  it('accepts a fixed cost, a pricing function and an endpoint', () => {
    const gate = create({})
    expect(typeof gate('basic', { cost: 2.5, endpoint: '/batch' })).toBe('function')
    expect(typeof gate('basic', { cost: () => 3 })).toBe('function')
  })
})

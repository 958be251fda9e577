import { IncomingMessage } from 'node:http'
import { Socket } from 'node:net'

import { CreditConfigError } from '../../../src/errors'
import {
  fromApiKey,
  type ApiKeyIdentityOptions,
  type ApiKeyLookupResult,
  type Identity,
} from '../../../src/identity'

const KEYS = new Map<string, ApiKeyLookupResult>([
  ['k-alice', 'alice'],
  ['k-bob', { accountId: 'bob', accountType: 'registered', claims: { scope: 'read' } }],
  ['k-revoked', { rejected: true, error: 'invalid_token', description: 'API key revoked' }],
])

function request(headers: Record<string, string | string[]> = {}): IncomingMessage {
  const req = new IncomingMessage(new Socket())
  Object.assign(req.headers, headers)
  return req
}

describe('fromApiKey', () => {
  const identify = fromApiKey({ lookup: (key) => KEYS.get(key) })

  it('returns null when the request has no X-API-Key header', () => {
    expect(identify(request())).toBeNull()
  })

  it('turns an account id from the lookup into an identity', () => {
    expect(identify(request({ 'x-api-key': 'k-alice' }))).toEqual({ accountId: 'alice' })
  })

  it('passes an identity from the lookup through unchanged', () => {
    expect(identify(request({ 'x-api-key': 'k-bob' }))).toBe(KEYS.get('k-bob'))
  })

  it('passes a rejection from the lookup through unchanged', () => {
    expect(identify(request({ 'x-api-key': 'k-revoked' }))).toBe(KEYS.get('k-revoked'))
  })

  it.each([
    ['null', null],
    ['undefined', undefined],
  ])('rejects a key the lookup answers %s for as an unknown invalid_token', (_name, answer) => {
    const unknown = fromApiKey({ lookup: () => answer })
    expect(unknown(request({ 'x-api-key': 'k-nobody' }))).toEqual({
      rejected: true,
      error: 'invalid_token',
      description: 'unknown API key',
    })
  })

  it.each([
    ['an empty key', ''],
    ['a key longer than 1024 characters', 'k'.repeat(1025)],
    ['a key with a control character', 'k-alice\u0000'],
    ['a key with a tab', 'k-\talice'],
    ['a key sent twice as an array', ['k-alice', 'k-bob']],
  ])('rejects %s as invalid_request without calling the lookup', (_name, key) => {
    const lookup = jest.fn(() => 'alice')
    const result = fromApiKey({ lookup })(request({ 'x-api-key': key }))
    expect(result).toEqual({
      rejected: true,
      error: 'invalid_request',
      description: 'X-API-Key must be 1 to 1024 characters without control characters',
    })
    expect(lookup).not.toHaveBeenCalled()
  })

  it('accepts a key of exactly 1024 characters', () => {
    const key = 'k'.repeat(1024)
    const lookup = jest.fn((k: string) => (k === key ? 'alice' : null))
    expect(fromApiKey({ lookup })(request({ 'x-api-key': key }))).toEqual({ accountId: 'alice' })
  })

  it('answers synchronously when the lookup is synchronous', () => {
    expect(identify(request({ 'x-api-key': 'k-alice' }))).not.toBeInstanceOf(Promise)
  })

  it('answers with a promise when the lookup is asynchronous', async () => {
    const lookup = (key: string) => Promise.resolve(KEYS.get(key))
    const result = fromApiKey({ lookup })(request({ 'x-api-key': 'k-alice' }))
    expect(result).toBeInstanceOf(Promise)
    await expect(result).resolves.toEqual({ accountId: 'alice' })
    await expect(fromApiKey({ lookup })(request({ 'x-api-key': 'nope' }))).resolves.toEqual({
      rejected: true,
      error: 'invalid_token',
      description: 'unknown API key',
    })
  })

  it('lets an error thrown by the lookup propagate', () => {
    const failure = new Error('database down')
    const failing = fromApiKey({
      lookup: () => {
        throw failure
      },
    })
    expect(() => failing(request({ 'x-api-key': 'k-alice' }))).toThrow(failure)
  })

  it('lets a rejection of an asynchronous lookup propagate', async () => {
    const failure = new Error('database down')
    const failing = fromApiKey({ lookup: () => Promise.reject(failure) })
    await expect(failing(request({ 'x-api-key': 'k-alice' }))).rejects.toBe(failure)
  })

  it.each([
    ['an empty account id', ''],
    ['a number', 42],
    ['an object without accountId', { id: 'alice' }],
  ])('throws when the lookup returns %s', (_name, answer) => {
    const broken = fromApiKey({ lookup: () => answer as unknown as Identity })
    expect(() => broken(request({ 'x-api-key': 'k-alice' }))).toThrow(CreditConfigError)
  })

  it('reads the header named by the header option, in any case', () => {
    const custom = fromApiKey({ header: 'X-Client-Key', lookup: (key) => KEYS.get(key) })
    expect(custom(request({ 'x-client-key': 'k-alice' }))).toEqual({ accountId: 'alice' })
    expect(custom(request({ 'x-api-key': 'k-alice' }))).toBeNull()
    expect(custom.challenge).toBe('ApiKey header="X-Client-Key"')
  })

  it('offers an ApiKey challenge naming the header', () => {
    expect(identify.challenge).toBe('ApiKey header="X-API-Key"')
  })
})

describe('fromApiKey: options', () => {
  function configError(options: unknown): CreditConfigError {
    try {
      fromApiKey(options as ApiKeyIdentityOptions)
    } catch (error) {
      expect(error).toBeInstanceOf(CreditConfigError)
      expect((error as CreditConfigError).code).toBe('ERR_CREDIT_INVALID_OPTION')
      return error as CreditConfigError
    }
    throw new Error('fromApiKey did not throw')
  }

  it('refuses an unknown option with a did-you-mean hint', () => {
    expect(configError({ lookup: () => null, heder: 'X-Key' }).message).toMatch(
      'fromApiKey has no option "heder"; did you mean "header"?',
    )
  })

  it.each([
    ['missing', undefined],
    ['not a function', 'keys.json'],
  ])('refuses lookup when %s', (_name, lookup) => {
    expect(configError({ lookup }).message).toMatch(/fromApiKey needs `lookup`/)
  })

  it.each([[''], ['X API Key'], ['X-Key:'], [42]])('refuses header %p', (header) => {
    expect(configError({ header, lookup: () => null }).message).toMatch(
      /fromApiKey header must be an HTTP header name/,
    )
  })
})

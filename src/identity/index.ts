export {
  fromJwt,
  type JwtAlgorithm,
  type JwtIdentifyFunction,
  type JwtIdentityOptions,
} from './jwt.js'
export {
  fromApiKey,
  type ApiKeyIdentifyFunction,
  type ApiKeyIdentityOptions,
  type ApiKeyLookup,
  type ApiKeyLookupResult,
} from './api-key.js'
export type { Identity, IdentityRejection, IdentifyResult, IdentifyFunction } from './types.js'

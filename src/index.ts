export { toMilli, fromMilli, MAX_MILLI } from './amount.js'
export {
  CreditError,
  CreditConfigError,
  CreditArgumentError,
  CreditRuleError,
  InsufficientCreditsError,
  CreditStoreError,
  isCreditError,
  type CreditErrorCode,
  type CreditErrorOptions,
} from './errors.js'
export { RedisLedger, type RedisLedgerOptions } from './ledger/redis-ledger.js'
export {
  DEFAULT_ACCOUNT_TYPES,
  type AccountTypeConfig,
  type BalanceResult,
  type CommitOptions,
  type ReleaseOptions,
  type CreditBucket,
  type CreditLedger,
  type GrantResult,
  type HoldForbidden,
  type HoldGranted,
  type HoldInsufficient,
  type HoldNoAccount,
  type HoldOutcome,
  type OpenAccountResult,
  type ReserveOptions,
  type ReserveResult,
  type SettleResult,
} from './ledger/types.js'

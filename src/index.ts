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
export type {
  CheckOptions,
  RedisCheckCode,
  RedisCheckProblem,
  RedisCheckReport,
  SweepOptions,
  SweepResult,
} from './ledger/maintenance.js'
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
export { createCreditGate, type CreditGate, type CreditGateMiddleware } from './credit-gate.js'
export {
  DEFAULT_TIERS,
  type CreditGateOptions,
  type DefaultTierName,
  type OpenAccountsFunction,
  type RouteOptions,
} from './credit-gate-options.js'
export type {
  CallEvent,
  ChargedEvent,
  CreditGateEvents,
  CreditGateListener,
  ForbiddenEvent,
  InsufficientEvent,
  LedgerErrorEvent,
  LedgerPhase,
  LowBalanceEvent,
  RefundReason,
  RefundedEvent,
  UnmeteredEvent,
} from './credit-gate-events.js'
export { getCredits, type CreditInfo } from './request-state.js'
export {
  fromJwt,
  fromApiKey,
  type JwtAlgorithm,
  type JwtIdentityOptions,
  type JwtIdentifyFunction,
  type ApiKeyIdentityOptions,
  type ApiKeyLookup,
  type ApiKeyLookupResult,
  type ApiKeyIdentifyFunction,
  type Identity,
  type IdentityRejection,
  type IdentifyResult,
  type IdentifyFunction,
} from './identity/index.js'
export type {
  AuditBreak,
  AuditReport,
  EndSubscriptionOptions,
  EndSubscriptionResult,
  RecordUsageOptions,
  RecordUsageResult,
  SubscribeOptions,
  SubscribeResult,
  SubscribeStatus,
  SubscriptionInfo,
  Transaction,
  TransactionKind,
  TransactionsOptions,
  TransactionsPage,
  UsageCounters,
  UsageEndpoint,
  UsageGranularity,
  UsageOptions,
  UsagePoint,
  UsageReport,
  UsageRetention,
} from './ledger/lifecycle-types.js'
export { MAX_MONTHLY_CREDITS } from './ledger/subscriptions.js'
export { DEFAULT_TRANSACTIONS_LIMIT, MAX_TRANSACTIONS_LIMIT } from './ledger/history.js'
export { DEFAULT_USAGE_RETENTION, MAX_USAGE_PERIODS } from './ledger/usage.js'
export {
  creditRoutes,
  type CreditRouteHandler,
  type CreditRoutesLedger,
  type CreditRoutesOptions,
  type RouterLike,
  type RoutesNextFunction,
} from './routes.js'

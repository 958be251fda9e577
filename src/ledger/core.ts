import type { CreditRuleError } from '../errors.js'
import type { ScriptRunner } from '../lua/run-script.js'
import type { ScriptDef } from '../lua/scripts.js'
import type { Reply } from './replies.js'

/** Usage retention in ms, every granularity set. */
export interface ResolvedUsageRetention {
  readonly hour: number
  readonly day: number
  readonly month: number
}

/**
 * What the ledger's operations share: the runner, the settings and the helpers of
 * {@link RedisLedger}. Internal: the operations that live in their own modules
 * (subscriptions, history, usage) take it instead of reaching into the class.
 */
export interface LedgerCore {
  readonly prefix: string
  readonly runner: ScriptRunner
  readonly doneTtlMs: number
  readonly historyLimit: number
  readonly usageRetention: ResolvedUsageRetention
  /** The injected clock as an ARGV (`''` for Redis TIME). */
  now(): string
  /** Runs an account script with the account's keys; throws on an `INVALID` reply. */
  run(def: ScriptDef, accountId: string, args: readonly (string | number)[]): Promise<Reply>
  noAccount(accountId: string): CreditRuleError
  conflict(idempotencyKey: string): CreditRuleError
}

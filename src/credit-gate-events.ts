import { EventEmitter } from 'node:events'

/** What every per-call event tells. */
export interface CallEvent {
  readonly accountId: string
  /** The account type, when known (from the ledger, else from the identity). */
  readonly accountType: string | undefined
  readonly tier: string
  /** The route pattern paid for (`/quantlib/risk/var`), never the raw URL. */
  readonly endpoint: string
}

/** A call was charged: the handler's response finished with a charged status. */
export interface ChargedEvent extends CallEvent {
  readonly holdId: string
  /** Credits the call was priced at. */
  readonly cost: number
  /** Credits actually charged (0 for an unlimited account; less after `setCost`). */
  readonly charged: number
  /** The account's spendable credits after the charge. */
  readonly available: number
  /** Available plus pending, after the charge. */
  readonly balance: number
  readonly statusCode: number
  /** Milliseconds from the handler's start to the end of the response. */
  readonly latencyMs: number
}

/**
 * Why a hold was given back: `status`, the response finished with a status that is not charged;
 * `aborted`, the connection closed before the response finished, or its last write failed
 * (client abort, an error after the headers, a stream destroyed midway, a response ended on a
 * destroyed connection); `error`, the gate gave the call up (the reserve answered after
 * `ledgerTimeoutMs`, or `chargeWhen` threw); `expired`, the hold outlived its `holdMs` before
 * the commit reached the ledger, so nothing was charged.
 */
export type RefundReason = 'status' | 'aborted' | 'error' | 'expired'

/** A hold was given back in full: nothing was charged for this call. */
export interface RefundedEvent extends CallEvent {
  readonly holdId: string
  readonly reason: RefundReason
  /** The finished response's status; `null` when the response never finished. */
  readonly statusCode: number | null
  /** Credits given back. */
  readonly returned: number
  readonly available: number
  readonly balance: number
}

/** A call was answered 402. */
export interface InsufficientEvent extends CallEvent {
  readonly required: number
  readonly available: number
}

/** A call was answered 403: the account type may not call this tier. */
export type ForbiddenEvent = CallEvent

/** Which ledger call failed. `usage` is the after-response usage record of a free call. */
export type LedgerPhase = 'reserve' | 'commit' | 'release' | 'usage'

/** A ledger call failed or timed out. The library never logs: this event is how you hear of it. */
export interface LedgerErrorEvent extends CallEvent {
  /** A {@link CreditStoreError} for a timeout or an unreachable store; whatever the ledger threw otherwise. */
  readonly error: unknown
  readonly phase: LedgerPhase
  readonly holdId: string | undefined
  /** True when the gate will send the same commit or release again (it is idempotent by hold id). */
  readonly willRetry: boolean
}

/** With `failOpen`, a call ran without being metered because the ledger could not be reached. */
export interface UnmeteredEvent extends CallEvent {
  readonly error: unknown
}

/** A charge took the account's available credits from at least the threshold to below it. */
export interface LowBalanceEvent {
  readonly accountId: string
  readonly accountType: string | undefined
  readonly available: number
  readonly threshold: number
}

/** Every event a credit gate emits, by name. */
export interface CreditGateEvents {
  charged: ChargedEvent
  refunded: RefundedEvent
  insufficient: InsufficientEvent
  forbidden: ForbiddenEvent
  ledgerError: LedgerErrorEvent
  unmetered: UnmeteredEvent
  lowBalance: LowBalanceEvent
}

/** A listener of one event. */
export type CreditGateListener<E extends keyof CreditGateEvents> = (
  event: CreditGateEvents[E],
) => void

/**
 * A typed EventEmitter whose `emit` calls each listener in isolation: a listener that throws
 * cannot change a response, a settlement or the other listeners. Its error is thrown again on
 * the next tick, as an uncaught exception, so a listener bug is as loud as it would be anywhere
 * in Node (the library never logs, and swallowing it would hide it).
 */
export class GateEmitter {
  readonly #emitter = new EventEmitter()

  on<E extends keyof CreditGateEvents>(event: E, listener: CreditGateListener<E>): void {
    this.#emitter.on(event, listener)
  }

  once<E extends keyof CreditGateEvents>(event: E, listener: CreditGateListener<E>): void {
    this.#emitter.once(event, listener)
  }

  off<E extends keyof CreditGateEvents>(event: E, listener: CreditGateListener<E>): void {
    this.#emitter.off(event, listener)
  }

  /**
   * Whether `event` has a listener. The gate asks before it builds a payload, so that an event
   * nobody listens to costs no allocation.
   */
  listening(event: keyof CreditGateEvents): boolean {
    return this.#emitter.listenerCount(event) !== 0
  }

  /** Calls the listeners of `event` with `payload`. */
  emit<E extends keyof CreditGateEvents>(event: E, payload: CreditGateEvents[E]): void {
    // rawListeners is a copy that keeps `once` wrappers, which remove themselves when called.
    for (const listener of this.#emitter.rawListeners(event)) {
      try {
        Reflect.apply(listener, this.#emitter, [payload])
      } catch (error) {
        process.nextTick(() => {
          throw error
        })
      }
    }
  }
}

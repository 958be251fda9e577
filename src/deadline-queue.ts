/**
 * Something that waits in a {@link DeadlineQueue}. The queue links its entries through the
 * `wait*` fields, so that adding and removing one allocates nothing: only the queue sets them.
 */
export abstract class Waiter {
  /** When the wait started, on the queue's clock. */
  waitStartedAt = 0
  /** The entry added before this one and still waiting. */
  waitPrev: Waiter | undefined = undefined
  /** The entry added after this one and still waiting. */
  waitNext: Waiter | undefined = undefined

  /** Called once if the entry is still in the queue when its deadline passes. Should not throw. */
  abstract timedOut(): void
}

/** The clock and the timer a {@link DeadlineQueue} runs on. Tests pass their own. */
export interface DeadlineTimer {
  /** Milliseconds on a monotonic clock. */
  now(): number
  /** Calls `callback` once, `ms` milliseconds from now, without keeping the process alive. */
  start(callback: () => void, ms: number): void
}

/** `performance.now()` and an unref'd `setTimeout`. */
const SYSTEM_TIMER: DeadlineTimer = {
  now: () => performance.now(),
  start: (callback, ms) => {
    setTimeout(callback, ms).unref()
  },
}

/**
 * The deadlines of many waits of the same duration, on one timer: each gate bounds its reserves
 * with one queue instead of a `setTimeout` per request.
 *
 * Every entry waits `timeoutMs` from the moment it is added, so the order of insertion is the
 * order of the deadlines: the entries form a doubly linked list in that order, and its head is
 * always the next to expire. The timer is armed for the head only. When it fires, it expires
 * every entry whose deadline has passed, then is armed again for the new head, or stops when
 * the queue is empty. An entry answered in time is only unlinked, and the timer is left alone:
 * the common case (an answer well before the deadline) allocates nothing, and under steady
 * traffic the timer fires about once per `timeoutMs`.
 *
 * An entry never expires before its deadline, and at most about a millisecond after the timer
 * would have fired for it alone (a re-armed timer is rounded up to whole milliseconds).
 */
export class DeadlineQueue {
  readonly #timeoutMs: number
  readonly #timer: DeadlineTimer
  #head: Waiter | undefined
  #tail: Waiter | undefined
  /** Whether the timer is set (or firing): then a new entry needs no timer of its own. */
  #armed = false

  /**
   * @param timeoutMs - how long each entry waits, at least 1 ms
   * @param timer - the clock and timer; the system's by default
   */
  constructor(timeoutMs: number, timer: DeadlineTimer = SYSTEM_TIMER) {
    this.#timeoutMs = timeoutMs
    this.#timer = timer
  }

  /** Entries still waiting, counted along the list (for tests and diagnostics). */
  get size(): number {
    let count = 0
    for (let entry = this.#head; entry !== undefined; entry = entry.waitNext) count++
    return count
  }

  /**
   * Starts `entry`'s wait: its `timedOut()` is called in `timeoutMs` unless it is deleted first.
   * An entry must not be added again while it waits.
   */
  add(entry: Waiter): void {
    entry.waitStartedAt = this.#timer.now()
    entry.waitPrev = this.#tail
    entry.waitNext = undefined
    if (this.#tail === undefined) this.#head = entry
    else this.#tail.waitNext = entry
    this.#tail = entry
    if (!this.#armed) this.#arm(this.#timeoutMs)
  }

  /**
   * Ends `entry`'s wait.
   *
   * @returns true if it was waiting; false if it had timed out already (or was never added)
   */
  delete(entry: Waiter): boolean {
    if (entry.waitPrev === undefined && this.#head !== entry) return false
    const { waitPrev: prev, waitNext: next } = entry
    if (prev === undefined) this.#head = next
    else prev.waitNext = next
    if (next === undefined) this.#tail = prev
    else next.waitPrev = prev
    entry.waitPrev = undefined
    entry.waitNext = undefined
    return true
  }

  #arm(ms: number): void {
    this.#armed = true
    this.#timer.start(this.#fire, Math.ceil(ms))
  }

  readonly #fire = (): void => {
    // #armed stays true while the expired entries are told: an entry added meanwhile (by a
    // timedOut() that ends up reserving again) must not start a second timer; the loop sees it.
    const now = this.#timer.now()
    for (let entry = this.#head; entry !== undefined; entry = this.#head) {
      const left = entry.waitStartedAt + this.#timeoutMs - now
      if (left > 0) {
        this.#arm(left)
        return
      }
      this.delete(entry)
      try {
        entry.timedOut()
      } catch (error) {
        // One entry's failure must not keep the others waiting: surface it, as Node would.
        process.nextTick(() => {
          throw error
        })
      }
    }
    this.#armed = false
  }
}

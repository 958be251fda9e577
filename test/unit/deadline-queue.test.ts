import { DeadlineQueue, Waiter, type DeadlineTimer } from '../../src/deadline-queue'

/**
 * A clock and timer the test moves by hand: deadlines are checked at exact, chosen instants,
 * never by waiting. `early` makes each timer fire that many ms before it is due, as a Node
 * timer can when libuv's cached loop time lags the clock.
 */
class ManualTimer implements DeadlineTimer {
  time = 0
  readonly due: { at: number; callback: () => void }[] = []
  /** The most timers ever set at once. */
  mostAtOnce = 0

  constructor(readonly early = 0) {}

  now(): number {
    return this.time
  }

  start(callback: () => void, ms: number): void {
    // The lag of libuv's loop time is at most what has run since it was read: never a whole
    // timer's worth, and no lag at all for a timer set from a timer callback of 1 ms.
    const early = ms > this.early ? this.early : 0
    this.due.push({ at: this.time + ms - early, callback })
    this.mostAtOnce = Math.max(this.mostAtOnce, this.due.length)
  }

  /** Moves the clock to `to`, firing each timer due on the way at its own instant. */
  advanceTo(to: number): void {
    for (;;) {
      this.due.sort((a, b) => a.at - b.at)
      const next = this.due[0]
      if (next === undefined || next.at > to) break
      this.due.shift()
      this.time = Math.max(this.time, next.at)
      next.callback()
    }
    this.time = to
  }
}

class Entry extends Waiter {
  timedOutAt: number | undefined

  constructor(
    readonly timer: ManualTimer,
    readonly onTimeout: () => void = () => undefined,
  ) {
    super()
  }

  override timedOut(): void {
    this.timedOutAt = this.timer.time
    this.onTimeout()
  }
}

function setup(timeoutMs: number, early = 0) {
  const timer = new ManualTimer(early)
  const queue = new DeadlineQueue(timeoutMs, timer)
  /** Adds a new entry at the current instant. */
  const add = (onTimeout?: () => void): Entry => {
    const entry = new Entry(timer, onTimeout)
    queue.add(entry)
    return entry
  }
  return { timer, queue, add }
}

describe('DeadlineQueue', () => {
  it('times an entry out at its deadline, not a moment before', () => {
    const { timer, add } = setup(100)
    const entry = add()
    timer.advanceTo(99.9)
    expect(entry.timedOutAt).toBeUndefined()
    timer.advanceTo(100)
    expect(entry.timedOutAt).toBe(100)
  })

  it('times staggered entries out each at its own deadline, with one timer at a time', () => {
    const { timer, queue, add } = setup(100)
    const a = add()
    timer.advanceTo(30)
    const b = add()
    timer.advanceTo(60.5)
    const c = add()
    timer.advanceTo(129.9)
    expect([a.timedOutAt, b.timedOutAt, c.timedOutAt]).toEqual([100, undefined, undefined])
    timer.advanceTo(130)
    expect(b.timedOutAt).toBe(130)
    timer.advanceTo(160.4)
    expect(c.timedOutAt).toBeUndefined()
    timer.advanceTo(1000)
    // A re-armed timer is rounded up to a whole millisecond: never early, at most 1 ms late.
    expect(c.timedOutAt).toBeGreaterThanOrEqual(160.5)
    expect(c.timedOutAt).toBeLessThanOrEqual(161.5)
    expect(timer.mostAtOnce).toBe(1)
    expect(queue.size).toBe(0)
  })

  it('times out entries added at the same instant together, in the order they were added', () => {
    const { timer, add } = setup(50)
    const order: string[] = []
    add(() => order.push('a'))
    add(() => order.push('b'))
    add(() => order.push('c'))
    timer.advanceTo(50)
    expect(order).toEqual(['a', 'b', 'c'])
  })

  it('never times out an entry deleted in time, and delete tells whether it was still waiting', () => {
    const { timer, queue, add } = setup(100)
    const answered = add()
    const late = add()
    timer.advanceTo(40)
    expect(queue.delete(answered)).toBe(true)
    expect(queue.delete(answered)).toBe(false)
    timer.advanceTo(1000)
    expect(answered.timedOutAt).toBeUndefined()
    expect(late.timedOutAt).toBe(100)
    expect(queue.delete(late)).toBe(false)
  })

  it('deletes an entry from the middle or the end without disturbing the others', () => {
    const { timer, queue, add } = setup(100)
    const entries = [0, 10, 20, 30, 40].map((at) => {
      timer.advanceTo(at)
      return add()
    })
    expect(queue.delete(entries[2]!)).toBe(true)
    expect(queue.delete(entries[4]!)).toBe(true)
    expect(queue.size).toBe(3)
    timer.advanceTo(1000)
    expect(entries.map((e) => e.timedOutAt)).toEqual([100, 110, undefined, 130, undefined])
  })

  it('still times the next entry out at its own deadline after the first one was answered', () => {
    const { timer, queue, add } = setup(100)
    const first = add()
    timer.advanceTo(50)
    const second = add()
    timer.advanceTo(60)
    queue.delete(first)
    timer.advanceTo(149.9)
    expect(second.timedOutAt).toBeUndefined()
    timer.advanceTo(150)
    expect(second.timedOutAt).toBe(150)
  })

  it('lets its timer lapse once no entry is left, and starts one for the next entry', () => {
    const { timer, queue, add } = setup(100)
    queue.delete(add())
    timer.advanceTo(100) // the timer fires for an entry already answered, and is not set again
    expect(timer.due).toHaveLength(0)
    timer.advanceTo(150)
    const next = add()
    expect(timer.due).toHaveLength(1)
    timer.advanceTo(1000)
    expect(next.timedOutAt).toBe(250)
    expect(timer.due).toHaveLength(0)
  })

  it('does not time an entry out early when its timer fires before it is due', () => {
    const { timer, add } = setup(100, 1) // every timer fires 1 ms early
    const entry = add()
    timer.advanceTo(99.5)
    expect(entry.timedOutAt).toBeUndefined()
    timer.advanceTo(1000)
    expect(entry.timedOutAt).toBeGreaterThanOrEqual(100)
    expect(entry.timedOutAt).toBeLessThanOrEqual(101)
  })

  it('gives an entry added while others time out a full wait of its own, on the same timer', () => {
    const { timer, add } = setup(100)
    let added: Entry | undefined
    const first = add(() => {
      added = add()
    })
    timer.advanceTo(30)
    const second = add()
    timer.advanceTo(100)
    expect(first.timedOutAt).toBe(100)
    timer.advanceTo(1000)
    expect(second.timedOutAt).toBe(130)
    expect(added?.timedOutAt).toBe(200)
    expect(timer.mostAtOnce).toBe(1)
  })

  it('times the other entries out when one throws, and rethrows its error on the next tick', () => {
    const { timer, add } = setup(100)
    const failure = new Error('listener bug')
    const ticks: (() => void)[] = []
    const nextTick = jest.spyOn(process, 'nextTick').mockImplementation((callback) => {
      ticks.push(callback as () => void)
    })
    try {
      add(() => {
        throw failure
      })
      const other = add()
      timer.advanceTo(100)
      expect(other.timedOutAt).toBe(100)
    } finally {
      nextTick.mockRestore()
    }
    expect(ticks).toHaveLength(1)
    expect(ticks[0]).toThrow(failure)
  })

  describe('on the system timer', () => {
    const refTimers = (): number =>
      process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length

    it('times an entry out without its timer keeping the process alive', async () => {
      const queue = new DeadlineQueue(20)
      let timedOut!: () => void
      const done = new Promise<void>((resolve) => {
        timedOut = resolve
      })
      const entry = new (class extends Waiter {
        override timedOut(): void {
          timedOut()
        }
      })()
      const before = refTimers()
      queue.add(entry)
      // An unref'd timer is not among the resources that keep the event loop alive.
      expect(refTimers()).toBe(before)
      await done
      expect(queue.size).toBe(0)
    })
  })
})

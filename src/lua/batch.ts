import calculateSlot from 'cluster-key-slot'

import { CreditStoreError } from '../errors.js'

import type { ScriptArgs, ScriptRunner } from './run-script.js'
import {
  batchArgv,
  sameShared,
  splitBatchReply,
  type BatchScriptDef,
  type ScriptDef,
} from './scripts.js'

/** Sets of shared arguments of one kind that a turn's operations may join (see run()). */
const MAX_OPEN = 8

interface Queued {
  readonly keys: readonly string[]
  readonly args: readonly (string | number)[]
  readonly resolve: (reply: unknown) => void
  readonly reject: (error: unknown) => void
}

/**
 * Operations of one kind (and, on a Cluster, one slot) with the same shared arguments, that go
 * to Redis as one script.
 */
interface Segment {
  readonly single: ScriptDef
  readonly batch: BatchScriptDef
  readonly ops: Queued[]
  /** Its position in the queue. */
  readonly at: number
}

/**
 * Coalesces the operations sent in the same turn of the event loop into as few script calls as
 * it can, as DataLoader does for reads and TigerBeetle for transfers: under load, a dozen
 * reserves cost Redis one dispatch and the helpers' set-up once, and ioredis one command.
 * Like a database's group commit, an operation is sent at once when nothing is queued or in
 * flight (an idle server sees no change and no delay); otherwise it waits at most until the
 * current turn's I/O callbacks have run (`setImmediate`), or until its batch is full. A batch of
 * one is sent as the plain script. Batches of a few dozen operations keep several in flight, so
 * that Redis works on one while this process answers the last (with 64 callers reserving and
 * committing in a loop: about 27,000 pairs/s at 16 or 32 a batch, 20,500 at 64). The larger of
 * the first two costs Redis less a call: the library's set-up and the dispatch are paid once a
 * script (bench/PROFILE.md, tenth pass).
 *
 * Order is kept where it can matter, per account: an operation never overtakes an earlier one
 * on the same account (a reserve made after a release is sent after it), and a script sent
 * outside the batches ({@link ScriptBatcher.flush} first) comes after everything queued before
 * it, so a balance read right after a settlement sees it. Operations on different accounts
 * touch different keys and commute.
 *
 * Only operations that agree on the script's shared arguments ({@link BatchScriptDef.shared}:
 * limits and settings, the same for every call of a gate's route) go into one script, which
 * carries those once. On a Cluster, only operations whose keys share a slot go into one
 * script. Each operation gets its own reply; a batch that fails as a whole (connection lost, Redis refusing) rejects
 * every operation in it, and since every operation is idempotent by its id, the callers' resends
 * are as safe as for single scripts.
 */
export class ScriptBatcher {
  readonly #runner: ScriptRunner
  readonly #maxBatch: number
  readonly #cluster: boolean
  /** Queued segments, in the order they must be sent. */
  #segments: Segment[] = []
  /** The last segment each account (its first key) has an operation in, by position. */
  readonly #lastOf = new Map<string, number>()
  /**
   * The segments of each kind (and slot) that operations may still join: the latest of each
   * set of shared arguments (a gate's tiers differ in them), at most {@link MAX_OPEN}.
   */
  readonly #openOf = new Map<string, Segment[]>()
  #scheduled = false
  /** Scripts sent by this batcher whose replies have not come back yet. */
  #inFlight = 0

  /**
   * @param runner - runs the scripts
   * @param maxBatch - operations per script at most; 1 sends every operation on its own
   * @param cluster - whether keys of different slots must go to different scripts
   */
  constructor(runner: ScriptRunner, maxBatch: number, cluster: boolean) {
    this.#runner = runner
    this.#maxBatch = maxBatch
    this.#cluster = cluster
  }

  /** Runs `single` with these keys and arguments, possibly as one operation of `batch`. */
  run(
    single: ScriptDef,
    batch: BatchScriptDef,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    if (this.#maxBatch <= 1 || (this.#inFlight === 0 && this.#segments.length === 0)) {
      // Nothing to wait for (or batching off): send it now, as group commit does when idle.
      this.flush()
      return this.#track(this.#runner.run(single, keys, args))
    }
    const account = keys[0] ?? ''
    const kind = this.#cluster ? `${batch.name}:${calculateSlot(account)}` : batch.name
    const after = this.#lastOf.get(account) ?? -1
    let open = this.#openOf.get(kind)
    if (open === undefined) {
      open = []
      this.#openOf.set(kind, open)
    }
    let k = 0
    while (k < open.length && !sameShared(batch, open[k]?.ops[0]?.args ?? [], args)) k++
    let segment = open[k]
    // Join the open segment with these shared arguments only if it comes after this account's
    // last operation; a new one takes its place.
    if (segment === undefined || segment.at < after) {
      segment = { single, batch, ops: [], at: this.#segments.length }
      this.#segments.push(segment)
      if (k < open.length) {
        open[k] = segment
      } else {
        // Operations that all differ (each with a clock of its own) must not make every later
        // one compare itself with all of them: the oldest set is no longer joined.
        if (open.length === MAX_OPEN) open.shift()
        open.push(segment)
      }
    }
    this.#lastOf.set(account, segment.at)
    const { ops } = segment
    const reply = new Promise<unknown>((resolve, reject) => {
      ops.push({ keys, args, resolve, reject })
    })
    if (ops.length >= this.#maxBatch) {
      this.flush() // everything queued, in order: a full segment never overtakes earlier ones
    } else if (!this.#scheduled) {
      this.#scheduled = true
      setImmediate(this.#onImmediate)
    }
    return reply
  }

  /** Sends everything queued now, in order. Call it before a script sent outside the batches. */
  flush(): void {
    if (this.#segments.length === 0) return
    const segments = this.#segments
    this.#segments = []
    this.#lastOf.clear()
    this.#openOf.clear()
    const sendAll = (): void => {
      for (const segment of segments) this.#send(segment)
    }
    // Several scripts (reserves and settlements, say): one write to the socket, not one each.
    if (segments.length > 1) this.#runner.corked(sendAll)
    else sendAll()
  }

  #track(reply: Promise<unknown>): Promise<unknown> {
    this.#inFlight += 1
    const done = (): void => {
      this.#inFlight -= 1
    }
    reply.then(done, done)
    return reply
  }

  readonly #onImmediate = (): void => {
    this.#scheduled = false
    this.flush()
  }

  #send({ single, batch, ops }: Segment): void {
    const [only] = ops
    if (ops.length === 1 && only !== undefined) {
      this.#track(this.#runner.run(single, only.keys, only.args)).then(only.resolve, only.reject)
      return
    }
    // ['', numkeys, every operation's keys, the shared arguments, every operation's others],
    // built once at its final size.
    let numkeys = 0
    for (const op of ops) numkeys += op.keys.length
    const command: ScriptArgs = new Array<string | number>(
      2 + numkeys + batch.shared.length + ops.length * batch.varying.length,
    )
    command[0] = ''
    command[1] = numkeys
    let at = 2
    for (const op of ops) for (const key of op.keys) command[at++] = key
    batchArgv(batch, ops, command, at)
    this.#track(this.#runner.runCommand(batch, command)).then(
      (replies) => {
        // A reply that is not one entry per operation breaks the contract: each caller is
        // given the whole of it, which its reply check reports as ERR_CREDIT_SCRIPT_REPLY.
        const split = splitBatchReply(replies)
        const each = split?.length === ops.length ? split : undefined
        ops.forEach((op, i) => {
          const reply: unknown = each === undefined ? replies : each[i]
          if (Array.isArray(reply) && reply[0] === 'ERROR') {
            // What the single script's failure would have been: Redis did not run it.
            op.reject(
              new CreditStoreError(
                'ERR_CREDIT_STORE_UNAVAILABLE',
                `Redis did not run the ${single.name} script (${String(reply[1])}); retry with the same id`,
              ),
            )
          } else {
            op.resolve(reply)
          }
        })
      },
      (error: unknown) => {
        for (const op of ops) op.reject(error)
      },
    )
  }
}

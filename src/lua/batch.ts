import calculateSlot from 'cluster-key-slot'

import type { ScriptRunner } from './run-script.js'
import type { BatchScriptDef, ScriptDef } from './scripts.js'

interface Queued {
  readonly keys: readonly string[]
  readonly args: readonly (string | number)[]
  readonly resolve: (reply: unknown) => void
  readonly reject: (error: unknown) => void
}

interface Queue {
  readonly single: ScriptDef
  readonly batch: BatchScriptDef
  readonly ops: Queued[]
}

/**
 * Coalesces the operations of one kind sent in the same turn of the event loop into one
 * script call, as DataLoader does for reads and TigerBeetle for transfers: under load, a
 * hundred reserves cost Redis one dispatch and the helpers' set-up once, and ioredis one
 * command. Operations wait at most until the current turn's I/O callbacks have run
 * (`setImmediate`); one alone is sent as the plain script, so an idle server sees no change.
 *
 * On a Cluster, only operations whose keys share a slot go into one script. Each operation
 * gets its own reply; a batch that fails as a whole (connection lost, Redis refusing) rejects
 * every operation in it, and since every operation is idempotent by its id, the callers' resends
 * are as safe as for single scripts.
 */
export class ScriptBatcher {
  readonly #runner: ScriptRunner
  readonly #maxBatch: number
  readonly #cluster: boolean
  readonly #queues = new Map<string, Queue>()
  #scheduled = false

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
    if (this.#maxBatch <= 1) return this.#runner.run(single, keys, args)
    const group = this.#cluster ? `${batch.name}:${calculateSlot(keys[0] ?? '')}` : batch.name
    let queue = this.#queues.get(group)
    if (queue === undefined) {
      queue = { single, batch, ops: [] }
      this.#queues.set(group, queue)
    }
    const { ops } = queue
    const reply = new Promise<unknown>((resolve, reject) => {
      ops.push({ keys, args, resolve, reject })
    })
    if (ops.length >= this.#maxBatch) {
      this.#queues.delete(group)
      this.#send(queue)
    } else if (!this.#scheduled) {
      this.#scheduled = true
      setImmediate(this.#flush)
    }
    return reply
  }

  readonly #flush = (): void => {
    this.#scheduled = false
    const queues = [...this.#queues.values()]
    this.#queues.clear()
    for (const queue of queues) this.#send(queue)
  }

  #send({ single, batch, ops }: Queue): void {
    const [only] = ops
    if (ops.length === 1 && only !== undefined) {
      this.#runner.run(single, only.keys, only.args).then(only.resolve, only.reject)
      return
    }
    const keys: string[] = []
    const args: (string | number)[] = []
    for (const op of ops) {
      keys.push(...op.keys)
      args.push(...op.args)
    }
    this.#runner.run(batch, keys, args).then(
      (replies) => {
        // A reply that is not one entry per operation breaks the contract: each caller is
        // given the whole of it, which its reply check reports as ERR_CREDIT_SCRIPT_REPLY.
        const each = Array.isArray(replies) && replies.length === ops.length ? replies : undefined
        ops.forEach((op, i) => {
          op.resolve(each === undefined ? replies : each[i])
        })
      },
      (error: unknown) => {
        for (const op of ops) op.reject(error)
      },
    )
  }
}

import { Command } from 'ioredis'

import { CreditStoreError } from '../errors.js'
import type { ScriptDef } from './scripts.js'

/** What the runner needs of a client: ioredis `Redis`, `Cluster`, or ioredis-mock. */
export interface ScriptClient {
  evalsha(sha1: string, numkeys: number, ...args: (string | number)[]): Promise<unknown>
  eval(script: string, numkeys: number, ...args: (string | number)[]): Promise<unknown>
  /** ioredis's own way in for a prepared command (ioredis-mock has none). */
  sendCommand?: (command: Command) => unknown
  /** An ioredis `Redis` client's socket, once connected (a `Cluster` has none). */
  readonly stream?: { cork(): void; uncork(): void } | null
  readonly options?: {
    readonly keyPrefix?: string | undefined
  }
}

type ScriptCommand = 'evalsha' | 'eval'

/** A script call's arguments as sent: the SHA or source, numkeys, then the keys and arguments. */
export type ScriptArgs = (string | number)[]

/**
 * A script command's arguments as ioredis would send them: every one a string (what its
 * `toArg` makes of a number), the keys (`args[2]` to `args[1] + 1`) with the client's key prefix.
 */
function wireArgs(args: ScriptArgs, keyPrefix: string | undefined): string[] {
  const out = new Array<string>(args.length)
  const lastKey = keyPrefix === undefined ? 0 : Number(args[1]) + 1
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]
    const text = typeof arg === 'string' ? arg : String(arg)
    out[i] = i >= 2 && i <= lastKey ? `${keyPrefix ?? ''}${text}` : text
  }
  return out
}

const errorMessage = (error: unknown): string =>
  error instanceof Error ? error.message : String(error)

/**
 * Runs ledger scripts by EVALSHA, sending the source by EVAL the first time and when the server
 * answers NOSCRIPT (after a restart or `SCRIPT FLUSH`), as node-redlock does. The caller's client is
 * never changed (no `defineCommand`), so the same runner serves `Redis` and `Cluster`.
 */
export class ScriptRunner {
  readonly #client: ScriptClient
  /** Whether the server takes `#!lua` scripts; learnt from the first refusal. */
  #shebang = true
  /** Scripts this runner has sent (by name): the server is expected to have them cached. */
  readonly #sent = new Set<string>()

  /**
   * On an ioredis client (`Redis` or `Cluster`): sends a script command straight to the
   * connection, as the client's own `evalsha` does with auto-pipelining off, but with the
   * command's arguments ready to send. With auto-pipelining on, it also keeps the scripts out
   * of the auto-pipeline: the ledger batches its own operations, and a second round of
   * pipelining only adds a tick and a pipeline object to every batch (64 callers: about 30 %
   * fewer pairs per second with it). Every script of the ledger takes this path, so they keep
   * the order they were sent in. `undefined` for a client without `sendCommand` (ioredis-mock):
   * its own `evalsha` and `eval` are used.
   */
  readonly #direct: ((name: ScriptCommand, args: ScriptArgs) => Promise<unknown>) | undefined

  constructor(client: ScriptClient) {
    this.#client = client
    const { sendCommand, options: clientOptions } = client
    if (typeof sendCommand === 'function') {
      const keyPrefix = clientOptions?.keyPrefix
      // The reply encoding the client's own methods give a command (ioredis Commander). The
      // arguments are set after construction, already as ioredis sends them: the constructor
      // runs `args.flat()`, which takes V8 about 80 ns an element (18 µs for a batch of 13
      // settlements), and would apply the key prefix, done here instead.
      const options = { replyEncoding: 'utf8' as const }
      this.#direct = (name, args) => {
        const command = new Command(name, [], options)
        command.args = wireArgs(args, keyPrefix)
        return sendCommand.call(client, command) as Promise<unknown>
      }
    }
  }

  /**
   * Runs `send`, and the scripts it sends leave in one write to the connection: a loopback
   * write costs the sender tens of microseconds of system time, and a flush of the batcher
   * often sends a batch of reserves and one of settlements together. Only on the direct path
   * with a `Redis` client whose socket is known; otherwise `send` just runs.
   */
  corked(send: () => void): void {
    const stream = this.#direct === undefined ? undefined : this.#client.stream
    if (stream === undefined || stream === null) {
      send()
      return
    }
    stream.cork()
    try {
      send()
    } finally {
      stream.uncork()
    }
  }

  /** Sends `command` (slot 0 already holds the SHA or the source) by EVALSHA or EVAL. */
  #send(name: ScriptCommand, command: ScriptArgs): Promise<unknown> {
    if (this.#direct !== undefined) return this.#direct(name, command)
    const [script, numkeys, ...rest] = command
    return name === 'evalsha'
      ? this.#client.evalsha(String(script), Number(numkeys), ...rest)
      : this.#client.eval(String(script), Number(numkeys), ...rest)
  }

  /**
   * Runs one script.
   *
   * @throws {@link CreditStoreError} with `ERR_CREDIT_STORE_UNAVAILABLE` when Redis refuses or
   * cannot be reached. The script may still have run: every mutating script is idempotent by
   * an id, so the caller retries with the same id.
   */
  run(
    def: ScriptDef,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    const command: ScriptArgs = ['', keys.length]
    for (const key of keys) command.push(key)
    for (const arg of args) command.push(arg)
    return this.runCommand(def, command)
  }

  /**
   * Runs one script whose arguments are laid out already: `command` is
   * `['', numkeys, ...keys, ...args]`, and the runner writes the SHA or the source into its
   * first slot (a batch builds it once, with no copy on the way). Errors as {@link run}.
   */
  async runCommand(def: ScriptDef, command: ScriptArgs): Promise<unknown> {
    try {
      return await this.#evalsha(def, command)
    } catch (error) {
      throw new CreditStoreError(
        'ERR_CREDIT_STORE_UNAVAILABLE',
        `Redis did not run the ${def.name} script (${errorMessage(error)}); retry with the same id`,
        { cause: error },
      )
    }
  }

  // Every send reads `command` as it is then: ioredis copies the arguments into its command,
  // so writing slot 0 for a resend never changes what was sent before.
  async #evalsha(def: ScriptDef, command: ScriptArgs): Promise<unknown> {
    // The first run of a script in this process goes by EVAL, which also caches it: no
    // NOSCRIPT round trip, and no resend that later calls could overtake.
    if (this.#sent.has(def.name)) {
      command[0] = this.#shebang ? def.sha1 : def.bareSha1
      try {
        return await this.#send('evalsha', command)
      } catch (error) {
        if (!errorMessage(error).startsWith('NOSCRIPT')) throw error
      }
    } else {
      this.#sent.add(def.name)
    }
    if (!this.#shebang) {
      command[0] = def.bareSource
      return this.#send('eval', command)
    }
    try {
      command[0] = def.source
      return await this.#send('eval', command)
    } catch (error) {
      // Redis 6 and ioredis-mock parse the shebang as Lua: "unexpected symbol near '#'".
      if (!/near '#'|shebang/i.test(errorMessage(error))) throw error
      this.#shebang = false
      command[0] = def.bareSource
      return this.#send('eval', command)
    }
  }
}

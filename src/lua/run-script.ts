import { CreditStoreError } from '../errors.js'
import type { ScriptDef } from './scripts.js'

/** What the runner needs of a client: ioredis `Redis`, `Cluster`, or ioredis-mock. */
export interface ScriptClient {
  evalsha(sha1: string, numkeys: number, ...args: (string | number)[]): Promise<unknown>
  eval(script: string, numkeys: number, ...args: (string | number)[]): Promise<unknown>
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

  constructor(client: ScriptClient) {
    this.#client = client
  }

  /**
   * Runs one script.
   *
   * @throws {@link CreditStoreError} with `ERR_CREDIT_STORE_UNAVAILABLE` when Redis refuses or
   * cannot be reached. The script may still have run: every mutating script is idempotent by
   * an id, so the caller retries with the same id.
   */
  async run(
    def: ScriptDef,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    try {
      return await this.#evalsha(def, keys, args)
    } catch (error) {
      throw new CreditStoreError(
        'ERR_CREDIT_STORE_UNAVAILABLE',
        `Redis did not run the ${def.name} script (${errorMessage(error)}); retry with the same id`,
        { cause: error },
      )
    }
  }

  async #evalsha(
    def: ScriptDef,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    // The first run of a script in this process goes by EVAL, which also caches it: no
    // NOSCRIPT round trip, and no resend that later calls could overtake.
    if (this.#sent.has(def.name)) {
      const sha = this.#shebang ? def.sha1 : def.bareSha1
      try {
        return await this.#client.evalsha(sha, keys.length, ...keys, ...args)
      } catch (error) {
        if (!errorMessage(error).startsWith('NOSCRIPT')) throw error
      }
    } else {
      this.#sent.add(def.name)
    }
    if (!this.#shebang) return this.#client.eval(def.bareSource, keys.length, ...keys, ...args)
    try {
      return await this.#client.eval(def.source, keys.length, ...keys, ...args)
    } catch (error) {
      // Redis 6 and ioredis-mock parse the shebang as Lua: "unexpected symbol near '#'".
      if (!/near '#'|shebang/i.test(errorMessage(error))) throw error
      this.#shebang = false
      return this.#client.eval(def.bareSource, keys.length, ...keys, ...args)
    }
  }
}

import type { Cluster, Redis } from 'ioredis'

/** A script call as a client sends it: EVALSHA or EVAL, and its arguments. */
export interface ScriptCall {
  readonly name: 'evalsha' | 'eval'
  /** The SHA or the source, numkeys, the keys, then the arguments. */
  readonly args: readonly unknown[]
}

/**
 * Wraps a client so that every script call goes through `around`, whichever way it is sent: by
 * the client's `evalsha` and `eval`, or as a prepared command through `sendCommand` (how the
 * ledger sends its scripts on an ioredis client). `send` sends the call and answers its reply;
 * `around` may delay it, observe it, or lose its reply (throw after it ran).
 */
export function interceptScripts<T extends Redis | Cluster>(
  redis: T,
  around: (call: ScriptCall, send: () => Promise<unknown>) => Promise<unknown>,
): T {
  return new Proxy(redis, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver)
      if (typeof value !== 'function') return value
      const method = value as (...a: unknown[]) => Promise<unknown>
      if (property === 'evalsha' || property === 'eval') {
        return (...args: unknown[]) =>
          around({ name: property, args }, () => method.apply(target, args))
      }
      if (property === 'sendCommand') {
        return (command: { name: string; args: readonly unknown[] }, ...rest: unknown[]) => {
          const { name } = command
          if (name !== 'evalsha' && name !== 'eval') return method.call(target, command, ...rest)
          return around({ name, args: command.args }, () => method.call(target, command, ...rest))
        }
      }
      return value
    },
  })
}

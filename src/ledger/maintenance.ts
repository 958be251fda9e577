import { randomBytes } from 'node:crypto'

import type { Cluster, Redis } from 'ioredis'

import { describe, fromMilli } from '../amount.js'
import { CreditArgumentError, CreditStoreError } from '../errors.js'
import type { ScriptRunner } from '../lua/run-script.js'
import { scripts } from '../lua/scripts.js'
import { argInteger, argOptions } from '../validate.js'
import { accountIdFromKey, accountKeyPattern, scriptKeys, sweepLeaseKey } from './keys.js'
import { Reply } from './replies.js'

/** What {@link RedisLedger.check} can report. */
export type RedisCheckCode =
  /** `maxmemory-policy` is not `noeviction`: Redis may delete balances and holds to make room. */
  | 'EVICTING_POLICY'
  /** Neither AOF nor RDB snapshots: a restart loses every balance. */
  | 'NO_PERSISTENCE'
  /** RDB snapshots only: a crash loses every write since the last snapshot. */
  | 'SNAPSHOTS_ONLY'
  /** AOF with `appendfsync no`: an operating-system crash may lose the last ~30 s. */
  | 'AOF_FSYNC_NO'
  /** Neither `CONFIG GET` nor `INFO` told the eviction policy (renamed or disabled commands). */
  | 'POLICY_UNKNOWN'
  /** The persistence settings could not be read (renamed or disabled commands). */
  | 'PERSISTENCE_UNKNOWN'

/** One finding of {@link RedisLedger.check}. */
export interface RedisCheckProblem {
  readonly code: RedisCheckCode
  /** `unsafe` problems fail a strict check; `warning`s are reported only. */
  readonly severity: 'unsafe' | 'warning'
  /** The node it was found on, `host:port`. */
  readonly node: string
  readonly message: string
}

/** The result of {@link RedisLedger.check}. */
export interface RedisCheckReport {
  /** True when no problem is `unsafe` (a strict check would pass). Warnings may remain. */
  readonly ok: boolean
  /** Every node checked, `host:port` (every master and replica of a Cluster). */
  readonly nodes: readonly string[]
  readonly problems: readonly RedisCheckProblem[]
}

/** Options of {@link RedisLedger.check}. */
export interface CheckOptions {
  /**
   * Throw `CreditStoreError('ERR_CREDIT_UNSAFE_REDIS_CONFIG')` when a problem is `unsafe` (an
   * evicting policy, no persistence at all). Defaults to `false`: report only.
   */
  readonly strict?: boolean
}

/** Options of {@link RedisLedger.sweep}. */
export interface SweepOptions {
  /** SCAN `COUNT` hint, and how many accounts are maintained at once. Defaults to 100. */
  readonly count?: number
  /**
   * Take the sweep lease first, so that one sweep runs at a time across every app instance
   * (another sweep returns `skipped: true`). Correctness never depends on it: each account is
   * maintained by one atomic script, and two sweeps at once change nothing more than one.
   * Defaults to `true`.
   */
  readonly lock?: boolean
  /** How long the lease lasts if its holder dies before ending it. Defaults to 60 000 ms. */
  readonly leaseMs?: number
}

/** The result of {@link RedisLedger.sweep}. */
export interface SweepResult {
  /** True when another sweep held the lease: this one did nothing. */
  readonly skipped: boolean
  /** Accounts maintained (SCAN may visit an account twice; the second visit changes nothing). */
  readonly accounts: number
  /** Unresolved holds past their deadline that this sweep voided, giving their credits back. */
  readonly holdsVoided: number
  /** Resolved holds past their retention that this sweep forgot. */
  readonly holdsForgotten: number
  /** Credits this sweep recorded as expired (grants past their expiry). */
  readonly creditsExpired: number
}

/** What the sweep needs of a ledger. */
export interface SweepContext {
  readonly redis: Redis | Cluster
  readonly runner: ScriptRunner
  readonly prefix: string
  readonly now: () => string
  readonly doneTtlMs: number
  readonly historyLimit: number
}

const isReplyError = (error: unknown): boolean =>
  error instanceof Error && error.name === 'ReplyError'

const storeError = (what: string, error: unknown): CreditStoreError =>
  error instanceof CreditStoreError
    ? error
    : new CreditStoreError(
        'ERR_CREDIT_STORE_UNAVAILABLE',
        `Redis did not answer ${what} (${error instanceof Error ? error.message : String(error)})`,
        { cause: error },
      )

/** The nodes of a client: itself, or every master (or node) of a Cluster. */
async function nodesOf(redis: Redis | Cluster, role: 'master' | 'all'): Promise<Redis[]> {
  if (!redis.isCluster) return [redis as Redis]
  const cluster = redis as Cluster
  // A Cluster client knows its nodes only once it has read the slot table (status 'ready');
  // a command waits for that.
  if (cluster.status !== 'ready') await cluster.ping()
  return cluster.nodes(role)
}

const address = (node: Redis): string =>
  `${node.options.host ?? '127.0.0.1'}:${String(node.options.port ?? 6379)}`

/** A `CONFIG GET` value, or undefined when CONFIG is renamed, disabled or refused. */
async function configValue(node: Redis, name: string): Promise<string | undefined> {
  try {
    const reply = await node.call('CONFIG', 'GET', name)
    if (Array.isArray(reply) && typeof reply[1] === 'string') return reply[1]
  } catch {
    // renamed (`rename-command CONFIG ""`), refused by an ACL, or not implemented
  }
  return undefined
}

/** The fields of one `INFO` section, or an empty map when INFO is renamed, disabled or refused. */
async function infoSection(node: Redis, section: string): Promise<Map<string, string>> {
  const fields = new Map<string, string>()
  try {
    const reply = await node.call('INFO', section)
    if (typeof reply === 'string') {
      for (const line of reply.split(/\r?\n/)) {
        const at = line.indexOf(':')
        if (at > 0) fields.set(line.slice(0, at), line.slice(at + 1).trim())
      }
    }
  } catch {
    // as above
  }
  return fields
}

async function checkNode(node: Redis): Promise<RedisCheckProblem[]> {
  const where = address(node)
  try {
    await node.ping()
  } catch (error) {
    // A renamed PING is not a reason to give up; an unreachable server is.
    if (!isReplyError(error)) throw storeError(`PING on ${where}`, error)
  }
  const problems: RedisCheckProblem[] = []
  const add = (code: RedisCheckCode, severity: 'unsafe' | 'warning', message: string): void => {
    problems.push({ code, severity, node: where, message: `${where}: ${message}` })
  }

  const memory = await infoSection(node, 'memory')
  const policy = (await configValue(node, 'maxmemory-policy')) ?? memory.get('maxmemory_policy')
  if (policy === undefined) {
    add(
      'POLICY_UNKNOWN',
      'warning',
      'the eviction policy could not be read (CONFIG and INFO refused); make sure it is maxmemory-policy noeviction',
    )
  } else if (policy !== 'noeviction') {
    add(
      'EVICTING_POLICY',
      'unsafe',
      `maxmemory-policy is ${policy}: Redis may delete balances and holds to make room; set maxmemory-policy noeviction`,
    )
  }

  const persistence = await infoSection(node, 'persistence')
  const appendonly = await configValue(node, 'appendonly')
  const aof =
    persistence.get('aof_enabled') === undefined
      ? appendonly === undefined
        ? undefined
        : appendonly === 'yes'
      : persistence.get('aof_enabled') === '1'
  const save = await configValue(node, 'save')
  if (aof === true) {
    if ((await configValue(node, 'appendfsync')) === 'no') {
      add(
        'AOF_FSYNC_NO',
        'warning',
        'appendfsync is no: an operating-system crash may lose the last ~30 s of charges and grants; use everysec or always',
      )
    }
  } else if (aof === false && save === '') {
    add(
      'NO_PERSISTENCE',
      'unsafe',
      'neither AOF nor RDB snapshots are on: a restart loses every balance; set appendonly yes',
    )
  } else if (aof === false && save !== undefined) {
    add(
      'SNAPSHOTS_ONLY',
      'warning',
      `RDB snapshots only (save "${save}"): a crash loses every charge and grant since the last snapshot; set appendonly yes`,
    )
  } else {
    add(
      'PERSISTENCE_UNKNOWN',
      'warning',
      'the persistence settings could not be read (CONFIG refused); make sure appendonly is yes',
    )
  }
  return problems
}

/**
 * Checks that Redis is configured to keep a ledger: `maxmemory-policy noeviction`, and AOF (or
 * at least RDB) persistence, on every node of a Cluster.
 *
 * @throws {@link CreditStoreError} `ERR_CREDIT_UNSAFE_REDIS_CONFIG` in strict mode when a problem is
 * unsafe; `ERR_CREDIT_STORE_UNAVAILABLE` when a node cannot be reached
 */
export async function checkRedis(
  redis: Redis | Cluster,
  options: unknown = {},
): Promise<RedisCheckReport> {
  const o = argOptions(options, ['strict'], 'check')
  const strict = o['strict'] ?? false
  if (typeof strict !== 'boolean') {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `strict must be a boolean, got ${describe(strict)}`,
    )
  }
  let nodes: Redis[]
  try {
    nodes = await nodesOf(redis, 'all')
  } catch (error) {
    throw storeError('the cluster topology', error)
  }
  const problems = (await Promise.all(nodes.map((node) => checkNode(node)))).flat()
  const unsafe = problems.filter((p) => p.severity === 'unsafe')
  if (strict && unsafe.length > 0) {
    throw new CreditStoreError(
      'ERR_CREDIT_UNSAFE_REDIS_CONFIG',
      `Redis is not safe for a ledger: ${unsafe.map((p) => p.message).join('; ')}`,
    )
  }
  return { ok: unsafe.length === 0, nodes: nodes.map(address), problems }
}

interface Maintained {
  readonly voided: number
  readonly forgotten: number
  readonly expired: number
}

async function maintainAccount(context: SweepContext, accountId: string): Promise<Maintained> {
  const keys = scriptKeys(context.prefix, accountId, scripts.maintain.numberOfKeys)
  const total = { voided: 0, forgotten: 0, expired: 0 }
  // One run voids at most 1000 due holds; an account with more is run again (bounded).
  for (let round = 0; round < 100; round++) {
    const reply = new Reply(
      'maintain',
      await context.runner.run(scripts.maintain, keys, [
        context.now(),
        context.doneTtlMs,
        context.historyLimit,
      ]),
    )
    reply.throwIfInvalid()
    if (reply.status === 'NO_ACCOUNT') break
    if (reply.status !== 'OK') throw reply.broken(reply)
    total.voided += reply.int(1)
    total.forgotten += reply.int(2)
    total.expired += reply.int(3)
    if (reply.text(4) !== '1') break
  }
  return total
}

function sweepOptions(options: unknown): { count: number; lock: boolean; leaseMs: number } {
  const o = argOptions(options, ['count', 'lock', 'leaseMs'], 'sweep')
  const lock = o['lock'] ?? true
  if (typeof lock !== 'boolean') {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `lock must be a boolean, got ${describe(lock)}`,
    )
  }
  const count = o['count'] === undefined ? 100 : argInteger(o['count'], 'count', 1)
  if (count > 10_000) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `count must be at most 10000, got ${describe(count)}`,
    )
  }
  const leaseMs = o['leaseMs'] === undefined ? 60_000 : argInteger(o['leaseMs'], 'leaseMs', 1)
  return { count, lock, leaseMs }
}

/**
 * Runs the lazy maintenance of every account of the ledger (SCAN over every master), each in its
 * own slot by one atomic script: voids holds past their deadline, forgets resolved holds past
 * their retention, expires grants past their expiry.
 *
 * @throws {@link CreditStoreError} `ERR_CREDIT_STORE_UNAVAILABLE` when Redis fails mid-sweep; what
 * was swept stays swept, and running it again is safe
 */
export async function sweepLedger(
  context: SweepContext,
  options: unknown = {},
): Promise<SweepResult> {
  const { count, lock, leaseMs } = sweepOptions(options)
  const result = { accounts: 0, holdsVoided: 0, holdsForgotten: 0, expired: 0 }
  const leaseKey = sweepLeaseKey(context.prefix)
  const token = randomBytes(16).toString('base64url')
  if (lock) {
    let taken: unknown
    try {
      taken = await context.redis.set(leaseKey, token, 'PX', leaseMs, 'NX')
    } catch (error) {
      throw storeError('SET NX of the sweep lease', error)
    }
    if (taken !== 'OK') {
      return { skipped: true, accounts: 0, holdsVoided: 0, holdsForgotten: 0, creditsExpired: 0 }
    }
  }
  try {
    // ioredis `keyPrefix` is added to KEYS but not to SCAN patterns, nor removed from its keys.
    const options = context.redis.options as { keyPrefix?: string } | undefined
    const keyPrefix = `${options?.keyPrefix ?? ''}${context.prefix}`
    const pattern = accountKeyPattern(keyPrefix)
    let nodes: Redis[]
    try {
      nodes = await nodesOf(context.redis, 'master')
    } catch (error) {
      throw storeError('the cluster topology', error)
    }
    for (const node of nodes) {
      let cursor = '0'
      do {
        let page: string[]
        try {
          ;[cursor, page] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', count)
        } catch (error) {
          throw storeError(`SCAN on ${address(node)}`, error)
        }
        const ids = page
          .map((key) => accountIdFromKey(keyPrefix, key))
          .filter((id): id is string => id !== undefined)
        const done = await Promise.all(ids.map((id) => maintainAccount(context, id)))
        for (const d of done) {
          result.accounts += 1
          result.holdsVoided += d.voided
          result.holdsForgotten += d.forgotten
          result.expired += d.expired
        }
      } while (cursor !== '0')
    }
  } finally {
    if (lock) {
      // Token-checked: a sweep that outlived its lease must not end the lease of the next one.
      await context.runner.run(scripts.unlock, [leaseKey], [token]).catch(() => undefined)
    }
  }
  return {
    skipped: false,
    accounts: result.accounts,
    holdsVoided: result.holdsVoided,
    holdsForgotten: result.holdsForgotten,
    creditsExpired: fromMilli(result.expired),
  }
}

import { createHash } from 'node:crypto'

import analytics from './analytics.lua'
import auditSource from './audit.lua'
import balanceSource from './balance.lua'
import calendar from './calendar.lua'
import claimSource from './claim.lua'
import endSubscriptionSource from './end-subscription.lua'
import grantSource from './grant.lua'
import lib from './lib.lua'
import maintainSource from './maintain.lua'
import openSource from './open.lua'
import recordUsageSource from './record-usage.lua'
import reserveSource from './reserve.lua'
import resolveSource from './resolve.lua'
import subscribeSource from './subscribe.lua'
import transactionsSource from './transactions.lua'
import unlockSource from './unlock.lua'
import usageQuerySource from './usage-query.lua'

/** One script in the two forms the runner may send. */
export interface ScriptDef {
  readonly name: string
  readonly numberOfKeys: number
  /**
   * With the `#!lua` shebang: Redis 7 refuses such a script up front when it is out of memory,
   * instead of running it until a write fails half-way (Lua has no rollback).
   */
  readonly source: string
  readonly sha1: string
  /** Without the shebang, for servers that do not know it (Redis 6, ioredis-mock). */
  readonly bareSource: string
  readonly bareSha1: string
}

const sha1 = (text: string): string => createHash('sha1').update(text).digest('hex')

/** The helpers every account script starts with: the calendar, then lib (which uses it). */
const LIB = `${calendar}\n${lib}`

function define(name: string, numberOfKeys: number, body: string, withLib = true): ScriptDef {
  const bareSource = withLib ? `${LIB}\n${body}` : body
  const source = `#!lua\n${bareSource}`
  return Object.freeze({
    name,
    numberOfKeys,
    source,
    sha1: sha1(source),
    bareSource,
    bareSha1: sha1(bareSource),
  })
}

/**
 * A script that runs one operation many times: `numberOfKeys` KEYS each (the single script's),
 * and its ARGV split into the `shared` and the `varying` positions.
 */
export interface BatchScriptDef extends ScriptDef {
  /**
   * The positions (from 0) of the single script's ARGV that every operation of one batch shares
   * (limits and settings, the same for every call of a gate): sent once a batch, before the
   * other arguments of every operation ({@link batchArgv}).
   */
  readonly shared: readonly number[]
  /** The other positions, in order: sent for each operation. */
  readonly varying: readonly number[]
}

/**
 * The batch form of an operation: its body becomes a function of its own KEYS and ARGV, run
 * once per operation in the order given. The helpers are set up once per batch instead of once
 * per operation, and Redis dispatches one script instead of many. Each operation is exactly the
 * single script's (same checks, same writes): a batch is atomic as a whole, and a replayed
 * batch replays each operation. An operation that raises an error (a key of the wrong type)
 * replies `{'ERROR', message}`, as the single script would have failed alone, and the others
 * run.
 *
 * The batch's ARGV holds the `shared` arguments once, then each operation's others: every
 * argument costs Redis a string object and Lua a string of its own (about 0.9 thousand
 * instructions), and most of a settlement's and a reserve's are the same for every call. The
 * driver puts each operation's ARGV back together in the single script's order.
 *
 * The reply is one string: the operations' replies in order, one a line, each with its fields
 * joined by `|` ({@link splitBatchReply} takes it apart). No field of these scripts' replies
 * holds either character (status words, decimal amounts, account types and flags; an error's
 * message has them replaced by spaces). A list of lists would cost Redis a conversion of every
 * field and ioredis a Buffer and a string for each; one string costs each of them one.
 */
function defineBatch(
  name: string,
  keysPerOp: number,
  argsPerOp: number,
  shared: readonly number[],
  prelude: string,
  body: string,
): BatchScriptDef {
  const varying = Array.from({ length: argsPerOp }, (_, i) => i).filter((i) => !shared.includes(i))
  // ARGV of operation i, in the single script's order: `s<n>` for the shared ones (locals set
  // once), `ARGV[o + k]` for its own.
  const opArgs = Array.from({ length: argsPerOp }, (_, i) =>
    shared.includes(i) ? `s${i + 1}` : `ARGV[o + ${varying.indexOf(i) + 1}]`,
  ).join(', ')
  const driver = `
local K, S, V = ${keysPerOp}, ${shared.length}, ${varying.length}
local count = #KEYS / K
if count < 1 or count ~= math.floor(count) or #ARGV ~= S + count * V then
  return { 'INVALID', 'ERR_CREDIT_INVALID_ARGUMENT', 'batch' }
end
local ${shared.map((i) => `s${i + 1}`).join(', ')} = unpack(ARGV, 1, S)
local out = {}
for i = 0, count - 1 do
  local o = S + i * V
  -- One operation's error (a key of the wrong type) is its own reply, not the batch's.
  local ok, reply = pcall(op, { unpack(KEYS, i * K + 1, i * K + K) }, { ${opArgs} })
  if not ok then
    if type(reply) == 'table' and reply.err then
      reply = reply.err
    end
    reply = { 'ERROR', (string.gsub(tostring(reply), '[|\\n]', ' ')) }
  end
  -- A reply with a hole (a record that was tampered with) cannot be joined: it answers as a
  -- reply the caller does not understand, and the others' replies stand.
  local joined, line = pcall(table.concat, reply, '|')
  if not joined then
    line = 'UNREADABLE'
  end
  out[i + 1] = line
end
return table.concat(out, '\\n')
`
  const def = define(
    name,
    keysPerOp,
    `${prelude}\nlocal function op(KEYS, ARGV)\n${body}\nend\n${driver}`,
  )
  return Object.freeze({ ...def, shared, varying })
}

/**
 * Whether two operations' arguments for `batch` agree on every shared position: only then can
 * they go in one batch.
 */
export function sameShared(
  batch: BatchScriptDef,
  a: readonly (string | number)[],
  b: readonly (string | number)[],
): boolean {
  for (const i of batch.shared) if (a[i] !== b[i]) return false
  return true
}

/**
 * Writes a batch's ARGV into `into` from `at` on: the shared arguments (the first operation's,
 * which every other shares: {@link sameShared}), then each operation's others.
 */
export function batchArgv(
  batch: BatchScriptDef,
  ops: readonly { readonly args: readonly (string | number)[] }[],
  into: (string | number)[],
  at: number,
): void {
  const first = ops[0]?.args ?? []
  for (const i of batch.shared) into[at++] = first[i] ?? ''
  for (const { args } of ops) for (const i of batch.varying) into[at++] = args[i] ?? ''
}

/**
 * The replies of a batch script, one list of fields per operation, or undefined when `reply` is
 * not the string the batch scripts return.
 */
export function splitBatchReply(reply: unknown): string[][] | undefined {
  if (typeof reply !== 'string') return undefined
  return reply.split('\n').map((line) => line.split('|'))
}

/** Every script of the ledger, composed once at module load. */
export const scripts = Object.freeze({
  open: define('open', 3, openSource),
  reserve: define('reserve', 3, reserveSource),
  resolve: define('resolve', 6, `${analytics}\n${resolveSource}`),
  balance: define('balance', 3, balanceSource),
  grant: define('grant', 7, grantSource),
  claim: define('claim', 1, claimSource, false),
  subscribe: define('subscribe', 7, subscribeSource),
  endSubscription: define('endSubscription', 3, endSubscriptionSource),
  transactions: define('transactions', 3, transactionsSource),
  audit: define('audit', 3, auditSource),
  recordUsage: define('recordUsage', 6, `${analytics}\n${recordUsageSource}`),
  usageQuery: define('usageQuery', 6, `${analytics}\n${usageQuerySource}`),
  maintain: define('maintain', 4, maintainSource),
  unlock: define('unlock', 1, unlockSource, false),
  // Shared: now, holdMs, allowed, the open-on-first-sight four, doneTtl, historyMax.
  reserveBatch: defineBatch(
    'reserveBatch',
    3,
    12,
    [0, 3, 5, 6, 7, 8, 9, 10, 11],
    '',
    reserveSource,
  ),
  // Shared: now, doneTtl, historyMax, the three usage retentions.
  resolveBatch: defineBatch('resolveBatch', 6, 10, [0, 4, 5, 7, 8, 9], analytics, resolveSource),
})

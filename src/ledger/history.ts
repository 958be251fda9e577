import { describe, fromMilli } from '../amount.js'
import { CreditArgumentError } from '../errors.js'
import { scripts } from '../lua/scripts.js'
import { argInteger, argOptions } from '../validate.js'
import type { LedgerCore } from './core.js'
import { checkAccountId } from './keys.js'
import type {
  AuditBreak,
  AuditReport,
  Transaction,
  TransactionKind,
  TransactionsOptions,
  TransactionsPage,
} from './lifecycle-types.js'
import type { Reply } from './replies.js'

/** Entries per page of `transactions` when no limit is given. */
export const DEFAULT_TRANSACTIONS_LIMIT = 50
/** The largest page `transactions` returns. */
export const MAX_TRANSACTIONS_LIMIT = 500

const KINDS: ReadonlySet<string> = new Set<TransactionKind>(['grant', 'charge', 'expire', 'adjust'])
const ENTRY = /^(\d{1,16})\|(\d{1,16})\|([a-z]+)\|(-?\d{1,16})\|(-?\d{1,16})\|([^|]*)\|(.*)$/s
const CURSOR = /^cg1:([1-9]\d{0,15})$/

/** Encodes a cursor: the seq of the last entry seen (entries older than it come next). */
function encodeCursor(seq: number): string {
  return Buffer.from(`cg1:${seq}`).toString('base64url')
}

/**
 * Decodes a cursor made by {@link encodeCursor}, strictly.
 *
 * @throws {@link CreditArgumentError} `ERR_CREDIT_INVALID_ARGUMENT`
 */
function decodeCursor(cursor: unknown): number {
  if (typeof cursor === 'string' && cursor.length <= 40 && /^[A-Za-z0-9_-]+$/.test(cursor)) {
    const match = CURSOR.exec(Buffer.from(cursor, 'base64url').toString('latin1'))
    const seq = match === null ? Number.NaN : Number(match[1])
    if (Number.isSafeInteger(seq) && encodeCursor(seq) === cursor) return seq
  }
  throw new CreditArgumentError(
    'ERR_CREDIT_INVALID_ARGUMENT',
    `cursor must be a nextCursor returned by transactions(), got ${describe(cursor)}`,
  )
}

/** Parses one history entry (`seq|time|kind|amount|balanceAfter|source|endpoint`). */
function parseEntry(text: string, reply: Reply): Transaction {
  const m = ENTRY.exec(text)
  const kind = m?.[3]
  if (m === null || kind === undefined || !KINDS.has(kind)) throw reply.broken(reply)
  const endpoint = m[7] ?? ''
  return {
    seq: Number(m[1]),
    time: Number(m[2]),
    kind: kind as TransactionKind,
    amount: fromMilli(Number(m[4])),
    balanceAfter: fromMilli(Number(m[5])),
    source: m[6] ?? '',
    endpoint: endpoint === '' ? null : endpoint,
  }
}

/** `RedisLedger.transactions`: see there. */
export async function transactions(
  core: LedgerCore,
  accountId: string,
  options: TransactionsOptions = {},
): Promise<TransactionsPage> {
  const id = checkAccountId(accountId)
  const o = argOptions(options, ['limit', 'cursor'], 'transactions')
  const limit =
    o['limit'] === undefined ? DEFAULT_TRANSACTIONS_LIMIT : argInteger(o['limit'], 'limit', 1)
  if (limit > MAX_TRANSACTIONS_LIMIT) {
    throw new CreditArgumentError(
      'ERR_CREDIT_INVALID_ARGUMENT',
      `limit must be at most ${MAX_TRANSACTIONS_LIMIT}, got ${limit}`,
    )
  }
  const before = o['cursor'] === undefined ? '' : decodeCursor(o['cursor'])
  const reply = await core.run(scripts.transactions, id, [
    core.now(),
    before,
    limit,
    core.doneTtlMs,
    core.historyLimit,
  ])
  if (reply.status === 'NO_ACCOUNT') throw core.noAccount(id)
  if (reply.status !== 'OK' || reply.length > limit + 3) throw reply.broken(reply)
  const head = reply.int(1)
  const oldest = head - reply.int(2) + 1
  const entries: Transaction[] = []
  for (let i = 3; i < reply.length; i++) entries.push(parseEntry(reply.text(i), reply))
  const last = entries.at(-1)
  return {
    accountId: id,
    transactions: entries,
    nextCursor:
      last !== undefined && entries.length === limit && last.seq > oldest
        ? encodeCursor(last.seq)
        : null,
  }
}

const BREAK_KINDS = { s: 'sequence', b: 'balance', f: 'unreadable' } as const

/** A possibly negative integer at `index` (the audit reports broken balances as they are). */
function signed(reply: Reply, index: number): number {
  const text = reply.text(index)
  const value = Number(text)
  if (!/^-?\d{1,16}$/.test(text) || !Number.isSafeInteger(value)) throw reply.broken(reply)
  return value
}

/** `RedisLedger.audit`: see there. */
export async function audit(core: LedgerCore, accountId: string): Promise<AuditReport> {
  const id = checkAccountId(accountId)
  const reply = await core.run(scripts.audit, id, [core.now(), core.doneTtlMs, core.historyLimit])
  if (reply.status === 'NO_ACCOUNT') throw core.noAccount(id)
  if (reply.status !== 'OK' || reply.length < 9 || (reply.length - 9) % 4 !== 0) {
    throw reply.broken(reply)
  }
  const live = signed(reply, 1)
  const start = signed(reply, 6)
  const computed = signed(reply, 7)
  const breakCount = reply.int(8)
  const breaks: AuditBreak[] = []
  for (let i = 9; i < reply.length; i += 4) {
    const kind = BREAK_KINDS[reply.text(i + 1) as keyof typeof BREAK_KINDS] as
      AuditBreak['kind'] | undefined
    if (kind === undefined) throw reply.broken(reply)
    const expected = signed(reply, i + 2)
    const recorded = signed(reply, i + 3)
    breaks.push({
      seq: reply.int(i),
      kind,
      expected: kind === 'balance' ? fromMilli(expected) : expected,
      recorded: kind === 'balance' ? fromMilli(recorded) : recorded,
    })
  }
  const firstSeq = reply.int(4)
  return {
    accountId: id,
    ok: breakCount === 0 && live === computed,
    entries: reply.int(3),
    firstSeq,
    lastSeq: reply.int(5),
    complete: firstSeq <= 1,
    startingBalance: fromMilli(start),
    computedBalance: fromMilli(computed),
    liveBalance: fromMilli(live),
    difference: fromMilli(live - computed),
    breaks,
    breakCount,
  }
}

/**
 * A plain TypeScript model of the credit ledger, written from its documented rules (DESIGN.md,
 * the script headers, the TSDoc of RedisLedger), for the model-checked test. Amounts are integer
 * milli-credits; time is the injected clock. Every operation returns what the ledger must answer:
 * a value, or the code of the error it must throw.
 */

export const SUB = 'subscription'

export type Outcome<T> = { readonly ok: T } | { readonly error: string }

export interface TypeRule {
  readonly signup: number
  readonly signupTtl: number
  readonly unlimited: boolean
  readonly topUps: boolean
}

export interface Bucket {
  readonly exp: number
  readonly source: string
  amount: number
}

export type HoldState = 'P' | 'C' | 'R' | 'E' | 'V'

export interface Hold {
  readonly account: string
  readonly nonce: string
  state: HoldState
  readonly held: number
  readonly nominal: number
  readonly expiresAt: number
  readonly alloc: readonly (readonly [string, number])[]
  charged: number
  returned: number
  /** Pending: its expiry; resolved: when its outcome is forgotten. */
  deadline: number
}

export interface Subscription {
  plan: string
  monthly: number
  rollover: boolean
  readonly anchor: number
  n: number
  ends: number
  allowance: number
}

export interface Account {
  readonly type: string
  readonly unlimited: boolean
  readonly topUps: boolean
  readonly buckets: Map<string, Bucket>
  pending: number
  sub: Subscription | null
  /** Hold records by nonce (pending, resolved or void); forgotten ones are deleted. */
  readonly holds: Map<string, Hold>
  /**
   * The committed and released holds (their outcomes list), in the order they were settled: only
   * a settlement or a sweep forgets them, from the front, once due.
   */
  readonly outcomes: Hold[]
  /** The account's own idempotency records. */
  readonly grantKeys: Map<string, string>
  readonly subscribeKeys: Map<string, { fingerprint: string; status: string }>
}

/** What one maintenance run did (the sweep reports these). */
export interface Maintained {
  voided: number
  forgotten: number
  expired: number
}

const bucketName = (exp: number, source: string): string => `b${exp}:${source}`

/** `t` plus `n` months in UTC, the day clamped to the month's last, the time of day kept. */
export function addMonths(t: number, n: number): number {
  const d = new Date(t)
  const y = d.getUTCFullYear()
  const m = d.getUTCMonth()
  const day = d.getUTCDate()
  const ms = t - Date.UTC(y, m, day)
  const months = m + n
  const y2 = y + Math.floor(months / 12)
  const m2 = ((months % 12) + 12) % 12
  const last = new Date(Date.UTC(y2, m2 + 1, 0)).getUTCDate()
  return Date.UTC(y2, m2, Math.min(day, last)) + ms
}

/** The largest n with addMonths(anchor, n) <= t (0 when t is before anchor's first month). */
export function periodIndex(anchor: number, t: number): number {
  const a = new Date(anchor)
  const b = new Date(t)
  let n = (b.getUTCFullYear() - a.getUTCFullYear()) * 12 + (b.getUTCMonth() - a.getUTCMonth())
  if (n > 0 && addMonths(anchor, n) > t) n -= 1
  return Math.max(n, 0)
}

const next = (s: Subscription): number => addMonths(s.anchor, s.n)
const renews = (s: Subscription): boolean => s.ends === 0 || next(s) < s.ends

function order(x: Bucket, y: Bucket): number {
  const ex = x.exp === 0 ? Infinity : x.exp
  const ey = y.exp === 0 ? Infinity : y.exp
  if (ex !== ey) return ex < ey ? -1 : 1
  return x.source < y.source ? -1 : x.source > y.source ? 1 : 0
}

export interface SubscriptionView {
  plan: string
  monthlyCredits: number
  rollover: boolean
  startsAt: number
  periodStart: number | null
  periodEnd: number | null
  renewsAt: number | null
  endsAt: number | null
}

const credits = (milli: number): number => milli / 1000

export class LedgerModel {
  readonly accounts = new Map<string, Account>()
  /** Ledger-wide idempotency claims: key → fingerprint. */
  readonly claims = new Map<string, string>()
  now: number
  #synthetic = 0

  constructor(
    start: number,
    readonly types: ReadonlyMap<string, TypeRule>,
    readonly holdMs: number,
    readonly doneTtl: number,
  ) {
    this.now = start
  }

  // ---- reading ------------------------------------------------------------------------------

  sorted(a: Account): Bucket[] {
    return [...a.buckets.values()].sort(order)
  }

  available(a: Account): number {
    let sum = 0
    for (const b of a.buckets.values()) sum += b.amount
    return sum
  }

  subscriptionView(a: Account): SubscriptionView | null {
    const s = a.sub
    if (s === null) return null
    return {
      plan: s.plan,
      monthlyCredits: credits(s.monthly),
      rollover: s.rollover,
      startsAt: s.anchor,
      periodStart: s.n >= 1 ? addMonths(s.anchor, s.n - 1) : null,
      periodEnd: s.n >= 1 ? next(s) : null,
      renewsAt: renews(s) ? next(s) : null,
      endsAt: s.ends === 0 ? null : s.ends,
    }
  }

  counters(a: Account): { balance: number; available: number; pending: number } {
    const available = this.available(a)
    return {
      balance: credits(available + a.pending),
      available: credits(available),
      pending: credits(a.pending),
    }
  }

  /** What `balance(id)` must answer (after maintenance). */
  balance(id: string): Outcome<object> {
    const a = this.accounts.get(id)
    if (a === undefined) return { error: 'ERR_CREDIT_ACCOUNT_NOT_FOUND' }
    this.maintain(a)
    return {
      ok: {
        accountType: a.type,
        unlimited: a.unlimited,
        ...this.counters(a),
        buckets: this.sorted(a)
          .filter((b) => b.amount > 0)
          .map((b) => ({
            source: b.source,
            amount: credits(b.amount),
            expiresAt: b.exp === 0 ? null : b.exp,
          })),
        subscription: this.subscriptionView(a),
      },
    }
  }

  // ---- maintenance ---------------------------------------------------------------------------

  #addBucket(a: Account, exp: number, source: string, amount: number): void {
    const name = bucketName(exp, source)
    const b = a.buckets.get(name)
    if (b === undefined) a.buckets.set(name, { exp, source, amount })
    else b.amount += amount
  }

  #dropEmpty(a: Account): void {
    for (const [name, b] of a.buckets) if (b.amount <= 0) a.buckets.delete(name)
  }

  /** Gives `amount` back to bucket `name` at time `at`; a bucket expired by then does not revive. */
  #giveBack(a: Account, name: string, amount: number, at: number, m: Maintained): void {
    if (amount <= 0) return
    a.pending -= amount
    const match = /^b(\d+):(.+)$/.exec(name)
    if (match === null) throw new Error(`bad bucket ${name}`)
    const exp = Number(match[1])
    const source = match[2]!
    if (exp !== 0 && exp <= at) {
      const s = a.sub
      // A subscription that rolls over takes back what it would have carried, had it not been held.
      if (
        source === SUB &&
        s !== null &&
        s.rollover &&
        s.n >= 1 &&
        exp > s.anchor &&
        exp < next(s) &&
        next(s) > at
      ) {
        this.#addBucket(a, next(s), SUB, amount)
      } else {
        m.expired += amount
      }
    } else {
      this.#addBucket(a, exp, source, amount)
    }
  }

  /** Charges `charge` from the allocations in order and gives the rest back. Returns what came back. */
  #resolveHold(a: Account, h: Hold, charge: number, at: number, m: Maintained): number {
    a.pending -= charge
    let toCharge = charge
    let returned = 0
    for (const [name, amount] of h.alloc) {
      const take = Math.min(amount, toCharge)
      toCharge -= take
      this.#giveBack(a, name, amount - take, at, m)
      returned += amount - take
    }
    return returned
  }

  #refresh(a: Account, s: Subscription, m: Maintained): void {
    const periodEnd = addMonths(s.anchor, s.n + 1)
    const old = a.buckets.get(bucketName(next(s), SUB))
    if (old !== undefined && old.amount > 0) {
      const amount = old.amount
      old.amount = 0
      if (s.rollover) this.#addBucket(a, periodEnd, SUB, amount)
      else m.expired += amount
    }
    this.#addBucket(a, periodEnd, SUB, s.monthly)
    s.n += 1
    s.allowance = s.monthly
  }

  /**
   * Applies what fell due up to now, in time order, each at its own time: subscription refreshes,
   * hold deadlines (a pending hold is voided, an expired or void one forgotten), grant expiries.
   * At equal times: refresh, then holds, then expiries. Then a subscription past its end is
   * removed. Then, `withOutcomes` (a settlement, a sweep), the due front of the outcomes list is
   * forgotten, at most 1000.
   */
  maintain(a: Account, withOutcomes = false): Maintained {
    const m: Maintained = { voided: 0, forgotten: 0, expired: 0 }
    const due = [...a.holds.values()]
      .filter((h) => h.state !== 'C' && h.state !== 'R' && h.deadline <= this.now)
      .sort((x, y) => x.deadline - y.deadline || (x.nonce < y.nonce ? -1 : 1))
    let h = 0
    let refreshes = 0
    for (;;) {
      let t = Infinity
      let event: 'refresh' | 'hold' | Bucket | undefined
      const s = a.sub
      if (s !== null && refreshes < 600 && next(s) <= this.now && renews(s)) {
        t = next(s)
        event = 'refresh'
      }
      const hold = due[h]
      if (hold !== undefined && hold.deadline < t) {
        t = hold.deadline
        event = 'hold'
      }
      const first = this.sorted(a).find((b) => b.amount > 0)
      if (first !== undefined && first.exp !== 0 && first.exp <= this.now && first.exp < t) {
        t = first.exp
        event = first
      }
      if (event === undefined) break
      if (event === 'refresh') {
        this.#refresh(a, s!, m)
        refreshes += 1
      } else if (event === 'hold') {
        h += 1
        if (hold!.state === 'P') {
          hold!.returned = this.#resolveHold(a, hold!, 0, t, m)
          hold!.state = 'E'
          hold!.charged = 0
          hold!.deadline = this.now + this.doneTtl
          m.voided += 1
        } else {
          a.holds.delete(hold!.nonce)
          m.forgotten += 1
        }
      } else {
        m.expired += event.amount
        event.amount = 0
      }
    }
    const s = a.sub
    if (s !== null && s.ends !== 0 && s.ends <= this.now && !renews(s)) a.sub = null
    while (
      withOutcomes &&
      m.forgotten < 1000 &&
      (a.outcomes[0]?.deadline ?? Infinity) <= this.now
    ) {
      a.holds.delete(a.outcomes.shift()!.nonce)
      m.forgotten += 1
    }
    this.#dropEmpty(a)
    return m
  }

  /** Maintenance of every account, as a sweep does. */
  sweep(): Maintained {
    const total: Maintained = { voided: 0, forgotten: 0, expired: 0 }
    for (const a of this.accounts.values()) {
      const m = this.maintain(a, true)
      total.voided += m.voided
      total.forgotten += m.forgotten
      total.expired += m.expired
    }
    return total
  }

  // ---- operations ----------------------------------------------------------------------------

  #create(typeName: string): Account {
    const rule = this.types.get(typeName)
    if (rule === undefined) throw new Error(`unknown type ${typeName}`)
    const a: Account = {
      type: typeName,
      unlimited: rule.unlimited,
      topUps: rule.topUps,
      buckets: new Map(),
      pending: 0,
      sub: null,
      holds: new Map(),
      outcomes: [],
      grantKeys: new Map(),
      subscribeKeys: new Map(),
    }
    if (rule.signup > 0) {
      this.#addBucket(a, rule.signupTtl > 0 ? this.now + rule.signupTtl : 0, 'signup', rule.signup)
    }
    return a
  }

  openAccount(id: string, type: string): Outcome<object> {
    const existing = this.accounts.get(id)
    if (existing !== undefined) {
      if (existing.type !== type) return { error: 'ERR_CREDIT_ACCOUNT_TYPE_CONFLICT' }
      return { ok: { accountId: id, accountType: type, created: false } }
    }
    this.accounts.set(id, this.#create(type))
    return { ok: { accountId: id, accountType: type, created: true } }
  }

  /**
   * A reserve. `nonce` names the hold in the model. Returns the expected result; on `held`, the
   * hold is recorded.
   */
  reserve(
    id: string,
    cost: number,
    options: { holdMs?: number; allowed?: readonly string[]; openAs?: string },
    nonce: string,
  ): Outcome<Record<string, unknown>> {
    let a = this.accounts.get(id)
    let opened = false
    if (a !== undefined) this.maintain(a)
    else if (options.openAs !== undefined) {
      a = this.#create(options.openAs)
      opened = true
    } else return { ok: { status: 'no_account', accountId: id } }
    if (options.allowed !== undefined && !options.allowed.includes(a.type)) {
      return { ok: { status: 'forbidden', accountId: id, accountType: a.type } }
    }
    const held = a.unlimited ? 0 : cost
    const available = this.available(a)
    if (held > available) {
      return {
        ok: {
          status: 'insufficient',
          accountId: id,
          accountType: a.type,
          required: credits(cost),
          available: credits(available),
        },
      }
    }
    const alloc: [string, number][] = []
    let rest = held
    for (const b of this.sorted(a)) {
      if (rest <= 0) break
      if (b.amount <= 0) continue
      const take = Math.min(b.amount, rest)
      b.amount -= take
      rest -= take
      alloc.push([bucketName(b.exp, b.source), take])
    }
    this.#dropEmpty(a)
    a.pending += held
    const expiresAt = this.now + (options.holdMs ?? this.holdMs)
    a.holds.set(nonce, {
      account: id,
      nonce,
      state: 'P',
      held,
      nominal: cost,
      expiresAt,
      alloc,
      charged: 0,
      returned: 0,
      deadline: expiresAt,
    })
    if (opened) this.accounts.set(id, a)
    return {
      ok: {
        status: 'held',
        accountId: id,
        accountType: a.type,
        cost: credits(cost),
        held: credits(held),
        ...this.counters(a),
        expiresAt,
        unlimited: a.unlimited,
        opened,
      },
    }
  }

  /** A reserve whose reply was lost: the ledger releases the hold it could not report at once. */
  lostReserve(
    id: string,
    cost: number,
    options: { holdMs?: number; allowed?: readonly string[]; openAs?: string },
  ): void {
    const nonce = `lost-${this.#synthetic++}`
    const result = this.reserve(id, cost, options, nonce)
    if ('ok' in result && result.ok['status'] === 'held') {
      this.settle(id, nonce, 'release', undefined)
    } else if (this.accounts.has(id)) {
      // The release of a nonce that was never reserved remembers it as void.
      this.settle(id, nonce, 'release', undefined)
    }
  }

  /** commit (`mode` 'commit', `actual` in milli or undefined) or release of a hold. */
  settle(
    id: string,
    nonce: string,
    mode: 'commit' | 'release',
    actual: number | undefined,
  ): Outcome<Record<string, unknown>> {
    const a = this.accounts.get(id)
    if (a === undefined) return { error: 'ERR_CREDIT_HOLD_NOT_FOUND' }
    const before = a.holds.get(nonce)
    const wasPending = before?.state === 'P'
    this.maintain(a, true)
    const h = a.holds.get(nonce)
    if (h === undefined) {
      // Never reserved, or forgotten: remembered as void, so that a late reserve cannot create it.
      a.holds.set(nonce, {
        account: id,
        nonce,
        state: 'V',
        held: 0,
        nominal: 0,
        expiresAt: 0,
        alloc: [],
        charged: 0,
        returned: 0,
        deadline: this.now + this.doneTtl,
      })
      return { error: 'ERR_CREDIT_HOLD_NOT_FOUND' }
    }
    if (h.state === 'V') return { error: 'ERR_CREDIT_HOLD_NOT_FOUND' }
    if (h.state !== 'P') {
      const outcome = { C: 'committed', R: 'released', E: 'expired' }[h.state]
      return {
        ok: {
          outcome,
          charged: credits(h.charged),
          returned: credits(h.returned),
          // An expiry this very call applied is news, not a replay.
          replayed: !(h.state === 'E' && wasPending),
          ...this.counters(a),
        },
      }
    }
    let charge = 0
    if (mode === 'commit') {
      charge = h.held
      if (actual !== undefined) {
        if (actual > h.nominal) return { error: 'ERR_CREDIT_HOLD_EXCEEDED' }
        charge = Math.min(charge, actual)
      }
    }
    h.returned = this.#resolveHold(a, h, charge, this.now, { voided: 0, forgotten: 0, expired: 0 })
    this.#dropEmpty(a)
    h.charged = charge
    h.state = mode === 'commit' ? 'C' : 'R'
    h.deadline = this.now + this.doneTtl
    a.outcomes.push(h)
    return {
      ok: {
        outcome: mode === 'commit' ? 'committed' : 'released',
        charged: credits(charge),
        returned: credits(h.returned),
        replayed: false,
        ...this.counters(a),
      },
    }
  }

  /**
   * A grant; `lose` says which reply is lost: 'claim' (the ledger-wide claim ran, the grant did
   * not) or 'grant' (both ran). Returns the expected outcome.
   */
  grant(
    id: string,
    g: { amount: number; source: string; expiresAt: number; key: string },
    lose?: 'claim' | 'grant',
  ): Outcome<Record<string, unknown>> {
    const fingerprint = `${encodeURIComponent(id)}|${g.amount}|${g.source}|${g.expiresAt}|grant`
    const claimed = this.claims.get(g.key)
    if (claimed !== undefined && claimed !== fingerprint) {
      return {
        error:
          lose === 'claim' ? 'ERR_CREDIT_STORE_UNAVAILABLE' : 'ERR_CREDIT_IDEMPOTENCY_CONFLICT',
      }
    }
    const created = claimed === undefined
    this.claims.set(g.key, fingerprint)
    if (lose === 'claim') return { error: 'ERR_CREDIT_STORE_UNAVAILABLE' }
    const lost = <T>(value: Outcome<T>): Outcome<T> =>
      lose === 'grant' ? { error: 'ERR_CREDIT_STORE_UNAVAILABLE' } : value
    // A call refused for its arguments withdraws the claim it made (when it hears the refusal).
    const refused = (): Outcome<Record<string, unknown>> => {
      if (lose === undefined && created) this.claims.delete(g.key)
      return lost({ error: 'ERR_CREDIT_INVALID_ARGUMENT' })
    }
    const a = this.accounts.get(id)
    if (a === undefined) return lost({ error: 'ERR_CREDIT_ACCOUNT_NOT_FOUND' })
    this.maintain(a)
    const local = `${g.amount}|${g.source}|${g.expiresAt}|grant`
    const recorded = a.grantKeys.get(g.key)
    if (recorded !== undefined) {
      if (recorded !== local) return lost({ error: 'ERR_CREDIT_IDEMPOTENCY_CONFLICT' })
      return lost({
        ok: { accountId: id, amount: credits(g.amount), replayed: true, ...this.counters(a) },
      })
    }
    // Only a new grant must expire in the future; a replay is answered as one even after.
    if (g.expiresAt !== 0 && g.expiresAt <= this.now) return refused()
    if (!a.topUps) return lost({ error: 'ERR_CREDIT_TOPUP_NOT_ALLOWED' })
    this.#addBucket(a, g.expiresAt, g.source, g.amount)
    a.grantKeys.set(g.key, local)
    return lost({
      ok: { accountId: id, amount: credits(g.amount), replayed: false, ...this.counters(a) },
    })
  }

  subscribe(
    id: string,
    o: {
      plan: string
      monthly: number
      rollover: boolean
      startsAt: number | undefined
      key: string
    },
    lose?: 'claim' | 'subscribe',
  ): Outcome<Record<string, unknown>> {
    const flag = o.rollover ? '1' : '0'
    const startsArg = o.startsAt === undefined ? '' : String(o.startsAt)
    const fingerprint = `${encodeURIComponent(id)}|subscribe|${o.plan}|${o.monthly}|${flag}|${startsArg}`
    const claimed = this.claims.get(o.key)
    if (claimed !== undefined && claimed !== fingerprint) {
      return {
        error:
          lose === 'claim' ? 'ERR_CREDIT_STORE_UNAVAILABLE' : 'ERR_CREDIT_IDEMPOTENCY_CONFLICT',
      }
    }
    const created = claimed === undefined
    this.claims.set(o.key, fingerprint)
    if (lose === 'claim') return { error: 'ERR_CREDIT_STORE_UNAVAILABLE' }
    const lost = <T>(value: Outcome<T>): Outcome<T> =>
      lose === 'subscribe' ? { error: 'ERR_CREDIT_STORE_UNAVAILABLE' } : value
    const a = this.accounts.get(id)
    if (a === undefined) return lost({ error: 'ERR_CREDIT_ACCOUNT_NOT_FOUND' })
    this.maintain(a)
    const local = `${o.plan}|${o.monthly}|${flag}|${startsArg}`
    const recorded = a.subscribeKeys.get(o.key)
    if (recorded !== undefined) {
      if (recorded.fingerprint !== local) return lost({ error: 'ERR_CREDIT_IDEMPOTENCY_CONFLICT' })
      return lost({
        ok: {
          accountId: id,
          status: recorded.status,
          replayed: true,
          subscription: this.subscriptionView(a),
          ...this.counters(a),
        },
      })
    }
    if (!a.topUps) return lost({ error: 'ERR_CREDIT_TOPUP_NOT_ALLOWED' })
    let s = a.sub
    let status: string
    if (s === null) {
      const anchor = o.startsAt ?? this.now
      s = {
        plan: o.plan,
        monthly: o.monthly,
        rollover: o.rollover,
        anchor,
        n: 0,
        ends: 0,
        allowance: 0,
      }
      a.sub = s
      if (anchor <= this.now) {
        s.n = periodIndex(anchor, this.now)
        this.#refresh(a, s, { voided: 0, forgotten: 0, expired: 0 })
      }
      status = 'started'
    } else {
      if (o.startsAt !== undefined && o.startsAt !== s.anchor) {
        // Refused for its arguments: the call withdraws the claim it made.
        if (lose === undefined && created) this.claims.delete(o.key)
        return lost({ error: 'ERR_CREDIT_INVALID_ARGUMENT' })
      }
      if (s.plan === o.plan && s.monthly === o.monthly && s.rollover === o.rollover) {
        status = s.ends !== 0 ? 'resumed' : 'unchanged'
      } else {
        status = 'changed'
        if (s.n >= 1 && o.monthly > s.allowance) {
          this.#addBucket(a, next(s), SUB, o.monthly - s.allowance)
          s.allowance = o.monthly
        }
        s.plan = o.plan
        s.monthly = o.monthly
        s.rollover = o.rollover
      }
      s.ends = 0
    }
    a.subscribeKeys.set(o.key, { fingerprint: local, status })
    return lost({
      ok: {
        accountId: id,
        status,
        replayed: false,
        subscription: this.subscriptionView(a),
        ...this.counters(a),
      },
    })
  }

  endSubscription(id: string, at: number | undefined): Outcome<Record<string, unknown>> {
    const a = this.accounts.get(id)
    if (a === undefined) return { error: 'ERR_CREDIT_ACCOUNT_NOT_FOUND' }
    this.maintain(a)
    const s = a.sub
    if (s === null) {
      return { ok: { accountId: id, status: 'none', subscription: null, ...this.counters(a) } }
    }
    const endAt = at === undefined || at < this.now ? this.now : at
    let last = s.n
    if (endAt > s.anchor) {
      let k = periodIndex(s.anchor, endAt)
      if (addMonths(s.anchor, k) < endAt) k += 1
      last = Math.max(last, k)
    }
    s.ends = addMonths(s.anchor, last)
    return {
      ok: {
        accountId: id,
        status: 'ending',
        subscription: this.subscriptionView(a),
        ...this.counters(a),
      },
    }
  }
}

import { fromMilli } from '../amount.js'
import { CreditArgumentError, CreditStoreError, type CreditErrorCode } from '../errors.js'

/** A script reply, checked field by field. Any deviation is a bug: `ERR_CREDIT_SCRIPT_REPLY`. */
export class Reply {
  readonly status: string
  readonly #items: readonly unknown[]
  readonly #script: string

  constructor(script: string, raw: unknown) {
    this.#script = script
    if (!Array.isArray(raw) || typeof raw[0] !== 'string') throw this.broken(raw)
    this.#items = raw
    this.status = raw[0]
  }

  get length(): number {
    return this.#items.length
  }

  /** The string at `index`. */
  text(index: number): string {
    const value = this.#items[index]
    if (typeof value !== 'string') throw this.broken(this.#items)
    return value
  }

  /** The non-negative safe integer at `index` (milli-credits, times, counts). */
  int(index: number): number {
    const text = this.text(index)
    const value = Number(text)
    if (!/^\d{1,16}$/.test(text) || !Number.isSafeInteger(value)) throw this.broken(this.#items)
    return value
  }

  /** The milli-credit amount at `index`, in credits. */
  credits(index: number): number {
    return fromMilli(this.int(index))
  }

  /** Throws the argument error an `INVALID` reply stands for (the TypeScript checks let it through). */
  throwIfInvalid(): void {
    if (this.status !== 'INVALID') return
    const code = this.text(1)
    const known: readonly CreditErrorCode[] = [
      'ERR_CREDIT_INVALID_AMOUNT',
      'ERR_CREDIT_INVALID_ARGUMENT',
      'ERR_CREDIT_INVALID_ACCOUNT_ID',
    ]
    const match = known.find((c) => c === code)
    if (match === undefined) throw this.broken(this.#items)
    throw new CreditArgumentError(
      match,
      `the ${this.#script} script refused its ${this.text(2)} argument`,
    )
  }

  /** The error for a reply that breaks the script's contract. */
  broken(raw: unknown): CreditStoreError {
    let shown: string
    try {
      shown = JSON.stringify(raw).slice(0, 200)
    } catch {
      shown = typeof raw
    }
    return new CreditStoreError(
      'ERR_CREDIT_SCRIPT_REPLY',
      `the ${this.#script} script replied ${shown}, which creditgate does not understand; please report it`,
    )
  }
}

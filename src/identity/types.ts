import type { IncomingMessage } from 'node:http'

/** Who is calling: the ledger account that pays. */
export interface Identity {
  /** The ledger account id. */
  readonly accountId: string
  /** The account type to open an unknown account as, when the host opens accounts on first sight. */
  readonly accountType?: string
  /** The verified claims or key record, for handlers. */
  readonly claims?: Readonly<Record<string, unknown>>
}

/** A credential that was presented but is not valid (expired, bad signature, unknown key). */
export interface IdentityRejection {
  /** Always `true`: tells a rejection from an {@link Identity}. */
  readonly rejected: true
  /** RFC 6750 error code for `WWW-Authenticate`. */
  readonly error: 'invalid_token' | 'invalid_request'
  /** Why, for the 401 body. Never includes the credential itself. */
  readonly description: string
}

/**
 * What an identify function returns: an identity (or a bare account id), `null`/`undefined`
 * when no credential was presented, or a rejection when one was presented and is not valid.
 */
export type IdentifyResult = Identity | string | null | undefined | IdentityRejection

/**
 * Finds who pays for a request from its verified credential only. Returns synchronously when
 * it can: the middleware then adds no await before the reserve.
 */
export interface IdentifyFunction {
  (req: IncomingMessage): IdentifyResult | Promise<IdentifyResult>
  /** The `WWW-Authenticate` challenge sent with a 401, e.g. `Bearer realm="api"`. Defaults to `Bearer`. */
  readonly challenge?: string
}

import http from 'node:http'

import { ACCOUNT_HEADER } from '../../helpers/gate'

/** One request of a load: the route and the paying account. */
export interface LoadRequest {
  readonly path: string
  readonly account: string
  readonly headers?: Readonly<Record<string, string>>
}

/** How one request ended: a status, or a connection error (reset, refused, timeout). */
export interface LoadResult extends LoadRequest {
  readonly status: number | undefined
  readonly error: string | undefined
  /** The `X-Hold-Id` header, when the app sets it. */
  readonly holdId: string | undefined
  readonly retryAfter: string | undefined
}

/**
 * Sends one GET and never rejects: a reset, a refused connection, an incomplete response or
 * no answer within `timeoutMs` comes back as `error`.
 */
export async function send(
  baseUrl: string,
  request: LoadRequest,
  options: { readonly agent?: http.Agent; readonly timeoutMs?: number } = {},
): Promise<LoadResult> {
  return new Promise((resolve) => {
    let done = false
    const finish = (
      status: number | undefined,
      error: string | undefined,
      headers: http.IncomingHttpHeaders = {},
    ): void => {
      if (done) return
      done = true
      const holdId = headers['x-hold-id']
      const retryAfter = headers['retry-after']
      resolve({
        ...request,
        status,
        error,
        holdId: typeof holdId === 'string' ? holdId : undefined,
        retryAfter: typeof retryAfter === 'string' ? retryAfter : undefined,
      })
    }
    const req = http.request(
      `${baseUrl}${request.path}`,
      {
        ...(options.agent === undefined ? {} : { agent: options.agent }),
        headers: { [ACCOUNT_HEADER]: request.account, ...request.headers },
      },
      (res) => {
        res.resume()
        res.on('end', () => {
          finish(res.statusCode, res.complete ? undefined : 'incomplete response', res.headers)
        })
        res.on('error', (error) => {
          finish(undefined, error.message)
        })
      },
    )
    req.setTimeout(options.timeoutMs ?? 10_000, () => {
      req.destroy(new Error('timeout'))
    })
    req.on('error', (error) => {
      finish(undefined, error.message)
    })
    req.end()
  })
}

/**
 * A load bounded in count and time: `workers` concurrent loops, each sending the next request
 * as soon as its previous one ended, until `maxRequests` were sent, `durationMs` passed, or
 * `stop()` says so. Returns every result, in the order they ended.
 */
export async function runLoad(options: {
  readonly baseUrl: string
  readonly workers: number
  readonly maxRequests: number
  readonly durationMs: number
  readonly request: (n: number) => LoadRequest
  readonly agent?: http.Agent
  readonly timeoutMs?: number
  readonly stop?: () => boolean
  readonly onResult?: (result: LoadResult, results: readonly LoadResult[]) => void
}): Promise<LoadResult[]> {
  const results: LoadResult[] = []
  const deadline = Date.now() + options.durationMs
  let sent = 0
  const worker = async (): Promise<void> => {
    while (sent < options.maxRequests && Date.now() < deadline && options.stop?.() !== true) {
      const n = sent
      sent += 1
      const result = await send(options.baseUrl, options.request(n), {
        ...(options.agent === undefined ? {} : { agent: options.agent }),
        ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      })
      results.push(result)
      options.onResult?.(result, results)
    }
  }
  await Promise.all(Array.from({ length: options.workers }, worker))
  return results
}

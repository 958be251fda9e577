import type { ServerResponse } from 'node:http'

/**
 * Sends a JSON answer of the library's own (a 401/402/403/503 of the gate, a route of
 * `creditRoutes`), unless the response has already started. Never cached by a shared cache:
 * these answers are about one caller's credits.
 */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: object,
  headers: Readonly<Record<string, string>> = {},
): void {
  if (res.headersSent || res.writableEnded || res.destroyed) return
  const json = JSON.stringify(body)
  res.statusCode = status
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value)
  res.setHeader('Cache-Control', 'private, no-store')
  res.setHeader('Content-Type', 'application/json; charset=utf-8')
  res.setHeader('Content-Length', Buffer.byteLength(json))
  res.end(json)
}

/** The 503 of an unreachable ledger, the same from the gate and from `creditRoutes`. */
export function sendUnavailable(res: ServerResponse, retryAfterSeconds: number): void {
  sendJson(
    res,
    503,
    {
      success: false,
      error: 'ledger_unavailable',
      message: 'Credit ledger unavailable',
      detail: `The credit ledger could not be reached; retry in ${retryAfterSeconds} seconds`,
    },
    { 'Retry-After': String(retryAfterSeconds) },
  )
}

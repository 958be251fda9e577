/**
 * The gates the benchmark compares, in the order each round runs them. `naive-debit` is the
 * issue's reference point, not a product: one small script per request that debits the
 * balance, and one that refunds a failed call, auto-pipelined; no holds, history, usage,
 * idempotency or tier policy. It shows what any Redis-backed gate can reach on the machine.
 * `hold-floor` is the least a gate that follows DESIGN's request flow can send: a hold taken
 * before the handler and settled after the response, two small scripts a request, batched per
 * turn of the event loop as creditgate batches (bench/server.ts); it shows what that flow can
 * reach on the machine before any of creditgate's work (history, usage, idempotency, expiry).
 */
export const CASES = [
  'bare',
  'creditgate-header',
  'creditgate-jwt',
  'express-rate-limit',
  'rate-limiter-flexible',
  'naive-debit',
  'hold-floor',
] as const
export type Case = (typeof CASES)[number]
export const JWT_SECRET = 'bench-secret-bench-secret-bench-secret'
export const PREFIX = 'bench:'
/**
 * Diagnostic cases, not in the interleaved run: `creditgate-memory` is the gate with a ledger
 * that answers at once from memory, so the gate's own cost shows apart from Redis's.
 */
export const DIAGNOSTIC_CASES = ['creditgate-memory'] as const
export type AnyCase = Case | (typeof DIAGNOSTIC_CASES)[number]
export const isCase = (kind: string): kind is AnyCase =>
  (CASES as readonly string[]).includes(kind) ||
  (DIAGNOSTIC_CASES as readonly string[]).includes(kind)

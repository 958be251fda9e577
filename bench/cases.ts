/** The gates the benchmark compares, in the order each round runs them. */
export const CASES = [
  'bare',
  'creditgate-header',
  'creditgate-jwt',
  'express-rate-limit',
  'rate-limiter-flexible',
] as const
export type Case = (typeof CASES)[number]
export const JWT_SECRET = 'bench-secret-bench-secret-bench-secret'
export const PREFIX = 'bench:'

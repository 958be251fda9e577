/**
 * The arithmetic behind the demo's priced endpoints. Plain functions, validated inputs, no
 * dependencies: each route parses its query, calls one of these, and answers 400 on a
 * `RangeError`, so bad parameters cost nothing.
 */

/** True for Monday to Friday that is not one of `holidays` (ISO dates, UTC). */
export function isBusinessDay(date: string, holidays: readonly string[] = []): boolean {
  const day = parseIsoDate(date)
  const weekday = day.getUTCDay()
  return (
    weekday !== 0 &&
    weekday !== 6 &&
    !holidays.map((h) => parseIsoDate(h).getTime()).includes(day.getTime())
  )
}

/** Parses `YYYY-MM-DD` strictly (no rollover: 2026-02-30 is refused). */
export function parseIsoDate(text: string): Date {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text)
  if (match === null) throw new RangeError(`date must be YYYY-MM-DD, got "${text.slice(0, 20)}"`)
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])]
  const date = new Date(Date.UTC(year, month - 1, day))
  if (
    date.getUTCFullYear() !== year ||
    date.getUTCMonth() !== month - 1 ||
    date.getUTCDate() !== day
  ) {
    throw new RangeError(`${text} is not a calendar date`)
  }
  return date
}

/** Parses a comma-separated list of finite numbers (2 to 10,000 of them). */
export function parseSeries(text: string): number[] {
  const values = text.split(',').map((part) => (part.trim() === '' ? Number.NaN : Number(part)))
  if (values.length < 2 || values.length > 10_000 || !values.every(Number.isFinite)) {
    throw new RangeError('values must be 2 to 10000 comma-separated finite numbers')
  }
  return values
}

/** Mean and sample standard deviation (n − 1), by Welford's method. */
export function meanAndStdDev(values: readonly number[]): {
  mean: number
  stdDev: number
  count: number
} {
  if (values.length < 2) throw new RangeError('need at least 2 values')
  let mean = 0
  let m2 = 0
  values.forEach((x, i) => {
    const delta = x - mean
    mean += delta / (i + 1)
    m2 += delta * (x - mean)
  })
  return { mean, stdDev: Math.sqrt(m2 / (values.length - 1)), count: values.length }
}

/** The standard normal cumulative distribution (checked against reference values to 1e-12). */
export function normalCdf(x: number): number {
  return 0.5 * (1 + erf(x / Math.SQRT2))
}

function erf(x: number): number {
  const sign = x < 0 ? -1 : 1
  const ax = Math.abs(x)
  if (ax < 2.5) {
    // Maclaurin series: converges fast for small |x|.
    let term = ax
    let sum = ax
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n
      const next = term / (2 * n + 1)
      sum += next
      if (Math.abs(next) < 1e-17) break
    }
    return (sign * 2 * sum) / Math.sqrt(Math.PI)
  }
  // Continued fraction for erfc at larger |x| (Lentz).
  let f = ax
  let c = ax
  let d = 0
  for (let n = 1; n < 300; n++) {
    const an = n / 2
    d = ax + an * d
    d = d === 0 ? 1e-300 : 1 / d
    c = ax + an / c
    const delta = c * d
    f *= delta
    if (Math.abs(delta - 1) < 1e-16) break
  }
  const erfc = Math.exp(-ax * ax) / (f * Math.sqrt(Math.PI))
  return sign * (1 - erfc)
}

/** Inputs of a European option price. Rates and volatility are annual, as decimals; time in years. */
export interface OptionInput {
  readonly spot: number
  readonly strike: number
  readonly rate: number
  readonly volatility: number
  readonly years: number
  readonly kind: 'call' | 'put'
}

/** The Black–Scholes price and delta of a European option on a non-dividend-paying asset. */
export function blackScholes(input: OptionInput): {
  price: number
  delta: number
  d1: number
  d2: number
} {
  const { spot, strike, rate, volatility, years, kind } = input
  for (const [name, value] of Object.entries({ spot, strike, volatility, years })) {
    if (!Number.isFinite(value) || value <= 0)
      throw new RangeError(`${name} must be a positive number`)
  }
  if (!Number.isFinite(rate) || Math.abs(rate) > 1)
    throw new RangeError('rate must be a decimal between -1 and 1')
  if (volatility > 5 || years > 100)
    throw new RangeError('volatility must be at most 5 and years at most 100')
  const sqrtT = Math.sqrt(years)
  const d1 =
    (Math.log(spot / strike) + (rate + (volatility * volatility) / 2) * years) /
    (volatility * sqrtT)
  const d2 = d1 - volatility * sqrtT
  const discount = strike * Math.exp(-rate * years)
  if (kind === 'call') {
    return { price: spot * normalCdf(d1) - discount * normalCdf(d2), delta: normalCdf(d1), d1, d2 }
  }
  return {
    price: discount * normalCdf(-d2) - spot * normalCdf(-d1),
    delta: normalCdf(d1) - 1,
    d1,
    d2,
  }
}

/**
 * Historical value-at-risk of a position: the loss not exceeded with probability `confidence`,
 * read from the empirical distribution of past returns (lower-tail order statistic, no
 * interpolation), scaled by √horizon days. Also the expected shortfall beyond it.
 */
export function historicalVar(
  returns: readonly number[],
  confidence: number,
  position = 1,
  horizonDays = 1,
): { valueAtRisk: number; expectedShortfall: number; observations: number } {
  if (returns.length < 10) throw new RangeError('need at least 10 returns')
  if (!(confidence > 0.5 && confidence < 1))
    throw new RangeError('confidence must be between 0.5 and 1')
  if (!Number.isFinite(position) || position <= 0) throw new RangeError('position must be positive')
  if (!Number.isInteger(horizonDays) || horizonDays < 1 || horizonDays > 250)
    throw new RangeError('horizon must be 1 to 250 days')
  const sorted = [...returns].sort((a, b) => a - b)
  const index = Math.floor((1 - confidence) * sorted.length)
  const cutoff = sorted[index] ?? 0
  const tail = sorted.slice(0, index + 1)
  const tailMean = tail.reduce((sum, r) => sum + r, 0) / tail.length
  const scale = position * Math.sqrt(horizonDays)
  return {
    valueAtRisk: Math.max(0, -cutoff * scale),
    expectedShortfall: Math.max(0, -tailMean * scale),
    observations: sorted.length,
  }
}

import {
  blackScholes,
  historicalVar,
  isBusinessDay,
  meanAndStdDev,
  normalCdf,
  parseIsoDate,
  parseSeries,
} from '../../examples/quant-api/finance'

describe('demo arithmetic', () => {
  it('computes the standard normal CDF to 1e-12 of reference values', () => {
    const reference: [number, number][] = [
      [0, 0.5],
      [1, 0.8413447460685429],
      [-1, 0.15865525393145707],
      [1.96, 0.9750021048517795],
      [3, 0.9986501019683699],
      [-4.5, 3.3976731247300615e-6],
      // Either side of the switch from the series to the continued fraction:
      [2.4999, 0.9937885816250553],
      [2.5, 0.9937903346742238],
      [6, 0.9999999990134123],
    ]
    for (const [x, p] of reference) expect(Math.abs(normalCdf(x) - p)).toBeLessThan(1e-12)
  })

  it('prices the textbook Black–Scholes call and put (S=K=100, r=5 %, σ=20 %, T=1)', () => {
    const base = { spot: 100, strike: 100, rate: 0.05, volatility: 0.2, years: 1 }
    const call = blackScholes({ ...base, kind: 'call' })
    const put = blackScholes({ ...base, kind: 'put' })
    expect(call.price).toBeCloseTo(10.450583572185565, 10)
    expect(put.price).toBeCloseTo(5.573526022256971, 10)
    expect(call.delta).toBeCloseTo(0.6368306511756191, 10)
    // Put–call parity: C − P = S − K e^{−rT}
    expect(call.price - put.price).toBeCloseTo(100 - 100 * Math.exp(-0.05), 10)
  })

  it('refuses impossible option inputs', () => {
    const base = {
      spot: 100,
      strike: 100,
      rate: 0.05,
      volatility: 0.2,
      years: 1,
      kind: 'call' as const,
    }
    for (const bad of [
      { spot: 0 },
      { strike: -1 },
      { volatility: Number.NaN },
      { years: 0 },
      { rate: 2 },
    ]) {
      expect(() => blackScholes({ ...base, ...bad })).toThrow(RangeError)
    }
  })

  it('computes mean and sample standard deviation', () => {
    expect(meanAndStdDev([2, 4, 4, 4, 5, 5, 7, 9])).toEqual({
      mean: 5,
      stdDev: Math.sqrt(32 / 7),
      count: 8,
    })
    expect(() => meanAndStdDev([1])).toThrow(RangeError)
  })

  it('parses series strictly', () => {
    expect(parseSeries('1, 2.5,-3')).toEqual([1, 2.5, -3])
    for (const bad of ['1', '1,,2', '1,x', '1,Infinity', ''])
      expect(() => parseSeries(bad)).toThrow(RangeError)
  })

  it('reads historical VaR and expected shortfall from the lower tail', () => {
    // 100 returns: −0.10, −0.09, …, −0.01, then 90 gains of 0.01.
    const returns = [
      ...Array.from({ length: 10 }, (_, i) => -(10 - i) / 100),
      ...Array<number>(90).fill(0.01),
    ]
    const r95 = historicalVar(returns, 0.95, 1_000_000)
    expect(r95.valueAtRisk).toBeCloseTo(50_000, 6) // 5th lowest of 100: −0.05
    expect(r95.expectedShortfall).toBeCloseTo(75_000, 6) // mean of the 6 lowest: −0.075
    expect(historicalVar(returns, 0.99, 1_000_000).valueAtRisk).toBeCloseTo(90_000, 6)
    expect(historicalVar(returns, 0.95, 1_000_000, 4).valueAtRisk).toBeCloseTo(100_000, 6)
    expect(() => historicalVar(returns.slice(0, 5), 0.95)).toThrow(RangeError)
    expect(() => historicalVar(returns, 1.5)).toThrow(RangeError)
  })

  it('knows weekends, holidays and real calendar dates', () => {
    expect(isBusinessDay('2026-11-24')).toBe(true) // a Tuesday
    expect(isBusinessDay('2026-11-28')).toBe(false) // a Saturday
    expect(isBusinessDay('2026-11-26', ['2026-11-26'])).toBe(false) // Thanksgiving, as a given holiday
    expect(() => parseIsoDate('2026-02-30')).toThrow(RangeError)
    expect(() => parseIsoDate('26-11-24')).toThrow(RangeError)
  })
})

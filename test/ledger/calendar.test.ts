import calendar from '../../src/lua/calendar.lua'
import lib from '../../src/lua/lib.lua'
import { mockRedis, realRedis } from '../helpers/redis'

// Pure Lua (no keys): the server binary and the mock are what matter, not the topology.
const BACKENDS = ['redis', 'mock'] as const
type Backend = (typeof BACKENDS)[number]

const DAY = 24 * 60 * 60 * 1000

/**
 * For each day in [ARGV[1], ARGV[2]] (days since the epoch) at time of day ARGV[3]: the civil
 * date, the day count back, the month start, and for n = 0..14 the n-th anniversary with the
 * period index of that instant and of the millisecond before it.
 */
const probe = `${calendar}\n${lib}\n
local first = tonumber(ARGV[1]) + 0.0
local last = tonumber(ARGV[2]) + 0.0
local tod = tonumber(ARGV[3]) + 0.0
local out = {}
for day = first, last do
  local y, m, d = civilFromDays(day)
  local anchor = day * DAY_MS + tod
  local parts = { F(y) .. '-' .. F(m) .. '-' .. F(d), F(daysFromCivil(y, m, d)), F(monthStart(anchor)) }
  for n = 0, 14 do
    local p = addMonths(anchor, n)
    parts[#parts + 1] = F(p) .. '/' .. F(periodIndex(anchor, p)) .. '/' .. F(periodIndex(anchor, p - 1))
  end
  out[#out + 1] = table.concat(parts, ',')
end
return { unpack(out) }
`

/** The reference: JavaScript's own UTC calendar. */
function addMonthsJs(t: number, n: number): number {
  const date = new Date(t)
  const y = date.getUTCFullYear()
  const m = date.getUTCMonth() + n
  const lastDay = new Date(Date.UTC(y, m + 1, 0)).getUTCDate()
  return Date.UTC(
    y,
    m,
    Math.min(date.getUTCDate(), lastDay),
    date.getUTCHours(),
    date.getUTCMinutes(),
    date.getUTCSeconds(),
    date.getUTCMilliseconds(),
  )
}

function expected(day: number, tod: number): string {
  const date = new Date(day * DAY)
  const anchor = day * DAY + tod
  const parts = [
    `${date.getUTCFullYear()}-${date.getUTCMonth() + 1}-${date.getUTCDate()}`,
    String(day),
    String(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1)),
  ]
  for (let n = 0; n <= 14; n++) {
    parts.push(`${addMonthsJs(anchor, n)}/${n}/${Math.max(n - 1, 0)}`)
  }
  return parts.join(',')
}

const days = (iso: string): number => Date.parse(iso) / DAY

describe.each(BACKENDS)('calendar.lua on %s', (backend: Backend) => {
  const redis = backend === 'redis' ? realRedis() : mockRedis()
  afterAll(async () => {
    await redis.quit()
  })

  async function check(from: string, to: string, tod: number): Promise<number> {
    const first = days(from)
    const last = days(to)
    const got = (await redis.eval(probe, 0, first, last, tod)) as string[]
    expect(got).toHaveLength(last - first + 1)
    for (let i = 0; i < got.length; i++) {
      // One assertion per day would flood the output on a failure: compare and report the first.
      const want = expected(first + i, tod)
      if (got[i] !== want)
        expect({ day: first + i, got: got[i] }).toEqual({ day: first + i, got: want })
    }
    return got.length
  }

  it('agrees with Date.UTC on every day of 2023 to 2030 (leap years 2024 and 2028), 15 anniversaries each', async () => {
    expect(await check('2023-01-01', '2030-12-31', 13 * 3600_000 + 59 * 60_000 + 59_999)).toBe(2922)
  })

  it('agrees at midnight and just before it, across the 2000 (leap) and 2100 (not leap) centuries', async () => {
    await check('1999-11-01', '2000-04-30', 0)
    await check('2099-11-01', '2100-04-30', DAY - 1)
    await check('1970-01-01', '1970-03-31', 1)
  })
})

--[[
  calendar: UTC civil-date arithmetic for subscription anniversaries and usage periods.
  scripts.ts prepends it (before lib.lua) to every script; it is never run alone.

  Days from civil and civil from days are Howard Hinnant's algorithms ("chrono-Compatible
  Low-Level Date Algorithms"), written with floats: every value is a float (`+ 0.0`), so they
  are exact on Redis (Lua 5.1, doubles) and on ioredis-mock (Lua 5.3 with 32-bit integers,
  where `math.floor` may return a wrapping integer).
]]

local DAY_MS = 86400000.0

-- floor(a / b) for non-negative-or-negative floats, as a float.
local function fdiv(a, b)
  return math.floor(a / b) + 0.0
end

-- floor(a / b) for epoch milliseconds: a / b is rounded before floor() sees it, which near 2^53
-- can land one too high or too low; the products below are exact, so check and correct.
local function floorDiv(a, b)
  local q = math.floor(a / b) + 0.0
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- Days since 1970-01-01 of the civil date y-m-d (proleptic Gregorian, UTC).
local function daysFromCivil(y, m, d)
  y = y + 0.0
  if m <= 2 then
    y = y - 1
  end
  local era = fdiv(y, 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12 + 0.0
  local doy = fdiv(153 * mp + 2, 5) + d - 1
  local doe = yoe * 365 + fdiv(yoe, 4) - fdiv(yoe, 100) + doy
  return era * 146097 + doe - 719468
end

-- The civil date (y, m, d) of a count of days since 1970-01-01.
local function civilFromDays(z)
  z = z + 719468.0
  local era = fdiv(z, 146097)
  local doe = z - era * 146097
  local yoe = fdiv(doe - fdiv(doe, 1460) + fdiv(doe, 36524) - fdiv(doe, 146096), 365)
  local doy = doe - (365 * yoe + fdiv(yoe, 4) - fdiv(yoe, 100))
  local mp = fdiv(5 * doy + 2, 153)
  local d = doy - fdiv(153 * mp + 2, 5) + 1
  local m = mp + 3
  if mp >= 10 then
    m = mp - 9
  end
  local y = yoe + era * 400
  if m <= 2 then
    y = y + 1
  end
  return y, m, d
end

local function daysInMonth(y, m)
  if m == 12 then
    return 31.0
  end
  return daysFromCivil(y, m + 1, 1) - daysFromCivil(y, m, 1)
end

-- `t` plus n months, in UTC, the day clamped to the last day of a shorter month (Jan 31 + 1
-- month = Feb 28 or 29), the time of day kept. Always counted from the same anchor, so an
-- anniversary on the 31st comes back to the 31st after a short month.
local function addMonths(t, n)
  local days = floorDiv(t, DAY_MS)
  local ms = t - days * DAY_MS
  local y, m, d = civilFromDays(days)
  local months = m - 1 + n
  local years = fdiv(months, 12)
  local y2 = y + years
  local m2 = months - years * 12 + 1
  local last = daysInMonth(y2, m2)
  if d > last then
    d = last
  end
  return daysFromCivil(y2, m2, d) * DAY_MS + ms
end

-- The index n of the monthly period of `anchor` that contains `t` (t >= anchor): the largest n
-- with addMonths(anchor, n) <= t.
local function periodIndex(anchor, t)
  local ya, ma = civilFromDays(floorDiv(anchor, DAY_MS))
  local yt, mt = civilFromDays(floorDiv(t, DAY_MS))
  local n = (yt - ya) * 12 + (mt - ma)
  if n > 0 and addMonths(anchor, n) > t then
    n = n - 1
  end
  if n < 0 then
    n = 0.0
  end
  return n
end

-- Midnight UTC of the first day of the month that contains `t`.
local function monthStart(t)
  local y, m = civilFromDays(floorDiv(t, DAY_MS))
  return daysFromCivil(y, m, 1) * DAY_MS
end

--[[
  analytics: usage counters per endpoint and period, composed after lib.lua into the scripts
  that record or read usage (resolve, record-usage, usage-query); never run alone.

  usage hash   field  <g><start>:<endpoint>    g = h(our) | d(ay) | m(onth) (UTC), start = the
                                               period's first epoch ms, 16 digits zero-padded
               value  requests|credits|refunds|latencySum|latencyCount
                      integers; credits in milli-credits; refunds = released calls; latency in ms
                      over the calls that reported one
               field  w                        the watermark: the start of the first hour not
                                               yet folded into its day and month
  usage index  zset   the period names, every score 0: ZRANGEBYLEX then finds one granularity's
                      periods older than a cutoff in one range, which is how retention trims
                      the hash lazily (memory stays bounded however long an account lives).

  A call is counted in its hour only. Days and months are the sums of their hours, folded in
  lazily: hours before the watermark are in their day and month, hours from it on are not. The
  first call of a later hour folds the hours since the watermark (only the hour it points to
  has calls) and moves the watermark to its own hour, so a call costs one counter, and an
  account one fold per hour it is used in. A query of days or months adds the hours not yet
  folded. A call in an hour already folded (a clock that went back) is counted in its hour,
  day and month at once.
]]

local HOUR_MS = 3600000.0
local GRANULARITIES = { 'h', 'd', 'm' }
local WATERMARK = 'w'
-- Hours folded per range read; a fold reads as many slices as it needs.
local FOLD_SLICE = 500

-- Context of usage: keys and retention (ms per granularity), set by the operation; `prefix`
-- holds the names' starts of the periods containing `prefixAt`, and `hour` that hour's start.
local U = { usage = '', index = '', keep = { h = 0.0, d = 0.0, m = 0.0, hArg = false, dArg = false, mArg = false, valid = false }, prefix = {}, prefixAt = -1, hour = 0.0 }

local function periodOf(g, t)
  if g == 'h' then
    return floorDiv(t, HOUR_MS) * HOUR_MS
  elseif g == 'd' then
    return floorDiv(t, DAY_MS) * DAY_MS
  end
  return monthStart(t)
end

local function pad16(n)
  local s = F(n)
  return string.rep('0', 16 - #s) .. s
end

local function validEndpoint(s)
  return type(s) == 'string' and #s >= 1 and #s <= 512 and not string.find(s, '|', 1, true)
end

-- Reads the three retention arguments (ms of hours, days and months kept); false if one is bad.
-- The answer depends on the three strings only, and the operations of a batch send the same
-- three: it is worked out once for them (hArg starts false, which no argument equals).
local function usageRetention(h, d, m)
  local keep = U.keep
  if h ~= keep.hArg or d ~= keep.dArg or m ~= keep.mArg then
    keep.hArg, keep.dArg, keep.mArg = h, d, m
    keep.h, keep.d, keep.m = uint(h), uint(d), uint(m)
    keep.valid = keep.h ~= nil and keep.d ~= nil and keep.m ~= nil and keep.h >= HOUR_MS and
      keep.d >= DAY_MS and keep.m >= 31 * DAY_MS
  end
  return keep.valid
end

-- The watermark as a number, or nil when the account has none yet.
local function watermark(value)
  -- A missing field reads false on Redis and a null userdata on ioredis-mock.
  if type(value) == 'string' then
    return value + 0.0
  end
  return nil
end

-- The five counters of a stored value, zeros for a missing one.
local function counts(value)
  if type(value) == 'string' then
    local a, b, c, d, e = string.match(value, '^(%d+)|(%d+)|(%d+)|(%d+)|(%d+)$')
    if a then
      return a + 0.0, b + 0.0, c + 0.0, d + 0.0, e + 0.0
    end
  end
  return 0.0, 0.0, 0.0, 0.0, 0.0
end

-- `value` (a stored value or a missing one) with these five counters added, as a stored value.
local function plus(value, t1, t2, t3, t4, t5)
  local a, b, c, d, e = counts(value)
  return F(a + t1) .. '|' .. F(b + t2) .. '|' .. F(c + t3) .. '|' .. F(d + t4) .. '|' .. F(e + t5)
end

-- Adds `t` to the sums kept by name in `sums` (names in first-seen order in sums.names).
local function addTo(sums, name, t)
  local s = sums[name]
  if not s then
    s = { 0.0, 0.0, 0.0, 0.0, 0.0 }
    sums[name] = s
    sums.names[#sums.names + 1] = name
  end
  for i = 1, 5 do
    s[i] = s[i] + t[i]
  end
end

-- Writes the sums into the counters they name (one read, one write) and indexes new names.
local function store(sums)
  local names = sums.names
  if #names == 0 then
    return
  end
  local old = redis.call('HMGET', U.usage, unpack(names))
  local hset = {}
  local zadd = {}
  for i = 1, #names do
    if type(old[i]) ~= 'string' then
      zadd[#zadd + 1] = '0'
      zadd[#zadd + 1] = names[i]
    end
    hset[#hset + 1] = names[i]
    hset[#hset + 1] = plus(old[i], unpack(sums[names[i]]))
  end
  redis.call('HSET', U.usage, unpack(hset))
  if #zadd > 0 then
    redis.call('ZADD', U.index, unpack(zadd))
  end
end

-- The day and month names an hour's counter is folded into, by its name h<start>:<endpoint>.
local function foldTargets(hourName)
  local start = (string.sub(hourName, 2, 17)) + 0.0
  local rest = string.sub(hourName, 18)
  return 'd' .. pad16(periodOf('d', start)) .. rest, 'm' .. pad16(periodOf('m', start)) .. rest
end

-- Folds the hours that start in [from, to) into their days and months, a slice at a time.
local function fold(from, to)
  local low = '[h' .. pad16(from)
  local high = '(h' .. pad16(to)
  while true do
    local hours = redis.call('ZRANGEBYLEX', U.index, low, high, 'LIMIT', 0, FOLD_SLICE)
    if #hours == 0 then
      return
    end
    local values = redis.call('HMGET', U.usage, unpack(hours))
    local sums = { names = {} }
    for i = 1, #hours do
      if type(values[i]) == 'string' then
        local t = { counts(values[i]) }
        local day, month = foldTargets(hours[i])
        addTo(sums, day, t)
        addTo(sums, month, t)
      end
    end
    store(sums)
    if #hours < FOLD_SLICE then
      return
    end
    low = '(' .. hours[#hours]
  end
end

-- Deletes periods that started more than their retention ago, at most 100 per granularity per
-- call (a write rarely finds more than one due; leftovers go with the next write). Hours are
-- trimmed only once folded: the cutoff of hours is at least an hour back, before the watermark.
local function trimUsage()
  for _, g in ipairs(GRANULARITIES) do
    local cutoff = C.now - U.keep[g]
    if cutoff > 0 then
      local old = redis.call('ZRANGEBYLEX', U.index, '[' .. g, '(' .. g .. pad16(cutoff), 'LIMIT', '0', '100')
      if #old > 0 then
        redis.call('HDEL', U.usage, unpack(old))
        redis.call('ZREM', U.index, unpack(old))
      end
    end
  end
end

-- Counts one call at C.now for `endpoint`: `credits` charged (milli-credits), `refunded` 1 for
-- a released call, `latency` ms or nil when not reported.
local function addUsage(endpoint, credits, refunded, latency)
  -- The periods' names start the same for every call of a run (TIME is read once a run).
  if U.prefixAt ~= C.now then
    U.prefixAt = C.now
    U.hour = periodOf('h', C.now)
    for i, g in ipairs(GRANULARITIES) do
      U.prefix[i] = g .. pad16(periodOf(g, C.now)) .. ':'
    end
  end
  local hourName = U.prefix[1] .. endpoint
  local got = redis.call('HMGET', U.usage, WATERMARK, hourName)
  local w = watermark(got[1])
  local moved = false
  if not w then
    -- A new account's first call, or counters from before hours were folded lazily (each call
    -- was then counted in its hour, day and month at once): if this hour has calls already,
    -- they are in its day and month, so the hour counts as folded, and the next one is lazy.
    w = U.hour
    if #redis.call('ZRANGEBYLEX', U.index, '[h' .. pad16(U.hour), '[h~', 'LIMIT', '0', '1') > 0 then
      w = U.hour + HOUR_MS
    end
    moved = true
  end
  if w < U.hour then
    fold(w, U.hour)
    w = U.hour
    moved = true
  end
  local latencyCount = 0.0
  if latency then
    latencyCount = 1.0
  else
    latency = 0.0
  end
  local opened = type(got[2]) ~= 'string'
  if U.hour < w then
    -- An hour already folded: its day and month are counted now too.
    local t = { 1.0, credits, refunded, latency, latencyCount }
    local sums = { names = {} }
    addTo(sums, hourName, t)
    addTo(sums, U.prefix[2] .. endpoint, t)
    addTo(sums, U.prefix[3] .. endpoint, t)
    store(sums)
    if moved then
      redis.call('HSET', U.usage, WATERMARK, F(w))
    end
  else
    local value = plus(got[2], 1.0, credits, refunded, latency, latencyCount)
    if moved then
      redis.call('HSET', U.usage, WATERMARK, F(w), hourName, value)
    else
      redis.call('HSET', U.usage, hourName, value)
    end
  end
  -- Only a call that opens a new period can make an old one fall out of retention soon enough
  -- to matter: trimming then keeps memory bounded without three range scans on every call.
  if opened then
    if U.hour >= w then
      redis.call('ZADD', U.index, '0', hourName)
    end
    trimUsage()
  end
end

-- The counters of the hours not yet folded into days and months, as the names of the periods
-- of granularity `g` ('d' or 'm') they belong to: {names = {...}, [name] = counts}. At most
-- `limit` hours are read; `more` is true when there were more.
local function unfolded(g, limit)
  local sums = { names = {} }
  local w = watermark(redis.call('HGET', U.usage, WATERMARK))
  if not w then
    return sums, false
  end
  local hours = redis.call('ZRANGEBYLEX', U.index, '[h' .. pad16(w), '[h~', 'LIMIT', 0, limit + 1)
  local more = #hours > limit
  if more then
    hours[limit + 1] = nil
  end
  if #hours > 0 then
    local values = redis.call('HMGET', U.usage, unpack(hours))
    for i = 1, #hours do
      if type(values[i]) == 'string' then
        local day, month = foldTargets(hours[i])
        local name = day
        if g == 'm' then
          name = month
        end
        addTo(sums, name, { counts(values[i]) })
      end
    end
  end
  return sums, more
end

--[[
  analytics: usage counters per endpoint and period, composed after lib.lua into the scripts
  that record or read usage (resolve, record-usage, usage-query); never run alone.

  usage hash   field  <g><start>:<endpoint>    g = h(our) | d(ay) | m(onth) (UTC), start = the
                                               period's first epoch ms, 16 digits zero-padded
               value  requests|credits|refunds|latencySum|latencyCount
                      integers; credits in milli-credits; refunds = released calls; latency in ms
                      over the calls that reported one
  usage index  zset   the same names, every score 0: ZRANGEBYLEX then finds one granularity's
                      periods older than a cutoff in one range, which is how retention trims
                      the hash lazily (memory stays bounded however long an account lives).
]]

local HOUR_MS = 3600000.0
local GRANULARITIES = { 'h', 'd', 'm' }

-- Context of usage: keys and retention (ms per granularity), set by the operation; `prefix`
-- holds the names' starts of the periods containing `prefixAt`.
local U = { usage = '', index = '', keep = { h = 0.0, d = 0.0, m = 0.0 }, prefix = {}, prefixAt = -1 }

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
local function usageRetention(h, d, m)
  U.keep.h = uint(h)
  U.keep.d = uint(d)
  U.keep.m = uint(m)
  return U.keep.h ~= nil and U.keep.d ~= nil and U.keep.m ~= nil and U.keep.h >= HOUR_MS and
    U.keep.d >= DAY_MS and U.keep.m >= 31 * DAY_MS
end

-- Deletes periods that started more than their retention ago, at most 100 per granularity per
-- call (a write rarely finds more than one due; leftovers go with the next write).
local function trimUsage()
  for _, g in ipairs(GRANULARITIES) do
    local cutoff = C.now - U.keep[g]
    if cutoff > 0 then
      local old = redis.call('ZRANGEBYLEX', U.index, '[' .. g, '(' .. g .. pad16(cutoff), 'LIMIT', 0, 100)
      if #old > 0 then
        redis.call('HDEL', U.usage, unpack(old))
        redis.call('ZREM', U.index, unpack(old))
      end
    end
  end
end

-- Counts one call at C.now for `endpoint` in its hour, day and month: `credits` charged
-- (milli-credits), `refunded` 1 for a released call, `latency` ms or nil when not reported.
local function addUsage(endpoint, credits, refunded, latency)
  -- The periods' names start the same for every call of a run (TIME is read once a run).
  if U.prefixAt ~= C.now then
    U.prefixAt = C.now
    for i, g in ipairs(GRANULARITIES) do
      U.prefix[i] = g .. pad16(periodOf(g, C.now)) .. ':'
    end
  end
  local P = U.prefix
  local names = { P[1] .. endpoint, P[2] .. endpoint, P[3] .. endpoint }
  local old = redis.call('HMGET', U.usage, names[1], names[2], names[3])
  local hset = {}
  local zadd = {}
  for i = 1, 3 do
    local requests, charged, refunds, latencySum, latencyCount = 0.0, 0.0, 0.0, 0.0, 0.0
    local value = old[i]
    -- A missing field reads false on Redis and a null userdata on ioredis-mock.
    if type(value) == 'string' then
      local a, b, c, d, e = string.match(value, '^(%d+)|(%d+)|(%d+)|(%d+)|(%d+)$')
      if a then
        requests = tonumber(a) + 0.0
        charged = tonumber(b) + 0.0
        refunds = tonumber(c) + 0.0
        latencySum = tonumber(d) + 0.0
        latencyCount = tonumber(e) + 0.0
      end
    else
      zadd[#zadd + 1] = '0'
      zadd[#zadd + 1] = names[i]
    end
    requests = requests + 1
    charged = charged + credits
    refunds = refunds + refunded
    if latency then
      latencySum = latencySum + latency
      latencyCount = latencyCount + 1
    end
    hset[#hset + 1] = names[i]
    hset[#hset + 1] = F(requests) .. '|' .. F(charged) .. '|' .. F(refunds) .. '|' .. F(latencySum) .. '|' ..
      F(latencyCount)
  end
  redis.call('HSET', U.usage, unpack(hset))
  -- Only a call that opens a new period can make an old one fall out of retention soon enough
  -- to matter: trimming then keeps memory bounded without three range scans on every call.
  if #zadd > 0 then
    redis.call('ZADD', U.index, unpack(zadd))
    trimUsage()
  end
end

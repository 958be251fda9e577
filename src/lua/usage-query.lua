--[[
  usage-query: the usage counters of one granularity for the periods that start in [from, to),
  within retention, optionally of one endpoint. Reads only: it writes nothing.

  KEYS[1] account      hash    <prefix>{id}:a   (must exist)
  KEYS[2..4]                   unused; keep the key layout of every script
  KEYS[5] usage        hash    <prefix>{id}:u
  KEYS[6] usage index  zset    <prefix>{id}:v
  ARGV[1] now          epoch ms, or '' for Redis TIME
  ARGV[2] granularity  'h' | 'd' | 'm'
  ARGV[3] from         epoch ms: periods starting at or after it
  ARGV[4] to           epoch ms: periods starting before it
  ARGV[5] endpoint     '' for every endpoint, or one route pattern
  ARGV[6] keepHours    retention of hourly periods, ms
  ARGV[7] keepDays     retention of daily periods, ms
  ARGV[8] keepMonths   retention of monthly periods, ms

  Returns {'OK', truncated ('1'|'0'), name1, value1, ...}   names <g><start>:<endpoint>, values
            requests|credits|refunds|latencySum|latencyCount (see analytics.lua), days and
            months with their hours not yet folded added; at most 3000 stored periods and 900
            hours not yet folded (truncated '1' when there were more)
        | {'NO_ACCOUNT'}
        | {'INVALID', code, reason}
]]
C.now = clock(ARGV[1])
local g = ARGV[2]
local from = uint(ARGV[3])
local to = uint(ARGV[4])
local endpoint = ARGV[5]
if not C.now then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'now')
end
if g ~= 'h' and g ~= 'd' and g ~= 'm' then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'granularity')
end
if not from or not to then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'from or to')
end
if endpoint ~= '' and not validEndpoint(endpoint) then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'endpoint')
end
if not usageRetention(ARGV[6], ARGV[7], ARGV[8]) then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'retention')
end
if redis.call('HEXISTS', KEYS[1], 'ty') == 0 then
  return { 'NO_ACCOUNT' }
end
U.usage = KEYS[5]
U.index = KEYS[6]

-- What retention has dropped (or will drop at the next write) is not reported.
local cutoff = C.now - U.keep[g]
if from < cutoff then
  from = cutoff
end
local out = { 'OK', '0' }
if from < to then
  local names = redis.call('ZRANGEBYLEX', U.index, '[' .. g .. pad16(from), '(' .. g .. pad16(to), 'LIMIT', 0, 3001)
  if #names > 3000 then
    out[2] = '1'
    names[3001] = nil
  end
  local wanted = {}
  for i = 1, #names do
    if endpoint == '' or string.sub(names[i], 19) == endpoint then
      wanted[#wanted + 1] = names[i]
    end
  end
  -- Days and months: what their hours not yet folded add (analytics.lua).
  local extra = { names = {} }
  if g ~= 'h' then
    local more
    -- At most 900: with 3000 stored periods, the reply stays under the 8000 values that
    -- unpack() takes on Lua 5.1.
    extra, more = unfolded(g, 900)
    if more then
      out[2] = '1'
    end
  end
  if #wanted > 0 then
    local values = redis.call('HMGET', U.usage, unpack(wanted))
    for i = 1, #wanted do
      local name = wanted[i]
      local add = extra[name]
      if add then
        extra[name] = nil
        out[#out + 1] = name
        out[#out + 1] = plus(values[i], unpack(add))
      elseif type(values[i]) == 'string' then
        out[#out + 1] = name
        out[#out + 1] = values[i]
      end
    end
  end
  -- Periods that only hours not yet folded have counted so far.
  local low = g .. pad16(from)
  local high = g .. pad16(to)
  for _, name in ipairs(extra.names) do
    if extra[name] and name >= low and name < high and (endpoint == '' or string.sub(name, 19) == endpoint) then
      out[#out + 1] = name
      out[#out + 1] = plus(nil, unpack(extra[name]))
    end
  end
end
return { unpack(out) }

--[[
  record-usage: counts one call that was not charged (a free tier) in the usage analytics of an
  existing account. Never reads or changes balances, holds or history. Not idempotent: a resend
  may count the call twice, which analytics can afford (money is never involved).

  KEYS[1] account      hash    <prefix>{id}:a   (must exist; only checked)
  KEYS[2..4]                   unused; keep the key layout of every script
  KEYS[5] usage        hash    <prefix>{id}:u
  KEYS[6] usage index  zset    <prefix>{id}:v
  ARGV[1] now          epoch ms, or '' for Redis TIME
  ARGV[2] endpoint     route pattern, 1 to 512 bytes, no '|'
  ARGV[3] latency      ms, or '' when not measured
  ARGV[4] keepHours    retention of hourly periods, ms
  ARGV[5] keepDays     retention of daily periods, ms
  ARGV[6] keepMonths   retention of monthly periods, ms

  Returns {'OK'} | {'NO_ACCOUNT'} (nothing written) | {'INVALID', code, reason}
]]
C.now = clock(ARGV[1])
local endpoint = ARGV[2]
local latency = nil
if not C.now then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'now')
end
if not validEndpoint(endpoint) then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'endpoint')
end
if ARGV[3] ~= '' then
  latency = uint(ARGV[3])
  if not latency then
    return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'latencyMs')
  end
end
if not usageRetention(ARGV[4], ARGV[5], ARGV[6]) then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'retention')
end
if redis.call('HEXISTS', KEYS[1], 'ty') == 0 then
  return { 'NO_ACCOUNT' }
end
U.usage = KEYS[5]
U.index = KEYS[6]
addUsage(endpoint, 0, 0, latency)
return { 'OK' }

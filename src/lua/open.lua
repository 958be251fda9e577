--[[
  open: opens an account with its signup grant, at most once.

  KEYS[1] account    hash    <prefix>{id}:a
  KEYS[2] holds      hash    <prefix>{id}:h   (unused; keeps the key layout of every script)
  KEYS[3] history    list    <prefix>{id}:t
  ARGV[1] now        epoch ms, or '' for Redis TIME
  ARGV[2] type       account type name, ^[a-z][a-z0-9_-]*$, at most 32 characters
  ARGV[3] flags      '' or letters: u (unlimited, never charged), n (no top-ups)
  ARGV[4] signup     signup grant, milli-credits
  ARGV[5] signupTtl  ms after opening when the signup grant expires, 0 = never
  ARGV[6] historyMax history entries kept

  Returns {'CREATED', type} | {'EXISTS', type} | {'INVALID', code, reason}
]]
C.now = clock(ARGV[1])
local accountType = ARGV[2]
local flags = ARGV[3]
local signup = uint(ARGV[4])
local signupTtl = uint(ARGV[5])
local historyMax = uint(ARGV[6])
if not C.now then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'now')
end
if not validType(accountType) or not string.match(flags, '^[un]*$') then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'type')
end
if not signup or not signupTtl then
  return invalid('ERR_CREDIT_INVALID_AMOUNT', 'signup')
end
if not historyMax or historyMax < 1 then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'historyMax')
end
C.account = KEYS[1]
C.holds = KEYS[2]
C.history = KEYS[3]
C.historyMax = historyMax

local existing = redis.call('HGET', C.account, 'ty')
if existing then
  return { 'EXISTS', existing }
end
flush(create(accountType, flags, signup, signupTtl))
return { 'CREATED', accountType }

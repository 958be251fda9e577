--[[
  grant: adds credits to an account, at most once per idempotency key. The same key with a
  different amount, source or expiry is a conflict and changes nothing.

  KEYS[1] account      hash    <prefix>{id}:a
  KEYS[2] holds        hash    <prefix>{id}:h
  KEYS[3] history      list    <prefix>{id}:t
  KEYS[4..6]                   unused; keep the key layout of every script
  KEYS[7] idempotency  hash    <prefix>{id}:i
  ARGV[1] now          epoch ms, or '' for Redis TIME
  ARGV[2] amount       milli-credits, at least 1
  ARGV[3] source       ^[A-Za-z0-9_.-]+$, at most 64 characters, not 'subscription' (see subscribe)
  ARGV[4] expiresAt    epoch ms, 0 = never; after now, unless the key already made this grant
  ARGV[5] key          the idempotency key, 1 to 1024 bytes
  ARGV[6] kind         history kind: 'grant' | 'adjust'
  ARGV[7] doneTtl      ms a resolved hold's outcome is remembered
  ARGV[8] historyMax   history entries kept

  Returns {'GRANTED', available, pending}
        | {'DUPLICATE', available, pending}    the key was already used for this very grant
        | {'CONFLICT', recorded}               the key was used for another grant
        | {'NOT_ALLOWED', type}                the account takes no top-ups
        | {'NO_ACCOUNT'}
        | {'INVALID', code, reason}
]]
local refused = startAccount(KEYS, ARGV[1], ARGV[7], ARGV[8])
if refused then
  return refused
end
local amount = uint(ARGV[2])
local source = ARGV[3]
local expiresAt = uint(ARGV[4])
local key = ARGV[5]
local kind = ARGV[6]
if not amount or amount < 1 then
  return invalid('ERR_CREDIT_INVALID_AMOUNT', 'amount')
end
if not validSource(source) or source == SUB then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'source')
end
if not expiresAt then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'expiresAt')
end
-- 1024 bytes: TypeScript admits 256 UTF-16 units, which are at most 768 bytes of UTF-8.
if #key < 1 or #key > 1024 then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'idempotencyKey')
end
if kind ~= 'grant' and kind ~= 'adjust' then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'kind')
end
local idempotency = KEYS[7]

local A = load()
if not A then
  return { 'NO_ACCOUNT' }
end
maintain(A)
local fingerprint = F(amount) .. '|' .. source .. '|' .. F(expiresAt) .. '|' .. kind
local recorded = redis.call('HGET', idempotency, 'g:' .. key)
if recorded then
  if recorded ~= fingerprint then
    return { 'CONFLICT', recorded }
  end
  if changed(A) then
    flush(A)
  end
  local avail, pending = counters(A)
  return { 'DUPLICATE', avail, pending }
end
-- Only a new grant must expire in the future: a replay of one made earlier is a DUPLICATE even
-- once its expiry has passed (a payment webhook may be replayed for days).
if expiresAt ~= 0 and expiresAt <= C.now then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'expiresAt')
end
if string.find(A.f.fl or '', 'n', 1, true) then
  return { 'NOT_ALLOWED', A.f.ty }
end
addBucket(A, expiresAt, source, amount)
record(A, kind, amount, source, '')
flush(A)
redis.call('HSET', idempotency, 'g:' .. key, fingerprint)
local avail, pending = counters(A)
return { 'GRANTED', avail, pending }

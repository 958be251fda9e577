--[[
  balance: the account's balance after lazy maintenance (expired holds voided, expired grants
  dropped; those changes are written, like in every other script).

  KEYS[1] account    hash    <prefix>{id}:a
  KEYS[2] holds      hash    <prefix>{id}:h
  KEYS[3] history    list    <prefix>{id}:t
  ARGV[1] now        epoch ms, or '' for Redis TIME
  ARGV[2] doneTtl    ms a resolved hold's outcome is remembered
  ARGV[3] historyMax history entries kept

  Returns {'OK', type, flags, createdAt, available, pending, seq, subscription, bucket1, amount1, ...}
            subscription: '' or see subscriptionReply in lib.lua
            bucket names are 'b<expiresAt>:<source>', expiresAt 0 = never, soonest first
        | {'NO_ACCOUNT'}
        | {'INVALID', code, reason}
]]
local refused = startAccount(KEYS, ARGV[1], ARGV[2], ARGV[3])
if refused then
  return refused
end

local A = loadCurrent()
if not A then
  return { 'NO_ACCOUNT' }
end
local avail, pending = counters(A)
local out = { 'OK', A.f.ty, A.f.fl or '', A.f.ct, avail, pending, F(A.seq), subscriptionReply(A) }
for i = 1, #A.buckets do
  local b = A.buckets[i]
  if b.amount > 0 then
    out[#out + 1] = b.name
    out[#out + 1] = F(b.amount)
  end
end
return { unpack(out) }

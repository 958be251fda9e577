--[[
  subscribe: starts a subscription, or changes the plan of the current one, at most once per
  idempotency key. The same key with another plan, amount, rollover or start is a conflict and
  changes nothing.

  A new subscription is anchored at startsAt (default now): period k starts k months after it
  (UTC, day clamped). An anchor in the future grants nothing until it comes; an anchor in the
  past sets the anniversary and grants the current period now (nothing back-dated).

  A plan change keeps the anniversary and takes effect at once. An upgrade (more monthly
  credits than already granted for the current period) grants the difference now, into the
  current period; a downgrade takes nothing back, and the next refresh grants the new amount.
  Rollover follows the plan in force at each refresh. Subscribing again while an end is
  scheduled cancels the end.

  KEYS[1] account      hash    <prefix>{id}:a
  KEYS[2] holds        hash    <prefix>{id}:h
  KEYS[3] history      list    <prefix>{id}:t
  KEYS[4..6]                   unused; keep the key layout of every script
  KEYS[7] idempotency  hash    <prefix>{id}:i
  ARGV[1] now          epoch ms, or '' for Redis TIME
  ARGV[2] plan         ^[A-Za-z0-9_.-]+$, at most 64 characters
  ARGV[3] monthly      milli-credits granted each period, at least 1
  ARGV[4] rollover     '1' | '0'
  ARGV[5] startsAt     epoch ms, or '' for now
  ARGV[6] key          the idempotency key, 1 to 1024 bytes
  ARGV[7] doneTtl      ms a resolved hold's outcome is remembered
  ARGV[8] historyMax   history entries kept

  Returns {status, subscription, available, pending}
            status 'STARTED' | 'CHANGED' | 'RESUMED' (same plan, end cancelled) | 'UNCHANGED'
            subscription: see subscriptionReply in lib.lua ('' when there is none)
        | {'DUPLICATE', subscription, available, pending, status}   the key already made this very
                                   call, which answered `status`; nothing changed now
        | {'CONFLICT', recorded}    the key was used for another call
        | {'ANCHOR', subscription}  startsAt differs from the current subscription's anchor
        | {'NOT_ALLOWED', type}     the account takes no top-ups
        | {'NO_ACCOUNT'}
        | {'INVALID', code, reason}
]]
local refused = startAccount(KEYS, ARGV[1], ARGV[7], ARGV[8])
if refused then
  return refused
end
local plan = ARGV[2]
local monthly = uint(ARGV[3])
local rollover = ARGV[4]
local startsArg = ARGV[5]
local key = ARGV[6]
local startsAt = nil
if not validSource(plan) then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'plan')
end
if not monthly or monthly < 1 then
  return invalid('ERR_CREDIT_INVALID_AMOUNT', 'monthlyCredits')
end
if rollover ~= '1' and rollover ~= '0' then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'rollover')
end
if startsArg ~= '' then
  startsAt = uint(startsArg)
  if not startsAt then
    return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'startsAt')
  end
end
-- 1024 bytes: TypeScript admits 256 UTF-16 units, which are at most 768 bytes of UTF-8.
if #key < 1 or #key > 1024 then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'idempotencyKey')
end
local idempotency = KEYS[7]

local A = load()
if not A then
  return { 'NO_ACCOUNT' }
end
maintain(A)
local fingerprint = plan .. '|' .. F(monthly) .. '|' .. rollover .. '|' .. startsArg
-- The record is fingerprint#status, so that a replay can tell what the first call did.
local recorded = redis.call('HGET', idempotency, 's:' .. key)
if recorded then
  local recordedFingerprint, recordedStatus = string.match(recorded, '^(.*)#(%u+)$')
  if recordedFingerprint ~= fingerprint then
    return { 'CONFLICT', recorded }
  end
  if changed(A) then
    flush(A)
  end
  local avail, pending = counters(A)
  return { 'DUPLICATE', subscriptionReply(A), avail, pending, recordedStatus }
end
if string.find(A.f.fl or '', 'n', 1, true) then
  return { 'NOT_ALLOWED', A.f.ty }
end

local S = subscription(A)
local status
if not S then
  local anchor = startsAt or C.now
  S = { plan = plan, monthly = monthly, rollover = rollover == '1', anchor = anchor, n = 0.0, ends = 0.0, allowance = 0.0 }
  A.sub = S
  if anchor <= C.now then
    S.n = periodIndex(anchor, C.now)
    S.next = addMonths(anchor, S.n)
    refresh(A, S)
  else
    S.next = anchor
    saveSubscription(A)
  end
  status = 'STARTED'
else
  if startsAt and startsAt ~= S.anchor then
    return { 'ANCHOR', subscriptionReply(A) }
  end
  if S.plan == plan and S.monthly == monthly and S.rollover == (rollover == '1') then
    status = 'UNCHANGED'
    if S.ends ~= 0 then
      status = 'RESUMED'
    end
  else
    status = 'CHANGED'
    if S.n >= 1 and monthly > S.allowance then
      local extra = monthly - S.allowance
      addBucket(A, S.next, SUB, extra)
      record(A, 'grant', extra, SUB, '')
      S.allowance = monthly
    end
    S.plan = plan
    S.monthly = monthly
    S.rollover = rollover == '1'
  end
  S.ends = 0.0
  saveSubscription(A)
end
flush(A)
redis.call('HSET', idempotency, 's:' .. key, fingerprint .. '#' .. status)
local avail, pending = counters(A)
return { status, subscriptionReply(A), avail, pending }

--[[
  end-subscription: schedules the end of the account's subscription. It ends at the first
  anniversary at or after `at` (default now) that is not before the end of the period already
  granted: the period in progress is the last paid one, its credits expire when it ends, and
  nothing is refreshed after. An `at` in the past counts as now. Calling it again moves the
  end; subscribing again cancels it. Resending it changes nothing more.

  KEYS[1] account    hash    <prefix>{id}:a
  KEYS[2] holds      hash    <prefix>{id}:h
  KEYS[3] history    list    <prefix>{id}:t
  ARGV[1] now        epoch ms, or '' for Redis TIME
  ARGV[2] at         epoch ms, or '' for now
  ARGV[3] doneTtl    ms a resolved hold's outcome is remembered
  ARGV[4] historyMax history entries kept

  Returns {'ENDING', subscription, available, pending}   subscription: see subscriptionReply
        | {'NONE', available, pending}                   there is no subscription (any more)
        | {'NO_ACCOUNT'}
        | {'INVALID', code, reason}
]]
local refused = startAccount(KEYS, ARGV[1], ARGV[3], ARGV[4])
if refused then
  return refused
end
local atArg = ARGV[2]
local endAt = C.now
if atArg ~= '' then
  endAt = uint(atArg)
  if not endAt then
    return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'at')
  end
  if endAt < C.now then
    endAt = C.now
  end
end

local A = load()
if not A then
  return { 'NO_ACCOUNT' }
end
maintain(A)
local S = subscription(A)
if not S then
  if changed(A) then
    flush(A)
  end
  local avail, pending = counters(A)
  return { 'NONE', avail, pending }
end
-- After maintain(), S.next (the end of the granted periods) is in the future.
local last = S.n
if endAt > S.anchor then
  local k = periodIndex(S.anchor, endAt)
  if addMonths(S.anchor, k) < endAt then
    k = k + 1
  end
  if k > last then
    last = k
  end
end
S.ends = addMonths(S.anchor, last)
saveSubscription(A)
flush(A)
local avail, pending = counters(A)
return { 'ENDING', subscriptionReply(A), avail, pending }

--[[
  resolve: commits or releases a hold, exactly once. A commit charges at most what was held
  (the soonest-expiring part first) and gives the rest back where it came from; a release
  gives everything back. A hold past its deadline is void: resolving it charges nothing.
  Resending after the outcome returns the first outcome, replayed, and changes nothing.
  The call is counted once in the usage analytics of the hold's endpoint (analytics.lua) when
  this run commits or releases it; a hold that expired is not a call that was answered.
  A commit's or release's outcome goes to the outcomes list (see rememberOutcome in lib.lua). A
  cancel is the release the ledger sends when a reserve's reply was lost: its outcome stays in
  the holds hash, where that reserve, should it still arrive, finds it and holds nothing.

  KEYS[1] account    hash    <prefix>{id}:a
  KEYS[2] holds      hash    <prefix>{id}:h
  KEYS[3] history    list    <prefix>{id}:t
  KEYS[4] outcomes   list    <prefix>{id}:o
  KEYS[5] usage      hash    <prefix>{id}:u
  KEYS[6] usageIndex zset    <prefix>{id}:v
  ARGV[1] now        epoch ms, or '' for Redis TIME
  ARGV[2] nonce      the hold's nonce
  ARGV[3] mode       'commit' | 'release' | 'cancel'
  ARGV[4] actual     milli-credits to charge on commit, '' for all that was held
  ARGV[5] doneTtl    ms the outcome is remembered
  ARGV[6] historyMax history entries kept
  ARGV[7] latency    ms the call took, for usage analytics, or '' when not measured
  ARGV[8] keepHours  usage retention of hourly periods, ms
  ARGV[9] keepDays   usage retention of daily periods, ms
  ARGV[10] keepMonths usage retention of monthly periods, ms

  Returns {state, charged, returned, available, pending, replayed ('1'|'0')}
            state 'COMMITTED' | 'RELEASED' | 'EXPIRED' | 'VOID' (never reserved; now it cannot be)
        | {'EXCEEDS', held}       a commit asked to charge more than was held; nothing changed
        | {'NO_ACCOUNT'}
        | {'INVALID', code, reason}
]]
local refused = startAccount(KEYS, ARGV[1], ARGV[5], ARGV[6])
if refused then
  return refused
end
local nonce = ARGV[2]
local mode = ARGV[3]
local actualArg = ARGV[4]
local actual = nil
if not validNonce(nonce) then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'nonce')
end
if mode ~= 'commit' and mode ~= 'release' and mode ~= 'cancel' then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'mode')
end
if actualArg ~= '' then
  actual = uint(actualArg)
  if not actual then
    return invalid('ERR_CREDIT_INVALID_AMOUNT', 'actual')
  end
end
local latency = nil
if ARGV[7] ~= '' then
  latency = uint(ARGV[7])
  if not latency then
    return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'latencyMs')
  end
end
if not usageRetention(ARGV[8], ARGV[9], ARGV[10]) then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'usage retention')
end
C.outcomes = KEYS[4]
U.usage = KEYS[5]
U.index = KEYS[6]

local A = load()
if not A then
  return { 'NO_ACCOUNT' }
end
maintain(A)

local rec = A.holdChanges[nonce] or redis.call('HGET', C.holds, nonce) or findOutcome(A, nonce)
if not rec then
  -- Never reserved (or long forgotten): remember it as void, so a reserve resent late cannot
  -- create it afterwards.
  keepOutcome(A, nonce, 'V|0|0')
  flush(A)
  local avail, pending = counters(A)
  return { 'VOID', '0', '0', avail, pending, '0' }
end
local hold = parseHold(rec)
if not hold then
  flush(A)
  local state, charged, returned = string.match(rec, '^(%u)|(%d+)|(%d+)')
  local avail, pending = counters(A)
  -- The outcome of an expiry voided by maintain() in this very run is news, not a replay.
  local replayed = '1'
  if A.holdChanges[nonce] then
    replayed = '0'
  end
  return { outcomeStatus(state), charged, returned, avail, pending, replayed }
end

local charge = 0.0
if mode == 'commit' then
  charge = hold.held
  if actual then
    if actual > hold.nominal then
      return { 'EXCEEDS', F(hold.nominal) }
    end
    if actual < charge then
      charge = actual
    end
  end
end
local returned = resolveHold(A, hold, charge, hold.endpoint)
local state = 'R'
if mode == 'commit' then
  state = 'C'
end
local outcome = state .. '|' .. F(charge) .. '|' .. F(returned)
if mode == 'cancel' then
  keepOutcome(A, nonce, outcome)
else
  dropHold(A, nonce)
  rememberOutcome(A, nonce, outcome)
end
flush(A)
local refunded = 0
if state == 'R' then
  refunded = 1
end
addUsage(hold.endpoint, charge, refunded, latency)
local avail, pending = counters(A)
return { outcomeStatus(state), F(charge), F(returned), avail, pending, '0' }

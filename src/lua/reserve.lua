--[[
  reserve: takes a cost into a pending hold, spending the soonest-expiring credits first, or
  reports the shortfall. Decides the tier policy and, when asked, opens the account on first
  sight, all in this one step. Idempotent by the hold nonce: a resend returns the same hold.

  KEYS[1] account    hash    <prefix>{id}:a
  KEYS[2] holds      hash    <prefix>{id}:h
  KEYS[3] history    list    <prefix>{id}:t
  ARGV[1]  now        epoch ms, or '' for Redis TIME
  ARGV[2]  nonce      16 characters [A-Za-z0-9_-], the hold's id within the account
  ARGV[3]  cost       milli-credits
  ARGV[4]  holdMs     how long the hold lives unresolved
  ARGV[5]  endpoint   route pattern, 1 to 512 bytes
  ARGV[6]  allowed    '*' or ',type,type,': the account types that may pay for this
  ARGV[7]  openType   '' to refuse an unknown account, or the type to open it as
  ARGV[8]  openFlags  flags of that type (see open.lua)
  ARGV[9]  openSignup signup grant of that type, milli-credits
  ARGV[10] openTtl    signup expiry of that type, ms, 0 = never
  ARGV[11] doneTtl    ms a resolved hold's outcome is remembered
  ARGV[12] historyMax history entries kept

  Returns {'OK', held, available, pending, expiresAt, type, flags, created ('1'|'0')}
        | {'INSUFFICIENT', required, available, type}
        | {'FORBIDDEN', type}
        | {'NO_ACCOUNT'}
        | {'DUPLICATE', state}         the nonce's hold has ended: E (expired), V (void) or R
                                       (cancelled); a reserve never sees commits and releases
        | {'INVALID', code, reason}
  Amounts are milli-credits as decimal strings.
]]
local refused = startAccount(KEYS, ARGV[1], ARGV[11], ARGV[12])
if refused then
  return refused
end
local nonce = ARGV[2]
local cost = uint(ARGV[3])
local holdMs = uint(ARGV[4])
local endpoint = ARGV[5]
local allowed = ARGV[6]
local openType = ARGV[7]
local openFlags = ARGV[8]
local openSignup = uint(ARGV[9])
local openTtl = uint(ARGV[10])
if not validNonce(nonce) then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'nonce')
end
if not cost then
  return invalid('ERR_CREDIT_INVALID_AMOUNT', 'cost')
end
if not holdMs or holdMs < 1 then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'holdMs')
end
if #endpoint < 1 or #endpoint > 512 or string.find(endpoint, '|', 1, true) then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'endpoint')
end
if allowed ~= '*' and not string.match(allowed, '^,[a-z0-9_,-]*,$') then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'allowed')
end
if openType ~= '' and (not validType(openType) or not string.match(openFlags, '^[un]*$') or not openSignup or not openTtl) then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'openType')
end

local A = load()
local created = '0'
if A then
  maintain(A)
elseif openType ~= '' then
  A = create(openType, openFlags, openSignup, openTtl)
  created = '1'
else
  return { 'NO_ACCOUNT' }
end
local accountType = A.f.ty
local flags = A.f.fl or ''

local rec = redis.call('HGET', C.holds, nonce)
if rec then
  local hold = parseHold(rec)
  if hold and hold.expiresAt > C.now then
    local avail, pending = counters(A)
    return { 'OK', F(hold.held), avail, pending, F(hold.expiresAt), accountType, flags, '0' }
  end
  flush(A)
  return { 'DUPLICATE', string.sub(rec, 1, 1) }
end

if allowed ~= '*' and not string.find(allowed, ',' .. accountType .. ',', 1, true) then
  return { 'FORBIDDEN', accountType }
end

local held = cost
if flags ~= '' and string.find(flags, 'u', 1, true) then
  held = 0.0
end
local avail = available(A)
if held > avail then
  return { 'INSUFFICIENT', F(cost), F(avail), accountType }
end

-- Where the credits came from: bucket=amount, joined by commas (one bucket, most often).
local alloc = ''
local rest = held
for i = 1, #A.buckets do
  if rest <= 0 then
    break
  end
  local b = A.buckets[i]
  if b.amount > 0 then
    local take = b.amount
    if take > rest then
      take = rest
    end
    b.amount = b.amount - take
    touch(A, b)
    rest = rest - take
    local part = b.name .. '=' .. F(take)
    if alloc == '' then
      alloc = part
    else
      alloc = alloc .. ',' .. part
    end
  end
end
A.pending = A.pending + held
local expiresAt = C.now + holdMs
setHold(A, nonce, 'P|' .. F(held) .. '|' .. F(expiresAt) .. '|' .. alloc .. '|' .. F(cost) .. '|' .. endpoint, expiresAt)
flush(A)
local availOut, pendingOut = counters(A)
return { 'OK', F(held), availOut, pendingOut, F(expiresAt), accountType, flags, created }

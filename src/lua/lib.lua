--[[
  lib: helpers shared by every creditgate script. scripts.ts prepends this file to each
  operation's file; it is never run alone.

  Portability: the same code runs on Redis (Lua 5.1, doubles) and on ioredis-mock (Lua 5.3 in
  JS, 32-bit integers, no cjson, tables returned only when built by a constructor). So:
  - every number is made a float (`+ 0.0`): exact up to 2^53, no 32-bit wrap-around;
  - numbers leave Lua only through F(), never tostring() or `..` (which print 1e+15 or 5.0);
  - replies are built by table constructors, or `{unpack(t)}`;
  - reply errors are status words ({'INVALID', code, reason}), not redis.error_reply.

  Writes: an operation reads the account into a table, changes it in memory, and calls flush()
  once at the end. A script that refuses (402, 403, bad input) returns before flush and so
  writes nothing.
]]

local MAX_SAFE = 9007199254740991

local function F(n)
  return string.format('%.0f', n)
end

-- A decimal string of 1 to 16 digits that is at most 2^53 - 1, as a float; nil otherwise.
-- Refuses what tonumber accepts: "nan", "inf", "0x10", "1e3", " 5 ", "-1", "1.5".
local function uint(s)
  if type(s) ~= 'string' or #s == 0 or #s > 16 or not string.match(s, '^%d+$') then
    return nil
  end
  local n = tonumber(s) + 0.0
  if n > MAX_SAFE then
    return nil
  end
  return n
end

local function invalid(code, reason)
  return { 'INVALID', code, reason }
end

-- Milliseconds since the epoch: the injected clock when given, else Redis TIME.
local function clock(arg)
  if arg ~= '' then
    return uint(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000.0 + math.floor(tonumber(t[2]) / 1000)
end

local function validType(s)
  return type(s) == 'string' and #s >= 1 and #s <= 32 and string.match(s, '^[a-z][a-z0-9_-]*$') ~= nil
end

local function validSource(s)
  return type(s) == 'string' and #s >= 1 and #s <= 64 and string.match(s, '^[%w_.-]+$') ~= nil
end

local function validNonce(s)
  return type(s) == 'string' and #s == 16 and string.match(s, '^[%w_-]+$') ~= nil
end

local function bucketOrder(x, y)
  local ex = x.exp
  local ey = y.exp
  if ex == 0 then ex = math.huge end
  if ey == 0 then ey = math.huge end
  if ex ~= ey then
    return ex < ey
  end
  return x.source < y.source
end

-- Context of one script run: keys and limits, set by the operation before load().
local C = { now = 0, account = '', holds = '', deadlines = '', history = '', historyMax = 1000, doneTtl = 86400000 }

local function newAccount()
  return {
    f = {},
    buckets = {},
    byName = {},
    pending = 0.0,
    seq = 0.0,
    dirty = {},
    log = {},
    holdSet = {},
    holdDel = {},
    deadlineSet = {},
    deadlineDel = {},
  }
end

local function addBucket(A, exp, source, amount)
  local name = 'b' .. F(exp) .. ':' .. source
  local b = A.byName[name]
  if not b then
    b = { name = name, exp = exp, source = source, amount = 0.0 }
    A.byName[name] = b
    A.buckets[#A.buckets + 1] = b
    table.sort(A.buckets, bucketOrder)
  end
  b.amount = b.amount + amount
  A.dirty[name] = b
  return b
end

local function load()
  local flat = redis.call('HGETALL', C.account)
  if #flat == 0 then
    return nil
  end
  local A = newAccount()
  for i = 1, #flat, 2 do
    local name = flat[i]
    local exp, source = string.match(name, '^b(%d+):(.+)$')
    if exp then
      local b = { name = name, exp = tonumber(exp) + 0.0, source = source, amount = tonumber(flat[i + 1]) + 0.0 }
      A.buckets[#A.buckets + 1] = b
      A.byName[name] = b
    else
      A.f[name] = flat[i + 1]
    end
  end
  table.sort(A.buckets, bucketOrder)
  A.pending = tonumber(A.f.pe or '0') + 0.0
  A.seq = tonumber(A.f.sq or '0') + 0.0
  return A
end

local function available(A)
  local sum = 0.0
  for i = 1, #A.buckets do
    sum = sum + A.buckets[i].amount
  end
  return sum
end

-- Appends one movement to the history (written by flush). amount is signed.
local function record(A, kind, amount, source, endpoint)
  A.seq = A.seq + 1
  local sign = ''
  if amount < 0 then
    sign = '-'
    amount = -amount
  end
  A.log[#A.log + 1] = F(A.seq) .. '|' .. F(C.now) .. '|' .. kind .. '|' .. sign .. F(amount) .. '|' ..
    F(available(A) + A.pending) .. '|' .. source .. '|' .. endpoint
end

local function setHold(A, nonce, rec, deadline)
  A.holdSet[nonce] = rec
  A.holdDel[nonce] = nil
  A.deadlineSet[nonce] = deadline
  A.deadlineDel[nonce] = nil
end

local function dropHold(A, nonce)
  A.holdSet[nonce] = nil
  A.holdDel[nonce] = true
  A.deadlineSet[nonce] = nil
  A.deadlineDel[nonce] = true
end

-- A pending hold: P|held|expiresAt|alloc|nominal|endpoint, alloc = "bucket=amount,..." in
-- spending order. A resolved one: state|charged|returned, state C(ommitted), R(eleased),
-- E(xpired) or V(oid: resolved before it was ever reserved).
local function parseHold(rec)
  local held, expiresAt, alloc, nominal, endpoint = string.match(rec, '^P|(%d+)|(%d+)|([^|]*)|(%d+)|(.*)$')
  if not held then
    return nil
  end
  return {
    held = tonumber(held) + 0.0,
    expiresAt = tonumber(expiresAt) + 0.0,
    alloc = alloc,
    nominal = tonumber(nominal) + 0.0,
    endpoint = endpoint,
  }
end

-- Gives `amount` back from the hold's pending total to the bucket it came from; a bucket that
-- has expired meanwhile does not come back to life: that part is recorded as expired.
local function giveBack(A, name, amount)
  if amount <= 0 then
    return
  end
  A.pending = A.pending - amount
  local exp, source = string.match(name, '^b(%d+):(.+)$')
  exp = tonumber(exp) + 0.0
  if exp ~= 0 and exp <= C.now then
    record(A, 'expire', -amount, source, '')
  else
    addBucket(A, exp, source, amount)
  end
end

-- Resolves a pending hold: charges `charge` from the allocations in spending order and gives
-- the rest back where it came from. Returns what was given back.
local function resolveHold(A, hold, charge, endpoint)
  if charge > 0 then
    A.pending = A.pending - charge
    record(A, 'charge', -charge, 'usage', endpoint)
  end
  local toCharge = charge
  local returned = 0.0
  for name, amount in string.gmatch(hold.alloc, '([^,=]+)=(%d+)') do
    amount = tonumber(amount) + 0.0
    local take = amount
    if take > toCharge then
      take = toCharge
    end
    toCharge = toCharge - take
    giveBack(A, name, amount - take)
    returned = returned + amount - take
  end
  return returned
end

-- Lazy maintenance, run by every script that loads an account: voids holds past their
-- deadline (giving their credits back), forgets resolved holds past their retention, and
-- expires grant buckets past their expiry.
local function maintain(A)
  local due = redis.call('ZRANGEBYSCORE', C.deadlines, '-inf', F(C.now), 'LIMIT', 0, 1000)
  for i = 1, #due do
    local nonce = due[i]
    local rec = redis.call('HGET', C.holds, nonce)
    local hold = rec and parseHold(rec)
    if hold then
      local returned = resolveHold(A, hold, 0, hold.endpoint)
      setHold(A, nonce, 'E|0|' .. F(returned), C.now + C.doneTtl)
    else
      dropHold(A, nonce)
    end
  end
  for i = 1, #A.buckets do
    local b = A.buckets[i]
    if b.exp ~= 0 and b.exp <= C.now and b.amount > 0 then
      local amount = b.amount
      b.amount = 0.0
      A.dirty[b.name] = b
      record(A, 'expire', -amount, b.source, '')
    end
  end
end

-- Creates an account in memory (flush writes it), with its signup grant.
local function create(accountType, flags, signup, signupTtl)
  local A = newAccount()
  A.f.ty = accountType
  A.f.ct = F(C.now)
  if flags ~= '' then
    A.f.fl = flags
  end
  A.fieldsDirty = true
  if signup > 0 then
    local exp = 0.0
    if signupTtl > 0 then
      exp = C.now + signupTtl
    end
    addBucket(A, exp, 'signup', signup)
    record(A, 'grant', signup, 'signup', '')
  end
  return A
end

local function flush(A)
  local hset = {}
  for name, b in pairs(A.dirty) do
    if b.amount > 0 then
      hset[#hset + 1] = name
      hset[#hset + 1] = F(b.amount)
    else
      redis.call('HDEL', C.account, name)
    end
  end
  if A.fieldsDirty then
    for name, value in pairs(A.f) do
      hset[#hset + 1] = name
      hset[#hset + 1] = value
    end
  end
  hset[#hset + 1] = 'pe'
  hset[#hset + 1] = F(A.pending)
  hset[#hset + 1] = 'sq'
  hset[#hset + 1] = F(A.seq)
  redis.call('HSET', C.account, unpack(hset))
  for nonce in pairs(A.holdDel) do
    redis.call('HDEL', C.holds, nonce)
  end
  for nonce in pairs(A.deadlineDel) do
    redis.call('ZREM', C.deadlines, nonce)
  end
  for nonce, rec in pairs(A.holdSet) do
    redis.call('HSET', C.holds, nonce, rec)
  end
  for nonce, deadline in pairs(A.deadlineSet) do
    redis.call('ZADD', C.deadlines, F(deadline), nonce)
  end
  if #A.log > 0 then
    redis.call('LPUSH', C.history, unpack(A.log))
    redis.call('LTRIM', C.history, 0, C.historyMax - 1)
  end
end

local function changed(A)
  return next(A.dirty) ~= nil or next(A.holdSet) ~= nil or next(A.holdDel) ~= nil or #A.log > 0
end

local function counters(A)
  return F(available(A)), F(A.pending)
end

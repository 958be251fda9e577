--[[
  lib: helpers shared by every creditgate script. scripts.ts prepends this file to each
  operation's file; it is never run alone.

  Portability: the same code runs on Redis (Lua 5.1, doubles) and on ioredis-mock (Lua 5.3 in
  JS, 32-bit integers, no cjson, tables returned only when built by a constructor). So:
  - every number is made a float (`+ 0.0`): exact up to 2^53, no 32-bit wrap-around;
  - a string known to hold digits (matched by a pattern, or written by these scripts) becomes a
    number by that same `+ 0.0`, which parses it once; tonumber() parses it twice (strtod is
    6 % of a settlement's instructions when every number went through tonumber);
  - numbers leave Lua only through F(), never tostring() or `..` (which print 1e+15 or 5.0);
  - the constant arguments of the commands every call runs are strings ('0', not 0): Redis
    prints a number argument with sprintf('%.17g'), about 1,500 instructions each;
  - replies are built by table constructors, or `{unpack(t)}`;
  - reply errors are status words ({'INVALID', code, reason}), not redis.error_reply.

  Writes: an operation reads the account into a table, changes it in memory, and calls flush()
  once at the end. A script that refuses (402, 403, bad input) returns before flush and so
  writes nothing.

  Time: maintain() applies what fell due since the account was last written (hold deadlines,
  grant expiries, subscription refreshes) in time order, each at its own time (C.at), so the
  history reads as if it had happened on time, however late the account is touched again.
  calendar.lua is composed before this file.
]]

local MAX_SAFE = 9007199254740991

-- Integers print fastest through '%d' (a C long, 64 bits on Redis's Lua 5.1); Lua 5.3 in JS
-- (ioredis-mock) has 32-bit integers there, so it prints floats with '%.0f'. Both print every
-- integer up to 2^53 exactly.
local INT_FORMAT = '%d'
if _VERSION ~= 'Lua 5.1' then
  INT_FORMAT = '%.0f'
end

-- Numbers printed in this script run. Printing is the costliest step left in the scripts (a
-- string.format costs Redis as much as an HGET), and a run prints the same few numbers again
-- and again: its clock, deadlines, prices, and in a batch the same ones for every operation.
local printed = {}

local function F(n)
  local s = printed[n]
  if not s then
    s = string.format(INT_FORMAT, n)
    -- 0 and -0 are one table key; '%.0f' prints the second '-0'. NaN is no key at all.
    if n == n and n ~= 0 then
      printed[n] = s
    end
  end
  return s
end

-- A decimal string of 1 to 16 digits that is at most 2^53 - 1, as a float; nil otherwise.
-- Refuses what tonumber accepts: "nan", "inf", "0x10", "1e3", " 5 ", "-1", "1.5".
-- Checked strings are remembered for the script run: the operations of a batch repeat the same
-- limits (holdMs, retention, history size), which are then checked once.
local checked = {}

local function uint(s)
  local known = checked[s]
  if known ~= nil then
    return known or nil
  end
  if type(s) ~= 'string' or #s == 0 or #s > 16 or not string.find(s, '^%d+$') then
    return nil
  end
  local n = s + 0.0
  if n > MAX_SAFE then
    n = false
  end
  checked[s] = n
  return n or nil
end

local function invalid(code, reason)
  return { 'INVALID', code, reason }
end

-- Redis TIME, read once per script run: a batch of operations is one atomic step.
local timeNow = nil

-- Milliseconds since the epoch: the injected clock when given, else Redis TIME.
local function clock(arg)
  if arg ~= '' then
    return uint(arg)
  end
  if not timeNow then
    local t = redis.call('TIME')
    timeNow = t[1] * 1000.0 + math.floor(t[2] / 1000)
  end
  return timeNow
end

local function validType(s)
  return type(s) == 'string' and #s >= 1 and #s <= 32 and string.match(s, '^[a-z][a-z0-9_-]*$') ~= nil
end

local function validSource(s)
  return type(s) == 'string' and #s >= 1 and #s <= 64 and string.match(s, '^[%w_.-]+$') ~= nil
end

local function validNonce(s)
  return type(s) == 'string' and #s == 16 and string.find(s, '^[%w_-]+$') ~= nil
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

-- Context of one script run: keys and limits, set by the operation before load(). C.at, when
-- set, is the time of the lazy event maintain() is applying (<= C.now).
-- C.outcomes is the outcomes list's key in the scripts that take it (resolve, maintain), else nil.
local C = {
  now = 0,
  account = '',
  holds = '',
  history = '',
  outcomes = nil,
  historyMax = 1000,
  doneTtl = 86400000,
}

local function at()
  return C.at or C.now
end

-- Source of the credits a subscription grants; grant() refuses it, so only subscriptions make it.
local SUB = 'subscription'
-- Refreshes one run applies at most (50 years of months): an account idle longer than that
-- catches up over its next calls instead of in one long script.
local MAX_REFRESHES = 600

-- Starts an account script: reads the clock into C.now and binds keys[1..3] (account, holds,
-- history) with the limits from their ARGV strings; a script that takes the outcomes list
-- (keys[4]) binds it after. `keys` is the script's KEYS, or one operation's in a batch.
-- Returns an INVALID reply for a bad argument, nil when all is well.
local function startAccount(keys, nowArg, doneTtlArg, historyMaxArg)
  C.now = clock(nowArg)
  if not C.now then
    return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'now')
  end
  local doneTtl = uint(doneTtlArg)
  local historyMax = uint(historyMaxArg)
  if not doneTtl or not historyMax or historyMax < 1 then
    return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'doneTtl or historyMax')
  end
  C.account = keys[1]
  C.holds = keys[2]
  C.history = keys[3]
  C.outcomes = nil
  C.doneTtl = doneTtl
  C.historyMax = historyMax
  return nil
end

local function newAccount()
  return {
    -- The account's fields other than its buckets. Listed, though nil, so that the table is made
    -- with room for them: one that grows a key at a time is rebuilt at 1, 2, 4 and 8 keys.
    f = { ty = nil, ct = nil, fl = nil, pe = nil, sq = nil, nd = nil, of = nil, su = nil },
    -- Sorted soonest-expiring first (bucketOrder). A bucket this run changed is `dirty`, and
    -- then so is bucketsDirty: flush looks for them only then.
    buckets = {},
    bucketsDirty = false,
    pending = 0.0,
    seq = 0.0,
    log = {},
    -- Records of the holds hash to write: nonce -> record, or false to delete it.
    holdChanges = {},
    -- The earliest deadline among the records of the holds hash, 0 when it has none; it may be
    -- earlier than that (a settlement does not raise it), never later. Set, only then: ndDirty.
    nd = 0.0,
    -- When the oldest entry of the outcomes list (see rememberOutcome) is due to be forgotten, 0
    -- when it is empty. Set only by a run that changes the list: ofDirty, outcomes (the entries
    -- it appends) and trim (the elements it forgets from the front: two an outcome).
    of = 0.0,
  }
end

-- The bucket of that field name, or nil. An account has a few buckets: a scan beats a table.
local function bucketNamed(A, name)
  for i = 1, #A.buckets do
    if A.buckets[i].name == name then
      return A.buckets[i]
    end
  end
  return nil
end

-- Marks a bucket changed: flush writes it, or deletes its field when it is empty.
local function touch(A, b)
  b.dirty = true
  A.bucketsDirty = true
end

local function addBucket(A, exp, source, amount)
  local name = 'b' .. F(exp) .. ':' .. source
  local b = bucketNamed(A, name)
  if not b then
    b = { name = name, exp = exp, source = source, amount = 0.0, dirty = false }
    A.buckets[#A.buckets + 1] = b
    table.sort(A.buckets, bucketOrder)
  end
  b.amount = b.amount + amount
  touch(A, b)
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
    -- Every other field has a two-letter name: only a longer one is worth a pattern match.
    local exp, source = nil, nil
    if #name > 2 then
      exp, source = string.match(name, '^b(%d+):(.+)$')
    end
    if exp then
      A.buckets[#A.buckets + 1] = {
        name = name, exp = exp + 0.0, source = source, amount = flat[i + 1] + 0.0, dirty = false,
      }
    else
      A.f[name] = flat[i + 1]
    end
  end
  if #A.buckets > 1 then
    table.sort(A.buckets, bucketOrder)
  end
  A.pending = (A.f.pe or '0') + 0.0
  A.seq = (A.f.sq or '0') + 0.0
  A.nd = (A.f.nd or '0') + 0.0
  A.of = (A.f.of or '0') + 0.0
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
  A.log[#A.log + 1] = F(A.seq) .. '|' .. F(at()) .. '|' .. kind .. '|' .. sign .. F(amount) .. '|' ..
    F(available(A) + A.pending) .. '|' .. source .. '|' .. endpoint
end

-- The account's subscription (field `su`), parsed once per run, or nil. Stored as
--   plan|monthly|rollover|anchor|n|ends|allowance
-- anchor     period k starts at addMonths(anchor, k) (UTC, day clamped; see calendar.lua)
-- n          the next period to grant: periods 0 .. n-1 were granted; S.next is its start,
--            which is also when the current period's credits expire
-- ends       the anniversary at which the subscription ends (no period starts at or after
--            it), 0 while it renews
-- allowance  credits granted for the current period (the plan's, or more after an upgrade)
local function subscription(A)
  if A.sub == nil then
    A.sub = false
    local su = A.f.su
    local plan, monthly, rollover, anchor, n, ends, allowance
    if su then
      plan, monthly, rollover, anchor, n, ends, allowance =
        string.match(su, '^([^|]+)|(%d+)|([01])|(%d+)|(%d+)|(%d+)|(%d+)$')
    end
    if plan then
      A.sub = {
        plan = plan,
        monthly = monthly + 0.0,
        rollover = rollover == '1',
        anchor = anchor + 0.0,
        n = n + 0.0,
        ends = ends + 0.0,
        allowance = allowance + 0.0,
      }
      A.sub.next = addMonths(A.sub.anchor, A.sub.n)
    end
  end
  return A.sub or nil
end

-- Writes A.sub back to the account (flush() writes it), or removes the field when A.sub is false.
local function saveSubscription(A)
  local S = A.sub
  if S then
    local rollover = '0'
    if S.rollover then
      rollover = '1'
    end
    A.f.su = S.plan .. '|' .. F(S.monthly) .. '|' .. rollover .. '|' .. F(S.anchor) .. '|' .. F(S.n) .. '|' ..
      F(S.ends) .. '|' .. F(S.allowance)
    A.dropSubscription = nil
  else
    A.f.su = nil
    A.dropSubscription = true
  end
  A.fieldsDirty = true
end

-- Whether period S.next may still start: the subscription renews, or ends later.
local function renews(S)
  return S.ends == 0 or S.next < S.ends
end

-- Grants period S.n, at C.at: monthly credits expiring when the period ends. The previous
-- period's unused credits expire first (recorded), or, with rollover, move into the new
-- period's bucket (a carry, not a movement: the balance does not change, so no entry).
local function refresh(A, S)
  local periodEnd = addMonths(S.anchor, S.n + 1)
  local old = bucketNamed(A, 'b' .. F(S.next) .. ':' .. SUB)
  if old and old.amount > 0 then
    local amount = old.amount
    old.amount = 0.0
    touch(A, old)
    if S.rollover then
      addBucket(A, periodEnd, SUB, amount)
    else
      record(A, 'expire', -amount, SUB, '')
    end
  end
  addBucket(A, periodEnd, SUB, S.monthly)
  record(A, 'grant', S.monthly, SUB, '')
  S.n = S.n + 1
  S.next = periodEnd
  S.allowance = S.monthly
  saveSubscription(A)
end

-- Where a held subscription credit goes when it comes back after its period ended: into the
-- current period when the subscription rolls over (it would have been carried had it not been
-- held), else nowhere (it expires). Only credits of this subscription (expiring after its
-- anchor) are carried, and only while it is active.
local function rolloverTarget(A, exp)
  local S = subscription(A)
  if S and S.rollover and S.n >= 1 and exp > S.anchor and exp < S.next and S.next > at() then
    return S.next
  end
  return nil
end

-- The subscription for a reply: plan|monthly|rollover|anchor|periodStart|periodEnd|renewsAt|ends,
-- '-' for none; '' without a subscription.
local function subscriptionReply(A)
  local S = subscription(A)
  if not S then
    return ''
  end
  local rollover = '0'
  if S.rollover then
    rollover = '1'
  end
  local periodStart, periodEnd, renewsAt, ends = '-', '-', '-', '-'
  if S.n >= 1 then
    periodStart = F(addMonths(S.anchor, S.n - 1))
    periodEnd = F(S.next)
  end
  if renews(S) then
    renewsAt = F(S.next)
  end
  if S.ends ~= 0 then
    ends = F(S.ends)
  end
  return S.plan .. '|' .. F(S.monthly) .. '|' .. rollover .. '|' .. F(S.anchor) .. '|' .. periodStart .. '|' ..
    periodEnd .. '|' .. renewsAt .. '|' .. ends
end

-- The holds hash keeps pending holds and the outcomes a resent reserve must find, each until
-- its deadline: a pending hold's is its expiry (P|held|expiresAt|...), an outcome's the time it
-- is forgotten (state|charged|returned|forgetAt). The account's `nd` field says when the first
-- may be due, so that a script reads the hash to find due records only then: no sorted set of
-- deadlines to write on every reserve and settlement.
local function setHold(A, nonce, rec, deadline)
  A.holdChanges[nonce] = rec
  if A.nd == 0 or deadline < A.nd then
    A.nd = deadline
    A.ndDirty = true
  end
end

-- The reply status of an outcome's state letter; nil for none of them.
local function outcomeStatus(state)
  if state == 'C' then
    return 'COMMITTED'
  elseif state == 'R' then
    return 'RELEASED'
  elseif state == 'E' then
    return 'EXPIRED'
  elseif state == 'V' then
    return 'VOID'
  end
  return nil
end

-- An outcome (state|charged|returned) as it is remembered, with the time it is forgotten at,
-- in the holds hash and the outcomes list alike; and that time.
local function outcomeRecord(outcome)
  local forgetAt = C.now + C.doneTtl
  return outcome .. '|' .. F(forgetAt), forgetAt
end

-- Keeps an outcome in the holds hash (expired, void, cancelled) for the retention.
local function keepOutcome(A, nonce, outcome)
  local rec, forgetAt = outcomeRecord(outcome)
  setHold(A, nonce, rec, forgetAt)
end

local function dropHold(A, nonce)
  A.holdChanges[nonce] = false
end

-- The deadline of a record (a pending hold's expiry, an outcome's forget time); 1 (long due) for
-- one that cannot be read, which is then dropped.
local function recordDeadline(rec)
  local deadline = string.match(rec, '^P|%d+|(%d+)|') or string.match(rec, '^%u|%d+|%d+|(%d+)$')
  if deadline then
    return deadline + 0.0
  end
  return 1.0
end

-- Whether nonce x comes before y in byte order (Lua compares strings by the locale's collation).
local function byteBefore(x, y)
  for i = 1, math.min(#x, #y) do
    local a, b = string.byte(x, i), string.byte(y, i)
    if a ~= b then
      return a < b
    end
  end
  return #x < #y
end

local function dueOrder(x, y)
  if x.deadline ~= y.deadline then
    return x.deadline < y.deadline
  end
  return byteBefore(x.nonce, y.nonce)
end

local NOTHING_DUE = {}

-- The records of the holds hash due by now, soonest first (ties in nonce order), at most 1000;
-- read only when A.nd says one may be. Sets A.nd to the deadline of the first record left.
-- Credits pending with no deadline kept (data written before the `nd` field, or damaged) have
-- the hash read too, so that no hold stays pending past its expiry.
local function dueHolds(A)
  if A.nd > C.now or (A.nd == 0 and A.pending <= 0) then
    return NOTHING_DUE
  end
  local flat = redis.call('HGETALL', C.holds)
  local due = {}
  local nextAt = 0.0
  for i = 1, #flat, 2 do
    local deadline = recordDeadline(flat[i + 1])
    if deadline <= C.now then
      due[#due + 1] = { nonce = flat[i], rec = flat[i + 1], deadline = deadline }
    elseif nextAt == 0 or deadline < nextAt then
      nextAt = deadline
    end
  end
  table.sort(due, dueOrder)
  for i = #due, 1001, -1 do
    -- Beyond the limit of one run: left for the next.
    if nextAt == 0 or due[i].deadline < nextAt then
      nextAt = due[i].deadline
    end
    due[i] = nil
  end
  A.nd = nextAt
  A.ndDirty = true
  return due
end

-- The outcomes list keeps the outcome of each hold settled by a commit or release, in the order
-- they were made: nonce, then state|charged|returned|forgetAt. A reserve is resent only when its
-- reply was lost, and then no one could have settled its hold, so it never needs to look here:
-- the holds hash it reads keeps pending holds and the few outcomes a resent reserve must find
-- (expired, voided, cancelled), and stays small however many calls an account makes. A resent
-- settlement, which does need these outcomes, finds them with LPOS. They are forgotten from the
-- front once due, with no sorted set: the account's `of` field says when the first is due.
local function rememberOutcome(A, nonce, outcome)
  local rec, forgetAt = outcomeRecord(outcome)
  local list = A.outcomes
  if list then
    list[#list + 1] = nonce
    list[#list + 1] = rec
  else
    A.outcomes = { nonce, rec }
  end
  if A.of == 0 then
    A.of = forgetAt
    A.ofDirty = true
  end
end

-- The remembered outcome of `nonce` (state|charged|returned|forgetAt), or nil. Entries this run
-- forgets (the first A.trim elements) are gone already. Looked for from the newest: a resent
-- settlement comes seconds after the first.
local function findOutcome(A, nonce)
  local index = redis.call('LPOS', C.outcomes, nonce, 'RANK', '-1')
  if index and index >= (A.trim or 0) then
    return redis.call('LINDEX', C.outcomes, index + 1) or nil
  end
  return nil
end

-- Forgets the outcomes due by now from the front of the list (at most 1000 a run; flush trims
-- them), and sets A.of to when the next one is due. An entry that cannot be read is forgotten.
-- The list is in the order the outcomes were made: should a later entry be due earlier (the
-- retention was shortened, or an injected clock went back), it waits for the ones before it.
local function forgetOutcomes(A)
  A.trim = 0
  A.ofDirty = true
  local size = 4
  while true do
    local chunk = redis.call('LRANGE', C.outcomes, A.trim, A.trim + size - 1)
    for i = 2, #chunk, 2 do
      local forgetAt = recordDeadline(chunk[i])
      if forgetAt > C.now then
        A.of = forgetAt
        return
      end
      A.trim = A.trim + 2
      if A.trim == 2000 then
        return -- 1000 outcomes; A.of stays due: the next run goes on
      end
    end
    if #chunk < size then
      A.of = 0.0
      return
    end
    size = 64
  end
end

-- A pending hold: P|held|expiresAt|alloc|nominal|endpoint, alloc = "bucket=amount,..." in
-- spending order. A resolved one: state|charged|returned|forgetAt, state C(ommitted),
-- R(eleased), E(xpired) or V(oid: resolved before it was ever reserved).
local function parseHold(rec)
  local held, expiresAt, alloc, nominal, endpoint = string.match(rec, '^P|(%d+)|(%d+)|([^|]*)|(%d+)|(.*)$')
  if not held then
    return nil
  end
  return {
    held = held + 0.0,
    expiresAt = expiresAt + 0.0,
    alloc = alloc,
    nominal = nominal + 0.0,
    endpoint = endpoint,
  }
end

-- Gives `amount` back from the hold's pending total to the bucket it came from; a bucket that
-- has expired meanwhile does not come back to life: that part is recorded as expired (or, for
-- a subscription that rolls over, joins the current period: see rolloverTarget).
local function giveBack(A, name, amount)
  if amount <= 0 then
    return
  end
  A.pending = A.pending - amount
  local exp, source = string.match(name, '^b(%d+):(.+)$')
  exp = exp + 0.0
  if exp ~= 0 and exp <= at() then
    local target = nil
    if source == SUB then
      target = rolloverTarget(A, exp)
    end
    if target then
      addBucket(A, target, source, amount)
    else
      record(A, 'expire', -amount, source, '')
    end
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
  if charge == hold.held then
    -- What comes back is what was held beyond the charge (the allocations add up to what was
    -- held): none here, so the allocations need not be read.
    return 0.0
  end
  local toCharge = charge
  local returned = 0.0
  for name, amount in string.gmatch(hold.alloc, '([^,=]+)=(%d+)') do
    amount = amount + 0.0
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

-- Lazy maintenance, run by every script that loads an account: applies, in time order and
-- each at its own time, what fell due up to now: subscription refreshes (catching up every
-- missed month), holds past their deadline (voided, their credits given back), records of the
-- holds hash past their retention (forgotten) and grant buckets past their expiry. At equal
-- times a refresh comes first (so a rollover carries what a hold gives back at that instant),
-- then holds, then expiries. Then a subscription past its end is removed. Finally, in the
-- scripts that take the outcomes list (resolve, maintain), the outcomes past their retention
-- are forgotten.
local function maintain(A)
  local due = dueHolds(A)
  local S = subscription(A)
  local h = 1
  local refreshes = 0
  while true do
    local t = math.huge
    local event = nil
    if S and refreshes < MAX_REFRESHES and S.next <= C.now and renews(S) then
      t = S.next
      event = 'refresh'
    end
    if h <= #due and due[h].deadline < t then
      t = due[h].deadline
      event = 'hold'
    end
    -- Buckets are sorted soonest-expiring first: the first non-empty one is the next to expire.
    for i = 1, #A.buckets do
      local b = A.buckets[i]
      if b.amount > 0 then
        if b.exp ~= 0 and b.exp <= C.now and b.exp < t then
          t = b.exp
          event = b
        end
        break
      end
    end
    if event == nil then
      break
    end
    C.at = t
    if event == 'refresh' then
      refresh(A, S)
      refreshes = refreshes + 1
    elseif event == 'hold' then
      local nonce = due[h].nonce
      local hold = parseHold(due[h].rec)
      h = h + 1
      if hold then
        local returned = resolveHold(A, hold, 0, hold.endpoint)
        keepOutcome(A, nonce, 'E|0|' .. F(returned))
      else
        dropHold(A, nonce)
      end
    else
      local amount = event.amount
      event.amount = 0.0
      touch(A, event)
      record(A, 'expire', -amount, event.source, '')
    end
  end
  C.at = nil
  if S and S.ends ~= 0 and S.ends <= C.now and not renews(S) then
    A.sub = false
    saveSubscription(A)
  end
  if C.outcomes and A.of ~= 0 and A.of <= C.now then
    forgetOutcomes(A)
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
  -- Made with room for eight values (a bucket, pe, sq and nd, say), not grown one at a time.
  local hset = { false, false, false, false, false, false, false, false }
  local n = 0
  if A.bucketsDirty then
    for i = 1, #A.buckets do
      local b = A.buckets[i]
      if b.dirty then
        if b.amount > 0 then
          hset[n + 1] = b.name
          hset[n + 2] = F(b.amount)
          n = n + 2
        else
          redis.call('HDEL', C.account, b.name)
        end
      end
    end
  end
  if A.fieldsDirty then
    for name, value in pairs(A.f) do
      hset[n + 1] = name
      hset[n + 2] = value
      n = n + 2
    end
    if A.dropSubscription then
      redis.call('HDEL', C.account, 'su')
    end
  end
  -- After the fields above, which hold these as they were loaded.
  hset[n + 1] = 'pe'
  hset[n + 2] = F(A.pending)
  n = n + 2
  if #A.log > 0 then
    -- The sequence moves only with the history.
    hset[n + 1] = 'sq'
    hset[n + 2] = F(A.seq)
    n = n + 2
  end
  if A.ndDirty then
    hset[n + 1] = 'nd'
    hset[n + 2] = F(A.nd)
    n = n + 2
  end
  if A.ofDirty then
    hset[n + 1] = 'of'
    hset[n + 2] = F(A.of)
    n = n + 2
  end
  redis.call('HSET', C.account, unpack(hset, 1, n))
  if next(A.holdChanges) ~= nil then
    -- Made when needed: an operation most often only sets one record (a reserve) or only
    -- deletes one (a settlement).
    local hdel, hsetHolds = nil, nil
    for nonce, rec in pairs(A.holdChanges) do
      if not rec then
        hdel = hdel or {}
        hdel[#hdel + 1] = nonce
      elseif hsetHolds then
        hsetHolds[#hsetHolds + 1] = nonce
        hsetHolds[#hsetHolds + 1] = rec
      else
        hsetHolds = { nonce, rec }
      end
    end
    if hdel then
      redis.call('HDEL', C.holds, unpack(hdel))
    end
    if hsetHolds then
      redis.call('HSET', C.holds, unpack(hsetHolds))
    end
  end
  if A.trim and A.trim > 0 then
    redis.call('LTRIM', C.outcomes, A.trim, -1)
  end
  if A.outcomes then
    redis.call('RPUSH', C.outcomes, unpack(A.outcomes))
  end
  if #A.log > 0 then
    -- In slices: unpack() refuses more than ~8000 values on Lua 5.1, and a catch-up can log more.
    local length = 0
    for i = 1, #A.log, 500 do
      length = redis.call('LPUSH', C.history, unpack(A.log, i, math.min(i + 499, #A.log)))
    end
    -- LPUSH answers the new length: trim only a list that is over the limit.
    if length > C.historyMax then
      redis.call('LTRIM', C.history, 0, C.historyMax - 1)
    end
  end
end

local function changed(A)
  return A.bucketsDirty or next(A.holdChanges) ~= nil or #A.log > 0 or
    A.fieldsDirty == true or A.ndDirty == true or A.ofDirty == true
end

-- Loads the account and applies what fell due (maintain), writing it if anything changed; nil
-- when the account does not exist. The start of every script that only reads an account.
local function loadCurrent()
  local A = load()
  if A then
    maintain(A)
    if changed(A) then
      flush(A)
    end
  end
  return A
end

local function counters(A)
  return F(available(A)), F(A.pending)
end

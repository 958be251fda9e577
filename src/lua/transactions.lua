--[[
  transactions: one page of the account's history, newest first, after lazy maintenance (so a
  refresh or an expiry that fell due is in it; those changes are written, as by every script).
  Entries are seq|time|kind|amount|balanceAfter|source|endpoint (see record in lib.lua). Every
  movement takes the next sequence number and the list keeps them newest first without gaps,
  so entry `seq` sits at index head - seq: a page is one LRANGE, and a cursor (the last seq
  seen) stays valid however many entries arrive meanwhile.

  KEYS[1] account    hash    <prefix>{id}:a
  KEYS[2] holds      hash    <prefix>{id}:h
  KEYS[3] history    list    <prefix>{id}:t
  ARGV[1] now        epoch ms, or '' for Redis TIME
  ARGV[2] before     '' for the newest entries, or a seq: entries older than it
  ARGV[3] limit      entries, 1 to 1000
  ARGV[4] doneTtl    ms a resolved hold's outcome is remembered
  ARGV[5] historyMax history entries kept

  Returns {'OK', head, retained, entry1, entry2, ...}   head: the newest seq; retained: the
                                                       length of the list
        | {'NO_ACCOUNT'}
        | {'INVALID', code, reason}
]]
local refused = startAccount(KEYS, ARGV[1], ARGV[4], ARGV[5])
if refused then
  return refused
end
local beforeArg = ARGV[2]
local limit = uint(ARGV[3])
local before = nil
if beforeArg ~= '' then
  before = uint(beforeArg)
  if not before then
    return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'cursor')
  end
end
if not limit or limit < 1 or limit > 1000 then
  return invalid('ERR_CREDIT_INVALID_ARGUMENT', 'limit')
end

local A = loadCurrent()
if not A then
  return { 'NO_ACCOUNT' }
end
local head = A.seq
local retained = redis.call('LLEN', C.history)
local start = 0.0
if before and before <= head then
  start = head - before + 1
end
local out = { 'OK', F(head), F(retained) }
if start < retained then
  local page = redis.call('LRANGE', C.history, F(start), F(start + limit - 1))
  for i = 1, #page do
    out[#out + 1] = page[i]
  end
end
return { unpack(out) }

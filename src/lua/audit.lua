--[[
  audit: recomputes the balance from the retained history and compares it with the live one,
  in one atomic step (after lazy maintenance, whose changes are written as by every script).
  The oldest retained entry's balanceAfter - amount is the starting point; every later entry
  must follow its predecessor: seq + 1, and previous balanceAfter + amount = its balanceAfter;
  the newest must carry the account's last seq. Reads the whole list: O(history length).

  KEYS[1] account    hash    <prefix>{id}:a
  KEYS[2] holds      hash    <prefix>{id}:h
  KEYS[3] history    list    <prefix>{id}:t
  ARGV[1] now        epoch ms, or '' for Redis TIME
  ARGV[2] doneTtl    ms a resolved hold's outcome is remembered
  ARGV[3] historyMax history entries kept

  Returns {'OK', live, head, entries, firstSeq, lastSeq, start, computed, breakCount,
           seq1, kind1, expected1, recorded1, ...}      at most 50 breaks listed
            live = available + pending; computed = start + the sum of the amounts; numbers may
            be negative ('-5'); kind 's' (sequence: expected/recorded seq), 'b' (balance:
            expected/recorded balanceAfter) or 'f' (unreadable entry: 0/0)
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

local list = redis.call('LRANGE', C.history, 0, -1)
local breaks = {}
local breakCount = 0
local function broken(seq, kind, expected, recorded)
  breakCount = breakCount + 1
  if breakCount <= 50 then
    breaks[#breaks + 1] = F(seq)
    breaks[#breaks + 1] = kind
    breaks[#breaks + 1] = F(expected)
    breaks[#breaks + 1] = F(recorded)
  end
end

local start, computed = 0.0, 0.0
local firstSeq, lastSeq = 0.0, 0.0
local prevSeq, prevBalance = nil, nil
for i = #list, 1, -1 do
  local seq, sign, amount, after = string.match(list[i], '^(%d+)|%d+|%a+|(%-?)(%d+)|(%-?%d+)|')
  if not seq then
    broken(prevSeq or 0, 'f', 0, 0)
  else
    seq = seq + 0.0
    amount = amount + 0.0
    if sign == '-' then
      amount = -amount
    end
    after = after + 0.0
    if prevSeq == nil then
      firstSeq = seq
      start = after - amount
      computed = start
    else
      if seq ~= prevSeq + 1 then
        broken(seq, 's', prevSeq + 1, seq)
      end
      if prevBalance + amount ~= after then
        broken(seq, 'b', prevBalance + amount, after)
      end
    end
    computed = computed + amount
    prevSeq = seq
    prevBalance = after
    lastSeq = seq
  end
end
if #list > 0 and lastSeq ~= A.seq then
  broken(A.seq, 's', A.seq, lastSeq)
end
local out = {
  'OK', F(available(A) + A.pending), F(A.seq), F(#list), F(firstSeq), F(lastSeq), F(start), F(computed),
  F(breakCount),
}
for i = 1, #breaks do
  out[#out + 1] = breaks[i]
end
return { unpack(out) }

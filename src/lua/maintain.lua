--[[
  maintain: runs the lazy maintenance of one account on its own, for the sweep: voids holds past
  their deadline (their credits go back), forgets resolved holds past their retention and
  expires grants past their expiry, exactly as every other script does on its way in, and
  forgets the settled outcomes past their retention, as a settlement does. Writes only when
  something changed. Safe to run any number of times, concurrently: each run is atomic and a
  second run finds nothing left to do.

  KEYS[1] account    hash    <prefix>{id}:a
  KEYS[2] holds      hash    <prefix>{id}:h
  KEYS[3] history    list    <prefix>{id}:t
  KEYS[4] outcomes   list    <prefix>{id}:o
  ARGV[1] now        epoch ms, or '' for Redis TIME
  ARGV[2] doneTtl    ms a resolved hold's outcome is remembered
  ARGV[3] historyMax history entries kept

  Returns {'OK', voided, forgotten, expired, more}
            voided     holds this run voided (past their deadline, unresolved)
            forgotten  resolved holds whose outcome this run forgot (past their retention)
            expired    milli-credits this run recorded as expired
            more       '1' when deadlines or outcomes are still due (one run handles at most 1000
                       of each): run again
        | {'NO_ACCOUNT'}
        | {'INVALID', code, reason}
]]
local refused = startAccount(KEYS, ARGV[1], ARGV[2], ARGV[3])
if refused then
  return refused
end
C.outcomes = KEYS[4]

local A = load()
if not A then
  return { 'NO_ACCOUNT' }
end
maintain(A)
local voided = 0.0
local forgotten = (A.trim or 0) / 2
for _, rec in pairs(A.holdChanges) do
  if not rec then
    forgotten = forgotten + 1
  elseif string.sub(rec, 1, 2) == 'E|' then
    voided = voided + 1
  end
end
local expired = 0.0
for i = 1, #A.log do
  local kind, amount = string.match(A.log[i], '^[^|]*|[^|]*|([^|]*)|%-?(%d+)|')
  if kind == 'expire' then
    expired = expired + amount
  end
end
if changed(A) then
  flush(A)
end
local more = '0'
if (A.nd ~= 0 and A.nd <= C.now) or (A.of ~= 0 and A.of <= C.now) then
  more = '1'
end
return { 'OK', F(voided), F(forgotten), F(expired), more }

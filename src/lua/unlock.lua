--[[
  unlock: deletes a key only while it still holds our value: ends the sweep's lease only while it
  is ours (a sweep whose lease timed out cannot end the lease another sweep took since), and
  withdraws a grant's idempotency claim only while it is the claim this very call made.

  KEYS[1] key    string  the lease (see sweepLeaseKey) or the claim (see claimKey)
  ARGV[1] token  the value we set: the lease's random token, or the claim's fingerprint

  Returns {'RELEASED'} | {'NOT_HELD'}
]]
local lease = KEYS[1]
local token = ARGV[1]
if redis.call('GET', lease) == token then
  redis.call('DEL', lease)
  return { 'RELEASED' }
end
return { 'NOT_HELD' }

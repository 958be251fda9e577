--[[
  unlock: ends a lease only while it is still ours, so a holder whose lease timed out cannot end
  the lease another holder took since.

  KEYS[1] lease  string  the lease key (see sweepLeaseKey)
  ARGV[1] token  the random token the holder set

  Returns {'RELEASED'} | {'NOT_HELD'}
]]
local lease = KEYS[1]
local token = ARGV[1]
if redis.call('GET', lease) == token then
  redis.call('DEL', lease)
  return { 'RELEASED' }
end
return { 'NOT_HELD' }

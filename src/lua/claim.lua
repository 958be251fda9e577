--[[
  claim: binds a grant's idempotency key to one account and one grant, across the whole
  ledger, so the same key cannot credit two accounts or two amounts. The grant itself is then
  made, once, by grant.lua in the account's own slot.

  KEYS[1] claim        string  <prefix>{#key}
  ARGV[1] fingerprint  '<encoded account id>|<amount>|<source>|<expiresAt>'

  Returns {'NEW'} | {'SAME'} | {'CONFLICT', recorded fingerprint}
]]
local fingerprint = ARGV[1]
local recorded = redis.call('GET', KEYS[1])
if not recorded then
  redis.call('SET', KEYS[1], fingerprint)
  return { 'NEW' }
end
if recorded == fingerprint then
  return { 'SAME' }
end
return { 'CONFLICT', recorded }

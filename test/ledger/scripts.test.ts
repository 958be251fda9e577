import { scripts } from '../../src/lua/scripts'
import { mockRedis, realRedis } from '../helpers/redis'

// Pure Lua (no keys): the server binary and the mock are what matter, not the topology.
const BACKENDS = ['redis', 'mock'] as const
type Backend = (typeof BACKENDS)[number]

describe.each(BACKENDS)('composed scripts on %s', (backend: Backend) => {
  const redis = backend === 'redis' ? realRedis() : mockRedis()
  afterAll(async () => {
    await redis.quit()
  })

  it.each(Object.keys(scripts))('compiles %s', async (name) => {
    const def = scripts[name as keyof typeof scripts]
    if (backend === 'redis') {
      expect(await redis.script('LOAD', def.source)).toBe(def.sha1)
    } else {
      // ioredis-mock has no SCRIPT LOAD: run the definitions with a body that returns at once
      // (every script reads its arguments first and refuses a missing clock).
      await expect(redis.eval(def.bareSource, 0)).resolves.toBeDefined()
    }
  })
})

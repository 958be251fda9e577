/**
 * Starts the demo: `npm run demo`. On real Redis when REDIS_URL is set, otherwise on an
 * embedded ioredis-mock (nothing to install; data lives in this process only).
 */
import { Redis } from 'ioredis'
import RedisMock from 'ioredis-mock'

import { createApp } from './app'
import { printWalkthrough } from './walkthrough'

const url = process.env['REDIS_URL']
const redis: Redis =
  url !== undefined && url !== '' ? new Redis(url) : new (RedisMock as unknown as new () => Redis)()
const port = Number(process.env['PORT'] ?? 3000)
const { app } = createApp({
  redis,
  ...(process.env['JWT_SECRET'] ? { jwtSecret: process.env['JWT_SECRET'] } : {}),
})

const server = app.listen(port, '127.0.0.1', () => {
  const base = `http://localhost:${port}`
  const store = url
    ? `Redis at ${url.replace(/\/\/[^@]*@/, '//***@')}`
    : 'the embedded ioredis-mock (set REDIS_URL to use Redis)'
  process.stdout.write(
    `Quant API demo listening on ${base} on ${store}\n` +
      `Dashboard: ${base}/dashboard\n\n` +
      `Try it (bash, curl and node):\n\n${printWalkthrough(base)}\n\n`,
  )
})

const stop = () => {
  server.close()
  redis.disconnect()
}
process.once('SIGINT', stop)
process.once('SIGTERM', stop)

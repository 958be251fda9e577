import { createConnection, createServer, type Server, type Socket } from 'node:net'

/**
 * A TCP proxy between a client and redis-server that can lose one reply: armed with a predicate
 * on the bytes the client sends, it forwards the matching command to Redis, waits until Redis
 * answers (so the command has run), and then drops the client's connection instead of passing
 * the answer on. Everything else is forwarded untouched.
 *
 * Made for tests that send one command at a time on the proxied connection: the first bytes
 * Redis sends after the matching command are taken to be its reply.
 */
export interface ReplyDroppingProxy {
  readonly port: number
  readonly url: string
  /** Lose the reply of the next command whose bytes satisfy `match`. */
  dropReplyTo(match: (command: string) => boolean): void
  /** Replies lost so far. */
  readonly dropped: number
  /** Connections the client opened so far (a reconnect counts). */
  readonly connections: number
  close(): Promise<void>
}

export async function startReplyDroppingProxy(targetPort: number): Promise<ReplyDroppingProxy> {
  let armed: ((command: string) => boolean) | undefined
  let dropped = 0
  let connections = 0
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    connections += 1
    const upstream = createConnection({ host: '127.0.0.1', port: targetPort })
    sockets.add(client)
    sockets.add(upstream)
    let dropNextReply = false
    const closeBoth = (): void => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('data', (chunk: Buffer) => {
      if (armed?.(chunk.toString('latin1')) === true) {
        armed = undefined
        dropNextReply = true
      }
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (dropNextReply) {
        // Redis has answered, so the command ran. The client never hears of it.
        dropped += 1
        closeBoth()
        return
      }
      client.write(chunk)
    })
    client.on('error', closeBoth)
    upstream.on('error', closeBoth)
    client.on('close', closeBoth)
    upstream.on('close', closeBoth)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      resolve()
    })
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('proxy has no port')
  return {
    port: address.port,
    url: `redis://127.0.0.1:${address.port}`,
    dropReplyTo(match) {
      armed = match
    },
    get dropped() {
      return dropped
    },
    get connections() {
      return connections
    },
    async close() {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve()
        })
      })
    },
  }
}

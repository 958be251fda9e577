import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createConnection, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * A redis-server the tests own, on a port and in a directory they choose, so that it can be
 * killed and started again on the same port with the same AOF (see `restart`). Always stopped
 * by its PID, never by name.
 */
export interface RedisProcess {
  readonly port: number
  readonly url: string
  readonly dir: string
  /** PID of the current process (changes on restart). */
  readonly pid: number
  /** Whether the current process is still running. */
  readonly running: boolean
  /** SIGKILL, as a crash would: no AOF rewrite, no shutdown save. */
  kill(): Promise<void>
  /** Starts a new process on the same port, directory and arguments; waits until it answers PING. */
  restart(): Promise<void>
  /** SIGTERM (SIGKILL after 5 s), then removes the directory unless it was given. */
  stop(): Promise<void>
}

/** Asks the kernel for a free loopback port. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      if (address === null || typeof address === 'string') {
        reject(new Error('no port'))
        return
      }
      server.close(() => {
        resolve(address.port)
      })
    })
  })
}

const live = new Set<ChildProcess>()
let exitHookInstalled = false

/** A last resort: a test process that dies must not leave its redis-servers behind. */
function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once('exit', () => {
    for (const child of live) {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(child.pid, 'SIGKILL')
        } catch {
          // already gone
        }
      }
    }
  })
}

/** Sends one inline command over a fresh socket and returns the first reply line. */
export async function rawCommand(port: number, command: string, timeoutMs = 1000): Promise<string> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    let data = ''
    const done = (value: string): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(value)
    }
    const timer = setTimeout(() => {
      done('-TIMEOUT')
    }, timeoutMs)
    socket.once('connect', () => socket.write(`${command}\r\n`))
    socket.on('data', (chunk) => {
      data += chunk.toString('utf8')
      if (data.includes('\r\n')) done(data.slice(0, data.indexOf('\r\n')))
    })
    socket.once('error', (error) => {
      done(`-SOCKET ${error.message}`)
    })
  })
}

/** Waits until the server on `port` answers PING with PONG (not LOADING, not refused). */
export async function waitForPong(port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = ''
  while (Date.now() < deadline) {
    last = await rawCommand(port, 'PING')
    if (last === '+PONG') return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`redis-server on port ${port} did not answer PONG in time (last: ${last})`)
}

/**
 * Starts a redis-server bound to 127.0.0.1 on a free port (or `port`), in a fresh temporary
 * directory (or `dir`). Defaults: no RDB, no AOF, `noeviction`; `args` come last and win.
 */
export async function spawnRedis(
  options: { port?: number; dir?: string; args?: readonly string[] } = {},
): Promise<RedisProcess> {
  installExitHook()
  const port = options.port ?? (await freePort())
  const ownDir = options.dir === undefined
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'creditgate-redis-'))
  const argv = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
    '--maxmemory-policy',
    'noeviction',
    ...(options.args ?? []),
  ]
  let child: ChildProcess | undefined

  const start = async (): Promise<void> => {
    const next = spawn('redis-server', argv, { stdio: 'ignore' })
    if (next.pid === undefined) throw new Error('redis-server failed to start (is it installed?)')
    live.add(next)
    next.once('exit', () => live.delete(next))
    child = next
    try {
      await waitForPong(port)
    } catch (error) {
      await signal('SIGKILL')
      throw error
    }
  }

  const signal = async (name: NodeJS.Signals): Promise<void> => {
    const current = child
    if (current?.pid === undefined || current.exitCode !== null || current.signalCode !== null)
      return
    const exited = new Promise((r) => current.once('exit', r))
    process.kill(current.pid, name)
    const timer = setTimeout(() => {
      if (current.exitCode === null && current.signalCode === null && current.pid !== undefined)
        process.kill(current.pid, 'SIGKILL')
    }, 5000)
    await exited
    clearTimeout(timer)
  }

  await start()
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    get pid() {
      return child?.pid ?? -1
    },
    get running() {
      return child?.exitCode === null && child.signalCode === null
    },
    kill: () => signal('SIGKILL'),
    restart: async () => {
      await signal('SIGKILL')
      await start()
    },
    stop: async () => {
      await signal('SIGTERM')
      if (ownDir) rmSync(dir, { recursive: true, force: true })
    },
  }
}

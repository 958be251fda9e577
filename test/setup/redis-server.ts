import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A `redis-server` process the tests own, stopped by its PID. */
export interface OwnedRedis {
  readonly port: number
  readonly url: string
  readonly pid: number
  readonly dir: string
  readonly process: ChildProcess
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

async function waitForPort(port: number, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: '127.0.0.1', port }, () => {
        socket.end()
        resolve(true)
      })
      socket.once('error', () => {
        resolve(false)
      })
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`redis-server did not accept connections on port ${port} in time`)
}

/**
 * Starts a private `redis-server` on a free loopback port, or on `atPort` (to restart a stopped
 * server where its clients expect it). Throws with a clear message when the binary is missing,
 * so a real-Redis suite fails instead of skipping.
 */
export async function startRedis(
  extraArgs: readonly string[] = [],
  atPort?: number,
): Promise<OwnedRedis> {
  const probe = spawnSync('redis-server', ['--version'], { encoding: 'utf8' })
  if (probe.error !== undefined || probe.status !== 0) {
    throw new Error(
      'creditgate tests need a real redis-server: install it (apt-get install -y redis-server) or set REDIS_URL',
    )
  }
  const port = atPort ?? (await freePort())
  const dir = mkdtempSync(join(tmpdir(), 'creditgate-redis-'))
  const child = spawn(
    'redis-server',
    [
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
      ...extraArgs,
    ],
    { stdio: 'ignore', detached: false },
  )
  if (child.pid === undefined) throw new Error('redis-server failed to start')
  const pid = child.pid
  await waitForPort(port, Date.now() + 10_000)
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid,
    dir,
    process: child,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r))
        process.kill(pid, 'SIGTERM')
        await exited
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

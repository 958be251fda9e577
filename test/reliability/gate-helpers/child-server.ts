import { spawn, type ChildProcess } from 'node:child_process'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

/** One line the child server reported (see gate-server.ts). */
export interface ServerLine {
  readonly ev: string
  readonly holdId?: string
  readonly path?: string
  readonly port?: number
  readonly reason?: string
  readonly phase?: string
}

/** The gated Express app of gate-server.ts, running in its own Node process. */
export interface ChildServer {
  readonly url: string
  readonly pid: number
  /** Every line reported so far (all of them once `kill` has resolved). */
  readonly lines: readonly ServerLine[]
  /** Resolves when `predicate` holds on the lines; rejects after `timeoutMs` or if the child dies. */
  waitFor(
    predicate: (lines: readonly ServerLine[]) => boolean,
    what: string,
    timeoutMs?: number,
  ): Promise<void>
  /** SIGKILL by pid, as a crash would; resolves once the process has exited and its stdout is read. */
  kill(): Promise<void>
  /** Same as kill, and a no-op when the process has already exited: for `finally`. */
  stop(): Promise<void>
}

const ROOT = resolve(__dirname, '../../..')
const HERE = __dirname

/** A last resort: a test process that dies must not leave its gate servers behind. */
const live = new Set<ChildProcess>()
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

/**
 * Starts gate-server.ts under `node --import tsx` (with the .lua loader), from the source of the
 * library, and waits until it listens. Environment: the Redis URL, key prefix and holdMs.
 */
export async function startGateServer(options: {
  readonly redisUrl: string
  readonly prefix: string
  readonly holdMs: number
}): Promise<ChildServer> {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--import',
      pathToFileURL(join(HERE, 'register-lua.mjs')).href,
      join(HERE, 'gate-server.ts'),
    ],
    {
      cwd: ROOT,
      env: {
        ...process.env,
        REDIS_URL: options.redisUrl,
        PREFIX: options.prefix,
        HOLD_MS: String(options.holdMs),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  if (child.pid === undefined) throw new Error('the gate server did not start')
  const pid = child.pid
  live.add(child)
  child.once('exit', () => live.delete(child))
  const lines: ServerLine[] = []
  const waiters = new Set<() => void>()
  let buffered = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8')
  child.stdout?.on('data', (chunk: string) => {
    buffered += chunk
    let at = buffered.indexOf('\n')
    while (at >= 0) {
      const text = buffered.slice(0, at)
      buffered = buffered.slice(at + 1)
      if (text.startsWith('{')) lines.push(JSON.parse(text) as ServerLine)
      at = buffered.indexOf('\n')
    }
    for (const check of waiters) check()
  })
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4000)
  })
  // Resolves once the process has exited and both of its pipes are drained.
  const closed = new Promise<void>((done) => {
    child.once('close', () => {
      for (const check of waiters) check()
      done()
    })
  })
  const alive = (): boolean => child.exitCode === null && child.signalCode === null

  const waitFor = async (
    predicate: (seen: readonly ServerLine[]) => boolean,
    what: string,
    timeoutMs = 15_000,
  ): Promise<void> => {
    if (predicate(lines)) return
    await new Promise<void>((done, fail) => {
      const timer = setTimeout(() => {
        waiters.delete(check)
        fail(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr: ${stderr}`))
      }, timeoutMs)
      const check = (): void => {
        if (predicate(lines)) {
          clearTimeout(timer)
          waiters.delete(check)
          done()
        } else if (!alive()) {
          clearTimeout(timer)
          waiters.delete(check)
          fail(new Error(`the gate server exited while waiting for ${what}; stderr: ${stderr}`))
        }
      }
      waiters.add(check)
    })
  }

  const kill = async (): Promise<void> => {
    if (alive()) process.kill(pid, 'SIGKILL')
    await closed
  }

  try {
    await waitFor((seen) => seen.some((l) => l.ev === 'listening'), 'the server to listen', 30_000)
  } catch (error) {
    await kill()
    throw error
  }
  const port = lines.find((l) => l.ev === 'listening')?.port
  return {
    url: `http://127.0.0.1:${port}`,
    pid,
    lines,
    waitFor,
    kill,
    stop: kill,
  }
}

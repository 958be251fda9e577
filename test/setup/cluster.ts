import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

import { freePort } from './redis-server'
import { spawnRedis, type RedisProcess } from './redis-process'

const run = promisify(execFile)

/** A real Redis Cluster the tests own: every node a redis-server on 127.0.0.1, stopped by PID. */
export interface OwnedCluster {
  readonly nodes: readonly RedisProcess[]
  /** The seed node, `redis://127.0.0.1:<port>`: an ioredis `Cluster` finds the others. */
  readonly url: string
  /** The node on `port`. */
  node(port: number): RedisProcess
  stop(): Promise<void>
}

/** `CLUSTER INFO` of one node as a map (empty when the node does not answer). */
export async function clusterInfo(port: number): Promise<Map<string, string>> {
  const reply = await bulkCommand(port, 'CLUSTER INFO')
  const info = new Map<string, string>()
  for (const line of reply.split('\r\n')) {
    const at = line.indexOf(':')
    if (at > 0) info.set(line.slice(0, at), line.slice(at + 1))
  }
  return info
}

/** The node's role from `INFO replication`: 'master', 'slave', or '' when it does not answer. */
export async function nodeRole(port: number): Promise<string> {
  const reply = await bulkCommand(port, 'INFO replication')
  return /role:(\w+)/.exec(reply)?.[1] ?? ''
}

async function bulkCommand(port: number, command: string): Promise<string> {
  // redis-cli is present wherever a cluster can be created, and parses bulk replies for us.
  try {
    const { stdout } = await run(
      'redis-cli',
      ['-h', '127.0.0.1', '-p', String(port), ...command.split(' ')],
      {
        timeout: 5000,
      },
    )
    return stdout.replace(/\r?\n/g, '\r\n')
  } catch {
    return ''
  }
}

/** One line of `CLUSTER NODES`. */
export interface ClusterNode {
  readonly id: string
  readonly port: number
  readonly role: 'master' | 'replica'
  /** The master's id, for a replica. */
  readonly masterId: string | undefined
  /** Slot ranges served, for a master. */
  readonly slots: readonly (readonly [number, number])[]
  readonly failed: boolean
}

/** The cluster as node `port` sees it (`CLUSTER NODES`). */
export async function clusterNodes(port: number): Promise<ClusterNode[]> {
  const reply = await bulkCommand(port, 'CLUSTER NODES')
  const nodes: ClusterNode[] = []
  for (const line of reply.split('\r\n')) {
    const [id, addr, flags, master, , , , , ...ranges] = line.split(' ')
    if (id === undefined || addr === undefined || flags === undefined) continue
    const nodePort = Number(/:(\d+)@/.exec(addr)?.[1])
    if (!Number.isInteger(nodePort)) continue
    const slots = ranges
      .filter((r) => /^\d+(-\d+)?$/.test(r))
      .map((r) => {
        const [from, to] = r.split('-').map(Number)
        return [from ?? 0, to ?? from ?? 0] as const
      })
    nodes.push({
      id,
      port: nodePort,
      role: flags.includes('master') ? 'master' : 'replica',
      masterId: master === '-' ? undefined : master,
      slots,
      failed: flags.includes('fail'),
    })
  }
  return nodes
}

/** The master serving `slot`, and its replicas, as node `port` sees it. */
export async function shardOf(
  port: number,
  slot: number,
): Promise<{ master: ClusterNode; replicas: ClusterNode[] }> {
  const nodes = await clusterNodes(port)
  const master = nodes.find(
    (n) => n.role === 'master' && n.slots.some(([from, to]) => slot >= from && slot <= to),
  )
  if (master === undefined) throw new Error(`no master serves slot ${slot}`)
  return { master, replicas: nodes.filter((n) => n.masterId === master.id) }
}

/** Waits until every running node says `cluster_state:ok` and knows all slots. */
export async function waitForClusterOk(
  ports: readonly number[],
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = ''
  while (Date.now() < deadline) {
    const infos = await Promise.all(ports.map((p) => clusterInfo(p)))
    last = infos.map((i) => `${i.get('cluster_state')}/${i.get('cluster_slots_ok')}`).join(' ')
    if (
      infos.every((i) => i.get('cluster_state') === 'ok' && i.get('cluster_slots_ok') === '16384')
    )
      return
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`the cluster did not reach cluster_state:ok in time (${last})`)
}

/**
 * Waits until every node sees the same shape: `masters` masters serving slots, `replicas`
 * replicas with their replication link up, nobody failing. `redis-cli --cluster create` returns
 * before the replicas' roles have spread by gossip (a second or two), and an ioredis `Cluster`
 * only learns of replicas that `CLUSTER SLOTS` lists.
 */
export async function waitForClusterStable(
  ports: readonly number[],
  masters: number,
  replicas: number,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = ''
  for (;;) {
    const views = await Promise.all(ports.map((p) => clusterNodes(p)))
    const links = await Promise.all(
      ports.map(async (p) => {
        const info = await bulkCommand(p, 'INFO replication')
        return !info.includes('role:slave') || info.includes('master_link_status:up')
      }),
    )
    const agreed = views.every(
      (view) =>
        view.filter((n) => n.role === 'master' && n.slots.length > 0 && !n.failed).length ===
          masters && view.filter((n) => n.role === 'replica' && !n.failed).length === replicas,
    )
    if (agreed && links.every(Boolean)) return
    last = views
      .map(
        (v) =>
          `${v.filter((n) => n.role === 'master').length}m/${v.filter((n) => n.role === 'replica').length}r`,
      )
      .join(' ')
    if (Date.now() > deadline) throw new Error(`the cluster did not settle in time (${last})`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/**
 * Starts a Redis Cluster of `masters` primaries with `replicas` replicas each, on free loopback
 * ports (the cluster bus on its own free port, `cluster-port`), and waits until every node says
 * `cluster_state:ok`. No persistence unless `args` says otherwise.
 */
export async function startCluster(
  options: { masters?: number; replicas?: number; args?: readonly string[] } = {},
): Promise<OwnedCluster> {
  const masters = options.masters ?? 3
  const replicas = options.replicas ?? 1
  const count = masters * (1 + replicas)
  const root = mkdtempSync(join(tmpdir(), 'creditgate-cluster-'))
  const nodes: RedisProcess[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.stop()))
    rmSync(root, { recursive: true, force: true })
  }
  try {
    const used = new Set<number>()
    const take = async (): Promise<number> => {
      for (;;) {
        const port = await freePort()
        if (!used.has(port)) {
          used.add(port)
          return port
        }
      }
    }
    const ports: [number, number][] = []
    for (let i = 0; i < count; i++) ports.push([await take(), await take()])
    const started = await Promise.allSettled(
      ports.map(([port, busPort]) => {
        const dir = join(root, String(port))
        mkdirSync(dir, { recursive: true })
        return spawnRedis({
          port,
          dir,
          args: [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            join(dir, 'nodes.conf'),
            '--cluster-port',
            String(busPort),
            '--cluster-node-timeout',
            '3000',
            // Replicas attach at once instead of after the default 5 s diskless-sync delay.
            '--repl-diskless-sync-delay',
            '0',
            '--save',
            '',
            '--appendonly',
            'no',
            ...(options.args ?? []),
          ],
        })
      }),
    )
    for (const s of started) if (s.status === 'fulfilled') nodes.push(s.value)
    for (const s of started) if (s.status === 'rejected') throw s.reason
    await run(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...nodes.map((n) => `127.0.0.1:${n.port}`),
        '--cluster-replicas',
        String(replicas),
        '--cluster-yes',
      ],
      { timeout: 60_000 },
    )
    await waitForClusterOk(nodes.map((n) => n.port))
    await waitForClusterStable(
      nodes.map((n) => n.port),
      masters,
      masters * replicas,
    )
  } catch (error) {
    await stop()
    throw new Error(
      `could not start a Redis Cluster (set CREDITGATE_CLUSTER=0 to skip the cluster backend): ${
        error instanceof Error ? error.message : String(error)
      }`,
      { cause: error },
    )
  }
  const first = nodes[0]
  if (first === undefined) throw new Error('no cluster node')
  return {
    nodes,
    url: first.url,
    node(port) {
      const found = nodes.find((n) => n.port === port)
      if (found === undefined) throw new Error(`no cluster node on port ${port}`)
      return found
    },
    stop,
  }
}

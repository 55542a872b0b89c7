// The upstream every target reads from: pre-generated media files served by nginx (as in the
// issue's reference figures) or, without nginx, by bench/static-origin.ts. Neither verifies the
// token: the benchmark isolates the proxy's cost from the RS256 checks the emulator would do.
// A second, close-delimited origin (static-origin.ts --close-delimited) serves the same files
// with bodies that end when the connection closes, for one of the memory runs; a third serves
// them over HTTPS, for the host-prefixed routes (bench/host-routes.ts); a fourth serves copies of
// them under new ids and logs every request, for the cache (bench/cache.ts); a fifth is nginx
// with small kernel send buffers, for the thousand slow downloads (run.ts's many-clients run).
import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { PathSeries } from './load.js'
import { copiesOriginConfig, nginxHasSsl, originConfig, startNginx, type TlsFiles } from './nginx.js'
import { freePort, HOST, waitForPort } from './ports.js'
import { type Child, LOAD_CORE, type ProcessGroup } from './processes.js'

export interface BodySize {
  readonly label: string
  readonly bytes: number
  readonly id: string
  /** Concurrent connections of the throughput runs for this size. */
  readonly connections: number
}

const KiB = 1024
const MiB = 1024 * KiB

export const BODY_SIZES: readonly BodySize[] = [
  { label: '1 KiB', bytes: KiB, id: '0b1a0000-0000-4000-8000-000000000001', connections: 32 },
  { label: '64 KiB', bytes: 64 * KiB, id: '0b1a0000-0000-4000-8000-000000000064', connections: 32 },
  { label: '1 MiB', bytes: MiB, id: '0b1a0000-0000-4000-8000-000000001024', connections: 16 },
  { label: '32 MiB', bytes: 32 * MiB, id: '0b1a0000-0000-4000-8000-000000032768', connections: 4 },
]

export type OriginKind = 'nginx' | 'node'

export interface RunningOrigin {
  readonly kind: OriginKind
  readonly description: string
  readonly url: string
  readonly port: number
  readonly pids: number[]
}

const STATIC_ORIGIN = fileURLToPath(new URL('./static-origin.ts', import.meta.url))

/** Writes <dir>/media/v3/media/<id> for every body size; returns the media root. */
export function prepareMedia(dir: string): string {
  const root = join(dir, 'media')
  const media = join(root, 'v3', 'media')
  mkdirSync(media, { recursive: true })
  for (const size of BODY_SIZES) writeFileSync(join(media, size.id), randomBytes(size.bytes))
  return root
}

export async function startOrigin(
  group: ProcessGroup,
  options: { kind: OriginKind; dir: string; root: string },
): Promise<RunningOrigin> {
  const port = await freePort()
  if (options.kind === 'nginx') {
    const nginx = await startNginx(group, {
      name: 'origin',
      dir: options.dir,
      config: originConfig(options.dir, port, options.root),
      port,
      core: LOAD_CORE,
    })
    return {
      kind: 'nginx',
      description: 'nginx static files (sendfile), token not verified',
      url: nginx.url,
      port,
      pids: nginx.pids,
    }
  }
  return startNodeOrigin(group, { name: 'origin', dir: options.dir, root: options.root, port })
}

/**
 * The same files from nginx with each connection's kernel send buffer fixed at sendBufferBytes
 * (nginx.ts originConfig), for run.ts's many-clients run: on loopback the kernel would otherwise
 * queue up to a few MiB of each body on the origin's side of a paused download. nginx only: Node
 * cannot set SO_SNDBUF.
 */
export async function startCappedOrigin(
  group: ProcessGroup,
  options: { dir: string; root: string; sendBufferBytes: number },
): Promise<RunningOrigin & { child: Child }> {
  const port = await freePort()
  const name = 'capped-origin'
  const nginx = await startNginx(group, {
    name,
    dir: options.dir,
    config: originConfig(options.dir, port, options.root, { name, sendBufferBytes: options.sendBufferBytes }),
    port,
    core: LOAD_CORE,
  })
  return {
    kind: 'nginx',
    description: `nginx static files (sendfile), SO_SNDBUF ${options.sendBufferBytes / 1024} KiB, token not verified`,
    url: nginx.url,
    port,
    pids: nginx.pids,
    child: nginx.child,
  }
}

/**
 * The same files over HTTPS with the given certificate: nginx (`listen ... ssl`) when it is the
 * origin kind and was built with the SSL module, else static-origin.ts on node:https. On the load
 * core, as the plain origin.
 */
export async function startTlsOrigin(
  group: ProcessGroup,
  options: { kind: OriginKind; dir: string; root: string; tls: TlsFiles },
): Promise<RunningOrigin & { child: Child }> {
  const port = await freePort()
  const name = 'tls-origin'
  if (options.kind === 'nginx' && nginxHasSsl()) {
    const nginx = await startNginx(group, {
      name,
      dir: options.dir,
      config: originConfig(options.dir, port, options.root, { tls: options.tls, name }),
      port,
      core: LOAD_CORE,
    })
    return {
      kind: 'nginx',
      description: 'nginx static files over TLS (ssl, TLS 1.2/1.3), token not verified',
      url: `https://${HOST}:${port}`,
      port,
      pids: nginx.pids,
      child: nginx.child,
    }
  }
  const origin = await startNodeOrigin(group, { name, dir: options.dir, root: options.root, port, tls: options.tls })
  return {
    ...origin,
    description: 'node:https serving bodies from memory, token not verified',
    url: `https://${HOST}:${port}`,
  }
}

/**
 * The same files, every response HTTP/1.1 200 with `Connection: close` and no Content-Length nor
 * chunked encoding: each body ends when its connection closes, so no upstream connection is reused.
 */
export async function startCloseDelimitedOrigin(
  group: ProcessGroup,
  options: { dir: string; root: string },
): Promise<RunningOrigin & { child: Child }> {
  const port = await freePort()
  const origin = await startNodeOrigin(group, {
    name: 'close-delimited-origin',
    ...options,
    port,
    closeDelimited: true,
  })
  return { ...origin, description: 'node:net, bodies delimited by the connection closing (no length, no chunks)' }
}

/**
 * Copies of a body, for the copies origin: the proxy's paths /media/<n>-<series>-4000-8000-<the
 * body id's last group> (n: 8 hex digits, series: 4), a new file for each n and each series.
 */
export function copyPaths(size: BodySize, series: number, distinct: boolean): PathSeries {
  return {
    prefix: '/media/',
    suffix: `-${series.toString(16).padStart(4, '0')}-4000-8000-${size.id.slice(-12)}`,
    distinct,
  }
}

/**
 * The same files, and copies of them under any id that ends in a file's last group (copyPaths()),
 * so that a request for a file nobody asked for yet costs no file at the origin; every request is
 * logged to accessLog (nginx's access log, or one line per request from static-origin.ts).
 */
export async function startCopiesOrigin(
  group: ProcessGroup,
  options: { kind: OriginKind; dir: string; root: string },
): Promise<RunningOrigin & { child: Child; accessLog: string }> {
  const port = await freePort()
  const name = 'copies-origin'
  const accessLog = join(options.dir, `${name}-access.log`)
  writeFileSync(accessLog, '')
  if (options.kind === 'nginx') {
    const ids = BODY_SIZES.map((size) => size.id)
    const nginx = await startNginx(group, {
      name,
      dir: options.dir,
      config: copiesOriginConfig(options.dir, name, port, options.root, ids, accessLog),
      port,
      core: LOAD_CORE,
    })
    return {
      kind: 'nginx',
      description: 'nginx static files and their copies (sendfile, access log), token not verified',
      url: nginx.url,
      port,
      pids: nginx.pids,
      child: nginx.child,
      accessLog,
    }
  }
  const origin = await startNodeOrigin(group, { name, dir: options.dir, root: options.root, port, accessLog })
  return {
    ...origin,
    description: 'node:http serving bodies and their copies from memory (access log), token not verified',
    accessLog,
  }
}

async function startNodeOrigin(
  group: ProcessGroup,
  options: {
    name: string
    dir: string
    root: string
    port: number
    closeDelimited?: boolean
    tls?: TlsFiles
    /** Serve copies (--copies) and log every request to this file. */
    accessLog?: string
  },
): Promise<RunningOrigin & { child: Child }> {
  const child = group.spawn(
    options.name,
    process.execPath,
    [
      '--import',
      'tsx',
      STATIC_ORIGIN,
      options.root,
      String(options.port),
      ...(options.closeDelimited ? ['--close-delimited'] : []),
      ...(options.tls ? ['--tls-cert', options.tls.certPath, '--tls-key', options.tls.keyPath] : []),
      ...(options.accessLog ? ['--copies', '--access-log', options.accessLog] : []),
    ],
    {
      core: LOAD_CORE,
      stderrFile: join(options.dir, `${options.name}-stderr.log`),
    },
  )
  await waitForPort(child, options.port)
  return {
    kind: 'node',
    description: 'node:http serving bodies from memory, token not verified',
    url: `http://${HOST}:${options.port}`,
    port: options.port,
    pids: [child.pid],
    child,
  }
}

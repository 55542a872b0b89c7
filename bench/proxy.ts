// The proxy under test, as production runs it: compiled, `node dist/main.js` with the image's
// allocator settings, logging at info to stdout (a file here, as a container runtime would drain
// it), metrics on the admin port, a throwaway RSA key read from a file, and an application
// token that the origin never checks.
import { execFileSync } from 'node:child_process'
import { createSign, generateKeyPairSync, randomUUID } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseAllDocuments } from 'yaml'
import { type Child, type ProcessGroup, REPO_ROOT, SERVER_CORE } from './processes.js'

export const APPLICATION_ID = '0b1a0000-aaaa-4bbb-8ccc-000000000000'
const START_TIMEOUT_MS = 15_000

export interface RunningProxy {
  readonly child: Child
  readonly pid: number
  readonly mediaUrl: string
  readonly adminUrl: string
  readonly logFile: string
  /** performance.now() just before the process was spawned: start-up times count from here. */
  readonly spawnedAt: number
}

export interface ProxyMetrics {
  /** media_proxy_token_refreshes_total{result="success"}, over every application: RS256 signatures made. */
  signatures: number
  /** media_proxy_token_refreshes_total over every application and result: signing attempts. */
  refreshes: number
  /** media_proxy_applications_loaded: applications the proxy holds a key for. */
  applicationsLoaded: number
  /** Sum of media_proxy_requests_total over all labels. */
  requests: number
  /** media_proxy_in_flight_requests: media requests being served at the time of reading. */
  inFlight: number
}

/**
 * `npx tsc -p tsconfig.build.json`: the benchmark runs what `npm start` runs. Of this checkout,
 * or of another commit's (bench/worktrees.ts).
 */
export function buildProxy(root = REPO_ROOT): void {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' })
}

/** A throwaway 2048-bit key written to <dir>/private.key (mode 0600); returns its path and PEM. */
export function throwawayKey(dir: string): { path: string; pem: string } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  const path = join(dir, 'private.key')
  writeFileSync(path, pem, { mode: 0o600 })
  return { path, pem }
}

/** One RS256 application JWT signed here, once: the static header nginx injects. */
export function staticToken(pem: string, ttlSeconds = 86_400): string {
  const iat = Math.floor(Date.now() / 1000)
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url')
  const signingInput = `${encode({ alg: 'RS256', typ: 'JWT' })}.${encode({
    application_id: APPLICATION_ID,
    iat,
    exp: iat + ttlSeconds,
    jti: randomUUID(),
  })}`
  const signature = createSign('RSA-SHA256').update(signingInput).sign(pem).toString('base64url')
  return `${signingInput}.${signature}`
}

export async function startProxy(
  group: ProcessGroup,
  options: {
    dir: string
    upstreamUrl: string
    keyPath: string
    nodeArgs?: string[]
    /** Names the process and its log files (<dir>/<name>-stdout.log): one per proxy started. */
    name?: string
    /** More environment (UPSTREAM_CONNECT_TO, NODE_EXTRA_CA_CERTS...), over the settings above. */
    env?: Record<string, string>
    /** The checkout whose dist/main.js runs (built by buildProxy(root)): this one by default. */
    root?: string
  },
): Promise<RunningProxy> {
  const name = options.name ?? 'proxy'
  const logFile = join(options.dir, `${name}-stdout.log`)
  const errFile = join(options.dir, `${name}-stderr.log`)
  writeFileSync(logFile, '')
  const spawnedAt = performance.now()
  const child = group.spawn(name, process.execPath, [...(options.nodeArgs ?? []), 'dist/main.js'], {
    core: SERVER_CORE,
    cwd: options.root ?? REPO_ROOT,
    stdoutFile: logFile,
    stderrFile: errFile,
    env: {
      PATH: process.env.PATH ?? '',
      NODE_ENV: 'production',
      VONAGE_APPLICATION_ID: APPLICATION_ID,
      VONAGE_PRIVATE_KEY_PATH: options.keyPath,
      UPSTREAM_BASE_URL: options.upstreamUrl,
      HOST: '127.0.0.1',
      PORT: '0',
      ADMIN_PORT: '0',
      LOG_LEVEL: 'info',
      ...imageMallocEnv(),
      ...options.env,
    },
  })
  const deadline = Date.now() + START_TIMEOUT_MS
  for (;;) {
    const line = readFileSync(logFile, 'utf8')
      .split('\n')
      .find((text) => text.includes('"vonage-media-proxy listening"'))
    if (line) {
      const { mediaUrl, adminUrl } = JSON.parse(line) as { mediaUrl: string; adminUrl: string }
      return { child, pid: child.pid, mediaUrl, adminUrl, logFile, spawnedAt }
    }
    if (child.hasExited || Date.now() > deadline) {
      const stderr = readFileSync(errFile, 'utf8').trim().split('\n').slice(-5).join('\n')
      throw new Error(
        `the proxy ${child.hasExited ? `exited (${await child.exited})` : 'did not start'} before listening: ${stderr}`,
      )
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Reads the counters and the gauge the benchmark needs from the admin port's /metrics. */
export async function readProxyMetrics(adminUrl: string): Promise<ProxyMetrics> {
  const response = await fetch(`${adminUrl}/metrics`)
  if (!response.ok) throw new Error(`GET ${adminUrl}/metrics answered ${response.status}`)
  const text = await response.text()
  let signatures = 0
  let refreshes = 0
  let applicationsLoaded = 0
  let requests = 0
  let inFlight = 0
  for (const line of text.split('\n')) {
    // One series per application and result: {application="<id>",result="success"}.
    if (line.startsWith('media_proxy_token_refreshes_total{')) {
      const value = Number(line.slice(line.lastIndexOf(' ') + 1))
      refreshes += value
      if (/[{,]result="success"[,}]/.test(line)) signatures += value
    } else if (line.startsWith('media_proxy_applications_loaded ')) {
      applicationsLoaded = Number(line.slice(line.lastIndexOf(' ') + 1))
    } else if (line.startsWith('media_proxy_requests_total{')) {
      requests += Number(line.slice(line.lastIndexOf(' ') + 1))
    } else if (line.startsWith('media_proxy_in_flight_requests ')) {
      inFlight = Number(line.slice(line.lastIndexOf(' ') + 1))
    }
  }
  return { signatures, refreshes, applicationsLoaded, requests, inFlight }
}

/** The glibc allocator settings the container image sets (Dockerfile ENV), so the benchmark runs what production runs. */
export function imageMallocEnv(): Record<string, string> {
  const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8')
  return Object.fromEntries(
    [...dockerfile.matchAll(/\b(MALLOC_[A-Z_]+_)=(\d+)/g)].map(([, name, value]) => [name, value]),
  )
}

/** deploy/kubernetes/deployment.yaml: the example the memory limit is read from. */
export const KUBERNETES_EXAMPLE = 'deploy/kubernetes/deployment.yaml'

const QUANTITY_UNITS: Record<string, number> = {
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
}

/**
 * The proxy container's memory limit in the Kubernetes example (resources.limits.memory of the
 * container running the vonage-media-proxy image), in bytes; undefined when it cannot be found.
 */
export function kubernetesMemoryLimit(): number | undefined {
  let text: string
  try {
    text = readFileSync(join(REPO_ROOT, KUBERNETES_EXAMPLE), 'utf8')
  } catch {
    return undefined
  }
  type Container = { image?: unknown; resources?: { limits?: { memory?: unknown } } }
  for (const doc of parseAllDocuments(text)) {
    if (!('toJS' in doc)) continue
    const manifest = doc.toJS() as {
      kind?: unknown
      spec?: { template?: { spec?: { initContainers?: Container[]; containers?: Container[] } } }
    } | null
    if (manifest?.kind !== 'Deployment') continue
    const pod = manifest.spec?.template?.spec
    const containers = [...(pod?.initContainers ?? []), ...(pod?.containers ?? [])]
    const proxy = containers.find((c) => typeof c.image === 'string' && c.image.includes('vonage-media-proxy'))
    const memory = proxy?.resources?.limits?.memory
    const match = /^(\d+(?:\.\d+)?)(k|M|G|Ki|Mi|Gi)?$/.exec(String(memory ?? ''))
    if (match) return Number(match[1]) * (QUANTITY_UNITS[match[2] ?? ''] ?? Number.NaN)
  }
  return undefined
}

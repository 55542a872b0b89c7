// `npm run bench`: the proxy, built and run as production runs it, side by side with direct
// access to the origin and with nginx as a plain header-injecting reverse proxy, in interleaved
// rounds; then latency at concurrency 1 and signatures per request. Memory is measured twice:
// 16 slow clients per server (the proxy with keep-alive bodies from the origin, a second proxy
// whose origin ends every body by closing the connection, and nginx), and 1,000 slow clients at
// once through a fresh proxy, held against the Kubernetes example's memory limit. Beside them, two contenders for the proxy's relay (bench/contenders.ts): the
// design's @fastify/http-proxy and undici's stream(), so that the reason the proxy relays undici
// itself stays measured (the "relay decision" table). And the host-prefixed route
// (/api-eu.nexmo.com/v3/media/<id>) beside /media/<id> on one proxy over TLS (bench/host-routes.ts).
// And 1,000 Vonage applications on one proxy against one (bench/applications.ts): start-up,
// memory, CPU per request with warm tokens, and the signature a cold one costs.
// And the disk cache (bench/cache.ts): hits against misses and against no cache, one upstream
// download for concurrent misses, memory with slow clients reading hits, and the index rebuilt
// from 100,000 stored files at start.
// And tracing (bench/tracing.ts): the proxy with tracing off against the proxy as it was before
// tracing (an older commit, built in a git worktree), and with tracing on, every request sampled
// and exported to a local OTLP sink, against off.
// Prints the tables and writes the raw results to bench/results/<time>.json.
// `--profile` instead runs the proxy under node --cpu-prof with the 1 KiB load and ranks its
// functions by self time. Loopback only; everything started here is stopped at the end.
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statfsSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { availableParallelism, cpus, freemem, loadavg, release, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { APPLICATIONS, APPLICATIONS_SETUP_SECONDS, measureApplications } from './applications.js'
import { CACHE_BIG_RUN_SECONDS, CACHE_REBUILD_START_SECONDS, CACHE_SETUP_SECONDS, measureCache } from './cache.js'
import { CONTENDER_DESCRIPTIONS, CONTENDERS, startContender } from './contenders.js'
import { summariseProfile } from './cpu-profile.js'
import { BASE_HOST, HOST_ROUTES_SETUP_SECONDS, measureHostRoutes } from './host-routes.js'
import {
  fixedRequests,
  inProcessGenerator,
  type LoadGenerator,
  type LoadResult,
  type LoadSpec,
  wrk,
  wrkAvailable,
} from './load.js'
import { nginxVersion, reverseProxyConfig, startNginx } from './nginx.js'
import {
  BODY_SIZES,
  type BodySize,
  type OriginKind,
  prepareMedia,
  type RunningOrigin,
  startCappedOrigin,
  startCloseDelimitedOrigin,
  startOrigin,
} from './origin.js'
import { freePort } from './ports.js'
import {
  cpuSeconds,
  LOAD_CORE,
  ProcessGroup,
  pinningUnavailable,
  pinSelf,
  REPO_ROOT,
  rssBytes,
  SERVER_CORE,
} from './processes.js'
import {
  buildProxy,
  imageMallocEnv,
  KUBERNETES_EXAMPLE,
  kubernetesMemoryLimit,
  type RunningProxy,
  readProxyMetrics,
  startProxy,
  staticToken,
  throwawayKey,
} from './proxy.js'
import {
  applicationsTable,
  type Cell,
  CLOSE_DELIMITED_PROXY,
  cacheRebuildTable,
  cacheTable,
  checkTargets,
  fmt,
  HOST_ROUTES,
  hostRoutesTable,
  type LatencySummary,
  latencyTable,
  type ManyClientsSummary,
  type MemorySummary,
  manyClientsTable,
  memoryTable,
  relayDecisionTable,
  type SignatureSummary,
  sharedDownloadLine,
  summarise,
  summariseLatency,
  TARGETS,
  type TargetName,
  targetsTable,
  throughputTable,
  tracingExportLine,
  tracingTable,
} from './report.js'
import {
  kernelTcpBytes,
  kernelTcpPressureBytes,
  openFilesLimit,
  RssSampler,
  slowClients,
  slowClientsAvailable,
  slowReaders,
  socketBufferBytes,
} from './slow-readers.js'
import { measureTracing, TRACING_SETUP_SECONDS } from './tracing.js'
import { Worktrees } from './worktrees.js'

const USAGE = `usage: npm run bench -- [options]
  --quick            one round of 1 s runs, short memory tests (about a minute)
  --rounds N         interleaved rounds (default 3, quick 1)
  --seconds S        seconds per throughput run (default 3, quick 1)
  --origin KIND      nginx (default when installed) or node
  --no-nginx         skip nginx, as origin and as the reverse proxy compared against
  --no-contenders    skip the relay contenders (@fastify/http-proxy, undici stream()): about 45 s less
  --no-many-clients  skip the memory run with 1,000 slow downloads held at once (python3): about 20 s less
  --no-host-routes   skip the host-prefixed route vs /media/:id CPU comparison (over TLS): about 13 s less
  --no-applications  skip 1,000 applications vs one (start-up, memory, warm CPU, cold signature): about 18 s less
  --no-tracing       skip tracing off vs before tracing (an older commit, built in a git worktree) and
                     tracing on vs off, CPU per 1 KiB request: about 50 s less (quick 25)
  --no-cache         skip the disk cache (hit vs miss CPU and throughput, one download for concurrent misses,
                     slow clients reading hits, index rebuild from 100,000 stored files): about 80 s less (quick 45)
  --autocannon       generate load in-process (autocannon; undici for bodies over 4 KiB) even with wrk
  --profile          profile the proxy (node --cpu-prof) under the 1 KiB load instead
  --help`

/**
 * The whole run must stay under five and a half minutes, two more with the cache phase and one
 * more with the tracing phase; past this, it stops and cleans up.
 */
const TIME_LIMIT_MS = 330_000
const CACHE_TIME_LIMIT_MS = 120_000
const TRACING_TIME_LIMIT_MS = 60_000
/** Room a tmpfs needs for the cache phase's stored files (100,000 files of a page each, and their inodes), and spare. */
const MEMORY_DIR_MIN_BYTES = 2 * 1024 ** 3
const RESULTS_DIR = join(REPO_ROOT, 'bench', 'results')
const SIGNATURE_REQUESTS = 10_000
const SLOW_CLIENTS = 16
const SLOW_BYTES_PER_SECOND = 2e6
/**
 * The many-clients run: as many clients as MAX_IN_FLIGHT_REQUESTS lets in by default, each
 * downloading the 1 MiB body and reading a few KB/s of it, all held in flight in the proxy at
 * once. Over loopback that takes clients the kernel cannot buffer for: Node's http clients (64 KiB
 * MTU, receive buffers autotuned) had each 1 MiB body swallowed by the kernel's socket buffers
 * (the proxy's send buffer alone grows to about 2.6 MiB on loopback), so at most about 20
 * downloads were ever in flight in the proxy. bench/slow_clients.py (python3) sets SO_RCVBUF to
 * 4 KiB and the MSS to Ethernet's before connecting, which Node cannot: the kernel then queues
 * about 140 KiB per download on the proxy's side, and the proxy holds the rest of each body back
 * from its origin (backpressure), for the whole run. The origin is nginx with a 64 KiB SO_SNDBUF
 * (origin.ts startCappedOrigin): otherwise the kernel queues the rest of every body on the
 * origin's side, about 1 GB for the thousand, near net.ipv4.tcp_mem's limits, past which every
 * TCP connection on the machine stalls (32 MiB bodies did: 243 of 1,000 were served in 6 s).
 * With it the kernel holds about 0.5 GB, watched: past tcp_mem's pressure threshold the clients
 * are stopped. The proxy's RSS is held against the Kubernetes example's memory limit, beside the
 * kernel memory of its own sockets, which a cgroup v2 limit counts as well. Its RSS still creeps
 * up once all the downloads are in flight, so the peak is the one of a run this long, not a ceiling.
 */
const MANY_CLIENTS = 1_000
const MANY_BODY_BYTES = 1024 * 1024
const MANY_BYTES_PER_SECOND = 8e3
/** The capped origin's SO_SNDBUF (the kernel doubles it). */
const MANY_ORIGIN_SEND_BUFFER_BYTES = 64 * 1024
/** How often the proxy's in-flight gauge and the kernel's TCP memory are read; the proxy's sockets every fourth time. */
const MANY_POLL_MS = 250
const MANY_SOCKETS_EVERY = 4
/** Open files the many-clients run needs here (and the proxy, which inherits the limit): two per client and spare. */
const MANY_OPEN_FILES = 2 * MANY_CLIENTS + 200
const LATENCY_TARGETS: readonly TargetName[] = ['direct', 'proxy', 'nginx-64k']
const SETTLE_MS = 100
const MiB = 1024 * 1024
/**
 * The body sizes the relay contenders run at: the smallest (per-request cost, the reason for the
 * relay) and the largest (throughput). All four sizes would take the full run past its time limit.
 */
const CONTENDER_SIZES: readonly string[] = [
  ...new Set([BODY_SIZES[0]?.label, BODY_SIZES[BODY_SIZES.length - 1]?.label].filter((label) => label !== undefined)),
]

interface Settings {
  quick: boolean
  rounds: number
  seconds: number
  latencySeconds: number
  warmupSeconds: number
  slowSeconds: number
  /** The many-clients run: clients start over manyRampSeconds; all stop manySeconds after the first. */
  manyRampSeconds: number
  manySeconds: number
  profileSeconds: number
  origin: OriginKind
  nginx: boolean
  contenders: boolean
  manyClients: boolean
  /**
   * The host-routes comparison: many short rounds (1 s, wrk's least), so that the median of the
   * per-round ratios outlasts bursts of other work on the machine: at least 4, one more than --rounds.
   */
  hostRoutes: boolean
  hostRoutesRounds: number
  hostRoutesSeconds: number
  /** The applications phase: short rounds too, for the same reason, as many as the host routes'. */
  applications: boolean
  applicationsRounds: number
  applicationsSeconds: number
  /**
   * The cache phase: short rounds too (hit, miss and no cache, at 1 KiB and 32 MiB), and proxies
   * started on 100,000 stored files and on an empty cache, cacheRebuildStarts times each.
   */
  cache: boolean
  cacheRounds: number
  cacheSeconds: number
  cacheRebuildStarts: number
  /**
   * The tracing phase: short rounds too (three proxies, 1 KiB), more of them than the others': its
   * target is 3 %, and the per-round ratios on a shared VM spread far wider than that.
   */
  tracing: boolean
  tracingRounds: number
  tracingSeconds: number
  autocannon: boolean
  profile: boolean
}

interface Target {
  name: TargetName
  url(size: BodySize): string
  /** The processes whose CPU and memory are this target's cost. */
  pids: number[]
  /** A relay contender: throughput rounds at CONTENDER_SIZES only, no memory run. */
  contender?: boolean
}

interface Environment {
  settings: Settings
  dir: string
  group: ProcessGroup
  load: LoadGenerator
  origin: RunningOrigin
  proxy: RunningProxy
  targets: Target[]
  /** The throwaway key and the media files, for the proxies and origin started later. */
  keyPath: string
  mediaRoot: string
}

const log = (message: string) => process.stderr.write(`${message}\n`)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function parseSettings(): Settings {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      seconds: { type: 'string' },
      origin: { type: 'string' },
      'no-nginx': { type: 'boolean', default: false },
      'no-contenders': { type: 'boolean', default: false },
      'no-many-clients': { type: 'boolean', default: false },
      'no-host-routes': { type: 'boolean', default: false },
      'no-applications': { type: 'boolean', default: false },
      'no-cache': { type: 'boolean', default: false },
      'no-tracing': { type: 'boolean', default: false },
      autocannon: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  })
  if (values.help) {
    process.stdout.write(`${USAGE}\n`)
    process.exit(0)
  }
  const quick = values.quick
  const positive = (value: string | undefined, fallback: number, name: string) => {
    if (value === undefined) return fallback
    const number = Number(value)
    if (!Number.isInteger(number) || number < 1) throw new Error(`--${name} must be a positive integer`)
    return number
  }
  const nginxInstalled = nginxVersion() !== undefined
  const nginx = !values['no-nginx'] && nginxInstalled
  const origin = values.origin ?? (nginx ? 'nginx' : 'node')
  if (origin !== 'nginx' && origin !== 'node') throw new Error('--origin must be nginx or node')
  if (origin === 'nginx' && !nginx) throw new Error('--origin nginx needs nginx installed (and no --no-nginx)')
  const rounds = positive(values.rounds, quick ? 1 : 3, 'rounds')
  const seconds = positive(values.seconds, quick ? 1 : 3, 'seconds')
  return {
    quick,
    rounds,
    seconds,
    latencySeconds: quick ? 1 : 2,
    warmupSeconds: 1,
    slowSeconds: quick ? 5 : 24,
    manyRampSeconds: quick ? 1 : 2,
    manySeconds: quick ? 8 : 15,
    profileSeconds: quick ? 5 : 10,
    origin,
    nginx,
    contenders: !values['no-contenders'],
    manyClients: !values['no-many-clients'],
    hostRoutes: !values['no-host-routes'],
    hostRoutesRounds: Math.max(4, rounds + 1),
    hostRoutesSeconds: 1,
    applications: !values['no-applications'],
    applicationsRounds: Math.max(4, rounds + 1),
    applicationsSeconds: 1,
    cache: !values['no-cache'],
    cacheRounds: Math.max(quick ? 2 : 3, rounds),
    cacheSeconds: 1,
    cacheRebuildStarts: quick ? 1 : 3,
    tracing: !values['no-tracing'],
    tracingRounds: quick ? 4 : Math.max(12, rounds + 1),
    tracingSeconds: 1,
    autocannon: values.autocannon || !wrkAvailable(),
    profile: values.profile,
  }
}

async function main(): Promise<void> {
  let settings: Settings
  try {
    settings = parseSettings()
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`)
    process.exit(64)
  }
  const dir = mkdtempSync(join(tmpdir(), 'vonage-media-proxy-bench-'))
  const memoryDir = settings.cache && !settings.profile ? memoryTempDir() : undefined
  const group = new ProcessGroup()
  const worktrees = new Worktrees()
  let cleaning: Promise<void> | undefined
  let aborting = false
  const cleanUp = () => {
    cleaning ??= group.stopAll().finally(() => {
      // The worktrees live in dir: git forgets them before their files go.
      worktrees.removeAll()
      for (const path of [dir, memoryDir]) if (path) rmSync(path, { recursive: true, force: true })
    })
    return cleaning
  }
  const abort = (reason: string, code: number) => {
    aborting = true
    log(`\n${reason}: stopping every process the benchmark started`)
    void cleanUp().finally(() => process.exit(code))
  }
  process.once('SIGINT', () => abort('interrupted', 130))
  process.once('SIGTERM', () => abort('terminated', 143))
  const limitMs = timeLimitMs(settings)
  const watchdog = setTimeout(() => abort(`time limit of ${limitMs / 1000} s reached`, 1), limitMs)
  watchdog.unref()
  try {
    await (settings.profile
      ? profileRun(settings, dir, group)
      : benchmarkRun(settings, dir, group, worktrees, memoryDir))
  } catch (err) {
    if (aborting) return
    log(`benchmark failed: ${err instanceof Error ? err.message : String(err)}`)
    process.exitCode = 1
  } finally {
    clearTimeout(watchdog)
    await cleanUp()
  }
}

function timeLimitMs(settings: Settings): number {
  if (settings.profile) return TIME_LIMIT_MS
  return TIME_LIMIT_MS + (settings.cache ? CACHE_TIME_LIMIT_MS : 0) + (settings.tracing ? TRACING_TIME_LIMIT_MS : 0)
}

/**
 * A temp dir on tmpfs (/dev/shm) when there is one with room, else undefined. The cache phase
 * writes its 100,000 stored files there: on a slow disk (a busy VM's ext4), writing them took
 * 37 s and removing them 21 s, against a few seconds in memory. The proxy started on them reads
 * their directory and inodes from memory either way, as it would from a disk just written to.
 */
function memoryTempDir(): string | undefined {
  try {
    const { bavail, bsize } = statfsSync('/dev/shm')
    if (bavail * bsize < MEMORY_DIR_MIN_BYTES || freemem() < MEMORY_DIR_MIN_BYTES) return undefined
    return mkdtempSync(join('/dev/shm', 'vonage-media-proxy-bench-'))
  } catch {
    return undefined
  }
}

interface Machine {
  cpu: string
  cores: number
  kernel: string
  node: string
  nginx: string | undefined
  loadGenerator: string
  pinning: string
  loadAverageAtStart: number[]
  notes: string[]
}

function describeSetup(settings: Settings): Machine {
  const nginx = nginxVersion()
  const notes: string[] = []
  if (!nginx) notes.push('nginx is not installed: the nginx comparisons are skipped (apt-get install nginx)')
  else if (!settings.nginx) notes.push('--no-nginx: the nginx comparisons are skipped')
  if (!settings.contenders)
    notes.push('--no-contenders: the relay decision (proxy vs @fastify/http-proxy) is not measured')
  if (!settings.manyClients)
    notes.push(`--no-many-clients: memory with ${fmt(MANY_CLIENTS)} slow clients is not measured`)
  if (!settings.hostRoutes) notes.push('--no-host-routes: the host-prefixed route is not measured against /media/:id')
  if (!settings.applications)
    notes.push(`--no-applications: ${fmt(APPLICATIONS)} applications on one proxy are not measured against one`)
  if (!settings.cache) notes.push('--no-cache: the disk cache (CACHE_DIR) is not measured')
  if (!settings.tracing) notes.push('--no-tracing: tracing (OTEL_EXPORTER_OTLP_ENDPOINT) is not measured')
  if (settings.autocannon && !wrkAvailable())
    notes.push('wrk is not installed: the load is generated in-process (autocannon, undici)')
  if (pinningUnavailable) notes.push(`processes are not pinned to cores: ${pinningUnavailable}`)
  for (const note of notes) log(`note: ${note}`)
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    kernel: release(),
    node: process.version,
    nginx: settings.nginx ? nginx : undefined,
    loadGenerator: settings.autocannon ? `${inProcessGenerator.name}, in the harness process` : 'wrk -t1',
    pinning: pinningUnavailable
      ? `none (${pinningUnavailable})`
      : `load generator and origin on core ${LOAD_CORE}, server under test on core ${SERVER_CORE}`,
    loadAverageAtStart: loadavg(),
    notes,
  }
}

/** Starts the origin, the proxy and (when enabled) the two nginx reverse proxies. */
async function startTargets(settings: Settings, dir: string, group: ProcessGroup): Promise<Environment> {
  pinSelf(LOAD_CORE)
  log('building the proxy (npx tsc -p tsconfig.build.json)')
  buildProxy()
  const key = throwawayKey(dir)
  const root = prepareMedia(dir)
  const origin = await startOrigin(group, { kind: settings.origin, dir, root })
  log(`origin: ${origin.description} at ${origin.url}`)
  const proxy = await startProxy(group, { dir, upstreamUrl: origin.url, keyPath: key.path })
  log(`proxy: node dist/main.js at ${proxy.mediaUrl} (pid ${proxy.pid}), logging at info to a file, metrics on`)
  const targets: Target[] = [
    { name: 'direct', url: (size) => `${origin.url}/v3/media/${size.id}`, pids: origin.pids },
    { name: 'proxy', url: (size) => `${proxy.mediaUrl}/media/${size.id}`, pids: [proxy.pid] },
  ]
  if (settings.nginx) {
    const token = staticToken(key.pem)
    for (const buffers of ['default', '64k'] as const) {
      const name = `nginx-${buffers}` as const
      const port = await freePort()
      const nginx = await startNginx(group, {
        name,
        dir,
        config: reverseProxyConfig(dir, name, port, origin.port, token, buffers),
        port,
        core: SERVER_CORE,
      })
      targets.push({ name, url: (size) => `${nginx.url}/media/${size.id}`, pids: nginx.pids })
    }
    log('nginx: reverse proxies with a static Authorization header, buffering off, keep-alive upstream')
  }
  if (settings.contenders) {
    const token = staticToken(key.pem)
    for (const name of CONTENDERS) {
      const contender = await startContender(group, { name, dir, upstreamUrl: origin.url, token })
      targets.push({ name, url: (size) => `${contender.url}/media/${size.id}`, pids: [contender.pid], contender: true })
      log(`${name}: ${CONTENDER_DESCRIPTIONS[name]} at ${contender.url} (pid ${contender.pid})`)
    }
  }
  const load = settings.autocannon ? inProcessGenerator : wrk(group, dir)
  return { settings, dir, group, load, origin, proxy, targets, keyPath: key.path, mediaRoot: root }
}

/** One request per size and target: status 200, the right length, the right bytes. */
async function checkTargetsServe(env: Environment): Promise<void> {
  for (const size of BODY_SIZES) {
    const expected = readFileSync(join(env.dir, 'media', 'v3', 'media', size.id))
    for (const target of env.targets) {
      const response = await fetch(target.url(size))
      const body = Buffer.from(await response.arrayBuffer())
      if (response.status !== 200 || !body.equals(expected)) {
        throw new Error(`${target.name} ${size.label}: status ${response.status}, ${body.length} bytes: not the media`)
      }
    }
  }
}

/** Fetches one body and checks it is the media file: status 200, the same bytes. */
async function checkServes(name: string, url: string, file: string): Promise<void> {
  const response = await fetch(url)
  const body = Buffer.from(await response.arrayBuffer())
  if (response.status !== 200 || !body.equals(readFileSync(file))) {
    throw new Error(`${name}: status ${response.status}, ${body.length} bytes: not the media`)
  }
}

/**
 * 16 slow clients per server at once: the proxy and nginx (keep-alive, Content-Length bodies from
 * the origin), and a second proxy whose origin (static-origin.ts --close-delimited, on the load
 * core) ends every body by closing the connection. The second proxy and its origin are stopped after.
 */
async function measureMemory(env: Environment): Promise<MemorySummary[]> {
  const big = BODY_SIZES[BODY_SIZES.length - 1] as BodySize
  const servers: { name: string; url: string; pids: number[] }[] = env.targets
    .filter((target) => target.name !== 'direct' && !target.contender)
    .map((target) => ({ name: target.name, url: target.url(big), pids: target.pids }))
  const closeOrigin = await startCloseDelimitedOrigin(env.group, { dir: env.dir, root: env.mediaRoot })
  const closeProxy = await startProxy(env.group, {
    name: 'proxy-close-delimited',
    dir: env.dir,
    upstreamUrl: closeOrigin.url,
    keyPath: env.keyPath,
  })
  log(
    `${CLOSE_DELIMITED_PROXY}: a second node dist/main.js (pid ${closeProxy.pid}) in front of ` +
      `${closeOrigin.description} at ${closeOrigin.url}`,
  )
  try {
    for (const size of BODY_SIZES) {
      await checkServes(
        `${CLOSE_DELIMITED_PROXY} ${size.label}`,
        `${closeProxy.mediaUrl}/media/${size.id}`,
        join(env.mediaRoot, 'v3', 'media', size.id),
      )
    }
    const proxyAt = servers.findIndex((server) => server.name === 'proxy')
    servers.splice(proxyAt + 1, 0, {
      name: CLOSE_DELIMITED_PROXY,
      url: `${closeProxy.mediaUrl}/media/${big.id}`,
      pids: [closeProxy.pid],
    })
    await sleep(1_000)
    log(
      `memory: ${SLOW_CLIENTS} clients per server reading ${big.label} at ${SLOW_BYTES_PER_SECOND / 1e6} MB/s ` +
        `(${servers.map((t) => t.name).join(', ')} at once, up to ${env.settings.slowSeconds} s)`,
    )
    const runs = servers.map(async (server) => {
      const idleBytes = rssBytes(server.pids)
      const sampler = new RssSampler(server.pids)
      const result = await slowReaders({
        url: server.url,
        clients: SLOW_CLIENTS,
        bytesPerSecond: SLOW_BYTES_PER_SECOND,
        maxSeconds: env.settings.slowSeconds,
        expectedBytes: big.bytes,
      })
      const peakBytes = sampler.stop()
      return {
        target: server.name,
        idleBytes,
        peakBytes,
        aboveIdleBytes: peakBytes - idleBytes,
        clients: result.clients,
        completed: result.completed,
        failed: result.failed,
        meanBytesPerSecondPerClient: result.meanBytesPerSecondPerClient,
      }
    })
    return await Promise.all(runs)
  } finally {
    await env.group.stop(closeProxy.child)
    await env.group.stop(closeOrigin.child)
  }
}

/**
 * MANY_CLIENTS slow clients at once (bench/slow_clients.py) through a fresh proxy (so that its
 * idle memory is the start-up figure, not what earlier runs left) in front of the capped origin,
 * each downloading the 1 MiB body at a few KB/s until the deadline; the proxy's VmRSS is sampled
 * throughout, its in-flight gauge and the kernel's TCP memory every MANY_POLL_MS, and the kernel
 * memory of the proxy's sockets less often. The proxy and the origin are stopped after.
 */
async function measureManyClients(env: Environment): Promise<ManyClientsSummary | undefined> {
  const { settings } = env
  const limit = openFilesLimit()
  if (limit !== undefined && limit < MANY_OPEN_FILES) {
    log(
      `warning: the ${fmt(MANY_CLIENTS)}-client memory run is skipped: this process may open ${limit} files ` +
        `(ulimit -n), it needs ${MANY_OPEN_FILES} (a socket per client here and two in the proxy); ` +
        `raise it (ulimit -n ${MANY_OPEN_FILES * 2}) before npm run bench, or pass --no-many-clients`,
    )
    return undefined
  }
  if (!slowClientsAvailable()) {
    log(
      `warning: the ${fmt(MANY_CLIENTS)}-client memory run is skipped: it needs python3 (bench/slow_clients.py ` +
        'sets the small receive buffers Node cannot); install python3, or pass --no-many-clients',
    )
    return undefined
  }
  const body = BODY_SIZES.find((size) => size.bytes === MANY_BODY_BYTES) as BodySize
  const small = BODY_SIZES[0] as BodySize
  const capped =
    settings.origin === 'nginx'
      ? await startCappedOrigin(env.group, {
          dir: env.dir,
          root: env.mediaRoot,
          sendBufferBytes: MANY_ORIGIN_SEND_BUFFER_BYTES,
        })
      : undefined
  if (!capped) {
    log(
      `note: the ${fmt(MANY_CLIENTS)}-client run reads from the node origin, whose send buffers cannot be ` +
        'capped: the kernel will hold about a body per download on its side (about 1 GB)',
    )
  }
  const origin = capped ?? env.origin
  let proxy: RunningProxy | undefined
  try {
    proxy = await startProxy(env.group, {
      name: 'proxy-many-clients',
      dir: env.dir,
      upstreamUrl: origin.url,
      keyPath: env.keyPath,
    })
    // One request, as the other memory runs' idle figures follow one request per size.
    await checkServes(
      'proxy (many clients)',
      `${proxy.mediaUrl}/media/${small.id}`,
      join(env.mediaRoot, 'v3', 'media', small.id),
    )
    await sleep(1_000)
    const limitBytes = kubernetesMemoryLimit()
    const pressureBytes = kernelTcpPressureBytes()
    log(
      `memory: ${fmt(MANY_CLIENTS)} clients (bench/slow_clients.py) reading ${body.label} each at ` +
        `${MANY_BYTES_PER_SECOND / 1e3} KB/s through a fresh proxy (pid ${proxy.pid}) in front of ` +
        `${origin.description}, started over ${settings.manyRampSeconds} s, all stopped at ${settings.manySeconds} s`,
    )
    const idleBytes = rssBytes([proxy.pid])
    const sampler = new RssSampler([proxy.pid])
    const kernelTcpAtStart = kernelTcpBytes()
    let kernelTcpPeak = kernelTcpAtStart
    let proxySocketPeak: number | undefined
    let peakInFlight = 0
    let heldInFlight = Number.POSITIVE_INFINITY
    let stoppedEarly: string | undefined
    const mediaPort = new URL(proxy.mediaUrl).port
    const { adminUrl } = proxy
    const clients = slowClients({
      group: env.group,
      dir: env.dir,
      url: `${proxy.mediaUrl}/media/${body.id}`,
      clients: MANY_CLIENTS,
      bytesPerSecond: MANY_BYTES_PER_SECOND,
      maxSeconds: settings.manySeconds,
      rampSeconds: settings.manyRampSeconds,
    })
    const started = performance.now()
    let polling = true
    const poll = (async () => {
      for (let i = 0; polling; i++) {
        const kernel = kernelTcpBytes()
        kernelTcpPeak = Math.max(kernelTcpPeak, kernel)
        if (pressureBytes !== undefined && kernel > pressureBytes && stoppedEarly === undefined) {
          stoppedEarly = `kernel TCP memory ${fmt(kernel / MiB)} MiB, past net.ipv4.tcp_mem's pressure threshold`
          log(`warning: ${stoppedEarly}: stopping the clients`)
          clients.stop()
        }
        if (i % MANY_SOCKETS_EVERY === MANY_SOCKETS_EVERY - 1) {
          // Its sockets to the clients, and to the origin (only this proxy connects there, but for
          // the node origin, shared with the main proxy, whose idle connections hold nothing).
          const sockets = socketBufferBytes(`( sport = :${mediaPort} or dport = :${origin.port} )`)
          if (sockets !== undefined) proxySocketPeak = Math.max(proxySocketPeak ?? 0, sockets)
        }
        try {
          const { inFlight } = await readProxyMetrics(adminUrl)
          peakInFlight = Math.max(peakInFlight, inFlight)
          const elapsedMs = performance.now() - started
          // The second half, short of the clients' deadline (theirs counts from a little later).
          if (
            elapsedMs >= (settings.manySeconds * 1000) / 2 &&
            elapsedMs < settings.manySeconds * 1000 - MANY_POLL_MS
          ) {
            heldInFlight = Math.min(heldInFlight, inFlight)
          }
        } catch {
          // A scrape that fails under load only loses a sample.
        }
        await sleep(MANY_POLL_MS)
      }
    })()
    let result: Awaited<typeof clients.result>
    try {
      result = await clients.result
    } finally {
      polling = false
      await poll
    }
    const peakBytes = sampler.stop()
    log(
      `memory: ${fmt(peakInFlight)} in flight at most, ${fmt(heldInFlight)} through the second half; proxy RSS ` +
        `${fmt(peakBytes / MiB)} MiB at most; kernel TCP memory ${fmt(kernelTcpPeak / MiB)} MiB at most`,
    )
    return {
      clients: MANY_CLIENTS,
      bodyLabel: body.label,
      bytesPerSecondPerClient: MANY_BYTES_PER_SECOND,
      clientReceiveBufferBytes: result.receiveBufferBytes,
      clientMssBytes: result.mssBytes,
      origin: origin.description,
      rampSeconds: settings.manyRampSeconds,
      seconds: settings.manySeconds,
      idleBytes,
      peakBytes,
      aboveIdleBytes: peakBytes - idleBytes,
      peakInFlight,
      heldInFlight: Number.isFinite(heldInFlight) ? heldInFlight : 0,
      kernelTcpPeakBytes: kernelTcpPeak,
      kernelTcpAboveStartBytes: kernelTcpPeak - kernelTcpAtStart,
      kernelTcpPressureBytes: pressureBytes,
      proxySocketPeakBytes: proxySocketPeak,
      stoppedEarly,
      limitBytes,
      limitSource: limitBytes === undefined ? `not found in ${KUBERNETES_EXAMPLE}` : KUBERNETES_EXAMPLE,
      responded: result.responded,
      completed: result.completed,
      failed: result.failed,
      failures: result.failures,
      meanBytesPerClient: result.meanBytesPerClient,
    }
  } finally {
    if (proxy) await env.group.stop(proxy.child)
    if (capped) await env.group.stop(capped.child)
  }
}

/** One load run with the CPU time of the target's processes and of the origin around it. */
async function measure(
  env: Environment,
  target: Target,
  spec: LoadSpec,
): Promise<Pick<Cell, 'load' | 'serverCpuSeconds' | 'originCpuSeconds'>> {
  const serverBefore = cpuSeconds(target.pids)
  const originBefore = cpuSeconds(env.origin.pids)
  const load = await env.load.run(spec)
  const serverCpuSeconds = cpuSeconds(target.pids) - serverBefore
  const originCpuSeconds = cpuSeconds(env.origin.pids) - originBefore
  await sleep(SETTLE_MS)
  return { load, serverCpuSeconds, originCpuSeconds }
}

/** Whether the throughput rounds measure this target at this size. */
function measuredAt(target: Target, size: BodySize): boolean {
  return !target.contender || CONTENDER_SIZES.includes(size.label)
}

async function throughputRounds(env: Environment): Promise<Cell[]> {
  const { settings } = env
  const warmed = env.targets.filter((target) => target.name === 'proxy' || target.contender)
  log(`warm-up: ${settings.warmupSeconds} s per body size through ${warmed.map((target) => target.name).join(', ')}`)
  for (const target of warmed) {
    for (const size of BODY_SIZES) {
      if (!measuredAt(target, size)) continue
      await env.load.run({
        url: target.url(size),
        connections: size.connections,
        durationSeconds: settings.warmupSeconds,
        bodyBytes: size.bytes,
      })
    }
  }
  const cells: Cell[] = []
  for (let round = 1; round <= settings.rounds; round++) {
    // Rotate the order each round, so that no target always runs right after another.
    const order = env.targets.map((_, i) => env.targets[(i + round - 1) % env.targets.length] as Target)
    for (const size of BODY_SIZES) {
      for (const target of order) {
        if (!measuredAt(target, size)) continue
        const spec = {
          url: target.url(size),
          connections: size.connections,
          durationSeconds: settings.seconds,
          bodyBytes: size.bytes,
        }
        const measured = await measure(env, target, spec)
        const cell: Cell = {
          round,
          size: size.label,
          bodyBytes: size.bytes,
          connections: size.connections,
          target: target.name,
          ...measured,
        }
        cells.push(cell)
        log(
          `round ${round}/${settings.rounds} ${size.label.padStart(6)} ${target.name.padEnd(13)} ` +
            `${fmt(cell.load.reqPerSec).padStart(7)} req/s  ` +
            `${fmt((cell.load.reqPerSec * size.bytes) / 1e6, 1).padStart(8)} MB/s  ` +
            `${fmt((cell.serverCpuSeconds * 1e6) / Math.max(1, cell.load.requests), 1).padStart(8)} us CPU/req`,
        )
      }
    }
  }
  return cells
}

async function latencyRounds(env: Environment): Promise<{ target: TargetName; round: number; load: LoadResult }[]> {
  const small = BODY_SIZES[0] as BodySize
  const targets = env.targets.filter((target) => LATENCY_TARGETS.includes(target.name))
  log(`latency: concurrency 1, ${small.label}, ${env.settings.latencySeconds} s per run`)
  const runs: { target: TargetName; round: number; load: LoadResult }[] = []
  for (let round = 1; round <= env.settings.rounds; round++) {
    for (const target of targets) {
      const load = await env.load.run({
        url: target.url(small),
        connections: 1,
        durationSeconds: env.settings.latencySeconds,
      })
      runs.push({ target: target.name, round, load })
      await sleep(SETTLE_MS)
    }
  }
  return runs
}

async function countSignatures(env: Environment, atStart: { signatures: number; requests: number }) {
  const small = BODY_SIZES[0] as BodySize
  log(`signatures: ${SIGNATURE_REQUESTS.toLocaleString('en-US')} requests through the proxy`)
  const before = await readProxyMetrics(env.proxy.adminUrl)
  const sent = await fixedRequests(`${env.proxy.mediaUrl}/media/${small.id}`, SIGNATURE_REQUESTS, small.connections)
  const after = await readProxyMetrics(env.proxy.adminUrl)
  if (sent.failed > 0) log(`warning: ${sent.failed} of the signature-count requests failed`)
  const signatures = after.signatures - before.signatures
  const summary: SignatureSummary = {
    requests: sent.requests,
    signatures,
    per10k: (signatures * 10_000) / Math.max(1, sent.requests),
    wholeRun: { requests: after.requests - atStart.requests, signatures: after.signatures - atStart.signatures },
  }
  return summary
}

function writeResults(stamp: string, results: object): string {
  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = join(RESULTS_DIR, `${stamp}.json`)
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`)
  return file
}

const timestamp = () => new Date().toISOString().replace(/[:.]/g, '-')

async function benchmarkRun(
  settings: Settings,
  dir: string,
  group: ProcessGroup,
  worktrees: Worktrees,
  memoryDir: string | undefined,
): Promise<void> {
  const startedAt = new Date()
  const stamp = timestamp()
  const machine = describeSetup(settings)
  const contenderSeconds = settings.contenders
    ? CONTENDERS.length * CONTENDER_SIZES.length * (settings.warmupSeconds + settings.rounds * (settings.seconds + 0.3))
    : 0
  const manySeconds = settings.manyClients ? settings.manySeconds + 4 : 0
  const hostRoutesSeconds = settings.hostRoutes
    ? HOST_ROUTES_SETUP_SECONDS +
      HOST_ROUTES.length * (settings.warmupSeconds + settings.hostRoutesRounds * (settings.hostRoutesSeconds + 0.1))
    : 0
  const applicationsSeconds = settings.applications
    ? APPLICATIONS_SETUP_SECONDS +
      2 * (settings.warmupSeconds + settings.applicationsRounds * (settings.applicationsSeconds + 0.2))
    : 0
  const cacheSeconds = settings.cache
    ? CACHE_SETUP_SECONDS +
      Math.min(settings.slowSeconds, (BODY_SIZES[BODY_SIZES.length - 1]?.bytes ?? 0) / SLOW_BYTES_PER_SECOND) +
      settings.cacheRebuildStarts * CACHE_REBUILD_START_SECONDS +
      3 * (settings.warmupSeconds + settings.cacheRounds * (settings.cacheSeconds + CACHE_BIG_RUN_SECONDS + 0.6))
    : 0
  const tracingSeconds = settings.tracing
    ? TRACING_SETUP_SECONDS +
      3 * (settings.warmupSeconds + 0.1 + settings.tracingRounds * (settings.tracingSeconds + 0.15))
    : 0
  const estimate =
    BODY_SIZES.length * (4 + settings.rounds * (settings.seconds + 0.3) * (settings.nginx ? 4 : 2)) +
    contenderSeconds +
    settings.rounds * (settings.latencySeconds + 0.3) * (settings.nginx ? 3 : 2) +
    settings.slowSeconds +
    3 +
    manySeconds +
    hostRoutesSeconds +
    applicationsSeconds +
    cacheSeconds +
    tracingSeconds +
    15
  log(`estimated time: about ${Math.round(estimate)} s`)
  if (estimate * 1000 > timeLimitMs(settings) * 0.95) {
    const saving =
      (settings.contenders ? `; --no-contenders saves about ${Math.round(contenderSeconds)} s` : '') +
      (settings.manyClients ? `; --no-many-clients about ${Math.round(manySeconds)} s` : '') +
      (settings.hostRoutes ? `; --no-host-routes about ${Math.round(hostRoutesSeconds)} s` : '') +
      (settings.applications ? `; --no-applications about ${Math.round(applicationsSeconds)} s` : '') +
      (settings.cache ? `; --no-cache about ${Math.round(cacheSeconds)} s` : '') +
      (settings.tracing ? `; --no-tracing about ${Math.round(tracingSeconds)} s` : '')
    log(`warning: that is close to the time limit of ${timeLimitMs(settings) / 1000} s${saving}`)
  }

  const env = await startTargets(settings, dir, group)
  await checkTargetsServe(env)
  const atStart = await readProxyMetrics(env.proxy.adminUrl)
  const proxyRssAtStart = rssBytes([env.proxy.pid])

  // First: it starts its own origin and proxy, and fails (as a setup would) before the long runs.
  const hostRoutes = settings.hostRoutes
    ? await measureHostRoutes({
        group,
        dir,
        mediaRoot: env.mediaRoot,
        keyPath: env.keyPath,
        originKind: settings.origin,
        load: env.load,
        body: BODY_SIZES[0] as BodySize,
        rounds: settings.hostRoutesRounds,
        seconds: settings.hostRoutesSeconds,
        warmupSeconds: settings.warmupSeconds,
        log,
      })
    : undefined
  const applications = settings.applications
    ? await measureApplications({
        group,
        dir,
        mediaRoot: env.mediaRoot,
        upstreamUrl: env.origin.url,
        keyPath: env.keyPath,
        load: env.load,
        body: BODY_SIZES[0] as BodySize,
        rounds: settings.applicationsRounds,
        seconds: settings.applicationsSeconds,
        warmupSeconds: settings.warmupSeconds,
        log,
      })
    : undefined
  const cache = settings.cache
    ? await measureCache({
        group,
        dir,
        mediaRoot: env.mediaRoot,
        keyPath: env.keyPath,
        storedFiles: memoryDir
          ? { dir: memoryDir, filesystem: 'tmpfs (/dev/shm)' }
          : { dir, filesystem: `the benchmark's temp dir (${dir})` },
        originKind: settings.origin,
        load: env.load,
        rounds: settings.cacheRounds,
        seconds: settings.cacheSeconds,
        warmupSeconds: settings.warmupSeconds,
        slow: { clients: SLOW_CLIENTS, bytesPerSecond: SLOW_BYTES_PER_SECOND, maxSeconds: settings.slowSeconds },
        rebuildStarts: settings.cacheRebuildStarts,
        log,
      })
    : undefined
  const tracing = settings.tracing
    ? await measureTracing({
        group,
        worktrees,
        dir,
        mediaRoot: env.mediaRoot,
        upstreamUrl: env.origin.url,
        originDescription: env.origin.description,
        keyPath: env.keyPath,
        load: env.load,
        body: BODY_SIZES[0] as BodySize,
        rounds: settings.tracingRounds,
        seconds: settings.tracingSeconds,
        warmupSeconds: settings.warmupSeconds,
        log,
      })
    : undefined
  const memory = await measureMemory(env)
  const many = settings.manyClients ? await measureManyClients(env) : undefined
  const cells = await throughputRounds(env)
  const latencyRuns = await latencyRounds(env)
  const signatures = await countSignatures(env, atStart)
  const proxyRssAtEnd = rssBytes([env.proxy.pid])
  const proxyLogBytes = statSync(env.proxy.logFile).size

  const summaries = summarise(cells)
  const latency: LatencySummary[] = summariseLatency(latencyRuns)
  const targets = checkTargets(summaries, latency, memory, signatures, many, hostRoutes, applications, cache, tracing)
  const finishedAt = new Date()

  const header = [
    '',
    `vonage-media-proxy benchmark: ${settings.rounds} interleaved round(s), medians; ${settings.seconds} s per run`,
    `origin: ${env.origin.description} (isolates the proxy's own cost)`,
    `proxy: node dist/main.js, LOG_LEVEL=info, metrics on, the image's ${Object.entries(imageMallocEnv())
      .map(([name, value]) => `${name}=${value}`)
      .join(' ')}`,
    `load: ${machine.loadGenerator}; ${machine.pinning}`,
    `machine: ${machine.cores} x ${machine.cpu}, node ${process.version}` +
      (settings.nginx ? `, nginx ${machine.nginx}` : '') +
      `; load average ${loadavg()
        .map((value) => value.toFixed(2))
        .join(' ')} (other work on the machine makes absolute figures noisy: compare ratios)`,
    'CPU us/req: server CPU (user+system, /proc) per request: the proxy, the nginx master+worker, or the origin for direct',
    ...(settings.contenders
      ? CONTENDERS.map((name) => `${name}: ${CONTENDER_DESCRIPTIONS[name]}; ${CONTENDER_SIZES.join(' and ')} only`)
      : []),
    '',
  ]
  const out = [
    ...header,
    throughputTable(summaries),
    '',
    ...(settings.contenders
      ? [
          'Relay decision: the proxy (logging at info, metrics, retries and all) against the relays it was chosen ' +
            'over (static token, no logging, no metrics); CPU and req/s vs proxy = contender / proxy:',
          relayDecisionTable(summaries, CONTENDER_SIZES),
          '',
        ]
      : []),
    ...(hostRoutes
      ? [
          `Host-prefixed route vs /media/:id on one proxy (UPSTREAM_BASE_URL=https://${BASE_HOST}), both over TLS ` +
            `(UPSTREAM_CONNECT_TO) to ${hostRoutes.origin}; ${hostRoutes.bodyLabel}, ` +
            `${hostRoutes.connections} connections, ${hostRoutes.rounds} interleaved round(s) of ${hostRoutes.seconds} s, ` +
            'medians; CPU vs /media/:id: median of the per-round ratios ' +
            `(${hostRoutes.roundRatios.map((r) => fmt(r, 3)).join(', ')}); upstream responses: ` +
            Object.entries(hostRoutes.upstreamResponses)
              .map(([host, count]) => `${fmt(count)} from ${host}`)
              .join(', '),
          hostRoutesTable(hostRoutes),
          '',
        ]
      : []),
    ...(applications
      ? [
          `${fmt(applications.applications)} applications (VONAGE_APPLICATIONS_DIR, ${applications.distinctKeys} ` +
            'distinct RSA 2048 keys, no default) vs one application (VONAGE_APPLICATION_ID), a fresh proxy each; ' +
            'ready: spawn to /readyz 200 (polled every 20 ms); idle RSS: 2 s after ready, no request yet, and the ' +
            'CPU used in those 2 s; ' +
            `${applications.bodyLabel}, ${applications.connections} connections, Vonage-Application-Id cycling over ` +
            `${applications.warmApplications} warm applications (none for one application), ` +
            `${applications.rounds} interleaved round(s) of ${applications.seconds} s, medians; CPU vs one: median ` +
            `of the per-round ratios (${applications.roundRatios.map((r) => fmt(r, 3)).join(', ')})`,
          applicationsTable(applications),
          `signatures (media_proxy_token_refreshes_total, every application and result): ` +
            `${applications.warmSignatures} for the ${applications.warmApplications} warm-up requests, ` +
            `${applications.loadSignatures} during the load; an application never used before: ` +
            `${applications.cold.firstSignatures} on its first request (${fmt(applications.cold.firstMs, 1)} ms), ` +
            `${applications.cold.secondSignatures} on its second (${fmt(applications.cold.secondMs, 1)} ms)`,
          '',
        ]
      : []),
    ...(cache
      ? [
          `Disk cache (CACHE_DIR in a temp dir on ${tmpdir()}, default CACHE_MAX_BYTES) against ${cache.origin}: ` +
            'hit: one stored file, every request; miss: a file never asked for, a new one each request (the ' +
            'cache stores each); no cache: the same new files through a proxy without CACHE_DIR; ' +
            `${cache.rounds} interleaved round(s) of ${Object.entries(cache.seconds)
              .map(([size, seconds]) => `${seconds} s (${size})`)
              .join(' and ')}, medians; ratios: medians of the per-round ratios; upstream/req: requests ` +
            'at the origin (its access log) per response completed, a download cut at the end of a run and ' +
            'stored anyway counting too',
          cacheTable(cache),
          sharedDownloadLine(cache.sharedDownload),
          `Memory (VmRSS) with ${cache.slowHits.clients} clients reading a stored ` +
            `${BODY_SIZES[BODY_SIZES.length - 1]?.label} at ${SLOW_BYTES_PER_SECOND / 1e6} MB/s each, for at most ` +
            `${settings.slowSeconds} s (idle: after start-up and one request per size); ` +
            `${cache.slowHits.upstreamRequests} requests reached the origin meanwhile`,
          memoryTable([cache.slowHits]),
          `Index rebuild: proxies started on ${fmt(cache.rebuild.files)} stored files (written to ` +
            `${cache.rebuild.filesystem} in ${fmt(cache.rebuild.writeSeconds, 1)} s just before: their directory ` +
            'and inodes are in memory, as after a restart of the container, not of the machine) and on an ' +
            'empty cache, in turn, ' +
            `${settings.cacheRebuildStarts} time(s) each, medians; ms from the spawn to the log lines (pino time); ` +
            'idle RSS: 1 s after both listen',
          cacheRebuildTable(cache.rebuild),
          '',
        ]
      : []),
    ...(tracing
      ? [
          `Tracing: three proxies in front of ${tracing.origin}: before tracing: commit ${tracing.before.commit} ` +
            `("${tracing.before.subject}"), the last before tracing, the disk cache and signed links, built in a git ` +
            `worktree with this checkout's node_modules` +
            (tracing.before.dependencyMismatches.length > 0
              ? ` (NOT its locked versions: ${tracing.before.dependencyMismatches.join(', ')})`
              : ' (its locked versions)') +
            "; tracing off: today's build; tracing on: the same with OTEL_EXPORTER_OTLP_ENDPOINT set to a local " +
            `OTLP/HTTP sink (bench/otlp-sink.ts: reads each export, counts its spans, answers 200), exporter protocol ` +
            `${tracing.export.protocol}, default sampler (parentbased_always_on) and batch settings; every request ` +
            `carries a sampled traceparent; ${tracing.bodyLabel}, ${tracing.connections} connections, ` +
            `${tracing.rounds} interleaved round(s) of ${tracing.seconds} s, medians; ratios: medians of the ` +
            'per-round ratios',
          tracingTable(tracing),
          tracingExportLine(tracing.export),
          '',
        ]
      : []),
    `Added latency at concurrency 1 (${BODY_SIZES[0]?.label}), medians of ${settings.rounds} run(s):`,
    latencyTable(latency),
    '',
    `Memory (VmRSS) with ${SLOW_CLIENTS} clients reading ${BODY_SIZES[BODY_SIZES.length - 1]?.label} at ` +
      `${SLOW_BYTES_PER_SECOND / 1e6} MB/s each, for at most ${settings.slowSeconds} s ` +
      '(idle: after start-up and one request per size); ' +
      `${CLOSE_DELIMITED_PROXY}: a second proxy whose origin sends no length and closes the connection ` +
      `to end each body; proxy RSS after the whole run: ${fmt(proxyRssAtEnd / MiB, 1)} MiB`,
    memoryTable(memory),
    '',
    ...(many
      ? [
          `Memory (VmRSS) with ${fmt(many.clients)} downloads held at once, each of ${many.bodyLabel} read at ` +
            `${many.bytesPerSecondPerClient / 1e3} KB/s by a client with a ` +
            `${fmt((many.clientReceiveBufferBytes ?? 0) / 1024)} KiB receive buffer and a ${fmt(many.clientMssBytes)} ` +
            `byte MSS (bench/slow_clients.py), through a fresh proxy (default MAX_IN_FLIGHT_REQUESTS; idle: after ` +
            `start-up and one request) in front of ${many.origin}; clients started over ${many.rampSeconds} s, ` +
            `all stopped at ${many.seconds} s; in flight: the proxy's media_proxy_in_flight_requests, every ` +
            `${MANY_POLL_MS} ms; proxy's sockets: the kernel memory queued and unread on them (ss -m), which a ` +
            "cgroup v2 limit counts too; kernel TCP: the machine's (/proc/net/sockstat), peak of net.ipv4.tcp_mem's " +
            `pressure threshold (where the clients would be stopped); limit: resources.limits.memory, ${many.limitSource}` +
            (many.stoppedEarly ? `; STOPPED EARLY: ${many.stoppedEarly}` : ''),
          manyClientsTable(many),
          '',
        ]
      : []),
    `RS256 signatures: ${signatures.signatures} during ${fmt(signatures.requests)} requests ` +
      `(${fmt(signatures.per10k, 1)} per 10,000); whole run: ${signatures.wholeRun.signatures} for ` +
      `${fmt(signatures.wholeRun.requests)} requests, plus 1 at start-up`,
    '',
    targetsTable(targets),
    '',
  ]
  process.stdout.write(out.join('\n'))

  const file = writeResults(stamp, {
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    wallSeconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
    settings,
    machine: { ...machine, loadAverageAtEnd: loadavg() },
    origin: { kind: env.origin.kind, description: env.origin.description },
    proxy: {
      command: 'node dist/main.js',
      environment: { LOG_LEVEL: 'info', NODE_ENV: 'production', JWT_TTL_SECONDS: 'default' },
      rssAtStartBytes: proxyRssAtStart,
      rssAtEndBytes: proxyRssAtEnd,
      logBytes: proxyLogBytes,
    },
    bodySizes: BODY_SIZES,
    targets: TARGETS.filter((name) => env.targets.some((target) => target.name === name)),
    contenders: settings.contenders
      ? {
          sizes: CONTENDER_SIZES,
          ...Object.fromEntries(CONTENDERS.map((name) => [name, CONTENDER_DESCRIPTIONS[name]])),
        }
      : undefined,
    summary: summaries,
    latency: { summary: latency, runs: latencyRuns },
    memory,
    manyClients: many,
    hostRoutes,
    applications,
    cache,
    tracing,
    signatures,
    targetChecks: targets,
    cells,
  })
  log(`raw results: ${file}`)
}

async function profileRun(settings: Settings, dir: string, group: ProcessGroup): Promise<void> {
  const stamp = timestamp()
  describeSetup(settings)
  pinSelf(LOAD_CORE)
  log('building the proxy (npx tsc -p tsconfig.build.json)')
  buildProxy()
  const key = throwawayKey(dir)
  const origin = await startOrigin(group, { kind: settings.origin, dir, root: prepareMedia(dir) })
  const profileDir = join(dir, 'profile')
  const proxy = await startProxy(group, {
    dir,
    upstreamUrl: origin.url,
    keyPath: key.path,
    nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`],
  })
  const load = settings.autocannon ? inProcessGenerator : wrk(group, dir)
  const small = BODY_SIZES[0] as BodySize
  const url = `${proxy.mediaUrl}/media/${small.id}`
  log(`profiling: ${small.label}, ${small.connections} connections, ${settings.profileSeconds} s (after a warm-up)`)
  await load.run({ url, connections: small.connections, durationSeconds: settings.warmupSeconds })
  const result = await load.run({ url, connections: small.connections, durationSeconds: settings.profileSeconds })
  const exit = await group.stop(proxy.child, 'SIGTERM')
  const written = readdirSync(profileDir).filter((name) => name.endsWith('.cpuprofile'))
  if (exit !== 0 || written.length === 0) throw new Error(`the proxy exited with ${exit} and wrote no CPU profile`)
  mkdirSync(RESULTS_DIR, { recursive: true })
  const kept = join(RESULTS_DIR, `${stamp}.cpuprofile`)
  copyFileSync(join(profileDir, written[0] as string), kept)
  const summary = summariseProfile(kept)
  const busy = summary.totalMs - summary.idleMs
  process.stdout.write(
    [
      '',
      `proxy under ${fmt(result.reqPerSec)} req/s of ${small.label} (profiler on: slower than unprofiled); ` +
        `${fmt(busy)} ms busy of ${fmt(summary.totalMs)} ms profiled`,
      'top 10 functions by self time (share of busy time):',
      ...summary.top.map(
        (fn) => `${fmt(fn.selfPercent, 1).padStart(6)} %  ${fmt(fn.selfMs).padStart(7)} ms  ${fn.name}  ${fn.location}`,
      ),
      '',
      'self time by package or file:',
      ...summary.byPackage.map((owner) => `${fmt(owner.selfPercent, 1).padStart(6)} %  ${owner.name}`),
      '',
      `flame graph: open ${kept} in Chrome DevTools (Performance) or https://www.speedscope.app`,
      '',
    ].join('\n'),
  )
  const file = writeResults(`${stamp}-profile`, { settings, load: result, profile: kept, summary })
  log(`raw results: ${file}`)
}

await main()

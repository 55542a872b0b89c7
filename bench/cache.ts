// The disk cache (CACHE_DIR), issue 15's targets: a 1 KiB hit costs less CPU per request than a
// miss; a 32 MiB hit's throughput is at least a miss's; 8 concurrent misses for one 32 MiB file
// make exactly one upstream request; RSS stays flat while 16 slow clients read hits; and the time
// a proxy takes to rebuild its index of 100,000 stored files at start (reported, no target yet).
// One origin serves it all: the media files and copies of them under any new id
// (origin.ts's copies origin), logging every request, so that what reached it is counted there.
// Two proxies (node dist/main.js, pinned as the other): one with CACHE_DIR in a temp dir, one
// without. A hit asks every time for one stored file; a miss for a file never asked for, a new one
// each request (the cache stores every one); "no cache" sends the same new files through the proxy
// without a cache. Interleaved rounds, each round's order rotated; the verdicts are the medians of
// the per-round ratios. Besides: 8 GETs at once for a file not stored yet (through the proxy
// without a cache too, for reference), 16 slow clients reading a hit (run.ts's memory run), and
// proxies started on 100,000 stored files and on an empty cache, spawn to listening. Everything
// started here, the cache directories and the stored files, is gone when it returns.
import { mkdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { FIXTURE_BODY, fixtureId, writeStoredFiles } from './cache-fixture.js'
import { type LoadGenerator, type LoadSpec, seriesPath } from './load.js'
import { BODY_SIZES, type BodySize, copyPaths, type OriginKind, startCopiesOrigin } from './origin.js'
import { type Child, cpuSeconds, type ProcessGroup, rssBytes } from './processes.js'
import { APPLICATION_ID, type RunningProxy, startProxy } from './proxy.js'
import {
  CACHE_VARIANTS,
  type CacheCell,
  type CacheRebuildStart,
  type CacheSummary,
  type CacheVariant,
  fmt,
  median,
  type SharedDownloadTrial,
  summariseCache,
} from './report.js'
import { RssSampler, slowReaders } from './slow-readers.js'

/** Stored files the index rebuild is timed on. */
export const REBUILD_FILES = 100_000
/** Clients asking at once for one file not stored yet. */
const SHARED_CLIENTS = 8
const SHARED_TRIALS = 3
/** The hits' series of copies (copyPaths): one stored file per body size. Misses take 1, 2... */
const HIT_SERIES = 0
/** A download that a run's end cut goes on being stored: the next run waits until the proxy idles. */
const QUIET_POLL_MS = 100
const QUIET_TIMEOUT_MS = 5_000
/** At most this much CPU in QUIET_POLL_MS is idle: one clock tick. */
const QUIET_CPU_SECONDS = 0.01
/** A 32 MiB run lasts at least this long: in 1 s a miss completes a handful of responses, too few to count. */
export const CACHE_BIG_RUN_SECONDS = 2
/** After a proxy starts, before its VmRSS is read: start-up's garbage has a moment to go. */
const IDLE_SETTLE_MS = 1_000
/** nginx writes a request's access-log line as it finishes: a moment after the client got the last byte. */
const ORIGIN_LOG_MS = 100
/**
 * Seconds the cache phase takes besides its load runs, its slow clients and its rebuild starts:
 * origin and proxies, the shared downloads, the stored files (written while the slow clients run,
 * unless on a slow disk), and removing what was stored.
 */
export const CACHE_SETUP_SECONDS = 10
/** Seconds each rebuild start takes: two proxies started in turn, their settling, their stop. */
export const CACHE_REBUILD_START_SECONDS = 4.5

export interface CacheOptions {
  group: ProcessGroup
  dir: string
  mediaRoot: string
  keyPath: string
  /** Where the rebuild's stored files go (in a directory of their own), and what that is, for the report. */
  storedFiles: { dir: string; filesystem: string }
  originKind: OriginKind
  load: LoadGenerator
  rounds: number
  seconds: number
  warmupSeconds: number
  /** The slow clients, as run.ts's memory run. */
  slow: { clients: number; bytesPerSecond: number; maxSeconds: number }
  /** Starts of each proxy (stored files, empty cache) for the rebuild time. */
  rebuildStarts: number
  log: (message: string) => void
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export async function measureCache(options: CacheOptions): Promise<CacheSummary> {
  const { group, dir, log } = options
  const started = performance.now()
  const cacheDir = join(dir, 'cache')
  const emptyDir = join(dir, 'cache-empty')
  const storedDir = join(options.storedFiles.dir, 'cache-stored')
  const small = BODY_SIZES[0] as BodySize
  const big = BODY_SIZES[BODY_SIZES.length - 1] as BodySize
  const running: Child[] = []
  const stopWriting = new AbortController()
  let writing: Promise<number> | undefined
  try {
    const origin = await startCopiesOrigin(group, { kind: options.originKind, dir, root: options.mediaRoot })
    running.push(origin.child)
    // Written meanwhile: starting the proxies, the checks, the slow clients and the shared
    // downloads measure no CPU. On a slow disk it takes longer than all of them.
    const writeStarted = performance.now()
    writing = writeStoredFiles(storedDir, REBUILD_FILES, APPLICATION_ID, origin.url, stopWriting.signal).then(
      () => (performance.now() - writeStarted) / 1000,
    )
    // Awaited below; a failure before then must not go unhandled.
    writing.catch(() => undefined)
    const cached = await startProxy(group, {
      name: 'proxy-cache',
      dir,
      upstreamUrl: origin.url,
      keyPath: options.keyPath,
      env: { CACHE_DIR: cacheDir },
    })
    running.push(cached.child)
    const uncached = await startProxy(group, {
      name: 'proxy-no-cache',
      dir,
      upstreamUrl: origin.url,
      keyPath: options.keyPath,
    })
    running.push(uncached.child)
    log(
      `cache: a proxy with CACHE_DIR=<temp dir> (pid ${cached.pid}) and one without (pid ${uncached.pid}) in front ` +
        `of ${origin.description} at ${origin.url}`,
    )

    const originRequests = (id?: string) => {
      const lines = readFileSync(origin.accessLog, 'latin1').split('\n')
      return id === undefined ? lines.length - 1 : lines.filter((line) => line.includes(id)).length
    }
    const media = (size: BodySize) => readFileSync(join(options.mediaRoot, 'v3', 'media', size.id))
    const hitUrl = (size: BodySize) => `${cached.mediaUrl}${seriesPath(copyPaths(size, HIT_SERIES, false), 0)}`
    /** One GET of a hit's file: stores it first when it is not (now, or no longer: evicted). */
    const ensureStored = async (size: BodySize) => {
      for (let attempt = 0; attempt < 2; attempt++) {
        const got = await get(hitUrl(size))
        if (got.status !== 200 || !got.body.equals(media(size))) {
          throw new Error(`cache: ${size.label} hit: status ${got.status}, ${got.body.length} bytes: not the media`)
        }
        if (got.cacheStatus?.endsWith('; hit')) return
      }
      throw new Error(`cache: ${size.label}: a stored file's second GET is no hit`)
    }
    for (const size of [small, big]) {
      const first = await get(hitUrl(size))
      if (!first.cacheStatus?.endsWith('; stored')) {
        throw new Error(`cache: ${size.label}: a first GET is answered with Cache-Status ${first.cacheStatus}`)
      }
      await ensureStored(size)
      const plain = await get(`${uncached.mediaUrl}${seriesPath(copyPaths(size, HIT_SERIES, false), 0)}`)
      if (plain.status !== 200 || !plain.body.equals(media(size))) {
        throw new Error(`cache: ${size.label} without a cache: status ${plain.status}: not the media`)
      }
    }
    let lastSeries = HIT_SERIES
    const nextSeries = () => ++lastSeries

    // Memory first, after a few requests per size, as in run.ts's memory run.
    await sleep(1_000)
    const slow = options.slow
    log(
      `cache: ${slow.clients} clients reading a stored ${big.label} at ${slow.bytesPerSecond / 1e6} MB/s ` +
        `(up to ${slow.maxSeconds} s); ${fmt(REBUILD_FILES)} stored files being written meanwhile`,
    )
    const beforeSlow = originRequests()
    const idleBytes = rssBytes([cached.pid])
    const sampler = new RssSampler([cached.pid])
    const slowResult = await slowReaders({
      url: hitUrl(big),
      clients: slow.clients,
      bytesPerSecond: slow.bytesPerSecond,
      maxSeconds: slow.maxSeconds,
      expectedBytes: big.bytes,
    })
    const peakBytes = sampler.stop()
    await sleep(ORIGIN_LOG_MS)
    const slowHits = {
      target: 'proxy, cache hits',
      idleBytes,
      peakBytes,
      aboveIdleBytes: peakBytes - idleBytes,
      clients: slowResult.clients,
      completed: slowResult.completed,
      failed: slowResult.failed,
      meanBytesPerSecondPerClient: slowResult.meanBytesPerSecondPerClient,
      upstreamRequests: originRequests() - beforeSlow,
    }

    const shared = async (proxy: RunningProxy): Promise<SharedDownloadTrial> => {
      const path = seriesPath(copyPaths(big, nextSeries(), false), 0)
      const id = path.slice(path.lastIndexOf('/') + 1)
      const expected = media(big)
      const got = await Promise.all(Array.from({ length: SHARED_CLIENTS }, () => get(`${proxy.mediaUrl}${path}`)))
      await sleep(ORIGIN_LOG_MS)
      const cacheStatus: Record<string, number> = {}
      for (const { cacheStatus: value } of got) {
        const key = value ?? 'none'
        cacheStatus[key] = (cacheStatus[key] ?? 0) + 1
      }
      return {
        clients: SHARED_CLIENTS,
        complete: got.filter((response) => response.status === 200 && response.body.equals(expected)).length,
        upstreamRequests: originRequests(id),
        cacheStatus,
      }
    }
    const trials: SharedDownloadTrial[] = []
    for (let trial = 0; trial < SHARED_TRIALS; trial++) trials.push(await shared(cached))
    const withoutCache = await shared(uncached)
    log(
      `cache: ${SHARED_CLIENTS} GETs at once for a ${big.label} file not stored: ` +
        `${trials.map((t) => t.upstreamRequests).join(', ')} origin request(s) in ${SHARED_TRIALS} trials ` +
        `(${trials.map((t) => JSON.stringify(t.cacheStatus)).join(', ')}); without a cache ` +
        `${withoutCache.upstreamRequests}`,
    )

    const writeSeconds = await writing
    log(`cache: ${fmt(REBUILD_FILES)} stored files written in ${fmt(writeSeconds, 1)} s`)
    const starts = await rebuildStarts(options, { storedDir, emptyDir, upstreamUrl: origin.url })
    const removeStarted = performance.now()
    rmSync(storedDir, { recursive: true, force: true })
    log(`cache: the stored files removed in ${fmt((performance.now() - removeStarted) / 1000, 1)} s`)

    const variants: Record<CacheVariant, { proxy: RunningProxy; distinct: boolean }> = {
      hit: { proxy: cached, distinct: false },
      miss: { proxy: cached, distinct: true },
      'no cache': { proxy: uncached, distinct: true },
    }
    const runSeconds = (size: BodySize) =>
      size === big ? Math.max(CACHE_BIG_RUN_SECONDS, options.seconds) : options.seconds
    const spec = (size: BodySize, variant: CacheVariant, durationSeconds: number): LoadSpec => {
      const { proxy, distinct } = variants[variant]
      return {
        url: `${proxy.mediaUrl}/`,
        connections: size.connections,
        durationSeconds,
        bodyBytes: size.bytes,
        pathSeries: copyPaths(size, distinct ? nextSeries() : HIT_SERIES, distinct),
      }
    }
    log(
      `cache: hit, miss and no cache at ${small.label} and ${big.label}: warm-up ${options.warmupSeconds} s each ` +
        `at ${small.label}, ` +
        `then ${options.rounds} interleaved round(s) of ${runSeconds(small)} s (${small.label}) and ` +
        `${runSeconds(big)} s (${big.label})`,
    )
    // At 1 KiB only: the same code serves 32 MiB, where a second costs more and warms no more.
    for (const variant of CACHE_VARIANTS) {
      if (variant === 'hit') await ensureStored(small)
      await options.load.run(spec(small, variant, options.warmupSeconds))
      await untilQuiet(variants[variant].proxy.pid)
    }
    const cells: CacheCell[] = []
    for (let round = 1; round <= options.rounds; round++) {
      // Rotate the order each round, so that no variant always runs right after another.
      const order = CACHE_VARIANTS.map(
        (_, i) => CACHE_VARIANTS[(i + round - 1) % CACHE_VARIANTS.length] as CacheVariant,
      )
      for (const size of [small, big]) {
        for (const variant of order) {
          const { pid } = variants[variant].proxy
          if (variant === 'hit') await ensureStored(size)
          const upstreamBefore = originRequests()
          const cpuBefore = cpuSeconds([pid])
          const load = await options.load.run(spec(size, variant, runSeconds(size)))
          const proxyCpuSeconds = cpuSeconds([pid]) - cpuBefore
          await untilQuiet(pid)
          const cell: CacheCell = {
            round,
            size: size.label,
            bodyBytes: size.bytes,
            connections: size.connections,
            variant,
            load,
            proxyCpuSeconds,
            upstreamRequests: originRequests() - upstreamBefore,
          }
          cells.push(cell)
          log(
            `cache round ${round}/${options.rounds} ${size.label.padStart(6)} ${variant.padEnd(8)} ` +
              `${fmt(load.reqPerSec).padStart(7)} req/s  ` +
              `${fmt((load.reqPerSec * size.bytes) / 1e6, 1).padStart(8)} MB/s  ` +
              `${fmt((proxyCpuSeconds * 1e6) / Math.max(1, load.requests), 1).padStart(8)} us CPU/req  ` +
              `${fmt(cell.upstreamRequests)} upstream`,
          )
        }
      }
    }
    const byCache = (cache: CacheRebuildStart['cache']) => {
      const mine = starts.filter((start) => start.cache === cache)
      return {
        cacheOpenedMs: median(mine.map((start) => start.cacheOpenedMs)),
        listeningMs: median(mine.map((start) => start.listeningMs)),
        idleRssBytes: median(mine.map((start) => start.idleRssBytes)),
      }
    }
    log(`cache: ${fmt((performance.now() - started) / 1000, 1)} s in all`)
    return summariseCache(cells, {
      origin: origin.description,
      rounds: options.rounds,
      seconds: Object.fromEntries([small, big].map((size) => [size.label, runSeconds(size)])),
      sharedDownload: { bodyLabel: big.label, trials, withoutCache },
      slowHits,
      rebuild: {
        files: REBUILD_FILES,
        filesystem: options.storedFiles.filesystem,
        writeSeconds,
        starts,
        empty: byCache('empty'),
        stored: byCache('stored'),
      },
    })
  } finally {
    stopWriting.abort()
    await writing?.catch(() => undefined)
    for (const child of running.reverse()) await group.stop(child)
    for (const path of [cacheDir, emptyDir, storedDir]) rmSync(path, { recursive: true, force: true })
  }
}

/**
 * Proxies started on the stored files and on an empty cache, in turn (which goes first
 * alternates): from the spawn to their "cache opened" and "listening" log lines, and their VmRSS
 * once idle. The first start on the stored files answers one of them from disk, or fails.
 */
async function rebuildStarts(
  options: CacheOptions,
  dirs: { storedDir: string; emptyDir: string; upstreamUrl: string },
): Promise<CacheRebuildStart[]> {
  const { group, log } = options
  mkdirSync(dirs.emptyDir, { recursive: true })
  const starts: CacheRebuildStart[] = []
  for (let trial = 1; trial <= options.rebuildStarts; trial++) {
    const kinds: CacheRebuildStart['cache'][] = trial % 2 === 1 ? ['stored', 'empty'] : ['empty', 'stored']
    const proxies: { cache: CacheRebuildStart['cache']; proxy: RunningProxy }[] = []
    try {
      for (const cache of kinds) {
        const proxy = await startProxy(group, {
          name: `proxy-cache-${cache}`,
          dir: options.dir,
          upstreamUrl: dirs.upstreamUrl,
          keyPath: options.keyPath,
          env: { CACHE_DIR: cache === 'stored' ? dirs.storedDir : dirs.emptyDir },
        })
        proxies.push({ cache, proxy })
      }
      await sleep(IDLE_SETTLE_MS)
      for (const { cache, proxy } of proxies) {
        const spawnedAt = performance.timeOrigin + proxy.spawnedAt
        const lines = readFileSync(proxy.logFile, 'utf8').split('\n')
        const line = (message: string) => {
          const found = lines.find((text) => text.includes(`"msg":"${message}"`))
          if (!found) throw new Error(`cache: ${cache} cache: no "${message}" log line`)
          return JSON.parse(found) as { time: number; files?: number }
        }
        const opened = line('cache opened')
        starts.push({
          cache,
          trial,
          files: opened.files ?? 0,
          cacheOpenedMs: opened.time - spawnedAt,
          listeningMs: line('vonage-media-proxy listening').time - spawnedAt,
          idleRssBytes: rssBytes([proxy.pid]),
        })
      }
      const stored = proxies.find((p) => p.cache === 'stored')?.proxy
      if (trial === 1 && stored) {
        const found = starts.find((start) => start.cache === 'stored')?.files
        if (found !== REBUILD_FILES) throw new Error(`cache: the proxy indexed ${found} of ${REBUILD_FILES} files`)
        for (const i of [0, REBUILD_FILES - 1]) {
          const got = await get(`${stored.mediaUrl}/media/${fixtureId(i)}`)
          if (got.status !== 200 || !got.cacheStatus?.endsWith('; hit') || !got.body.equals(FIXTURE_BODY)) {
            throw new Error(`cache: stored file ${i}: status ${got.status}, Cache-Status ${got.cacheStatus}`)
          }
        }
      }
    } finally {
      for (const { proxy } of proxies) await group.stop(proxy.child)
    }
    const mine = starts.filter((start) => start.trial === trial)
    log(
      `cache rebuild ${trial}/${options.rebuildStarts}: ` +
        mine
          .map(
            (start) =>
              `${start.cache === 'stored' ? `${fmt(start.files)} files` : 'empty'}: listening after ` +
              `${fmt(start.listeningMs)} ms, ${fmt(start.idleRssBytes / 1024 / 1024, 1)} MiB`,
          )
          .join('; '),
    )
  }
  return starts
}

/** One GET, read whole: its status, Cache-Status and body. */
async function get(url: string): Promise<{ status: number; cacheStatus: string | null; body: Buffer }> {
  const response = await fetch(url)
  const body = Buffer.from(await response.arrayBuffer())
  return { status: response.status, cacheStatus: response.headers.get('cache-status'), body }
}

/** Waits until the proxy idles: at most QUIET_CPU_SECONDS in QUIET_POLL_MS, or QUIET_TIMEOUT_MS. */
async function untilQuiet(pid: number): Promise<void> {
  const deadline = performance.now() + QUIET_TIMEOUT_MS
  let last = cpuSeconds([pid])
  while (performance.now() < deadline) {
    await sleep(QUIET_POLL_MS)
    const now = cpuSeconds([pid])
    if (now - last <= QUIET_CPU_SECONDS + 1e-9) return
    last = now
  }
}

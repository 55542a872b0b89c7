// Many Vonage applications on one proxy. The issue's targets: "With 1,000 applications in the
// directory: ready within 2 s of start, RSS at most 64 MiB above one application's, a request for
// an application whose token is warm costs no more than 5 % more CPU than with one application,
// and a cold one costs exactly one signature."
// A directory of APPLICATIONS <application-id>.pem files (random v4 UUIDs) holding DISTINCT_KEYS
// throwaway RSA 2048 keys in turn (generating 1,000 would take a minute; the proxy parses and
// keeps each file's key on its own, repeats or not), and two proxies (node dist/main.js, pinned as
// the other): one with VONAGE_APPLICATIONS_DIR and no default application, one with the usual
// single application. For each: the time from spawn to /readyz 200 (polled every READY_POLL_MS on
// an admin port chosen here), and VmRSS once idle after it. Then WARM_APPLICATIONS applications
// get one request each on the first, and the 1 KiB load runs against both in interleaved rounds,
// the first with Vonage-Application-Id cycling over the warm applications, the second without
// the header (wrk's Lua script on both, so the load generator costs the same); the verdict is
// the median of the per-round ratios of CPU per request. Cold: media_proxy_token_refreshes_total,
// summed over every application and result, around the first request for an application never
// used (one signature) and around its second (none). Everything started here, and the keys, is
// gone when it returns.
import { generateKeyPairSync, randomUUID } from 'node:crypto'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { LoadGenerator, LoadSpec } from './load.js'
import type { BodySize } from './origin.js'
import { freePort, HOST } from './ports.js'
import { cpuSeconds, type ProcessGroup, rssBytes } from './processes.js'
import { type RunningProxy, readProxyMetrics, startProxy } from './proxy.js'
import {
  type ApplicationsCell,
  type ApplicationsProxy,
  type ApplicationsProxyStart,
  type ApplicationsSummary,
  fmt,
  summariseApplications,
} from './report.js'

export const APPLICATIONS = 1_000
const DISTINCT_KEYS = 10
const WARM_APPLICATIONS = 50
const HEADER = 'Vonage-Application-Id'
const READY_POLL_MS = 20
const READY_TIMEOUT_MS = 15_000
/**
 * After /readyz says 200, before VmRSS is read: start-up's garbage has a moment to go. The CPU
 * used meanwhile is each proxy's idle cost (the directory's watch and poll, for the first).
 */
const IDLE_SETTLE_MS = 2_000
const SETTLE_MS = 100
/** Seconds the applications phase takes besides its load runs: keys, files, two proxies, settling, checks. */
export const APPLICATIONS_SETUP_SECONDS = 6

export interface ApplicationsOptions {
  group: ProcessGroup
  dir: string
  mediaRoot: string
  /** The origin both proxies read from (it checks no token: any application id works upstream). */
  upstreamUrl: string
  /** The single application's key. */
  keyPath: string
  load: LoadGenerator
  body: BodySize
  rounds: number
  seconds: number
  warmupSeconds: number
  log: (message: string) => void
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export async function measureApplications(options: ApplicationsOptions): Promise<ApplicationsSummary> {
  const { group, dir, body, log } = options
  const started = performance.now()
  const keysDir = join(dir, 'applications')
  mkdirSync(keysDir, { mode: 0o700 })
  const running: RunningProxy[] = []
  try {
    const pems = Array.from({ length: DISTINCT_KEYS }, () =>
      generateKeyPairSync('rsa', { modulusLength: 2048 })
        .privateKey.export({ type: 'pkcs8', format: 'pem' })
        .toString(),
    )
    const ids = Array.from({ length: APPLICATIONS }, () => randomUUID())
    ids.forEach((id, i) => {
      writeFileSync(join(keysDir, `${id}.pem`), pems[i % DISTINCT_KEYS] as string, { mode: 0o600 })
    })
    log(
      `applications: ${fmt(APPLICATIONS)} <application-id>.pem files (${DISTINCT_KEYS} distinct RSA 2048 keys) ` +
        `in ${fmt(performance.now() - started)} ms`,
    )

    const many = await startTimed(group, {
      name: 'proxy-applications',
      dir,
      upstreamUrl: options.upstreamUrl,
      keyPath: options.keyPath,
      // No default application: the directory alone.
      env: { VONAGE_APPLICATIONS_DIR: keysDir, VONAGE_APPLICATION_ID: '', VONAGE_PRIVATE_KEY_PATH: '' },
    })
    running.push(many.proxy)
    const one = await startTimed(group, {
      name: 'proxy-one-application',
      dir,
      upstreamUrl: options.upstreamUrl,
      keyPath: options.keyPath,
    })
    running.push(one.proxy)
    const loaded = {
      many: (await readProxyMetrics(many.proxy.adminUrl)).applicationsLoaded,
      one: (await readProxyMetrics(one.proxy.adminUrl)).applicationsLoaded,
    }
    if (loaded.many !== APPLICATIONS) {
      throw new Error(`applications: the proxy loaded ${loaded.many} applications of ${APPLICATIONS}`)
    }
    log(
      `applications: ready (/readyz 200) ${fmt(many.readyMs)} ms after spawn with ${fmt(loaded.many)} ` +
        `applications (pid ${many.proxy.pid}), ${fmt(one.readyMs)} ms with one (pid ${one.proxy.pid})`,
    )
    const idleCpuAtStart = { many: cpuSeconds([many.proxy.pid]), one: cpuSeconds([one.proxy.pid]) }
    await sleep(IDLE_SETTLE_MS)
    const idleRss = { many: rssBytes([many.proxy.pid]), one: rssBytes([one.proxy.pid]) }
    const idleCpu = {
      many: (cpuSeconds([many.proxy.pid]) - idleCpuAtStart.many) / (IDLE_SETTLE_MS / 1000),
      one: (cpuSeconds([one.proxy.pid]) - idleCpuAtStart.one) / (IDLE_SETTLE_MS / 1000),
    }

    const url = { many: `${many.proxy.mediaUrl}/media/${body.id}`, one: `${one.proxy.mediaUrl}/media/${body.id}` }
    const expected = readFileSync(join(options.mediaRoot, 'v3', 'media', body.id))
    const get = async (target: string, applicationId?: string) => {
      const sent = performance.now()
      const response = await fetch(target, { headers: applicationId ? { [HEADER]: applicationId } : {} })
      const got = Buffer.from(await response.arrayBuffer())
      if (response.status !== 200 || !got.equals(expected)) {
        throw new Error(
          `applications: ${target}${applicationId ? ` for ${applicationId}` : ''}: status ${response.status}, ` +
            `${got.length} bytes: not the media`,
        )
      }
      return performance.now() - sent
    }
    const refreshes = async () => (await readProxyMetrics(many.proxy.adminUrl)).refreshes

    // Warm: one request each, sequentially, so each is one signing.
    const warm = ids.slice(0, WARM_APPLICATIONS)
    const beforeWarm = await refreshes()
    for (const id of warm) await get(url.many, id)
    const warmSignatures = (await refreshes()) - beforeWarm
    await get(url.one)

    // Cold: an application no request has named yet.
    const coldId = ids[WARM_APPLICATIONS] as string
    const beforeCold = await refreshes()
    const firstMs = await get(url.many, coldId)
    const afterFirst = await refreshes()
    const secondMs = await get(url.many, coldId)
    const afterSecond = await refreshes()
    const cold = {
      firstSignatures: afterFirst - beforeCold,
      secondSignatures: afterSecond - afterFirst,
      firstMs,
      secondMs,
    }
    if (cold.firstSignatures !== 1 || cold.secondSignatures !== 0) {
      log(
        `warning: applications: a cold application's first request made ${cold.firstSignatures} signature(s), ` +
          `its second ${cold.secondSignatures} (expected 1 and 0)`,
      )
    }

    const pids: Record<ApplicationsProxy, number> = { many: many.proxy.pid, one: one.proxy.pid }
    const spec = (proxy: ApplicationsProxy, durationSeconds: number): LoadSpec => ({
      url: url[proxy],
      connections: body.connections,
      durationSeconds,
      bodyBytes: body.bytes,
      headerCycle: { name: HEADER, values: proxy === 'many' ? warm : [] },
    })
    log(
      `applications: ${body.label} load, ${HEADER} cycling over ${WARM_APPLICATIONS} warm applications vs ` +
        `one application without it; warm-up ${options.warmupSeconds} s each, then ${options.rounds} ` +
        `interleaved round(s) of ${options.seconds} s`,
    )
    const beforeLoad = await refreshes()
    const proxies: readonly ApplicationsProxy[] = ['one', 'many']
    for (const proxy of proxies) await options.load.run(spec(proxy, options.warmupSeconds))
    const cells: ApplicationsCell[] = []
    for (let round = 1; round <= options.rounds; round++) {
      // Alternate which proxy goes first, so that neither always follows the other.
      const order = round % 2 === 1 ? proxies : [...proxies].reverse()
      for (const proxy of order) {
        const before = cpuSeconds([pids[proxy]])
        const load = await options.load.run(spec(proxy, options.seconds))
        const cell: ApplicationsCell = { round, proxy, load, proxyCpuSeconds: cpuSeconds([pids[proxy]]) - before }
        cells.push(cell)
        log(
          `applications round ${round}/${options.rounds} ${(proxy === 'many' ? `${fmt(APPLICATIONS)} applications` : 'one application').padEnd(18)} ` +
            `${fmt(load.reqPerSec).padStart(7)} req/s  ` +
            `${fmt((cell.proxyCpuSeconds * 1e6) / Math.max(1, load.requests), 1).padStart(8)} us CPU/req`,
        )
        await sleep(SETTLE_MS)
      }
    }
    const loadSignatures = (await refreshes()) - beforeLoad
    const rssAfterLoad = { many: rssBytes([many.proxy.pid]), one: rssBytes([one.proxy.pid]) }
    const proxySummary = (proxy: ApplicationsProxy, readyMs: number): ApplicationsProxyStart => ({
      proxy,
      applicationsLoaded: loaded[proxy],
      readyMs,
      idleRssBytes: idleRss[proxy],
      idleCpuMsPerSecond: idleCpu[proxy] * 1000,
      rssAfterLoadBytes: rssAfterLoad[proxy],
    })
    log(`applications: ${fmt((performance.now() - started) / 1000, 1)} s in all`)
    return summariseApplications(cells, {
      applications: APPLICATIONS,
      distinctKeys: DISTINCT_KEYS,
      warmApplications: WARM_APPLICATIONS,
      bodyLabel: body.label,
      connections: body.connections,
      rounds: options.rounds,
      seconds: options.seconds,
      proxies: [proxySummary('one', one.readyMs), proxySummary('many', many.readyMs)],
      warmSignatures,
      loadSignatures,
      cold,
    })
  } finally {
    for (const proxy of running) await group.stop(proxy.child)
    rmSync(keysDir, { recursive: true, force: true })
  }
}

/**
 * Starts a proxy on an admin port chosen here, polling its /readyz every READY_POLL_MS from
 * before the spawn; readyMs counts from the spawn to the first 200.
 */
async function startTimed(
  group: ProcessGroup,
  options: Parameters<typeof startProxy>[1],
): Promise<{ proxy: RunningProxy; readyMs: number }> {
  const adminPort = await freePort()
  const readyz = `http://${HOST}:${adminPort}/readyz`
  let polling = true
  const deadline = performance.now() + READY_TIMEOUT_MS
  const poll = (async (): Promise<number | undefined> => {
    while (polling && performance.now() < deadline) {
      try {
        const response = await fetch(readyz, { signal: AbortSignal.timeout(1_000) })
        await response.arrayBuffer()
        if (response.status === 200) return performance.now()
      } catch {
        // Not listening yet.
      }
      await sleep(READY_POLL_MS)
    }
    return undefined
  })()
  let proxy: RunningProxy
  try {
    proxy = await startProxy(group, { ...options, env: { ...options.env, ADMIN_PORT: String(adminPort) } })
  } catch (err) {
    polling = false
    await poll
    throw err
  }
  const readyAt = await poll
  if (readyAt === undefined) {
    await group.stop(proxy.child)
    throw new Error(`applications: ${options.name}: /readyz did not answer 200 within ${READY_TIMEOUT_MS} ms`)
  }
  return { proxy, readyMs: readyAt - proxy.spawnedAt }
}

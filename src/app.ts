// Builds one proxy instance: the wiring. The token cache, the upstream client, the metrics and
// the log are made here and handed to the two servers (media and admin); the process's life
// (listen, graceful close) is here too. main.ts and the tests both start from buildApp.

import type { KeyObject } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import pino, { type DestinationStream, type Logger } from 'pino'
import { MediaCache } from './cache/media-cache.js'
import { type Config, listenFailure } from './config.js'
import { type ApplicationEvents, Applications } from './credentials/applications.js'
import { KeyWatcher } from './credentials/key-watcher.js'
import { type Clock, systemClock, TokenCache, type TokenSigner } from './credentials/token-cache.js'
import { AccessLog, LOG_BASE } from './observability/access-log.js'
import { createAdminServer } from './observability/admin-server.js'
import { LogDestination } from './observability/log-destination.js'
import { Metrics } from './observability/metrics.js'
import { createTracing } from './observability/tracing.js'
import { InFlightLimit } from './relay/in-flight.js'
import { createMediaServer } from './relay/media-server.js'
import type { Outcome } from './relay/outcome.js'
import type { RetryPolicy } from './relay/retry-policy.js'
import { UpstreamClient } from './relay/upstream.js'
import { VERSION } from './version.js'

/** After the media server has closed, how long its last requests get to record their end. */
const REQUEST_END_WAIT_MS = 1_000
/**
 * A client that takes nothing from its socket for this long while its download waits for it is
 * cut, as nginx's send_timeout (60 s) does: otherwise it would hold an in-flight slot and an
 * upstream connection for as long as it likes (undici's body timeout does not run while paused).
 */
const DEFAULT_SEND_TIMEOUT_MS = 60_000

/** What the applications' keys coming and going do to the tokens, the metrics and the log. */
function applicationEvents(
  tokens: () => TokenCache | undefined,
  metrics: Metrics,
  logger: Logger,
  dir: string | undefined,
): ApplicationEvents {
  return {
    onKey: (application, first) => {
      metrics.addApplication(application)
      if (first) return
      // The old key may be revoked: its token must not serve another request.
      tokens()?.drop(application)
      metrics.countKeyReload(application, 'success')
      logger.info({ application, dir }, 'application key loaded')
    },
    onRefused: (application, reason) => {
      metrics.addApplication(application)
      metrics.countKeyReload(application, 'failure')
      logger.error({ application, dir, reason }, 'application key refused; keeping the old key, if any')
    },
    onRemoved: (application) => {
      tokens()?.drop(application)
      metrics.forgetApplication(application)
      logger.warn({ application, dir }, 'application key removed; the application is no longer served')
    },
    onIgnored: (file) => logger.warn({ dir, file }, 'not an <application-id>.pem file; ignored'),
  }
}

/** A listener could not start; the message is one line that names the setting. */
export class ListenError extends Error {
  override name = 'ListenError'
}

export interface AppDeps {
  clock?: Clock
  /** Where log lines go; stdout by default. */
  logStream?: DestinationStream
  retry?: RetryPolicy
  /** Called by POST /quitquitquit; main.ts wires it to the graceful shutdown. */
  onShutdownRequest?: () => void
  /** How often the key file is re-read as a fallback to the directory watch. */
  keyPollIntervalMs?: number
  /** How long a client may take nothing while its download waits for it; 60 s by default. */
  sendTimeoutMs?: number
  /**
   * A CA (PEM) to trust for upstream TLS besides Node's own: for tests in one process, which
   * cannot set NODE_EXTRA_CA_CERTS after start. Verification itself is never turned off.
   */
  upstreamCa?: string
  /** Bytes queued for a client before the upstream is paused; 64 KiB by default. */
  relayBufferBytes?: number
}

export interface ProxyApp {
  readonly media: FastifyInstance
  readonly admin: FastifyInstance
  readonly tokens: TokenCache
  readonly applications: Applications
  readonly metrics: Metrics
  readonly inFlight: InFlightLimit
  readonly logger: Logger
  readonly draining: boolean
  /** Writes buffered log lines now (before an exit, or after a line someone waits for). */
  flushLogs(): void
  /** Starts both listeners; resolves to their base URLs. */
  listen(): Promise<{ mediaUrl: string; adminUrl: string }>
  /**
   * Graceful stop: readiness fails at once, the media listener stops accepting, in-flight
   * responses get up to graceMs to finish, then whatever remains is cut.
   */
  close(graceMs?: number): Promise<void>
  /** Cuts every connection now, waits (briefly) for the cut requests' log lines, and flushes. */
  abort(): Promise<void>
}

export async function buildApp(config: Config, deps: AppDeps = {}): Promise<ProxyApp> {
  const stdout = deps.logStream ? undefined : new LogDestination()
  const destination = deps.logStream ?? (stdout as LogDestination)
  const logger = pino(
    {
      level: config.logLevel,
      base: LOG_BASE,
      // A second line of defence: nothing logs these on purpose.
      redact: {
        paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'token', 'privateKey'],
        censor: '[redacted]',
      },
    },
    destination,
  )
  const clock = deps.clock ?? systemClock
  const tracing = createTracing(config.tracing, { onExportFailure: exportFailureLog(logger) })
  const inFlight = new InFlightLimit(config.maxInFlightRequests)
  const metrics = new Metrics(VERSION, () => inFlight.count, inFlight.limit)
  if (tracing.enabled) metrics.enableExemplars()
  // Filled in below: the applications' events update the token cache built after them.
  let tokens: TokenCache | undefined
  const applications = new Applications({
    ttlSeconds: config.jwtTtlSeconds,
    clock,
    dir: config.applicationsDir,
    pinned:
      config.applicationId !== undefined && config.privateKey !== undefined
        ? { applicationId: config.applicationId, key: config.privateKey }
        : undefined,
    events: applicationEvents(() => tokens, metrics, logger, config.applicationsDir),
  })
  metrics.watchApplications(() => applications.size, config.applicationId)
  tokens = new TokenCache(applications, {
    ttlSeconds: config.jwtTtlSeconds,
    clock,
    onSigning: tracing.enabled ? (application) => tracing.signing(application) : undefined,
    defaultApplicationId: config.applicationId,
    onRefresh: (application, result, token, error) => {
      metrics.countTokenRefresh(application, result, token)
      if (result === 'success') {
        logger.debug({ application, jti: token?.jti, exp: token?.exp }, 'application token signed')
      } else {
        logger.error(
          { application, reason: error instanceof Error ? error.message : String(error) },
          'application token signing failed',
        )
      }
    },
  })
  const upstream = new UpstreamClient(config, tokens, {
    retry: deps.retry,
    ca: deps.upstreamCa,
    onRetry: (reason) => metrics.countRetry(reason),
    propagateTrace: config.upstreamTracePropagation,
    onResponse: (status, seconds, host) => metrics.observeUpstream(status, seconds, host),
  })

  const cache = config.cacheDir ? openCache(config, config.cacheDir, upstream, metrics, logger) : undefined

  let draining = false
  const accessLog = logger.isLevelEnabled('info') ? new AccessLog(destination) : undefined
  const media = await createMediaServer({
    config,
    logger,
    upstream,
    applications,
    inFlight,
    sendTimeoutMs: deps.sendTimeoutMs ?? DEFAULT_SEND_TIMEOUT_MS,
    relayBufferBytes: deps.relayBufferBytes,
    cache,
    now: () => clock.now(),
    tracing,
    isDraining: () => draining,
    onOutcome: (outcome: Outcome) => {
      metrics.observeRequest(outcome)
      accessLog?.write(outcome)
    },
  })
  const admin = await createAdminServer({
    logger,
    metrics,
    tokens,
    applications,
    isDraining: () => draining,
    requestShutdown: () => deps.onShutdownRequest?.(),
  })
  await media.server.ready()
  // Sign the default application's first token now: a broken key shows at start-up, and /readyz
  // turns 200 at once. Other applications' are signed on their first request.
  if (config.applicationId !== undefined) await tokens.get().catch(() => undefined)
  applications.start(deps.keyPollIntervalMs)
  const pinned = config.applicationId !== undefined ? applications.signer(config.applicationId) : undefined
  const keyWatcher =
    config.privateKeyPath && pinned
      ? watchKey(config.privateKeyPath, config, deps, pinned, tokens, metrics, logger)
      : undefined

  let closing: Promise<void> | undefined
  return {
    media: media.server,
    admin,
    tokens,
    applications,
    metrics,
    inFlight,
    logger,
    get draining() {
      return draining
    },
    flushLogs: () => stdout?.flush(),
    async listen() {
      const mediaUrl = await listenOn(media.server, config.host, config.port, false)
      const adminUrl = await listenOn(admin, config.adminHost, config.adminPort, true)
      return { mediaUrl, adminUrl }
    },
    close(graceMs = config.shutdownGraceMs) {
      closing ??= (async () => {
        draining = true
        const mediaClosed = media.server.close()
        const timer = setTimeout(() => media.server.server.closeAllConnections(), graceMs)
        await mediaClosed
        // The server closes as soon as its sockets are destroyed, a moment before their 'close'
        // events end the requests on them (and write their access-log lines).
        await Promise.race([media.whenIdle(), sleep(REQUEST_END_WAIT_MS, undefined, { ref: false })])
        clearTimeout(timer)
        cache?.close()
        keyWatcher?.close()
        applications.close()
        tokens.close()
        await admin.close()
        // What is still buffered goes to the collector, unless it takes too long.
        await tracing.shutdown()
        stdout?.close()
      })()
      return closing
    },
    async abort() {
      draining = true
      media.server.server.closeAllConnections()
      await Promise.race([media.whenIdle(), sleep(REQUEST_END_WAIT_MS, undefined, { ref: false })])
      stdout?.flush()
    },
  }
}

/** How often a collector that cannot be reached is logged (its spans are dropped meanwhile). */
const EXPORT_WARNING_INTERVAL_MS = 60_000

function exportFailureLog(logger: Logger): (error: Error) => void {
  let last = Number.NEGATIVE_INFINITY
  return (error) => {
    const now = performance.now()
    if (now - last < EXPORT_WARNING_INTERVAL_MS) return
    last = now
    const code = (error as NodeJS.ErrnoException).code ?? error.name
    logger.warn({ reason: code }, 'traces could not be exported; spans are dropped until the collector answers')
  }
}

/** How often a cache that cannot write says so in the log (the metric counts every time). */
const CACHE_WARNING_INTERVAL_MS = 60_000

function openCache(
  config: Config,
  dir: string,
  upstream: UpstreamClient,
  metrics: Metrics,
  logger: Logger,
): MediaCache {
  let counters: ReturnType<Metrics['watchCache']> | undefined
  let lastWarning = Number.NEGATIVE_INFINITY
  const cache = new MediaCache(dir, config.cacheMaxBytes, upstream, {
    onEviction: () => counters?.evicted(),
    onWriteFailure: (reason) => {
      counters?.writeFailed()
      const now = performance.now()
      if (now - lastWarning < CACHE_WARNING_INTERVAL_MS) return
      lastWarning = now
      logger.warn({ dir, reason }, 'the cache cannot store files; serving them uncached')
    },
  })
  counters = metrics.watchCache(cache)
  logger.info({ dir, files: cache.files, bytes: cache.storedBytes, writable: cache.writable }, 'cache opened')
  if (!cache.writable) {
    counters.writeFailed()
    lastWarning = performance.now()
    logger.warn({ dir }, 'the cache directory cannot be written; stored files are served, new ones are not stored')
  }
  return cache
}

/** A port that is taken or an address that does not resolve: a ListenError naming the setting. */
async function listenOn(server: FastifyInstance, host: string, port: number, admin: boolean): Promise<string> {
  try {
    return await server.listen({ host, port })
  } catch (err) {
    throw new ListenError(listenFailure(err as NodeJS.ErrnoException, host, port, admin), { cause: err })
  }
}

/** Live key rotation: a new key replaces the cached token at once, not at its refresh time. */
function watchKey(
  path: string,
  config: Config,
  deps: AppDeps,
  signer: TokenSigner,
  tokens: TokenCache,
  metrics: Metrics,
  logger: Logger,
): KeyWatcher {
  const watcher = new KeyWatcher({
    path,
    initialKey: config.privateKey as KeyObject,
    pollIntervalMs: deps.keyPollIntervalMs,
    onKey: (key) => {
      signer.setKey(key)
      // The old key may be revoked: its token must not serve another request.
      tokens.drop(signer.applicationId)
      tokens.get(signer.applicationId).catch(() => undefined)
      metrics.countKeyReload(signer.applicationId, 'success')
      logger.info({ application: signer.applicationId, path }, 'private key reloaded')
    },
    onRejected: (reason) => {
      metrics.countKeyReload(signer.applicationId, 'failure')
      logger.error(
        { application: signer.applicationId, path, reason },
        'private key replacement refused; keeping the old key',
      )
    },
  })
  watcher.start()
  return watcher
}

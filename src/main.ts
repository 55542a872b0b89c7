// The process: read the settings, build the proxy, listen, and stop gracefully on SIGTERM,
// SIGINT or POST /quitquitquit. A configuration problem exits 78 (EX_CONFIG) with one line; a
// port that is taken or an address that does not resolve, 1, with one line too.
import { lookup } from 'node:dns/promises'
import { readdirSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { buildApp, ListenError, type ProxyApp } from './app.js'
import { type Config, ConfigError, describeSettings, EX_CONFIG, listenFailure, loadConfig } from './config.js'
import { Applications } from './credentials/applications.js'
import type { TokenSigner } from './credentials/token-cache.js'
import { VERSION } from './version.js'

const EX_USAGE = 64
const USAGE = 'usage: node dist/main.js [--config settings.yaml] [--check-config] [--help] [--version]'

function help(): string {
  return [
    `vonage-media-proxy ${VERSION}: serves Vonage media files to internal services, holding the`,
    "Vonage application's private key and injecting a short-lived JWT into each download.",
    '',
    USAGE,
    '  --config FILE    also read settings from a YAML file (the environment wins over it)',
    '  --check-config   check the settings and the key, sign one token, and exit: 0, or 78',
    '  -h, --help       this text',
    '  -v, --version    the version',
    '',
    'Settings, from the environment (default in brackets):',
    ...describeSettings().map((line) => `  ${line}`),
    '',
    'Tracing: OTEL_EXPORTER_OTLP_ENDPOINT turns it on (OTLP over HTTP); the other standard OTEL_*',
    'variables (service name, resource attributes, sampler, protocol, batching) are honoured.',
    '',
  ].join('\n')
}

async function main(): Promise<void> {
  let args: { config?: string; 'check-config'?: boolean; help?: boolean; version?: boolean }
  try {
    args = parseArgs({
      options: {
        config: { type: 'string' },
        'check-config': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
      strict: true,
    }).values
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`)
    process.exit(EX_USAGE)
  }
  if (args.help) {
    process.stdout.write(help())
    return
  }
  if (args.version) {
    process.stdout.write(`${VERSION}\n`)
    return
  }

  let config: Config
  try {
    config = loadConfig({
      configFile: args.config,
      onWarning: (message) => process.stderr.write(`warning: ${message}\n`),
    })
  } catch (err) {
    if (err instanceof ConfigError) exitWithConfigError(err.message)
    throw err
  }

  // The default application's key, from the settings or the directory, and one signature with
  // it before anything else, so that a key which parses but cannot sign stops start-up with the
  // same message --check-config gives.
  const applications = checkApplications(config)
  try {
    if (config.applicationId !== undefined) {
      await (applications.signer(config.applicationId) as TokenSigner).sign()
    }
  } catch {
    const setting = config.privateKeyPath ? 'VONAGE_PRIVATE_KEY_PATH' : 'VONAGE_PRIVATE_KEY'
    exitWithConfigError(`${setting} cannot sign an RS256 token`)
  }
  if (args['check-config']) {
    // Listening is not tried (the ports may be in use by the running proxy), but the addresses
    // must resolve, as they will have to at start-up.
    for (const [host, port, admin] of [
      [config.host, config.port, false],
      [config.adminHost, config.adminPort, true],
    ] as const) {
      await lookup(host).catch((err: NodeJS.ErrnoException) =>
        exitWithConfigError(listenFailure(err, host, port, admin)),
      )
    }
    const loaded = config.applicationsDir ? `, ${applications.size} application key(s) loaded` : ''
    const signed = config.applicationId !== undefined ? ', key loaded, token signed' : ''
    process.stdout.write(`configuration ok: settings valid${signed}${loaded}\n`)
    return
  }

  let app: ProxyApp | undefined
  let stopping = false
  let signals = 0
  const stop = (reason: 'SIGTERM' | 'SIGINT' | 'quitquitquit') => {
    if (reason !== 'quitquitquit') signals++
    if (stopping) {
      // Only a second signal means "now": a retried /quitquitquit, or the orchestrator's
      // SIGTERM after one, must not cut the drain short.
      if (signals < 2) {
        app?.logger.info({ reason }, 'already shutting down')
        return
      }
      app?.logger.warn({ reason }, 'second stop signal: exiting now')
      // The downloads cut now are logged as aborted before the exit.
      void (app?.abort() ?? Promise.resolve()).finally(() => process.exit(1))
      return
    }
    stopping = true
    app?.logger.info({ reason, inFlight: app.inFlight.count }, 'shutting down')
    void (app?.close() ?? Promise.resolve()).then(
      () => process.exit(0),
      () => process.exit(1),
    )
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))

  try {
    app = await buildApp(config, { onShutdownRequest: () => stop('quitquitquit') })
  } catch (err) {
    // CACHE_DIR that cannot be created, say: known only once the app opens it.
    if (err instanceof ConfigError) exitWithConfigError(err.message)
    throw err
  }
  // Whatever ends the process (a crash included), the batched log lines are written first.
  process.on('exit', () => app?.flushLogs())
  let urls: { mediaUrl: string; adminUrl: string }
  try {
    urls = await app.listen()
  } catch (err) {
    if (!(err instanceof ListenError)) throw err
    process.stderr.write(`error: ${err.message}\n`)
    process.exit(1)
  }
  app.logger.info(
    { version: VERSION, ...urls, upstream: config.upstreamBaseUrl.origin },
    'vonage-media-proxy listening',
  )
  app.flushLogs()
}

/** The keys of the applications, read once as start-up reads them; a missing default key is 78. */
function checkApplications(config: Config): Applications {
  const dir = config.applicationsDir
  if (dir !== undefined) {
    try {
      readdirSync(dir)
    } catch (err) {
      exitWithConfigError(
        `VONAGE_APPLICATIONS_DIR cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}: ${dir})`,
      )
    }
  }
  const applications = new Applications({
    ttlSeconds: config.jwtTtlSeconds,
    dir,
    pinned:
      config.applicationId !== undefined && config.privateKey !== undefined
        ? { applicationId: config.applicationId, key: config.privateKey }
        : undefined,
  })
  if (config.applicationId !== undefined && !applications.has(config.applicationId)) {
    exitWithConfigError(
      `VONAGE_APPLICATION_ID ${config.applicationId} has no key: set VONAGE_PRIVATE_KEY_PATH, or put ${config.applicationId}.pem in VONAGE_APPLICATIONS_DIR`,
    )
  }
  return applications
}

function exitWithConfigError(message: string): never {
  process.stderr.write(`config error: ${message}\n`)
  process.exit(EX_CONFIG)
}

await main()

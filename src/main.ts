// The process: read the settings, build the proxy, listen, and stop gracefully on SIGTERM,
// SIGINT or POST /quitquitquit. A configuration problem exits 78 (EX_CONFIG) with one line.
import { parseArgs } from 'node:util'
import { buildApp, type ProxyApp } from './app.js'
import { type Config, ConfigError, EX_CONFIG, loadConfig } from './config.js'
import { TokenSigner } from './credentials/token-cache.js'

const USAGE = 'usage: node dist/main.js [--config settings.yaml] [--check-config]'

async function main(): Promise<void> {
  let args: { config?: string; 'check-config'?: boolean }
  try {
    args = parseArgs({
      options: { config: { type: 'string' }, 'check-config': { type: 'boolean' } },
      strict: true,
    }).values
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`)
    process.exit(64)
  }

  let config: Config
  try {
    config = loadConfig({ configFile: args.config })
  } catch (err) {
    if (err instanceof ConfigError) exitWithConfigError(err.message)
    throw err
  }

  // One signature before anything else, so that a key which parses but cannot sign stops
  // start-up with the same message --check-config gives.
  try {
    await new TokenSigner(config.privateKey, config.applicationId, config.jwtTtlSeconds).sign()
  } catch {
    const setting = config.privateKeyPath ? 'VONAGE_PRIVATE_KEY_PATH' : 'VONAGE_PRIVATE_KEY'
    exitWithConfigError(`${setting} cannot sign an RS256 token`)
  }
  if (args['check-config']) {
    process.stdout.write('configuration ok: settings valid, key loaded, token signed\n')
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

  app = await buildApp(config, { onShutdownRequest: () => stop('quitquitquit') })
  // Whatever ends the process (a crash included), the batched log lines are written first.
  process.on('exit', () => app?.flushLogs())
  const { mediaUrl, adminUrl } = await app.listen()
  app.logger.info({ mediaUrl, adminUrl, upstream: config.upstreamBaseUrl.origin }, 'vonage-media-proxy listening')
  app.flushLogs()
}

function exitWithConfigError(message: string): never {
  process.stderr.write(`config error: ${message}\n`)
  process.exit(EX_CONFIG)
}

await main()

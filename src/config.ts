// The proxy's settings: one schema, defaults from config/default.yaml, an optional YAML file,
// then the environment. Everything is checked here, before anything listens; the rest of the
// code trusts Config.
import type { KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { parse as parseYaml } from 'yaml'
import { KeyError, parsePrivateKey, readPrivateKeyFile } from './credentials/key.js'
import { canonicalOrigin } from './links/safe-delivery.js'
import { type TracingSettings, tracingSettings } from './observability/tracing.js'
import { UUID } from './uuid.js'

export const EX_CONFIG = 78
const JWT_TTL_MIN_SECONDS = 30
const JWT_TTL_MAX_SECONDS = 86_400
const DEFAULTS_FILE = new URL('../config/default.yaml', import.meta.url)

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

const SETTINGS = [
  'VONAGE_APPLICATION_ID',
  'VONAGE_PRIVATE_KEY_PATH',
  'VONAGE_PRIVATE_KEY',
  'UPSTREAM_BASE_URL',
  'HOST',
  'ADMIN_HOST',
  'PORT',
  'ADMIN_PORT',
  'INBOUND_API_KEYS',
  'JWT_TTL_SECONDS',
  'UPSTREAM_CONNECT_TIMEOUT_MS',
  'UPSTREAM_HEADERS_TIMEOUT_MS',
  'UPSTREAM_BODY_TIMEOUT_MS',
  'MAX_IN_FLIGHT_REQUESTS',
  'SHUTDOWN_GRACE_MS',
  'LOG_LEVEL',
  'UPSTREAM_HOSTS',
  'UPSTREAM_CONNECT_TO',
  'VONAGE_APPLICATIONS_DIR',
  'CACHE_DIR',
  'CACHE_MAX_BYTES',
  'LINK_SIGNING_KEYS',
  'LINK_MAX_TTL_SECONDS',
  'PUBLIC_BASE_URL',
  'CORS_ALLOWED_ORIGINS',
  'UPSTREAM_TRACE_PROPAGATION',
] as const
export type Setting = (typeof SETTINGS)[number]

export type LogLevel = (typeof LOG_LEVELS)[number]

/** An inbound client key, and the applications it may use (null: every one). */
export interface ClientKey {
  readonly key: string
  readonly applications: ReadonlySet<string> | null
}

export interface Config {
  /** The default application (lower case): the one a request that names none is served by. */
  applicationId: string | undefined
  /** The default application's key, when given by the single-application settings. */
  privateKey: KeyObject | undefined
  /** Set when the key came from a file, which is then watched for rotation. */
  privateKeyPath: string | undefined
  /** A directory of <application-id>.pem keys, watched for changes. */
  applicationsDir: string | undefined
  /** Origin plus an optional path prefix. */
  upstreamBaseUrl: URL
  /** Listen address of the media port. */
  host: string
  /** Listen address of the admin port. */
  adminHost: string
  port: number
  adminPort: number
  inboundApiKeys: ClientKey[]
  jwtTtlSeconds: number
  upstreamConnectTimeoutMs: number
  upstreamHeadersTimeoutMs: number
  upstreamBodyTimeoutMs: number
  maxInFlightRequests: number
  shutdownGraceMs: number
  logLevel: LogLevel
  /** Host names (lower case) the host-prefixed routes may reach over HTTPS. */
  upstreamHosts: ReadonlySet<string>
  /** Where HTTPS upstream connections really go (curl's --connect-to), if not to the named host. */
  upstreamConnectTo: { host: string; port: number } | undefined
  /** Where downloaded files are kept; undefined: no cache. */
  cacheDir: string | undefined
  cacheMaxBytes: number
  /** Secrets for signed links: the first signs, every one verifies. Empty: no signed links. */
  linkSigningKeys: readonly string[]
  linkMaxTtlSeconds: number
  /** The base of the links POST /links returns; undefined: http://{HOST}:{the media port}. */
  publicBaseUrl: string | undefined
  /** Origins (scheme://host[:port], lower case) browsers may fetch media from. */
  corsAllowedOrigins: ReadonlySet<string>
  /** The standard OTEL_* settings, read from the environment only; undefined: tracing off. */
  tracing: TracingSettings | undefined
  /** Send each attempt's W3C traceparent to Vonage (off: the trace stops at the proxy). */
  upstreamTracePropagation: boolean
}

/** A setting is missing or wrong. The message names the setting and never quotes a secret. */
export class ConfigError extends Error {
  override name = 'ConfigError'
  constructor(
    readonly setting: string,
    readonly problem: string,
  ) {
    super(`${setting} ${problem}`)
  }
}

type RawSettings = Partial<Record<Setting, string>>
/** How a YAML list of INBOUND_API_KEYS with scoped entries travels as a setting's string. */
const STRUCTURED = '\u0000json:'

/** One line per setting, for --help; the defaults come from config/default.yaml. */
const MEANINGS: Record<Setting, string> = {
  VONAGE_APPLICATION_ID: 'the Vonage application id (a UUID); required',
  VONAGE_PRIVATE_KEY_PATH: "path to the application's PEM private key (watched for rotation)",
  VONAGE_PRIVATE_KEY: 'the PEM itself, instead of a path',
  UPSTREAM_BASE_URL: 'where /v3/media/:id is fetched from (http only for a loopback emulator)',
  HOST: 'listen address of the media port',
  ADMIN_HOST: 'listen address of the admin port (default: HOST)',
  PORT: 'media port',
  ADMIN_PORT: 'admin port: /metrics, /healthz, /readyz, /quitquitquit',
  INBOUND_API_KEYS: 'comma-separated client keys (16+ characters each); empty: no client auth',
  JWT_TTL_SECONDS: 'lifetime of each application JWT, 30 to 86400',
  UPSTREAM_CONNECT_TIMEOUT_MS: 'TCP and TLS connect timeout',
  UPSTREAM_HEADERS_TIMEOUT_MS: "time to Vonage's response headers",
  UPSTREAM_BODY_TIMEOUT_MS: 'longest silence between two body chunks',
  MAX_IN_FLIGHT_REQUESTS: 'media requests served at once; beyond it 503',
  SHUTDOWN_GRACE_MS: 'how long downloads may finish after SIGTERM',
  LOG_LEVEL: 'fatal, error, warn, info, debug, trace or silent',
  UPSTREAM_HOSTS: 'comma-separated Vonage hosts the /{host}/... routes may reach, and no others',
  UPSTREAM_CONNECT_TO: 'host:port every HTTPS upstream connection goes to instead (SNI and certificate unchanged)',
  VONAGE_APPLICATIONS_DIR: 'a directory of <application-id>.pem keys, one per Vonage application',
  CACHE_DIR: 'where downloaded files are kept on disk; empty: no cache',
  CACHE_MAX_BYTES: 'the most the cache holds; least recently used files go first',
  LINK_SIGNING_KEYS: 'comma-separated secrets (32+ characters) for signed links; the first signs',
  LINK_MAX_TTL_SECONDS: 'the longest lifetime a signed link may have',
  PUBLIC_BASE_URL: 'the base of the links POST /links returns (default: http://HOST:PORT)',
  CORS_ALLOWED_ORIGINS: 'comma-separated origins browsers may fetch media from',
  UPSTREAM_TRACE_PROPAGATION:
    "true: send each upstream attempt's W3C traceparent to Vonage (with OTEL_EXPORTER_OTLP_ENDPOINT)",
}

/** Every setting with its default (from the defaults file) and meaning, in order. */
export function describeSettings(defaultsFile: URL | string = DEFAULTS_FILE): string[] {
  const defaults = readSettingsFile(defaultsFile, 'defaults file')
  const width = Math.max(...SETTINGS.map((name) => name.length)) + 2
  return SETTINGS.map((name) => {
    const value = defaults[name]
    const fallback = value === undefined || value === '' ? '' : ` [${value}]`
    return `${name.padEnd(width)}${MEANINGS[name]}${fallback}`
  })
}

/** A listen address or port the process cannot use, phrased as one line naming its setting. */
export function listenFailure(error: NodeJS.ErrnoException, host: string, port: number, admin: boolean): string {
  const hostSetting = admin ? 'ADMIN_HOST' : 'HOST'
  const portSetting = admin ? 'ADMIN_PORT' : 'PORT'
  const code = error.code ?? 'error'
  switch (code) {
    case 'EADDRINUSE':
      return `${portSetting} ${port} on ${host} is already in use (${code})`
    case 'EACCES':
      return `${portSetting} ${port} on ${host} needs more privileges than this process has (${code})`
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
      return `${hostSetting} ${host} does not resolve to an address (${code})`
    case 'EADDRNOTAVAIL':
      return `${hostSetting} ${host} is not an address of this machine (${code})`
    default:
      return `${hostSetting} ${host} and ${portSetting} ${port} cannot be listened on (${code})`
  }
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv
  /** A YAML file of settings (the --config flag); CONFIG_FILE in env is used when this is absent. */
  configFile?: string | undefined
  defaultsFile?: URL | string
  /** Told of variables that look like settings but are not (a misspelt JWT_TTL, say). */
  onWarning?: (message: string) => void
}

/** Environment variables with these prefixes are meant for the proxy: an unknown one is a typo. */
const SETTING_PREFIXES = ['VONAGE_', 'UPSTREAM_', 'JWT_', 'CACHE_', 'LINK_', 'MAX_', 'INBOUND_', 'ADMIN_', 'SHUTDOWN_']
/** The example file's placeholder client key: a real deployment must not use it. */
const PLACEHOLDER_KEY = 'replace-me-with-a-long-random-key'
const MIN_CLIENT_KEY_LENGTH = 16

/** Reads defaults, the optional file and the environment, and validates the result. */
export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? process.env
  const defaults = readSettingsFile(options.defaultsFile ?? DEFAULTS_FILE, 'defaults file')
  const configFile = options.configFile ?? nonEmpty(env.CONFIG_FILE)
  // A problem with the file names what the user typed: the flag, or the variable.
  const fileSetting = options.configFile !== undefined ? '--config' : 'CONFIG_FILE'
  const fromFile = configFile ? readSettingsFile(configFile, fileSetting) : {}
  const fromEnv: RawSettings = {}
  for (const name of SETTINGS) {
    // Empty is unset, as most tools take it: JWT_TTL_SECONDS= keeps the default.
    const value = nonEmpty(env[name])
    if (value !== undefined) fromEnv[name] = env[name]
  }
  for (const name of Object.keys(env)) {
    if (SETTING_PREFIXES.some((prefix) => name.startsWith(prefix)) && !isSetting(name)) {
      const guess = closestSetting(name)
      options.onWarning?.(
        `${name} is not a setting of vonage-media-proxy and is ignored${guess ? ` (did you mean ${guess}?)` : ''}`,
      )
    }
  }
  // OpenTelemetry's own variables come from the environment only, as its SDKs read them.
  return parseConfig({ ...defaults, ...fromFile, ...fromEnv }, tracingSettings(env))
}

function parseConfig(raw: RawSettings, tracing: TracingSettings | undefined): Config {
  const applicationsDir = nonEmpty(raw.VONAGE_APPLICATIONS_DIR)
  // With a directory of keys, a default application is optional, and its key may be there.
  const applicationId = applicationsDir
    ? nonEmpty(raw.VONAGE_APPLICATION_ID)?.toLowerCase()
    : required(raw, 'VONAGE_APPLICATION_ID').toLowerCase()
  if (applicationId !== undefined && !UUID.test(applicationId)) {
    throw new ConfigError('VONAGE_APPLICATION_ID', 'must be the application UUID (8-4-4-4-12 hex digits)')
  }
  const { privateKey, privateKeyPath } = privateKeyFrom(raw, applicationsDir !== undefined)
  const port = integer(raw, 'PORT', 0, 65_535)
  const adminPort = integer(raw, 'ADMIN_PORT', 0, 65_535)
  if (port !== 0 && port === adminPort) {
    throw new ConfigError('ADMIN_PORT', `must differ from PORT (both are ${port})`)
  }
  const logLevel = required(raw, 'LOG_LEVEL').toLowerCase()
  if (!isLogLevel(logLevel)) {
    throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}`)
  }
  return {
    applicationId,
    privateKey,
    privateKeyPath,
    applicationsDir,
    upstreamBaseUrl: upstreamUrl(required(raw, 'UPSTREAM_BASE_URL')),
    host: listenAddress(raw, 'HOST'),
    // The admin port follows the media port's address unless told otherwise.
    adminHost: nonEmpty(raw.ADMIN_HOST) === undefined ? listenAddress(raw, 'HOST') : listenAddress(raw, 'ADMIN_HOST'),
    port,
    adminPort,
    inboundApiKeys: apiKeys(raw.INBOUND_API_KEYS ?? ''),
    jwtTtlSeconds: integer(raw, 'JWT_TTL_SECONDS', JWT_TTL_MIN_SECONDS, JWT_TTL_MAX_SECONDS),
    upstreamConnectTimeoutMs: integer(raw, 'UPSTREAM_CONNECT_TIMEOUT_MS', 1, 600_000),
    upstreamHeadersTimeoutMs: integer(raw, 'UPSTREAM_HEADERS_TIMEOUT_MS', 1, 600_000),
    upstreamBodyTimeoutMs: integer(raw, 'UPSTREAM_BODY_TIMEOUT_MS', 1, 600_000),
    maxInFlightRequests: integer(raw, 'MAX_IN_FLIGHT_REQUESTS', 1, 1_000_000),
    shutdownGraceMs: integer(raw, 'SHUTDOWN_GRACE_MS', 0, 3_600_000),
    logLevel,
    upstreamHosts: hostList(required(raw, 'UPSTREAM_HOSTS')),
    upstreamConnectTo: connectTo(nonEmpty(raw.UPSTREAM_CONNECT_TO)),
    cacheDir: nonEmpty(raw.CACHE_DIR),
    cacheMaxBytes: integer(raw, 'CACHE_MAX_BYTES', 1, Number.MAX_SAFE_INTEGER),
    linkSigningKeys: signingKeys(raw.LINK_SIGNING_KEYS ?? ''),
    linkMaxTtlSeconds: integer(raw, 'LINK_MAX_TTL_SECONDS', 1, 31_536_000),
    publicBaseUrl: publicBaseUrl(nonEmpty(raw.PUBLIC_BASE_URL)),
    corsAllowedOrigins: origins(raw.CORS_ALLOWED_ORIGINS ?? ''),
    tracing,
    upstreamTracePropagation: flag(raw, 'UPSTREAM_TRACE_PROPAGATION'),
  }
}

function flag(raw: RawSettings, name: Setting): boolean {
  const value = required(raw, name).toLowerCase()
  if (value === 'true') return true
  if (value === 'false') return false
  throw new ConfigError(name, 'must be true or false')
}

const MIN_SIGNING_KEY_LENGTH = 32

function signingKeys(value: string): string[] {
  const keys = value
    .split(',')
    .map((key) => key.trim())
    .filter((key) => key !== '')
  keys.forEach((key, i) => {
    // Never quote a secret: say which one, by its position.
    if (key.length < MIN_SIGNING_KEY_LENGTH) {
      throw new ConfigError(
        'LINK_SIGNING_KEYS',
        `key ${i + 1} has ${key.length} characters; each needs at least ${MIN_SIGNING_KEY_LENGTH} (openssl rand -hex 32)`,
      )
    }
  })
  return keys
}

function publicBaseUrl(value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError('PUBLIC_BASE_URL', 'is not a valid URL')
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ConfigError('PUBLIC_BASE_URL', `must use http or https, not ${url.protocol}`)
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new ConfigError('PUBLIC_BASE_URL', 'must be a scheme, host and optional path, without credentials or query')
  }
  // Links are the base followed by a media path: no trailing slash to double.
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`
}

/** An origin as browsers send it: scheme://host[:port], nothing more. */
function origins(value: string): ReadonlySet<string> {
  const list = value
    .split(',')
    .map((origin) => origin.trim())
    .filter((origin) => origin !== '')
  const result = new Set<string>()
  for (const origin of list) {
    // Written as browsers send Origin: no trailing slash, no default port.
    const canonical = canonicalOrigin(origin)
    if (canonical === undefined || canonical !== origin.toLowerCase()) {
      throw new ConfigError(
        'CORS_ALLOWED_ORIGINS',
        `must list origins (scheme://host[:port], no path or trailing slash), not "${origin}"`,
      )
    }
    result.add(canonical)
  }
  return result
}

/** A DNS name as Vonage's hosts are written: labels of letters, digits and hyphens, no port. */
const HOST_NAME = /^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$/

function hostList(value: string): ReadonlySet<string> {
  const hosts = value
    .split(',')
    .map((host) => host.trim().toLowerCase())
    .filter((host) => host !== '')
  for (const host of hosts) {
    if (!HOST_NAME.test(host)) {
      throw new ConfigError('UPSTREAM_HOSTS', `must list host names only (no scheme, port or path), not "${host}"`)
    }
  }
  if (hosts.length === 0) {
    throw new ConfigError('UPSTREAM_HOSTS', 'lists no host; leave it unset for the Vonage hosts, or name at least one')
  }
  return new Set(hosts)
}

function connectTo(value: string | undefined): { host: string; port: number } | undefined {
  if (value === undefined) return undefined
  const match = /^(\[[0-9a-f:.]+\]|[a-z0-9.-]+):(\d{1,5})$/i.exec(value)
  const port = Number(match?.[2])
  if (!match || port < 1 || port > 65_535) {
    throw new ConfigError(
      'UPSTREAM_CONNECT_TO',
      'must be host:port (an egress gateway, or 127.0.0.1:8443 for an emulator)',
    )
  }
  return { host: (match[1] as string).replace(/^\[|\]$/g, ''), port }
}

function readSettingsFile(file: URL | string, what: string): RawSettings {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(what, `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}: ${file})`)
  }
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (err) {
    const position = (err as { linePos?: Array<{ line: number; col: number }> }).linePos?.[0]
    const where = position ? ` at line ${position.line}, column ${position.col}` : ''
    throw new ConfigError(what, `is not valid YAML${where} (${file})`)
  }
  if (doc === null || doc === undefined) return {}
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new ConfigError(what, `must be a YAML mapping of setting names to values (${file})`)
  }
  const settings: RawSettings = {}
  for (const [key, value] of Object.entries(doc)) {
    const name = key.toUpperCase()
    if (!isSetting(name)) throw new ConfigError(what, `has an unknown setting "${key}" (${file})`)
    settings[name] = stringify(name, value)
  }
  return settings
}

function stringify(name: Setting, value: unknown): string {
  if (value === null || value === undefined) return ''
  if (Array.isArray(value) && name === 'INBOUND_API_KEYS') {
    // Entries may be {key, applications}: kept whole for apiKeys() to read.
    return value.some((entry) => typeof entry === 'object' && entry !== null)
      ? STRUCTURED + JSON.stringify(value)
      : value.map(String).join(',')
  }
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return String(value)
  throw new ConfigError(name, 'must be a single value in the config file')
}

function privateKeyFrom(
  raw: RawSettings,
  hasDirectory: boolean,
): { privateKey: KeyObject | undefined; privateKeyPath: string | undefined } {
  const path = nonEmpty(raw.VONAGE_PRIVATE_KEY_PATH)
  const pem = nonEmpty(raw.VONAGE_PRIVATE_KEY)
  if (path && pem) {
    throw new ConfigError('VONAGE_PRIVATE_KEY_PATH', 'and VONAGE_PRIVATE_KEY are both set; set only one')
  }
  try {
    if (path) return { privateKey: readPrivateKeyFile(path), privateKeyPath: path }
    if (pem) return { privateKey: parsePrivateKey(pem), privateKeyPath: undefined }
  } catch (err) {
    if (err instanceof KeyError)
      throw new ConfigError(path ? 'VONAGE_PRIVATE_KEY_PATH' : 'VONAGE_PRIVATE_KEY', err.message)
    throw err
  }
  // The directory's <application-id>.pem files are the keys (checked when it is read).
  if (hasDirectory) return { privateKey: undefined, privateKeyPath: undefined }
  throw new ConfigError('VONAGE_PRIVATE_KEY_PATH', 'is required (or VONAGE_PRIVATE_KEY with the PEM itself)')
}

function upstreamUrl(value: string): URL {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError('UPSTREAM_BASE_URL', 'is not a valid URL')
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ConfigError('UPSTREAM_BASE_URL', `must use https (or http for a local emulator), not ${url.protocol}`)
  }
  if (url.username || url.password) throw new ConfigError('UPSTREAM_BASE_URL', 'must not contain credentials')
  if (url.search || url.hash) throw new ConfigError('UPSTREAM_BASE_URL', 'must not have a query or fragment')
  if (url.protocol === 'http:' && !isLoopback(url.hostname)) {
    throw new ConfigError(
      'UPSTREAM_BASE_URL',
      `must use https: over http the Vonage token would travel in clear (http is only for a loopback host, such as a local emulator; write https://${url.host})`,
    )
  }
  const api = /\/(v3\/media|v1\/files)\/?$/.exec(url.pathname)
  if (api) {
    throw new ConfigError(
      'UPSTREAM_BASE_URL',
      `must not end in /${api[1]}: the proxy adds that path itself (write ${url.origin}${url.pathname.slice(0, api.index)})`,
    )
  }
  return url
}

function listenAddress(raw: RawSettings, name: 'HOST' | 'ADMIN_HOST'): string {
  const value = required(raw, name)
  if (isIP(value) || /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/i.test(value)) return value
  throw new ConfigError(name, 'must be an IP address or a host name')
}

/** 127.0.0.0/8, ::1 and localhost: addresses that never leave the machine (or the pod). */
export function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase()
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'))
}

function apiKeys(value: string): ClientKey[] {
  const entries: ClientKey[] = value.startsWith(STRUCTURED)
    ? (JSON.parse(value.slice(STRUCTURED.length)) as unknown[]).map(scopedKey)
    : value
        .split(',')
        .map((key) => key.trim())
        .filter((key) => key.length > 0)
        .map((key) => ({ key, applications: null }))
  const seen = new Set<string>()
  entries.forEach(({ key }, i) => {
    // Twice, with different scopes, which would hold? Neither: say so.
    if (seen.has(key)) throw new ConfigError('INBOUND_API_KEYS', `lists key ${i + 1} twice; list each key once`)
    seen.add(key)
    // Never quote a key: say which one, by its position.
    if (!/^[\x21-\x7e]+$/.test(key)) {
      throw new ConfigError('INBOUND_API_KEYS', 'must hold printable ASCII keys without spaces, separated by commas')
    }
    if (key === PLACEHOLDER_KEY) {
      throw new ConfigError(
        'INBOUND_API_KEYS',
        `holds the example's placeholder "${PLACEHOLDER_KEY}"; generate a key (openssl rand -hex 32)`,
      )
    }
    if (key.length < MIN_CLIENT_KEY_LENGTH) {
      throw new ConfigError(
        'INBOUND_API_KEYS',
        `key ${i + 1} has ${key.length} characters; each key needs at least ${MIN_CLIENT_KEY_LENGTH} (openssl rand -hex 32)`,
      )
    }
  })
  return entries
}

/** A YAML entry: a plain key (every application), or {key, applications: [ids]}. */
function scopedKey(entry: unknown, index: number): ClientKey {
  if (typeof entry === 'string' || typeof entry === 'number') return { key: String(entry), applications: null }
  const { key, applications } = (entry ?? {}) as { key?: unknown; applications?: unknown }
  const ids = Array.isArray(applications) ? applications.map(String) : undefined
  if (typeof key !== 'string' || ids === undefined || ids.length === 0 || ids.some((id) => !UUID.test(id))) {
    throw new ConfigError(
      'INBOUND_API_KEYS',
      `entry ${index + 1} must be a key, or {key: "...", applications: [application ids]}`,
    )
  }
  return { key, applications: new Set(ids.map((id) => id.toLowerCase())) }
}

function integer(raw: RawSettings, name: Setting, min: number, max: number): number {
  const text = required(raw, name)
  if (!/^\d+$/.test(text)) throw new ConfigError(name, `must be a whole number from ${min} to ${max}`)
  const value = Number(text)
  if (value < min || value > max) throw new ConfigError(name, `must be from ${min} to ${max}, got ${value}`)
  return value
}

function required(raw: RawSettings, name: Setting): string {
  const value = nonEmpty(raw[name])
  if (value === undefined) throw new ConfigError(name, 'is required')
  return value
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim()
  return trimmed ? trimmed : undefined
}

function isSetting(name: string): name is Setting {
  return (SETTINGS as readonly string[]).includes(name)
}

function isLogLevel(level: string): level is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(level)
}

/** The setting a misspelt variable most likely meant: the one sharing the longest prefix. */
function closestSetting(name: string): string | undefined {
  let best: string | undefined
  let bestLength = 0
  for (const setting of SETTINGS) {
    let length = 0
    while (length < name.length && name[length] === setting[length]) length++
    if (length > bestLength) {
      best = setting
      bestLength = length
    }
  }
  // More than the shared prefix alone ("UPSTREAM_") must match.
  return best !== undefined && bestLength > name.indexOf('_') + 1 ? best : undefined
}

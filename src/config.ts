// The proxy's settings: one schema, defaults from config/default.yaml, an optional YAML file,
// then the environment. Everything is checked here, before anything listens; the rest of the
// code trusts Config.
import type { KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { parse as parseYaml } from 'yaml'
import { KeyError, parsePrivateKey, readPrivateKeyFile } from './credentials/key.js'
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
] as const
export type Setting = (typeof SETTINGS)[number]

export type LogLevel = (typeof LOG_LEVELS)[number]

export interface Config {
  applicationId: string
  privateKey: KeyObject
  /** Set when the key came from a file, which is then watched for rotation. */
  privateKeyPath: string | undefined
  /** Origin plus an optional path prefix. */
  upstreamBaseUrl: URL
  host: string
  port: number
  adminPort: number
  inboundApiKeys: string[]
  jwtTtlSeconds: number
  upstreamConnectTimeoutMs: number
  upstreamHeadersTimeoutMs: number
  upstreamBodyTimeoutMs: number
  maxInFlightRequests: number
  shutdownGraceMs: number
  logLevel: LogLevel
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

export interface LoadOptions {
  env?: NodeJS.ProcessEnv
  /** A YAML file of settings; CONFIG_FILE in env is used when this is absent. */
  configFile?: string | undefined
  defaultsFile?: URL | string
}

/** Reads defaults, the optional file and the environment, and validates the result. */
export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? process.env
  const defaults = readSettingsFile(options.defaultsFile ?? DEFAULTS_FILE, 'defaults file')
  const configFile = options.configFile ?? nonEmpty(env.CONFIG_FILE)
  const fromFile = configFile ? readSettingsFile(configFile, 'CONFIG_FILE') : {}
  const fromEnv: RawSettings = {}
  for (const name of SETTINGS) {
    const value = env[name]
    if (value !== undefined) fromEnv[name] = value
  }
  return parseConfig({ ...defaults, ...fromFile, ...fromEnv })
}

function parseConfig(raw: RawSettings): Config {
  const applicationId = required(raw, 'VONAGE_APPLICATION_ID')
  if (!UUID.test(applicationId)) {
    throw new ConfigError('VONAGE_APPLICATION_ID', 'must be the application UUID (8-4-4-4-12 hex digits)')
  }
  const { privateKey, privateKeyPath } = privateKeyFrom(raw)
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
    upstreamBaseUrl: upstreamUrl(required(raw, 'UPSTREAM_BASE_URL')),
    host: host(required(raw, 'HOST')),
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
  }
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
  } catch {
    throw new ConfigError(what, `is not valid YAML (${file})`)
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
  if (Array.isArray(value) && name === 'INBOUND_API_KEYS') return value.map(String).join(',')
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return String(value)
  throw new ConfigError(name, 'must be a single value in the config file')
}

function privateKeyFrom(raw: RawSettings): { privateKey: KeyObject; privateKeyPath: string | undefined } {
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
  return url
}

function host(value: string): string {
  if (isIP(value) || /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/i.test(value)) return value
  throw new ConfigError('HOST', 'must be an IP address or a host name')
}

function apiKeys(value: string): string[] {
  const keys = value
    .split(',')
    .map((key) => key.trim())
    .filter((key) => key.length > 0)
  for (const key of keys) {
    if (!/^[\x21-\x7e]+$/.test(key)) {
      throw new ConfigError('INBOUND_API_KEYS', 'must hold printable ASCII keys without spaces, separated by commas')
    }
  }
  return keys
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

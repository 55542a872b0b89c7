// Tracing (OpenTelemetry): a server span per media request, continuing the caller's W3C
// traceparent, a CLIENT child per upstream attempt and a span per token signing, exported over
// OTLP/HTTP by the SDK's own tracer provider, batch span processor and exporter. Off unless
// OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set, and then a no-op that allocates
// nothing per request.
//
// SDK 3 leaves the environment to its Node "sdk-node" package (instrumentations, gRPC, metrics
// and logs we do not want), so the settings it would read to build a tracer provider are read
// here as it reads them, but checked: a wrong one stops start-up (exit 78) instead of being
// replaced by a default. What the SDK's packages read themselves they still read from
// process.env: the resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) and the exporter's
// headers, compression and TLS files (OTEL_EXPORTER_OTLP_[TRACES_]HEADERS, ...).
//
// Span attributes are a closed set of named fields: no caller can put a token, a key, a
// signature or a client key in one, and errors are recorded by their code, never their message.
import type { IncomingHttpHeaders } from 'node:http'
import {
  type Attributes,
  type Context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  type Tracer,
  trace,
} from '@opentelemetry/api'
import { ExportResultCode, parseTraceParent, TraceState } from '@opentelemetry/core'
import { OTLPTraceExporter as JsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { OTLPTraceExporter as ProtobufTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto'
import {
  defaultResource,
  detectResources,
  resourceAttributesEnvDetector,
  resourceFromAttributes,
  serviceNameEnvDetector,
} from '@opentelemetry/resources'
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type ReadableSpan,
  type Sampler,
  type SpanExporter,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace'
import { ConfigError } from '../config.js'
import type { Outcome } from '../relay/outcome.js'
import type { RetryReason } from '../relay/retry-policy.js'
import { VERSION } from '../version.js'

export const SERVICE_NAME = 'vonage-media-proxy'
/** How long shutdown() waits for the last spans to go out; a dead collector must not hold up an exit. */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 2_000
const DEFAULT_PROTOCOL: OtlpProtocol = 'http/protobuf'
const DEFAULT_SAMPLER: SamplerName = 'parentbased_always_on'
const TRACES_PATH = 'v1/traces'

/** Semantic-convention names where there is one; ours under media_proxy.* otherwise. */
const ATTR = {
  method: 'http.request.method',
  route: 'http.route',
  path: 'url.path',
  status: 'http.response.status_code',
  bodySize: 'http.response.body.size',
  errorType: 'error.type',
  serverAddress: 'server.address',
  serverPort: 'server.port',
  urlFull: 'url.full',
  resendCount: 'http.request.resend_count',
  application: 'media_proxy.application',
  upstreamHost: 'media_proxy.upstream.host',
  retries: 'media_proxy.upstream.retries',
  cache: 'media_proxy.cache.result',
  aborted: 'media_proxy.aborted',
  retryReason: 'media_proxy.retry.reason',
  timeToFirstByte: 'media_proxy.upstream.time_to_first_byte_ms',
} as const

const EVENTS = {
  client_aborted: 'media_proxy.client_aborted',
  response_cut: 'media_proxy.response_cut',
} as const

export type OtlpProtocol = 'http/protobuf' | 'http/json'
const SAMPLERS = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
] as const
type SamplerName = (typeof SAMPLERS)[number]

/** What tracing was asked for, checked; undefined from tracingSettings() means off. */
export interface TracingSettings {
  /** Where spans are POSTed (the traces URL, path included). */
  readonly url: string
  readonly protocol: OtlpProtocol
  readonly sampler: SamplerName
  /** For the traceidratio samplers: 0 to 1. */
  readonly samplerRatio: number
  /** OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT; the exporter's own default (10 s) when unset. */
  readonly exportTimeoutMs: number | undefined
  /** OTEL_BSP_*; undefined ones take the SDK's defaults (5 s, 30 s, 2048, 512). */
  readonly batch: {
    readonly scheduledDelayMillis: number | undefined
    readonly exportTimeoutMillis: number | undefined
    readonly maxQueueSize: number | undefined
    readonly maxExportBatchSize: number | undefined
  }
}

/** What identifies a request's trace: for the access log (traceId) and exemplars (sampled ones). */
export interface TraceRef {
  /** Undefined with tracing off. */
  readonly traceId: string | undefined
  readonly spanId: string | undefined
  /** The trace is being recorded and exported (worth an exemplar). */
  readonly sampled: boolean
}

/** Known while the request is served, beyond what its Outcome says. */
export interface RequestAttributes {
  /** The ProxyError code of a problem answered. */
  readonly errorType?: string
}

export type RequestEvent = keyof typeof EVENTS

export interface RequestEventAttributes {
  /** Body bytes sent when it happened. */
  readonly bytes?: number
  /** An error code (never a message). */
  readonly errorType?: string
}

/** What an upstream attempt is sent to: an UpstreamRequest fits. */
export interface AttemptTarget {
  readonly method: string
  /** scheme://host[:port] */
  readonly origin: string
  readonly host: string
  /** Path on the origin, without a query. */
  readonly path: string
}

export interface RequestSpan extends TraceRef {
  setAttributes(attributes: RequestAttributes): void
  /** client_aborted: the client went away; response_cut: the upstream body broke after the headers. */
  event(name: RequestEvent, attributes?: RequestEventAttributes): void
  /** A CLIENT child for one upstream attempt; resendCount is 0 for the first. */
  attempt(target: AttemptTarget, resendCount: number): AttemptSpan
  /** Records the outcome (status, bytes, application, upstream host, retries, cache) and ends the span. */
  end(outcome: Outcome): void
}

export interface AttemptSpan {
  /** The W3C traceparent that names this attempt, for Vonage; undefined with tracing off. */
  readonly traceparent: string | undefined
  readonly tracestate: string | undefined
  /** The upstream response's headers arrived. */
  firstByte(): void
  /**
   * status: the upstream response's, or null when none came. retryReason: this attempt's result
   * made the exchange retry. errorType: the error code when it failed without a response.
   */
  end(status: number | null, retryReason?: RetryReason, errorType?: string): void
}

export interface SigningSpan {
  end(error?: unknown): void
}

export interface Tracing {
  readonly enabled: boolean
  /** The server span of a media request; headers are the request's (traceparent, tracestate). */
  startRequest(method: string, route: string, path: string, headers: IncomingHttpHeaders): RequestSpan
  signing(applicationId: string): SigningSpan
  /** Exports what is buffered and stops; resolves within timeoutMs whatever the collector does. */
  shutdown(timeoutMs?: number): Promise<void>
}

export interface TracingOptions {
  /** Called when a batch of spans could not be exported (it is dropped): for a log line or a metric. */
  onExportFailure?: (error: Error) => void
}

type Env = Readonly<Record<string, string | undefined>>

/**
 * The tracing settings in env, checked (ConfigError names the setting, never echoes a value);
 * undefined when tracing is off: no endpoint, OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
 */
export function tracingSettings(env: Env = process.env): TracingSettings | undefined {
  if (booleanSetting(env, 'OTEL_SDK_DISABLED')) return undefined
  const exporters = read(env, 'OTEL_TRACES_EXPORTER')
  if (exporters !== undefined) {
    const names = exporters.split(',').map((name) => name.trim().toLowerCase())
    if (names.includes('none')) return undefined
    if (names.some((name) => name !== 'otlp' && name !== '')) {
      throw new ConfigError('OTEL_TRACES_EXPORTER', 'must be otlp or none')
    }
  }
  const url = tracesUrl(env)
  if (url === undefined) return undefined
  const sampler = (read(env, 'OTEL_TRACES_SAMPLER')?.trim().toLowerCase() ?? DEFAULT_SAMPLER) as SamplerName
  if (!SAMPLERS.includes(sampler)) {
    throw new ConfigError('OTEL_TRACES_SAMPLER', `must be one of ${SAMPLERS.join(', ')}`)
  }
  const ratio = numberSetting(env, 'OTEL_TRACES_SAMPLER_ARG') ?? 1
  if (ratio < 0 || ratio > 1) throw new ConfigError('OTEL_TRACES_SAMPLER_ARG', 'must be a number from 0 to 1')
  const batch = {
    scheduledDelayMillis: positiveInteger(env, 'OTEL_BSP_SCHEDULE_DELAY'),
    exportTimeoutMillis: positiveInteger(env, 'OTEL_BSP_EXPORT_TIMEOUT'),
    maxQueueSize: positiveInteger(env, 'OTEL_BSP_MAX_QUEUE_SIZE'),
    maxExportBatchSize: positiveInteger(env, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE'),
  }
  if ((batch.maxExportBatchSize ?? 512) > (batch.maxQueueSize ?? 2048)) {
    throw new ConfigError('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 'must not be larger than OTEL_BSP_MAX_QUEUE_SIZE')
  }
  return {
    url,
    protocol: protocol(env),
    sampler,
    samplerRatio: ratio,
    exportTimeoutMs:
      positiveInteger(env, 'OTEL_EXPORTER_OTLP_TRACES_TIMEOUT') ?? positiveInteger(env, 'OTEL_EXPORTER_OTLP_TIMEOUT'),
    batch,
  }
}

/** The SDK when settings are given, else the no-op. */
export function createTracing(settings: TracingSettings | undefined, options: TracingOptions = {}): Tracing {
  return settings ? new SdkTracing(settings, options) : NO_TRACING
}

const NOOP_ATTEMPT: AttemptSpan = Object.freeze({
  traceparent: undefined,
  tracestate: undefined,
  firstByte() {},
  end() {},
})
const NOOP_REQUEST: RequestSpan = Object.freeze({
  traceId: undefined,
  spanId: undefined,
  sampled: false,
  setAttributes() {},
  event() {},
  attempt: () => NOOP_ATTEMPT,
  end() {},
})
const NOOP_SIGNING: SigningSpan = Object.freeze({ end() {} })

/** Tracing off: every call returns the same frozen objects. */
export const NO_TRACING: Tracing = Object.freeze({
  enabled: false,
  startRequest: () => NOOP_REQUEST,
  signing: () => NOOP_SIGNING,
  shutdown: () => Promise.resolve(),
})

class SdkTracing implements Tracing {
  readonly enabled = true
  readonly #provider: TracerProvider
  readonly #tracer: Tracer
  #shutdown: Promise<void> | undefined

  constructor(settings: TracingSettings, options: TracingOptions) {
    const Exporter = settings.protocol === 'http/json' ? JsonTraceExporter : ProtobufTraceExporter
    const exporter = new Exporter({
      url: settings.url,
      timeoutMillis: settings.exportTimeoutMs,
      userAgent: `${SERVICE_NAME}/${VERSION}`,
    })
    this.#provider = new TracerProvider({
      resource: defaultResource()
        .merge(resourceFromAttributes({ 'service.name': SERVICE_NAME, 'service.version': VERSION }))
        // OTEL_SERVICE_NAME wins over a service.name in OTEL_RESOURCE_ATTRIBUTES, which wins over ours.
        .merge(detectResources({ detectors: [resourceAttributesEnvDetector, serviceNameEnvDetector] })),
      sampler: sampler(settings),
      spanProcessors: [
        new BatchSpanProcessor({
          ...settings.batch,
          exporter: options.onExportFailure ? reportingFailures(exporter, options.onExportFailure) : exporter,
        }),
      ],
    })
    this.#tracer = this.#provider.getTracer(SERVICE_NAME, VERSION)
  }

  startRequest(method: string, route: string, path: string, headers: IncomingHttpHeaders): RequestSpan {
    const span = this.#tracer.startSpan(
      route === 'unmatched' ? method : `${method} ${route}`,
      { kind: SpanKind.SERVER, attributes: { [ATTR.method]: method, [ATTR.route]: route, [ATTR.path]: path } },
      callerContext(headers.traceparent, headers.tracestate),
    )
    return new SdkRequestSpan(this.#tracer, span)
  }

  signing(applicationId: string): SigningSpan {
    const span = this.#tracer.startSpan(
      'sign application token',
      { kind: SpanKind.INTERNAL, attributes: { [ATTR.application]: applicationId } },
      ROOT_CONTEXT,
    )
    return {
      end(error?: unknown) {
        if (error !== undefined) {
          span.setAttribute(ATTR.errorType, errorType(error))
          span.setStatus({ code: SpanStatusCode.ERROR })
        }
        span.end()
      },
    }
  }

  shutdown(timeoutMs = DEFAULT_SHUTDOWN_TIMEOUT_MS): Promise<void> {
    this.#shutdown ??= new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        resolve()
      }
      // Spans that could not be sent are lost either way; onExportFailure has heard of them.
      this.#provider.shutdown().then(done, done)
    })
    return this.#shutdown
  }
}

class SdkRequestSpan implements RequestSpan {
  readonly #tracer: Tracer
  readonly #span: Span
  /** The context the attempts are children of, made for the first. */
  #context: Context | undefined
  #errorTypeSet = false
  #ended = false

  constructor(tracer: Tracer, span: Span) {
    this.#tracer = tracer
    this.#span = span
  }

  get traceId(): string {
    return this.#span.spanContext().traceId
  }

  get spanId(): string {
    return this.#span.spanContext().spanId
  }

  get sampled(): boolean {
    return (this.#span.spanContext().traceFlags & TraceFlags.SAMPLED) !== 0
  }

  setAttributes(attributes: RequestAttributes): void {
    if (!this.#span.isRecording()) return
    if (attributes.errorType !== undefined) {
      this.#span.setAttribute(ATTR.errorType, attributes.errorType)
      this.#errorTypeSet = true
    }
  }

  event(name: RequestEvent, attributes: RequestEventAttributes = {}): void {
    if (!this.#span.isRecording()) return
    const recorded: Attributes = {}
    if (attributes.bytes !== undefined) recorded[ATTR.bodySize] = attributes.bytes
    if (attributes.errorType !== undefined) recorded[ATTR.errorType] = attributes.errorType
    this.#span.addEvent(EVENTS[name], recorded)
  }

  attempt(target: AttemptTarget, resendCount: number): AttemptSpan {
    this.#context ??= trace.setSpan(ROOT_CONTEXT, this.#span)
    const attributes: Attributes = {
      [ATTR.method]: target.method,
      [ATTR.serverAddress]: target.host,
      [ATTR.serverPort]: portOf(target.origin),
      [ATTR.urlFull]: `${target.origin}${target.path}`,
    }
    if (resendCount > 0) attributes[ATTR.resendCount] = resendCount
    const span = this.#tracer.startSpan(target.method, { kind: SpanKind.CLIENT, attributes }, this.#context)
    return new SdkAttemptSpan(span)
  }

  end(outcome: Outcome): void {
    if (this.#ended) return
    this.#ended = true
    const span = this.#span
    if (span.isRecording()) {
      span.setAttribute(ATTR.status, outcome.status)
      span.setAttribute(ATTR.bodySize, outcome.bytes)
      if (outcome.aborted) span.setAttribute(ATTR.aborted, true)
      const media = outcome.media
      if (media) {
        span.setAttribute(ATTR.application, media.application)
        span.setAttribute(ATTR.upstreamHost, media.upstreamHost)
        span.setAttribute(ATTR.retries, media.retries)
        if (media.cache !== null) span.setAttribute(ATTR.cache, media.cache)
      }
      // A server span is an error for a 5xx only: a 4xx is the client's (semantic conventions).
      if (outcome.status >= 500) {
        span.setStatus({ code: SpanStatusCode.ERROR })
        if (!this.#errorTypeSet) span.setAttribute(ATTR.errorType, String(outcome.status))
      }
    }
    span.end()
  }
}

class SdkAttemptSpan implements AttemptSpan {
  readonly #span: Span
  readonly #started = performance.now()
  #ended = false

  constructor(span: Span) {
    this.#span = span
  }

  get traceparent(): string {
    const { traceId, spanId, traceFlags } = this.#span.spanContext()
    return `00-${traceId}-${spanId}-0${(traceFlags & TraceFlags.SAMPLED).toString(16)}`
  }

  get tracestate(): string | undefined {
    return this.#span.spanContext().traceState?.serialize() || undefined
  }

  firstByte(): void {
    this.#span.setAttribute(ATTR.timeToFirstByte, performance.now() - this.#started)
  }

  end(status: number | null, retryReason?: RetryReason, errorType?: string): void {
    if (this.#ended) return
    this.#ended = true
    const span = this.#span
    if (status !== null) span.setAttribute(ATTR.status, status)
    if (retryReason !== undefined) span.setAttribute(ATTR.retryReason, retryReason)
    // A client span is an error for a 4xx too, and when no response came.
    if (status === null || status >= 400) {
      span.setAttribute(ATTR.errorType, errorType ?? (status === null ? '_OTHER' : String(status)))
      span.setStatus({ code: SpanStatusCode.ERROR })
    }
    span.end()
  }
}

/** The caller's span as the parent, from a valid traceparent (W3C Trace Context); else a new trace. */
function callerContext(traceparent: string | string[] | undefined, tracestate: string | string[] | undefined): Context {
  // Two traceparent headers are invalid: Node joins them into a value that does not parse.
  if (typeof traceparent !== 'string') return ROOT_CONTEXT
  const parent = parseTraceParent(traceparent)
  if (!parent) return ROOT_CONTEXT
  const state = Array.isArray(tracestate) ? tracestate.join(',') : tracestate
  return trace.setSpanContext(ROOT_CONTEXT, {
    ...parent,
    isRemote: true,
    ...(state ? { traceState: new TraceState(state) } : {}),
  })
}

function sampler(settings: TracingSettings): Sampler {
  switch (settings.sampler) {
    case 'always_on':
      return new AlwaysOnSampler()
    case 'always_off':
      return new AlwaysOffSampler()
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(settings.samplerRatio)
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() })
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() })
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(settings.samplerRatio) })
  }
}

/** The exporter, telling onFailure about each batch it could not deliver. */
function reportingFailures(exporter: SpanExporter, onFailure: (error: Error) => void): SpanExporter {
  return {
    export(spans: ReadableSpan[], resultCallback) {
      exporter.export(spans, (result) => {
        if (result.code !== ExportResultCode.SUCCESS) {
          onFailure(result.error ?? new Error('span export failed'))
        }
        resultCallback(result)
      })
    },
    shutdown: () => exporter.shutdown(),
    forceFlush: () => exporter.forceFlush?.() ?? Promise.resolve(),
  }
}

/** As the SDK: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces. */
function tracesUrl(env: Env): string | undefined {
  const signal = read(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT')?.trim()
  if (signal !== undefined) return httpUrl('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', signal)
  const base = read(env, 'OTEL_EXPORTER_OTLP_ENDPOINT')?.trim()
  if (base === undefined) return undefined
  const url = httpUrl('OTEL_EXPORTER_OTLP_ENDPOINT', base)
  return `${url.endsWith('/') ? url : `${url}/`}${TRACES_PATH}`
}

function httpUrl(setting: string, value: string): string {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError(setting, 'must be an http:// or https:// URL')
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
    throw new ConfigError(setting, 'must be an http:// or https:// URL')
  }
  return value
}

function protocol(env: Env): OtlpProtocol {
  const setting = read(env, 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL')
    ? 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL'
    : 'OTEL_EXPORTER_OTLP_PROTOCOL'
  const value = read(env, setting)?.trim().toLowerCase() ?? DEFAULT_PROTOCOL
  if (value === 'http/protobuf' || value === 'http/json') return value
  throw new ConfigError(setting, 'must be http/protobuf or http/json (traces go over OTLP/HTTP; grpc is not supported)')
}

/** As the SDK's getStringFromEnv: blank is unset. */
function read(env: Env, name: string): string | undefined {
  const value = env[name]
  return value === undefined || value.trim() === '' ? undefined : value
}

function booleanSetting(env: Env, name: string): boolean {
  const value = read(env, name)?.trim().toLowerCase()
  if (value === undefined || value === 'false') return false
  if (value === 'true') return true
  throw new ConfigError(name, 'must be true or false')
}

function numberSetting(env: Env, name: string): number | undefined {
  const value = read(env, name)
  if (value === undefined) return undefined
  const number = Number(value)
  if (!Number.isFinite(number)) throw new ConfigError(name, 'must be a number')
  return number
}

function positiveInteger(env: Env, name: string): number | undefined {
  const number = numberSetting(env, name)
  if (number !== undefined && (!Number.isInteger(number) || number <= 0)) {
    throw new ConfigError(name, 'must be a whole number above 0')
  }
  return number
}

/** scheme://host[:port] -> the port, explicit or the scheme's. */
function portOf(origin: string): number {
  const explicit = /:(\d+)$/.exec(origin)
  if (explicit) return Number(explicit[1])
  return origin.startsWith('https:') ? 443 : 80
}

/** An error's code or class name: its message may say more than a trace should. */
function errorType(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string' && code !== '') return code
  return error instanceof Error ? error.name : '_OTHER'
}

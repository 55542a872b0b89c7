// A small OTLP/HTTP trace receiver for tests: POST /v1/traces, JSON or protobuf (gzipped or
// not), decoded to a flat list of spans. It can be slow (answers after a delay) or down (a
// port that refuses connections), to show that a bad collector never holds the proxy up.
import { once } from 'node:events'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { gunzipSync } from 'node:zlib'

export type AttributeValue = string | number | boolean | null | AttributeValue[] | { [key: string]: AttributeValue }
export type AttributeMap = Record<string, AttributeValue>

export interface ExportedSpan {
  traceId: string
  spanId: string
  /** Undefined for a root span. */
  parentSpanId: string | undefined
  traceState: string | undefined
  name: string
  /** OTLP's numbering: 1 internal, 2 server, 3 client. */
  kind: number
  attributes: AttributeMap
  events: Array<{ name: string; attributes: AttributeMap }>
  /** 0 unset, 1 ok, 2 error. */
  status: { code: number; message: string | undefined }
  resource: AttributeMap
}

export const SPAN_KIND = { internal: 1, server: 2, client: 3 } as const

export interface OtlpReceiverOptions {
  /** Answer each export this long after it arrived (the spans are recorded at once). */
  delayMs?: number
  /** No collector: the URL points at a port that refuses connections. */
  down?: boolean
}

export interface OtlpReceiver {
  /** Base URL, for OTEL_EXPORTER_OTLP_ENDPOINT. */
  readonly url: string
  readonly spans: readonly ExportedSpan[]
  /** Each export request's body as received (decompressed), to search for what must not be there. */
  readonly bodies: readonly Buffer[]
  /** Export requests received, answered or not. */
  readonly requests: number
  /** Resolves with all spans once predicate(all spans) holds; rejects at the deadline. */
  waitForSpans(predicate: (spans: readonly ExportedSpan[]) => boolean, deadlineMs: number): Promise<ExportedSpan[]>
  close(): Promise<void>
}

export async function startOtlpReceiver(options: OtlpReceiverOptions = {}): Promise<OtlpReceiver> {
  const spans: ExportedSpan[] = []
  const bodies: Buffer[] = []
  const waiters = new Set<() => void>()
  const delays = new Set<NodeJS.Timeout>()
  let requests = 0

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end()
        return
      }
      requests++
      const json = (req.headers['content-type'] ?? '').startsWith('application/json')
      let body = Buffer.concat(chunks)
      try {
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body)
        bodies.push(body)
        spans.push(...(json ? fromJson(body) : fromProtobuf(body)))
      } catch (err) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end(String(err))
        return
      }
      for (const wake of waiters) wake()
      const answer = () => {
        if (json) res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
        else res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end()
      }
      if (!options.delayMs) return answer()
      const timer = setTimeout(() => {
        delays.delete(timer)
        answer()
      }, options.delayMs)
      delays.add(timer)
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  if (options.down) {
    server.close()
    await once(server, 'close')
  }

  return {
    url: `http://127.0.0.1:${port}`,
    spans,
    bodies,
    get requests() {
      return requests
    },
    waitForSpans(predicate, deadlineMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!predicate(spans)) return
          settle()
          resolve([...spans])
        }
        const timer = setTimeout(() => {
          settle()
          const seen = spans.map((span) => `${span.name} (${span.kind})`).join(', ') || 'none'
          reject(new Error(`spans not exported within ${deadlineMs} ms; received: ${seen}`))
        }, deadlineMs)
        const settle = () => {
          clearTimeout(timer)
          waiters.delete(check)
        }
        waiters.add(check)
        check()
      })
    },
    async close() {
      for (const timer of delays) clearTimeout(timer)
      if (!server.listening) return
      server.closeAllConnections()
      server.close()
      await once(server, 'close')
    },
  }
}

// OTLP/JSON: ids in hex, integers as numbers or strings.

interface JsonKeyValue {
  key: string
  value: JsonAnyValue
}
interface JsonAnyValue {
  stringValue?: string
  boolValue?: boolean
  intValue?: number | string
  doubleValue?: number
  arrayValue?: { values?: JsonAnyValue[] }
  kvlistValue?: { values?: JsonKeyValue[] }
  bytesValue?: string
}
interface JsonSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  traceState?: string
  name: string
  kind?: number
  attributes?: JsonKeyValue[]
  events?: Array<{ name: string; attributes?: JsonKeyValue[] }>
  status?: { code?: number; message?: string }
}
interface JsonRequest {
  resourceSpans?: Array<{ resource?: { attributes?: JsonKeyValue[] }; scopeSpans?: Array<{ spans?: JsonSpan[] }> }>
}

function fromJson(body: Buffer): ExportedSpan[] {
  const request = JSON.parse(body.toString('utf8')) as JsonRequest
  const out: ExportedSpan[] = []
  for (const resourceSpans of request.resourceSpans ?? []) {
    const resource = jsonAttributes(resourceSpans.resource?.attributes)
    for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
      for (const span of scopeSpans.spans ?? []) {
        out.push({
          traceId: span.traceId,
          spanId: span.spanId,
          parentSpanId: span.parentSpanId || undefined,
          traceState: span.traceState || undefined,
          name: span.name,
          kind: span.kind ?? 0,
          attributes: jsonAttributes(span.attributes),
          events: (span.events ?? []).map((event) => ({
            name: event.name,
            attributes: jsonAttributes(event.attributes),
          })),
          status: { code: span.status?.code ?? 0, message: span.status?.message || undefined },
          resource,
        })
      }
    }
  }
  return out
}

function jsonAttributes(list: JsonKeyValue[] | undefined): AttributeMap {
  return Object.fromEntries((list ?? []).map(({ key, value }) => [key, jsonValue(value)]))
}

function jsonValue(value: JsonAnyValue): AttributeValue {
  if (value.stringValue !== undefined) return value.stringValue
  if (value.boolValue !== undefined) return value.boolValue
  if (value.intValue !== undefined) return Number(value.intValue)
  if (value.doubleValue !== undefined) return value.doubleValue
  if (value.arrayValue) return (value.arrayValue.values ?? []).map(jsonValue)
  if (value.kvlistValue) return jsonAttributes(value.kvlistValue.values)
  if (value.bytesValue !== undefined) return value.bytesValue
  return null
}

// OTLP/protobuf (opentelemetry/proto/collector/trace/v1): the wire format read field by field,
// just the fields above.

type Field = bigint | Buffer
type Message = Map<number, Field[]>

function fromProtobuf(body: Buffer): ExportedSpan[] {
  const out: ExportedSpan[] = []
  for (const resourceSpans of messages(decode(body), 1)) {
    const resource = pbAttributes(messages(resourceSpans, 1)[0])
    for (const scopeSpans of messages(resourceSpans, 2)) {
      for (const span of messages(scopeSpans, 2)) {
        const status = messages(span, 15)[0]
        out.push({
          traceId: hex(span, 1) ?? '',
          spanId: hex(span, 2) ?? '',
          parentSpanId: hex(span, 4),
          traceState: text(span, 3),
          name: text(span, 5) ?? '',
          kind: Number(varint(span, 6) ?? 0n),
          attributes: pbAttributes(span, 9),
          events: messages(span, 11).map((event) => ({
            name: text(event, 2) ?? '',
            attributes: pbAttributes(event, 3),
          })),
          status: { code: Number((status && varint(status, 3)) ?? 0n), message: status && text(status, 2) },
          resource,
        })
      }
    }
  }
  return out
}

function pbAttributes(message: Message | undefined, field = 1): AttributeMap {
  if (!message) return {}
  return Object.fromEntries(
    messages(message, field).map((pair) => [text(pair, 1) ?? '', pbValue(messages(pair, 2)[0])] as const),
  )
}

function pbValue(value: Message | undefined): AttributeValue {
  if (!value) return null
  if (value.has(1)) return text(value, 1) ?? ''
  if (value.has(2)) return varint(value, 2) === 1n
  if (value.has(3)) return Number(BigInt.asIntN(64, varint(value, 3) ?? 0n))
  if (value.has(4)) return (value.get(4)?.[0] as Buffer | undefined)?.readDoubleLE(0) ?? null
  if (value.has(5)) return messages(messages(value, 5)[0] as Message, 1).map(pbValue)
  if (value.has(6)) return pbAttributes(messages(value, 6)[0])
  if (value.has(7)) return (value.get(7)?.[0] as Buffer | undefined)?.toString('base64') ?? null
  return null
}

function decode(buffer: Buffer): Message {
  const message: Message = new Map()
  let pos = 0
  const varintAt = (): bigint => {
    let result = 0n
    for (let shift = 0n; ; shift += 7n) {
      const byte = buffer[pos++]
      if (byte === undefined) throw new Error('truncated protobuf')
      result |= BigInt(byte & 0x7f) << shift
      if (byte < 0x80) return result
    }
  }
  const bytesAt = (length: number): Buffer => {
    if (pos + length > buffer.length) throw new Error('truncated protobuf')
    const bytes = buffer.subarray(pos, pos + length)
    pos += length
    return bytes
  }
  while (pos < buffer.length) {
    const key = varintAt()
    const field = Number(key >> 3n)
    const wireType = Number(key & 7n)
    let value: Field
    if (wireType === 0) value = varintAt()
    else if (wireType === 1) value = bytesAt(8)
    else if (wireType === 2) value = bytesAt(Number(varintAt()))
    else if (wireType === 5) value = bytesAt(4)
    else throw new Error(`unexpected protobuf wire type ${wireType}`)
    const values = message.get(field)
    if (values) values.push(value)
    else message.set(field, [value])
  }
  return message
}

function messages(message: Message, field: number): Message[] {
  return (message.get(field) ?? []).map((value) => decode(value as Buffer))
}

function text(message: Message, field: number): string | undefined {
  const value = message.get(field)?.[0]
  return value === undefined ? undefined : (value as Buffer).toString('utf8')
}

function hex(message: Message, field: number): string | undefined {
  const value = message.get(field)?.[0] as Buffer | undefined
  return value && value.length > 0 ? value.toString('hex') : undefined
}

function varint(message: Message, field: number): bigint | undefined {
  return message.get(field)?.[0] as bigint | undefined
}

// A stand-in for an OpenTelemetry collector, run as its own process for bench/tracing.ts: takes
// OTLP/HTTP trace exports (POST /v1/traces, protobuf or JSON, uncompressed as the exporter sends
// them by default), reads every body to its end, counts the spans in it and answers 200 with an
// empty ExportTraceServiceResponse, as a collector that accepts everything does. GET /stats
// answers what it received so far: exports, body bytes, spans, and bodies it could not read.
// usage: node --import tsx bench/otlp-sink.ts <port>
import { createServer } from 'node:http'

const port = Number(process.argv[2])
if (!Number.isInteger(port) || port < 1 || process.argv.length !== 3) {
  process.stderr.write('usage: otlp-sink.ts <port>\n')
  process.exit(64)
}

const received = { exports: 0, bytes: 0, spans: 0, unreadable: 0 }

/** Length-delimited fields (wire type 2) numbered `field` at the top level of a protobuf message. */
function* messages(buffer: Buffer, field: number): Generator<Buffer> {
  let at = 0
  const varint = () => {
    let value = 0
    for (let shift = 0; ; shift += 7) {
      const byte = buffer[at++]
      if (byte === undefined) throw new Error('truncated varint')
      value += (byte & 0x7f) * 2 ** shift
      if (byte < 0x80) return value
    }
  }
  while (at < buffer.length) {
    const key = varint()
    const wireType = key & 7
    if (wireType === 0) varint()
    else if (wireType === 1) at += 8
    else if (wireType === 5) at += 4
    else if (wireType === 2) {
      const length = varint()
      if (key >>> 3 === field) yield buffer.subarray(at, at + length)
      at += length
    } else throw new Error(`wire type ${wireType}`)
    if (at > buffer.length) throw new Error('truncated field')
  }
}

/** ExportTraceServiceRequest: resource_spans = 1; ResourceSpans: scope_spans = 2; ScopeSpans: spans = 2. */
function protobufSpans(body: Buffer): number {
  let spans = 0
  for (const resourceSpans of messages(body, 1)) {
    for (const scopeSpans of messages(resourceSpans, 2)) for (const _ of messages(scopeSpans, 2)) spans++
  }
  return spans
}

interface JsonExport {
  resourceSpans?: { scopeSpans?: { spans?: unknown[] }[] }[]
}

function jsonSpans(body: Buffer): number {
  const request = JSON.parse(body.toString('utf8')) as JsonExport
  let spans = 0
  for (const resourceSpans of request.resourceSpans ?? []) {
    for (const scopeSpans of resourceSpans.scopeSpans ?? []) spans += scopeSpans.spans?.length ?? 0
  }
  return spans
}

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(received))
    return
  }
  const chunks: Buffer[] = []
  req.on('data', (chunk: Buffer) => chunks.push(chunk))
  req.on('end', () => {
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      res.writeHead(404, { 'content-length': 0 }).end()
      return
    }
    const body = Buffer.concat(chunks)
    const json = req.headers['content-type']?.startsWith('application/json') === true
    received.exports++
    received.bytes += body.length
    try {
      received.spans += json ? jsonSpans(body) : protobufSpans(body)
    } catch {
      received.unreadable++
    }
    // An empty ExportTraceServiceResponse: nothing rejected.
    res.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf' }).end(json ? '{}' : '')
  })
})
server.keepAliveTimeout = 65_000
server.listen(port, '127.0.0.1')
process.on('SIGTERM', () => {
  server.close(() => process.exit(0))
  server.closeAllConnections()
})

// The header policy, both ways: what a client may send on to Vonage, what comes back from
// Vonage, and what every response on the media port carries. Allowlists, never denylists.
import type { FastifyRequest } from 'fastify'
import { SAFE_DELIVERY_HEADERS } from '../links/safe-delivery.js'

/** Client request headers sent on to Vonage; everything else stays here. */
export const FORWARDED_REQUEST_HEADERS = ['range', 'if-range', 'if-none-match', 'if-modified-since', 'accept'] as const

/** Upstream response headers passed back to the client; everything else is dropped. */
export const PASSED_BACK_RESPONSE_HEADERS = [
  'content-type',
  'content-length',
  'content-range',
  'accept-ranges',
  'etag',
  'last-modified',
  'content-disposition',
  'cache-control',
  'retry-after',
] as const

/**
 * A Content-Disposition Node can send. Node refuses, or re-encodes, a value with bytes above
 * 0x7f (a file name in UTF-8, say) when the response has a Content-Length, so such a file name
 * is sent as RFC 6266 does: an ASCII fallback and `filename*=UTF-8''` with the name
 * percent-encoded (ISO-8859-1 when the bytes are not UTF-8).
 */
export function asciiContentDisposition(value: string): string {
  if (!/[^\t\x20-\x7e]/.test(value)) return value
  const bytes = Buffer.from(value, 'latin1')
  let text: string
  let charset = 'UTF-8'
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch {
    text = value
    charset = 'ISO-8859-1'
  }
  const type = (text.split(';')[0] ?? '').trim().replace(/[^\x21-\x7e]/g, '') || 'attachment'
  const match = /filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))/i.exec(text)
  const name = (match?.[1] ?? match?.[2] ?? '').trim()
  if (name === '') return type
  const fallback = name.replace(/[^\x20-\x7e]|["\\]/g, '_')
  const encoded = [...(charset === 'UTF-8' ? Buffer.from(name, 'utf8') : Buffer.from(name, 'latin1'))]
    .map((byte) =>
      /[A-Za-z0-9!#$&+.^_`|~-]/.test(String.fromCharCode(byte))
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`,
    )
    .join('')
  return `${type}; filename="${fallback}"; filename*=${charset}''${encoded}`
}

/**
 * What every response carries: the request id, nosniff and a CSP that runs nothing (a problem
 * too is shown by a browser that follows a link), and a close for a connection that asked to
 * upgrade.
 */
export function responseBasics(request: FastifyRequest): Record<string, string> {
  const headers: Record<string, string> = { 'x-request-id': request.id, ...SAFE_DELIVERY_HEADERS }
  // Node's parser stops reading a connection that asked to upgrade; we never upgrade, so
  // close it after the answer rather than leave it deaf.
  if (request.headers.upgrade !== undefined) headers.connection = 'close'
  return headers
}

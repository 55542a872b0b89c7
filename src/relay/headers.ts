// The header policy, both ways: what a client may send on to Vonage, what comes back from
// Vonage, and what every response on the media port carries. Allowlists, never denylists.
import type { FastifyRequest } from 'fastify'

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

/** What every response carries: the request id, and a close for a connection that asked to upgrade. */
export function responseBasics(request: FastifyRequest): Record<string, string> {
  // Node's parser stops reading a connection that asked to upgrade; we never upgrade, so
  // close it after the answer rather than leave it deaf.
  return request.headers.upgrade === undefined
    ? { 'x-request-id': request.id }
    : { 'x-request-id': request.id, connection: 'close' }
}

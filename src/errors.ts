// Errors the proxy itself produces. Each has a stable code that doubles as the problem
// `type`, a log field and a metric label, and renders as RFC 9457 problem+json.
import type { FastifyReply } from 'fastify'

const PROBLEM_CONTENT_TYPE = 'application/problem+json'
const PROBLEM_TYPE_BASE = 'urn:vonage-media-proxy:problem:'

export type ProblemCode =
  | 'invalid-media-id'
  | 'not-found'
  | 'method-not-allowed'
  | 'unauthorized'
  | 'forbidden'
  | 'host-not-allowed'
  | 'application-required'
  | 'unknown-application'
  | 'application-forbidden'
  | 'overloaded'
  | 'token-unavailable'
  | 'upstream-unauthorized'
  | 'upstream-unavailable'
  | 'upstream-timeout'
  | 'bad-request'
  | 'headers-too-large'
  | 'request-timeout'
  | 'expectation-failed'
  | 'shutting-down'
  | 'payload-too-large'
  | 'unsupported-media-type'
  | 'not-storable'
  | 'cache-write-failed'
  | 'invalid-link'
  | 'invalid-link-request'
  | 'internal'

export class ProxyError extends Error {
  override name = 'ProxyError'
  constructor(
    readonly code: ProblemCode,
    readonly status: number,
    readonly title: string,
    /** Safe to show a client: never an address, a token or a key. */
    readonly detail: string,
    options?: ErrorOptions,
  ) {
    super(`${code}: ${detail}`, options)
  }

  problem(requestId: string): Problem {
    return {
      type: PROBLEM_TYPE_BASE + this.code,
      title: this.title,
      status: this.status,
      detail: this.detail,
      requestId,
    }
  }
}

export interface Problem {
  type: string
  title: string
  status: number
  detail: string
  requestId: string
}

export const errors = {
  invalidMediaId: () =>
    new ProxyError(
      'invalid-media-id',
      400,
      'Invalid media id',
      'The media or file id must be a UUID (8-4-4-4-12 hexadecimal digits).',
    ),
  notFound: () =>
    new ProxyError(
      'not-found',
      404,
      'Not Found',
      'Served here: /media/{id}, /v3/media/{id}, /v1/files/{id}, /{host}/v3/media/{id} and /{host}/v1/files/{id}.',
    ),
  methodNotAllowed: () =>
    new ProxyError('method-not-allowed', 405, 'Method Not Allowed', 'Media can only be read with GET or HEAD.'),
  unauthorized: () =>
    new ProxyError(
      'unauthorized',
      401,
      'Unauthorized',
      'Send "Authorization: Bearer <key>" with one of the proxy\'s inbound API keys.',
    ),
  hostNotAllowed: () =>
    new ProxyError(
      'host-not-allowed',
      403,
      'Forbidden',
      'The host in the path is not one of the Vonage hosts this proxy may reach (UPSTREAM_HOSTS).',
    ),
  applicationRequired: () =>
    new ProxyError(
      'application-required',
      400,
      'Application required',
      'This proxy has no default application: name one in the Vonage-Application-Id header.',
    ),
  unknownApplication: () =>
    new ProxyError(
      'unknown-application',
      400,
      'Unknown application',
      'Vonage-Application-Id must be the UUID of an application this proxy holds a key for.',
    ),
  applicationForbidden: () =>
    new ProxyError('application-forbidden', 403, 'Forbidden', 'This client key may not use that application.'),
  overloaded: () =>
    new ProxyError(
      'overloaded',
      503,
      'Service Unavailable',
      'Too many media requests in flight; retry after a second.',
    ),
  tokenUnavailable: (cause?: unknown) =>
    new ProxyError(
      'token-unavailable',
      503,
      'Service Unavailable',
      'No valid Vonage application token is available; check the proxy logs.',
      { cause },
    ),
  upstreamUnauthorized: () =>
    new ProxyError(
      'upstream-unauthorized',
      502,
      'Bad Gateway',
      'Vonage refused the application token twice; check the application id and key.',
    ),
  upstreamUnavailable: (cause?: unknown) =>
    new ProxyError('upstream-unavailable', 502, 'Bad Gateway', 'The Vonage Media API could not be reached.', {
      cause,
    }),
  upstreamTimeout: (cause?: unknown) =>
    new ProxyError('upstream-timeout', 504, 'Gateway Timeout', 'The Vonage Media API did not answer in time.', {
      cause,
    }),
  badRequest: () => new ProxyError('bad-request', 400, 'Bad Request', 'The request could not be understood.'),
  headersTooLarge: () =>
    new ProxyError(
      'headers-too-large',
      431,
      'Request Header Fields Too Large',
      'The request headers are larger than the proxy accepts (16 KiB).',
    ),
  expectationFailed: () =>
    new ProxyError('expectation-failed', 417, 'Expectation Failed', 'Only "Expect: 100-continue" is understood.'),
  requestTimeout: () =>
    new ProxyError('request-timeout', 408, 'Request Timeout', 'The request was not received in time.'),
  notStorable: () =>
    new ProxyError(
      'not-storable',
      502,
      'Bad Gateway',
      'Vonage answered without a Content-Length, so the file cannot be stored and checked.',
    ),
  cacheWriteFailed: (cause?: unknown) =>
    new ProxyError(
      'cache-write-failed',
      503,
      'Service Unavailable',
      'The file could not be written to the cache (disk full or read-only?); downloads still work.',
      { cause },
    ),
  invalidLink: () =>
    new ProxyError(
      'invalid-link',
      403,
      'Forbidden',
      'The link has expired, its signature does not match, or it is malformed.',
    ),
  invalidLinkRequest: (detail: string) => new ProxyError('invalid-link-request', 400, 'Bad Request', detail),
  shuttingDown: () => new ProxyError('shutting-down', 503, 'Service Unavailable', 'The proxy is shutting down.'),
  internal: (cause?: unknown) =>
    new ProxyError('internal', 500, 'Internal Server Error', 'The proxy failed unexpectedly.', { cause }),
}

/** The body and headers of a ProxyError as problem+json: the one serialiser of problems. */
export function problemResponse(
  error: ProxyError,
  requestId: string,
): { body: Buffer; headers: Record<string, string> } {
  // A Buffer, not a string: Fastify appends "; charset=utf-8" to string payloads, and RFC 9457
  // defines no charset parameter for application/problem+json.
  const body = Buffer.from(JSON.stringify(error.problem(requestId)))
  const headers: Record<string, string> = { 'content-type': PROBLEM_CONTENT_TYPE }
  if (error.status === 401) headers['www-authenticate'] = 'Bearer realm="vonage-media-proxy"'
  if (error.status === 503 && error.code === 'overloaded') headers['retry-after'] = '1'
  return { body, headers }
}

/** Sends a ProxyError as problem+json through Fastify, and counts its body on the media port. */
export function sendProblem(reply: FastifyReply, error: ProxyError): FastifyReply {
  const request = reply.request
  const { body, headers } = problemResponse(error, request.id)
  if (request.method !== 'HEAD') request.served?.wrote(body.length)
  return reply.code(error.status).headers(headers).send(body)
}

/** Maps any error met while serving a request to the ProxyError the client should see. */
export function toProxyError(error: unknown): ProxyError {
  if (error instanceof ProxyError) return error
  const status = (error as { statusCode?: number }).statusCode
  if (status === 431) return errors.headersTooLarge()
  if (status === 405) return errors.methodNotAllowed()
  if (status === 404) return errors.notFound()
  if (status === 413) {
    return new ProxyError('payload-too-large', 413, 'Content Too Large', 'The request body is larger than accepted.')
  }
  if (status === 415) {
    return new ProxyError('unsupported-media-type', 415, 'Unsupported Media Type', 'Send the body as application/json.')
  }
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new ProxyError('bad-request', status, 'Bad Request', 'The request could not be understood.')
  }
  return errors.internal(error)
}

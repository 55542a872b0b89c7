// What the two contender processes share (bench/contender-http-proxy.ts and
// bench/contender-undici-stream.ts): their command line, the media id check and the proxy's own
// header allowlists, so that each does the same work per request as the proxy's relay, minus
// the proxy's logging, metrics, retries and token refresh.
// usage: node --import tsx bench/contender-<name>.ts <upstream-base-url> <port>, the bearer
// token in the CONTENDER_TOKEN environment variable (not on the command line, where ps shows it).

export { FORWARDED_REQUEST_HEADERS, PASSED_BACK_RESPONSE_HEADERS } from '../src/relay/headers.js'
/** The proxy's check on :id (a UUID, any case), before any I/O. */
export { UUID as MEDIA_ID } from '../src/uuid.js'

export const HOST = '127.0.0.1'

export interface ContenderConfig {
  /** The upstream's origin, e.g. http://127.0.0.1:8080 (the upstream path is always /v3/media/:id). */
  upstream: string
  port: number
  /** `Bearer <token>`: one static token, as the nginx reverse proxies inject. */
  authorization: string
}

export function contenderConfig(script: string): ContenderConfig {
  const [upstream, port] = process.argv.slice(2)
  const token = process.env.CONTENDER_TOKEN
  if (!upstream || !port || !token) {
    process.stderr.write(`usage: CONTENDER_TOKEN=<jwt> node --import tsx bench/${script} <upstream-url> <port>\n`)
    process.exit(64)
  }
  return { upstream: new URL(upstream).origin, port: Number(port), authorization: `Bearer ${token}` }
}

/** A 400 for an id that is not a UUID, as a small problem+json body. */
export const BAD_ID_BODY = JSON.stringify({ type: 'about:blank', title: 'Invalid media id', status: 400 })

// What a finished request on the media port came to: built once, when it is over, by its
// ServedRequest, and only read by the access log and the metrics.
import type { CacheResult } from '../cache/media-cache.js'
import type { TraceRef } from '../observability/tracing.js'

/** nginx's convention for "the client went away before a response was sent". */
export const CLIENT_CLOSED_REQUEST = 499

export interface Outcome {
  readonly requestId: string
  readonly method: string
  /** The route template (/media/:id), or 'unmatched'. */
  readonly route: string
  /** The path as received, without the query string. */
  readonly path: string
  /** The status sent, or 499 when the client left before a response started. */
  readonly status: number
  /** Body bytes sent: all of them when the response finished, else what the socket accepted. */
  readonly bytes: number
  readonly seconds: number
  /** The response did not end properly (client gone, cut, or never sent). */
  readonly aborted: boolean
  readonly remoteAddress: string | undefined
  readonly userAgent: string | undefined
  /** Set for a media request that passed its checks. */
  readonly media: MediaOutcome | null
  /** The request's trace, when tracing is on (its id goes in the access line, an exemplar on the histogram). */
  readonly trace?: TraceRef | undefined
}

export interface MediaOutcome {
  /** The media or recording id. */
  readonly mediaId: string
  /** The Vonage host it was asked of. */
  readonly upstreamHost: string
  /** The Vonage application whose token it carried. */
  readonly application: string
  readonly retries: number
  readonly upstreamStatus: number | null
  readonly upstreamMs: number | null
  /** What the cache did (null without one). */
  readonly cache: CacheResult | null
  /** A signed link's expiry (unix seconds), when the request came with one: never its signature. */
  readonly linkExpires: number | null
}

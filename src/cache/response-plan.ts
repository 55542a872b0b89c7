// What to answer from a stored (or storing) file: the status, the headers and the byte range
// of the body, from the request's method, Range, If-Range, If-None-Match and If-Modified-Since
// (RFC 9110 13.2.2: If-None-Match first, then If-Modified-Since, then Range). A pure decision;
// the caller reads the bytes.

/** The headers kept with a stored file, as Vonage sent them (latin1), lower-case names. */
export type StoredHeaders = Readonly<Record<string, string>>

/** The headers a stored file is answered with; Accept-Ranges is added, Content-Length computed. */
export const STORED_RESPONSE_HEADERS = [
  'content-type',
  'etag',
  'last-modified',
  'content-disposition',
  'cache-control',
] as const

/** The request headers that decide the answer, as the client sent them. */
export interface Conditions {
  readonly range?: string | undefined
  readonly ifRange?: string | undefined
  readonly ifNoneMatch?: string | undefined
  readonly ifModifiedSince?: string | undefined
}

export interface ResponsePlan {
  readonly status: 200 | 206 | 304 | 416
  readonly headers: Record<string, string>
  /** The body's first byte and one past its last, within the file's body. */
  readonly start: number
  readonly end: number
}

export function planResponse(stored: StoredHeaders, length: number, method: string, when: Conditions): ResponsePlan {
  const headers: Record<string, string> = {}
  for (const name of STORED_RESPONSE_HEADERS) {
    const value = stored[name]
    if (value !== undefined) headers[name] = value
  }
  if (notModified(stored, when)) {
    // A 304 carries the validators and caching headers, not the representation's length or type.
    delete headers['content-type']
    delete headers['content-disposition']
    return { status: 304, headers, start: 0, end: 0 }
  }
  headers['accept-ranges'] = 'bytes'
  const range =
    method === 'GET' && when.range !== undefined && rangeApplies(stored, when.ifRange) ? when.range : undefined
  const wanted = range === undefined ? 'whole' : parseRange(range, length)
  if (wanted === 'unsatisfiable') {
    headers['content-range'] = `bytes */${length}`
    headers['content-length'] = '0'
    return { status: 416, headers, start: 0, end: 0 }
  }
  if (wanted === 'whole') {
    headers['content-length'] = String(length)
    return { status: 200, headers, start: 0, end: length }
  }
  headers['content-range'] = `bytes ${wanted.start}-${wanted.end - 1}/${length}`
  headers['content-length'] = String(wanted.end - wanted.start)
  return { status: 206, headers, start: wanted.start, end: wanted.end }
}

function notModified(stored: StoredHeaders, when: Conditions): boolean {
  if (when.ifNoneMatch !== undefined) {
    const etag = stored.etag
    if (when.ifNoneMatch.trim() === '*') return true
    if (etag === undefined) return false
    // Weak comparison (RFC 9110 8.8.3.2): W/ prefixes do not matter.
    const opaque = weakless(etag)
    return when.ifNoneMatch.split(',').some((candidate) => weakless(candidate.trim()) === opaque)
  }
  if (when.ifModifiedSince !== undefined && stored['last-modified'] !== undefined) {
    const since = Date.parse(when.ifModifiedSince)
    const modified = Date.parse(stored['last-modified'])
    return !Number.isNaN(since) && !Number.isNaN(modified) && modified <= since
  }
  return false
}

/** If-Range: the Range holds only while the file is the one the client has (a strong match). */
function rangeApplies(stored: StoredHeaders, ifRange: string | undefined): boolean {
  if (ifRange === undefined) return true
  const value = ifRange.trim()
  if (value.startsWith('"') || value.startsWith('W/')) {
    const etag = stored.etag
    return etag !== undefined && !etag.startsWith('W/') && !value.startsWith('W/') && etag === value
  }
  const modified = stored['last-modified']
  return modified !== undefined && Date.parse(value) === Date.parse(modified) && !Number.isNaN(Date.parse(value))
}

function weakless(etag: string): string {
  return etag.startsWith('W/') ? etag.slice(2) : etag
}

/**
 * One byte range of `bytes=first-last`, `bytes=first-` or `bytes=-suffix`. Several ranges, or a
 * header that is not a byte range, are ignored (the whole file is sent, as RFC 9110 14.2
 * allows); a range that starts past the end is unsatisfiable.
 */
function parseRange(value: string, length: number): { start: number; end: number } | 'whole' | 'unsatisfiable' {
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(value)
  if (!match) return 'whole'
  const [, first, last] = match as unknown as [string, string, string]
  if (first === '' && last === '') return 'whole'
  if (first === '') {
    const suffix = Number(last)
    if (suffix === 0 || length === 0) return 'unsatisfiable'
    return { start: Math.max(0, length - suffix), end: length }
  }
  const start = Number(first)
  if (last !== '' && Number(last) < start) return 'whole'
  if (start >= length) return 'unsatisfiable'
  const end = last === '' ? length : Math.min(length, Number(last) + 1)
  return { start, end }
}

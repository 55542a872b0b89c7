// How the emulator checks an application JWT, as Vonage does: an RS256 signature over the
// exact bytes (verified with node:crypto, not the proxy's jose path), then the claims.
import { type KeyObject, verify } from 'node:crypto'
import { UUID } from '../uuid.js'

const ALLOWED_CLAIMS = new Set(['application_id', 'iat', 'exp', 'jti'])
/** How far in the future an iat may be before it is refused (clock drift). */
const IAT_SKEW_SECONDS = 5

export interface VerifiedToken {
  header: Record<string, unknown>
  claims: { application_id: string; iat: number; exp: number; jti: string }
}

export type TokenCheck = { ok: true; token: VerifiedToken } | { ok: false; reason: string }

export function verifyApplicationToken(
  authorization: string | undefined,
  publicKey: KeyObject,
  applicationId: string,
  nowSeconds: number,
): TokenCheck {
  const match = /^Bearer (.+)$/.exec(authorization ?? '')
  if (!match?.[1]) return { ok: false, reason: 'missing Bearer token' }
  const parts = match[1].split('.')
  if (parts.length !== 3) return { ok: false, reason: 'not a compact JWS' }
  const [headerPart, claimsPart, signaturePart] = parts as [string, string, string]
  const header = decodeJson(headerPart)
  const claims = decodeJson(claimsPart)
  if (!header || !claims) return { ok: false, reason: 'undecodable header or claims' }
  if (header.alg !== 'RS256' || header.typ !== 'JWT') return { ok: false, reason: 'header must be RS256/JWT' }
  const signed = Buffer.from(`${headerPart}.${claimsPart}`)
  if (!verify('RSA-SHA256', signed, publicKey, Buffer.from(signaturePart, 'base64url'))) {
    return { ok: false, reason: 'bad signature' }
  }
  const unknown = Object.keys(claims).filter((name) => !ALLOWED_CLAIMS.has(name))
  if (unknown.length > 0) return { ok: false, reason: `unexpected claims: ${unknown.join(', ')}` }
  const { application_id, iat, exp, jti } = claims
  if (application_id !== applicationId) return { ok: false, reason: 'wrong application_id' }
  if (!Number.isInteger(iat) || !Number.isInteger(exp)) return { ok: false, reason: 'iat and exp must be integers' }
  if (typeof jti !== 'string' || !UUID.test(jti)) return { ok: false, reason: 'jti must be a UUID' }
  const lifetime = (exp as number) - (iat as number)
  if (lifetime < 30 || lifetime > 86_400) return { ok: false, reason: 'exp - iat must be 30 s to 24 h' }
  if ((iat as number) > nowSeconds + IAT_SKEW_SECONDS) return { ok: false, reason: 'iat is in the future' }
  if ((exp as number) <= nowSeconds) return { ok: false, reason: 'token expired' }
  return {
    ok: true,
    token: { header, claims: { application_id, iat: iat as number, exp: exp as number, jti } },
  }
}

function decodeJson(part: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'))
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

// The application JWT: signing (jose, exactly the contract's claims) and the cache that
// serves one token to every request, refreshes it in the background at two thirds of its
// lifetime, never hands out one with less than a quarter left, and fails closed.
import { type KeyObject, randomUUID } from 'node:crypto'
import { SignJWT } from 'jose'
import { LRUCache } from 'lru-cache'
import { errors } from '../errors.js'

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number
}

export const systemClock: Clock = { now: () => Date.now() }

export interface Token {
  /** The compact JWS: never log it. */
  readonly value: string
  readonly jti: string
  /** Seconds since the epoch. */
  readonly iat: number
  readonly exp: number
}

export class TokenSigner {
  #key: KeyObject
  readonly #applicationId: string
  readonly #ttlSeconds: number
  readonly #clock: Clock

  constructor(key: KeyObject, applicationId: string, ttlSeconds: number, clock: Clock = systemClock) {
    this.#key = key
    this.#applicationId = applicationId
    this.#ttlSeconds = ttlSeconds
    this.#clock = clock
  }

  /** Replaces the signing key; the caller invalidates cached tokens. */
  setKey(key: KeyObject): void {
    this.#key = key
  }

  async sign(): Promise<Token> {
    const iat = Math.floor(this.#clock.now() / 1000)
    const exp = iat + this.#ttlSeconds
    const jti = randomUUID()
    const value = await new SignJWT({ application_id: this.#applicationId })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(jti)
      .sign(this.#key)
    return { value, jti, iat, exp }
  }
}

export type RefreshResult = 'success' | 'failure'

export interface TokenCacheOptions {
  ttlSeconds: number
  clock?: Clock
  /** Called after every signing attempt: feeds metrics and logs. */
  onRefresh?: (result: RefreshResult, token: Token | undefined, error: unknown) => void
  /** Refresh in the background on a timer, so an idle proxy stays ready. Off in unit tests. */
  proactive?: boolean
}

const KEY = 'token'
const RETRY_AFTER_FAILURE_MS = 1_000

export class TokenCache {
  readonly #signer: TokenSigner
  readonly #clock: Clock
  readonly #floorSeconds: number
  readonly #refreshAfterMs: number
  readonly #cache: LRUCache<string, Token>
  readonly #onRefresh: TokenCacheOptions['onRefresh']
  readonly #proactive: boolean
  #timer: NodeJS.Timeout | undefined
  /** The jti invalidate() last dropped. */
  #droppedJti: string | undefined
  #closed = false

  constructor(signer: TokenSigner, options: TokenCacheOptions) {
    this.#signer = signer
    this.#clock = options.clock ?? systemClock
    this.#floorSeconds = options.ttlSeconds / 4
    this.#refreshAfterMs = Math.floor((options.ttlSeconds * 1000 * 2) / 3)
    this.#onRefresh = options.onRefresh
    this.#proactive = options.proactive ?? true
    this.#cache = new LRUCache<string, Token>({
      max: 1,
      ttl: this.#refreshAfterMs,
      ttlResolution: 0,
      perf: this.#clock,
      // Stale-while-revalidate: past two thirds of its life the token is still handed out while
      // one background fetch signs the next; get() enforces the quarter-lifetime floor.
      allowStale: true,
      allowStaleOnFetchRejection: true,
      noDeleteOnFetchRejection: true,
      fetchMethod: async (_key, _stale, { options }) => {
        const token = await this.#mint()
        // Staleness counts from the token's iat, not from when a (slow) signing finished;
        // 1 ms at least, since a TTL of 0 means "never stale" to lru-cache.
        options.ttl = Math.max(1, token.iat * 1000 + this.#refreshAfterMs - this.#clock.now())
        return token
      },
    })
  }

  /** A token with at least a quarter of its lifetime left; ProxyError 503 when none can be had. */
  async get(): Promise<Token> {
    let token = await this.#fetch(true)
    if (token && this.#usable(token)) return token
    // Below the floor, or never minted: wait for the signing under way, or start one.
    token = await this.#fetch(false, true)
    if (token && this.#usable(token)) return token
    throw errors.tokenUnavailable()
  }

  /**
   * The cached token while it is fresh (under two thirds of its lifetime), synchronously; else
   * undefined, and get() decides. The per-request fast path: no promise, no signing.
   */
  current(): Token | undefined {
    return this.#cache.peek(KEY, { allowStale: false })
  }

  /** The cached token if it is usable now; never signs. For readiness checks. */
  peek(): Token | undefined {
    const token = this.#cache.peek(KEY, { allowStale: true })
    return token && this.#usable(token) ? token : undefined
  }

  /**
   * Drops the cached token. With a token, only if it is still the cached one (or being
   * replaced already), so that many requests refused with the same token cause one new
   * signature, not one each.
   */
  invalidate(rejected?: Token): void {
    const cached = this.#cache.peek(KEY, { allowStale: true })
    if (rejected) {
      // Already dropped: its replacement is cached or being signed. While it signs the cache
      // shows no value, and a delete now would abort that signing and start another.
      if (rejected.jti === this.#droppedJti) return
      if (cached && cached.jti !== rejected.jti) return
    }
    this.#droppedJti = rejected?.jti ?? cached?.jti
    this.#cache.delete(KEY)
  }

  close(): void {
    this.#closed = true
    clearTimeout(this.#timer)
    this.#cache.clear()
  }

  async #fetch(allowStale: boolean, forceRefresh = false): Promise<Token | undefined> {
    try {
      return await this.#cache.fetch(KEY, { allowStale, forceRefresh })
    } catch (err) {
      throw errors.tokenUnavailable(err)
    }
  }

  #usable(token: Token): boolean {
    return token.exp - this.#clock.now() / 1000 >= this.#floorSeconds
  }

  async #mint(): Promise<Token> {
    let token: Token
    try {
      token = await this.#signer.sign()
    } catch (err) {
      this.#onRefresh?.('failure', undefined, err)
      this.#schedule(RETRY_AFTER_FAILURE_MS)
      throw err
    }
    this.#onRefresh?.('success', token, undefined)
    // A few ms past the cache's TTL, so that the timer's fetch finds the token stale.
    this.#schedule(this.#refreshAfterMs + 10)
    return token
  }

  #schedule(delayMs: number): void {
    if (!this.#proactive || this.#closed) return
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => {
      this.#cache.fetch(KEY).catch(() => {
        // #mint has reported the failure and scheduled the next attempt.
      })
    }, delayMs)
    this.#timer.unref()
  }
}

// Every decoration of Fastify's types, in one place.
import type { ServedRequest } from '../relay/served-request.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the media server's onRequest hook for every request on the media port. */
    served: ServedRequest | null
  }
}
